from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import hinge_sc as hs

from .conftest import N_GENES, synthetic_adata


def _setup(adata, **kwargs):
    hs.HINGE.setup_anndata(adata, features_key="X_histology", **kwargs)


def test_panel_defaults_to_genes_in_vocabulary(adata):
    bb = hs.Backbone.random([f"GENE{i}" for i in range(20)], d_model=16, n_layers=2, n_heads=2)
    _setup(adata)
    with pytest.warns(UserWarning, match="4 of 24 genes are not in the backbone vocabulary"):
        model = hs.HINGE(adata, bb)
    assert model.panel_genes_ == [f"GENE{i}" for i in range(20)]


def test_explicit_gene_panel(adata, backbone):
    _setup(adata)
    model = hs.HINGE(adata, backbone, genes=["GENE3", "GENE1"])
    assert model.panel_genes_ == ["GENE3", "GENE1"]
    with pytest.raises(KeyError, match="not in the registered genes"):
        hs.HINGE(adata, backbone, genes=["GENE1", "NOT_MEASURED"])


def test_no_gene_in_vocabulary(adata):
    bb = hs.Backbone.random(["CD3E", "MS4A1"], d_model=16, n_layers=2, n_heads=2)
    _setup(adata)
    with pytest.raises(ValueError, match="None of the 24 genes is in the backbone vocabulary"):
        hs.HINGE(adata, bb)


def test_missing_features_key(adata):
    with pytest.raises(KeyError, match="hs.pp.histology_features"):
        hs.HINGE.setup_anndata(adata, features_key="X_uni")


def test_nan_features(adata):
    adata.obsm["X_histology"][3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 spots"):
        _setup(adata)


def test_wrong_view_shape(adata):
    adata.obsm["bad_views"] = np.zeros((adata.n_obs, 3, 7), np.float32)
    with pytest.raises(ValueError, match="views of width 7"):
        _setup(adata, views_key="bad_views")
    adata.obsm["flat_views"] = np.zeros((adata.n_obs, 30), np.float32)
    with pytest.raises(ValueError, match="must have 3 dimensions"):
        _setup(adata, views_key="flat_views")


def test_negative_counts(adata):
    adata.X = adata.X.toarray()
    adata.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative values"):
        _setup(adata)


def test_missing_layer(adata):
    with pytest.raises(KeyError, match="layer='counts'"):
        _setup(adata, layer="counts")


def test_training_lowers_validation_loss_and_keeps_backbone_frozen(backbone):
    adata = synthetic_adata()
    _setup(adata, views_key="X_histology_views")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    before = {k: v.clone() for k, v in model.module.backbone.state_dict().items()}
    model.train(
        max_epochs=6,
        batch_size=32,
        lr=1e-3,
        warmup_epochs=1,
        validation_size=0.25,
        accelerator="cpu",
        show_progress_bar=False,
    )
    after = model.module.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    val = model.history["validation_loss"]["validation_loss"].to_numpy()
    assert len(val) == 6 and val[-1] < val[0]
    assert model.train_params_["n_views"] == 3
    assert model.train_params_["best_epoch"] == int(np.argmin(val))
    assert set(model.train_indices_).isdisjoint(model.validation_indices_)


def test_warm_start_caps_steps_during_warmup(trained):
    t_max = trained.history["t_max"]["t_max"].to_numpy()
    assert t_max[0] == trained.train_params_["t_cap"] < trained.module.diffusion_steps
    assert np.all(t_max[1:] == trained.module.diffusion_steps)


def test_all_zero_spots_left_out(adata, backbone):
    adata.X = adata.X.toarray()
    adata.X[:5] = 0
    _setup(adata)
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    with pytest.warns(UserWarning, match="5 of 96 spots have no counts"):
        model.train(max_epochs=1, accelerator="cpu", show_progress_bar=False)
    assert model.train_params_["n_train_spots"] + model.train_params_["n_validation_spots"] == 91


def test_generate_shapes_and_seed(trained):
    out = trained.generate(n_samples=4, seed=7, return_samples=True, mean_estimate="samples", show_progress_bar=False)
    assert out.mean.shape == (96, N_GENES) and out.std.shape == (96, N_GENES)
    assert list(out.mean.index) == list(trained.adata.obs_names)
    assert out.samples.shape == (96, 4, N_GENES)
    np.testing.assert_allclose(out.mean.to_numpy(), out.samples.mean(1), rtol=1e-6)
    again = trained.generate(n_samples=4, seed=7, mean_estimate="samples", show_progress_bar=False)
    pd.testing.assert_frame_equal(out.mean, again.mean)
    other = trained.generate(n_samples=4, seed=8, show_progress_bar=False)
    assert not np.allclose(out.mean, other.mean)
    drawn = trained.generate(n_samples=1, show_progress_bar=False)
    assert isinstance(drawn.seed, int) and np.all(drawn.std.to_numpy() == 0)


def test_generate_on_he_only_slide(trained):
    feats = synthetic_adata(seed=5, n_spots=10).obsm["X_histology"]
    he_only = ad.AnnData(obs=pd.DataFrame(index=[f"tile{i}" for i in range(10)]))
    he_only.obsm["X_histology"] = feats
    hs.tl.generate(trained, he_only, n_samples=2, seed=0, show_progress_bar=False)
    assert he_only.n_vars == 0
    assert he_only.obsm["hinge"].shape == (10, N_GENES)
    assert he_only.uns["hinge"]["params"]["seed"] == 0


def test_generate_feature_width_checked(trained):
    other = ad.AnnData(obs=pd.DataFrame(index=["a", "b"]))
    other.obsm["X_histology"] = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="has 3 features, the model was trained on 10"):
        trained.generate(other)


