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


def test_train_on_real_sections_streamed_from_files(sections, cellfm_vocabulary, tmp_path):
    """C2 and C3 written as one file each, read back a section at a time; the model holds out one of them."""
    c2, c3 = (a.copy() for a in sections)
    for adata in (c2, c3):
        adata.write_h5ad(tmp_path / f"{adata.obs['section'].iloc[0]}.h5ad")
    coll = hs.io.SectionCollection(tmp_path)
    assert coll.sections == ["C2", "C3"] and coll.n_obs == c2.n_obs + c3.n_obs
    backbone = hs.Backbone.random(cellfm_vocabulary, d_model=32, n_layers=2, n_heads=4)
    panel = hs.pp.select_genes(c2, n_genes=30, section_key=None, vocabulary=backbone.genes, key_added="stream_panel")
    model = hs.HINGE.from_collection(coll, backbone, genes=panel, views_key="X_histology_views", diffusion_steps=10,
                                     linear_skip=True)  # fmt: skip
    model.train(max_epochs=2, warmup_epochs=1, accelerator="cpu", show_progress_bar=False)
    record = {r["section"]: r for r in model.train_params_["sections"]}
    held_out = model.train_params_["validation_sections"]
    assert len(held_out) == 1 and record[held_out[0]]["role"] == "validation"
    assert {r["source"] for r in record.values()} == {str(tmp_path / "C2.h5ad"), str(tmp_path / "C3.h5ad")}
    assert model.train_params_["n_views"] == 8 and model.train_params_["linear_skip_alpha"] is not None
    test = coll.to_adata(held_out, obsm_keys=["X_histology"])
    hs.tl.generate(model, test, n_samples=2, n_steps=5, show_progress_bar=False)
    _, summary = hs.tl.evaluate(test, key="hinge")
    assert np.isfinite(summary.loc[held_out[0], "pcc_mean"])
