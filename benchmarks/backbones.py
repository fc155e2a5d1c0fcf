"""Does the pre-trained prior help? Pre-training, leave-one-section-out on her2st patient C, full-size shapes.

Usage::

    python benchmarks/backbones.py --data ../shared/data --out bench_backbones            # everything
    python benchmarks/backbones.py --parts fullsize                                         # one part

Parts (each prints a markdown table and writes it to ``--out``):

``pretrain``
    Pre-train a backbone on the count-only her2st sections of patients A, D, E, F, G, H (CellFM's masked-value
    objective, CellFM vocabulary) and compare masked-value reconstruction on 10 % held-out spots with imputing
    each gene's training mean.
``loso``
    Patient C, sections C2–C6 (with H&E), leave one section out: HINGE with the pre-trained backbone frozen,
    the same architecture randomly initialised (frozen), and the pre-trained backbone fully fine-tuned; same
    handcrafted features (8 views), same 200-gene HMHVG panel; PCC-50, mean PCC and co-expression per fold.
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

import hinge_sc as hs
from hinge_sc.module import HINGEModule
from hinge_sc.train._pretrain import masked_reconstruction_error, split_spots

PRETRAIN_SECTIONS = [f"{p}{i}" for p, n in [("A", 6), ("D", 6), ("E", 3), ("F", 3), ("G", 3), ("H", 3)] for i in range(1, n + 1)]
C_SECTIONS = ["C2", "C3", "C4", "C5", "C6"]


def read_count_sections(data: Path, sections: list[str]) -> ad.AnnData:
    """Spots × shared genes of count-only sections (raw counts, selected spots only)."""
    frames = []
    for s in sections:
        df = pd.read_csv(data / "her2st" / "counts" / f"{s}.tsv.gz", sep="\t", index_col=0)
        df.index = [f"{s}_{i}" for i in df.index]
        frames.append(df)
    genes = sorted(set.intersection(*(set(f.columns) for f in frames)))
    adata = ad.AnnData(sp.csr_matrix(np.vstack([f[genes].to_numpy(np.float32) for f in frames])))
    adata.var_names, adata.obs_names = genes, [i for f in frames for i in f.index]
    return adata


def part_pretrain(args, vocabulary: list[str]) -> tuple[hs.Backbone, str]:
    adata = read_count_sections(args.data, PRETRAIN_SECTIONS)
    train_idx, test_idx = split_spots(adata.n_obs, 0.1, args.seed)
    t0 = time.perf_counter()
    backbone = hs.Backbone.pretrain(
        adata[train_idx], vocabulary=vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
        n_tokens=args.n_tokens, max_epochs=args.pretrain_epochs, batch_size=64, lr=1e-3, seed=args.seed,
        accelerator=args.accelerator, show_progress_bar=False,
    )
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
    history = pd.DataFrame(backbone.meta["pretraining"]["history"])
    table = (
        f"Pre-training: {len(train_idx)} spots of {len(PRETRAIN_SECTIONS)} count-only sections, {len(genes)} genes "
        f"in the CellFM vocabulary, d={args.d_model}, L={args.n_layers}, {args.pretrain_epochs} epochs, "
        f"{minutes:.1f} min\n\n"
        + history.round(4).to_markdown(index=False)
        + f"\n\nMasked-value reconstruction (20 % hidden) on {len(test_idx)} held-out spots, log2(count+1):\n\n"
        + pd.DataFrame(rows).round(4).to_markdown(index=False)
    )
    return backbone, table


def c_sections(args) -> ad.AnnData:
    cache = args.out / "her2st_C_features.h5ad"
    if cache.is_file():
        return ad.read_h5ad(cache)
    adata = hs.datasets.her2st(sections=C_SECTIONS, path=args.data / "her2st", show_progress_bar=False)
    hs.pp.histology_features(adata, views=8, show_progress_bar=False)
    adata.write_h5ad(cache)
    return adata


def part_loso(args, pretrained: hs.Backbone, vocabulary: list[str]) -> str:
    adata = c_sections(args)
    random_bb = hs.Backbone.random(
        vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, seed=args.seed + 1
    )
    variants = {
        "pre-trained, frozen (HINGE)": {"backbone": pretrained},
        "random init, frozen": {"backbone": random_bb},
        "pre-trained, fully fine-tuned": {"backbone": pretrained, "freeze_backbone": False},
    }
    rows = []
    for held_out in args.folds:
        train = adata[adata.obs["section"] != held_out].copy()
        panel = hs.pp.select_genes(train, n_genes=200, vocabulary=pretrained.genes)
        for name, kwargs in variants.items():
            tr, te = train.copy(), adata[adata.obs["section"] == held_out].copy()
            hs.HINGE.setup_anndata(tr, features_key="X_histology", views_key="X_histology_views")
            model = hs.HINGE(tr, genes=panel, **kwargs)
            t0 = time.perf_counter()
            model.train(
                max_epochs=args.epochs, lr=1e-3, warmup_epochs=1,
                lr_milestones=(args.epochs // 2, int(args.epochs * 0.875)), accelerator=args.accelerator,
                seed=args.seed, show_progress_bar=False,
            )
            train_min = (time.perf_counter() - t0) / 60
            hs.tl.generate(model, te, n_samples=args.n_samples, n_steps=args.sampling_steps, seed=args.seed,
                           show_progress_bar=False)
            _, summary = hs.tl.evaluate(te, key="hinge")
            s = summary.loc[held_out]
            rows.append({"fold": held_out, "backbone": name, "pcc_50": s["pcc_50"], "pcc_mean": s["pcc_mean"],
                         "coexpression": s["coexpr_pcc"], "train_min": train_min})
            logging.getLogger("benchmark").warning("%s %s %s", held_out, name, rows[-1])
            pd.DataFrame(rows).to_csv(args.out / "loso_folds.csv", index=False)
    folds = pd.DataFrame(rows)
    agg = folds.groupby("backbone", sort=False)[["pcc_50", "pcc_mean", "coexpression"]].agg(["mean", "std"])
    summary = pd.DataFrame(
        {m: [f"{agg.loc[b, (m, 'mean')]:.3f} ± {agg.loc[b, (m, 'std')]:.3f}" for b in agg.index] for m in
         ["pcc_50", "pcc_mean", "coexpression"]},
        index=agg.index,
    )
    return (
        f"Leave-one-section-out on {', '.join(args.folds)} (d={args.d_model}, L={args.n_layers}, {args.epochs} epochs, "
        f"{args.n_samples} samples × {args.sampling_steps} steps; log2(count+1) scale)\n\n"
        + folds.round(3).to_markdown(index=False) + "\n\nmean ± s.d. over folds:\n\n" + summary.to_markdown()
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
        counts = torch.poisson(torch.full((args.fullsize_spots, args.fullsize_genes), 2.0))
        batch = {"counts": counts, "library": torch.full((args.fullsize_spots,), 1e4),
                 "features": torch.randn(args.fullsize_spots, 1536)}
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
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("bench_backbones"))
    parser.add_argument("--parts", nargs="+", default=["pretrain", "loso", "fullsize"])
    parser.add_argument("--folds", nargs="+", default=C_SECTIONS)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--n-tokens", type=int, default=256)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--sampling-steps", type=int, default=10)
    parser.add_argument("--fullsize-spots", type=int, default=2)
    parser.add_argument("--fullsize-genes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    vocabulary = pd.read_csv(args.data / "vocab" / "cellfm" / "gene_info.csv", usecols=[0]).iloc[:, 0].tolist()
    pretrained = None
    if {"pretrain", "loso"} & set(args.parts):
        bb_path = args.out / "pretrained_backbone.pt"
        if bb_path.is_file() and "pretrain" not in args.parts:
            pretrained = hs.Backbone.load(bb_path)
        else:
            pretrained, table = part_pretrain(args, vocabulary)
            pretrained.save(bb_path, overwrite=True)
            print(table, flush=True)
            (args.out / "pretrain.md").write_text(table)
    if "loso" in args.parts:
        table = part_loso(args, pretrained, vocabulary)
        print(table, flush=True)
        (args.out / "loso.md").write_text(table)
    if "fullsize" in args.parts:
        table = part_fullsize(args)
        print(table, flush=True)
        (args.out / "fullsize.md").write_text(table)


if __name__ == "__main__":
    main()
