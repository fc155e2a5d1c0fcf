from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.stats import spearmanr

from hinge_sc._scales import to_model_scale
from hinge_sc.tl._evaluate import (
    coexpression_consistency,
    evaluate,
    pcc_top_k,
    pearson_per_gene,
    spearman_per_gene,
)
from hinge_sc.tl._metrics import panel_cp10k
from hinge_sc.tl._uncertainty import crps_gaussian, crps_samples, energy_score

RNG = np.random.default_rng(0)


@pytest.fixture
def small():
    y_true = RNG.normal(size=(30, 5))
    y_pred = y_true + RNG.normal(scale=0.5, size=(30, 5))
    y_pred[:, 2] = 1.0  # constant prediction
    y_true[:, 4] = 3.0  # constant measurement
    return y_true, y_pred


def _adata(n_per_section=(20, 15), n_genes=6, seed=0):
    rng = np.random.default_rng(seed)
    n = sum(n_per_section)
    counts = rng.poisson(5.0, size=(n, n_genes)).astype(np.float32)
    adata = ad.AnnData(sparse.csr_matrix(counts), var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))
    adata.obs_names = [f"s{i}" for i in range(n)]
    adata.obs["section"] = pd.Categorical(np.repeat(["A", "B"], n_per_section))
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    pred = np.log2(counts[:, :4] + 1) + rng.normal(scale=0.3, size=(n, 4))
    adata.obsm["hinge"] = pd.DataFrame(pred, index=adata.obs_names, columns=adata.var_names[:4])
    return adata


def test_pearson_matches_corrcoef(small):
    y_true, y_pred = small
    r = pearson_per_gene(y_true, y_pred)
    for g in (0, 1, 3):
        assert r[g] == pytest.approx(np.corrcoef(y_true[:, g], y_pred[:, g])[0, 1])
    assert np.isnan(r[2]) and np.isnan(r[4])
    assert np.nanmean(r) == pytest.approx(np.mean(r[[0, 1, 3]]))


def test_spearman_matches_scipy(small):
    y_true, y_pred = small
    y_true[:5, 0] = y_true[0, 0]  # ties
    r = spearman_per_gene(y_true, y_pred)
    for g in (0, 1, 3):
        assert r[g] == pytest.approx(spearmanr(y_true[:, g], y_pred[:, g]).statistic)
    assert np.isnan(r[2]) and np.isnan(r[4])


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, 0.9), (2, 0.9), (3, (0.9 + 0.9 + 0.5) / 3), (4, 0.6), (50, 0.6)],
)
def test_pcc_top_k_with_ties_and_nan(k, expected):
    assert pcc_top_k(np.array([0.5, 0.9, np.nan, 0.1, 0.9]), k) == pytest.approx(expected)


def test_pcc_top_k_edge_cases():
    assert np.isnan(pcc_top_k(np.array([np.nan, np.nan]), 5))
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        pcc_top_k(np.array([0.1]), 0)


def test_coexpression_consistency(small):
    y_true, y_pred = small
    assert coexpression_consistency(y_true, y_true) == pytest.approx((1.0, 0.0))
    keep = [0, 1, 3]  # genes 2 and 4 are constant in one of the two
    c_t, c_p = np.corrcoef(y_true[:, keep], rowvar=False), np.corrcoef(y_pred[:, keep], rowvar=False)
    iu = np.triu_indices(3, k=1)
    r, frob = coexpression_consistency(y_true, y_pred)
    assert r == pytest.approx(np.corrcoef(c_t[iu], c_p[iu])[0, 1])
    assert frob == pytest.approx(np.linalg.norm(c_p - c_t) / np.linalg.norm(c_t))
    assert np.isnan(coexpression_consistency(y_true[:, :1], y_pred[:, :1])[0])


def test_to_model_scale():
    counts = np.array([[0.0, 3.0], [1.0, 1.0]])
    np.testing.assert_allclose(to_model_scale(counts, "log2p1"), np.log2(counts + 1))
    lib = np.array([10.0, 4.0])
    np.testing.assert_allclose(to_model_scale(counts, "log1p_cp10k", lib), np.log1p(counts / lib[:, None] * 1e4))
    np.testing.assert_allclose(to_model_scale(np.zeros((1, 2)), "log1p_cp10k"), 0.0)


