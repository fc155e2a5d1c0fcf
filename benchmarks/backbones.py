"""Does the pre-trained prior help? Pre-training, leave-one-section-out on her2st patient C, full-size shapes.

Usage::

    python benchmarks/backbones.py --data ../shared/data --out bench_backbones            # everything
    python benchmarks/backbones.py --parts fullsize                                         # one part
    python benchmarks/backbones.py --parts loso --seeds 0 1   # reuses <out>/pretrained_backbone.pt
    python benchmarks/backbones.py --parts priors --n-layers 2 --pretrain-epochs 2   # CellFM- vs scGPT-shaped prior

Parts (each prints a markdown table and writes it to ``--out``):

``pretrain``
    Pre-train a backbone on the count-only her2st sections of patients A, D, E, F, G, H (CellFM's masked-value
    objective, CellFM vocabulary) and compare masked-value reconstruction on 10 % held-out spots with imputing
    each gene's training mean.
``transfer``
    The pre-trained backbone's masked-value reconstruction on every spot of patient C (no image needed; the
    patient is unseen in pre-training) against imputing each gene's mean over patient C itself.
``loso``
    Patient C, sections C2–C6 (with H&E), leave one section out: HINGE with the pre-trained backbone frozen,
    the same architecture randomly initialised (frozen), the pre-trained backbone fully fine-tuned and with LoRA
    adapters (rank 8) on its frozen projections, the random one fully fine-tuned (is it the prior or the
    trainable capacity?), and a ridge probe as reference; same handcrafted features (8 views), same 200-gene
    HMHVG panel; PCC-50, mean PCC and co-expression per fold on both scales, over ``--seeds``. Finished runs are
    kept in ``<out>/loso_folds.csv`` and skipped when the script is run again with the same settings.
``priors``
    Which prior helps more: a CellFM-shaped and an scGPT-shaped backbone pre-trained on the same count-only spots with
    the same settings (cached in ``<out>/prior_*.pt``), each frozen under HINGE, against both shapes with random
    weights; leave one C section out with the same features, panel and training; PCC-50, mean PCC and co-expression
    on both scales, coverage of the 50 %/90 % intervals and CRPS. Resumable like ``loso``
    (``<out>/priors_folds.csv``).
``fullsize``
    CellFM-80M and -800M shapes with random weights: one forward/backward of the adapted model for a few spots
    on CPU, time and peak memory (resident set size).
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp
import torch
from _common import DATA, SCALES, add_model_args, cellfm_vocabulary, scores, synthetic_batch, train_hinge

import hinge_sc as hs
from hinge_sc.module import HINGEModule
from hinge_sc.train import split_spots

PRETRAIN_SECTIONS = [f"{p}{i}" for p, n in [("A", 6), ("D", 6), ("E", 3), ("F", 3), ("G", 3), ("H", 3)] for i in range(1, n + 1)]
C_SECTIONS = ["C2", "C3", "C4", "C5", "C6"]


def read_count_sections(data: Path, sections: list[str]) -> ad.AnnData:
    """Spots × genes of count-only sections (raw counts, selected spots only).

    The union of the sections' genes: a file lists only the genes detected in its section, so a gene missing
    from one file has zero counts there (an intersection would lose, e.g., SCGB2A2 and CEACAM6).
    """
    frames = []
    for s in sections:
        df = pd.read_csv(data / "her2st" / "counts" / f"{s}.tsv.gz", sep="\t", index_col=0)
        df.index = [f"{s}_{i}" for i in df.index]
        frames.append(df)
    genes = pd.Index(sorted(set().union(*(f.columns for f in frames))))
    blocks = []
    for f in frames:
        block = sp.coo_matrix(f.to_numpy(np.float32))
        blocks.append(sp.csr_matrix((block.data, (block.row, genes.get_indexer(f.columns)[block.col])),
                                    shape=(len(f), len(genes))))  # fmt: skip
    adata = ad.AnnData(sp.vstack(blocks).tocsr())
    adata.var_names, adata.obs_names = list(genes), [i for f in frames for i in f.index]
    return adata


def pretrain_prior(args, adata: ad.AnnData, vocabulary: list[str], architecture: str = "cellfm") -> hs.Backbone:
    """Pre-train a prior of ``architecture`` on ``adata`` with the script's settings (the same for every shape)."""
    return hs.pretrain_backbone(
        adata, vocabulary=vocabulary, architecture=architecture, d_model=args.d_model, n_layers=args.n_layers,
        n_heads=args.n_heads, n_tokens=args.n_tokens, max_epochs=args.pretrain_epochs, batch_size=64, lr=1e-3,
        seed=args.seed, accelerator=args.accelerator, show_progress_bar=False,
    )


