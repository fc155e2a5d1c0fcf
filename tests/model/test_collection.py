"""Training on sections streamed from disk (``hs.io.SectionCollection`` → ``HINGE.from_collection``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import hinge_sc as hs
from hinge_sc._ridge import fit_ridge_cv
from hinge_sc.module import expression_target

from .conftest import N_FEATURES, synthetic_adata


def _write_sections(folder, n_sections=4, n_spots=40):
    """One file per section, alternately ``.h5ad`` and ``.zarr``; returns the paths and the sections in memory."""
    paths, parts = [], []
    for i in range(n_sections):
        a = synthetic_adata(seed=i, n_spots=n_spots)
        a.obs_names = [f"s{i}_{n}" for n in a.obs_names]
        del a.obs["section"]
        path = folder / (f"sec{i}.h5ad" if i % 2 == 0 else f"sec{i}.zarr")
        a.write_h5ad(path) if path.suffix == ".h5ad" else a.write_zarr(path)
        a.obs["section"] = f"sec{i}"
        paths.append(path)
        parts.append(a)
    return paths, parts


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sections")
    paths, parts = _write_sections(folder)
    return hs.io.SectionCollection(folder), parts


@pytest.fixture(scope="module")
def streamed(collection, backbone):
    coll, _ = collection
    model = hs.HINGE.from_collection(coll, backbone, views_key="X_histology_views", diffusion_steps=10, linear_skip=True)
    model.train(max_epochs=2, batch_size=32, warmup_epochs=1, validation_size=0.25, accelerator="cpu",
                show_progress_bar=False, buffer_sections=1)  # fmt: skip
    return model


def test_collection_reads_obs_genes_and_rows_of_one_section(collection):
    coll, parts = collection
    assert coll.sections == ["sec0", "sec1", "sec2", "sec3"]
    assert coll.n_obs == 160 and list(coll.var_names) == list(parts[0].var_names)
    assert set(coll.obs.columns) >= {"section", "source"}
    block = coll.read("sec1", obsm_keys=["X_histology"], rows=slice(5, 9))
    np.testing.assert_array_equal(block["X"].toarray(), parts[1].X[5:9].toarray())
    np.testing.assert_array_equal(block["X_histology"], parts[1].obsm["X_histology"][5:9])
    assert list(block["obs_names"]) == list(parts[1].obs_names[5:9])
    small = coll.to_adata(["sec2", "sec3"], obsm_keys=["X_histology"], max_spots_per_section=7)
    assert small.n_obs == 14 and set(small.obs["section"]) == {"sec2", "sec3"}


def test_training_streams_sections_and_records_them(streamed, collection):
    coll, parts = collection
    record = pd.DataFrame(streamed.train_params_["sections"])
    assert sorted(record["section"]) == coll.sections
    assert (record["role"] == "validation").sum() == 1
    assert set(record["source"]) == {str(p) for p in coll.paths}
    assert record["n_spots"].sum() == 160
    held_out = streamed.train_params_["validation_sections"]
    assert record.loc[record["role"] == "validation", "section"].tolist() == held_out
    # indices point into `collection.obs`: no validation spot shares a section with a training spot
    train_sections = set(coll.obs["section"].iloc[streamed.train_indices_])
    assert set(coll.obs["section"].iloc[streamed.validation_indices_]) == set(held_out)
    assert not train_sections & set(held_out)
    assert streamed.train_params_["n_views"] == 3
    assert streamed.train_params_["spread_scale"] is not None
    assert streamed.adata.n_obs == 4 * 32  # registered on a sample of every section, not on all the spots
    new = coll.to_adata([held_out[0]], obsm_keys=["X_histology"])
    hs.tl.generate(streamed, new, n_samples=2, n_steps=3, show_progress_bar=False)
    assert np.isfinite(new.obsm["hinge"]).all().all()


def test_streamed_statistics_equal_those_of_the_sections_in_memory(streamed, collection):
    """The features' standardisation (all spots, all views) and the linear skip (the training sections' moments)
    are those computed on the concatenated sections."""
    _, parts = collection
    full = ad.concat(parts)
    feats = np.concatenate([full.obsm["X_histology"], full.obsm["X_histology_views"].reshape(-1, N_FEATURES)])
    module = streamed.module
    np.testing.assert_allclose(module.feature_mean.numpy(), feats.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(module.feature_scale.numpy(), feats.std(0), rtol=1e-4, atol=1e-6)
    train = full[~full.obs["section"].isin(streamed.train_params_["validation_sections"])]
    import torch

    x = module.standardize(torch.as_tensor(train.obsm["X_histology"])).numpy()
    counts = torch.as_tensor(train[:, streamed.panel_genes_].X.toarray())
    library = torch.as_tensor(np.asarray(train.X.sum(1)).ravel())
    y = expression_target(counts, library, module.target_scale).numpy()
    coef, intercept, alpha = fit_ridge_cv(x, y, train.obs["section"].to_numpy())
    assert alpha == streamed.train_params_["linear_skip_alpha"]
    np.testing.assert_allclose(module.skip_weight.numpy(), coef, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(module.skip_bias.numpy(), intercept, rtol=1e-3, atol=1e-4)


def test_several_sections_in_one_file_with_section_key(tmp_path, backbone):
    a = synthetic_adata(n_spots=60)
    a.obs["section"] = np.repeat(["A", "B", "C"], 20)
    a.write_h5ad(tmp_path / "all.h5ad")
    coll = hs.io.SectionCollection(tmp_path / "all.h5ad", section_key="section")
    assert coll.sections == ["A", "B", "C"]
    block = coll.read("B", obsm_keys=["X_histology"])
    np.testing.assert_array_equal(block["X_histology"], a.obsm["X_histology"][20:40])
    model = hs.HINGE.from_collection(coll, backbone, diffusion_steps=5)
    model.train(max_epochs=1, batch_size=16, warmup_epochs=1, accelerator="cpu", show_progress_bar=False)
    assert len(model.train_params_["validation_sections"]) == 1


def test_collection_inputs_are_checked(tmp_path, collection, backbone):
    coll, parts = collection
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hs.io.SectionCollection(tmp_path / "missing.h5ad")
    with pytest.raises(FileNotFoundError, match="holds no"):
        hs.io.SectionCollection(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="neither an `.h5ad`"):
        hs.io.SectionCollection(tmp_path / "notes.txt")
    (tmp_path / "bad.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="could not be read as an AnnData"):
        hs.io.SectionCollection(tmp_path / "bad.h5ad")
    with pytest.raises(KeyError, match="section_key='tissue'"):
        hs.io.SectionCollection(coll.paths[:1], section_key="tissue")
    parts[0].write_h5ad(tmp_path / "copy.h5ad")
    with pytest.raises(ValueError, match="occur more than once"):
        hs.io.SectionCollection([coll.paths[0], tmp_path / "copy.h5ad"])
    with pytest.raises(KeyError, match="no `obsm\\['X_uni'\\]`"):
        hs.HINGE.from_collection(coll, backbone, features_key="X_uni")
    with pytest.raises(TypeError, match="SectionCollection"):
        hs.HINGE.from_collection(parts[0], backbone)
    model = hs.HINGE.from_collection(coll, backbone, diffusion_steps=5)
    with pytest.raises(ValueError, match="validation='spots'"):
        model.train(max_epochs=1, validation="spots", accelerator="cpu", show_progress_bar=False)
    with pytest.raises(ValueError, match="buffer_sections"):
        model.train(max_epochs=1, buffer_sections=0, accelerator="cpu", show_progress_bar=False)


def test_non_integer_counts_in_one_section_name_it(tmp_path, backbone):
    paths, parts = _write_sections(tmp_path, n_sections=3, n_spots=20)
    bad = parts[2].copy()
    del bad.obs["section"]
    bad.X = bad.X * 0.5
    bad.write_zarr(paths[2].with_suffix(".zarr")) if paths[2].suffix == ".zarr" else bad.write_h5ad(paths[2])
    coll = hs.io.SectionCollection(paths)
    with pytest.raises(ValueError, match="sec2"):
        hs.HINGE.from_collection(coll, backbone, diffusion_steps=5, registration_spots=3)


def test_pretraining_streams_a_collection(collection):
    coll, parts = collection
    genes = list(coll.var_names)
    bb = hs.pretrain_backbone(coll, d_model=16, n_layers=1, n_heads=2, n_tokens=8, max_epochs=2, batch_size=16,
                              validation_size=0.25, block_rows=15, accelerator="cpu", show_progress_bar=False)  # fmt: skip
    record = bb.provenance.pretraining
    assert record.n_spots == 160 and record.n_genes == len(genes)
    assert len(record.history) == 2 and all(np.isfinite(r["validation_loss"]) for r in record.history)