def test_evaluate_outputs_and_uns(tmp_path):
    adata = _adata()
    per_gene, per_section = evaluate(adata)
    assert list(per_gene.columns[:4]) == ["section", "gene", "pearson", "spearman"] and len(per_gene) == 2 * 4
    assert list(per_section.index) == ["A", "B", "mean"]
    for col in ("pcc_10", "pcc_50", "pcc_200", "pcc_mean", "spearman_mean", "pcc_hvg50", "pcc_heg50", "mse", "mae",
                "rvd", "coexpr_pcc", "coexpr_frobenius", "moran_measured", "moran_generated", "moran_pcc",
                "coverage_50", "coverage_90", "std_error_spearman", "crps", "energy_score",
                "n_valid_genes"):  # fmt: skip
        assert col in per_section.columns
    mask = (adata.obs["section"] == "A").to_numpy()
    y_true = np.log2(adata.X.toarray()[mask][:, :4] + 1)
    y_pred = adata.obsm["hinge"].to_numpy()[mask]
    gene0 = per_gene[(per_gene["section"] == "A") & (per_gene["gene"] == "G0")]["pearson"].item()
    assert gene0 == pytest.approx(np.corrcoef(y_true[:, 0], y_pred[:, 0])[0, 1])
    assert per_section.loc["A", "mse"] == pytest.approx(np.mean((y_true - y_pred) ** 2))
    assert per_section.loc["A", "pcc_10"] == pytest.approx(per_section.loc["A", "pcc_mean"])  # 4 genes < 10
    assert per_section.loc["mean", "mae"] == pytest.approx(per_section.loc[["A", "B"], "mae"].mean())
    stored = adata.uns["hinge_evaluation"]
    adata.write_h5ad(tmp_path / "e.h5ad")
    back = ad.read_h5ad(tmp_path / "e.h5ad").uns["hinge_evaluation"]
    pd.testing.assert_frame_equal(back["per_section"], stored["per_section"], check_dtype=False)
    assert back["params"]["scale"] == "log2p1"


def test_evaluate_uses_stored_target_scale():
    adata = _adata()
    counts = adata.X.toarray()
    exact = to_model_scale(counts, "log1p_cp10k")[:, :4]
    adata.obsm["hinge"] = pd.DataFrame(exact, index=adata.obs_names, columns=adata.var_names[:4])
    adata.uns["hinge"] = {"params": {"target_scale": "log1p_cp10k"}}
    _, per_section = evaluate(adata, section_key=None)
    assert list(per_section.index) == ["all", "mean"]
    assert per_section.loc["all", "mse"] == pytest.approx(0.0, abs=1e-12)
    assert per_section.loc["all", "pcc_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Leave `scale=None`"):  # no library size to undo the normalisation
        evaluate(adata, scale="log2p1", overwrite=True)


def test_evaluate_constant_gene_does_not_leak_nan():
    adata = _adata()
    adata.obsm["hinge"]["G1"] = 2.0
    per_gene, per_section = evaluate(adata)
    assert per_gene.loc[per_gene["gene"] == "G1", "pearson"].isna().all()
    assert per_section[["pcc_mean", "pcc_10", "coexpr_pcc", "mse"]].notna().all().all()
    assert (per_section.loc[["A", "B"], "n_valid_genes"] == 3).all()


def test_evaluate_nan_predictions_warn():
    adata = _adata()
    adata.obsm["hinge"].iloc[0, 0] = np.nan
    with pytest.warns(UserWarning, match="1 spots have NaN predictions"):
        _, per_section = evaluate(adata)
    assert per_section.loc["A", "n_spots"] == 19


def test_evaluate_errors():
    adata = _adata()
    with pytest.raises(KeyError, match="hs.tl.generate"):
        evaluate(adata, key="missing")
    adata.obsm["hinge"]["NOTMEASURED"] = 1.0
    with pytest.raises(KeyError, match="'NOTMEASURED'"):
        evaluate(adata)
    evaluate(adata, genes=["G0", "G1"])
    with pytest.raises(KeyError, match="already exists"):
        evaluate(adata, genes=["G0", "G1"])


def test_evaluate_cp10k_normalises_both_sides_over_the_panel():
    adata = _adata()
    counts = adata.X.toarray()[:, :4]
    adata.obsm["hinge"] = pd.DataFrame(np.log2(2 * counts + 1), index=adata.obs_names, columns=adata.var_names[:4])
    _, raw = evaluate(adata, key_added="raw")
    _, norm = evaluate(adata, scale="log1p_cp10k", key_added="norm")
    # twice the counts everywhere is a perfect prediction once the depth is normalised away
    assert norm.loc["mean", "mse"] == pytest.approx(0.0, abs=1e-12)
    assert norm.loc["mean", "pcc_mean"] == pytest.approx(1.0)
    assert raw.loc["mean", "mse"] > 0.1
    assert adata.uns["norm"]["params"]["scale"] == "log1p_cp10k"
    assert adata.uns["norm"]["params"]["prediction_scale"] == "log2p1"


