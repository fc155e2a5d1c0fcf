"""10x Visium output folders, read with squidpy, with the slide's µm/px recorded."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd

from hinge_sc.pp._patches import VISIUM_SPOT_DIAMETER_UM

if TYPE_CHECKING:
    import os

    from anndata import AnnData

logger = logging.getLogger(__name__)


def read_visium(
    path: str | os.PathLike,
    *,
    counts_file: str = "filtered_feature_bc_matrix.h5",
    library_id: str | None = None,
    source_image_path: str | os.PathLike | None = None,
    microns_per_pixel: float | None = None,
    as_spatialdata: bool = False,
) -> AnnData | Any:
    """Read a Space Ranger (10x Visium) output folder, recording the slide's µm/px.

    Wraps :func:`squidpy.read.visium` (counts, ``spatial/`` images, scale factors and spot positions).

    Parameters
    ----------
    path
        The Space Ranger ``outs/`` folder (with ``spatial/``).
    counts_file
        Count matrix in ``path``, e.g. ``"filtered_feature_bc_matrix.h5"``.
    library_id
        Name of the library (default: read from the count file).
    source_image_path
        The full-resolution H&E image given to Space Ranger; patches are then cut from it (else from the hires
        image, at lower resolution).
    microns_per_pixel
        µm per full-resolution px; default 55 µm / ``spot_diameter_fullres`` (Visium spots are 55 µm across).
    as_spatialdata
        Return a SpatialData object (:func:`hinge_sc.io.to_spatialdata`) instead of an AnnData.

    Returns
    -------
    AnnData with raw counts in ``X`` (unique gene symbols as ``var_names``, ids in ``var["gene_ids"]``),
    ``obs["section"]`` (the library id), ``obsm["spatial"]`` (full-resolution px) and ``uns["spatial"][library_id]``
    with ``images`` (hires, lowres), ``scalefactors`` (plus ``microns_per_pixel``) and ``metadata`` (plus
    ``microns_per_pixel_source``); or the SpatialData equivalent.

    Examples
    --------
    >>> adata = hs.io.read_visium("outs/", source_image_path="slide.tif")
    """
    from hinge_sc._third_party import import_squidpy

    sq = import_squidpy()

    adata = sq.read.visium(path, counts_file=counts_file, library_id=library_id, source_image_path=source_image_path)
    adata.var_names_make_unique()
    lib_id, lib = next(iter(adata.uns["spatial"].items()))
    scalefactors, metadata = lib.setdefault("scalefactors", {}), lib.setdefault("metadata", {})
    if microns_per_pixel is not None:
        scalefactors["microns_per_pixel"], metadata["microns_per_pixel_source"] = float(microns_per_pixel), "argument"
    elif scalefactors.get("spot_diameter_fullres"):
        mpp = VISIUM_SPOT_DIAMETER_UM / float(scalefactors["spot_diameter_fullres"])
        scalefactors["microns_per_pixel"], metadata["microns_per_pixel_source"] = mpp, "visium_spot_diameter"
    logger.info("Read %d spots × %d genes of Visium library %r.", adata.n_obs, adata.n_vars, lib_id)
    adata.obs["section"] = pd.Categorical([lib_id] * adata.n_obs)
    if as_spatialdata:
        from ._spatialdata import to_spatialdata

        return to_spatialdata(adata)
    return adata
