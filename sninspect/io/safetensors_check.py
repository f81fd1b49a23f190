"""Safetensors files: validate the header before any library trusts it, then read tensors lazily.

A safetensors file is ``N`` (8 bytes, little-endian) + ``N`` bytes of JSON + the tensor data. The JSON
maps each tensor name to ``{"dtype", "shape", "data_offsets": [start, end]}`` (offsets relative to the
data block) plus an optional ``"__metadata__"`` of strings. Everything in it is a claim made by whoever
wrote the file, so every claim is checked here against the file's real size with Python ints (no
overflow for a shape of 10^10 elements) and nothing is allocated on the header's word: the only read is
the header itself, after ``N`` has been bounded by the file size and :data:`MAX_HEADER_BYTES`.

Format: https://github.com/huggingface/safetensors#format
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sninspect.errors import InputError
from sninspect.io import limits
from sninspect.io.files import library_path, one_line

MAX_HEADER_BYTES = 100_000_000
"""The same bound the safetensors library applies (100 MB of JSON)."""

DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}
"""Bytes per element of every dtype that safetensors can hand to PyTorch."""

_PAIR = "[start, end] with 0 <= start <= end"


@dataclass(frozen=True)
class Entry:
    """One tensor as the header describes it (already checked)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    """Offset of the first byte in the data block."""
    end: int
    """Offset one past the last byte in the data block."""


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: tensors in header order and the ``__metadata__`` strings."""

    entries: list[Entry]
    metadata: dict[str, str]
    data_size: int
    """Bytes after the header."""


def read_header(path: str | os.PathLike[str], shown: str) -> Header:
    """The checked header of the safetensors file at ``path``; :class:`InputError` naming ``shown`` else.

    The caller has already made sure ``path`` is a readable regular file.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise InputError(f"{shown}: not a safetensors file: {size} bytes, shorter than the 8-byte "
                                 "header length (is it truncated?)")
            (n,) = struct.unpack("<Q", f.read(8))
            if n < 2 or n > size - 8 or n > MAX_HEADER_BYTES:
                most = min(size - 8, MAX_HEADER_BYTES)
                raise InputError(f"{shown}: safetensors header claims {n} bytes of JSON but the file has "
                                 f"{size - 8} after the length field (expected 2..{most}; is it truncated or "
                                 "not a safetensors file?)")
            raw = f.read(n)
    except OSError as err:
        raise InputError(f"{shown}: cannot read: {err.strerror or err}") from None
    if len(raw) != n:
        raise InputError(f"{shown}: file shrank while reading the safetensors header (read it again)")
    return parse_header(raw, size - 8 - n, shown)


