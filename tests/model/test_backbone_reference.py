"""A backbone read from a file is saved by reference (path + SHA-256) and found again on load; ``device="auto"``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import hinge_sc as hs
from hinge_sc._files import read_json

from .conftest import N_GENES, synthetic_adata


@pytest.fixture
def model_from_file(tmp_path):
    random = hs.Backbone.random([f"GENE{i}" for i in range(N_GENES)], d_model=16, n_layers=1, n_heads=2)
    (tmp_path / "work").mkdir()
    random.save(tmp_path / "work" / "bb.pt")
    backbone = hs.Backbone.load(tmp_path / "work" / "bb.pt")
    adata = synthetic_adata(n_spots=24)
    hs.HINGE.setup_anndata(adata)
    return hs.HINGE(adata, backbone, diffusion_steps=3), adata


def test_saved_by_reference_and_found_again(model_from_file, tmp_path):
    model, adata = model_from_file
    model.save(tmp_path / "work" / "model")
    folder = tmp_path / "work" / "model"
    assert not (folder / "backbone.pt").exists()  # not copied
    ref = read_json(folder / "model.json")["backbone_reference"]
    assert ref["loader"] == "load" and ref["files"]["path"]["path"] == str((tmp_path / "work" / "bb.pt").resolve())
    assert len(ref["files"]["path"]["sha256"]) == 64
    loaded = hs.HINGE.load(folder, device="auto")  # Lightning-style: the CPU here
    assert loaded.device == torch.device("cpu")
    expected = model.get_expression(adata, n_samples=2, seed=0)
    np.testing.assert_allclose(loaded.get_expression(adata, n_samples=2, seed=0), expected, rtol=1e-5, atol=1e-6)

    # moved together (same relative place): found through the relative path
    shutil.move(tmp_path / "work", tmp_path / "moved")
    assert hs.HINGE.load(tmp_path / "moved" / "model", accelerator="cpu").panel_genes_ == model.panel_genes_
    # the backbone file alone moved away: the error names it
    shutil.move(tmp_path / "moved" / "bb.pt", tmp_path / "elsewhere.pt")
    with pytest.raises(FileNotFoundError, match=r"bb\.pt"):
        hs.HINGE.load(tmp_path / "moved" / "model")
    # passing the backbone still works (checked against the saved checksum)
    assert hs.HINGE.load(tmp_path / "moved" / "model", backbone=hs.Backbone.load(tmp_path / "elsewhere.pt"))
    # the file changed: a clear integrity error naming it
    other = hs.Backbone.random([f"GENE{i}" for i in range(N_GENES)], d_model=16, n_layers=1, n_heads=2, seed=5)
    other.save(tmp_path / "moved" / "bb.pt")
    with pytest.raises(hs.FileIntegrityError, match=r"bb\.pt.*has changed"):
        hs.HINGE.load(tmp_path / "moved" / "model")


def test_copy_on_request_and_for_backbones_without_a_file(model_from_file, tmp_path, backbone):
    model, adata = model_from_file
    model.save(tmp_path / "copy", save_backbone=True)
    assert (tmp_path / "copy" / "backbone.pt").is_file()
    assert "backbone_reference" not in read_json(tmp_path / "copy" / "model.json")
    hs.HINGE.load(tmp_path / "copy")
    in_memory = hs.HINGE(adata, backbone, diffusion_steps=3)  # a random backbone has no file: copied by default
    in_memory.save(tmp_path / "mem")
    assert (tmp_path / "mem" / "backbone.pt").is_file()
    with pytest.raises(ValueError, match="single device|devices"):
        hs.HINGE.load(tmp_path / "mem", accelerator="cpu", device=[0, 1])
