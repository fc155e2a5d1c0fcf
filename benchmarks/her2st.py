"""HINGE vs baselines on her2st: leave one section of patient C out, or train on patient C and test on patient A.

Usage::

    python benchmarks/her2st.py --out her2st_benchmark            # C2–C6, 5 folds (LOSO)
    python benchmarks/her2st.py --out cross --protocol cross-patient  # train C2–C6, test A1 (another patient)
    python benchmarks/her2st.py --out tiny --tiny                  # CI: C2/C3, one fold, one seed, 1 epoch

HINGE trains with the package's recipe (``hs.model.DEFAULT_RECIPE``; ``--recipe paper`` for the paper's schedule),
exactly as ``HINGE.train()`` does by default.

Every method gets the same inputs per fold: the handcrafted histology features of ``hs.pp.histology_features``
(8 dihedral views, computed once and cached in ``<out>/features.h5ad``), the same 200-gene HMHVG panel chosen on the
training sections (``hs.pp.select_genes``, restricted to the CellFM vocabulary), ``log2(count + 1)`` targets, and
the same evaluation (``hs.tl.evaluate`` on ``log2p1`` and on the panel-normalised ``log1p_cp10k`` scale). Stochastic
methods (HINGE, its Gaussian-diffusion ablation, the MLP) run ``--seeds`` seeds. Writes to ``--out``:
``results.md`` (also printed), ``per_section.csv``, ``per_gene.csv``, ``performance.csv``, ``config.json`` and figures.
Each method × seed × fold is cached in ``<out>/runs/<settings hash>/``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DATA,
    SCALES,
    add_model_args,
    cellfm_vocabulary,
    evaluate,
    feature_defaults,
    markdown,
    quiet,
    train_hinge,
    write_prediction,
)
from performance import performance_table, to_markdown

logger = logging.getLogger("her2st_benchmark")
#: HINGE variants. ``hinge`` is the package's default (issue 13): Gaussian reveal (a variance head, genes drawn), the
#: Rao–Blackwellised mean, the variance calibrated on validation spots, the per-gene readout of the condition, and
#: features with spatial context (``--context``). ``hinge_paper`` is the paper's configuration (mean reveal, no
#: readout, no context). Each ``hinge_no_*`` removes one addition; ``hinge_no_rb`` and ``hinge_no_calibration``
#: change generation only and reuse the trained ``hinge_no_readout`` model of the fold and seed.
#: ``hinge_pretrained`` is ``hinge`` with ``--pretrained-backbone``; ``hinge_gaussian`` the Gaussian-diffusion
#: ablation on the context features. ``hinge_depth`` (the depth study): generation on the depth-normalised log1p
#: CP10k scale, each spot's library size predicted from its image features by a ridge regression (alpha by
#: leave-one-out CV) and multiplied back in, sample by sample, to give log2(count + 1). ``hinge_skip*``: the linear
#: skip (a ridge of the features added to the mean, ``HINGE(linear_skip=True)``).
HINGE_VARIANTS = {
    "hinge": {},
    "hinge_paper": {"likelihood": "mse", "features": "plain", "readout": False},
    "hinge_no_readout": {"readout": False},
    "hinge_no_context": {"features": "plain"},
    "hinge_no_nll": {"likelihood": "mse"},
    # a negative binomial on the counts with the spot's library size (issue 22); samples are counts
    "hinge_nb": {"likelihood": "nb"},
    # generation-only ablations: they reuse the trained model of `hinge_no_readout` (no retraining)
    "hinge_no_rb": {"mean_estimate": "samples", "readout": False, "reuse": "hinge_no_readout"},
    "hinge_no_calibration": {"calibrate": False, "readout": False, "reuse": "hinge_no_readout"},
    "hinge_pretrained": {"backbone": "pretrained"},
    "hinge_gaussian": {"likelihood": "mse", "cls": "gaussian"},
    "hinge_depth": {"scale": "log1p_cp10k", "depth": True},
    "hinge_skip": {"linear_skip": True, "readout": False},
    # the default's linear skip (issue 21): without it, and with it but the correction not weighed on validation
    "hinge_no_skip": {"linear_skip": False},
    "hinge_no_weight": {"weigh": False},
    # the skip's ridge refitted on the training and validation spots once everything else is fitted
    "hinge_refit": {"refit": True},
    # generation at the test slide's measured depth (`tl.generate(library_size="observed")`), reusing `hinge`
    "hinge_depth_given": {"library_size": "observed", "reuse": "hinge"},
    "hinge_nb_depth_given": {"likelihood": "nb", "library_size": "observed", "reuse": "hinge_nb"},
    # depth unknown, its spread between patients from sequenced sections of other patients (--depth-reference)
    "hinge_depth_prior": {"depth_sd": "reference", "reuse": "hinge"},
    # a new patient: each gene's level unknown as well, its spread from the same reference sections
    # (`tl.generate(level_sd=hs.tl.level_spread(reference))`), with the depth unknown or given
    "hinge_new_patient": {"depth_sd": "reference", "level_sd": "reference", "reuse": "hinge"},
    "hinge_new_patient_depth_given": {"library_size": "observed", "level_sd": "reference", "reuse": "hinge"},
}
#: Variants whose trained model other variants reuse (kept in ``runs``).
REUSED = {v["reuse"] for v in HINGE_VARIANTS.values() if v.get("reuse")}
#: The package's defaults (``hs.HINGE()``): Gaussian reveal, Rao–Blackwellised mean, calibrated variance, readout;
#: plus the benchmark's choice of features with spatial context.
DEFAULT_VARIANT = {"likelihood": "gaussian", "features": "context", "mean_estimate": "expected", "calibrate": True,
                   "backbone": "random", "cls": "hinge", "reuse": None, "scale": "log2p1", "depth": False,
                   "readout": True, "linear_skip": None, "library_size": None, "weigh": True, "refit": False,
                   "depth_sd": None, "level_sd": None}  # fmt: skip
#: Baselines; ``*_plain`` get the features without spatial context, the others the same inputs as ``hinge``.
BASELINES = ("ridge", "ridge_cv", "ridge_cv_plain", "ridge_prob", "mlp", "knn", "mean")
METHODS = (*HINGE_VARIANTS, *BASELINES)
STOCHASTIC = {*HINGE_VARIANTS, "mlp"}
#: obsm keys of the two feature sets: with spatial context (``--context``) and without.
FEATURE_KEYS = {"context": "X_histology", "plain": "X_plain"}
MARKERS = ("ERBB2", "GNAS", "KRT19", "FASN")
#: Columns of the two result tables (metric → header).
CORRELATION = {"pcc_10": "PCC-10", "pcc_50": "PCC-50", "pcc_200": "PCC-200", "pcc_mean": "mean PCC",
               "spearman_mean": "mean Spearman", "pcc_hvg50": "PCC HVG-50", "pcc_heg50": "PCC HEG-50"}  # fmt: skip
STRUCTURE = {"mse": "MSE", "mae": "MAE", "rvd": "RVD", "coexpr_pcc": "co-expr. r", "coexpr_frobenius": "co-expr. d_F",
             "moran_generated": "Moran's I (gen.)", "moran_pcc": "Moran's I r", "coverage_50": "cov. 50%",
             "coverage_90": "cov. 90%", "crps": "CRPS", "crps_counts": "CRPS counts", "energy_score": "energy", "std_error_spearman": "s.d.–error ρ"}  # fmt: skip


def variant(method: str) -> dict:
    """Settings of a HINGE variant (:data:`DEFAULT_VARIANT` updated by :data:`HINGE_VARIANTS`)."""
    return DEFAULT_VARIANT | HINGE_VARIANTS[method]


def load_features(args: argparse.Namespace):
    """her2st sections with both feature sets (with and without spatial context), cached in ``<out>``; both
    standardised within each section unless ``--standardize none`` (``hs.pp.histology_features(standardize=)``)."""
    import anndata as ad

    import hinge_sc as hs

    cache = Path(args.out) / f"features_{args.context}_{args.standardize}.h5ad"
    if cache.is_file():
        adata = ad.read_h5ad(cache)
        if set(args.sections) <= set(adata.obs["section"].astype(str)) and "X_histology" in adata.obsm:
            logger.info("Read cached features from %s", cache)
            return adata[adata.obs["section"].isin(args.sections)].copy()
    adata = hs.datasets.her2st(sections=args.sections, path=Path(args.data) / "her2st", show_progress_bar=False)
    context = None if args.context == "none" else args.context
    standardize = None if args.standardize == "none" else args.standardize
    for key, ctx in ((FEATURE_KEYS["context"], context), (FEATURE_KEYS["plain"], None)):
        hs.pp.histology_features(adata, views=args.views, context=ctx, standardize=standardize, key_added=key,
                                 show_progress_bar=False)  # fmt: skip
    adata.write_h5ad(cache)
    logger.info("Computed histology features (%d spots, %s) and cached them in %s",
                adata.n_obs, adata.obsm["X_histology"].shape, cache)  # fmt: skip
    return adata


def recipe(args: argparse.Namespace):
    """The package's training recipe (``--recipe``) with the overrides given on the command line."""
    import hinge_sc as hs

    changes = {"max_epochs": args.epochs, "lr": args.lr, "warmup_epochs": args.warmup_epochs,
               "batch_size": args.batch_size}  # fmt: skip
    return hs.model.RECIPES[args.recipe].replace(**{k: v for k, v in changes.items() if v is not None})


