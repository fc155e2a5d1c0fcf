"""``hinge-sc features``: histology features of the spots of an H&E slide, a Visium folder or a SpatialData store.

INPUT is an H&E slide image (TIFF/SVS/JPEG/PNG: virtual spots are laid over its tissue), a Space Ranger ``outs/``
folder, an AnnData ``.h5ad`` in the Visium convention or a SpatialData ``.zarr``. OUTPUT (``.h5ad`` or ``.zarr``)
holds the spots with ``obsm[KEY]`` (spots × features) and, with ``--views 8``, ``obsm[KEY_views]``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .._constants import DEFAULT_CONTEXT, DEFAULT_STANDARDIZE
from ._common import (
    UsageError,
    add_slide_options,
    check_output,
    check_positive,
    check_slide_options,
    input_kind,
    read_input,
    write_output,
)

if TYPE_CHECKING:
    import argparse

logger = logging.getLogger("hinge_sc")


def add_parser(sub, formatter, parents=()) -> None:
    """The ``features`` sub-command."""
    p = sub.add_parser(
        "features", formatter_class=formatter, description=__doc__, parents=list(parents),
        help="H&E slide, Visium folder, .h5ad or SpatialData .zarr → histology features (.h5ad/.zarr).",
    )  # fmt: skip
    p.add_argument("input", help="H&E slide image, Space Ranger outs/ folder, .h5ad or SpatialData .zarr.")
    p.add_argument("output", help="File to write: .h5ad (AnnData) or .zarr (SpatialData).")
    add_feature_options(p)
    p.add_argument("--overwrite", action="store_true", help="Replace OUTPUT (and existing features in it).")
    add_slide_options(p)
    p.set_defaults(check=check, run=run)


def add_feature_options(p: argparse.ArgumentParser) -> None:
    """Options of :func:`hinge_sc.pp.histology_features` (shared with ``generate``)."""
    group = p.add_argument_group("histology features")
    group.add_argument(
        "--encoder", default="handcrafted",
        help="'handcrafted' (80 offline features) or a foundation model of hinge_sc.pp.ENCODERS (e.g. uni, conch); "
        "several joined by commas are concatenated.",
    )  # fmt: skip
    group.add_argument("--patch-size-um", type=float, default=112.0, help="Side of the H&E patch under a spot, µm.")
    group.add_argument("--views", type=int, choices=(1, 8), default=8, help="Dihedral views per patch.")
    group.add_argument(
        "--context", choices=("field", "knn", "none"), default=DEFAULT_CONTEXT,
        help="Spatial context appended to each spot's features: 'field' (a 3x larger patch, default), 'knn' (mean "
        "of the nearest spots) or 'none' (as in the paper).",
    )  # fmt: skip
    group.add_argument(
        "--standardize", choices=("section", "none"), default=DEFAULT_STANDARDIZE,
        help="'section' (default): standardise every feature within each section, from the section's own spots; "
        "'none': the encoder's raw output.",
    )  # fmt: skip
    group.add_argument("--key-added", default="X_histology", help="obsm key of the features.")
    group.add_argument("--batch-size", type=int, default=64, help="Patches per encoder batch.")
    group.add_argument("--device", default=None, help="Torch device of the encoder (default: cuda if available).")
    group.add_argument("--cache-dir", default=None, help="Folder to cache features in (reused when unchanged).")
    group.add_argument("--table-key", default=None, help="SpatialData: the table of the spots.")


def check(args: argparse.Namespace) -> None:
    """Check the arguments before any work."""
    check_positive(args, ("patch_size_um",), integer=False)
    check_positive(args, ("batch_size",), integer=True)
    args.kind = input_kind(args.input, "input")
    check_slide_options(args)
    out = check_output(args.output, "output", overwrite=args.overwrite)
    if args.kind == "spatialdata" and out.name.lower().endswith(".h5ad"):
        raise UsageError(f"`output` {out}: a SpatialData input is written as SpatialData; pass a `.zarr` path.")


def encoder_argument(value: str) -> str | list[str]:
    """``"uni,conch"`` → ``["uni", "conch"]``; one name stays a string."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names[0] if len(names) == 1 else names


def compute_features(data: Any, args: argparse.Namespace, **overrides: Any) -> None:
    """Run :func:`hinge_sc.pp.histology_features` on ``data`` with the options of :func:`add_feature_options`."""
    import hinge_sc as hs

    kwargs = {
        "encoder": encoder_argument(args.encoder),
        "patch_size_um": args.patch_size_um,
        "views": args.views,
        "context": None if args.context == "none" else args.context,
        "standardize": None if args.standardize == "none" else args.standardize,
        "key_added": args.key_added,
        "batch_size": args.batch_size,
        "device": args.device,
        "cache_dir": args.cache_dir,
        "table_key": args.table_key,
        "overwrite": args.overwrite,
    }
    if args.kind in ("h5ad", "anndata_zarr", "spatialdata") and args.microns_per_pixel is not None:
        kwargs["microns_per_pixel"] = args.microns_per_pixel  # tiled slides and Visium folders already record it
    hs.pp.histology_features(data, **{**kwargs, **overrides})


def run(args: argparse.Namespace) -> None:
    """Read, compute the features, write."""
    data = read_input(args.input, args.kind, args)
    compute_features(data, args)
    write_output(data, args.output)
