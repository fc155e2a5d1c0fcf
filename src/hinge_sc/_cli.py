"""Command line: ``hinge-sc demo`` trains HINGE on real her2st sections and generates a held-out one.

Arguments and inputs are checked before any folder is created or any work is done; a user error prints one line to
stderr and exits with status 2. A run never replaces the outputs of an earlier run in ``--out`` unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

logger = logging.getLogger("hinge_sc")

MARKERS = ("ERBB2", "GNAS", "KRT19", "FASN")
#: Files and folders a demo run writes into ``--out`` (besides ``generated_{section}.csv``).
OUTPUTS = ("model", "report.json", "section_metrics.csv", "per_gene_metrics.csv", "spatial_genes.png")
#: Exit status of a user error (as argparse's).
USAGE_ERROR = 2


class UsageError(ValueError):
    """A wrong argument or input of the command line: reported in one line, without a traceback."""


def _default_vocabulary(data: Path) -> Path | None:
    candidate = data.parent / "vocab" / "cellfm" / "gene_info.csv"
    return candidate if candidate.is_file() else None


def _check_numbers(args: argparse.Namespace) -> None:
    positive = ("n_genes", "d_model", "n_layers", "n_heads", "epochs", "batch_size", "diffusion_steps",
                "sampling_steps", "n_samples")  # fmt: skip
    for name in positive:
        if getattr(args, name) < 1:
            raise UsageError(f"`--{name.replace('_', '-')}` must be a positive integer, found {getattr(args, name)}.")
    if args.warmup_epochs < 0:
        raise UsageError(f"`--warmup-epochs` must be ≥ 0, found {args.warmup_epochs}.")
    for name in ("lr", "patch_size_um"):
        value = getattr(args, name)
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"`--{name.replace('_', '-')}` must be a finite number > 0, found {value}.")
    if args.sampling_steps > args.diffusion_steps:
        raise UsageError(
            f"`--sampling-steps` ({args.sampling_steps}) must be ≤ `--diffusion-steps` ({args.diffusion_steps}); "
            "lower it or raise `--diffusion-steps`."
        )
    if args.d_model % args.n_heads:
        raise UsageError(f"`--d-model` ({args.d_model}) must be a multiple of `--n-heads` ({args.n_heads}).")


def _check_data(args: argparse.Namespace) -> None:
    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(f"`--data` {data} is not a folder; pass the her2st folder (with counts/, spots/, images/).")
    if not ((data / "counts").is_dir() and (data / "spots").is_dir()):
        raise UsageError(f"`--data` {data} does not look like the her2st data: expected counts/ and spots/ in it.")
    overlap = sorted(set(args.train) & set(args.test))
    if overlap:
        raise UsageError(f"`--test` sections {overlap} are also in `--train`; hold out sections not trained on.")
    sections = dict.fromkeys([*args.train, *args.test])
    needed = {s: (f"counts/{s}.tsv.gz", f"spots/{s}_selection.tsv", f"images/{s}.jpg") for s in sections}
    missing = sorted(s for s, files in needed.items() if not all((data / f).is_file() for f in files))
    if missing:
        raise UsageError(
            f"Sections {missing} of `--train`/`--test` are not in `--data` {data} with counts, spots and an H&E image; "
            "see `hs.datasets.her2st_sections(path)` for those that are."
        )
    for flag, value in (("--backbone", args.backbone), ("--vocabulary", args.vocabulary)):
        if value is not None and not Path(value).is_file():
            raise UsageError(f"`{flag}` {value} is not a file.")


def _check_out(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"`--out` {out} exists and is not a folder; pass another `--out`.")
    existing = [name for name in OUTPUTS if (out / name).exists()]
    existing += sorted(p.name for p in out.glob("generated_*.csv")) if out.is_dir() else []
    if existing and not args.overwrite:
        raise UsageError(
            f"`--out` {out} already holds the outputs of a run ({', '.join(existing)}); pass `--overwrite` to "
            "replace them, or another `--out`."
        )


def check_args(args: argparse.Namespace) -> None:
    """Check the arguments and inputs of ``hinge-sc demo`` before any work; raise :class:`UsageError`."""
    _check_numbers(args)
    _check_data(args)
    _check_out(args)


def run_demo(args: argparse.Namespace) -> dict:
    """Train on ``args.train`` sections, generate ``args.test`` sections, evaluate and plot."""
    import matplotlib

    matplotlib.use("Agg")

    import hinge_sc as hs
    from hinge_sc.nn._cellfm import read_vocabulary

    timings: dict[str, float] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)

    t0 = time.perf_counter()
    sections = list(dict.fromkeys([*args.train, *args.test]))
    adata = hs.datasets.her2st(sections=sections, path=data)
    hs.pp.histology_features(adata, patch_size_um=args.patch_size_um, views=args.views)
    timings["data_and_features_s"] = time.perf_counter() - t0

    if args.backbone:
        backbone = hs.Backbone.load(args.backbone)
    else:
        vocab_path = Path(args.vocabulary) if args.vocabulary else _default_vocabulary(data)
        vocabulary = read_vocabulary(vocab_path) if vocab_path else list(adata.var_names)
        backbone = hs.Backbone.random(
            vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, seed=args.seed
        )
        logger.warning(
            "Using a randomly initialised backbone over %d genes (%s): pass --backbone with a pre-trained one "
            "for the method's real prior.",
            len(vocabulary),
            vocab_path or "the data's genes",
        )
    train = adata[adata.obs["section"].isin(args.train)].copy()
    test = adata[adata.obs["section"].isin(args.test)].copy()
    panel = hs.pp.select_genes(train, n_genes=args.n_genes, vocabulary=backbone)

    t0 = time.perf_counter()
    views_key = "X_histology_views" if args.views > 1 else None
    hs.HINGE.setup_anndata(train, features_key="X_histology", views_key=views_key, section_key="section")
    model = hs.HINGE(train, backbone, genes=panel, n_steps=args.diffusion_steps)
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        lr_milestones=(int(args.epochs * 0.5), int(args.epochs * 0.875)),
        accelerator=args.accelerator,
        seed=args.seed,
    )
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    hs.tl.generate(model, test, n_samples=args.n_samples, n_steps=args.sampling_steps, seed=args.seed)
    timings["generate_s"] = time.perf_counter() - t0
    per_gene, summary = hs.tl.evaluate(test, key="hinge", section_key="section")
    per_gene.to_csv(out / "per_gene_metrics.csv", index=False)
    summary.to_csv(out / "section_metrics.csv")

    section = args.test[0]
    scores = per_gene[per_gene["section"] == section].set_index("gene")["pearson"].dropna()
    genes = [g for g in MARKERS if g in scores.index][:2]
    genes += [g for g in scores.sort_values(ascending=False).index if g not in genes][: 4 - len(genes)]
    genes = genes or list(test.obsm["hinge"].columns[:4])  # no gene scored (e.g. all generated values at 0)
    hs.pl.spatial_genes(test, genes, key="hinge", section=section, save=out / "spatial_genes.png")
    model.save(out / "model", overwrite=args.overwrite)
    test.obsm["hinge"].to_csv(out / f"generated_{section}.csv")

    report = {
        "train_sections": args.train,
        "test_sections": args.test,
        "n_train_spots": int(train.n_obs),
        "n_test_spots": int(test.n_obs),
        "n_genes": len(model.panel_genes_),
        "epochs_run": model.train_params_["epochs_run"],
        "metrics": summary.round(4).reset_index().to_dict(orient="records"),
        "plotted_genes": genes,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hinge-sc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="Train on her2st C2–C5, generate C6, print metrics, save a figure.")
    demo.add_argument("--data", required=True, help="Folder of the her2st data (counts/, spots/, images/).")
    demo.add_argument("--out", default="hinge_demo_output", help="Output folder.")
    demo.add_argument("--train", nargs="+", default=["C2", "C3", "C4", "C5"], help="Training sections.")
    demo.add_argument("--test", nargs="+", default=["C6"], help="Held-out sections to generate.")
    demo.add_argument("--n-genes", type=int, default=200, help="Panel size (HMHVG).")
    demo.add_argument("--vocabulary", default=None, help="Backbone vocabulary CSV (first column = symbols).")
    demo.add_argument(
        "--backbone", default=None, help="A saved hinge_sc Backbone (.pt) to use instead of a random one."
    )
    demo.add_argument("--d-model", type=int, default=64)
    demo.add_argument("--n-layers", type=int, default=4)
    demo.add_argument("--n-heads", type=int, default=4)
    demo.add_argument("--views", type=int, default=8, choices=(1, 8), help="Dihedral views per patch.")
    demo.add_argument("--patch-size-um", type=float, default=112.0)
    demo.add_argument("--epochs", type=int, default=6)
    demo.add_argument("--warmup-epochs", type=int, default=1)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--lr", type=float, default=1e-3)
    demo.add_argument("--diffusion-steps", type=int, default=50)
    demo.add_argument("--sampling-steps", type=int, default=10, help="Reverse steps (≤ --diffusion-steps).")
    demo.add_argument("--n-samples", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--accelerator", default="auto")
    demo.add_argument("--overwrite", action="store_true", help="Replace the outputs of an earlier run in --out.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hinge-sc``."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        try:
            check_args(args)
        except UsageError as err:
            print(f"hinge-sc {args.command}: error: {err}", file=sys.stderr)
            raise SystemExit(USAGE_ERROR) from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        report = run_demo(args)
        import pandas as pd

        table = pd.DataFrame(report["metrics"]).set_index("section")
        print(f"\nHINGE demo: trained on {', '.join(report['train_sections'])} ({report['n_train_spots']} spots), "
              f"generated {', '.join(report['test_sections'])} ({report['n_test_spots']} spots), "
              f"{report['n_genes']} genes")
        print(table.to_string())
        print(f"timings (s): {report['timings_s']}")
        print(f"outputs in {Path(args.out).resolve()} (spatial_genes.png, section_metrics.csv, model/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
