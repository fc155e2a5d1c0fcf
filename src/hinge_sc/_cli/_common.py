"""What every ``hinge-sc`` command shares: user errors, logging, reading inputs and writing outputs."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from anndata import AnnData

logger = logging.getLogger("hinge_sc")

#: Exit status of a user error (as argparse's).
USAGE_ERROR = 2
#: Suffixes of H&E slide images read by :func:`hinge_sc.pp.tile_slide`.
IMAGE_SUFFIXES = (".tif", ".tiff", ".svs", ".btf", ".ndpi", ".jpg", ".jpeg", ".png")
#: Suffixes of the files the commands write.
OUTPUT_SUFFIXES = (".h5ad", ".zarr")


class UsageError(ValueError):
    """A wrong argument or input of the command line: reported in one line, without a traceback."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with the defaults of the options and the descriptions' line breaks kept."""


def configure_logging(verbose: bool = False) -> None:
    """One handler on stderr for hinge_sc's INFO lines (once, however often :func:`main` runs in a process).

    Lightning's ``lightning`` logger has its own handler; it stops propagating here so that its lines are not
    printed twice. Other libraries stay at WARNING (scvi-tools' "Generating sequential column names" and the like).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_hinge_sc_cli", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler._hinge_sc_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger("hinge_sc").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("lightning").propagate = False


def quiet_scvi() -> None:
    """scvi-tools at WARNING: no "Generating sequential column names" on stdout (it resets its level on import)."""
    import scvi

    scvi.settings.verbosity = logging.WARNING


def check_positive(args: argparse.Namespace, names: Iterable[str], *, integer: bool) -> None:
    """Raise :class:`UsageError` unless each ``args.<name>`` is a positive integer / a finite number > 0."""
    for name in names:
        value = getattr(args, name)
        flag = f"--{name.replace('_', '-')}"
        if integer and value < 1:
            raise UsageError(f"`{flag}` must be a positive integer, found {value}.")
        if not integer and (not math.isfinite(value) or value <= 0):
            raise UsageError(f"`{flag}` must be a finite number > 0, found {value}.")


def check_file(value: str | None, flag: str) -> None:
    """Raise :class:`UsageError` if the path given to ``flag`` is not a file."""
    if value is not None and not Path(value).is_file():
        raise UsageError(f"`{flag}` {value} is not a file.")


def input_kind(path: str | Path, flag: str = "input") -> str:
    """What ``path`` holds: ``"image"``, ``"h5ad"``, ``"anndata_zarr"``, ``"spatialdata"`` or ``"visium"``.

    Raises
    ------
    UsageError
        The path does not exist or is none of these.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"`{flag}` {path} does not exist.")
    name = path.name.lower()
    if path.is_file():
        if name.endswith(".h5ad"):
            return "h5ad"
        if name.endswith(IMAGE_SUFFIXES):
            return "image"
        raise UsageError(
            f"`{flag}` {path} is neither an H&E image ({', '.join(IMAGE_SUFFIXES)}) nor an AnnData `.h5ad` file."
        )
    if name.endswith(".zarr") or (path / "zarr.json").is_file() or (path / ".zgroup").is_file():
        return "anndata_zarr" if (path / "obs").is_dir() else "spatialdata"
    if (path / "spatial").is_dir():
        return "visium"
    raise UsageError(
        f"`{flag}` {path} is a folder but neither a Space Ranger `outs/` folder (with `spatial/`) nor a `.zarr` store."
    )


def read_input(path: str | Path, kind: str, args: argparse.Namespace) -> Any:
    """Read ``path`` of ``kind`` (see :func:`input_kind`) as AnnData or SpatialData.

    An H&E image is tiled into virtual spots (:func:`hinge_sc.pp.tile_slide`) with ``args.spot_diameter_um``,
    ``args.spacing_um``, ``args.microns_per_pixel`` and ``args.section``; a Visium folder is read with
    :func:`hinge_sc.io.read_visium` (``args.image`` as the full-resolution slide).
    """
    import hinge_sc as hs

    mpp = getattr(args, "microns_per_pixel", None)
    if kind in ("h5ad", "anndata_zarr", "spatialdata"):
        return _read_table_file(path, kind)
    if kind == "visium":
        return hs.io.read_visium(path, source_image_path=getattr(args, "image", None), microns_per_pixel=mpp)
    logger.info("Tiling %s into virtual spots (%g µm every %g µm)", path, args.spot_diameter_um, args.spacing_um)
    return hs.pp.tile_slide(
        path,
        spot_diameter_um=args.spot_diameter_um,
        spacing_um=args.spacing_um,
        microns_per_pixel=mpp,
        grid=args.grid,
        section=args.section,
    )


