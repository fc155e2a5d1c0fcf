"""Provenance of the image features a model was trained on, and its check against the features of new data.

:meth:`HINGE.setup_anndata <hinge_sc.HINGE.setup_anndata>` records the settings that
:func:`hinge_sc.pp.histology_features` wrote to ``adata.uns[features_key]["params"]`` (encoder, feature width, patch
size in µm, µm/px, patch side in px, context) in the model's registry, so they are saved with the model.
:meth:`HINGE.generate <hinge_sc.HINGE.generate>` compares them with the record of the new data: another encoder or
feature width raises, other differences warn, and data without a record is not checked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hinge_sc._constants import FEATURE_PROVENANCE_KEY
from hinge_sc._validators import check_n_obs, check_positive_int
from hinge_sc.pp._spatialdata import resolve_table

if TYPE_CHECKING:
    from anndata import AnnData

#: Settings of ``uns[features_key]["params"]`` that are recorded.
_RECORDED = ("encoder", "n_features", "patch_size_um", "out_size", "views", "context", "context_k", "context_scale",
             "standardize")  # fmt: skip
#: Settings whose mismatch makes the features incomparable (raise); the others only warn.
_MUST_MATCH = ("encoder", "n_features", "standardize")
#: Compared settings that warn on a mismatch (``views`` only concerns training).
_SHOULD_MATCH = ("patch_size_um", "out_size", "context", "context_k", "context_scale")
#: Relative difference of µm/px beyond which the new slides count as another magnification.
MPP_TOLERANCE = 0.25


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and tuples turned into JSON-able Python types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def feature_provenance(adata: AnnData, features_key: str) -> dict[str, Any] | None:
    """Settings of ``adata.obsm[features_key]`` as recorded by :func:`hinge_sc.pp.histology_features`, or ``None``.

    Returns
    -------
    A JSON-able dict with the keys of ``_RECORDED`` that are present and ``microns_per_pixel`` (section → µm/px),
    or ``None`` when ``adata.uns[features_key]["params"]`` is absent (features computed elsewhere).
    """
    record = adata.uns.get(features_key)
    params = record.get("params") if isinstance(record, Mapping) else None
    if not isinstance(params, Mapping):
        return None
    out = {k: _plain(params[k]) for k in _RECORDED if k in params}
    mpp = params.get("microns_per_pixel")
    if isinstance(mpp, Mapping):
        out["microns_per_pixel"] = {str(k): float(v) for k, v in mpp.items()}
    return out


def _mpp_differs(trained: Mapping[str, float], new: Mapping[str, float]) -> bool:
    """Whether a µm/px of ``new`` lies outside the training range widened by :data:`MPP_TOLERANCE`."""
    if not trained or not new:
        return False
    lo, hi = min(trained.values()) * (1 - MPP_TOLERANCE), max(trained.values()) * (1 + MPP_TOLERANCE)
    return any(not lo <= v <= hi for v in new.values())


def _argument(recorded: Any) -> Any:
    """A recorded setting as the argument that gives it (``"none"`` is recorded for ``None``)."""
    return None if recorded == "none" else recorded


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def check_feature_provenance(trained: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *, key: str) -> None:
    """Compare the feature settings of the training data with those of new data.

    Raises
    ------
    ValueError
        If the encoder or the feature width differ.

    Warns
    -----
    UserWarning
        If the patch size, patch side in px, context settings or the magnification (µm/px beyond
        ±:data:`MPP_TOLERANCE` of the training range) differ.
    """
    if not trained or not new:
        return
    for name in _MUST_MATCH:
        if name in trained and name in new and not _same(trained[name], new[name]):
            raise ValueError(
                f"`adata.uns[{key!r}]['params'][{name!r}]` is {new[name]!r}, but the model was trained on features "
                f"with {name} {trained[name]!r}. Recompute the features of the new data with the training settings, "
                f"e.g. `hs.pp.histology_features(adata, encoder={trained.get('encoder')!r}, "
                f"patch_size_um={trained.get('patch_size_um')!r}, context={_argument(trained.get('context'))!r}, "
                f"standardize={_argument(trained.get('standardize'))!r}, key_added={key!r}, overwrite=True)`."
            )
    differ = [f"{n}: {new[n]!r} (trained on {trained[n]!r})" for n in _SHOULD_MATCH
              if n in trained and n in new and not _same(trained[n], new[n])]  # fmt: skip
    if _mpp_differs(trained.get("microns_per_pixel", {}), new.get("microns_per_pixel", {})):
        differ.append(f"microns_per_pixel: {new['microns_per_pixel']} (trained on {trained['microns_per_pixel']})")
    if differ:
        warnings.warn(
            f"The features `adata.obsm[{key!r}]` were computed with other settings than the model's training "
            f"features: {'; '.join(differ)}. Generation runs, but recompute them with the training settings for "
            "comparable results.",
            UserWarning,
            stacklevel=4,
        )


def check_generate_inputs(
    model: Any, adata: AnnData | Any | None, *, features_key: str | None, batch_size: Any
) -> None:
    """Checks at the top of :meth:`hinge_sc.HINGE.generate`: batch size, spots and the features' provenance."""
    check_positive_int(batch_size, argument="batch_size")
    table = resolve_table(type(model), model.adata if adata is None else adata)
    if table is None:
        return  # generate raises: a model loaded without data needs `adata`
    check_n_obs(table)
    key = features_key or model.registry_["setup_args"]["features_key"]
    check_feature_provenance(model.registry_.get(FEATURE_PROVENANCE_KEY), feature_provenance(table, key), key=key)