def test_tl_generate_keys_and_overwrite(trained):
    adata = trained.adata
    x_before = adata.X.copy()
    hs.tl.generate(trained, n_samples=2, seed=0, save_samples=True, show_progress_bar=False)
    assert {"hinge", "hinge_std", "hinge_samples"} <= set(adata.obsm)
    assert (adata.X != x_before).nnz == 0
    params = adata.uns["hinge"]["params"]
    assert params["n_samples"] == params["std_n_samples"] == 2 and params["target_scale"] == "log2p1" and len(params["genes"]) == N_GENES
    assert params["mask_mechanism"] == "mask_emb"
    with pytest.raises(KeyError, match="already exists"):
        hs.tl.generate(trained, n_samples=2, show_progress_bar=False)
    hs.tl.generate(trained, n_samples=2, seed=1, overwrite=True, show_progress_bar=False)
    copy = hs.tl.generate(trained, n_samples=2, key_added="h2", copy=True, show_progress_bar=False)
    assert "h2" in copy.obsm and "h2" not in adata.obsm


def test_save_load_roundtrip(trained, tmp_path):
    expected = trained.generate(n_samples=3, seed=11, show_progress_bar=False)
    trained.save(tmp_path / "model")
    with pytest.raises(FileExistsError, match="overwrite"):
        trained.save(tmp_path / "model")
    loaded = hs.HINGE.load(tmp_path / "model")
    assert loaded.adata is None and loaded.is_trained
    assert loaded.panel_genes_ == trained.panel_genes_
    got = loaded.generate(trained.adata, n_samples=3, seed=11, show_progress_bar=False)
    pd.testing.assert_frame_equal(expected.mean, got.mean)
    pd.testing.assert_frame_equal(expected.std, got.std)
    assert loaded.history["validation_loss"].equals(trained.history["validation_loss"])
    with_data = hs.HINGE.load(tmp_path / "model", adata=synthetic_adata())
    assert with_data.adata is not None
    pd.testing.assert_frame_equal(with_data.generate(n_samples=3, seed=11, show_progress_bar=False).mean, expected.mean)


def test_load_without_saved_backbone(trained, tmp_path, backbone):
    trained.save(tmp_path / "m", save_backbone=False)
    with pytest.raises(FileNotFoundError, match="pass it with `backbone=`"):
        hs.HINGE.load(tmp_path / "m")
    loaded = hs.HINGE.load(tmp_path / "m", backbone=backbone)
    assert loaded.backbone_info_ == trained.backbone_info_
    other = hs.Backbone.random(backbone.genes, d_model=32, n_layers=2, n_heads=4, seed=99)
    with pytest.raises(ValueError, match="not the backbone this model was trained with"):
        hs.HINGE.load(tmp_path / "m", backbone=other)


def test_trainable_parameters(trained):
    summary = trained.trainable_parameters()
    assert summary["softadaln_layers"] > 0 and summary["backbone (frozen)"] > 0