def part_pretrain(args, vocabulary: list[str]) -> tuple[hs.Backbone, str]:
    """Pre-train on the count-only sections; masked-value reconstruction on held-out spots vs gene means."""
    from hinge_sc.train import masked_reconstruction_error

    adata = read_count_sections(args.data, PRETRAIN_SECTIONS)
    train_idx, test_idx = split_spots(adata.n_obs, 0.1, args.seed)
    t0 = time.perf_counter()
    backbone = pretrain_prior(args, adata[train_idx], vocabulary)
    minutes = (time.perf_counter() - t0) / 60
    genes = [g for g in adata.var_names if backbone.token_ids([g])[1] == []]
    sub = adata[:, genes]
    ids, _ = backbone.token_ids(genes)
    means = np.log2(sub[train_idx].X.toarray() + 1).mean(0)
    rows = []
    for n_tokens in (args.n_tokens, 200):
        err = masked_reconstruction_error(
            backbone, sub[test_idx].X.tocsr(), ids.numpy(), means, n_tokens=n_tokens, seed=args.seed
        )
        rows.append({"tokens per spot": n_tokens, **err})
    history = pd.DataFrame(backbone.provenance.pretraining.history)
    table = (
        f"Pre-training: {len(train_idx)} spots of {len(PRETRAIN_SECTIONS)} count-only sections, {len(genes)} genes "
        f"in the CellFM vocabulary, d={args.d_model}, L={args.n_layers}, {args.pretrain_epochs} epochs, "
        f"{minutes:.1f} min\n\n"
        + history.round(4).to_markdown(index=False)
        + f"\n\nMasked-value reconstruction (20 % hidden) on {len(test_idx)} held-out spots, log2(count+1):\n\n"
        + pd.DataFrame(rows).round(4).to_markdown(index=False)
    )
    return backbone, table


def part_transfer(args, pretrained: hs.Backbone) -> str:
    """Masked-value reconstruction on patient C (never seen in pre-training) vs that patient's own gene means."""
    from hinge_sc.train import masked_reconstruction_error

    sections = ["C1", *C_SECTIONS]
    adata = read_count_sections(args.data, sections)
    ids, _ = pretrained.token_ids(list(adata.var_names))
    unseen = set(pretrained.unseen_in_pretraining(list(adata.var_names)))
    genes = [g for g, i in zip(adata.var_names, ids.tolist(), strict=True) if i > 0 and g not in unseen]
    sub = adata[:, genes]
    ids, _ = pretrained.token_ids(genes)
    x = sub.X.tocsr()
    rows = []
    for n_tokens in (args.n_tokens, 200):
        oracle = np.log2(x.toarray() + 1).mean(0)  # patient C's own means: favours the baseline
        err = masked_reconstruction_error(pretrained, x, ids.numpy(), oracle, n_tokens=n_tokens, seed=args.seed)
        rows.append({"tokens per spot": n_tokens, **err})
    return (
        f"Transfer to an unseen patient: masked-value reconstruction (20 % hidden, log2(count+1)) on all "
        f"{sub.n_obs} spots of patient C ({', '.join(sections)}), {len(genes)} genes seen in pre-training, by the "
        "backbone pre-trained "
        "on patients A, D–H, against imputing each gene's mean over patient C itself (an oracle baseline)\n\n"
        + pd.DataFrame(rows).round(4).to_markdown(index=False)
    )


def c_sections(args) -> ad.AnnData:
    cache = args.out / "her2st_C_features.h5ad"
    if cache.is_file():
        return ad.read_h5ad(cache)
    adata = hs.datasets.her2st(sections=C_SECTIONS, path=args.data / "her2st", show_progress_bar=False)
    hs.pp.histology_features(adata, views=8, show_progress_bar=False)
    adata.write_h5ad(cache)
    return adata


def prediction_pc1_share(test: ad.AnnData, key: str) -> float:
    """Share of the variance of the predictions (spots × genes) on their first principal component."""
    pred = np.asarray(test.obsm[key], dtype=np.float64)
    sv = np.linalg.svd(pred - pred.mean(0), compute_uv=False)
    return float(sv[0] ** 2 / (sv**2).sum())


