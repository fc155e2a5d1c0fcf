"""Input checks shared by the public functions. Each raises with a message that says what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anndata import AnnData


def check_obsm(adata: AnnData, key: str, *, argument: str, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    """Return ``adata.obsm[key]`` as a float array after checking presence, shape and finiteness."""
    if key not in adata.obsm:
        available = ", ".join(map(repr, adata.obsm.keys())) or "none"
        raise KeyError(
            f"`{argument}={key!r}` is not in `adata.obsm` (available: {available}). "
            "Compute image features first, e.g. `hs.pp.histology_features(adata)`, or pass the right key."
        )
    arr = np.asarray(adata.obsm[key], dtype=np.float32)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        raise ValueError(
            f"`adata.obsm[{key!r}]` (`{argument}`) must have {' or '.join(map(str, ndims))} dimensions, "
            f"found shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).reshape(arr.shape[0], -1).any(1).sum())
        raise ValueError(
            f"`adata.obsm[{key!r}]` (`{argument}`) has NaN or infinite values in {n_bad} spots. "
            "Recompute the features or drop those spots."
        )
    return arr


def check_key_free(mapping: Mapping[str, Any], key: str, *, where: str, overwrite: bool) -> None:
    """Raise if ``key`` exists in ``mapping`` and ``overwrite`` is false."""
    if key in mapping and not overwrite:
        raise KeyError(
            f"`{where}[{key!r}]` already exists. Pass another `key_added` or `overwrite=True` to replace it."
        )


def check_counts(x: Any, *, where: str) -> None:
    """Check that a count matrix (dense or sparse) is finite and non-negative."""
    data = x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else np.asarray(x)
    if data.size and not np.isfinite(data).all():
        raise ValueError(f"{where} has NaN or infinite values; HINGE needs raw counts.")
    if data.size and data.min() < 0:
        raise ValueError(
            f"{where} has negative values (min {data.min():.3g}); HINGE needs raw, non-negative counts. "
            "Pass the layer with raw counts through `layer=`."
        )


if TYPE_CHECKING:  # used by the helpers below
    from collections.abc import Iterable, Sequence

    import pandas as pd


def check_prediction_frame(adata: AnnData, key: str, *, argument: str = "key") -> pd.DataFrame:
    """Return the generated expression ``adata.obsm[key]`` (DataFrame, spots × genes) or raise."""
    import pandas as pd

    if key not in adata.obsm:
        available = ", ".join(map(repr, adata.obsm.keys())) or "none"
        raise KeyError(
            f"`{argument}={key!r}` is not in `adata.obsm` (available: {available}). Run `hs.tl.generate` first "
            f"(it writes the generated expression to `adata.obsm[{key!r}]`), or pass the right key."
        )
    frame = adata.obsm[key]
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"`adata.obsm[{key!r}]` must be a DataFrame (spots × genes) as written by `hs.tl.generate`, "
            f"found {type(frame).__name__}."
        )
    return frame


def check_genes(genes: Sequence[str], available: Iterable[str], *, argument: str, where: str) -> None:
    """Raise a KeyError listing the ``genes`` that are not in ``available``."""
    available = set(available)
    missing = [g for g in genes if g not in available]
    if missing:
        shown = ", ".join(map(repr, missing[:20])) + (f" … ({len(missing)} in all)" if len(missing) > 20 else "")
        raise KeyError(f"`{argument}` has genes missing from {where}: {shown}. Pass `{argument}=` without them.")