def parse_header(raw: bytes, data_size: int, shown: str) -> Header:
    """Check the JSON header ``raw`` against a data block of ``data_size`` bytes."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise InputError(f"{shown}: safetensors header lists {_name(key)} twice (the header is "
                                 "inconsistent)")
            out[key] = value
        return out

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: [[[[...]]]]
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{shown}: safetensors header is not valid UTF-8 JSON: {detail[:120]} (is it "
                         "truncated, or not a safetensors file?)") from None
    if not isinstance(header, dict):
        raise InputError(f"{shown}: safetensors header is a JSON {type(header).__name__}, expected an object "
                         "mapping tensor names to {dtype, shape, data_offsets}")
    metadata = _metadata(header.pop("__metadata__", None), shown)
    if len(header) > limits.MAX_TENSORS:
        raise limits.too_many_tensors(shown, len(header))
    entries = [_entry(name, spec, data_size, shown) for name, spec in header.items()]
    _check_layout(entries, data_size, shown)
    return Header(entries, metadata, data_size)


def _metadata(value: object, shown: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InputError(f"{shown}: safetensors __metadata__ must map strings to strings")
    return dict(value)


def _entry(name: str, spec: object, data_size: int, shown: str) -> Entry:
    where = f"{shown}: tensor {_name(name)}"
    if not isinstance(spec, dict):
        raise InputError(f"{where}: header entry is a JSON {type(spec).__name__}, expected "
                         "{dtype, shape, data_offsets}")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise InputError(f"{where}: unknown dtype {dtype!r} (expected one of {', '.join(DTYPE_BYTES)})")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise InputError(f"{where}: shape {_short(shape)} is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise InputError(f"{where}: data_offsets {_short(offsets)} is not {_PAIR}")
    start, end = offsets
    if end > data_size:
        raise InputError(f"{where}: data_offsets [{start}, {end}] run past the end of the data "
                         f"({data_size} bytes; is the file truncated?)")
    nbytes = _nbytes(shape, DTYPE_BYTES[dtype], limit=end - start)
    if nbytes != end - start:
        needs = f"{nbytes} bytes" if nbytes is not None else f"more than {end - start} bytes"
        raise InputError(f"{where}: shape {_short(shape)} of {dtype} needs {needs} but data_offsets "
                         f"[{start}, {end}] hold {end - start} (the header is inconsistent)")
    return Entry(name, dtype, tuple(shape), start, end)


def _nbytes(shape: list[int], itemsize: int, limit: int) -> int | None:
    """``prod(shape) * itemsize`` in Python ints, or None as soon as it exceeds ``limit``.

    Stopping early keeps a hostile shape of 10^5 huge dimensions from costing quadratic time.
    """
    if 0 in shape:
        return 0
    total = itemsize
    for dim in shape:
        total *= dim
        if total > limit:
            return None
    return total


def _check_layout(entries: list[Entry], data_size: int, shown: str) -> None:
    """Byte ranges must tile the data block: no overlap, no hole, nothing left over."""
    position, previous = 0, None
    for entry in sorted(entries, key=lambda e: (e.start, e.end)):
        if entry.start < position:
            raise InputError(f"{shown}: tensors {_name(previous)} and {_name(entry.name)} overlap in the "
                             "data block (the header is inconsistent)")
        if entry.start > position:
            raise InputError(f"{shown}: {entry.start - position} bytes before tensor {_name(entry.name)} "
                             "belong to no tensor (the header is inconsistent)")
        position, previous = entry.end, entry.name
    if position != data_size:
        raise InputError(f"{shown}: the header describes {position} bytes of data but the file holds "
                         f"{data_size} (the header is inconsistent or the file was appended to)")


def _name(name: object, limit: int = 80) -> str:
    """A tensor name for a message: quoted, escaped, and cut if a hostile header made it huge."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value) if value is not None else "missing"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------
# Reading tensors


@dataclass(frozen=True)
class Source:
    """Where one tensor lives: the file, its name for messages, and its key in that file."""

    file: Path
    shown: str
    key: str


class LazyTensors(Mapping[str, torch.Tensor]):
    """Tensors of one or more checked safetensors files, read (memory-mapped) on access, in given order."""

    def __init__(self, sources: dict[str, Source]) -> None:
        self._sources = sources
        self._handles: dict[Path, Any] = {}

    def open(self, file: Path, shown: str) -> None:
        """Open ``file`` now, so that whatever safetensors itself rejects is reported at load time."""
        try:
            from safetensors import safe_open

            with library_path(file) as name:  # a non-UTF-8 file name: opened through its bytes
                self._handles[file] = safe_open(name, framework="pt", device="cpu")
        except Exception as err:  # SafetensorError, OSError, ...: anything but a bug here is the file's
            raise InputError(f"{shown}: cannot read as safetensors: {one_line(err)} (is it corrupt?)") \
                from None

    def select(self, prefix: str) -> LazyTensors:
        """The tensors under ``prefix`` (a ``name.`` prefix), with the prefix removed."""
        return LazyTensors({k[len(prefix):]: s for k, s in self._sources.items() if k.startswith(prefix)})

    def __getitem__(self, key: str) -> torch.Tensor:
        source = self._sources[key]
        if source.file not in self._handles:
            self.open(source.file, source.shown)
        try:
            tensor: torch.Tensor = self._handles[source.file].get_tensor(source.key)
        except Exception as err:
            raise InputError(f"{source.shown}: cannot read tensor {source.key!r}: {one_line(err)} (is the "
                             "file corrupt, or changed since it was opened?)") from None
        return tensor

    def __contains__(self, key: object) -> bool:
        return key in self._sources  # without reading the tensor (Mapping's default would)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def __repr__(self) -> str:
        files = sorted({s.shown for s in self._sources.values()})
        return f"<{len(self)} lazy tensors from {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}>"


def open_file(file: Path, shown: str) -> tuple[LazyTensors, Header]:
    """The tensors (lazy, header order) and header of one safetensors file."""
    header = read_header(file, shown)
    tensors = LazyTensors({e.name: Source(file, shown, e.name) for e in header.entries})
    tensors.open(file, shown)
    return tensors, header
