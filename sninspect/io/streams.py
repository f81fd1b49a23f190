"""Binary file objects (``io.BytesIO``, ``open(path, "rb")``, a download stream) as checkpoint files.

A file object is read from its current position to its end into a private temporary file, which is
then loaded by :func:`sninspect.io.load.load_checkpoint` like any path: the same safety checks, the same
messages, one code path for bytes. The temporary file is removed when the block ends.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sninspect.errors import InputError, UsageError
from sninspect.io.suffixes import TENSOR_SUFFIXES

__all__ = ["is_file_object", "spooled", "stream_name"]

_CHUNK = 1 << 20
_TEXT_MODE = "a text-mode file object; open the checkpoint in binary mode (open(path, 'rb'))"


def is_file_object(source: object) -> bool:
    """Whether ``source`` reads like a file (has ``read``), as ``torch.load`` accepts."""
    return callable(getattr(source, "read", None))


def stream_name(stream: IO[Any]) -> str:
    """How messages and reports name a file object: its ``name`` when it is a path (``open()``), else
    ``<BytesIO>`` (its type)."""
    name = getattr(stream, "name", None)
    if isinstance(name, (str, bytes, os.PathLike)):
        text = os.fsdecode(name)
        return text if text.isprintable() else ascii(text)
    return f"<{type(stream).__name__}>"


@contextmanager
def spooled(stream: IO[Any], shown: str) -> Iterator[Path]:
    """The bytes of ``stream`` (from its position to its end) as a temporary file, for the block.

    The file keeps the stream's suffix (``.safetensors``, ``.pt``) so that loading reads it as the
    original would be read; a shard index cannot come as a stream (its shards are separate files)."""
    suffix = Path(shown).suffix.lower() if not shown.startswith("<") else ""
    if shown.lower().endswith(".json"):
        raise UsageError(f"{shown}: a shard index names its shard files by path; pass the index's path, "
                         "not a file object")
    if isinstance(stream, io.TextIOBase):
        raise UsageError(f"{shown}: {_TEXT_MODE}")
    folder = tempfile.mkdtemp(prefix="sninspect-")
    try:
        path = Path(folder) / ("stream" + (suffix if suffix in TENSOR_SUFFIXES else ".pt"))
        with open(path, "wb") as out:
            while True:
                chunk = _read(stream, shown)
                if isinstance(chunk, str):
                    raise UsageError(f"{shown}: {_TEXT_MODE}")
                if not chunk:
                    break
                out.write(chunk)
        if path.stat().st_size == 0:
            raise InputError(f"{shown}: empty (no bytes left to read from the file object; at its end "
                             "already? seek(0) first)")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read(stream: IO[Any], shown: str) -> bytes | str:
    try:
        return stream.read(_CHUNK)
    except (OSError, ValueError) as err:  # ValueError: a closed file
        raise InputError(f"{shown}: cannot read the file object: {err}") from None
