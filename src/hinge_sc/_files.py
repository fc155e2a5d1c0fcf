"""Files the package writes and reads: atomic writes, SHA-256 manifests, a JSON codec and safe tensor loading.

Nothing here unpickles: tensors are read with ``torch.load(..., weights_only=True)`` or safetensors, metadata
with :mod:`json`. A file that fails to load is named in the error, never with advice to disable these checks.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` in one step.

    An interrupted write leaves ``path`` as it was (absent or the previous version), never half-written. The file
    gets the permissions an ordinary ``open`` would give it (``0o666`` less the umask; ``mkstemp`` alone would make it
    private), and temporary files that an earlier, killed write of the same ``path`` left behind are removed once
    this write has succeeded.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the path of a file to write (e.g. {path / 'model.json'}).")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"{path.parent} is a file, so {path} cannot be written in it; pass another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
        for stale in path.parent.glob(f"{glob.escape(_tmp_prefix(path))}*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class OutputNotWritableError(PermissionError):
    """The operating system refused to write an output (permissions, a read-only disk); the message names the
    argument and the path."""


@contextlib.contextmanager
def writing_to(path: str | Path, *, argument: str) -> Iterator[None]:
    """Turn a refused write under ``path`` (permission denied, read-only file system) into an error naming
    ``argument`` and ``path``, with what to do; other errors pass unchanged."""
    try:
        yield
    except OutputNotWritableError:
        raise
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise OutputNotWritableError(
            f"`{argument}` {path}: cannot write there ({err.strerror}: {err.filename}). Pass a path in a folder you "
            "can write to."
        ) from err


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


# ---------------------------------------------------------------------------------------------------- outputs
#: A file in every folder hinge_sc writes as one output (a generation store, a ``.zarr`` written by the CLI): the
#: mark that lets ``overwrite=True`` replace that folder, and nothing else.
OUTPUT_MARKER = ".hinge_sc_output.json"
#: The root attribute of an ``.h5ad`` written by the command line (the same mark, for a file).
H5AD_MARKER_ATTR = "hinge_sc_output"
#: What a zarr store holds besides its arrays and groups.
ZARR_METADATA = frozenset({".zgroup", ".zattrs", ".zmetadata", ".zarray", "zarr.json"})


def mark_output(folder: str | Path, *, kind: str) -> None:
    """Write :data:`OUTPUT_MARKER` into ``folder``: hinge_sc wrote this folder as one output of ``kind``."""
    from hinge_sc import __version__

    write_json(Path(folder) / OUTPUT_MARKER, {"written_by": "hinge_sc", "kind": kind, "version": __version__})


def output_kind(path: str | Path) -> str | None:
    """The kind recorded by :func:`mark_output` in folder ``path`` (or the mark of an ``.h5ad`` file), else None."""
    path = Path(path)
    if path.is_dir():
        marker = path / OUTPUT_MARKER
        if not marker.is_file():
            return None
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return record.get("kind") if isinstance(record, dict) and record.get("written_by") == "hinge_sc" else None
    if path.is_file():
        try:
            import h5py

            with h5py.File(path, "r") as f:
                kind = f.attrs.get(H5AD_MARKER_ATTR)
        except (OSError, ValueError):
            return None
        return kind.decode() if isinstance(kind, bytes) else (str(kind) if kind is not None else None)
    return None


def check_replaceable(path: str | Path, *, argument: str, kinds: Sequence[str], allowed: Iterable[str] = ()) -> None:
    """Raise unless ``path`` is absent or an output of one of ``kinds`` that hinge_sc wrote (so it may be replaced).

    A folder must carry :data:`OUTPUT_MARKER` with one of ``kinds`` and hold nothing but the entries in ``allowed``
    (and zarr metadata), so that files a user put into it are never deleted. Anything else — a folder of the user's
    files, another program's zarr store, an ``.h5ad`` hinge_sc did not write — is refused.

    Raises
    ------
    FileExistsError
        Naming the path, what was found and what to do.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink():
        raise FileExistsError(
            f"`{argument}` {path} is a symbolic link; hinge_sc does not replace links. Remove it or pass another path."
        )
    kind = output_kind(path)
    what = "folder" if path.is_dir() else "file"
    if kind not in kinds:
        raise FileExistsError(
            f"`{argument}` {path} is a {what} that hinge_sc did not write (no hinge_sc output mark of kind "
            f"{' or '.join(map(repr, kinds))}), so `overwrite` does not replace it: nothing was deleted. Pass another "
            "path, or remove it yourself if you no longer need it."
        )
    if path.is_dir():
        known = {OUTPUT_MARKER, *ZARR_METADATA, *allowed}
        foreign = sorted(p.name for p in path.iterdir() if p.name not in known)
        if foreign:
            raise FileExistsError(
                f"`{argument}` {path} was written by hinge_sc but now also holds {len(foreign)} entr(y/ies) it did not "
                f"write ({', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}), so `overwrite` does not replace "
                "it: nothing was deleted. Move those files out, or pass another path."
            )


