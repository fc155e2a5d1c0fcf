"""Reader of MindSpore ``.ckpt`` checkpoints, written from the protobuf wire format (no MindSpore, no protobuf).

The format (``mindspore/ccsrc/utils/checkpoint.proto``, proto2)::

    message Checkpoint {
      message Value {
        required string tag = 1;
        oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;
      required string tensor_type = 2;
      required bytes tensor_content = 3;
    }

A file is a concatenation of serialised ``Checkpoint`` messages. A large tensor is split over consecutive
``Value`` entries with the same tag (each repeats ``dims`` and ``tensor_type``): the bytes are concatenated,
then reshaped by ``dims``. Data are raw little-endian. ``dims = []``, or ``dims = [0]`` with one element
(MindSpore's convention), is a scalar. Entries of type ``str`` (and map tensors) are not tensors.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

#: Files up to this size are read into memory at once; larger files are streamed tensor by tensor
#: (protobuf's Python API refuses messages over 2 GB, and CellFM-800M's checkpoint is 9.7 GB).
_IN_MEMORY_MAX_BYTES = 64 * 2**20

#: ``tensor_type`` → (little-endian numpy dtype of the raw bytes, torch dtype of the result).
MINDSPORE_DTYPES: dict[str, tuple[str, torch.dtype]] = {
    "Float64": ("<f8", torch.float64),
    "Float32": ("<f4", torch.float32),
    "Float16": ("<f2", torch.float16),
    "BFloat16": ("<i2", torch.bfloat16),  # raw 16-bit patterns, reinterpreted by torch
    "Int64": ("<i8", torch.int64),
    "Int32": ("<i4", torch.int32),
    "Int16": ("<i2", torch.int16),
    "Int8": ("<i1", torch.int8),
    "UInt8": ("<u1", torch.uint8),
    "UInt16": ("<u2", torch.uint16),
    "UInt32": ("<u4", torch.uint32),
    "UInt64": ("<u8", torch.uint64),
    "Bool": ("<u1", torch.bool),
}
_NOT_TENSORS = ("str", "string", "maptensor")
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


@dataclass
class MindSporeEntry:
    """One named entry of a checkpoint: shape, type and where its bytes lie in the file."""

    tag: str
    dims: tuple[int, ...]
    tensor_type: str
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of each chunk

    @property
    def is_tensor(self) -> bool:
        """Whether the entry is a numeric tensor (``str`` entries and map tensors are not)."""
        return self.tensor_type not in _NOT_TENSORS

    @property
    def nbytes(self) -> int:
        """Total size of the raw data in bytes."""
        return sum(length for _, length in self.chunks)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the tensor; ``()`` for scalars (``dims = []`` or ``dims = [0]`` with one element)."""
        if self.dims == (0,) and self.tensor_type in MINDSPORE_DTYPES:
            itemsize = np.dtype(MINDSPORE_DTYPES[self.tensor_type][0]).itemsize
            if self.nbytes == itemsize:
                return ()
        return self.dims