def train_variant(method, train, panel, vocabulary, seed, args):
    """A HINGE variant (or its Gaussian ablation) trained on ``train``; returns ``(model, seconds)``."""
    import hinge_sc as hs

    v = variant(method)
    fk = FEATURE_KEYS[v["features"]]
    if v["backbone"] == "pretrained":  # the same pre-trained backbone for every seed; the seed varies the adaptation
        backbone = hs.Backbone.load(args.pretrained_backbone)
    else:
        backbone = hs.Backbone.random(vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                                      seed=seed)  # fmt: skip
    likelihood = (
        {}
        if v["cls"] == "gaussian"
        else {"likelihood": v["likelihood"], "readout": v["readout"], "linear_skip": v["linear_skip"]}
    )
    return train_hinge(
        train,
        genes=panel,
        recipe=recipe(args).replace(calibrate_variance=v["calibrate"], weigh_correction=v["weigh"],
                                    refit_skip=v["refit"]),
        seed=seed,
        features_key=fk,
        views_key=f"{fk}_views" if args.views > 1 else None,
        section_key="section",
        model_cls=hs.benchmark.HINGEGaussian if v["cls"] == "gaussian" else hs.HINGE,
        backbone=backbone,
        diffusion_steps=args.diffusion_steps,
        target_scale=v["scale"],
        standardize_features=args.hinge_features == "standardized",
        **likelihood,
    )


