"""Input checks shared by the public functions. Each raises with a message that says what to do."""

from __future__ import annotations

import numbers
import warnings
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
    if arr.ndim > 1 and 0 in arr.shape[1:]:
        raise ValueError(
            f"`adata.obsm[{key!r}]` (`{argument}`) has shape {arr.shape}: zero features per spot; expected at least "
            "one. Recompute the features, e.g. `hs.pp.histology_features(adata)`, or pass the right key."
        )
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).reshape(arr.shape[0], -1).any(1).sum())
        raise ValueError(
            f"`adata.obsm[{key!r}]` (`{argument}`) has NaN or infinite values in {n_bad} spots. "
            "Recompute the features or drop those spots."
        )
    return arr


def check_features_informative(features: np.ndarray, key: str, *, argument: str) -> None:
    """Check training features ``(n_spots, D)``: raise if every column is constant, warn if there is one column.

    Parameters
    ----------
    features
        The features as returned by :func:`check_obsm` (2-D).
    key
        Their ``adata.obsm`` key (for the message).
    argument
        The argument that named ``key``.

    Raises
    ------
    ValueError
        Every feature has the same value in every spot (e.g. all zeros): the features carry no information.

    Warns
    -----
    UserWarning
        One feature per spot (anndata stores a 1-D array as one column): image encoders give tens to thousands.
    """
    if features.shape[0] > 1 and np.all(features.max(axis=0) == features.min(axis=0)):
        raise ValueError(
            f"`adata.obsm[{key!r}]` (`{argument}`) is constant: each of its {features.shape[1]} features has the "
            f"same value in all {features.shape[0]} spots (e.g. {float(features.flat[0]):.4g}), so the features "
            "carry no information about the spots. Recompute them, e.g. `hs.pp.histology_features(adata)`, or pass "
            "the right key."
        )
    if features.shape[1] == 1:
        warnings.warn(
            f"`adata.obsm[{key!r}]` (`{argument}`) has a single feature per spot (anndata stores a 1-D array as one "
            "column); image encoders give tens to thousands. Check that this is the feature matrix you meant.",
            UserWarning,
            stacklevel=3,
        )


def check_key_free(mapping: Mapping[str, Any], key: str, *, where: str, overwrite: bool) -> None:
    """Raise if ``key`` exists in ``mapping`` and ``overwrite`` is false."""
    if key in mapping and not overwrite:
        raise KeyError(
            f"`{where}[{key!r}]` already exists. Pass another `key_added` or `overwrite=True` to replace it."
        )