def test_features_standardised_with_training_statistics(backbone, tmp_path):
    adata = synthetic_adata()
    adata.obsm["X_histology"] = adata.obsm["X_histology"] * 40.0 + 500.0  # raw encoder scale, far from N(0, 1)
    adata.obsm["X_histology_views"] = adata.obsm["X_histology_views"] * 40.0 + 500.0
    _setup(adata, views_key="X_histology_views")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    both = np.concatenate([adata.obsm["X_histology"], adata.obsm["X_histology_views"].reshape(-1, 10)])
    np.testing.assert_allclose(model.module.feature_mean.numpy(), both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.module.feature_scale.numpy(), both.std(0), rtol=1e-4)
    z = model.module.standardize(torch.as_tensor(adata.obsm["X_histology"]))
    assert z.mean().abs() < 0.05 and abs(z.std().item() - 1.0) < 0.05
    raw = hs.HINGE(adata, backbone, diffusion_steps=10, standardize_features=False)
    assert torch.equal(raw.module.feature_mean, torch.zeros(10))
    assert torch.equal(raw.module.feature_scale, torch.ones(10))

    # The statistics travel with the model: loading next to other data does not recompute them.
    model.train(max_epochs=1, batch_size=32, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    model.save(tmp_path / "m")
    other = synthetic_adata(seed=3)
    loaded = hs.HINGE.load(tmp_path / "m", adata=other)
    assert torch.equal(loaded.module.feature_mean, model.module.feature_mean)


def test_constant_feature_gets_unit_scale(backbone):
    adata = synthetic_adata()
    adata.obsm["X_histology"][:, 3] = 7.0
    adata.obsm["X_histology_views"][:, :, 3] = 7.0  # views are registered by default: constant there too
    _setup(adata)
    module = hs.HINGE(adata, backbone, diffusion_steps=10).module
    assert module.feature_scale[3] == 1.0 and module.feature_mean[3] == pytest.approx(7.0)
    assert torch.isfinite(module.standardize(torch.as_tensor(adata.obsm["X_histology"]))).all()


def test_bf16_training_and_generation_on_cpu(backbone):
    """The bf16 path GPU users take (Lightning "bf16-mixed", autocast sampling) runs and stays close to float32."""
    adata = synthetic_adata()
    _setup(adata, views_key="X_histology_views")
    model = hs.HINGE(adata, backbone, diffusion_steps=10)
    model.train(max_epochs=2, batch_size=32, warmup_epochs=0, accelerator="cpu", precision="bf16-mixed",
                show_progress_bar=False)  # fmt: skip
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    full = model.generate(n_samples=2, seed=5, show_progress_bar=False)
    half = model.generate(n_samples=2, seed=5, precision="bf16", show_progress_bar=False)
    assert half.mean.dtypes.eq(np.float32).all() and np.isfinite(half.mean.to_numpy()).all()
    assert not half.mean.equals(full.mean)  # autocast really ran in bfloat16
    r = np.corrcoef(half.mean.to_numpy().ravel(), full.mean.to_numpy().ravel())[0, 1]
    assert r > 0.95
    with pytest.raises(ValueError, match="precision"):
        model.generate(precision="fp8", show_progress_bar=False)
    hs.tl.generate(model, adata, n_samples=1, seed=0, precision="bf16", key_added="h16", show_progress_bar=False)
    assert adata.uns["h16"]["params"]["precision"] == "bf16"


def test_condition_is_a_deprecated_alias_of_conditioning(adata, backbone):
    _setup(adata)
    with pytest.warns(FutureWarning, match=r"`condition` is deprecated.*`conditioning`"):
        model = hs.HINGE(adata, backbone, condition="concat")
    assert model.module.denoiser.condition_embedding.mode == "concat"
    assert model.init_params_["non_kwargs"]["conditioning"] == "concat"
    with pytest.raises(TypeError, match="Pass `conditioning` only"):
        hs.HINGE(adata, backbone, condition="sum", conditioning="concat")


def test_gaussian_likelihood_model_samples_revealed_genes(backbone, tmp_path):
    """Issue 13: with likelihood="gaussian" generation draws revealed genes; the spread is no longer ~0."""
    adata = synthetic_adata()
    _setup(adata, views_key="X_histology_views")
    model = hs.HINGE(adata, backbone, diffusion_steps=10, likelihood="gaussian")
    model.train(max_epochs=2, batch_size=32, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    assert {"mse_train", "nll_train"} <= set(model.history)
    tau2 = model.train_params_["variance_scale"]  # fitted on the validation spots
    assert tau2 > 0 and model.module.likelihood.log_variance_offset.item() == pytest.approx(np.log(tau2), rel=1e-5)
    drawn = model.generate(n_samples=4, n_steps=5, seed=0, show_progress_bar=False)
    by_draws = model.generate(n_samples=4, n_steps=5, seed=0, mean_estimate="samples", show_progress_bar=False)
    pd.testing.assert_frame_equal(by_draws.std, drawn.std)  # same draws, two estimates of the mean
    assert not np.allclose(by_draws.mean.to_numpy(), drawn.mean.to_numpy())
    means = model.generate(n_samples=4, n_steps=5, seed=0, reveal="mean", show_progress_bar=False)
    assert (drawn.mean.to_numpy() >= 0).all()
    assert drawn.std.to_numpy().mean() > 2 * means.std.to_numpy().mean()
    hs.tl.generate(model, adata, n_samples=2, n_steps=3, seed=0, show_progress_bar=False)
    assert adata.uns["hinge"]["params"]["likelihood"] == "gaussian"
    assert adata.uns["hinge"]["params"]["reveal"] == "sample"
    assert adata.uns["hinge"]["params"]["mean_estimate"] == "expected"
    model.save(tmp_path / "m")
    loaded = hs.HINGE.load(tmp_path / "m")
    again = loaded.generate(adata, n_samples=4, n_steps=5, seed=0, show_progress_bar=False)
    pd.testing.assert_frame_equal(again.mean, drawn.mean)
    assert loaded.module.likelihood.log_variance_offset.item() == model.module.likelihood.log_variance_offset.item()


def test_defaults_and_paper_preset(backbone):
    """Issue 13: the default is the Gaussian likelihood; ``PAPER_PRESET`` rebuilds the paper's configuration."""
    adata = synthetic_adata()
    _setup(adata)
    assert hs.HINGE(adata, backbone, diffusion_steps=10).module.likelihood.name == "gaussian"
    preset = hs.HINGE.PAPER_PRESET
    assert set(preset) == {"model", "train", "generate"}
    paper = hs.HINGE(adata, backbone, **preset["model"])
    assert paper.module.likelihood.name == "mse" and paper.module.diffusion_steps == 50
    assert "log_variance" not in paper.module.denoiser.heads and paper.module.denoiser.readout is None
    train = preset["train"] | {"max_epochs": 1, "warmup_epochs": 0, "lr_milestones": (1,)}
    paper.train(batch_size=32, accelerator="cpu", show_progress_bar=False, **train)
    assert paper.train_params_.get("variance_scale") is None  # nothing to calibrate without a variance head
    pred = paper.generate(n_samples=3, seed=0, return_samples=True, show_progress_bar=False,
                          **preset["generate"] | {"n_steps": 5})  # fmt: skip
    np.testing.assert_allclose(pred.samples.mean(1), pred.mean.to_numpy(), rtol=1e-5, atol=1e-6)


def test_readout_is_saved_and_loaded(backbone, tmp_path):
    """Issue 13: the optional per-gene readout of the condition trains, is recorded and survives save/load."""
    adata = synthetic_adata()
    _setup(adata)
    model = hs.HINGE(adata, backbone, diffusion_steps=10, readout=True)
    assert model.init_params_["non_kwargs"]["readout"] is True
    model.train(max_epochs=2, batch_size=32, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    assert model.module.denoiser.readout.weight.abs().sum() > 0  # trained away from zero
    pred = model.generate(n_samples=2, n_steps=5, seed=0, show_progress_bar=False)
    model.save(tmp_path / "m")
    loaded = hs.HINGE.load(tmp_path / "m")
    assert loaded.module.denoiser.readout is not None
    pd.testing.assert_frame_equal(loaded.generate(adata, n_samples=2, n_steps=5, seed=0, show_progress_bar=False).mean,
                                  pred.mean)  # fmt: skip


def test_linear_skip_is_the_ridge_of_the_training_spots(backbone, tmp_path):
    """Issue 13: ``linear_skip=True`` fits a ridge on the training spots (penalty by CV over sections) before
    training and adds it to every prediction; it is recorded, saved and loaded. Issue 21: once everything else is
    fitted, the ridge can be refitted on the training and validation spots (``refit_skip=True``)."""
    from sklearn.linear_model import Ridge

    from hinge_sc.module import expression_target

    adata = synthetic_adata()
    _setup(adata)

    def ridge_of(model, idx):
        alpha, module = model.train_params_["linear_skip_alpha"], model.module
        assert alpha > 0
        feats = torch.as_tensor(adata.obsm["X_histology"][idx], dtype=torch.float32)
        x = adata[idx, model.panel_genes_].X
        counts = torch.as_tensor(x.toarray() if hasattr(x, "toarray") else np.asarray(x), dtype=torch.float32)
        target = expression_target(counts, counts.sum(1), "log2p1")  # the library does not enter log2(count + 1)
        ref = Ridge(alpha=alpha).fit(module.standardize(feats).numpy(), target.numpy())
        return module.skip_term(feats).numpy(), ref.predict(module.standardize(feats).numpy())

    train = dict(max_epochs=1, batch_size=32, warmup_epochs=0, accelerator="cpu", show_progress_bar=False)
    kept = hs.HINGE(adata, backbone, diffusion_steps=10, linear_skip=True)
    kept.train(**train)  # the default keeps the training spots' ridge
    np.testing.assert_allclose(*ridge_of(kept, kept.train_indices_), rtol=1e-4, atol=1e-4)
    assert kept.train_params_["linear_skip_spots"] == len(kept.train_indices_)
    model = hs.HINGE(adata, backbone, diffusion_steps=10, linear_skip=True)
    model.train(refit_skip=True, **train)
    module = model.module
    both = np.concatenate([model.train_indices_, model.validation_indices_])
    assert len(model.validation_indices_) > 0 and model.train_params_["linear_skip_spots"] == len(both)
    np.testing.assert_allclose(*ridge_of(model, both), rtol=1e-4, atol=1e-4)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(*ridge_of(model, model.train_indices_), rtol=1e-4, atol=1e-4)
    model.save(tmp_path / "m")
    loaded = hs.HINGE.load(tmp_path / "m")
    torch.testing.assert_close(loaded.module.skip_weight, module.skip_weight)
    # the correction to the skip is weighed per gene on the validation spots; w = 0 generates the ridge itself
    weight = module.correction_weight.numpy()
    assert ((weight >= 0) & (weight <= 1)).all()
    assert model.train_params_["correction_weight_mean"] == pytest.approx(float(weight.mean()))
    torch.testing.assert_close(loaded.module.correction_weight, module.correction_weight)
    module.correction_weight.zero_()
    pred = model.generate(adata[:6], n_samples=3, n_steps=5, seed=0, show_progress_bar=False)
    skip = module.skip_term(torch.as_tensor(adata.obsm["X_histology"][:6], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(pred.mean.to_numpy(), np.maximum(skip, 0), rtol=1e-4, atol=1e-4)
    plain = hs.HINGE(adata, backbone, diffusion_steps=10, linear_skip=False)
    assert not plain.module.linear_skip and "skip_weight" not in dict(plain.module.named_buffers())
    # the default (issue 21): a skip for likelihoods on the model scale, none for counts
    assert hs.HINGE(adata, backbone, diffusion_steps=10).module.linear_skip
    assert not hs.HINGE(adata, backbone, diffusion_steps=10, likelihood="nb").module.linear_skip


def test_default_sampling_steps(backbone):
    """Issue 13/14: generation defaults to 10 reverse steps (T if smaller), chosen on validation spots."""
    adata = synthetic_adata(n_spots=12)
    _setup(adata)
    model = hs.HINGE(adata, backbone, diffusion_steps=50)
    assert model.module.sampling_steps(None) == 10 and model.module.sampling_steps(50) == 50
    assert hs.HINGE(adata, backbone, diffusion_steps=6).module.sampling_steps(None) == 6
    default = model.generate(n_samples=2, seed=0, show_progress_bar=False)
    ten = model.generate(n_samples=2, n_steps=10, seed=0, show_progress_bar=False)
    pd.testing.assert_frame_equal(default.mean, ten.mean)
    hs.tl.generate(model, adata, n_samples=2, seed=0, show_progress_bar=False)
    assert adata.uns["hinge"]["params"]["n_steps"] == 10 and adata.uns["hinge"]["params"]["n_steps_train"] == 50
