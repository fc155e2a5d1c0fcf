"""Whole-slide images read with wsidata (the scverse pathology stack's slide layer), with the slide's µm/px.

A :class:`wsidata.WSIData` is a :class:`spatialdata.SpatialData`, so every hinge_sc function that takes SpatialData
takes it: :func:`hinge_sc.pp.tile_slide` lays virtual spots on it (shapes ``f"{section}_spots"`` and a table),
:func:`hinge_sc.pp.histology_features` computes the features of those spots from the slide's pyramid, read lazily
tile by tile, and :func:`hinge_sc.tl.generate` writes the generated expression to ``wsi.tables[key_added]`` (a
``TableModel`` annotating the spots; units and provenance in its ``uns["hinge_sc"]``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hinge_sc._validators import check_positive_finite

if TYPE_CHECKING:
    from wsidata import WSIData

logger = logging.getLogger(__name__)

#: The extra that installs the slide layer.
WSI_EXTRA = 'pip install "hinge_sc[wsi]"'


def import_wsidata() -> Any:
    """``import wsidata``, or an ImportError that names the extra to install."""
    try:
        import wsidata
    except ImportError as err:
        raise ImportError(f"Reading whole-slide images needs wsidata: {WSI_EXTRA}.") from err
    return wsidata


def read_wsi(
    path: str | os.PathLike,
    *,
    image_key: str = "wsi",
    microns_per_pixel: float | None = None,
    reader: str | None = None,
    store: str | os.PathLike | None = None,
) -> WSIData:
    """Open a whole-slide image (``.svs``, ``.ndpi``, ``.mrxs``, pyramidal ``.tiff`` … any format wsidata reads).

    Wraps :func:`wsidata.open_wsi` with the slide attached as a lazy, multiscale image element (pixels are read from
    the file on demand, never the whole slide at once) and checks that its pixel size is known.

    Parameters
    ----------
    path
        The slide file.
    image_key
        Name of the image element of the slide.
    microns_per_pixel
        µm per pixel of the full-resolution level; default: from the slide's metadata (e.g. Aperio ``MPP``, the TIFF
        resolution tags), which it overrides when given.
    reader
        wsidata's reader (``"openslide"``, ``"tiffslide"``, ``"bioformats"`` …; see ``wsidata.READERS``); default:
        chosen by wsidata.
    store
        wsidata's zarr store for what is added to the slide (spots, tables); default ``None``: kept in memory (write it
        with ``wsi.write(...)``).

    Returns
    -------
    :class:`wsidata.WSIData` (a SpatialData) with ``images[image_key]`` and ``wsi.properties.mpp`` set. Give it to
    :func:`hinge_sc.pp.tile_slide` (µm/px are taken from it), then :func:`hinge_sc.pp.histology_features` and
    :func:`hinge_sc.tl.generate`.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a file.
    ValueError
        The slide's metadata has no pixel size and ``microns_per_pixel`` is not given.
    ImportError
        wsidata is not installed (``pip install "hinge_sc[wsi]"``).

    Examples
    --------
    >>> wsi = hs.io.read_wsi("slide.svs")
    >>> hs.pp.tile_slide(wsi, spot_diameter_um=55, spacing_um=100)
    >>> hs.pp.histology_features(wsi)
    >>> hs.tl.generate(model, wsi, key_added="hinge")
    >>> wsi.tables["hinge"]                       # spots × genes, annotating the shapes "slide_spots"
    """
    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
        raise FileNotFoundError(f"`path={path!r}`: expected the file of a whole-slide image; no such file.")
    if microns_per_pixel is not None:
        check_positive_finite(microns_per_pixel, argument="microns_per_pixel", unit=" (µm/px)")
    wsidata = import_wsidata()
    wsi = wsidata.open_wsi(
        str(path), store=None if store is None else str(store), reader=reader, attach_images=True, image_key=image_key
    )
    if microns_per_pixel is not None:
        wsi.set_mpp(float(microns_per_pixel))
    mpp = wsi_microns_per_pixel(wsi)
    if mpp is None:
        raise ValueError(
            f"`path={str(path)!r}`: the slide's metadata has no pixel size (µm/px); pass `microns_per_pixel=` (e.g. "
            "0.25 at 40×, 0.5 at 20×)."
        )
    height, width = wsi.properties.shape
    logger.info("Opened %s: %d × %d px (h × w) at %.4g µm/px.", path, height, width, mpp)
    return wsi


def wsi_microns_per_pixel(obj: Any) -> float | None:
    """µm/px of the full-resolution level of a :class:`wsidata.WSIData` (``None`` for other objects or when unknown)."""
    mpp = getattr(getattr(obj, "properties", None), "mpp", None)
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        return None
    return mpp if mpp > 0 and mpp == mpp else None