def new_slide_spreads(v: dict, args: argparse.Namespace) -> dict:
    """``depth_sd`` and ``level_sd`` of ``tl.generate`` for variant ``v``: the defaults (``None``), or for
    ``"reference"`` the spreads between the ``--depth-reference`` sections (``hs.tl.depth_spread``,
    ``hs.tl.level_spread``)."""
    wanted = "reference" in (v["depth_sd"], v["level_sd"])
    spreads = reference_spreads(args.data, tuple(args.depth_reference)) if wanted else {}
    return {k: spreads[k] if v[k] == "reference" else v[k] for k in ("depth_sd", "level_sd")}


@functools.cache
def reference_spreads(data: str, sections: tuple[str, ...]) -> dict:
    """``hs.tl.depth_spread`` and ``hs.tl.level_spread`` of the her2st ``sections`` (counts only), read once per
    call of the script."""
    import hinge_sc as hs

    reference = hs.datasets.her2st(list(sections), path=Path(data) / "her2st", images=False, show_progress_bar=False)
    spreads = {"depth_sd": hs.tl.depth_spread(reference), "level_sd": hs.tl.level_spread(reference)}
    logger.warning("depth_sd %.3f, level_sd median %.3f from %s", spreads["depth_sd"], spreads["level_sd"].median(),
                   ", ".join(sections))  # fmt: skip
    return spreads


