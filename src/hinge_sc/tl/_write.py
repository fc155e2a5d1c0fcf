"""The one writer of predictions into AnnData (and SpatialData tables): keys, overwrite, stale keys, params."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hinge_sc._validators import check_key_added, check_key_free

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anndata import AnnData

    from hinge_sc.model import Prediction

logger = logging.getLogger(__name__)

#: Suffixes of the companion keys written beside ``obsm[key_added]``.
COMPANIONS = ("_std", "_samples")


def prediction_keys(key_added: str) -> list[str]:
    """``obsm`` keys a prediction may occupy: the mean and its companions."""
    return [key_added, *(key_added + suffix for suffix in COMPANIONS)]


def prepare_target(
    data: Any,
    key_added: str,
    *,
    table_key: str | None = None,
    model_cls: type | None = None,
    overwrite: bool,
    copy: bool,
) -> AnnData:
    """Resolve the AnnData to write into and check, before any work, that its keys are free.

    Parameters
    ----------
    data
        AnnData, or a SpatialData object whose table holds the spots.
    key_added
        Prefix of the keys.
    table_key
        SpatialData: the table (default: the one registered with ``model_cls``, or the only one).
    model_cls
        Model class whose registered table is the default.
    overwrite
        Allow replacing existing keys (and remove stale companions).
    copy
        Return a copy of the AnnData to write into.

    Raises
    ------
    KeyError
        A key of the prediction (mean, ``_std``, ``_samples``, ``uns``) exists and ``overwrite`` is false.
    TypeError, ValueError
        ``key_added`` is not a string, is empty or contains ``/``.
    """
    from hinge_sc.pp._spatialdata import resolve_table

    check_key_added(key_added, argument="key_added")
    adata = resolve_table(model_cls, data, table_key, argument="adata")
    for key in prediction_keys(key_added):
        check_key_free(adata.obsm, key, where="adata.obsm", overwrite=overwrite)
    check_key_free(adata.uns, key_added, where="adata.uns", overwrite=overwrite)
    return adata.copy() if copy else adata


def write_prediction(
    adata: AnnData, prediction: Prediction, key_added: str, *, params: Mapping[str, Any], save_samples: bool
) -> list[str]:
    """Write ``prediction`` under ``key_added`` into an AnnData returned by :func:`prepare_target`.

    Companion keys of an earlier run that this prediction does not have are removed, so the mean, the spread and
    the samples always come from one run.

    Returns
    -------
    The ``obsm`` keys written: ``key_added`` (mean), ``f"{key_added}_std"`` when there is a spread and
    ``f"{key_added}_samples"`` with ``save_samples``; ``uns[key_added]["params"]`` holds ``params``.
    """
    values = {key_added: prediction.mean, f"{key_added}_std": prediction.std}
    if save_samples:
        values[f"{key_added}_samples"] = prediction.samples
    written = [k for k, v in values.items() if v is not None]
    for key in prediction_keys(key_added):
        if key not in written and key in adata.obsm:  # stale output of an earlier run
            del adata.obsm[key]
            logger.info("Removed the stale adata.obsm[%r] of an earlier run", key)
    for key in written:
        adata.obsm[key] = values[key]
        logger.info("Wrote adata.obsm[%r]", key)
    adata.uns[key_added] = {"params": dict(params)}
    logger.info("Wrote adata.uns[%r]", key_added)
    return written


def add_prediction(
    adata: AnnData,
    prediction: Prediction,
    *,
    key_added: str,
    params: Mapping[str, Any] | None = None,
    table_key: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Store a prediction made elsewhere (another tool, a hand-made baseline) the way :func:`generate` stores its own.

    :func:`hinge_sc.tl.evaluate`, :func:`hinge_sc.tl.compare` and the plots then read it exactly like a HINGE
    prediction, so every method is scored by one scorer.

    Parameters
    ----------
    adata
        AnnData (or SpatialData with a spot table) whose spots were predicted.
    prediction
        A :class:`hinge_sc.model.Prediction`: ``mean`` a spots × genes DataFrame indexed by ``adata.obs_names``
        (any order; rows are aligned to ``adata``), ``std`` like it or ``None``, ``samples`` ``(n_spots, S,
        n_genes)`` in the order of ``mean``'s rows or ``None``. Values are on the scale named in
        ``params["target_scale"]`` (default ``"log2p1"``, log2(count + 1)).
    key_added
        Writes ``obsm[key_added]`` (mean), ``obsm[f"{key_added}_std"]``, ``obsm[f"{key_added}_samples"]`` and
        ``uns[key_added]["params"]``.
    params
        Provenance recorded in ``uns[key_added]["params"]`` (e.g. ``{"method": "ridge", "target_scale": "log2p1"}``).
    table_key
        SpatialData: the table to write into.
    overwrite
        Replace existing keys.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    The modified copy with ``copy=True``, else ``None``.
    """
    import numpy as np
    import pandas as pd

    from hinge_sc.model import Prediction

    if not isinstance(prediction, Prediction):
        raise TypeError(
            f"prediction: expected a hinge_sc.model.Prediction, got {type(prediction).__name__}; build one with "
            "Prediction(mean=<spots × genes DataFrame>, std=..., samples=...)."
        )
    if not isinstance(prediction.mean, pd.DataFrame):
        raise TypeError(f"prediction.mean: expected a spots × genes DataFrame, got {type(prediction.mean).__name__}.")
    target = prepare_target(adata, key_added, table_key=table_key, overwrite=overwrite, copy=copy)
    mean = prediction.mean
    missing = target.obs_names.difference(mean.index)
    if len(missing) or mean.index.has_duplicates:
        raise ValueError(
            f"prediction.mean: expected one row for each of the {target.n_obs} spots of adata, found "
            f"{len(missing)} spot(s) without a row (e.g. {list(missing[:3])}) or duplicated row names; index the "
            "DataFrame by adata.obs_names."
        )
    order = mean.index.get_indexer(target.obs_names)
    std, samples = prediction.std, prediction.samples
    if std is not None and not (
        isinstance(std, pd.DataFrame) and std.index.equals(mean.index) and std.columns.equals(mean.columns)
    ):
        raise ValueError(
            f"prediction.std: expected a DataFrame with the rows and columns of mean {mean.shape}, or None; found "
            f"{type(std).__name__} {getattr(std, 'shape', '')}."
        )
    if samples is not None:
        samples = np.asarray(samples)
        if samples.ndim != 3 or samples.shape[0] != len(mean) or samples.shape[2] != mean.shape[1]:
            raise ValueError(
                f"prediction.samples: expected shape (n_spots={len(mean)}, S, n_genes={mean.shape[1]}), found "
                f"{samples.shape}."
            )
        samples = samples[order]
    aligned = Prediction(
        mean=mean.iloc[order],
        std=None if std is None else std.iloc[order],
        samples=samples,
        seed=prediction.seed,
    )
    record = {"target_scale": "log2p1", **dict(params or {})}
    write_prediction(target, aligned, key_added, params=record, save_samples=samples is not None)
    return target if copy else None