#: Largest value :func:`check_counts` accepts: no spot holds 10⁹ UMIs of one gene.
MAX_COUNT = 1e9


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
        If a value is NaN, infinite, negative or above :data:`MAX_COUNT` (10⁹), or not an integer while
        ``allow_non_integer`` is false.
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
    if data.size and data.max() > MAX_COUNT:
        raise ValueError(
            f"{where} has values up to {data.max():.3g}, above {MAX_COUNT:.0e}, more than any spot can hold as UMI "
            "counts (corrupt data, or values on another scale, e.g. intensities). HINGE needs raw counts: pass the "
            "layer with raw counts through `layer=`."
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


def _check_unique_names(names: pd.Index, *, where: str, what: str, fix: str) -> None:
    """Raise if ``names`` has duplicates: ``where`` has N duplicated ``what`` names, e.g. …; ``fix``."""
    dup = names[names.duplicated()]
    if len(dup):
        shown = list(dict.fromkeys(map(str, dup)))[:10]
        raise ValueError(f"`{where}` has {len(dup)} duplicated {what} names, e.g. {shown}; expected unique names. {fix}")


def check_unique_var_names(adata: AnnData, *, argument: str = "adata") -> None:
    """Raise if ``adata.var_names`` has duplicates (gene columns would be ambiguous)."""
    _check_unique_names(adata.var_names, where=f"{argument}.var_names", what="gene",
                        fix="Call `adata.var_names_make_unique()` (or aggregate the duplicates) first.")  # fmt: skip


def check_min_spots(adata: AnnData, minimum: int = 3, *, argument: str = "adata") -> None:
    """Raise if ``adata`` has fewer than ``minimum`` spots (too few to train on)."""
    if adata.n_obs < minimum:
        raise ValueError(
            f"`{argument}` has {adata.n_obs} spot(s); training needs at least {minimum} spots. Register the whole "
            "section(s), not a subset of a few spots (generation on new data needs no `setup_anndata`)."
        )


def check_unique_obs_names(adata: AnnData, *, argument: str = "adata") -> None:
    """Raise if ``adata.obs_names`` has duplicates (spots would be ambiguous, e.g. in saved predictions)."""
    _check_unique_names(adata.obs_names, where=f"{argument}.obs_names", what="spot",
                        fix="Call `adata.obs_names_make_unique()` first (e.g. after concatenating sections).")  # fmt: skip


def check_section_labels(adata: AnnData, section_key: str, *, argument: str = "section_key") -> None:
    """Raise if ``adata.obs[section_key]`` has missing (NaN) labels."""
    n_missing = int(adata.obs[section_key].isna().sum())
    if n_missing:
        raise ValueError(
            f"`adata.obs[{section_key!r}]` (`{argument}`) has {n_missing} of {adata.n_obs} spots without a section "
            "label (NaN); expected a section for every spot. Fill them in (e.g. "
            f"`adata.obs[{section_key!r}] = adata.obs[{section_key!r}].cat.add_categories('unknown').fillna('unknown')`"
            ") or drop those spots."
        )


def check_views_identity(
    features: np.ndarray, views: np.ndarray, *, features_key: str, views_key: str, rtol: float = 1e-3,
    atol: float = 1e-3,
) -> None:  # fmt: skip
    """Raise unless view 0 (the identity view) of ``views`` ``(n, V, D)`` equals ``features`` ``(n, D)``."""
    if not np.allclose(views[:, 0], features, rtol=rtol, atol=atol):
        diff = np.abs(views[:, 0] - features)
        n_bad = int((diff > atol + rtol * np.abs(features)).any(axis=1).sum())
        raise ValueError(
            f"The identity view `adata.obsm[{views_key!r}][:, 0]` (`views_key`) differs from the features "
            f"`adata.obsm[{features_key!r}]` (`features_key`) in {n_bad} spots (largest difference {diff.max():.3g}); "
            "expected the same values, as `hs.pp.histology_features` writes them. The views come from other features "
            "(another encoder, or the spots were reordered): recompute both, or pass `views_key=None`."
        )


def check_key_added(key: Any, *, argument: str = "key_added") -> None:
    """Raise unless ``key`` is a non-empty string without ``/`` (a valid AnnData / zarr / HDF5 key)."""
    if not isinstance(key, str):
        raise TypeError(f"`{argument}` must be a string, found {type(key).__name__} {key!r}. Pass e.g. `'hinge'`.")
    if not key.strip() or "/" in key:
        problem = "is empty" if not key.strip() else "contains '/'"
        raise ValueError(
            f"`{argument}={key!r}` {problem}; expected a non-empty name without '/' (keys with '/' cannot be "
            f"written to .h5ad or zarr). Pass e.g. `{argument}={(key.replace('/', '_').strip() or 'hinge')!r}`."
        )


def check_indices(indices: Any, n_obs: int, *, argument: str = "indices") -> np.ndarray:
    """Return ``indices`` as an integer array after checking that each is a position in 0 … ``n_obs`` − 1."""
    arr = np.asarray(indices)
    if arr.dtype == bool:
        if arr.shape != (n_obs,):
            raise IndexError(
                f"`{argument}` is a boolean mask of shape {arr.shape}; expected one entry per spot ({n_obs},)."
            )
        return np.flatnonzero(arr)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"`{argument}` must hold integer positions of spots, found dtype {arr.dtype}. To select by name, pass "
            f"`adata[names]` as `adata` instead."
        )
    arr = arr.astype(np.int64).ravel()
    bad = arr[(arr >= n_obs) | (arr < -n_obs)]
    if bad.size:
        raise IndexError(
            f"`{argument}` has {bad.size} position(s) out of range, e.g. {int(bad[0])}; the data has {n_obs} spots, "
            f"so positions must be in 0 … {n_obs - 1} (or −{n_obs} … −1)."
        )
    return arr


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