def remove_output(path: str | Path, *, argument: str, kinds: Sequence[str], allowed: Iterable[str] = ()) -> None:
    """Delete ``path`` after :func:`check_replaceable` has accepted it (a no-op when ``path`` is absent)."""
    import shutil

    path = Path(path)
    check_replaceable(path, argument=argument, kinds=kinds, allowed=allowed)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


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


def check_plain_name(name: Any, *, where: str | Path) -> None:
    """Raise :class:`FileIntegrityError` unless ``name`` (an entry of the manifest ``where``) is a plain file name.

    A plain name is a non-empty string without ``/`` or ``\\``, not ``.`` or ``..`` and not absolute, so that it
    names a file inside the manifest's folder and nothing outside it.
    """
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and not os.path.isabs(name)
        and Path(name).name == name
    )
    if not plain:
        raise FileIntegrityError(
            f"{where} lists the entry {name!r}, which is not a plain file name inside the folder (expected a name "
            "without '/', '\\' or '..', not an absolute path). The manifest was edited or forged: nothing outside "
            "the folder is read. Use an intact copy of the folder."
        )


def verify_manifest(folder: str | Path, *, names: Sequence[str] | None = None) -> dict:
    """Read ``manifest.json`` and check every listed file (or only ``names``): present, same size and SHA-256.

    Returns
    -------
    The manifest.

    Raises
    ------
    FileIntegrityError
        Naming the first entry that is not a plain file name inside ``folder`` (a path with ``/``, ``\\`` or
        ``..``, or an absolute path), or the first file that is missing, truncated or changed.
    """
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise FileIntegrityError(f"{folder / MANIFEST_FILE} has no `files` table; it is not a hinge_sc manifest.")
    for name in manifest["files"]:
        check_plain_name(name, where=folder / MANIFEST_FILE)
    for name, entry in manifest["files"].items():
        if names is not None and name not in names:
            continue
        path = folder / name
        if not isinstance(entry, dict) or not {"bytes", "sha256"} <= set(entry):
            raise FileIntegrityError(
                f"{folder / MANIFEST_FILE} lists {name!r} without its `bytes` and `sha256`; the manifest is corrupt "
                "or was edited. Use an intact copy of the folder."
            )
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
    except pickle.UnpicklingError as err:
        if not _builds_objects(path, str(err)):  # garbage, not a pickle of objects
            raise FileIntegrityError(
                f"{path} could not be read as a hinge_sc {what} (not a torch tensor file); the file is truncated or "
                "corrupt."
            ) from None
        raise FileIntegrityError(
            f"{path} holds objects other than tensors and plain data, which hinge_sc never loads (unpickling them "
            f"could run code). It is not a hinge_sc {what}, or it was written by an older version; see the "
            "changelog for how to convert a file you trust."
        ) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"No {what} at {path}; check the path.") from None
    except IsADirectoryError:
        raise FileIntegrityError(f"{path} is a folder, not a {what}; pass the path of the file.") from None
    except Exception as err:  # torch's reader fails on garbage with EOFError, IndexError, RuntimeError, …
        raise FileIntegrityError(
            f"{path} could not be read as a hinge_sc {what} ({type(err).__name__}); the file is truncated or corrupt."
        ) from None


def _builds_objects(path: Path, message: str) -> bool:
    """Whether a file the weights-only reader refused is a pickle that builds objects (rather than garbage)."""
    import pickletools
    import zipfile

    if "Unsupported global" in message or "Unsupported class" in message:
        return True
    if zipfile.is_zipfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            for opcode, _, _ in pickletools.genops(fh):
                if opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                    return True
    except Exception:  # not a pickle at all
        return False
    return False
