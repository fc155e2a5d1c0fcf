"""``hinge-sc generate``: expression of every spot of a new slide, from its H&E alone, with a trained model.

INPUT is an H&E slide image (virtual spots are laid over its tissue: ``--spot-diameter-um``, ``--spacing-um``), a
Space Ranger ``outs/`` folder, an ``.h5ad`` or a SpatialData ``.zarr``. Features are computed with the settings the
model was trained with unless INPUT already has them. OUTPUT is an AnnData ``.h5ad`` (or SpatialData ``.zarr``) from
:func:`hinge_sc.tl.to_adata`: X = generated mean (spots × panel genes, on the model's scale, e.g. log2(count+1)),
``layers["std"]`` the s.d. over samples, the spots' coordinates and images carried over.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hinge_sc._constants import FEATURE_PROVENANCE_KEY

from ._common import (
    UsageError,
    add_slide_options,
    as_anndata,
    check_output,
    check_positive,
    check_slide_options,
    input_kind,
    quiet_scvi,
    read_input,
    write_output,
)
from ._features import compute_features

if TYPE_CHECKING:
    import argparse

logger = logging.getLogger("hinge_sc")


def add_parser(sub, formatter, parents=()) -> None:
    """The ``generate`` sub-command."""
    p = sub.add_parser(
        "generate", formatter_class=formatter, description=__doc__, parents=list(parents),
        help="Model folder + H&E slide, Visium folder, .h5ad or .zarr → generated expression (.h5ad/.zarr).",
    )  # fmt: skip
    p.add_argument("model", help="Model folder written by `hinge-sc train` (or HINGE.save).")
    p.add_argument("input", help="H&E slide image, Space Ranger outs/ folder, .h5ad or SpatialData .zarr.")
    p.add_argument("output", help="File to write: .h5ad (AnnData) or .zarr (SpatialData).")
    p.add_argument("--overwrite", action="store_true", help="Replace OUTPUT (and earlier results in INPUT's table).")
    g = p.add_argument_group("generation")
    g.add_argument("--n-samples", type=int, default=8, help="Samples per spot (mean and s.d. over them).")
    g.add_argument("--sampling-steps", type=int, default=None, help="Reverse steps (default: the model's T).")
    g.add_argument("--batch-size", type=int, default=64, help="Spots per batch.")
    g.add_argument("--seed", type=int, default=0, help="Sampler seed.")
    g.add_argument("--key-added", default="hinge", help="Key of the generated expression.")
    g.add_argument(
        "--library-size", default=None,
        help="Sequencing depth (UMI per spot) to generate at: a number, or `observed` (INPUT's total counts). "
        "Default: the training spots' median (recorded in the model).",
    )  # fmt: skip
    g.add_argument("--accelerator", default="auto", help="Lightning-style accelerator of the model (cpu, gpu, auto).")
    g.add_argument("--device", default="auto", help="Device of the model (auto, a GPU index, cuda:1, cpu).")
    f = p.add_argument_group("histology features (computed when INPUT has none, with the model's settings)")
    f.add_argument("--features-key", default=None, help="obsm key of the features (default: the model's).")
    f.add_argument("--encoder", default=None, help="Encoder (default: the one the model was trained with).")
    f.add_argument("--feature-batch-size", type=int, default=64, help="Patches per encoder batch.")
    f.add_argument("--table-key", default=None, help="SpatialData: the table of the spots.")
    add_slide_options(p)
    p.set_defaults(check=check, run=run)


def check(args: argparse.Namespace) -> None:
    """Check the arguments before any work."""
    from pathlib import Path

    check_positive(args, ("n_samples", "batch_size", "feature_batch_size"), integer=True)
    if args.sampling_steps is not None:
        check_positive(args, ("sampling_steps",), integer=True)
    if args.library_size is not None and args.library_size != "observed":
        try:
            args.library_size = float(args.library_size)
        except ValueError:
            raise UsageError(f"`--library-size` must be a number or `observed`, found {args.library_size!r}.") from None
        check_positive(args, ("library_size",), integer=False)
    args.kind = input_kind(args.input, "input")
    check_slide_options(args)
    if not (Path(args.model) / "manifest.json").is_file() and not (Path(args.model) / "model.json").is_file():
        raise UsageError(f"`model` {args.model} is not a model folder (no manifest.json); run `hinge-sc train`.")
    out = check_output(args.output, "output", overwrite=args.overwrite)
    if args.kind == "spatialdata" and out.name.lower().endswith(".h5ad"):
        logger.debug("A SpatialData input is written as the AnnData of its generated table.")


def _features(data: Any, model: Any, args: argparse.Namespace) -> str:
    """The features key, computing the features with the model's recorded settings when ``data`` lacks them."""
    setup = model.registry_["setup_args"]
    key = args.features_key or setup["features_key"]
    if key in as_anndata(data, args.table_key).obsm:
        return key
    record = model.registry_.get(FEATURE_PROVENANCE_KEY) or {}
    encoder = args.encoder or record.get("encoder")
    if encoder is None:
        raise UsageError(
            f"`input` {args.input} has no `obsm[{key!r}]` and the model does not record its encoder: pass `--encoder`."
        )
    feature_args = argparse_namespace(
        encoder=encoder, patch_size_um=float(record.get("patch_size_um", 112.0)), views=1, key_added=key,
        context=record.get("context", "none"), standardize=record.get("standardize", "none"),
        batch_size=args.feature_batch_size, device=None if args.device == "auto" else args.device, cache_dir=None,
        table_key=args.table_key, overwrite=args.overwrite, kind=args.kind, microns_per_pixel=args.microns_per_pixel,
    )  # fmt: skip
    logger.info("Computing %r features (%g µm patches) for the model", encoder, feature_args.patch_size_um)
    compute_features(data, feature_args)
    return key


def argparse_namespace(**kwargs: Any) -> argparse.Namespace:
    """An :class:`argparse.Namespace` of ``kwargs``."""
    import argparse

    return argparse.Namespace(**kwargs)


def run(args: argparse.Namespace) -> None:
    """Load the model, read the slide, compute features if needed, generate and write."""
    import hinge_sc as hs
    from hinge_sc.pp._spatialdata import is_spatialdata

    quiet_scvi()

    model = hs.HINGE.load(args.model, accelerator=args.accelerator, device=args.device)
    data = read_input(args.input, args.kind, args)
    key = _features(data, model, args)
    hs.tl.generate(
        model, data, table_key=args.table_key, features_key=key, n_samples=args.n_samples, n_steps=args.sampling_steps,
        key_added=args.key_added, overwrite=args.overwrite, seed=args.seed, batch_size=args.batch_size,
        library_size=args.library_size,
    )  # fmt: skip
    if args.output.lower().endswith(".zarr") and is_spatialdata(data):
        write_output(data, args.output)
        return
    write_output(hs.tl.to_adata(data, key=args.key_added), args.output)