def run_hinge(method, train, test, panel, vocabulary, seed, args, key, runs: Path) -> dict:
    """Train a HINGE variant on ``train`` (or load the trained model it reuses) and generate ``test`` into
    ``obsm[key]``. Trained ``hinge`` models are kept in ``runs`` for the variants that only change generation."""
    import hinge_sc as hs

    v = variant(method)
    parent = v["reuse"] or method
    saved = runs / f"{test.obs['section'].iloc[0]}_{parent}_s{seed}_model"
    if v["reuse"] and (saved / "manifest.json").is_file():
        model, train_s = hs.HINGE.load(saved), 0.0
    else:
        model, train_s = train_variant(parent, train, panel, vocabulary, seed, args)
        if parent == "hinge" or parent in REUSED:
            model.save(saved, overwrite=True)
    if not v["calibrate"]:
        model.module.likelihood.log_variance_offset.zero_()
    gen = {} if v["cls"] == "gaussian" else {"mean_estimate": v["mean_estimate"]}
    t0 = time.perf_counter()
    hs.tl.generate(model, test, features_key=FEATURE_KEYS[variant(parent)["features"]], n_samples=args.n_samples,
                   n_steps=args.sampling_steps, seed=seed, key_added=key, save_samples=True, overwrite=True,
                   show_progress_bar=False, library_size=v["library_size"], **new_slide_spreads(v, args),
                   **gen)  # fmt: skip
    gen_s = time.perf_counter() - t0
    if v["depth"]:
        add_back_depth(train, test, key, FEATURE_KEYS[v["features"]])
    epochs = len(model.history["train_loss"])
    views = model.train_params_.get("views_per_epoch") or model.train_params_["n_views"]
    samples = model.train_params_["n_train_spots"] * min(views, model.train_params_["n_views"]) * epochs
    return {"model": model, "train_s": train_s, "generate_s": gen_s,
            "train_samples_per_s": samples / train_s if train_s > 0 else np.nan,  # 0: a reused model
            "generate_spots_per_s": test.n_obs / gen_s}  # fmt: skip


def add_back_depth(train, test, key: str, features_key: str) -> None:
    r"""Turn ``obsm[key]`` samples on log1p CP10k into log2(count + 1) with an image-predicted library size.

    The log library size (total count over all genes) is regressed on the standardised features of the training
    spots (ridge, alpha by leave-one-out CV over a log grid); each sample :math:`x` becomes
    :math:`\log_2(1 + \hat L\,(e^{x} - 1) / 10^4)`. Mean and s.d. are recomputed from the converted samples.
    """
    from scipy.sparse import issparse
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = train.X.toarray() if issparse(train.X) else np.asarray(train.X)
    log_lib = np.log(np.maximum(counts.sum(axis=1), 1.0))
    depth = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    depth.fit(np.asarray(train.obsm[features_key]), log_lib)
    lib_hat = np.exp(depth.predict(np.asarray(test.obsm[features_key])))
    samples = np.log2(1.0 + lib_hat[:, None, None] * np.expm1(test.obsm[f"{key}_samples"]) / 1e4)
    genes, index = test.obsm[key].columns, test.obs_names
    params = {**test.uns[key]["params"], "target_scale": "log2p1", "depth": "ridge on features"}
    write_prediction(test, key, pd.DataFrame(samples.mean(axis=1), index=index, columns=genes),
                     pd.DataFrame(samples.std(axis=1), index=index, columns=genes), samples.astype(np.float32),
                     params=params, seed=params.get("seed"))  # fmt: skip


def run_baseline(method, train, test, panel, seed, args, key) -> dict:
    """Fit a baseline of :mod:`hinge_sc.benchmark` and predict ``test`` into ``obsm[key]``."""
    import hinge_sc as hs

    est = {
        "ridge": lambda: hs.benchmark.RidgeProbe(args.ridge_alpha),
        "ridge_cv": lambda: hs.benchmark.RidgeProbe("cv"),  # alpha by CV grouped by training section
        "ridge_cv_plain": lambda: hs.benchmark.RidgeProbe("cv"),
        "ridge_prob": lambda: hs.benchmark.ProbabilisticRidge("cv", n_samples=args.n_samples, seed=seed),
        "mlp": lambda: hs.benchmark.MLPRegressor(max_epochs=args.mlp_epochs, seed=seed),
        "knn": lambda: hs.benchmark.KNNRetrieval(args.knn_k),
        "mean": lambda: hs.benchmark.TrainingMean(),
    }[method]()
    t0 = time.perf_counter()
    fk = FEATURE_KEYS["plain" if method.endswith("_plain") else "context"]
    views_key = f"{fk}_views" if args.views > 1 and method == "mlp" else None
    est.fit(train, genes=panel, features_key=fk, views_key=views_key, section_key="section")
    fit_s = time.perf_counter() - t0
    est.predict(test, features_key=fk, key_added=key, save_samples=True, overwrite=True)
    return {"train_s": fit_s}


