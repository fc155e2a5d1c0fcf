"""Reliability (issue 24): `overwrite` never deletes what hinge_sc did not write; forged sizes fail fast; RNGs kept."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc._cli import main
from hinge_sc._files import OUTPUT_MARKER, FileIntegrityError, atomic_path, check_replaceable, output_kind

from .test_bad_inputs import backbone, make_adata, registered, tiny_trained_model, with_image

GEN = {"n_samples": 1, "n_steps": 2, "seed": 0, "show_progress_bar": False}


@pytest.fixture(scope="module")
def model() -> hs.HINGE:
    return tiny_trained_model()


def cli(args: list[str]) -> int:
    """Exit status of ``hinge-sc ARGS``."""
    try:
        return main(args) or 0
    except SystemExit as exit_:
        return int(exit_.code or 0)


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder of a user's files (one in a sub-folder); returns their contents."""
    (path / "sub").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\documentclass{article}")
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return files_of(path)


def files_of(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def foreign_zarr(path: Path) -> dict[str, bytes]:
    """Another program's zarr store."""
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("counts", shape=(3, 2), dtype="float32", fill_value=1.0)
    group.attrs["written_by"] = "another program"
    return files_of(path)


# ---------------------------------------------------------------------------------------------------- data loss
@pytest.mark.parametrize("make", [user_folder, foreign_zarr], ids=["user_files", "foreign_zarr"])
@pytest.mark.parametrize("mode", [{"overwrite": True}, {"resume": True}], ids=["overwrite", "resume"])
def test_generate_store_refuses_foreign_folders(model, tmp_path, make, mode):
    store = tmp_path / "store"
    before = make(store)
    with pytest.raises(FileExistsError, match=r"`store` .* hinge_sc did not write .*nothing was deleted"):
        hs.tl.generate(model, make_adata(), store=store, **mode, **GEN)
    assert files_of(store) == before  # every file kept, none added


def test_generate_store_overwrites_its_own_store_only(model, tmp_path):
    store = tmp_path / "store.zarr"
    adata = make_adata()
    hs.tl.generate(model, adata, store=store, **GEN)
    assert output_kind(store) == "generation_store"
    hs.tl.generate(model, adata, store=store, overwrite=True, key_added="again", **GEN)  # its own: replaced
    (store / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"also holds 1 entr.*notes\.txt"):
        hs.tl.generate(model, adata, store=store, overwrite=True, key_added="third", **GEN)
    assert (store / "notes.txt").read_text() == "mine"


def test_resume_refuses_other_features_with_the_same_spot_names(model, tmp_path):
    store = tmp_path / "store.zarr"
    adata = make_adata()
    hs.tl.generate(model, adata, store=store, **GEN)
    other = make_adata(seed=1)  # same obs names, other features
    with pytest.raises(ValueError, match=r"features_sha256 differ from the stored run"):
        hs.tl.generate(model, other, store=store, resume=True, key_added="resumed", **GEN)


@pytest.fixture(scope="module")
def cli_model(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "model"
    model.save(path)
    return path


@pytest.mark.parametrize("output", ["out.zarr", "out.h5ad"])
def test_cli_overwrite_refuses_a_folder_of_user_files(cli_model, tmp_path, output):
    data = tmp_path / "in.h5ad"
    make_adata().write_h5ad(data)
    out = tmp_path / output
    before = user_folder(out)
    code = cli(["generate", str(cli_model), str(data), str(out), "--overwrite", "--n-samples", "1",
                 "--sampling-steps", "2"])  # fmt: skip
    assert code == 2
    assert files_of(out) == before


def test_cli_overwrite_replaces_its_own_output_not_a_users_file(cli_model, tmp_path, capsys):
    data = tmp_path / "in.h5ad"
    make_adata().write_h5ad(data)
    args = [str(cli_model), str(data), "--n-samples", "1", "--sampling-steps", "2"]
    out = tmp_path / "out.h5ad"
    assert cli(["generate", args[0], args[1], str(out), *args[2:]]) == 0
    assert output_kind(out) == "cli_output"
    assert cli(["generate", args[0], args[1], str(out), *args[2:], "--overwrite"]) == 0
    import anndata as ad

    assert ad.read_h5ad(out).n_obs == 24  # an ordinary h5ad
    mine = tmp_path / "mine.h5ad"
    make_adata().write_h5ad(mine)
    before = mine.read_bytes()
    capsys.readouterr()
    assert cli(["generate", args[0], args[1], str(mine), *args[2:], "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert mine.read_bytes() == before
    imaged = with_image(make_adata(), np.full((100, 100, 3), 200, dtype=np.uint8))
    imaged.uns["spatial"]["S1"]["scalefactors"]["spot_diameter_fullres"] = 10.0
    imaged.write_h5ad(data)
    zarr_out = tmp_path / "out.zarr"
    assert cli(["generate", args[0], args[1], str(zarr_out), *args[2:]]) == 0
    assert (zarr_out / OUTPUT_MARKER).is_file()
    assert cli(["generate", args[0], args[1], str(zarr_out), *args[2:], "--overwrite"]) == 0
    assert not list(tmp_path.glob(".*partial"))  # no scratch folders left


def test_check_replaceable_refuses_links(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FileExistsError, match="symbolic link"):
        check_replaceable(link, argument="store", kinds=("generation_store",))


# ---------------------------------------------------------------------------------------------------- files
def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644  # mkstemp alone gives 0o600


def test_stale_temporary_files_of_a_killed_save_are_removed(tmp_path):
    stale = tmp_path / ".backbone.pt.abc123.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".other.pt.x.tmp"
    other.write_bytes(b"not ours to clean")
    backbone().save(tmp_path / "backbone.pt")
    assert not stale.exists()
    assert other.exists()


def test_save_into_a_file_path_names_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        backbone().save(blocker / "backbone.pt")


def test_garbage_pt_names_the_file(tmp_path):
    bad = tmp_path / "backbone.pt"
    bad.write_bytes(os.urandom(64))
    with pytest.raises(FileIntegrityError, match=r"backbone\.pt could not be read as a hinge_sc backbone file"):
        hs.Backbone.load(bad)


# ---------------------------------------------------------------------------------------------------- global RNGs
def test_setup_train_generate_leave_global_rngs_alone():
    np.random.seed(123)
    torch.manual_seed(123)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    adata = registered()
    m = hs.HINGE(adata, backbone(), diffusion_steps=4)
    m.train(max_epochs=1, batch_size=8, warmup_epochs=0, accelerator="cpu", show_progress_bar=False,
            validation_size=0.0, early_stopping=False)  # fmt: skip
    hs.tl.generate(m, make_adata(), **GEN)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


# ---------------------------------------------------------------------------------------------------- memory bounds
#: Address-space limit of the subprocesses: importing torch and scanpy takes ~3 GiB of it; a forged size asks for
#: far more, so without the checks these cases die with MemoryError (or hang) instead of the expected message.
RLIMIT_GIB = 6

PRELUDE = f"""
import resource, sys, json, pathlib, re, traceback
import numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import hinge_sc as hs
from test_bad_inputs import backbone, make_adata, registered, image_adata
resource.setrlimit(resource.RLIMIT_AS, ({RLIMIT_GIB} << 30, {RLIMIT_GIB} << 30))
results = {{}}
def expect(case, call, match):
    try:
        call()
    except MemoryError as err:
        results[case] = f"MemoryError {{err}}"
    except Exception as err:
        ok = re.search(match, str(err))
        results[case] = "OK" if ok else f"{{type(err).__name__}}: {{err}}"
    else:
        results[case] = "no error"
"""

BOUND_CASES = {
    "model_json_n_steps": """
m = hs.HINGE(registered(), backbone(), diffusion_steps=4)
m.save(tmp / "model_json_n_steps_m")
meta = json.loads((tmp / "model_json_n_steps_m" / "model.json").read_text())
def find(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("n_steps", "diffusion_steps") and isinstance(v, int):
                o[k] = 10**12
            else:
                find(v)
    elif isinstance(o, list):
        for v in o: find(v)
find(meta)
(tmp / "model_json_n_steps_m" / "model.json").write_text(json.dumps(meta))
from hinge_sc._files import write_manifest
manifest = json.loads((tmp / "model_json_n_steps_m" / "manifest.json").read_text())
write_manifest(tmp / "model_json_n_steps_m", list(manifest["files"]), meta={k: v for k, v in manifest.items() if k != "files"})
expect("model_json_n_steps", lambda: hs.HINGE.load(tmp / "model_json_n_steps_m"), r"diffusion_steps.*1 … 10,000")
""",
    "backbone_huge_vocabulary": """
import torch
b = backbone(); b.save(tmp / "backbone_huge_vocabulary_b.pt")
payload = torch.load(tmp / "backbone_huge_vocabulary_b.pt", weights_only=True)
payload["genes"] = [f"G{i}" for i in range(1_000_000)]
payload["config"]["d_model"] = 4096
payload["config"]["n_heads"] = 8
torch.save(payload, tmp / "backbone_huge_vocabulary_b.pt")
expect("backbone_huge_vocabulary", lambda: hs.Backbone.load(tmp / "backbone_huge_vocabulary_b.pt"), r"inconsistent backbone file .*config and vocabulary do not fit")
""",
    "backbone_huge_layers": """
import torch
b = backbone(); b.save(tmp / "backbone_huge_layers_b.pt")
payload = torch.load(tmp / "backbone_huge_layers_b.pt", weights_only=True)
payload["config"]["n_layers"] = 10**9
torch.save(payload, tmp / "backbone_huge_layers_b.pt")
expect("backbone_huge_layers", lambda: hs.Backbone.load(tmp / "backbone_huge_layers_b.pt"), r"`n_layers`=1000000000 \\(expected an integer in 1 … 256\\)")
""",
    "scgpt_args_huge_nlayers": """
import torch
folder = tmp / "scgpt_args_huge_nlayers_scgpt"; folder.mkdir()
(folder / "args.json").write_text(json.dumps({"embsize": 16, "nlayers": 10**9, "nheads": 2}))
(folder / "vocab.json").write_text(json.dumps({"<pad>": 0, "<cls>": 1, "A": 2}))
torch.save({"encoder.embedding.weight": torch.zeros(3, 16)}, folder / "best_model.pt")
expect("scgpt_args_huge_nlayers", lambda: hs.Backbone.from_scgpt(folder), r"args.json describes no usable scGPT model.*n_layers")
""",
    "png_decompression_bomb": """
import struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
idat = zlib.compress(b"\\x00" * 1000)
(tmp / "png_decompression_bomb_bomb.png").write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
expect("png_decompression_bomb", lambda: hs.pp.tile_slide(tmp / "png_decompression_bomb_bomb.png", microns_per_pixel=0.5), r"100,000 × 100,000 px.*pyramidal TIFF")
""",
    "patch_size_huge": """
adata = image_adata()
expect("patch_size_huge", lambda: hs.pp.histology_features(adata, patch_size_um=1e7, key_added="X_new", views=1, out_size=None, show_progress_bar=False),
       r"patches of .* px.*`patch_size_um`")
""",
    "tile_tiny_spacing": """
img = np.full((2000, 2000, 3), 200, dtype=np.uint8)
expect("tile_tiny_spacing", lambda: hs.pp.tile_slide(img, microns_per_pixel=0.5, spacing_um=1e-4, spot_diameter_um=1e-4, tissue_mask=False),
       r"spots, more than 5,000,000.*`spacing_um`")
""",
    "n_samples_huge": """
m = hs.HINGE(registered(), backbone(), diffusion_steps=4)
m.is_trained_ = True
expect("n_samples_huge", lambda: m.generate(make_adata(), n_samples=10**9, seed=0, show_progress_bar=False),
       r"10\\^?9|1,000,000,000 samples.*`n_samples`")
""",
}


@pytest.fixture(scope="module")
def bound_results(tmp_path_factory) -> dict[str, str]:
    """Every case of :data:`BOUND_CASES` run in one subprocess under the address-space limit."""
    tmp = tmp_path_factory.mktemp("bounds")
    body = "".join(
        f"\ntry:\n{textwrap.indent(textwrap.dedent(code), '    ')}\nexcept Exception:\n"
        f"    results[{case!r}] = 'setup failed: ' + traceback.format_exc()\n"
        for case, code in BOUND_CASES.items()
    )
    script = textwrap.dedent(PRELUDE) + f"tmp = pathlib.Path({str(tmp)!r})\n" + body + "print(json.dumps(results))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(BOUND_CASES))
def test_forged_sizes_fail_fast_under_a_memory_limit(bound_results, case):
    assert bound_results[case] == "OK"


def test_json_marker_is_not_trusted_from_a_broken_file(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / OUTPUT_MARKER).write_text("{not json")
    assert output_kind(folder) is None
    (folder / OUTPUT_MARKER).write_text(json.dumps({"written_by": "someone", "kind": "generation_store"}))
    assert output_kind(folder) is None


def test_saving_a_model_onto_a_file_names_it(model, tmp_path):
    target = tmp_path / "model"
    target.write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"`dir_path` .* is a file; a model is saved as a folder"):
        model.save(target)
    assert target.read_text() == "a file"
