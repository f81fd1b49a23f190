"""Find the state dicts inside whatever a checkpoint file unpickled to.

A checkpoint is often a wrapper: ``{"state_dict": ...}``, ``{"model_state_dict": ...,
"optimizer_state_dict": ..., "epoch": 3}``, ``{"netG": ..., "netD": ..., "optG": ..., "step": 100}``,
a Lightning ``.ckpt`` with ``optimizer_states`` lists. A *state dict* is a mapping of names to tensors;
:func:`find_state_dicts` looks for them a few levels deep (optimizer and scheduler states left out), or
follows a dotted ``--key``. Pure functions on loaded objects: no file access here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from sninspect.errors import InputError, UnknownKeyError, UsageError, option

SEARCH_DEPTH = 3
"""How deep :func:`find_state_dicts` looks inside wrapper dicts for state dicts."""

SKIPPED_KEY_PARTS = ("optim", "scheduler", "scaler")
"""Entries whose key contains one of these are never searched for models."""

EXTRA_TENSOR_KEYS = ("step", "global_step", "epoch", "iteration")
"""0-dim tensors under these top-level keys are reported as extras (numbers)."""

Found = tuple[tuple[str, ...], Mapping[str, Any]]
"""Where a state dict is (keys from the root) and the state dict itself."""


def find_state_dicts(container: object, shown: str, key: str | None) -> list[Found]:
    """``(path, state dict)`` of every model in ``container`` (or under dotted ``key``), in container order.

    Raises :class:`UsageError` for a ``key`` that is missing or holds no weights, :class:`InputError`
    when nothing holds tensors; ``shown`` is the file name for those messages.
    """
    if isinstance(container, torch.Tensor):
        raise InputError(f"{shown}: holds a single tensor, not a state dict (expected a dict of name -> "
                         "tensor, e.g. torch.save(model.state_dict(), ...))")
    start: tuple[str, ...] = ()
    root = container
    if key is not None:
        start, root = _follow(container, key, shown)
        if _is_optimizer_state(root):
            raise UsageError(f"{shown}: {option('key', repr(key))} is an optimizer state, not model weights "
                             f"(keys holding tensors: {_available(container)})")
        if isinstance(root, torch.Tensor) or not (_children_any(root) or isinstance(root, torch.nn.Module)):
            raise UsageError(f"{shown}: {option('key', repr(key))} leads to a {type(root).__name__} value, "
                             f"not a dict of tensors (keys holding tensors: {_available(container)})")
    found = list(_search(root, start, len(start)))
    if not found and key is not None:
        found = list(_search(root, start, 0))  # the user pointed deeper than the automatic search goes
    if not found:
        found = _loose_tensors(root, start)
    if not found:
        raise InputError(f"{shown}: no tensors found (top-level keys: {_keys(root)}; expected a state dict, "
                         f"or pass {option('key')})")
    return found


def extras(container: object) -> dict[str, int | float | str | bool]:
    """Scalar top-level entries, and 0-dim step/epoch tensors as numbers."""
    out: dict[str, int | float | str | bool] = {}
    if not isinstance(container, Mapping):
        return out
    for k, v in container.items():
        if isinstance(v, (bool, int, float, str)):
            out[str(k)] = v
        elif (isinstance(v, torch.Tensor) and v.dim() == 0 and str(k) in EXTRA_TENSOR_KEYS
              and not v.is_complex()):
            item = v.item()
            if isinstance(item, (bool, int, float)):
                out[str(k)] = item
    return out


def short(items: Sequence[str], limit: int = 12) -> str:
    """``a, b, c and 9 more``: a list for a one-line message."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _is_state_dict(obj: object) -> bool:
    """A mapping of string keys to tensors (the shape of ``module.state_dict()``), at least one tensor.

    ``*_extra_state`` entries (``Module.get_extra_state``) may hold anything.
    """
    if not isinstance(obj, Mapping) or not obj:
        return False
    tensors = 0
    for k, v in obj.items():
        if not isinstance(k, str):
            return False
        if isinstance(v, torch.Tensor):
            tensors += 1
        elif not k.endswith("_extra_state"):
            return False
    return tensors > 0


def _is_optimizer_state(obj: object) -> bool:
    return isinstance(obj, Mapping) and "state" in obj and "param_groups" in obj


def _skipped(key: object) -> bool:
    text = str(key).lower()
    return any(part in text for part in SKIPPED_KEY_PARTS)


def _children(obj: object) -> Iterator[tuple[str, object]]:
    if isinstance(obj, Mapping):
        yield from ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        yield from ((str(i), v) for i, v in enumerate(obj))


def _search(obj: object, at: tuple[str, ...], depth: int) -> Iterator[Found]:
    """State dicts inside ``obj`` (not inside optimizer states or skipped keys), in container order.

    A whole pickled module (``torch.save(model)``, readable with ``unsafe_load``) counts as its state dict.
    """
    if isinstance(obj, torch.nn.Module):
        state = obj.state_dict()
        if state:
            yield at, state
        return
    if _is_state_dict(obj):
        assert isinstance(obj, Mapping)
        yield at, obj
        return
    if depth >= SEARCH_DEPTH or _is_optimizer_state(obj):
        return
    for k, v in _children(obj):
        if not _skipped(k):
            yield from _search(v, (*at, k), depth + 1)


def _loose_tensors(obj: object, at: tuple[str, ...]) -> list[Found]:
    """A mapping's own tensors as its one model, when no state dict was found: a state dict saved with
    other entries beside the weights (``{"fc.weight": ..., "epoch": 3}``)."""
    if isinstance(obj, Mapping) and not _is_optimizer_state(obj) and any(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return [(at, obj)]
    return []


def _children_any(obj: object) -> bool:
    return isinstance(obj, (Mapping, list, tuple))


def _follow(container: object, key: str, shown: str) -> tuple[tuple[str, ...], object]:
    """The entry at dotted ``key``; a key that itself contains dots is matched whole first."""
    parts = key.split(".")
    at: tuple[str, ...] = ()
    obj = container
    while parts:
        for n in range(len(parts), 0, -1):
            part = ".".join(parts[:n])
            child = _child(obj, part)
            if child is not _MISSING:
                at, obj, parts = (*at, part), child, parts[n:]
                break
        else:
            raise UnknownKeyError(f"{shown}: no entry {key!r} (keys holding tensors: {_available(container)})")
    return at, obj


_MISSING = object()


def _child(obj: object, part: str) -> object:
    if isinstance(obj, Mapping):
        if part in obj:
            return obj[part]
        for k, v in obj.items():  # non-string keys (ints) spelled as text
            if str(k) == part:
                return v
        return _MISSING
    if isinstance(obj, (list, tuple)) and part.isdigit() and int(part) < len(obj):
        return obj[int(part)]
    return _MISSING


def _available(container: object) -> str:
    """Dotted paths of the state dicts in ``container`` (optimizer states left out), for messages."""
    paths: list[str] = []

    def walk(obj: object, at: tuple[str, ...], depth: int) -> None:
        if _is_state_dict(obj) or isinstance(obj, torch.nn.Module):
            paths.append(".".join(at) or "(the root)")
        elif depth < SEARCH_DEPTH and not _is_optimizer_state(obj):
            for k, v in _children(obj):
                walk(v, (*at, k), depth + 1)

    walk(container, (), 0)
    return short(paths) if paths else "none"


def _keys(obj: object) -> str:
    if isinstance(obj, Mapping):
        return short([str(k) for k in obj]) if obj else "none, the dict is empty"
    return f"none, it holds a {type(obj).__name__}"