def evaluate_all(test, key, method, seed, fold) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Evaluate ``obsm[key]`` on both scales; tidy per-section and per-gene rows."""
    sections, genes = [], []
    for scale, (per_gene, per_section) in evaluate(test, key).items():
        meta = {"method": method, "seed": seed, "fold": fold, "scale": scale}
        sections.append(per_section.drop(index="mean").reset_index().assign(**meta))
        genes.append(per_gene.assign(**meta))
    return sections, genes


def summary_tables(per_section: pd.DataFrame, per_gene: pd.DataFrame, methods: list[str]) -> str:
    """Write the report tables: mean ± s.d. over sections (seeds averaged) per scale; paired Wilcoxon tests."""
    import hinge_sc as hs

    agg = hs.tl.aggregate(per_section, by=["scale", "method"])
    out = []
    for scale in SCALES:
        for title, cols in (("correlation", CORRELATION), ("errors, structure, uncertainty", STRUCTURE)):
            rows = {}
            for method in methods:
                if (scale, method) not in agg.index:
                    continue
                rec = agg.loc[(scale, method)]
                cells = {}
                for m, header in cols.items():
                    mean, sd = rec[(m, "mean")], rec[(m, "sd")]
                    cells[header] = "—" if not np.isfinite(mean) else (
                        f"{mean:.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{mean:.3f}")  # fmt: skip
                rows[method] = cells
            table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
            out.append(f"### {scale}: {title}\n\n" + markdown(table, index=True))
        moran = agg.loc[(scale, methods[0]), ("moran_measured", "mean")]
        out.append(f"Moran's I of the measured maps ({scale}): {moran:.3f}.")
    if "hinge" in methods and len(methods) > 1:
        lines = ["| scale | metric | pairs | other | HINGE − other | p (two-sided) |", "|---|---|---|---|---|---|"]
        for scale in SCALES:
            sub = per_section[per_section["scale"] == scale]
            genes = per_gene[per_gene["scale"] == scale]
            for metric, table, group in (("pcc_50", sub, "section"), ("pcc_mean", sub, "section"),
                                         ("pearson", genes, ["section", "gene"])):  # fmt: skip
                res = hs.tl.compare(table, metric=metric, reference="hinge", group=group)
                for other, r in res[res["n_pairs"] > 0].iterrows():
                    unit = "genes" if metric == "pearson" else "sections"
                    lines.append(f"| {scale} | {metric} | {int(r.n_pairs)} {unit}"
                                 f" | {other} | {r.mean_difference:+.3f} | {r.pvalue:.3g} |")  # fmt: skip
        out.append("### Paired Wilcoxon tests (HINGE vs each method; seeds averaged)\n\n" + "\n".join(lines))
    return "\n\n".join(out)


def figures(test, per_gene: pd.DataFrame, history, section: str, out: Path, methods: list[str]) -> None:
    """Per-gene PCC of every method, maps and co-expression of HINGE and ridge, HINGE's training curve."""
    import matplotlib.pyplot as plt

    import hinge_sc as hs

    for scale in SCALES:
        table = per_gene[(per_gene["scale"] == scale) & per_gene["method"].isin(methods)]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
        hs.pl.gene_scores(table, kind="rank", ax=axes[0], title=f"per-gene PCC ({scale}, mean over folds)")
        hs.pl.gene_scores(table, kind="box", ax=axes[1], title="")
        fig.savefig(out / f"gene_scores_{scale}.png", dpi=110)
        plt.close(fig)
    lead = "hinge" if "hinge" in methods else "ridge_cv" if "ridge_cv" in methods else methods[0]
    ref = per_gene[(per_gene["method"] == lead) & (per_gene["scale"] == "log2p1") & (per_gene["section"] == section)]
    best = ref.groupby("gene")["pearson"].mean().dropna().sort_values(ascending=False)
    genes = [g for g in MARKERS if g in best.index][:2]
    genes += [g for g in best.index if g not in genes][: 4 - len(genes)]
    for method in ("hinge", "hinge_paper", "ridge_cv"):
        key = f"{method}_s0"
        if key in test.obsm:
            axes = hs.pl.spatial_genes(test, genes, key=key, section=section, ncols=2,
                                       save=out / f"spatial_{method}.png")  # fmt: skip
            plt.close(axes[0].figure)
            axes = hs.pl.coexpression(test, key=key, section=section, save=out / f"coexpression_{method}.png")
            plt.close(axes[0].figure)
    if history:
        axes = hs.pl.training_history(history, save=out / "training_history_hinge.png", title="HINGE training (seed 0)")
        plt.close(axes[0].figure)


