"""Files the package writes and reads: atomic writes, SHA-256 manifests, a JSON codec and safe tensor loading.

Nothing here unpickles: tensors are read with ``torch.load(..., weights_only=True)`` or safetensors, metadata
with :mod:`json`. A file that fails to load is named in the error, never with advice to disable these checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import torch

MANIFEST_FILE = "manifest.json"
_CHUNK = 2**20


class FileIntegrityError(ValueError):
    """A file is missing, truncated, corrupt or was changed after it was written."""


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def existing(paths: Sequence[Path]) -> list[Path]:
    """The paths of ``paths`` that exist."""
    return [p for p in paths if p.exists()]


def refuse_existing(paths: Sequence[Path], *, overwrite: bool) -> None:
    """Raise :class:`FileExistsError` listing every path of ``paths`` that exists, unless ``overwrite``."""
    found = existing(paths)
    if found and not overwrite:
        names = ", ".join(str(p) for p in found)
        raise FileExistsError(
            f"{len(found)} file(s) would be replaced: {names}. Pass `overwrite=True` to replace them."
        )


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` in one step.

    An interrupted write leaves ``path`` as it was (absent or the previous version), never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` (encoded with :func:`to_json`) as indented JSON, atomically."""
    text = json.dumps(to_json(obj), indent=1, allow_nan=True)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    """Read a file written by :func:`write_json` (decoded with :func:`from_json`)."""
    path = Path(path)
    try:
        return from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileIntegrityError(
            f"{path} could not be read as JSON ({err}); the file is truncated or corrupt."
        ) from err


# ---------------------------------------------------------------------------------------------------- JSON codec
def to_json(obj: Any) -> Any:
    """Encode plain data for JSON: numpy arrays and scalars, tuples, pandas DataFrames and Series.

    Arrays become ``{"__ndarray__": list, "dtype": str}`` and frames ``{"__dataframe__": {split orient}}``, so
    :func:`from_json` restores them. Anything else that JSON cannot hold raises :class:`TypeError`.
    """
    import pandas as pd

    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {"__ndarray__": [to_json(v) for v in obj.tolist()], "dtype": "object"}
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, pd.DataFrame):
        split = obj.to_dict(orient="split")
        return {"__dataframe__": {k: to_json(v) for k, v in split.items()}, "index_name": obj.index.name}
    if isinstance(obj, pd.Series | pd.Index):
        return to_json(np.asarray(obj))
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise TypeError(f"Cannot store dictionary keys that are not strings as JSON: {bad[:5]}.")
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    raise TypeError(f"Cannot store an object of type {type(obj).__name__} as JSON.")


def from_json(obj: Any) -> Any:
    """Decode what :func:`to_json` encoded."""
    import pandas as pd

    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__ndarray__" in obj:
        dtype = obj["dtype"]
        if dtype == "object":
            values = from_json(obj["__ndarray__"])
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            return arr
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(dtype))
    if "__dataframe__" in obj:
        split = {k: from_json(v) for k, v in obj["__dataframe__"].items()}
        frame = pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
        frame.index.name = obj.get("index_name")
        return frame
    return {k: from_json(v) for k, v in obj.items()}


# ---------------------------------------------------------------------------------------------------- manifests
def write_manifest(folder: str | Path, files: Sequence[str], *, meta: Mapping[str, Any]) -> Path:
    """Write ``manifest.json``: ``meta`` plus the size and SHA-256 of each of ``files`` (names in ``folder``)."""
    folder = Path(folder)
    entries = {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256(folder / name)} for name in files}
    return write_json(folder / MANIFEST_FILE, {**meta, "files": entries})


def verify_manifest(folder: str | Path, *, names: Sequence[str] | None = None) -> dict:
    """Read ``manifest.json`` and check every listed file (or only ``names``): present, same size and SHA-256.

    Returns
    -------
    The manifest.

    Raises
    ------
    FileIntegrityError
        Naming the first file that is missing, truncated or changed.
    """
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise FileIntegrityError(f"{folder / MANIFEST_FILE} has no `files` table; it is not a hinge_sc manifest.")
    for name, entry in manifest["files"].items():
        if names is not None and name not in names:
            continue
        path = folder / name
        if not path.is_file():
            raise FileIntegrityError(f"{path} is listed in {MANIFEST_FILE} but missing; copy the whole folder again.")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise FileIntegrityError(
                f"{path} has {size} bytes but {entry['bytes']} were written; the file is truncated or was replaced."
            )
        if sha256(path) != entry["sha256"]:
            raise FileIntegrityError(
                f"{path} does not match the SHA-256 recorded in {MANIFEST_FILE}; the file is corrupt or was changed "
                "after it was saved. Use an intact copy of the folder."
            )
    return manifest


# ---------------------------------------------------------------------------------------------------- tensors
def load_tensors(path: str | Path, *, map_location: str | torch.device = "cpu", what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Only tensors and plain containers load; a pickle that would build any other object (and so could run code) is
    refused before anything in it runs.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise FileIntegrityError(
            f"{path} holds objects other than tensors and plain data, which hinge_sc never loads (unpickling them "
            f"could run code). It is not a hinge_sc {what}, or it was written by an older version; see the "
            "changelog for how to convert a file you trust."
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError) as err:
        raise FileIntegrityError(
            f"{path} could not be read as a hinge_sc {what} ({type(err).__name__}); the file is truncated or corrupt."
        ) from None
