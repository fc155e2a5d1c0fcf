"""``hinge-sc features | train | generate | --version`` on real her2st data, in-process through ``main([...])``.

One tiny chain: features of section C2 → a model trained on C2 (1 epoch, a 16-wide random backbone) → expression
generated for C4, which the chain never used, from its H&E image alone (virtual spots 400 µm apart).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import subprocess
import sys

import anndata as ad
import pytest

from hinge_sc._cli import main

TINY_MODEL = ["--n-genes", "12", "--include", "ERBB2", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
              "--diffusion-steps", "8", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "64"]  # fmt: skip


def run(args: list[str]) -> tuple[int, str, str]:
    """``main(args)`` with stdout and stderr captured (stderr is then not a TTY); (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exit_info:
            code = exit_info.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def chain(tmp_path_factory, her2st_c):
    """C2 and C3 as .h5ad, the features of C2, and a model trained on them; with each command's stderr."""
    root = tmp_path_factory.mktemp("cli")
    her2st_c[her2st_c.obs["section"] == "C2"].copy().write_h5ad(root / "c2.h5ad")
    code, _, features_err = run(["features", str(root / "c2.h5ad"), str(root / "c2_features.h5ad"), "--views", "1"])
    assert code == 0, features_err
    code, train_out, train_err = run(["train", str(root / "c2_features.h5ad"), str(root / "model"), *TINY_MODEL])
    assert code == 0, train_err
    return {"root": root, "features_err": features_err, "train_out": train_out, "train_err": train_err}


def test_features_writes_the_features(chain):
    adata = ad.read_h5ad(chain["root"] / "c2_features.h5ad")
    assert adata.obsm["X_histology"].shape == (adata.n_obs, 2 * 80)  # the patch and its context field (default)
    assert "X_histology_views" not in adata.obsm  # --views 1
    assert adata.uns["X_histology"]["params"]["patch_size_um"] == 112.0
    assert "Wrote" in chain["features_err"]


def test_train_writes_a_model_and_logs_each_epoch(chain):
    import hinge_sc as hs

    model = hs.HINGE.load(chain["root"] / "model")
    assert "ERBB2" in model.panel_genes_ and len(model.panel_genes_) >= 12
    assert model.train_params_["epochs_run"] == 1
    err = chain["train_err"]
    # stderr is not a TTY here: one line per epoch with both losses instead of a progress bar
    assert re.search(r"^Epoch 1/1: train_loss [\d.]+ \(t ≤ 8 of 8\) · validation_loss [\d.]+ \(uniform t\)", err, re.M)
    assert "\r" not in err
    assert "Tip" not in err and "litlogger" not in err
    assert "Generating sequential column names" not in chain["train_out"] + err
    # Lightning's lines once (its own handler; where it writes depends on when lightning was imported), not again
    # through the root logger's handler that the command line configures
    assert err.count("GPU available") <= 1 and "INFO lightning" not in err
    assert logging.getLogger("lightning").propagate is False


def test_train_never_replaces_a_model(chain):
    manifest = (chain["root"] / "model" / "manifest.json").read_bytes()
    code, _, err = run(["train", str(chain["root"] / "c2_features.h5ad"), str(chain["root"] / "model"), *TINY_MODEL])
    assert code == 2
    assert err.strip().count("\n") == 0 and "already exists" in err and "--overwrite" in err
    assert (chain["root"] / "model" / "manifest.json").read_bytes() == manifest


def test_generate_from_an_unseen_he_image(chain, her2st_path):
    out = chain["root"] / "c4_generated.h5ad"
    args = ["generate", str(chain["root"] / "model"), str(her2st_path / "images" / "C4.jpg"), str(out),
            "--microns-per-pixel", "0.74", "--spacing-um", "400", "--n-samples", "2", "--sampling-steps", "4"]  # fmt: skip
    code, _, err = run(args)
    assert code == 0, err
    generated = ad.read_h5ad(out)
    assert generated.n_obs > 20 and "ERBB2" in generated.var_names
    assert generated.layers["std"].shape == generated.shape
    assert (generated.X >= 0).all()
    assert generated.obsm["spatial"].shape == (generated.n_obs, 2)
    code, _, err = run(args)  # again: the output exists
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["features", "{root}/nope.h5ad", "{root}/x.h5ad"], r"`input` .*nope.h5ad does not exist"),
        (["features", "{root}/c2.h5ad", "{root}/x.csv"], r"must end in `.h5ad` .* or `.zarr`"),
        (["features", "{data}/images/C4.jpg", "{root}/x.h5ad"], r"records no µm/px: pass `--microns-per-pixel`"),
        (["features", "{root}/c2.h5ad", "{root}/x.h5ad", "--patch-size-um", "0"], r"`--patch-size-um` must be"),
        (["train", "{root}/c2.h5ad", "{root}/m2", "--epochs", "1"], r"has no `obsm\['X_histology'\]`: run `hinge-sc features`"),
        (["train", "{root}/c2_features.h5ad", "{root}/m2", "--cellfm", "{root}/c.ckpt"], r"`--cellfm` needs `--vocabulary`"),
        (["generate", "{root}", "{root}/c2.h5ad", "{root}/x.h5ad"], r"is not a model folder"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(chain, her2st_path, args, match):
    args = [a.format(root=chain["root"], data=her2st_path) for a in args]
    code, _, err = run(args)
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"hinge-sc {args[0]}: error: ")
    assert re.search(match, err), err
    assert not (chain["root"] / "x.h5ad").exists() and not (chain["root"] / "m2").exists()


