"""Write a checkpoint (torch or safetensors) through the one atomic writer, :mod:`sninspect.io.write`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sninspect.errors import OutputError
from sninspect.io.files import printable
from sninspect.io.inputs import InputSet
from sninspect.io.write import atomic_path

__all__ = ["save_checkpoint"]


def save_checkpoint(
    out: str | os.PathLike[str], payload: Any, *, inputs: InputSet | Sequence[str | os.PathLike[str]] = (),
    force: bool = False, metadata: dict[str, str] | None = None,
) -> None:
    """Write ``payload`` to ``out`` atomically: ``.safetensors`` (a dict of tensors + ``metadata``) or torch.

    The payload is checked whole first. Refuses (:class:`OutputError`) to write over any of ``inputs``
    (an :class:`InputSet`; paths are expanded into one: the shards of an index among them included,
    even with ``force``), over an existing file without
    ``force``, over a link or anything but a regular file, or into a folder that does not exist; on
    any failure ``out`` is left as it was (see :mod:`sninspect.io.write`).
    """
    target = Path(os.fspath(out))
    shown = printable(target)
    tensors: dict[str, torch.Tensor] | None = None
    if target.name.lower().endswith(".safetensors"):
        tensors = _safetensors_payload(payload, shown)
        metadata = _metadata_strings(metadata, shown)
    with atomic_path(target, force=force, inputs=inputs) as tmp:
        if tensors is not None:
            from safetensors.torch import save_file

            save_file(tensors, os.fspath(tmp), metadata=metadata)
        else:
            torch.save(payload, os.fspath(tmp))


def _safetensors_payload(payload: Any, shown: str) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with its own storage (safetensors refuses shared storage)."""
    if not isinstance(payload, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise OutputError(f"{shown}: a .safetensors file holds a flat dict of name -> tensor only (write a "
                          ".pt file to keep other objects)")
    not_utf8 = [k for k in payload if not _is_utf8(k)]
    if not_utf8:  # safetensors' JSON header holds UTF-8 names; the library failed with "codec can't encode"
        names = ", ".join(printable(k) for k in not_utf8[:6]) + (f" and {len(not_utf8) - 6} more"
                                                                  if len(not_utf8) > 6 else "")
        raise OutputError(f"{shown}: safetensors stores UTF-8 names only, and key{'s' * (len(not_utf8) > 1)} "
                          f"{names} {'are' if len(not_utf8) > 1 else 'is'} not (a lone surrogate, as from a "
                          "name that was not UTF-8 in the input); write a .pt file instead")
    unstorable = [f"'{printable(k)}' ({str(t.dtype).removeprefix('torch.')})" for k, t in payload.items()
                  if t.is_quantized or t.is_complex() or t.dtype not in _SAFETENSORS_DTYPES]
    if unstorable:  # the whole payload is checked first: one error naming every offender
        shown_keys = ", ".join(unstorable[:6]) + (f" and {len(unstorable) - 6} more" if len(unstorable) > 6 else "")
        raise OutputError(f"{shown}: safetensors cannot store {shown_keys}; write a .pt file instead")
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for k, tensor in payload.items():
        t = tensor.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        storage = (str(t.device), t.untyped_storage().data_ptr())
        t = t.clone(memory_format=torch.contiguous_format) if storage in seen else t.contiguous()
        if t.numel() > 0:
            seen.add(storage)
        out[k] = t
    return out


_SAFETENSORS_DTYPES = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                       torch.int16, torch.int8, torch.uint8, torch.bool}
"""Tensor dtypes a .safetensors file can hold (the float8 kinds aside)."""
for _name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _name):
        _SAFETENSORS_DTYPES.add(getattr(torch, _name))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _metadata_strings(metadata: dict[str, str] | None, shown: str) -> dict[str, str] | None:
    if metadata is None:
        return None
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    not_utf8 = [printable(k) for k, v in metadata.items() if k not in bad and not (_is_utf8(k) and _is_utf8(v))]
    if not_utf8:
        raise OutputError(f"{shown}: safetensors metadata must be UTF-8 text (not so for {', '.join(not_utf8)}); "
                          "write a .pt file instead")
    if bad:
        raise OutputError(f"{shown}: safetensors metadata must be strings (not so for "
                          f"{', '.join(map(str, bad))})")
    return dict(metadata)