#: The output mark of files and folders the command line writes (see :func:`hinge_sc._files.mark_output`).
CLI_OUTPUT_KIND = "cli_output"
#: What a SpatialData ``.zarr`` written by the command line holds at its root.
SPATIALDATA_ENTRIES = ("images", "labels", "points", "shapes", "tables")


def _read_table_file(path: str | Path, kind: str) -> Any:
    """Read an ``.h5ad``, AnnData ``.zarr`` or SpatialData ``.zarr``; a file that is not one is a usage error."""
    import anndata as ad

    try:
        if kind == "h5ad":
            return ad.read_h5ad(path)
        if kind == "anndata_zarr":
            return ad.read_zarr(path)
        import spatialdata as sd

        return sd.read_zarr(path)
    except Exception as err:  # h5py, zarr and anndata raise OSError, KeyError, ValueError … on a damaged file
        what = {"h5ad": "an AnnData .h5ad", "anndata_zarr": "an AnnData .zarr", "spatialdata": "a SpatialData .zarr"}
        raise UsageError(
            f"`input` {path} could not be read as {what[kind]} ({type(err).__name__}: {err}); the file is damaged or "
            "not of that kind."
        ) from None


def check_output(path: str | Path, flag: str, *, overwrite: bool, folder: bool = False) -> Path:
    """Check before any work that ``path`` can be written: its suffix, and no earlier output without ``overwrite``.

    With ``overwrite``, an ``.h5ad`` / ``.zarr`` output is replaced only when hinge_sc wrote it (its output mark); a
    folder of other files, another program's store or a file hinge_sc did not write is refused, and nothing is
    deleted. A model folder (``folder=True``) is never deleted: saving replaces only the model's own files.
    """
    from hinge_sc._files import check_replaceable

    path = Path(path)
    if not folder and not path.name.lower().endswith(OUTPUT_SUFFIXES):
        raise UsageError(f"`{flag}` {path} must end in `.h5ad` (AnnData) or `.zarr` (SpatialData).")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"`{flag}` {path}: its parent {path.parent} is a file, not a folder; pass another path.")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"`{flag}` {path} exists and is not a folder; pass another path.")
    if path.exists() and (not folder or any(path.iterdir())) and not overwrite:
        raise UsageError(f"`{flag}` {path} already exists; pass `--overwrite` to replace it, or another path.")
    if not folder and path.exists():
        try:
            check_replaceable(path, argument=flag, kinds=(CLI_OUTPUT_KIND,), allowed=SPATIALDATA_ENTRIES)
        except FileExistsError as err:
            raise UsageError(str(err).replace("`overwrite`", "`--overwrite`")) from None
    writable = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not os.access(writable, os.W_OK | os.X_OK):
        raise UsageError(f"`{flag}` {path} cannot be written: {writable} is not writable for you; pass another path.")
    return path


