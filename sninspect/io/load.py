"""Load the state dicts of a checkpoint file without trusting it: one entry point, dispatch by format.

Loading never runs code from the file (unless the caller passes ``unsafe_load``): torch files are read
by :mod:`sninspect.io.torch_io`, safetensors files by :mod:`sninspect.io.safetensors_io`, shard indexes
by :mod:`sninspect.io.shards`. Every failure becomes one :class:`~sninspect.errors.InputError` line
``<file>: <what is wrong> (<what to do>)``. Writing goes through :mod:`sninspect.io.write`
(:func:`~sninspect.io.save.save_checkpoint` for checkpoints).
"""

from __future__ import annotations

import os
from pathlib import Path

from sninspect.io import torch_check, wrappers
from sninspect.io.checkpoint import Checkpoint, ModelState, display_name, find_models
from sninspect.io.exported import MemoryBudget, looks_like_pt2
from sninspect.io.files import open_regular, printable
from sninspect.io.safetensors_io import load_safetensors, looks_like_safetensors
from sninspect.io.save import save_checkpoint
from sninspect.io.shards import load_index
from sninspect.io.suffixes import EXPORTED_SUFFIX, TORCH_SUFFIXES
from sninspect.io.torch_io import load_torch

__all__ = [
    "TORCH_SUFFIXES", "Checkpoint", "ModelState", "display_name", "load_checkpoint", "save_checkpoint",
]


def load_checkpoint(
    path: str | os.PathLike[str], *, key: str | None = None, unsafe_load: bool = False, shown: str | None = None,
    budget: MemoryBudget | None = None,
) -> Checkpoint:
    """Load the state dict(s) of a checkpoint file: ``load_checkpoint("D.pt", key="netD")``.

    Raises :class:`InputError` (one line) for anything unreadable, :class:`UnsafeCheckpointError` for a
    pickle that would run code (unless ``unsafe_load``), :class:`UsageError` for a ``key`` not present.
    ``shown``: how messages name the file (default: the path; a file object's bytes spooled to a
    temporary file are named after the object). ``budget``: asked before a ``.pt2`` archive's tensors are
    built (torch files are memory-mapped, safetensors read lazily).
    """
    file = Path(os.fspath(path))
    shown = printable(file) if shown is None else shown
    magic = open_regular(file, shown)
    name = file.name.lower()
    if name.endswith(".json"):
        return load_index(file, shown, key=key, unsafe_load=unsafe_load)
    torch_magic = magic.startswith(torch_check.ZIP_MAGIC) or torch_check.LEGACY_MAGIC in magic
    if not torch_magic and (name.endswith(".safetensors") or looks_like_safetensors(magic)):
        return load_safetensors(file, shown, key)
    if name.endswith(EXPORTED_SUFFIX) or (magic.startswith(torch_check.ZIP_MAGIC) and looks_like_pt2(file)):
        from sninspect.io.exported import load_exported  # a torch.export archive: its weights, read as data

        state = load_exported(file, budget=budget).state_dict
        models = find_models(state, shown, key)
        return Checkpoint(file, "torch-export", models, None)
    fmt, container = load_torch(file, shown, magic, unsafe_load=unsafe_load)
    models = find_models(container, shown, key)
    return Checkpoint(file, fmt, models, container, {}, wrappers.extras(container))
