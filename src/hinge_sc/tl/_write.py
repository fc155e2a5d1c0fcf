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
