"""HINGE end to end on real her2st sections (C2 for training, C3 held out)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import hinge_sc as hs
from hinge_sc._cli import main

from ..conftest import DATA_DIR


@pytest.fixture(scope="module")
def sections(her2st_c):
    adata = her2st_c.copy()
    hs.pp.histology_features(adata, views=8, show_progress_bar=False)
    return adata[adata.obs["section"] == "C2"].copy(), adata[adata.obs["section"] == "C3"].copy()


@pytest.fixture(scope="module")
def cellfm_vocabulary():
    return pd.read_csv(DATA_DIR / "vocab" / "cellfm" / "gene_info.csv", usecols=[0]).iloc[:, 0].tolist()


def test_train_and_generate_on_real_spots(sections, cellfm_vocabulary):
    train, test = sections
    backbone = hs.Backbone.random(cellfm_vocabulary, d_model=32, n_layers=2, n_heads=4)
    panel = hs.pp.select_genes(train, n_genes=40, section_key=None, vocabulary=backbone.genes)
    hs.HINGE.setup_anndata(train, features_key="X_histology", views_key="X_histology_views", section_key="section")
    model = hs.HINGE(train, backbone, genes=panel, diffusion_steps=20)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    model.train(
        max_epochs=4, lr=1e-3, warmup_epochs=1, validation_size=0.2, accelerator="cpu", show_progress_bar=False
    )
    assert all(torch.equal(frozen[k], v) for k, v in backbone.state_dict().items())
    val = model.history["validation_loss"]["validation_loss"].to_numpy()
    assert val.min() < val[0]
    assert model.train_params_["n_views"] == 8

    hs.tl.generate(model, test, n_samples=2, n_steps=5, seed=0, show_progress_bar=False)
    assert test.obsm["hinge"].shape == (test.n_obs, 40)
    per_gene, summary = hs.tl.evaluate(test, key="hinge")
    assert np.isfinite(summary.loc["C3", "pcc_mean"])
    assert set(per_gene["gene"]) == set(panel)


def test_demo_command_tiny(tmp_path, her2st_path, monkeypatch, caplog):
    """Without ``--data`` the demo downloads its sections, and says so (the download is served from the local copy)."""
    from hinge_sc.datasets import _her2st

    fetch = _her2st._fetch
    served = []

    def offline_fetch(section, kind, root):
        assert root is None  # the download path of the loader
        served.append((section, kind))
        return fetch(section, kind, her2st_path)

    monkeypatch.delenv("HINGE_SC_DATA_DIR", raising=False)
    monkeypatch.setattr(_her2st, "_fetch", offline_fetch)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train", "C2", "--test", "C3"]
    args += ["--epochs", "1", "--n-genes", "30", "--d-model", "16", "--n-layers", "2", "--n-heads", "2"]
    args += ["--views", "1", "--n-samples", "2", "--sampling-steps", "4", "--diffusion-steps", "10"]
    with caplog.at_level("INFO", logger="hinge_sc"):
        assert main(args) == 0
    assert "No `--data`: downloading her2st sections C2, C3 from github.com/almaan/her2st" in caplog.text
    assert {("C2", "counts"), ("C3", "image")} <= set(served)
    outputs = ("spatial_genes.png", "section_metrics.csv", "per_gene_metrics.csv", "report.json")
    for name in (*outputs, "model/model.safetensors", "model/manifest.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["n_genes"] == 30 and report["test_sections"] == ["C3"]
    loaded = hs.HINGE.load(out / "model")
    assert len(loaded.panel_genes_) == 30
