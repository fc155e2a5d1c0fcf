"""Conversions between the AnnData Visium convention and SpatialData (image, spot circles, annotating table)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hinge_sc._deprecation import renamed_argument
from hinge_sc.pp._patches import DEFAULT_SECTION_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: obs columns of the tables written here: the shapes element of each row, and the row's circle in it.
REGION_KEY, INSTANCE_KEY = "region", "spot_id"


def _image_element(arr: Any, transformations: Mapping[str, Any], scale_factors: Sequence[int] | None) -> Any:
    from spatialdata.models import Image2DModel

    kind = type(arr).__name__
    if kind in ("DataArray", "DataTree"):
        return arr
    return Image2DModel.parse(
        arr, dims=("y", "x", "c"), c_coords=["r", "g", "b"][: arr.shape[-1]] if arr.shape[-1] == 3 else None,
        transformations=dict(transformations), scale_factors=list(scale_factors) if scale_factors else None,
    )  # fmt: skip


def _circles(xy: np.ndarray, diameter: float, transformations: Mapping[str, Any]) -> Any:
    from spatialdata.models import ShapesModel

    return ShapesModel.parse(
        np.asarray(xy, dtype=float), geometry=0, radius=np.full(len(xy), diameter / 2.0),
        index=pd.RangeIndex(len(xy)), transformations=dict(transformations),
    )  # fmt: skip


def _table(adata: AnnData, regions: np.ndarray, instances: np.ndarray, meta: Mapping[str, Any]) -> AnnData:
    from spatialdata.models import TableModel

    table = adata.copy()
    table.uns.pop("spatial", None)
    table.uns["spatial"] = {k: dict(v) for k, v in meta.items()}
    table.obs[REGION_KEY] = pd.Categorical(regions, categories=list(dict.fromkeys(regions)))
    table.obs[INSTANCE_KEY] = instances
    region = list(dict.fromkeys(regions))
    return TableModel.parse(table, region=region, region_key=REGION_KEY, instance_key=INSTANCE_KEY)


def spots_to_spatialdata(
    adata: AnnData,
    *,
    image: Any,
    section: str,
    scalefactors: Mapping[str, float],
    sdata: Any | None = None,
    table_key: str = "table",
) -> Any:
    """SpatialData with ``image`` (its own transformations, or identity to ``"global"``), spot circles and table.

    ``section`` names the shapes ``f"{section}_spots"`` and the image ``f"{section}_image"``.
    """
    from spatialdata import SpatialData
    from spatialdata.transformations import Identity, get_transformation

    kind = type(image).__name__
    transformations = get_transformation(image, get_all=True) if kind in ("DataArray", "DataTree") else None
    transformations = transformations or {"global": Identity()}
    shapes_key = f"{section}_spots"
    shapes = _circles(adata.obsm["spatial"], float(scalefactors["spot_diameter_fullres"]), transformations)
    meta = {shapes_key: {"scalefactors": dict(scalefactors)}}
    table = _table(adata, np.full(adata.n_obs, shapes_key), np.arange(adata.n_obs), meta)
    if sdata is not None:
        for kind_, key, store in (("table", table_key, sdata.tables), ("shapes", shapes_key, sdata.shapes)):
            if key in store:
                raise ValueError(f"The SpatialData object already has a {kind_} {key!r}; pass another `table_key` / "
                                 "`section`.")  # fmt: skip
        sdata.shapes[shapes_key] = shapes
        sdata.tables[table_key] = table
        return sdata
    element = _image_element(image, transformations, None)
    return SpatialData(images={f"{section}_image": element}, shapes={shapes_key: shapes}, tables={table_key: table})


def to_spatialdata(
    adata: AnnData,
    *,
    section_key: str | None = DEFAULT_SECTION_KEY,
    spatial_key: str = "spatial",
    image: Literal["auto", "fullres", "hires", "lowres"] = "auto",
    scale_factors: Sequence[int] | None = None,
    table_key: str = "table",
    library_key: str | None = None,
) -> Any:
    """Convert an AnnData in the scanpy/squidpy Visium convention to a SpatialData object.

    Per library: an image element ``f"{library}_image"``, the spots as circles ``f"{library}_spots"`` (centres and
    radius in full-resolution px) and one table annotating all of them (``obs["region"]``, ``obs["spot_id"]``).
    Each library gets its own coordinate system (``"global"`` when there is one library), in full-resolution px:
    a hires/lowres image carries a scale transformation of 1 / ``tissue_*_scalef``. The table keeps ``obs``,
    ``var``, ``X``, layers and ``obsm``; ``uns["spatial"][f"{library}_spots"]`` keeps the scale factors and
    metadata (without the images), so that µm/px and spot sizes stay known.

    Parameters
    ----------
    adata
        Spots with centres in ``obsm[spatial_key]`` (full-resolution px) and ``uns["spatial"]``.
    section_key
        Column of ``obs`` naming each spot's section (a key of ``uns["spatial"]``). The default column
        ``"section"`` is used when present; when it is absent and ``uns["spatial"]`` has exactly one library, all
        spots are that one section. ``None``: a single library (``uns["spatial"]`` must have exactly one).
    spatial_key
        Key of the spot centres in ``obsm``, shape (n_spots, 2), full-resolution px.
    image
        ``"fullres"``: the file in ``metadata["source_image_path"]`` (TIFFs stay lazy); ``"hires"`` / ``"lowres"``:
        the stored image; ``"auto"``: the full-resolution file when it exists, else hires, else lowres.
    scale_factors
        Downscaling factors of a multiscale image pyramid (e.g. ``[2, 4]``); ``None``: a single scale.
    table_key
        Name of the table.
    library_key
        Deprecated alias of ``section_key``.

    Returns
    -------
    :class:`spatialdata.SpatialData`.

    Raises
    ------
    ValueError
        If a library has no image of the requested kind or no ``spot_diameter_fullres``.

    Examples
    --------
    >>> sdata = hs.io.to_spatialdata(adata)
    >>> sdata.write("section.zarr")
    """
    from spatialdata import SpatialData
    from spatialdata.transformations import Identity, Scale

    from hinge_sc.pp._image import open_image_file
    from hinge_sc.pp._patches import _library, _sections

    section_key = renamed_argument("library_key", library_key, "section_key", section_key, default=DEFAULT_SECTION_KEY)
    if spatial_key not in adata.obsm:
        raise KeyError(f"`spatial_key={spatial_key!r}` is not in `adata.obsm`.")
    sections = _sections(adata, section_key)
    coords = np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2]
    images, shapes, meta = {}, {}, {}
    regions = np.empty(adata.n_obs, dtype=object)
    instances = np.zeros(adata.n_obs, dtype=np.int64)
    for lib_id, idx in sections:
        lib = _library(adata, lib_id)
        cs = "global" if len(sections) == 1 else lib_id
        sf = lib.get("scalefactors", {})
        if not sf.get("spot_diameter_fullres"):
            raise ValueError(f"Library {lib_id!r} has no `scalefactors['spot_diameter_fullres']`; set it (px).")
        source = lib.get("metadata", {}).get("source_image_path")
        kind = image
        if kind == "auto":
            kind = "fullres" if source and Path(source).is_file() else ("hires" if "hires" in lib.get("images", {})
                                                                         else "lowres")  # fmt: skip
        if kind == "fullres":
            if not (source and Path(source).is_file()):
                raise ValueError(
                    f"`image='fullres'`: library {lib_id!r} has no readable `metadata['source_image_path']`."
                )
            arr, transform = open_image_file(source).levels[0], Identity()
        else:
            if kind not in lib.get("images", {}) or f"tissue_{kind}_scalef" not in sf:
                raise ValueError(f"`image={image!r}`: library {lib_id!r} has no {kind!r} image with its scale factor.")
            arr, s = np.asarray(lib["images"][kind]), float(sf[f"tissue_{kind}_scalef"])
            transform = Scale([1 / s, 1 / s], axes=("y", "x"))
        if arr.ndim == 2:
            arr = arr[..., None]
        images[f"{lib_id}_image"] = _image_element(arr[..., :3], {cs: transform}, scale_factors)
        shapes_key = f"{lib_id}_spots"
        shapes[shapes_key] = _circles(coords[idx], float(sf["spot_diameter_fullres"]), {cs: Identity()})
        meta[shapes_key] = {k: v for k, v in lib.items() if k != "images"}
        regions[idx], instances[idx] = shapes_key, np.arange(len(idx))
    table = _table(adata, regions.astype(str), instances, meta)
    logger.info("Built a SpatialData object with %d libraries and %d spots.", len(sections), adata.n_obs)
    return SpatialData(images=images, shapes=shapes, tables={table_key: table})


def from_spatialdata(
    sdata: Any,
    *,
    table_key: str | None = None,
    image_key: str | Mapping[str, str] | None = None,
    shapes_key: str | Sequence[str] | None = None,
    microns_per_pixel: float | Mapping[str, float] | None = None,
    hires_max_side: int = 2000,
) -> AnnData:
    """Convert a SpatialData table (spots = shapes, with an image) to an AnnData in the Visium convention.

    Parameters
    ----------
    sdata
        SpatialData object with an image, shapes and a table annotating them.
    table_key, image_key, shapes_key
        The table, image (or dict region → image) and shapes; see :func:`hinge_sc.pp.extract_patches`.
    microns_per_pixel
        µm per image px (a float or a dict per region); default: the table's metadata or the Visium spot size.
    hires_max_side
        Longest side (px) of the ``"hires"`` thumbnail stored per region.

    Returns
    -------
    A copy of the table with ``obs["section"]`` (the region), ``obsm["spatial"]`` (centres in the image's level-0
    px) and ``uns["spatial"][region]`` with ``images["hires"]`` and ``scalefactors`` (``tissue_hires_scalef``,
    ``spot_diameter_fullres``, ``microns_per_pixel``). Patches cut from this AnnData come from the thumbnail:
    compute features on the SpatialData object itself for full resolution.

    Examples
    --------
    >>> adata = hs.io.from_spatialdata(sdata, table_key="table")
    """
    from hinge_sc.pp._spatialdata import get_table, spatialdata_groups

    _, table = get_table(sdata, table_key)
    groups = spatialdata_groups(sdata, table_key=table_key, image_key=image_key, shapes_key=shapes_key,
                                microns_per_pixel=microns_per_pixel)  # fmt: skip
    adata = table.copy()
    xy = np.zeros((adata.n_obs, 2))
    section = np.empty(adata.n_obs, dtype=object)
    spatial = {}
    for g in groups:
        img, _ = g.open(0, None)
        thumb, scale = img.thumbnail(hires_max_side)
        xy[g.obs_idx], section[g.obs_idx] = g.xy, g.section
        spatial[g.section] = {
            "images": {"hires": thumb},
            "scalefactors": {"tissue_hires_scalef": scale, "microns_per_pixel": g.microns_per_pixel,
                             **({"spot_diameter_fullres": g.spot_diameter_px} if g.spot_diameter_px else {})},
        }  # fmt: skip
    adata.obs["section"] = pd.Categorical(section.astype(str), categories=[g.section for g in groups])
    adata.obsm["spatial"] = xy
    adata.uns["spatial"] = spatial
    adata.uns.pop("spatialdata_attrs", None)
    return adata
