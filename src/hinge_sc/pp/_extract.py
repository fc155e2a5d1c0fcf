"""Spots grouped by image, for AnnData or SpatialData, and the patches cut around them (``hs.pp.extract_patches``).

The AnnData/SpatialData difference is resolved here, once: :func:`patch_groups` dispatches to
:func:`~hinge_sc.pp._patches.anndata_groups` or :func:`~hinge_sc.pp._spatialdata.spatialdata_groups`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._deprecation import renamed_argument
from .._validators import check_positive_finite
from ._image import PAD_VALUE
from ._patches import DEFAULT_SECTION_KEY, PatchGroup, anndata_groups, iter_patches
from ._spatialdata import is_spatialdata, spatialdata_groups

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData


def patch_groups(
    data: Any,
    *,
    section_key: str | None = DEFAULT_SECTION_KEY,
    spatial_key: str = "spatial",
    table_key: str | None = None,
    image_key: str | Mapping[str, str] | None = None,
    shapes_key: str | Sequence[str] | None = None,
    microns_per_pixel: float | Mapping[str, float] | None = None,
) -> list[PatchGroup]:
    """Spots grouped by image, for an AnnData (Visium convention) or a SpatialData object."""
    if is_spatialdata(data):
        return spatialdata_groups(
            data, table_key=table_key, image_key=image_key, shapes_key=shapes_key, microns_per_pixel=microns_per_pixel
        )
    return anndata_groups(data, section_key=section_key, spatial_key=spatial_key, microns_per_pixel=microns_per_pixel)


def extract_patches(
    data: AnnData | Any,
    *,
    patch_size_um: float = 112.0,
    microns_per_pixel: float | Mapping[str, float] | None = None,
    section_key: str | None = DEFAULT_SECTION_KEY,
    spatial_key: str = "spatial",
    table_key: str | None = None,
    image_key: str | Mapping[str, str] | None = None,
    shapes_key: str | Sequence[str] | None = None,
    out_size: int | None = 64,
    show_progress_bar: bool = True,
    library_key: str | None = None,
) -> np.ndarray:
    """Cut the H&E patch centred on each spot.

    The side of a patch is ``max(patch_size_um, spot diameter)`` µm, converted to pixels with the slide's µm/px
    (docs/method.md §2), then resized to ``out_size`` px (bicubic). Each image is opened once; dask-backed images
    (SpatialData elements, tiled TIFFs) are read lazily, crop by crop, from the coarsest pyramid level that still
    gives ``out_size`` px. Patches that extend past the image border are padded with white (255), never dropped;
    patches that are more than half padding are counted and warned about.

    For an AnnData (scanpy/squidpy Visium convention) the image is the file named in
    ``uns["spatial"][section]["metadata"]["source_image_path"]`` when it exists (a JPEG is decoded at 1/2, 1/4 or
    1/8 resolution when the resize allows it; a TIFF is read lazily), else the stored ``"hires"`` (or ``"lowres"``)
    image, with coordinates multiplied by its ``tissue_*_scalef``. For a SpatialData object, the spots are the
    shapes annotated by the table (circles: centre and radius; polygons: centroid), mapped into the image's pixels
    through their coordinate transformations.

    Parameters
    ----------
    data
        AnnData with spot centres in ``obsm[spatial_key]`` (full-resolution px) and images in ``uns["spatial"]``,
        or a SpatialData object with an image, a shapes element and a table annotating it.
    patch_size_um
        Side of the patch in µm (default 112 µm, i.e. 224 px at 0.5 µm/px).
    microns_per_pixel
        µm per full-resolution pixel (per image pixel for SpatialData), one float or a dict per section/region.
        Defaults to ``scalefactors["microns_per_pixel"]`` of the library, else, for 10x Visium,
        55 µm / ``scalefactors["spot_diameter_fullres"]``.
    section_key
        AnnData: column of ``obs`` naming each spot's section (a key of ``uns["spatial"]``). The default column
        ``"section"`` is used when present; when it is absent and ``uns["spatial"]`` has exactly one library, all
        spots are that one section. ``None``: a single library (``uns["spatial"]`` must have exactly one).
    spatial_key
        AnnData: key of ``obsm`` with the (x, y) spot centres in full-resolution pixels, shape (n_spots, 2).
    table_key
        SpatialData: the table whose rows are the spots (default: the only table).
    image_key
        SpatialData: the image element, or a dict region → image (default: the only image sharing a coordinate
        system with the shapes).
    shapes_key
        SpatialData: the shapes element(s) annotated by the table (default: the table's regions).
    out_size
        Side of the returned patches in px; ``None`` keeps the native size (of the image level read).
    show_progress_bar
        Show a progress bar over spots.
    library_key
        Deprecated alias of ``section_key``.

    Returns
    -------
    RGB patches, shape (n_spots, out_size, out_size, 3), uint8, in the order of the (table's) obs names.

    Raises
    ------
    ValueError
        If ``patch_size_um`` is not a finite number > 0, a section has no image or no µm/px, an image looks
        channel-first (C, H, W), spots lie outside their image, or image and shapes share no coordinate system.
    KeyError
        If ``section_key``, ``spatial_key``, ``table_key``, ``image_key`` or ``shapes_key`` is missing.

    Examples
    --------
    >>> patches = hs.pp.extract_patches(adata, patch_size_um=112, out_size=224)
    """
    section_key = renamed_argument("library_key", library_key, "section_key", section_key, default=DEFAULT_SECTION_KEY)
    check_positive_finite(patch_size_um, argument="patch_size_um", unit=" (µm)", example=112)
    groups = patch_groups(
        data, section_key=section_key, spatial_key=spatial_key, table_key=table_key, image_key=image_key,
        shapes_key=shapes_key, microns_per_pixel=microns_per_pixel,
    )  # fmt: skip
    n_obs = sum(len(g.obs_idx) for g in groups)
    if not n_obs:
        raise ValueError("`data` has no spots.")
    out = None
    for group, pos, patches in iter_patches(
        groups, patch_size_um=patch_size_um, out_size=out_size, show_progress_bar=show_progress_bar
    ):
        if out is None:
            out = np.full((n_obs, *patches.shape[1:]), PAD_VALUE, dtype=np.uint8)
        elif out.shape[1:] != patches.shape[1:]:
            raise ValueError(
                "Sections give patches of different native sizes; pass an integer `out_size` to resize them."
            )
        out[group.obs_idx[pos]] = patches
    return out