class _Reader:
    """Minimal protobuf wire-format decoding over a seekable binary stream."""

    def __init__(self, stream: BinaryIO, size: int, name: str):
        self.stream, self.size, self.name = stream, size, name

    def tell(self) -> int:
        return self.stream.tell()

    def error(self, what: str) -> ValueError:
        return ValueError(
            f"{self.name} is not a valid MindSpore checkpoint ({what} at byte {self.tell()}). Check that the "
            "file is complete (compare its size with the published one) and not encrypted (`enc_key`)."
        )

    def varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.stream.read(1)
            if not byte:
                raise self.error("unexpected end of file in a varint")
            result |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise self.error("varint longer than 10 bytes")

    def key(self) -> tuple[int, int]:
        key = self.varint()
        return key >> 3, key & 7

    def length(self, end: int) -> int:
        n = self.varint()
        if self.tell() + n > end:
            raise self.error(f"length-delimited field of {n} bytes runs past its end")
        return n

    def span(self, end: int) -> int:
        """Read a length prefix; return the position where the field ends."""
        n = self.length(end)
        return self.tell() + n

    def text(self, end: int) -> str:
        n = self.length(end)
        return self.stream.read(n).decode("utf-8", errors="replace")

    def skip(self, wire: int, end: int) -> None:
        if wire == _WIRE_VARINT:
            self.varint()
        elif wire in (_WIRE_I64, _WIRE_I32, _WIRE_LEN):
            n = {_WIRE_I64: 8, _WIRE_I32: 4}.get(wire) or self.length(end)
            if self.tell() + n > end:
                raise self.error("field runs past its end")
            self.stream.seek(n, io.SEEK_CUR)
        else:
            raise self.error(f"unsupported protobuf wire type {wire}")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_tensor(r: _Reader, end: int) -> tuple[list[int], str | None, tuple[int, int] | None]:
    dims: list[int] = []
    tensor_type, content = None, None
    while r.tell() < end:
        number, wire = r.key()
        if number == 1 and wire == _WIRE_VARINT:  # unpacked repeated int64 (proto2 default)
            dims.append(_signed(r.varint()))
        elif number == 1 and wire == _WIRE_LEN:  # packed repeated int64
            stop = r.span(end)
            while r.tell() < stop:
                dims.append(_signed(r.varint()))
        elif number == 2 and wire == _WIRE_LEN:
            tensor_type = r.text(end)
        elif number == 3 and wire == _WIRE_LEN:
            n = r.length(end)
            content = (r.tell(), n)
            r.stream.seek(n, io.SEEK_CUR)
        else:
            r.skip(wire, end)
    return dims, tensor_type, content


def _scan(r: _Reader) -> dict[str, MindSporeEntry]:
    """Index every ``Value`` of the file without reading tensor data (chunks of one tag are merged)."""
    entries: dict[str, MindSporeEntry] = {}
    previous = None
    while r.tell() < r.size:
        number, wire = r.key()
        if number != 1 or wire != _WIRE_LEN:  # Checkpoint has only `value` (and, in old files, `model_type`)
            if number == 2 and wire == _WIRE_LEN:
                r.skip(wire, r.size)
                continue
            raise r.error(f"unexpected top-level field {number} (wire type {wire})")
        end = r.span(r.size)
        tag, dims, tensor_type, content = None, [], None, None
        while r.tell() < end:
            number, wire = r.key()
            if number == 1 and wire == _WIRE_LEN:
                tag = r.text(end)
            elif number == 2 and wire == _WIRE_LEN:
                stop = r.span(end)
                dims, tensor_type, content = _parse_tensor(r, stop)
            elif number == 3 and wire == _WIRE_LEN:
                tensor_type = "maptensor"
                r.skip(wire, end)
            else:
                r.skip(wire, end)
        if tag is None:
            raise r.error("a `Value` without `tag`")
        if tensor_type is None:
            raise r.error(f"entry {tag!r} has no `tensor_type`")
        if any(d < 0 for d in dims):
            raise r.error(f"entry {tag!r} has negative dims {dims}")
        entry = entries.get(tag)
        if entry is None:
            entries[tag] = entry = MindSporeEntry(tag, tuple(dims), tensor_type)
        elif previous != tag:
            raise r.error(f"tag {tag!r} appears twice, not in consecutive chunks")
        elif (tuple(dims), tensor_type) != (entry.dims, entry.tensor_type):
            raise r.error(f"chunks of {tag!r} disagree on dims/type")
        if content is not None:
            entry.chunks.append(content)
        previous = tag
    return entries


