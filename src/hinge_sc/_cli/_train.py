"""``hinge-sc train``: train HINGE on spots with raw counts and histology features; write a model folder.

INPUT is an AnnData ``.h5ad`` (or AnnData ``.zarr``) or a SpatialData ``.zarr`` whose table holds raw counts and the
features of ``hinge-sc features``. The backbone is a CellFM checkpoint (``--cellfm`` with ``--vocabulary``), a saved
hinge_sc backbone (``--backbone``), or else a randomly initialised one (``--d-model``, ``--n-layers``,
``--n-heads`` or ``--shape``) over ``--vocabulary`` or the data's genes: that runs, but without the pre-trained prior.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import (
    UsageError,
    add_recipe_options,
    as_anndata,
    check_file,
    check_output,
    check_positive,
    input_kind,
    quiet_scvi,
    read_input,
    recipe_from_args,
)

if TYPE_CHECKING:
    import argparse

    from anndata import AnnData

logger = logging.getLogger("hinge_sc")


def add_parser(sub, formatter, parents=()) -> None:
    """The ``train`` sub-command."""
    p = sub.add_parser(
        "train", formatter_class=formatter, description=__doc__, parents=list(parents),
        help="AnnData/SpatialData with counts + features → trained model folder.",
    )  # fmt: skip
    p.add_argument("input", help=".h5ad or .zarr with raw counts and obsm[--features-key].")
    p.add_argument("model", help="Folder to write the model to.")
    p.add_argument("--overwrite", action="store_true", help="Replace the files of an earlier model in MODEL.")
    data = p.add_argument_group("data")
    data.add_argument("--features-key", default="X_histology", help="obsm key of the features.")
    data.add_argument(
        "--views-key", default=None,
        help="obsm key of the dihedral views (spots × views × features). Default: FEATURES_KEY_views when present.",
    )  # fmt: skip
    data.add_argument("--no-views", action="store_true", help="Train on the identity view only.")
    data.add_argument("--layer", default=None, help="Layer with the raw counts (default: X).")
    data.add_argument(
        "--section-key", default=None,
        help="obs column with each spot's section (default: `section` when present); sections are held out whole "
        "for validation.",
    )  # fmt: skip
    data.add_argument("--table-key", default=None, help="SpatialData: the table of the spots.")
    panel = p.add_argument_group("gene panel")
    panel.add_argument("--n-genes", type=int, default=200, help="Panel size (HMHVG genes of the training data).")
    panel.add_argument(
        "--include", nargs="+", default=None, metavar="GENE", help="Genes forced into the HMHVG panel, e.g. ERBB2."
    )
    panel.add_argument("--genes", default=None, help="Text file with the panel, one gene symbol a line (no HMHVG).")
    bb = p.add_argument_group("backbone (one of --cellfm, --backbone, or random)")
    bb.add_argument("--cellfm", default=None, help="CellFM MindSpore checkpoint (.ckpt); needs --vocabulary.")
    bb.add_argument("--backbone", default=None, help="A backbone saved with hs.Backbone.save (.pt).")
    bb.add_argument(
        "--vocabulary", default=None,
        help="Vocabulary CSV (first column = gene symbols), e.g. CellFM's gene_info.csv. Random backbone: default "
        "the data's genes.",
    )  # fmt: skip
    bb.add_argument("--d-model", type=int, default=64, help="Random backbone: width d.")
    bb.add_argument("--n-layers", type=int, default=4, help="Random backbone: layers L.")
    bb.add_argument("--n-heads", type=int, default=4, help="Random backbone: heads H.")
    bb.add_argument(
        "--shape",
        choices=("cellfm-80m", "cellfm-800m"),
        default=None,
        help="Random backbone with a published CellFM shape (overrides --d-model/--n-layers/--n-heads).",
    )
    tr = p.add_argument_group("training")
    tr.add_argument("--diffusion-steps", type=int, default=50, help="Diffusion steps T of the model.")
    tr.add_argument(
        "--likelihood", default="gaussian", choices=["gaussian", "mse", "nb"],
        help="What the model predicts per gene: gaussian (mean and variance; default), mse (the paper's point "
        "value) or nb (negative binomial on raw counts).",
    )  # fmt: skip
    tr.add_argument("--seed", type=int, default=0, help="Seed of the initialisation, split, masks and dropout.")
    tr.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto).")
    tr.add_argument("--no-progress-bar", action="store_true", help="No progress bar (per-epoch lines remain).")
    add_recipe_options(p)
    p.set_defaults(check=check, run=run)


def check(args: argparse.Namespace) -> None:
    """Check the arguments before any work."""
    check_positive(args, ("n_genes", "d_model", "n_layers", "n_heads", "diffusion_steps"), integer=True)
    args.recipe_object = recipe_from_args(args)
    if args.cellfm and args.backbone:
        raise UsageError("Pass one of `--cellfm` and `--backbone`, not both.")
    if args.cellfm and not args.vocabulary:
        raise UsageError("`--cellfm` needs `--vocabulary` (CellFM's gene_info.csv or expand_gene_info.csv).")
    if args.shape is None and args.d_model % args.n_heads:
        raise UsageError(f"`--d-model` ({args.d_model}) must be a multiple of `--n-heads` ({args.n_heads}).")
    for flag in ("cellfm", "backbone", "vocabulary", "genes"):
        check_file(getattr(args, flag), f"--{flag}")
    args.kind = input_kind(args.input, "input")
    if args.kind in ("image", "visium"):
        raise UsageError(
            f"`input` {args.input} is an {args.kind} input; `hinge-sc train` needs an .h5ad or .zarr with counts and "
            "features: run `hinge-sc features` on it first."
        )
    check_output(args.model, "model", overwrite=args.overwrite, folder=True)


def check_table(adata: AnnData, args: argparse.Namespace) -> str | None:
    """Raise :class:`UsageError` unless ``adata`` has counts and the features; return the views key to use."""
    if adata.n_vars == 0:
        raise UsageError(f"`input` {args.input} has no genes: training needs measured raw counts.")
    if args.features_key not in adata.obsm:
        raise UsageError(
            f"`input` {args.input} has no `obsm[{args.features_key!r}]`: run `hinge-sc features` on it first or pass "
            f"`--features-key` (found {sorted(adata.obsm)})."
        )
    if args.no_views:
        return None
    views = args.views_key or f"{args.features_key}_views"
    if views not in adata.obsm:
        if args.views_key:
            raise UsageError(f"`--views-key` {args.views_key!r} is not in `obsm` of {args.input}.")
        return None
    return views


def build_backbone(args: argparse.Namespace, adata: AnnData):
    """The backbone of ``--cellfm``, ``--backbone`` or a random one."""
    import hinge_sc as hs

    quiet_scvi()
    from hinge_sc.nn._cellfm import read_vocabulary

    if args.cellfm:
        return hs.Backbone.from_cellfm(args.cellfm, vocabulary=args.vocabulary)
    if args.backbone:
        return hs.Backbone.load(args.backbone)
    vocabulary = read_vocabulary(args.vocabulary) if args.vocabulary else list(adata.var_names)
    logger.warning(
        "Using a randomly initialised backbone over %d genes (%s): pass --cellfm or --backbone for the method's "
        "pre-trained prior.", len(vocabulary), args.vocabulary or "the data's genes",
    )  # fmt: skip
    return hs.Backbone.random(
        vocabulary, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, shape=args.shape,
        seed=args.seed,
    )  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """Read, choose the panel, train and save."""
    import hinge_sc as hs

    adata = as_anndata(read_input(args.input, args.kind, args), args.table_key)
    views_key = check_table(adata, args)
    section_key = args.section_key or ("section" if "section" in adata.obs else None)
    if section_key is not None and section_key not in adata.obs:
        raise UsageError(
            f"`--section-key` {section_key!r} is not a column of `obs` in {args.input} (found {sorted(adata.obs)})."
        )
    if section_key is None:
        logger.info("No `section` column in %s: spots are validated at random (pass `--section-key`).", args.input)
    backbone = build_backbone(args, adata)
    if args.genes:
        genes = [g.strip() for g in Path(args.genes).read_text().splitlines() if g.strip()]
    else:
        genes = hs.pp.select_genes(
            adata,
            n_genes=args.n_genes,
            layer=args.layer,
            section_key=section_key,
            vocabulary=backbone,
            include=args.include,
            overwrite=True,
        )
    hs.HINGE.setup_anndata(
        adata, layer=args.layer, features_key=args.features_key, views_key=views_key, section_key=section_key
    )
    model = hs.HINGE(adata, backbone, genes=genes, diffusion_steps=args.diffusion_steps, likelihood=args.likelihood,
                     seed=args.seed)
    model.train(recipe=args.recipe_object, accelerator=args.accelerator, seed=args.seed,
                show_progress_bar=not args.no_progress_bar)  # fmt: skip
    model.save(args.model, overwrite=args.overwrite)
    logger.info("Saved the model (%d genes, %d epochs) to %s", len(model.panel_genes_),
                model.train_params_["epochs_run"], args.model)  # fmt: skip