def write_output(data: Any, path: str | Path) -> None:
    """Write AnnData to ``.h5ad`` / ``.zarr`` or SpatialData to ``.zarr``, marked as written by hinge_sc.

    An AnnData is converted to SpatialData for ``.zarr``. The data are written into a new temporary path beside
    ``path``, which then replaces ``path`` (checked by :func:`check_output`: only an earlier hinge_sc output is ever
    replaced).
    """
    import shutil
    import tempfile

    import hinge_sc as hs
    from hinge_sc._files import H5AD_MARKER_ATTR, mark_output, remove_output, writing_to
    from hinge_sc.pp._spatialdata import is_spatialdata

    path = Path(path)
    with writing_to(path, argument="output"):
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    tmp = scratch / path.name
    try:
        if path.name.lower().endswith(".h5ad"):
            import h5py

            adata = hs.io.from_spatialdata(data) if is_spatialdata(data) else data
            adata.write_h5ad(tmp)
            with h5py.File(tmp, "a") as f:
                f.attrs[H5AD_MARKER_ATTR] = CLI_OUTPUT_KIND
        else:
            sdata = data if is_spatialdata(data) else hs.io.to_spatialdata(data)
            sdata.write(tmp)
            mark_output(tmp, kind=CLI_OUTPUT_KIND)
        remove_output(path, argument="output", kinds=(CLI_OUTPUT_KIND,), allowed=SPATIALDATA_ENTRIES)
        tmp.rename(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("Wrote %s", path)


def as_anndata(data: Any, table_key: str | None = None) -> AnnData:
    """The spots table of ``data``: AnnData as is, SpatialData's table (``table_key`` or the only one)."""
    from hinge_sc.pp._spatialdata import get_table, is_spatialdata

    return get_table(data, table_key)[1] if is_spatialdata(data) else data


def add_slide_options(parser: argparse.ArgumentParser) -> None:
    """Options of an H&E slide image input (virtual spots) and of Visium folders."""
    group = parser.add_argument_group("H&E slide image or Visium folder input")
    group.add_argument(
        "--microns-per-pixel", type=float, default=None,
        help="µm per full-resolution pixel of the slide (default: from the TIFF metadata; for Visium 55 µm / "
        "spot_diameter_fullres; required for JPEG/PNG slides).",
    )  # fmt: skip
    group.add_argument("--spot-diameter-um", type=float, default=55.0, help="Diameter of a virtual spot, µm.")
    group.add_argument("--spacing-um", type=float, default=100.0, help="Centre-to-centre distance of the spots, µm.")
    group.add_argument("--grid", choices=("hex", "square"), default="hex", help="Lattice of the virtual spots.")
    group.add_argument("--section", default="slide", help="Name of the slide's section (library id).")
    group.add_argument("--image", default=None, help="Visium: the full-resolution H&E given to Space Ranger.")


def check_slide_options(args: argparse.Namespace) -> None:
    """Check the options of :func:`add_slide_options`."""
    check_positive(args, ("spot_diameter_um", "spacing_um"), integer=False)
    if args.microns_per_pixel is not None:
        check_positive(args, ("microns_per_pixel",), integer=False)
    check_file(args.image, "--image")
    tiff = str(args.input).lower().endswith((".tif", ".tiff", ".svs", ".btf", ".ndpi"))
    if getattr(args, "kind", None) == "image" and args.microns_per_pixel is None and not tiff:
        raise UsageError(
            f"`input` {args.input} records no µm/px: pass `--microns-per-pixel` (e.g. 0.25 at 40×, 0.5 at 20×)."
        )


#: The command-line options of the training recipe (flag → field of :class:`hinge_sc.model.TrainingRecipe`).
RECIPE_OPTIONS = {
    "epochs": ("max_epochs", int, "Most training epochs (early stopping on held-out sections ends sooner)."),
    "warmup_epochs": ("warmup_epochs", int, "Epochs of the warm-start curriculum."),
    "batch_size": ("batch_size", int, "Spots per minibatch."),
    "lr": ("lr", float, "Learning rate (AdamW); × lr_gamma at the recipe's milestones (fractions of --epochs)."),
    "validation": ("validation", str, "Held out for early stopping and the variance scale: section, spots or auto."),
    "validation_size": ("validation_size", float, "Fraction of the sections (or spots) held out."),
}


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """``--recipe`` and one override option per recipe field; every default is the recipe's (one definition)."""
    from hinge_sc.train._recipe import DEFAULT_RECIPE, RECIPES

    group = parser.add_argument_group("training recipe (defaults: hinge_sc.model.DEFAULT_RECIPE)")
    group.add_argument(
        "--recipe", choices=sorted(RECIPES), default="default",
        help="Preset: `default` (chosen on held-out her2st sections) or `paper` (the paper's 40 epochs at 1e-4).",
    )  # fmt: skip
    for dest, (field, kind, text) in RECIPE_OPTIONS.items():
        group.add_argument(
            f"--{dest.replace('_', '-')}", dest=dest, type=kind, default=argparse.SUPPRESS,
            choices=("auto", "section", "spots") if field == "validation" else None,
            help=f"{text} Default: the recipe's ({getattr(DEFAULT_RECIPE, field)!r} in `default`).",
        )  # fmt: skip


def recipe_from_args(args: argparse.Namespace):
    """The :class:`~hinge_sc.model.TrainingRecipe` of ``--recipe`` with the options given on the command line."""
    from hinge_sc.train._recipe import RECIPES

    changes = {field: getattr(args, dest) for dest, (field, _, _) in RECIPE_OPTIONS.items()
               if getattr(args, dest, None) is not None}  # fmt: skip
    try:
        return RECIPES[args.recipe].replace(**changes)
    except (TypeError, ValueError) as err:
        message = str(err)
        for dest, (field, _, _) in RECIPE_OPTIONS.items():
            flag = f"--{dest.replace('_', '-')}"
            message = message.replace(f"`{field}`", f"`{flag}`").replace(f"`{field}=", f"`{flag} ")
        raise UsageError(message) from None
