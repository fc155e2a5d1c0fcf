"""Feature caches of ``hs.pp.histology_features(cache_dir=...)``: read, validate, write.

The features are ``.npy`` files named by fingerprint, read back (``allow_pickle=False``) only when their record of
the spots (names and order), their shape and their values fit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["cached_features", "read_cache", "spots_hash", "write_cache"]


def cached_features(
    cache_file: Path | None, obs_names: Sequence[str], views: int, compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """Read the features from ``cache_file`` when it fits these spots, else ``compute()`` them (and cache them)."""
    feats = read_cache(cache_file, obs_names, views) if cache_file is not None else None
    if feats is None:
        feats = compute()
        if cache_file is not None:
            from hinge_sc._files import writing_to

            with writing_to(cache_file.parent, argument="cache_dir"):
                write_cache(cache_file, feats, obs_names)
    return feats


def _values_hash(feats: np.ndarray) -> str:
    """SHA-256 of the features' bytes (float32, C order): a cache whose values changed on disk is not used."""
    return hashlib.sha256(np.ascontiguousarray(feats, dtype=np.float32).tobytes()).hexdigest()


def spots_hash(obs_names: Sequence[str]) -> str:
    """SHA-256 of the spot names in order."""
    return hashlib.sha256("\n".join(map(str, obs_names)).encode()).hexdigest()


def read_cache(cache_file: Path, obs_names: Sequence[str], views: int) -> np.ndarray | None:
    """Return the cached features if the file exists and fits these spots, else ``None``.

    A cache that does not fit (no record of its spots, another spot order, shape, or non-finite values) is ignored
    with a warning, and the features are recomputed and the cache rewritten.
    """
    if not cache_file.is_file():
        return None
    meta_file = cache_file.with_suffix(".json")
    problem = None
    try:
        feats = np.load(cache_file)
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    except (OSError, ValueError) as err:
        feats, meta, problem = None, None, f"it cannot be read ({err})"
    if problem is None and meta is None:
        problem = "it has no record of its spots"
    elif problem is None and meta.get("spots_sha256") != spots_hash(obs_names):
        problem = "it was written for other spots or another spot order"
    elif problem is None and (feats.ndim != 3 or feats.shape[:2] != (len(obs_names), views)):
        problem = f"its shape {feats.shape} does not fit {len(obs_names)} spots × {views} views"
    elif problem is None and not np.isfinite(feats).all():
        problem = "it has NaN or infinite values"
    elif problem is None and meta.get("values_sha256") not in (None, _values_hash(feats)):
        problem = "its values do not match the checksum recorded when it was written (the file is corrupt)"
    if problem is not None:
        warnings.warn(
            f"The cached features {cache_file} are not used: {problem}. They are recomputed and the cache is "
            "rewritten.",
            UserWarning,
            stacklevel=4,  # read_cache → _cached → histology_features → the caller
        )
        return None
    logger.info("Read the features from the cache %s.", cache_file)
    return feats


def write_cache(cache_file: Path, feats: np.ndarray, obs_names: Sequence[str]) -> None:
    """Write the features and, beside them, a record of their shape and of the spots' names and order."""
    from hinge_sc._files import write_atomic

    folder = cache_file.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"`cache_dir` {folder} is a file, not a folder; pass a folder for the feature cache.")
    folder.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to the temporary name
            np.save(fh, feats, allow_pickle=False)

    write_atomic(cache_file, save)
    record = {"shape": list(feats.shape), "n_spots": len(obs_names), "spots_sha256": spots_hash(obs_names),
              "values_sha256": _values_hash(feats)}  # fmt: skip
    write_atomic(cache_file.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(record)))
    logger.info("Cached the features in %s.", cache_file)
