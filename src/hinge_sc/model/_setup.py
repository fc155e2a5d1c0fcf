"""Registration of an AnnData for :class:`~hinge_sc.HINGE`: every input checked before scvi-tools registers it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, ObsmField

from hinge_sc._constants import FEATURE_PROVENANCE_KEY, REGISTRY_KEYS
from hinge_sc._random import global_numpy_rng_kept
from hinge_sc._validators import (
    check_counts,
    check_features_informative,
    check_min_spots,
    check_n_obs,
    check_obsm,
    check_section_labels,
    check_unique_obs_names,
    check_unique_var_names,
    check_views_identity,
)

from hinge_sc.pp._spatialdata import get_table, is_spatialdata

from ._feature_provenance import feature_provenance

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)


def register_anndata(
    cls: Any,
    adata: AnnData,
    setup_method_args: dict,
    *,
    layer: str | None,
    features_key: str,
    views_key: str | None,
    section_key: str | None,
    allow_non_integer: bool,
    **kwargs: Any,
) -> None:
    """Check ``adata`` (see :meth:`hinge_sc.HINGE.setup_anndata` for what is checked) and register it for ``cls``."""
    check_n_obs(adata)
    check_min_spots(adata)
    check_unique_obs_names(adata)
    check_unique_var_names(adata)
    features = check_obsm(adata, features_key, argument="features_key", ndim=2)
    check_features_informative(features, features_key, argument="features_key")
    if views_key is not None:
        views = check_obsm(adata, views_key, argument="views_key", ndim=3)
        if views.shape[2] != features.shape[1]:
            raise ValueError(
                f"`adata.obsm[{views_key!r}]` has views of width {views.shape[2]}, but the features "
                f"`adata.obsm[{features_key!r}]` have width {features.shape[1]}; both must come from one encoder."
            )
        check_views_identity(features, views, features_key=features_key, views_key=views_key)
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"`layer={layer!r}` is not in `adata.layers` (available: {list(adata.layers)}).")
    if section_key is not None and section_key not in adata.obs:
        raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`.")
    if section_key is not None:
        check_section_labels(adata, section_key)
    check_counts(
        adata.X if layer is None else adata.layers[layer],
        where=f"`adata.{'X' if layer is None else f'layers[{layer!r}]'}`",
        allow_non_integer=allow_non_integer,
    )
    fields = [
        LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=not allow_non_integer),
        ObsmField(REGISTRY_KEYS.FEATURES_KEY, features_key),
    ]
    if views_key is not None:
        fields.append(ObsmField(REGISTRY_KEYS.VIEWS_KEY, views_key))
    adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
    with global_numpy_rng_kept():  # hinge_sc leaves global RNGs alone; scvi-tools' count check samples from it
        adata_manager.register_fields(adata, **kwargs)
    adata_manager.registry[FEATURE_PROVENANCE_KEY] = feature_provenance(adata, features_key)
    cls.register_manager(adata_manager)



def resolve_views_key(adata: AnnData, features_key: str, views_key: str | None) -> str | None:
    """``views_key="auto"`` → ``f"{features_key}_views"`` if ``adata.obsm`` has it (logged), else ``None``."""
    if views_key != "auto":
        return views_key
    candidate = f"{features_key}_views"
    if candidate in adata.obsm:
        logger.info("Registering the augmented views `adata.obsm[%r]` (views_key=None turns them off)", candidate)
        return candidate
    return None


class SetupMixin:
    """``setup_anndata`` and ``setup_spatialdata`` of :class:`~hinge_sc.HINGE` (scvi-tools' registration)."""

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        features_key: str = "X_histology",
        views_key: str | None = "auto",
        section_key: str | None = None,
        allow_non_integer: bool = False,
        **kwargs,
    ) -> None:
        """Register raw counts and image features of ``adata``.

        The settings of the features (encoder, width, patch size in µm, µm/px, context), as recorded by
        :func:`hinge_sc.pp.histology_features` in ``adata.uns[features_key]["params"]``, are kept in the registry
        and saved with the model; :meth:`generate` checks new data against them.

        Parameters
        ----------
        adata
            Spots × genes.
        layer
            Layer with raw counts; ``None`` uses ``adata.X``.
        features_key
            ``adata.obsm`` key of the image features, ``(n_spots, D)``.
        views_key
            ``adata.obsm`` key of augmented views, ``(n_spots, V, D)``; each view is a training sample with the
            spot's expression as target (docs/method.md). ``"auto"`` (default): ``f"{features_key}_views"`` when
            present, as written by :func:`hinge_sc.pp.histology_features` (logged), else no views; ``None``: no
            views even if present. The resolved key is recorded in :attr:`setup_args`.
        section_key
            Optional ``adata.obs`` column with the tissue section of each spot (recorded in the setup arguments;
            nothing is written into ``adata.obs``).
        allow_non_integer
            Accept non-negative non-integer counts: for corrected non-integer counts, e.g. ambient-RNA corrected.

        Raises
        ------
        KeyError
            A key is missing.
        TypeError
            Features of a non-numeric (object) dtype.
        ValueError
            Fewer than 3 spots, duplicated ``obs_names`` or ``var_names``, features with NaNs, the wrong shape, zero
            width or the same value in every spot, views whose identity view ``views[:, 0]`` is not the features,
            spots without a section label (NaN in ``obs[section_key]``), or counts that are negative, not finite,
            above 10⁹ or (unless ``allow_non_integer``) not integers.

        Warns
        -----
        UserWarning
            The features have a single column.
        """
        views_key = resolve_views_key(adata, features_key, views_key)
        setup_method_args = cls._get_setup_method_args(**locals())
        register_anndata(cls, adata, setup_method_args, layer=layer, features_key=features_key, views_key=views_key,
                         section_key=section_key, allow_non_integer=allow_non_integer, **kwargs)  # fmt: skip

    @classmethod
    def setup_spatialdata(
        cls,
        sdata: SpatialData,
        table_key: str = "table",
        image_key: str | Mapping[str, str] | None = None,
        shapes_key: str | Sequence[str] | None = None,
        layer: str | None = None,
        features_key: str = "X_histology",
        views_key: str | None = "auto",
        section_key: str | None = None,
        histology_kwargs: Mapping | None = None,
        allow_non_integer: bool = False,
        **kwargs,
    ) -> None:
        """Register the table of a SpatialData object (spots = shapes annotated by the table).

        If the table has no ``obsm[features_key]``, the features are computed first from the image with
        :func:`hinge_sc.pp.histology_features` (``histology_kwargs`` are passed to it; with its default 8 views,
        ``views_key="auto"`` registers ``f"{features_key}_views"``). Then the table is registered as by
        :meth:`setup_anndata`, so that ``HINGE(sdata, ...)``, :meth:`train` and ``hs.tl.generate(model, sdata)``
        work on it and write their results into it.

        Parameters
        ----------
        sdata
            SpatialData object with an image, a shapes element of spots and a table annotating it.
        table_key
            The table whose rows are the spots (counts in ``X`` or ``layers[layer]``).
        image_key, shapes_key
            The image (or a dict region → image) and shapes element(s); default: inferred, see
            :func:`hinge_sc.pp.extract_patches`.
        layer
            Layer of the table with raw counts; ``None`` uses ``X``.
        features_key
            ``obsm`` key of the image features, ``(n_spots, D)``.
        views_key
            ``obsm`` key of augmented views, ``(n_spots, V, D)``; ``"auto"``: ``f"{features_key}_views"`` when
            present; ``None``: none (see :meth:`setup_anndata`).
        section_key
            Optional ``obs`` column with the tissue section of each spot.
        histology_kwargs
            Arguments of :func:`hinge_sc.pp.histology_features` (``encoder``, ``patch_size_um``, ``views`` …), used
            only when the features are computed here.
        allow_non_integer
            Accept non-negative non-integer counts (corrected counts, e.g. ambient-RNA corrected).

        Raises
        ------
        TypeError
            ``sdata`` is not a SpatialData object.
        KeyError, ValueError
            As :meth:`setup_anndata` and :func:`hinge_sc.pp.histology_features`.

        Examples
        --------
        >>> hs.HINGE.setup_spatialdata(sdata, table_key="table", histology_kwargs={"encoder": "handcrafted"})
        >>> model = hs.HINGE(sdata, backbone)
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