def test_evaluate_cp10k_of_a_gene_subset_uses_the_panel_total():
    adata = _adata()
    _, full = evaluate(adata, scale="log1p_cp10k", key_added="full")
    per_gene, _ = evaluate(adata, scale="log1p_cp10k", genes=["G0", "G1"], key_added="sub")
    full_gene = adata.uns["full"]["per_gene"]
    expected = full_gene[full_gene["gene"].isin(["G0", "G1"])]["pearson"].to_numpy()
    np.testing.assert_allclose(per_gene["pearson"].to_numpy(), expected)


def test_evaluate_uncertainty_from_samples_and_std():
    adata = _adata(n_per_section=(40, 40))
    rng = np.random.default_rng(1)
    mean = adata.obsm["hinge"].to_numpy()
    samples = mean[:, None, :] + rng.normal(scale=0.3, size=(adata.n_obs, 200, 4))
    adata.obsm["hinge_samples"] = samples
    adata.obsm["hinge_std"] = pd.DataFrame(samples.std(1), index=adata.obs_names, columns=adata.obsm["hinge"].columns)
    _, from_samples = evaluate(adata, key_added="s")
    assert adata.uns["s"]["params"]["uncertainty"] == "samples"
    # the predictions' noise is N(0, 0.3²), so the 90% interval of the samples covers about 90%
    assert from_samples.loc["mean", "coverage_90"] == pytest.approx(0.9, abs=0.05)
    assert from_samples.loc["mean", "coverage_50"] == pytest.approx(0.5, abs=0.07)
    del adata.obsm["hinge_samples"]
    _, from_std = evaluate(adata, key_added="g")
    assert adata.uns["g"]["params"]["uncertainty"] == "gaussian_std"
    assert from_std.loc["mean", "coverage_90"] == pytest.approx(from_samples.loc["mean", "coverage_90"], abs=0.03)
    _, cp = evaluate(adata, scale="log1p_cp10k", key_added="c")  # the s.d. alone cannot change scale
    assert np.isnan(cp.loc["mean", "coverage_90"]) and adata.uns["c"]["params"]["uncertainty"] == "none"


def test_evaluate_std_of_few_samples_gives_the_samples_prediction_interval():
    """The s.d. of S = 8 samples (what tl.generate writes) is not the true s.d.: with ``std_n_samples`` recorded
    the interval is the samples' Student-t one and covers the nominal level; read as Gaussian it under-covers."""
    adata = _adata(n_per_section=(400, 400))
    rng = np.random.default_rng(2)
    measured = np.log2(adata.X.toarray()[:, :4] + 1)
    centre = measured - rng.normal(scale=0.3, size=measured.shape)  # measured = centre + N(0, 0.3²)
    samples = centre[:, None, :] + rng.normal(scale=0.3, size=(adata.n_obs, 8, 4))  # 8 draws of the same law
    columns = adata.obsm["hinge"].columns
    adata.obsm["hinge"] = pd.DataFrame(samples.mean(1), index=adata.obs_names, columns=columns)
    adata.obsm["hinge_std"] = pd.DataFrame(samples.std(1), index=adata.obs_names, columns=columns)
    adata.uns["hinge"] = {"params": {"target_scale": "log2p1", "std_n_samples": 8}}
    _, t_rule = evaluate(adata, key_added="t")
    assert adata.uns["t"]["params"]["uncertainty"] == "std of 8 samples (Student-t)"
    assert t_rule.loc["mean", "coverage_90"] == pytest.approx(0.9, abs=0.02)
    assert t_rule.loc["mean", "coverage_50"] == pytest.approx(0.5, abs=0.03)
    adata.obsm["hinge_samples"] = samples
    _, from_samples = evaluate(adata, key_added="s")
    assert t_rule.loc["mean", "coverage_90"] == pytest.approx(from_samples.loc["mean", "coverage_90"], abs=1e-9)
    del adata.obsm["hinge_samples"]
    del adata.uns["hinge"]["params"]["std_n_samples"]
    _, gaussian = evaluate(adata, key_added="g")
    assert gaussian.loc["mean", "coverage_90"] < 0.85  # the ddof-0 s.d. of 8 samples read as the true s.d.


def test_evaluate_spatial_metrics_and_skip():
    adata = _adata()
    per_gene, per_section = evaluate(adata)
    assert per_gene[["moran_measured", "moran_generated"]].notna().all().all()
    _, skipped = evaluate(adata, spatial_key=None, key_added="nospace")
    assert skipped[["moran_measured", "moran_pcc"]].isna().all().all()
    del adata.obsm["spatial"]
    with pytest.warns(UserWarning, match="`spatial_key='spatial'` is not in `adata.obsm`"):
        evaluate(adata, key_added="warned")