CALIBRATION = ("coverage_50", "coverage_90", "crps")
#: Columns of a run: PCC-50, mean PCC and co-expression on both scales (``_cp10k``: panel-cp10k), calibration on
#: log2(count+1).
COLUMNS = {
    scale: {m: f"{name}{suffix}" for m, name in (("pcc_50", "pcc_50"), ("pcc_mean", "pcc_mean"),
                                                  ("coexpr_pcc", "coexpression"))}
    | ({c: c for c in CALIBRATION} if scale == "log2p1" else {})
    for scale, suffix in zip(SCALES, ("", "_cp10k"), strict=True)
}  # fmt: skip


def fold_scores(test: ad.AnnData, key: str, held_out: str) -> dict:
    """PCC-50, mean PCC and co-expression on log2(count+1) and on panel-cp10k; PC1 share of the predictions; coverage
    of the central 50 % and 90 % intervals (Gaussian from the samples' s.d.) and CRPS on log2(count+1)."""
    return scores(test, key, COLUMNS, row=held_out) | {"pc1_share": prediction_pc1_share(test, key)}


def loso_variants(pretrained: hs.Backbone, random_bb: hs.Backbone) -> dict[str, dict]:
    """Model arguments of each compared variant."""
    return {
        "pre-trained, frozen (HINGE)": {"backbone": pretrained},
        "random init, frozen": {"backbone": random_bb},
        "pre-trained, fully fine-tuned": {"backbone": pretrained, "freeze_backbone": False},
        "pre-trained, frozen + LoRA r=8": {"backbone": pretrained, "lora_rank": 8},
        "random init, fully fine-tuned": {"backbone": random_bb, "freeze_backbone": False},  # prior vs capacity
    }


def run_variant(args, name: str, kwargs: dict | None, train, test, panel, held_out: str, seed: int) -> dict:
    """Train one variant on ``train`` (or fit the ridge reference), generate ``test`` and score it."""
    t0 = time.perf_counter()
    if kwargs is None:
        hs.benchmark.RidgeProbe(10.0).fit(train, genes=panel).predict(test, key_added="pred")
    else:
        # the package's recipe; --epochs overrides its max_epochs only
        recipe = hs.DEFAULT_RECIPE if args.epochs is None else hs.DEFAULT_RECIPE.replace(max_epochs=args.epochs)
        model, _ = train_hinge(train, genes=panel, recipe=recipe, seed=seed, accelerator=args.accelerator,
                               views_key="X_histology_views" if args.views else None, **kwargs)  # fmt: skip
        hs.tl.generate(model, test, n_samples=args.n_samples, n_steps=args.sampling_steps, seed=seed, key_added="pred",
                       show_progress_bar=False)  # fmt: skip
    return {"fold": held_out, "backbone": name, "seed": seed, **fold_scores(test, "pred", held_out),
            "minutes": (time.perf_counter() - t0) / 60}  # fmt: skip


def run_loso(args, csv: Path, variants_of, stamp_of, panel_backbone: hs.Backbone) -> tuple[pd.DataFrame, list[str]]:
    """Leave one C section out for every seed and variant.

    Finished runs are read from ``csv`` (same stamp) and each new run is appended to it at once, so an interrupted
    run resumes where it stopped.

    ``variants_of(seed)`` gives the variants (name → HINGE arguments, ``None`` for the ridge probe), ``stamp_of(seed)``
    the settings a finished run must match; the ``--n-genes`` HMHVG panel is drawn among ``panel_backbone``'s genes.
    """
    adata = c_sections(args)
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["fold", "backbone", "config"])
    stamps, rows, names = [], [], []
    for seed in args.seeds:
        variants, stamp = variants_of(seed), stamp_of(seed)
        names = list(variants)
        stamps.append(stamp)
        kept = done[done["config"] == stamp].assign(seed=seed).to_dict("records")  # finished runs are kept
        rows.extend(kept)
        for held_out in args.folds:
            todo = [n for n in variants if not any(r["fold"] == held_out and r["backbone"] == n for r in kept)]
            if not todo:
                continue
            train = adata[adata.obs["section"] != held_out].copy()
            panel = hs.pp.select_genes(train, n_genes=args.n_genes, vocabulary=panel_backbone)
            for name in todo:
                test = adata[adata.obs["section"] == held_out].copy()
                row = run_variant(args, name, variants[name], train, test, panel, held_out, seed)
                rows.append(row | {"config": stamp})
                logging.getLogger("benchmark").warning("%s", rows[-1])
                pd.concat([done[~done["config"].isin(stamps)], pd.DataFrame(rows)]).to_csv(csv, index=False)
    runs = pd.DataFrame(rows)
    return runs[runs["fold"].isin(args.folds)].drop(columns="config"), names


