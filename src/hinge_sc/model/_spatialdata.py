"""SpatialData support of :class:`~hinge_sc.HINGE`: the model works on the table that annotates the spots."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hinge_sc._validators import check_counts, check_n_obs
from hinge_sc.pp._spatialdata import get_table, is_spatialdata

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


logger = logging.getLogger(__name__)


def setup_spatialdata(
    cls: type,
    sdata: Any,
    *,
    table_key: str = "table",
    image_key: str | Mapping[str, str] | None = None,
    shapes_key: str | Sequence[str] | None = None,
    layer: str | None = None,
    features_key: str = "X_histology",
    views_key: str | None = "auto",
    section_key: str | None = None,
    histology_kwargs: Mapping[str, Any] | None = None,
    allow_non_integer: bool = False,
    **kwargs: Any,
) -> None:
    """Register the table of a SpatialData object, computing its histology features first if missing.

    See :meth:`hinge_sc.HINGE.setup_spatialdata`; ``allow_non_integer`` (also accepted by it through its
    ``**kwargs``) accepts non-negative non-integer counts, for corrected non-integer counts, e.g. ambient-RNA
    corrected, as in :meth:`hinge_sc.HINGE.setup_anndata`.
    """
    if not is_spatialdata(sdata):
        raise TypeError(
            f"`sdata` must be a SpatialData object, found {type(sdata).__name__}; use `setup_anndata` for an AnnData."
        )
    _, table = get_table(sdata, table_key)
    check_n_obs(table, argument=f"sdata.tables[{table_key!r}]")
    if layer is not None and layer not in table.layers:
        raise KeyError(
            f"`layer={layer!r}` is not in the layers of table {table_key!r} (available: {list(table.layers)})."
        )
    where = f"`sdata.tables[{table_key!r}].{'X' if layer is None else f'layers[{layer!r}]'}`"
    check_counts(table.X if layer is None else table.layers[layer], where=where, allow_non_integer=allow_non_integer)
    if features_key not in table.obsm:
        from hinge_sc.pp import histology_features

        opts = dict(histology_kwargs or {})
        histology_features(
            sdata, table_key=table_key, image_key=image_key, shapes_key=shapes_key, key_added=features_key, **opts
        )
        logger.info("Computed `obsm[%r]` of table %r from its image.", features_key, table_key)
    elif histology_kwargs:
        raise ValueError(
            f"`histology_kwargs` were given but table {table_key!r} already has `obsm[{features_key!r}]`, so no "
            "features are computed. Drop `histology_kwargs`, or recompute with `hs.pp.histology_features(..., "
            "overwrite=True)` first."
        )
    cls.setup_anndata(
        table, layer=layer, features_key=features_key, views_key=views_key, section_key=section_key,
        allow_non_integer=allow_non_integer, **kwargs,
    )  # fmt: skip
