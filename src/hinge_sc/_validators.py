"""Input checks shared by the public functions. Each raises with a message that says what to do."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import pandas as pd
    from anndata import AnnData


def check_obsm(adata: AnnData, key: str, *, argument: str, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    """Return ``adata.obsm[key]`` as a float array after checking presence, shape and finiteness."""
    if key not in adata.obsm:
        available = ", ".join(map(repr, adata.obsm.keys())) or "none"
        raise KeyError(
            f"`{argument}={key!r}` is not in `adata.obsm` (available: {available}). "
            "Compute image features first, e.g. `hs.pp.histology_features(adata)`, or pass the right key."
        )
    raw = np.asarray(adata.obsm[key])
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
        raise TypeError(
            f"`adata.obsm[{key!r}]` (`{argument}`) has dtype {raw.dtype}; expected numeric image features (float). "
            f"Store a float array, e.g. `adata.obsm[{key!r}] = np.asarray(values, dtype=np.float32)`, or recompute "
            "the features with `hs.pp.histology_features`."
        )
    arr = raw.astype(np.float32, copy=False)
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


def check_counts(x: Any, *, where: str, allow_non_integer: bool = False) -> None:
    """Check that a count matrix (dense or sparse) is finite, non-negative and, unless allowed, integer.

    Parameters
    ----------
    x
        Spots × genes counts, a numpy array or a scipy sparse matrix (only its stored values are read).
    where
        How the message names the matrix, e.g. ``"`adata.X`"``.
    allow_non_integer
        Accept non-negative non-integer values (corrected counts, e.g. ambient-RNA corrected).

    Raises
    ------
    ValueError
        If a value is NaN, infinite or negative, or not an integer while ``allow_non_integer`` is false.
    """
    data = x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else np.asarray(x)
    data = np.asarray(data).ravel()
    if data.size and not np.isfinite(data).all():
        raise ValueError(f"{where} has NaN or infinite values; HINGE needs raw counts.")
    if data.size and data.min() < 0:
        raise ValueError(
            f"{where} has negative values (min {data.min():.3g}); HINGE needs raw, non-negative counts. "
            "Pass the layer with raw counts through `layer=`."
        )
    if allow_non_integer or not data.size or not np.issubdtype(data.dtype, np.floating):
        return
    example = _first_non_integer(data)
    if example is not None:
        raise ValueError(
            f"{where} has non-integer values (e.g. {example:.4g}): these are not integer counts (log-normalised or "
            "scaled data?). HINGE needs raw counts: pass the layer with raw counts through `layer=`, or "
            "`allow_non_integer=True` for corrected non-integer counts (e.g. ambient-RNA corrected)."
        )


def _first_non_integer(data: np.ndarray, chunk: int = 1 << 22) -> float | None:
    """First value of the 1-D ``data`` that is not an integer, read in chunks to bound the memory used."""
    for start in range(0, data.size, chunk):
        part = data[start : start + chunk]
        bad = np.flatnonzero(part != np.round(part))
        if bad.size:
            return float(part[bad[0]])
    return None


def check_n_obs(adata: AnnData, *, argument: str = "adata") -> None:
    """Raise if ``adata`` has no spots (``n_obs == 0``)."""
    if adata.n_obs == 0:
        raise ValueError(
            f"`{argument}` has no spots (n_obs = 0, {adata.n_vars} genes); expected at least one. "
            "Check the subsetting that built it (e.g. a section name or a filter that matched nothing)."
        )


def check_unique_var_names(adata: AnnData, *, argument: str = "adata") -> None:
    """Raise if ``adata.var_names`` has duplicates (gene columns would be ambiguous)."""
    dup = adata.var_names[adata.var_names.duplicated()]
    if len(dup):
        shown = list(dict.fromkeys(map(str, dup)))[:10]
        raise ValueError(
            f"`{argument}.var_names` has {len(dup)} duplicated gene names, e.g. {shown}; expected unique names. "
            "Call `adata.var_names_make_unique()` (or aggregate the duplicates) first."
        )


def check_genes_given(genes: Sequence[str] | None, *, argument: str = "genes") -> None:
    """Raise if an explicit gene list is empty (``None`` means "all genes" and passes)."""
    if genes is not None and len(genes) == 0:
        raise ValueError(
            f"`{argument}` is empty: no genes given. Pass at least one gene symbol, or `{argument}=None` for all genes."
        )


def check_positive_int(value: Any, *, argument: str) -> None:
    """Raise unless ``value`` is an integer ≥ 1 (e.g. a batch size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{argument}` must be a positive integer, found {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"`{argument}` must be a positive integer (≥ 1), found {value}. Pass e.g. `{argument}=32`.")


def check_positive_finite(value: Any, *, argument: str, unit: str = "", example: float | None = None) -> float:
    """Return ``value`` as a float after checking that it is a finite number > 0 (e.g. a length in µm)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        found = f"{type(value).__name__} {value!r}"
        raise TypeError(f"`{argument}` must be a positive number{unit}, found {found}.") from None
    if not np.isfinite(number) or number <= 0:
        hint = f" Pass e.g. `{argument}={example}`." if example is not None else ""
        raise ValueError(f"`{argument}` must be a finite number > 0{unit}, found {value!r}.{hint}")
    return number


def check_trainer_kwargs(trainer_kwargs: Mapping[str, Any], reserved: Iterable[str], *, where: str) -> None:
    """Raise a TypeError naming the ``trainer_kwargs`` that ``where`` sets itself."""
    clash = sorted(set(trainer_kwargs) & set(reserved))
    if clash:
        raise TypeError(
            f"{where} sets the Trainer arguments {', '.join(f'`{k}`' for k in clash)} itself; found them in "
            "`**trainer_kwargs`. Remove them (use `show_progress_bar=`, `checkpoint_dir=` … instead)."
        )


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


# ---------------------------------------------------------------------------------------------------- sizes
class TooLargeError(ValueError):
    """An argument or a file implies an allocation larger than this machine can hold: refused before allocating."""


def available_memory() -> int:
    """Bytes this process may still allocate: free physical memory, bounded by ``RLIMIT_AS`` where one is set."""
    import os

    limit = 1 << 62
    try:
        limit = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            used = 0
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmSize:"):
                        used = int(line.split()[1]) * 1024
            limit = min(limit, max(soft - used, 0))
    except (ImportError, OSError, ValueError):
        pass
    return int(limit)


def format_bytes(n_bytes: float) -> str:
    """``n_bytes`` in B, KiB … PiB."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} PiB"


def check_allocation(n_bytes: float, *, what: str, fix: str) -> None:
    """Raise :class:`TooLargeError` when ``n_bytes`` (what ``what`` needs) exceeds the memory still available.

    Parameters
    ----------
    n_bytes
        Bytes the caller is about to allocate (an estimate of the largest array).
    what
        What needs them, with the sizes that imply them (e.g. ``"4,000 spots × 10⁹ samples × 200 genes"``).
    fix
        What the user can change (names the argument).
    """
    available = available_memory()
    if n_bytes > available:
        raise TooLargeError(
            f"{what} needs {format_bytes(n_bytes)}, more than the {format_bytes(available)} of memory available. "
            f"{fix}"
        )


def check_seed(seed: Any, *, argument: str = "seed") -> None:
    """Raise unless ``seed`` is ``None`` or an integer in 0 … 2⁶³ − 1 (not a bool, float or string)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`{argument}` must be an integer or None, found {type(seed).__name__} {seed!r}. Pass e.g. 0.")
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"`{argument}` must be in 0 … 2⁶³ − 1, found {seed}. Pass e.g. `{argument}=0`.")