def config_hash(args: argparse.Namespace) -> str:
    """Short hash of the settings that change results: runs cached under it are reused by a later call."""
    import hashlib

    skip = {"out", "folds", "methods", "seeds", "perf_genes", "perf_spots", "threads", "no_resume", "rescore",
            "pretrained_backbone"}  # fmt: skip
    settings = json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in skip}, sort_keys=True)
    return hashlib.sha1(settings.encode()).hexdigest()[:10]


def run_cached(method, seed, fold, train, test, panel, vocabulary, args, key, runs: Path) -> dict:
    """Fit, predict and evaluate one method × seed × fold into ``test``, or read the result of an earlier call (its
    prediction written back into ``test``)."""
    import torch

    tag = f"_{Path(args.pretrained_backbone).stem}" if method == "hinge_pretrained" else ""
    cache = runs / f"{fold}_{key}{tag}.pkl"
    if cache.is_file() and not args.no_resume:
        rec = pd.read_pickle(cache)
        obsm, params = rec["obsm"], rec["uns"]["params"]
        write_prediction(test, key, obsm[key], obsm.get(f"{key}_std"), obsm.get(f"{key}_samples"), params=params,
                         seed=params.get("seed"))  # fmt: skip
        if args.rescore:  # the metrics again from the stored predictions (after a change of hs.tl.evaluate)
            rec["per_section"], rec["per_gene"] = evaluate_all(test, key, method, seed, fold)
            pd.to_pickle(rec, cache)
        return rec
    torch.set_num_threads(args.threads)  # scanpy (in `hs.pp.select_genes`) resets torch's thread count
    t0 = time.perf_counter()
    if method in HINGE_VARIANTS:
        info = run_hinge(method, train, test, panel, vocabulary, seed, args, key, runs)
    else:
        info = run_baseline(method, train, test, panel, seed, args, key)
    s, g = evaluate_all(test, key, method, seed, fold)
    model = info.pop("model", None)
    rec = {
        "per_section": s,
        "per_gene": g,
        "timing": {"fold": fold, "method": method, "seed": seed, "total_s": time.perf_counter() - t0, **info},
        "obsm": {k: test.obsm[k] for k in (key, f"{key}_std", f"{key}_samples") if k in test.obsm},
        "uns": test.uns[key],
        "history": None if model is None else {k: v for k, v in model.history.items()},
    }
    pd.to_pickle(rec, cache)
    return rec


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; returns (and prints, and writes to ``<out>/results.md``) the markdown report."""
    args = parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with quiet():
            return _run(args, argv)
    finally:  # leave the process as it was (the tests call `main`)
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, argv: list[str] | None) -> str:
    import hinge_sc as hs

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(vars(args), indent=2))
    start = time.perf_counter()
    adata = load_features(args)
    vocabulary = cellfm_vocabulary(args.data)
    folds = args.folds or args.sections
    figure_section = "C6" if "C6" in folds else folds[-1]
    per_section, per_gene, timings = [], [], []
    fig_test, fig_history = None, None
    runs = out / "runs" / config_hash(args)
    runs.mkdir(parents=True, exist_ok=True)
    for fold in folds:
        train = adata[adata.obs["section"] != fold].copy()
        test = adata[adata.obs["section"] == fold].copy()
        panel = hs.pp.select_genes(train, n_genes=args.n_genes, vocabulary=vocabulary)
        for method in args.methods:
            for seed in args.seeds if method in STOCHASTIC else args.seeds[:1]:
                key = f"{method}_s{seed}"
                rec = run_cached(method, seed, fold, train, test, panel, vocabulary, args, key, runs)
                if method == "hinge" and seed == args.seeds[0] and fold == figure_section:
                    fig_history = rec["history"]
                per_section += rec["per_section"]
                per_gene += rec["per_gene"]
                timings.append(rec["timing"])
                logger.warning("%s %s seed %d: PCC-50 %.3f (%.0f s; %.0f s so far)", fold, method, seed,
                               rec["per_section"][0]["pcc_50"].iloc[0], rec["timing"]["total_s"],
                               time.perf_counter() - start)  # fmt: skip
        if fold == figure_section:
            fig_test = test
    per_section_df, per_gene_df = pd.concat(per_section, ignore_index=True), pd.concat(per_gene, ignore_index=True)
    per_section_df.to_csv(out / "per_section.csv", index=False)
    per_gene_df.to_csv(out / "per_gene.csv", index=False)
    timing_df = pd.DataFrame(timings)
    timing_df.to_csv(out / "timings.csv", index=False)
    figures(fig_test, per_gene_df, fig_history, figure_section, out, list(args.methods))
    bench_s = time.perf_counter() - start

    design = ("leave one section out" if args.protocol == "loso" else
              f"cross-patient: trained on {', '.join(s for s in args.sections if s not in folds)}, tested on "
              f"{', '.join(folds)}")  # fmt: skip
    report = [f"# HINGE vs baselines on her2st ({', '.join(args.sections)}; {design})",
              f"Command: `python benchmarks/her2st.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
              f"Folds: {', '.join(folds)}; seeds {args.seeds} for {sorted(STOCHASTIC & set(args.methods))}; "
              f"{args.n_genes}-gene HMHVG panel per fold; features `{adata.uns['X_histology']['params']['encoder']}` "
              f"({adata.obsm['X_histology'].shape[1]}-d, {args.views} views); HINGE d={args.d_model} L={args.n_layers} "
              f"H={args.n_heads}, random backbone (hinge_pretrained: {args.pretrained_backbone}), recipe "
              f"`{args.recipe}` {recipe(args).to_dict()}, {args.n_samples} samples × {args.sampling_steps} steps, {args.hinge_features} "
              "features. Mean ± s.d. over held-out sections "
              "(seeds averaged first).",
              summary_tables(per_section_df, per_gene_df, list(args.methods))]  # fmt: skip
    real = timing_df[timing_df["method"].str.startswith("hinge")].groupby("method")[
        ["train_samples_per_s", "generate_spots_per_s", "train_s", "generate_s"]].mean()  # fmt: skip
    if len(real):
        header = "### HINGE time per fold (real data, mean over folds and seeds)\n\n"
        report.append(header + markdown(real, ".1f", index=True))
    if args.perf_genes:
        perf = performance_table(args.perf_genes, args.perf_spots, isolate=not args.tiny, d_model=args.d_model,
                                 n_layers=args.n_layers, n_heads=args.n_heads,
                                 n_features=adata.obsm["X_histology"].shape[1],
                                 n_samples=args.n_samples, n_steps=args.sampling_steps, threads=args.threads,
                                 n_iter=1 if args.tiny else 3)  # fmt: skip
        perf.to_csv(out / "performance.csv", index=False)
        report.append(f"### Performance (synthetic data of real shapes; d={args.d_model}, L={args.n_layers}, batch 32, "
                      f"{args.n_samples} samples × {args.sampling_steps} steps, {args.threads} thread(s))\n\n"
                      + to_markdown(perf))  # fmt: skip
    report.append(
        f"Compute time of the {len(timing_df)} runs (fit + predict + evaluate, summed; runs cached by an "
        f"earlier call keep their own time): {timing_df['total_s'].sum() / 60:.1f} min. This call: "
        f"{bench_s / 60:.1f} min for the runs, {(time.perf_counter() - start) / 60:.1f} min in all."
    )
    text = "\n\n".join(report) + "\n"
    (out / "results.md").write_text(text)
    print(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--tiny`` overrides the sizes for CI)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="Output folder.")
    p.add_argument("--data", default=str(DATA), help="Shared data folder (with her2st/ and vocab/).")
    p.add_argument(
        "--protocol", choices=("loso", "cross-patient"), default="loso",
        help="`loso`: leave one section of --sections out; `cross-patient`: train on --sections (patient C), test on "
        "--test-sections of another patient (A1).",
    )  # fmt: skip
    p.add_argument("--sections", nargs="+", default=["C2", "C3", "C4", "C5", "C6"])
    p.add_argument("--test-sections", nargs="+", default=["A1"], help="Cross-patient protocol: the test sections.")
    p.add_argument("--folds", nargs="+", default=None, help="Held-out sections (default: every section).")
    p.add_argument(
        "--depth-reference", nargs="+", default=None,
        help="hinge_depth_prior, hinge_new_patient*: sequenced sections whose spreads of median depth and of each "
        "gene's level are the new slide's (default: "
        "every her2st section with counts of a patient other than the test sections').",
    )  # fmt: skip
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=METHODS,
        help="Default: all; hinge_pretrained only with --pretrained-backbone.",
    )
    p.add_argument(
        "--pretrained-backbone",
        default=None,
        help="A saved hs.Backbone (e.g. from hs.pretrain_backbone) for the 'hinge_pretrained' method.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-genes", type=int, default=200)
    p.add_argument("--views", type=int, default=8, choices=(1, 8))
    p.add_argument(
        "--context",
        default=feature_defaults()["context"],
        choices=("none", "knn", "field"),
        help="Spatial context of the features every method gets (`hs.pp.histology_features(context=)`); "
        "`*_plain` methods and `hinge_paper` get the features without context.",
    )
    p.add_argument(
        "--hinge-features",
        default="standardized",
        choices=("standardized", "raw"),
        help="HINGE's `standardize_features` (the baselines always standardise with the training fold).",
    )
    p.add_argument("--standardize", default=feature_defaults()["standardize"], choices=("section", "none"),
                   help="`hs.pp.histology_features(standardize=)` for every method: within each section (default) "
                   "or the encoder's raw output.")
    add_model_args(p)
    p.add_argument("--recipe", default="default", choices=("default", "paper"),
                   help="Training recipe of the package (hs.model.RECIPES); the options below override its fields.")
    p.add_argument("--epochs", type=int, default=None, help="Default: the recipe's max_epochs.")
    p.add_argument("--warmup-epochs", type=int, default=None, help="Default: the recipe's.")
    p.add_argument("--batch-size", type=int, default=None, help="Default: the recipe's.")
    p.add_argument("--lr", type=float, default=None, help="Default: the recipe's.")
    p.add_argument("--diffusion-steps", type=int, default=50)
    p.add_argument("--sampling-steps", type=int, default=10)
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--ridge-alpha", type=float, default=10.0)
    p.add_argument("--knn-k", type=int, default=50)
    p.add_argument("--mlp-epochs", type=int, default=30)
    p.add_argument("--perf-genes", type=int, nargs="*", default=[200, 500, 1000, 2000])
    p.add_argument("--perf-spots", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--threads", type=int, default=1, help="Torch CPU threads (1 is fastest on a busy machine).")
    p.add_argument("--no-resume", action="store_true", help="Recompute runs cached in <out>/runs by an earlier call.")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="Score the cached runs' stored predictions again (no refitting), e.g. after a metric changed.",
    )
    p.add_argument("--tiny", action="store_true", help="CI size: C2/C3, fold C3, one seed, 1 epoch, small model.")
    args = p.parse_args(argv)
    if args.methods is None:
        args.methods = [m for m in METHODS if m != "hinge_pretrained" or args.pretrained_backbone]
    if "hinge_pretrained" in args.methods and not args.pretrained_backbone:
        p.error("method 'hinge_pretrained' needs --pretrained-backbone PATH (a saved hs.Backbone).")
    if args.tiny:
        args.sections, args.folds, args.seeds = ["C2", "C3"], ["C3"], [0]
        args.test_sections = args.test_sections[:1]
        args.n_genes, args.views, args.d_model, args.n_layers, args.n_heads = 30, 1, 16, 2, 2
        args.epochs, args.diffusion_steps, args.sampling_steps, args.n_samples = 1, 10, 3, 2
        args.mlp_epochs, args.knn_k, args.perf_genes, args.perf_spots = 2, 10, [20, 40], [4, 8]
    if args.protocol == "cross-patient":
        patients = {s[0] for s in args.sections}
        clash = [s for s in args.test_sections if s[0] in patients]
        if clash:
            p.error(f"cross-patient: test sections {clash} are of a training patient ({sorted(patients)}).")
        args.sections, args.folds = [*args.sections, *args.test_sections], list(args.test_sections)
    if args.depth_reference is None:
        import hinge_sc as hs

        held_out = {s[0] for s in (args.folds or args.sections)}
        available = hs.datasets.her2st_sections(Path(args.data) / "her2st").index
        args.depth_reference = [s for s in available if s[0] not in held_out]
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    main()