def summarise(runs: pd.DataFrame, metrics: list[str], reference: str, order: list[str]) -> tuple[str, str, str]:
    """Tabulate the runs as markdown.

    Per-run table, mean ± s.d. over folds (seeds averaged per fold first), and per-fold differences of PCC-50 and
    co-expression to the ``reference`` variant.
    """
    folds = runs.groupby(["fold", "backbone"], sort=False)[metrics].mean().reset_index()
    agg = folds.groupby("backbone", sort=False)[metrics].agg(["mean", "std"])
    summary = pd.DataFrame(
        {m: [f"{agg.loc[b, (m, 'mean')]:.3f} ± {agg.loc[b, (m, 'std')]:.3f}" for b in agg.index] for m in metrics},
        index=agg.index,
    )
    ref = folds[folds["backbone"] == reference].set_index("fold")
    paired = {}
    for name, sub in folds.groupby("backbone", sort=False):
        diff = sub.set_index("fold")["pcc_50"] - ref["pcc_50"]
        co = sub.set_index("fold")["coexpression"] - ref["coexpression"]
        paired[name] = {
            f"PCC-50 − {reference}": f"{diff.mean():+.3f} ({int((diff > 0).sum())}/{len(diff)} folds higher)",
            f"co-expr. − {reference}": f"{co.mean():+.3f} ({int((co > 0).sum())}/{len(co)} folds higher)",
        }
    rank = {n: i for i, n in enumerate(order)}
    runs = runs.sort_values(["fold", "seed", "backbone"], key=lambda c: c.map(rank) if c.name == "backbone" else c)
    runs = runs[["fold", "seed", "backbone", *metrics, "minutes"]]
    return (
        runs.round(3).to_markdown(index=False),
        summary.to_markdown(),
        pd.DataFrame.from_dict(paired, orient="index").to_markdown(),
    )


def part_loso(args, pretrained: hs.Backbone, vocabulary: list[str]) -> str:
    def variants_of(seed):
        random_bb = hs.Backbone.random(
            vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, seed=seed + 1
        )
        return {**loso_variants(pretrained, random_bb), "ridge (reference)": None}

    def stamp_of(seed):
        return (f"d{args.d_model} L{args.n_layers} e{args.epochs} s{args.n_samples}x{args.sampling_steps} seed{seed} "
                f"bb{pretrained.checksum()}{'' if args.n_genes == 200 else f' g{args.n_genes}'}"
                f"{'' if args.views else ' v1'}")  # fmt: skip

    runs, order = run_loso(args, args.out / "loso_folds.csv", variants_of, stamp_of, pretrained)
    metrics = [f"{m}{suffix}" for suffix in ("", "_cp10k") for m in ("pcc_50", "pcc_mean", "coexpression")]
    metrics.append("pc1_share")
    table, summary, paired = summarise(runs, metrics, "random init, frozen", order)
    return (
        f"Leave-one-section-out on {', '.join(args.folds)} (d={args.d_model}, L={args.n_layers}, {args.epochs} epochs, "
        f"{8 if args.views else 1} views, {args.n_samples} samples × {args.sampling_steps} steps, {args.n_genes}-gene "
        f"HMHVG panel per fold, seeds {args.seeds}; metrics on log2(count+1) and on panel-cp10k; pc1_share = variance "
        "share of the predictions' "
        "first principal component; minutes = training + generation)\n\n"
        + table + "\n\nmean ± s.d. over folds (seeds averaged per fold first):\n\n" + summary
        + "\n\npaired with the random frozen backbone, per fold:\n\n" + paired
    )


PRIOR_VARIANTS = {
    "cellfm": ("CellFM-shaped prior, frozen", "random CellFM-shaped, frozen"),
    "scgpt": ("scGPT-shaped prior, frozen", "random scGPT-shaped, frozen"),
}


