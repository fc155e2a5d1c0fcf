"""``hinge-sc demo``: train HINGE on real her2st sections, generate a held-out one, evaluate and plot.

Arguments and inputs are checked before any folder is created or any work is done. Without ``--data`` the
sections are downloaded from their public origin (or read from ``$HINGE_SC_DATA_DIR/her2st``), and the command says so.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hinge_sc._constants import DATA_DIR_ENV

from ._common import UsageError, add_recipe_options, check_file, check_positive, recipe_from_args

if TYPE_CHECKING:
    import argparse

logger = logging.getLogger("hinge_sc")

MARKERS = ("ERBB2", "GNAS", "KRT19", "FASN")
#: Files and folders a demo run writes into ``--out`` (besides ``generated_{section}.csv``).
OUTPUTS = ("model", "report.json", "section_metrics.csv", "per_gene_metrics.csv", "spatial_genes.png")


def _default_vocabulary(data: Path | None) -> Path | None:
    if data is None:
        return None
    candidate = data.parent / "vocab" / "cellfm" / "gene_info.csv"
    return candidate if candidate.is_file() else None


def _check_numbers(args: argparse.Namespace) -> None:
    positive = ("n_genes", "d_model", "n_layers", "n_heads", "diffusion_steps", "sampling_steps", "n_samples")
    check_positive(args, positive, integer=True)
    check_positive(args, ("patch_size_um",), integer=False)
    args.recipe_object = recipe_from_args(args)
    if args.sampling_steps > args.diffusion_steps:
        raise UsageError(
            f"`--sampling-steps` ({args.sampling_steps}) must be ≤ `--diffusion-steps` ({args.diffusion_steps}); "
            "lower it or raise `--diffusion-steps`."
        )
    if args.d_model % args.n_heads:
        raise UsageError(f"`--d-model` ({args.d_model}) must be a multiple of `--n-heads` ({args.n_heads}).")


def data_source(args: argparse.Namespace) -> Path | None:
    """The local her2st folder: ``--data``, else ``$HINGE_SC_DATA_DIR/her2st``; ``None``: download."""
    if args.data is not None:
        return Path(args.data)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) / "her2st" if env else None


def _check_data(args: argparse.Namespace) -> None:
    overlap = sorted(set(args.train) & set(args.test))
    if overlap:
        raise UsageError(f"`--test` sections {overlap} are also in `--train`; hold out sections not trained on.")
    check_file(args.backbone, "--backbone")
    check_file(args.vocabulary, "--vocabulary")
    data = data_source(args)
    if data is None:
        from hinge_sc.datasets._her2st import _IMAGE_FILES

        missing = sorted((set(args.train) | set(args.test)) - set(_IMAGE_FILES))
        if missing:
            raise UsageError(
                f"Sections {missing} of `--train`/`--test` have no H&E image the demo can download; use sections of "
                f"{sorted(_IMAGE_FILES)} or pass `--data` with a local copy."
            )
        return
    flag = "--data" if args.data is not None else f"${DATA_DIR_ENV}/her2st"
    if not data.is_dir():
        raise UsageError(f"`{flag}` {data} is not a folder; pass the her2st folder (with counts/, spots/, images/).")
    if not ((data / "counts").is_dir() and (data / "spots").is_dir()):
        raise UsageError(f"`{flag}` {data} does not look like the her2st data: expected counts/ and spots/ in it.")
    sections = dict.fromkeys([*args.train, *args.test])
    needed = {s: (f"counts/{s}.tsv.gz", f"spots/{s}_selection.tsv", f"images/{s}.jpg") for s in sections}
    missing = sorted(s for s, files in needed.items() if not all((data / f).is_file() for f in files))
    if missing:
        raise UsageError(
            f"Sections {missing} of `--train`/`--test` are not in `{flag}` {data} with counts, spots and an H&E "
            "image; see `hs.datasets.her2st_sections(path)` for those that are."
        )


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
    data = data_source(args)

    t0 = time.perf_counter()
    sections = list(dict.fromkeys([*args.train, *args.test]))
    if data is None:
        logger.info(
            "No `--data`: downloading her2st sections %s from github.com/almaan/her2st (once; cached in the user "
            "cache folder `hinge_sc/her2st`). Pass `--data` with a local copy to skip this.",
            ", ".join(sections),
        )
    elif args.data is None:
        logger.info("No `--data`: reading the her2st sections from $%s/her2st = %s.", DATA_DIR_ENV, data)
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
    model = hs.HINGE(train, backbone, genes=panel, diffusion_steps=args.diffusion_steps)
    model.train(recipe=args.recipe_object, accelerator=args.accelerator, seed=args.seed)
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


def add_parser(sub, formatter, parents=()) -> None:
    """The ``demo`` sub-command."""
    demo = sub.add_parser(
        "demo", formatter_class=formatter, description=__doc__, parents=list(parents),
        help="Train on her2st C2–C5, generate C6, print metrics, save a figure.",
    )  # fmt: skip
    demo.add_argument(
        "--data", default=None,
        help=f"Folder of the her2st data (counts/, spots/, images/). Default: ${DATA_DIR_ENV}/her2st when set, "
        "else the sections are downloaded once from github.com/almaan/her2st.",
    )  # fmt: skip
    demo.add_argument("--out", default="hinge_demo_output", help="Output folder.")
    demo.add_argument("--train", nargs="+", default=["C2", "C3", "C4", "C5"], help="Training sections.")
    demo.add_argument("--test", nargs="+", default=["C6"], help="Held-out sections to generate.")
    demo.add_argument("--n-genes", type=int, default=200, help="Panel size (HMHVG).")
    demo.add_argument("--vocabulary", default=None, help="Backbone vocabulary CSV (first column = symbols).")
    demo.add_argument(
        "--backbone", default=None, help="A saved hinge_sc Backbone (.pt) to use instead of a random one."
    )
    demo.add_argument("--d-model", type=int, default=64, help="Width of the random backbone.")
    demo.add_argument("--n-layers", type=int, default=4, help="Layers of the random backbone.")
    demo.add_argument("--n-heads", type=int, default=4, help="Heads of the random backbone.")
    demo.add_argument("--views", type=int, default=8, choices=(1, 8), help="Dihedral views per patch.")
    demo.add_argument("--patch-size-um", type=float, default=112.0, help="Side of the H&E patch under a spot, µm.")
    demo.add_argument("--diffusion-steps", type=int, default=50, help="Diffusion steps T of the model.")
    demo.add_argument("--sampling-steps", type=int, default=10, help="Reverse steps (≤ --diffusion-steps).")
    demo.add_argument("--n-samples", type=int, default=8, help="Samples per spot (mean, s.d. and intervals).")
    demo.add_argument("--seed", type=int, default=0, help="Seed of training and sampling.")
    demo.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto).")
    demo.add_argument("--overwrite", action="store_true", help="Replace the outputs of an earlier run in --out.")
    add_recipe_options(demo)
    demo.set_defaults(check=check_args, run=run)


def run(args: argparse.Namespace) -> None:
    """Run the demo and print its summary."""
    import pandas as pd

    report = run_demo(args)
    table = pd.DataFrame(report["metrics"]).set_index("section")
    print(f"\nHINGE demo: trained on {', '.join(report['train_sections'])} ({report['n_train_spots']} spots), "
          f"generated {', '.join(report['test_sections'])} ({report['n_test_spots']} spots), "
          f"{report['n_genes']} genes")  # fmt: skip
    print(table.to_string())
    print(f"timings (s): {report['timings_s']}")
    print(f"outputs in {Path(args.out).resolve()} (spatial_genes.png, section_metrics.csv, model/)")
