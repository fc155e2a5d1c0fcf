"""H&E-only slides: tissue detection and a virtual spot grid, ready for features and generation."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._deprecation import renamed_argument
from .._validators import TooLargeError, check_positive_finite
from ._image import SlideImage, from_array, open_image_file, tiff_microns_per_pixel

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Most virtual spots one slide is tiled into (a 2 × 2 cm section at a 10 µm pitch is 4 million).
MAX_SPOTS = 5_000_000
#: Longest side (px) of the thumbnail on which tissue is detected.
MASK_MAX_SIDE = 2000


def detect_tissue(thumbnail: np.ndarray, *, min_saturation: float = 0.05, min_area: float = 1e-3) -> np.ndarray:
    """Tissue mask of an RGB thumbnail: saturated, non-white pixels (Otsu threshold), cleaned morphologically.

    Parameters
    ----------
    thumbnail
        RGB image, shape (H, W, 3), uint8.
    min_saturation
        Lowest saturation (HSV, 0–1) counted as stained whatever Otsu says (bare glass is grey-white).
    min_area
        Connected components and holes smaller than this fraction of the image are removed / filled.

    Returns
    -------
    Boolean mask, shape (H, W).
    """
    from scipy import ndimage
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    rgb = np.asarray(thumbnail)[..., :3]
    hsv = rgb2hsv(rgb)
    sat, val = hsv[..., 1], hsv[..., 2]
    thr = threshold_otsu(sat) if np.ptp(sat) > 1e-6 else 1.0
    mask = (sat > max(thr, min_saturation)) & (val > 0.1)  # drop black borders and pen marks
    mask = ndimage.binary_closing(mask, structure=np.ones((5, 5)), border_value=0)
    min_px = max(1, round(min_area * mask.size))
    for invert in (False, True):  # small objects, then small holes
        labels, n = ndimage.label(~mask if invert else mask)
        if n:
            small = np.flatnonzero(np.bincount(labels.ravel())[1:] < min_px) + 1
            mask[np.isin(labels, small)] = invert
    return mask


def _open(image: Any, image_key: str | None) -> tuple[SlideImage, str | None, Any]:
    """(slide, path or None, spatialdata image element or None)."""
    from ._spatialdata import is_spatialdata

    if isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise FileNotFoundError(f"`image={str(image)!r}` is not a file; pass the path of the H&E slide.")
        return open_image_file(image), str(Path(image).resolve()), None
    if is_spatialdata(image):
        keys = list(image.images)
        if image_key is None:
            if len(keys) != 1:
                raise ValueError(f"`image_key=None` needs exactly one image, found {keys}; pass `image_key=`.")
            image_key = keys[0]
        if image_key not in image.images:
            raise KeyError(f"`image_key={image_key!r}` is not an image of the SpatialData object ({keys}).")
        element = image.images[image_key]
        return from_array(element, source=f"sdata.images[{image_key!r}]"), None, element
    kind = type(image).__name__
    return from_array(image, source="image"), None, image if kind in ("DataArray", "DataTree") else None


def _grid(h: int, w: int, spacing_px: float, grid: str) -> tuple[np.ndarray, np.ndarray]:
    """Spot centres (n, 2) in px and their (row, col) indices, on a hexagonal or square lattice."""
    n_spots = (h / spacing_px + 1) * (w / spacing_px + 1) * (2 / np.sqrt(3) if grid == "hex" else 1.0)
    if n_spots > MAX_SPOTS:
        raise TooLargeError(
            f"A {grid} grid of pitch {spacing_px:.3g} px over a {w:,} × {h:,} px slide has ≈ {n_spots:,.0f} spots, more "
            f"than {MAX_SPOTS:,}. Pass a larger `spacing_um` (spots of 55 µm every 100 µm are Visium's) or check "
            "`microns_per_pixel`."
        )
    if grid == "hex":
        dy = spacing_px * np.sqrt(3) / 2
        rows = np.arange(spacing_px / 2, h, dy)
        pts = [(x, y, r, c) for r, y in enumerate(rows)
               for c, x in enumerate(np.arange(spacing_px / 2 + (r % 2) * spacing_px / 2, w, spacing_px))]  # fmt: skip
    else:
        pts = [(x, y, r, c) for r, y in enumerate(np.arange(spacing_px / 2, h, spacing_px))
               for c, x in enumerate(np.arange(spacing_px / 2, w, spacing_px))]  # fmt: skip
    arr = np.asarray(pts, dtype=float).reshape(-1, 4)
    return arr[:, :2], arr[:, 2:].astype(int)


def tile_slide(
    image: str | os.PathLike | np.ndarray | Any,
    *,
    image_key: str | None = None,
    spot_diameter_um: float = 55.0,
    spacing_um: float = 100.0,
    microns_per_pixel: float | None = None,
    grid: Literal["hex", "square"] = "hex",
    tissue_mask: np.ndarray | bool | None = None,
    section: str = "slide",
    table_key: str = "table",
    as_spatialdata: bool = False,
    library_id: str | None = None,
) -> AnnData | Any:
    """Lay a virtual spot grid over the tissue of an H&E-only slide (no sequencing).

    The spots (circles of ``spot_diameter_um`` on a lattice of pitch ``spacing_um``) are kept where their centre
    lies on tissue. The result is ready for :func:`hinge_sc.pp.histology_features` and :func:`hinge_sc.tl.generate`.
    The slide is never loaded whole when it is read lazily (a tiled TIFF, a dask array, a SpatialData image):
    tissue is detected on a thumbnail of at most 2,000 px, read from the coarsest pyramid level.

    Parameters
    ----------
    image
        Path of the slide (TIFF/SVS read lazily; JPEG/PNG decoded), an RGB array (H, W, 3) (numpy or dask),
        a spatialdata image (DataArray / multiscale DataTree), or a SpatialData object (then ``image_key``), e.g. a
        :class:`wsidata.WSIData` from :func:`hinge_sc.io.read_wsi` (its spots and table are added to it in place).
    image_key
        The image of a SpatialData ``image``.
    spot_diameter_um
        Diameter of a virtual spot, µm (55 µm = 10x Visium).
    spacing_um
        Centre-to-centre distance of the spots, µm (100 µm = Visium).
    microns_per_pixel
        µm per pixel of the full-resolution image; default: read from the TIFF metadata (Aperio ``MPP``, OME
        ``PhysicalSizeX`` or the resolution tags), or from a :class:`wsidata.WSIData` (:func:`hinge_sc.io.read_wsi`).
    grid
        ``"hex"`` (Visium-like) or ``"square"`` lattice.
    tissue_mask
        ``None``: detect tissue (:func:`detect_tissue`); ``False``: tile the whole image; or a boolean array of any
        resolution covering the whole image.
    section
        Name of the slide's section (the ``uns["spatial"]`` library, the ``obs["section"]`` value and the shapes
        element).
    table_key
        Table written into a SpatialData result.
    as_spatialdata
        Return a SpatialData object (forced for lazy arrays and SpatialData input, which an AnnData cannot hold).
    library_id
        Deprecated alias of ``section``.

    Returns
    -------
    An AnnData with no genes (spots × 0) in the Visium convention: ``obs["section"]``, ``obs["array_row"]``,
    ``obs["array_col"]``, ``obsm["spatial"]`` (centres, full-resolution px) and ``uns["spatial"][section]``
    (``images["hires"]``, ``scalefactors`` with ``tissue_hires_scalef``, ``spot_diameter_fullres`` and
    ``microns_per_pixel``, ``metadata["source_image_path"]`` for a file), plus ``uns["tissue_mask"]``; or a
    SpatialData object with the image, the shapes ``f"{section}_spots"`` (circles) and the table ``table_key``
    annotating them (a SpatialData input is modified in place and returned).

    Raises
    ------
    ValueError
        If the µm/px is unknown, the tissue mask is empty or has the wrong number of dimensions, or the table exists.

    Examples
    --------
    >>> adata = hs.pp.tile_slide("slide.svs", spot_diameter_um=55, spacing_um=100)
    >>> hs.pp.histology_features(adata)
    >>> hs.tl.generate(model, adata)
    """
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    from ._spatialdata import is_spatialdata

    section = renamed_argument("library_id", library_id, "section", section, default="slide")
    check_positive_finite(spot_diameter_um, argument="spot_diameter_um", unit=" (µm)")
    check_positive_finite(spacing_um, argument="spacing_um", unit=" (µm)")
    if microns_per_pixel is not None:
        check_positive_finite(microns_per_pixel, argument="microns_per_pixel", unit=" (µm/px)")
    if grid not in ("hex", "square"):
        raise ValueError(f"`grid` must be 'hex' or 'square', found {grid!r}.")
    slide, path, element = _open(image, image_key)
    mpp = microns_per_pixel
    if mpp is None and path is not None and path.lower().endswith((".tif", ".tiff", ".svs", ".btf")):
        mpp = tiff_microns_per_pixel(path)
    if mpp is None and is_spatialdata(image):
        from hinge_sc.io._wsi import wsi_microns_per_pixel

        mpp = wsi_microns_per_pixel(image)  # a wsidata.WSIData knows its slide's µm/px
    if mpp is None or not mpp > 0:
        raise ValueError(
            f"The µm/px of the slide is unknown{' (its TIFF metadata has none)' if path else ''}: pass "
            "`microns_per_pixel=` (e.g. 0.25 at 40×, 0.5 at 20×)."
        )
    h, w = slide.shape
    lazy = (slide.lazy and path is None) or element is not None  # pixels an AnnData cannot hold
    # the thumbnail is needed to detect tissue and as the AnnData's hires image of a slide file
    thumb, thumb_scale = slide.thumbnail(MASK_MAX_SIDE) if tissue_mask is None or path is not None else (None, 1.0)
    if tissue_mask is None:
        mask = detect_tissue(thumb)
    elif tissue_mask is False:
        mask = np.ones((min(h, MASK_MAX_SIDE), min(w, MASK_MAX_SIDE)), dtype=bool)
    else:
        mask = np.asarray(tissue_mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"`tissue_mask` must be a 2-D boolean array, found shape {mask.shape}.")
    if not mask.any():
        raise ValueError(
            "The tissue mask is empty: no tissue was found"
            f"{' by the automatic detection' if tissue_mask is None else ' in `tissue_mask`'}. Check the image, pass "
            "a mask through `tissue_mask=`, or `tissue_mask=False` to tile the whole image."
        )
    xy, rowcol = _grid(h, w, spacing_um / mpp, grid)
    mi = np.clip((xy[:, 1] * mask.shape[0] / h).astype(int), 0, mask.shape[0] - 1)
    mj = np.clip((xy[:, 0] * mask.shape[1] / w).astype(int), 0, mask.shape[1] - 1)
    keep = mask[mi, mj]
    if not keep.any():
        raise ValueError(
            f"No spot of the {spacing_um} µm grid falls on tissue; use a smaller `spacing_um` or check `tissue_mask`."
        )
    xy, rowcol = xy[keep], rowcol[keep]
    logger.info("%s: %d virtual spots on tissue (%.0f µm grid, %s).", section, len(xy), spacing_um, grid)
    names = pd.Index([f"{section}_{r}x{c}" for r, c in rowcol])
    obs = pd.DataFrame(
        {"section": pd.Categorical([section] * len(xy)), "array_row": rowcol[:, 0], "array_col": rowcol[:, 1]},
        index=names,
    )
    adata = ad.AnnData(sparse.csr_matrix((len(xy), 0), dtype=np.float32), obs=obs)
    adata.obsm["spatial"] = xy
    scalefactors = {"spot_diameter_fullres": spot_diameter_um / mpp, "microns_per_pixel": float(mpp)}
    if lazy or as_spatialdata:
        from hinge_sc.io._spatialdata import spots_to_spatialdata

        return spots_to_spatialdata(
            adata, image=element if element is not None else slide.levels[0], section=section,
            scalefactors=scalefactors, sdata=image if is_spatialdata(image) else None, table_key=table_key,
        )  # fmt: skip
    if path is not None:
        lib = {"images": {"hires": thumb}, "scalefactors": {**scalefactors, "tissue_hires_scalef": thumb_scale},
               "metadata": {"source_image_path": path}}  # fmt: skip
    else:
        lib = {"images": {"hires": slide.levels[0]}, "scalefactors": {**scalefactors, "tissue_hires_scalef": 1.0}}
    adata.uns["spatial"] = {section: lib}
    adata.uns["tissue_mask"] = mask
    return adata