def test_evaluate_constant_prediction_gives_nan_correlations_but_finite_errors():
    adata = _adata()
    adata.obsm["hinge"].loc[:, :] = 1.0  # e.g. the training-mean baseline
    _, per_section = evaluate(adata)
    assert per_section[["pcc_mean", "pcc_50", "coexpr_pcc", "moran_generated"]].isna().all().all()
    assert per_section[["mse", "mae"]].notna().all().all()
    assert per_section.loc["mean", "rvd"] == pytest.approx(1.0)
    assert (per_section["n_valid_genes"] == 0).all()


def test_evaluate_bad_arguments():
    adata = _adata()
    with pytest.raises(ValueError, match="`scale` must be one of"):
        evaluate(adata, scale="log10")
    with pytest.raises(ValueError, match="`n_top_genes` must be a positive integer"):
        evaluate(adata, n_top_genes=0)
    with pytest.raises(KeyError, match="`section_key='batch'`"):
        evaluate(adata, section_key="batch")


def _with_samples(adata, n_samples=16, seed=2):
    """``obsm["hinge_samples"]``: the mean plus N(0, 0.3²) noise, (n_spots, n_samples, n_genes)."""
    mean = adata.obsm["hinge"].to_numpy()
    noise = np.random.default_rng(seed).normal(scale=0.3, size=(adata.n_obs, n_samples, mean.shape[1]))
    adata.obsm["hinge_samples"] = mean[:, None, :] + noise
    return adata


def test_evaluate_writes_crps_and_energy_score_from_samples():
    """Issue 13: per-gene and per-section CRPS, per-section energy score, from the stored samples."""
    adata = _with_samples(_adata())
    per_gene, per_section = evaluate(adata, spatial_key=None)
    mask = (adata.obs["section"] == "A").to_numpy()
    y_true = np.log2(adata.X.toarray()[mask][:, :4] + 1)
    samples = adata.obsm["hinge_samples"][mask]
    crps = crps_samples(y_true, samples)
    gene1 = per_gene[(per_gene["section"] == "A") & (per_gene["gene"] == "G1")]["crps"].item()
    assert gene1 == pytest.approx(crps[:, 1].mean())
    assert per_section.loc["A", "crps"] == pytest.approx(crps.mean())
    assert per_section.loc["A", "energy_score"] == pytest.approx(energy_score(y_true, samples).mean())
    assert per_section.loc["mean", "crps"] == pytest.approx(per_section.loc[["A", "B"], "crps"].mean())
    # issue 22: the same samples as counts against the measured counts
    counts = adata.X.toarray()[mask][:, :4]
    expected = crps_samples(counts, np.clip(np.exp2(samples) - 1, 0, None)).mean()
    assert per_section.loc["A", "crps_counts"] == pytest.approx(expected)
    _, cp10k = evaluate(adata, spatial_key=None, scale="log1p_cp10k", key_added="cp10k")
    assert np.isnan(cp10k.loc["A", "crps_counts"])  # counts per 10k are not the measured counts


def test_evaluate_crps_from_std_is_gaussian_and_energy_score_needs_samples():
    adata = _adata()
    std = np.full((adata.n_obs, 4), 0.3)
    adata.obsm["hinge_std"] = pd.DataFrame(std, index=adata.obs_names, columns=adata.obsm["hinge"].columns)
    _, per_section = evaluate(adata, spatial_key=None)
    mask = (adata.obs["section"] == "B").to_numpy()
    y_true = np.log2(adata.X.toarray()[mask][:, :4] + 1)
    expected = crps_gaussian(y_true, adata.obsm["hinge"].to_numpy()[mask], std[mask]).mean()
    assert per_section.loc["B", "crps"] == pytest.approx(expected)
    assert per_section["energy_score"].isna().all()


def test_evaluate_scores_are_nan_without_uncertainty():
    per_gene, per_section = evaluate(_adata(), spatial_key=None)
    assert per_section[["crps", "energy_score"]].isna().all().all() and per_gene["crps"].isna().all()


def test_evaluate_cp10k_scores_the_transformed_samples():
    adata = _with_samples(_adata())
    _, per_section = evaluate(adata, scale="log1p_cp10k", spatial_key=None)
    mask = (adata.obs["section"] == "A").to_numpy()
    y_true = to_model_scale(adata.X.toarray()[mask][:, :4], "log1p_cp10k")  # the panel is the 4 predicted genes
    samples = panel_cp10k(adata.obsm["hinge_samples"][mask], "log2p1")
    assert per_section.loc["A", "crps"] == pytest.approx(crps_samples(y_true, samples).mean())
    assert per_section.loc["A", "energy_score"] == pytest.approx(energy_score(y_true, samples).mean())