def cached_prior(args, architecture: str, vocabulary: list[str]) -> tuple[hs.Backbone, float | None]:
    """Pre-train the prior of ``architecture`` on the count-only sections, or read it from ``<out>``.

    Patients A, D–H, 90 % of the spots as in ``pretrain``; returns the backbone and the minutes of pre-training.
    """
    stamp = (f"{architecture}_d{args.d_model}_L{args.n_layers}_H{args.n_heads}_t{args.n_tokens}"
             f"_e{args.pretrain_epochs}_seed{args.seed}{f'_n{args.pretrain_spots}' if args.pretrain_spots else ''}")  # fmt: skip
    path = args.out / f"prior_{stamp}.pt"
    if path.is_file():
        backbone = hs.Backbone.load(path)
        return backbone, backbone.provenance.pretraining.history[-1].get("minutes")
    adata = read_count_sections(args.data, PRETRAIN_SECTIONS)
    train_idx, _ = split_spots(adata.n_obs, 0.1, args.seed)
    if args.pretrain_spots and args.pretrain_spots < len(train_idx):  # the same random subset for every shape
        train_idx = np.sort(np.random.default_rng(args.seed).choice(train_idx, args.pretrain_spots, replace=False))
    t0 = time.perf_counter()
    backbone = pretrain_prior(args, adata[train_idx], vocabulary, architecture)
    minutes = (time.perf_counter() - t0) / 60
    backbone.provenance.pretraining.history[-1]["minutes"] = minutes
    backbone.save(path)
    return backbone, minutes


def part_priors(args, vocabulary: list[str]) -> str:
    """Compare the priors under HINGE.

    A CellFM-shaped and an scGPT-shaped backbone pre-trained on the same data with the same budget, each frozen,
    against the same shapes with random weights; same features, panel and training.
    """
    priors, random_kwargs, lines = {}, {"cellfm": {}, "scgpt": {"dropout": 0.1, "attention_dropout": 0.0}}, []
    for arch in PRIOR_VARIANTS:
        priors[arch], minutes = cached_prior(args, arch, vocabulary)
        history = priors[arch].provenance.pretraining.history
        lines.append(f"- {arch}: {sum(p.numel() for p in priors[arch].parameters()) / 1e6:.2f} M parameters, final "
                     f"train loss {history[-1].get('train_loss', float('nan')):.4f}, validation loss "
                     f"{history[-1].get('validation_loss', float('nan')):.4f}, "
                     f"{'cached' if minutes is None else f'{minutes:.1f} min'}")  # fmt: skip
    classes = {"cellfm": hs.Backbone, "scgpt": hs.nn.ScGPTBackbone}

    def variants_of(seed):
        variants = {}
        for arch, (prior_name, _) in PRIOR_VARIANTS.items():
            if arch in args.prior_variants:
                variants[prior_name] = {"backbone": priors[arch].train()}  # dropout on in training, as HINGE intends
        for arch, (_, random_name) in PRIOR_VARIANTS.items():
            if f"random-{arch}" in args.prior_variants:
                random_bb = classes[arch].random(
                    vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, seed=seed + 1,
                    **random_kwargs[arch],
                )
                variants[random_name] = {"backbone": random_bb}
        return variants

    def stamp_of(seed):
        return (f"d{args.d_model} L{args.n_layers} e{args.epochs} s{args.n_samples}x{args.sampling_steps} seed{seed} "
                f"g{args.n_genes}{'' if args.views else ' v1'} "
                f"bb{priors['cellfm'].checksum()}+{priors['scgpt'].checksum()}")  # fmt: skip

    runs, order = run_loso(args, args.out / "priors_folds.csv", variants_of, stamp_of, priors["cellfm"])
    metrics = [f"{m}{suffix}" for suffix in ("", "_cp10k") for m in ("pcc_50", "pcc_mean", "coexpression")]
    metrics.extend(CALIBRATION)
    table, summary, paired = summarise(runs, metrics, PRIOR_VARIANTS["cellfm"][1], order)
    return (
        f"Priors: d={args.d_model}, L={args.n_layers}, H={args.n_heads}, pre-trained {args.pretrain_epochs} epochs "
        f"on {args.pretrain_spots or 'all'} count-only spots of patients A, D–H ({args.n_tokens} genes per spot, 20 % "
        "hidden, CellFM "
        "vocabulary), same data and settings for both shapes:\n\n" + "\n".join(lines)
        + f"\n\nLeave-one-section-out on {', '.join(args.folds)} ({args.epochs} epochs, {8 if args.views else 1} "
        f"views, {args.n_samples} samples × {args.sampling_steps} steps, {args.n_genes}-gene HMHVG panel per fold, "
        f"seeds {args.seeds}; PCC and "
        "co-expression on log2(count+1) and on panel-cp10k; coverage of the central 50 %/90 % intervals (Gaussian "
        "from the samples' s.d.) and CRPS on log2(count+1); minutes = training + generation)\n\n"
        + table + "\n\nmean ± s.d. over folds (seeds averaged per fold first):\n\n" + summary
        + "\n\npaired with the random CellFM-shaped frozen backbone, per fold:\n\n" + paired
    )