def test_version_and_help(capsys):
    from hinge_sc import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"hinge-sc {__version__}"
    for command, expected in (("features", "(default: 112.0)"), ("train", "(default: 200)"),
                              ("generate", "(default: 8)"), ("demo", "(default: hinge_demo_output)")):  # fmt: skip
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert expected in text, command
        assert "µm" in text or command == "train", command


def test_import_is_silent():
    result = subprocess.run(
        [sys.executable, "-c", "import hinge_sc; from hinge_sc._third_party import import_squidpy; import_squidpy()"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stderr == "" and result.stdout == ""


def test_demo_data_source(tmp_path, monkeypatch):
    from hinge_sc._cli import _parser
    from hinge_sc._cli._demo import data_source

    monkeypatch.delenv("HINGE_SC_DATA_DIR", raising=False)
    assert data_source(_parser().parse_args(["demo"])) is None  # download
    assert data_source(_parser().parse_args(["demo", "--data", str(tmp_path)])) == tmp_path
    monkeypatch.setenv("HINGE_SC_DATA_DIR", str(tmp_path))
    assert data_source(_parser().parse_args(["demo"])) == tmp_path / "her2st"


def test_inputs_are_recognised_and_zarr_round_trips(tmp_path, her2st_crop):
    from hinge_sc._cli._common import UsageError, input_kind, read_input, write_output

    (tmp_path / "outs" / "spatial").mkdir(parents=True)
    (tmp_path / "slide.svs").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert input_kind(tmp_path / "outs") == "visium" and input_kind(tmp_path / "slide.svs") == "image"
    with pytest.raises(UsageError, match="neither an H&E image"):
        input_kind(tmp_path / "notes.txt")
    with pytest.raises(UsageError, match="neither a Space Ranger"):
        input_kind(tmp_path)
    adata = her2st_crop.copy()
    write_output(adata, tmp_path / "crop.zarr")  # AnnData → SpatialData store
    assert input_kind(tmp_path / "crop.zarr") == "spatialdata"
    sdata = read_input(tmp_path / "crop.zarr", "spatialdata", None)
    table = next(iter(sdata.tables.values()))
    assert table.n_obs == adata.n_obs and sdata.images and sdata.shapes
    write_output(adata, tmp_path / "crop.h5ad")
    assert input_kind(tmp_path / "crop.h5ad") == "h5ad"
    assert not list(tmp_path.glob(".*.partial"))


def test_a_garbage_h5ad_is_one_line(tmp_path, capsys):
    """A file named .h5ad that is not one is reported in one line, without a traceback (issue 24)."""
    import pytest

    from hinge_sc._cli import main

    bad = tmp_path / "in.h5ad"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(SystemExit) as exit_:
        main(["features", str(bad), str(tmp_path / "out.h5ad")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "could not be read as an AnnData .h5ad" in err and "Traceback" not in err
