"""What loading a checkpoint returns: :class:`Checkpoint` holding one :class:`ModelState` per state dict.

A checkpoint often wraps its state dicts (``{"state_dict": ...}``, ``{"netG": ..., "netD": ...,
"optG": ...}``); :mod:`sninspect.io.wrappers` finds them (or follows ``key``) and :func:`find_models`
turns each into a :class:`ModelState`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sninspect.io import wrappers

__all__ = ["Checkpoint", "ModelState", "display_name", "find_models"]

_DISPLAY_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class ModelState:
    """One state dict found in a checkpoint."""

    name: str
    """``""`` when the checkpoint holds one model; else its path joined by ``.`` (``netD``, ``models.D``)."""
    path: tuple[str, ...]
    """Keys from the container root to this state dict; ``()`` when the root is the state dict."""
    tensors: Mapping[str, torch.Tensor]
    """Raw keys as stored (prefixes kept), tensor values only, in stored order; lazy for safetensors."""
    torch_metadata: Any | None = None
    """The ``_metadata`` attribute of a torch state dict (module versions), or None."""


@dataclass
class Checkpoint:
    """A loaded checkpoint file."""

    path: Path
    format: str
    """``torch-zip``, ``torch-legacy``, ``torch-sharded`` (a ``.bin.index.json``), ``safetensors``,
    ``safetensors-sharded``, or ``pickle`` (a plain ``pickle.dump`` file, read only with ``unsafe_load``)."""
    models: list[ModelState]
    container: Any
    """The whole loaded object for torch files (to write back with changes); None for safetensors."""
    metadata: dict[str, str] = field(default_factory=dict)
    """The safetensors ``__metadata__`` (``{}`` for torch files)."""
    extras: dict[str, int | float | str | bool] = field(default_factory=dict)
    """Scalar top-level entries of a wrapper dict (``step``, ``epoch``, ...)."""


def display_name(raw_key: str) -> str:
    """``raw_key`` without DataParallel/compile prefixes: ``module._orig_mod.fc.weight`` → ``fc.weight``."""
    name = raw_key
    while True:
        for prefix in _DISPLAY_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix):]
                break
        else:
            return name


def find_models(container: object, shown: str, key: str | None) -> list[ModelState]:
    """Every state dict in a loaded torch object (or the one under ``key``), as :class:`ModelState`."""
    found = wrappers.find_state_dicts(container, shown, key)
    return [_model(path, state, named=len(found) > 1) for path, state in found]


def _model(path: tuple[str, ...], state: Mapping[str, Any], named: bool) -> ModelState:
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return ModelState(".".join(path) if named else "", path, tensors, getattr(state, "_metadata", None))