def part_fullsize(args) -> str:
    genes = [f"G{i}" for i in range(24078)]
    proc = psutil.Process()
    baseline = proc.memory_info().rss / 2**30
    rows = []
    for shape, head_rank in [("cellfm-80m", None), ("cellfm-800m", 64), ("cellfm-800m", None)]:
        gc.collect()
        bb = hs.Backbone.random(genes, shape=shape)
        ids, _ = bb.token_ids(genes[: args.fullsize_genes])
        module = HINGEModule(bb, ids, n_features=1536, head_rank=head_rank)
        batch = synthetic_batch(args.fullsize_spots, args.fullsize_genes, 1536)
        t0 = time.perf_counter()
        _, _, out = module(batch)
        out.loss.backward()
        seconds = time.perf_counter() - t0
        peak = proc.memory_info().rss  # after backward: weights + activations + gradients of the adaptation
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        rows.append({
            "shape": shape, "head_rank": head_rank or "full", "backbone params (M)": sum(p.numel() for p in bb.parameters()) / 1e6,
            "trainable params (M)": trainable / 1e6, "fwd+bwd s": seconds, "process RSS after fwd+bwd (GB)": peak / 2**30,
        })
        del bb, module, out
    return (
        f"Full-size shapes on CPU ({torch.get_num_threads()} threads), {args.fullsize_spots} spots × "
        f"{args.fullsize_genes} genes, random weights, one forward/backward of the masked-diffusion loss "
        f"(process RSS before the first model: {baseline:.2f} GB)\n\n"
        + pd.DataFrame(rows).round(2).to_markdown(index=False)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("bench_backbones"))
    parser.add_argument("--parts", nargs="+", default=["pretrain", "transfer", "loso", "fullsize"],
                        choices=["pretrain", "transfer", "loso", "fullsize", "priors"])
    parser.add_argument("--folds", nargs="+", default=C_SECTIONS)
    add_model_args(parser)
    parser.add_argument("--n-tokens", type=int, default=256)
    parser.add_argument("--n-genes", type=int, default=200, help="Panel size of `loso` and `priors`.")
    parser.add_argument("--pretrain-spots", type=int, default=None,
                        help="`priors`: pre-train on this many of the count-only spots (same subset for both shapes).")
    parser.add_argument("--no-views", dest="views", action="store_false",
                        help="Train `loso`/`priors` on the centre crop only (no 8 augmented views: 8× fewer steps).")
    parser.add_argument("--prior-variants", nargs="+", default=["cellfm", "scgpt", "random-cellfm", "random-scgpt"],
                        choices=["cellfm", "scgpt", "random-cellfm", "random-scgpt"],
                        help="Variants `priors` runs (finished runs of the others are still reported).")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None, help="Default: the recipe's (hs.DEFAULT_RECIPE).")
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--sampling-steps", type=int, default=10)
    parser.add_argument("--fullsize-spots", type=int, default=2)
    parser.add_argument("--fullsize-genes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="Seed of pre-training and the transfer masks.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Training/sampling seeds of `loso`.")
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    vocabulary = cellfm_vocabulary(args.data)
    def report(part: str, table: str) -> None:
        print(table, flush=True)
        (args.out / f"{part}.md").write_text(table)

    pretrained = None
    if {"pretrain", "transfer", "loso"} & set(args.parts):
        bb_path = args.out / "pretrained_backbone.pt"
        if bb_path.is_file() and "pretrain" not in args.parts:
            pretrained = hs.Backbone.load(bb_path)
        else:
            pretrained, table = part_pretrain(args, vocabulary)
            pretrained.save(bb_path, overwrite=True)
            report("pretrain", table)
    parts = {
        "transfer": lambda: part_transfer(args, pretrained),
        "loso": lambda: part_loso(args, pretrained, vocabulary),
        "priors": lambda: part_priors(args, vocabulary),
        "fullsize": lambda: part_fullsize(args),
    }
    for part, run in parts.items():
        if part in args.parts:
            report(part, run())


if __name__ == "__main__":
    main()
