"""Read a safetensors file (its header checked by :mod:`sninspect.io.safetensors_check` first) into a
:class:`~sninspect.io.checkpoint.Checkpoint` of lazily loaded tensors."""

from __future__ import annotations

from pathlib import Path

from sninspect.errors import InputError, UnknownKeyError, option
from sninspect.io import safetensors_check, wrappers
from sninspect.io.checkpoint import Checkpoint, ModelState
from sninspect.io.safetensors_check import LazyTensors

__all__ = ["load_safetensors", "looks_like_safetensors", "select"]


def looks_like_safetensors(magic: bytes) -> bool:
    """A safetensors file under another suffix: a small header length followed by ``{``."""
    if len(magic) < 9:
        return False
    n = int.from_bytes(magic[:8], "little")
    return 2 <= n <= 100_000_000 and magic[8:9] == b"{"


def load_safetensors(file: Path, shown: str, key: str | None) -> Checkpoint:
    """One safetensors file; ``key`` selects the tensors named ``KEY.*``."""
    tensors, header = safetensors_check.open_file(file, shown)
    if not tensors:
        raise InputError(f"{shown}: no tensors found (the safetensors header lists none)")
    tensors, path = select(tensors, key, shown)
    return Checkpoint(file, "safetensors", [ModelState("", path, tensors)], None, header.metadata, {})


def select(tensors: LazyTensors, key: str | None, shown: str) -> tuple[LazyTensors, tuple[str, ...]]:
    """``--key netD`` on a flat file: the tensors named ``netD.*``, prefix removed (as sninspect writes
    several models into one safetensors file)."""
    if key is None:
        return tensors, ()
    selected = tensors.select(key.rstrip(".") + ".")
    if not selected:
        heads = list(dict.fromkeys(k.split(".")[0] for k in tensors))
        raise UnknownKeyError(f"{shown}: no tensors under {key!r} (top-level names: {wrappers.short(heads)}; "
                         f"{option('key')} selects the tensors named KEY.*)")
    return selected, (key.rstrip("."),)