class MindSporeCheckpoint:
    """A MindSpore ``.ckpt`` file, indexed on opening and read tensor by tensor.

    Small files are read into memory at once; files over ``_IN_MEMORY_MAX_BYTES`` (64 MiB) are streamed
    from disk, so that only the tensors asked for are read (CellFM-800M's file also holds optimiser
    moments, 9.7 GB in all).

    Parameters
    ----------
    path
        The ``.ckpt`` file.

    Examples
    --------
    >>> with hs.nn.MindSporeCheckpoint("CellFM_80M_weight.ckpt") as ckpt:
    ...     print(ckpt.entries["gene_emb"].shape)
    ...     gene_emb = ckpt.read("gene_emb")
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"No MindSpore checkpoint at `path` {self.path}; pass the path of a `.ckpt` file.")
        size = self.path.stat().st_size
        self.streaming = size > _IN_MEMORY_MAX_BYTES
        stream: BinaryIO = open(self.path, "rb") if self.streaming else io.BytesIO(self.path.read_bytes())
        self._reader = _Reader(stream, size, str(self.path))
        try:
            self.entries = _scan(self._reader)
        except BaseException:
            stream.close()
            raise
        if not self.entries:
            stream.close()
            raise ValueError(f"{self.path} holds no entries; it is not a MindSpore checkpoint.")
        logger.debug("Indexed %d entries of %s (streaming=%s)", len(self.entries), self.path, self.streaming)

    def __enter__(self) -> MindSporeCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying file."""
        self._reader.stream.close()

    def check(self, tag: str) -> np.dtype:
        """Check, without reading data, that entry ``tag`` is a supported tensor whose bytes fit its dims.

        Returns
        -------
        The numpy dtype of its raw bytes.

        Raises
        ------
        ValueError
            Unsupported type, or the file holds fewer or more bytes than the declared dims need (a truncated,
            corrupt or forged file), so nothing is allocated for it.
        """
        entry = self.entries[tag]
        if entry.tensor_type not in MINDSPORE_DTYPES:
            raise ValueError(
                f"Entry {tag!r} of {self.path} has type {entry.tensor_type!r}, which is not a supported tensor "
                f"type ({sorted(MINDSPORE_DTYPES)})."
            )
        dtype = np.dtype(MINDSPORE_DTYPES[entry.tensor_type][0])
        numel = math.prod(entry.shape)
        if entry.nbytes != numel * dtype.itemsize:
            raise ValueError(
                f"Entry {tag!r} of {self.path} holds {entry.nbytes} bytes, but dims {list(entry.dims)} of "
                f"{entry.tensor_type} need {numel * dtype.itemsize}; the file is truncated, corrupt or forged."
            )
        return dtype

    def read(self, tag: str) -> torch.Tensor:
        """Read one tensor (chunks concatenated, reshaped by ``dims``) in its stored dtype."""
        if tag not in self.entries:
            raise KeyError(f"`tag` {tag!r} is not in {self.path}; see `.entries` for the names it holds.")
        entry = self.entries[tag]
        dtype = self.check(tag)
        torch_dtype = MINDSPORE_DTYPES[entry.tensor_type][1]
        buffer = bytearray(entry.nbytes)
        view, pos = memoryview(buffer), 0
        stream = self._reader.stream
        for offset, length in entry.chunks:
            stream.seek(offset)
            if stream.readinto(view[pos : pos + length]) != length:
                raise ValueError(f"{self.path} ends inside entry {tag!r}; the file is truncated.")
            pos += length
        array = np.frombuffer(buffer, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
        tensor = torch.from_numpy(array.reshape(entry.shape))
        return tensor.view(torch_dtype) if torch_dtype in (torch.bfloat16, torch.bool) else tensor


def read_mindspore_checkpoint(path: str | Path, *, tags: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Read the tensors of a MindSpore ``.ckpt`` file without MindSpore.

    Parameters
    ----------
    path
        The ``.ckpt`` file.
    tags
        Names to read; ``None`` reads every numeric tensor (``str`` entries and map tensors are skipped).

    Returns
    -------
    Tensors by name, in their stored dtype (``Float16``, ``BFloat16`` … are kept).
    """
    with MindSporeCheckpoint(path) as ckpt:
        names = [t for t, e in ckpt.entries.items() if e.is_tensor] if tags is None else list(tags)
        return {name: ckpt.read(name) for name in names}
