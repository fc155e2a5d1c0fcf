"""Model files: no code runs on load, no user file is lost on save, damaged files are named (issue 9)."""

from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest
import torch

import hinge_sc as hs
from hinge_sc._files import MANIFEST_FILE, FileIntegrityError

from .conftest import synthetic_adata


class _Planted:
    """An object whose unpickling writes a marker file (stands in for any code an attacker could run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, marker):
    with open(path, "wb") as fh:
        pickle.dump({"format": "hinge_sc.HINGE/1", "payload": _Planted(marker)}, fh)


def _legacy_folder(trained, folder, *, drop_feature_stats=False):
    """A folder in the hinge_sc 0.1.0 layout: one pickled model.pt plus backbone.pt."""
    folder.mkdir()
    state = {k: v for k, v in trained.module.state_dict().items() if not k.startswith("denoiser.backbone.")}
    if drop_feature_stats:
        state = {k: v for k, v in state.items() if k not in ("feature_mean", "feature_scale")}
    state["mask_counts"] = state.pop("n_hidden")  # the 0.1.0 name of the k(t) buffer
    for key in [k for k in state if k.startswith("denoiser.condition_embedding.")]:  # 0.1.0 sub-module name
        state[key.replace("condition_embedding", "condition")] = state.pop(key)
    attrs = ("init_params_", "panel_genes_", "backbone_info_", "train_params_", "history_", "is_trained_",
             "train_indices_", "validation_indices_")  # fmt: skip
    payload = {
        "format": "hinge_sc.HINGE/1",
        "hinge_sc_version": "0.1.0",
        "registry": trained.registry_,
        "attributes": {a: getattr(trained, a) for a in attrs},  # init params renamed below
        "adapter_state_dict": state,
    }
    init = payload["attributes"]["init_params_"]
    init = {**init, "non_kwargs": dict(init["non_kwargs"])}
    init["non_kwargs"]["condition"] = init["non_kwargs"].pop("conditioning")  # the 0.1.0 argument name
    payload["attributes"]["init_params_"] = init
    torch.save(payload, folder / "model.pt")
    trained.module.backbone.save(folder / "backbone.pt")


def test_saved_folder_has_no_pickle_and_a_manifest(trained, tmp_path):
    trained.save(tmp_path / "m", save_anndata=True)
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["adata.h5ad", "backbone.pt", "manifest.json", "model.json", "model.safetensors"]
    manifest = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"adata.h5ad", "backbone.pt", "model.json", "model.safetensors"}
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    loaded = hs.HINGE.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.history["train_loss"], trained.history["train_loss"])
    assert loaded.train_params_ == trained.train_params_
    assert (loaded.train_indices_ == trained.train_indices_).all()


@pytest.mark.parametrize("planted", ["model.pt", "backbone.pt"])
def test_planted_pickle_never_runs(trained, tmp_path, planted):
    folder = tmp_path / "m"
    marker = tmp_path / "pwned"
    if planted == "model.pt":  # a 0.1.0-style folder whose model.pt runs code when unpickled
        folder.mkdir()
        _plant(folder / "model.pt", marker)
        with pytest.raises(FileIntegrityError, match="0.1.0 format.*can run any code"):
            hs.HINGE.load(folder)
    else:  # a current folder whose backbone.pt was replaced (and the manifest forged to match)
        trained.save(folder)
        _plant(folder / "backbone.pt", marker)
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        from hinge_sc._files import sha256

        manifest["files"]["backbone.pt"] = {"bytes": (folder / "backbone.pt").stat().st_size,
                                            "sha256": sha256(folder / "backbone.pt")}  # fmt: skip
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
        with pytest.raises(FileIntegrityError, match="never loads") as info:
            hs.HINGE.load(folder)
        assert "weights_only=False" not in str(info.value)
    assert not marker.exists()


def test_backbone_load_refuses_planted_pickle(tmp_path):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "bb.pt", marker)
    with pytest.raises(FileIntegrityError, match="never loads"):
        hs.Backbone.load(tmp_path / "bb.pt")
    assert not marker.exists()


def test_legacy_folder_loads_only_with_opt_in(trained, tmp_path):
    _legacy_folder(trained, tmp_path / "old", drop_feature_stats=True)
    with pytest.raises(FileIntegrityError, match="trust_legacy_pickle=True"):
        hs.HINGE.load(tmp_path / "old")
    loaded = hs.HINGE.load(tmp_path / "old", adata=synthetic_adata(), trust_legacy_pickle=True)
    # saved before hinge_sc standardised features: loads unstandardised
    assert torch.equal(loaded.module.feature_mean, torch.zeros(10))
    assert torch.equal(loaded.module.feature_scale, torch.ones(10))
    loaded.save(tmp_path / "new")  # converted: loads without the opt-in
    assert hs.HINGE.load(tmp_path / "new").panel_genes_ == trained.panel_genes_


@pytest.mark.parametrize("foreign", ["backbone.pt", "adata.h5ad", "model.json", "manifest.json"])
def test_save_never_replaces_a_user_file(trained, tmp_path, foreign):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / foreign).write_text("user data")
    with pytest.raises(FileExistsError, match=f"would be replaced: .*{foreign}.*overwrite=True"):
        trained.save(folder, save_anndata=True)
    assert (folder / foreign).read_text() == "user data"
    assert sorted(p.name for p in folder.iterdir()) == [foreign]  # nothing else was written either


def test_save_overwrite_replaces(trained, tmp_path):
    trained.save(tmp_path / "m")
    trained.save(tmp_path / "m", overwrite=True)
    assert hs.HINGE.load(tmp_path / "m").is_trained


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("truncate:model.safetensors", r"model\.safetensors has \d+ bytes but \d+ were written"),
        ("truncate:backbone.pt", r"backbone\.pt has \d+ bytes"),
        ("flip:model.json", r"model\.json does not match the SHA-256"),
        ("delete:model.safetensors", r"model\.safetensors is listed in manifest\.json but missing"),
        ("delete:manifest.json", r"no manifest\.json: the save that wrote it did not finish"),
        ("garble:manifest.json", r"manifest\.json could not be read as JSON"),
    ],
)
def test_damaged_files_are_named(trained, tmp_path, damage, match):
    folder = tmp_path / "m"
    trained.save(folder)
    how, name = damage.split(":")
    path = folder / name
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "flip":
        data = bytearray(path.read_bytes())
        data[10] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "delete":
        path.unlink()
    else:
        path.write_text("{not json")
    with pytest.raises(FileIntegrityError, match=match):
        hs.HINGE.load(folder)


def test_truncated_backbone_file_is_named(backbone, tmp_path):
    backbone.save(tmp_path / "bb.pt")
    data = (tmp_path / "bb.pt").read_bytes()
    (tmp_path / "bb.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileIntegrityError, match=r"bb\.pt could not be read .* truncated or corrupt") as info:
        hs.Backbone.load(tmp_path / "bb.pt")
    assert "weights_only" not in str(info.value)


def test_backbone_save_refuses_existing_file(backbone, tmp_path):
    (tmp_path / "bb.pt").write_text("user data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        backbone.save(tmp_path / "bb.pt")
    assert (tmp_path / "bb.pt").read_text() == "user data"


def test_interrupted_save_leaves_no_loadable_half_model(trained, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    trained.save(folder)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(trained.module.backbone), "save", fail)
    with pytest.raises(KeyboardInterrupt):
        trained.save(folder, overwrite=True)
    assert not list(folder.glob(".*.tmp"))  # no temporary file left behind
    with pytest.raises(FileIntegrityError, match="did not finish"):
        hs.HINGE.load(folder)


def test_load_with_data_of_another_feature_width(trained, tmp_path):
    trained.save(tmp_path / "m")
    other = synthetic_adata()
    other.obsm["X_histology"] = other.obsm["X_histology"][:, :7]
    with pytest.raises(ValueError, match=r"has 7 features per spot, but the model .* was trained on 10"):
        hs.HINGE.load(tmp_path / "m", adata=other)


def test_folder_saved_before_an_argument_existed_loads_as_it_was_trained(backbone, tmp_path):
    """A model saved before ``readout`` / ``linear_skip`` existed (and when ``likelihood`` defaulted to "mse") is
    rebuilt with the values it was trained with, not today's defaults."""
    from hinge_sc._files import write_manifest

    adata = synthetic_adata()
    hs.HINGE.setup_anndata(adata, features_key="X_histology")
    model = hs.HINGE(adata, backbone, diffusion_steps=10, likelihood="mse", readout=False, linear_skip=False)
    model.save(tmp_path / "m", save_anndata=False)
    folder = tmp_path / "m"
    saved = json.loads((folder / "model.json").read_text())
    params = saved["attributes"]["init_params_"]["non_kwargs"]
    for name in ("readout", "linear_skip", "likelihood"):
        params.pop(name)
    (folder / "model.json").write_text(json.dumps(saved))
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    write_manifest(folder, list(manifest["files"]), meta={k: v for k, v in manifest.items() if k != "files"})
    loaded = hs.HINGE.load(folder, adata=adata)
    assert loaded.module.likelihood.name == "mse" and loaded.module.denoiser.readout is None
    assert not loaded.module.linear_skip
