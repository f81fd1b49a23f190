"""The rest of a checkpoint around the rewritten models: the container rebuilt for a ``.pt`` file or
flattened into safetensors (tensors + string metadata), optimizer state dropped or kept."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from sninspect.errors import InputError, OutputError, flag, option
from sninspect.io.files import printable
from sninspect.io.load import Checkpoint, ModelState
from sninspect.rewrite.state import State, StateRewrite
from sninspect.rewrite.summary import short

MAX_NESTING = 100
"""How deep containers (dicts, lists, tuples, sets) may nest in a checkpoint that is rewritten: writing it
recurses once per level (real checkpoints nest a few levels; Lightning's hyper-parameters a dozen)."""

MAX_JSON_ENTRIES = 1_000_000
"""How many entries a wrapper entry may expand to when written as JSON metadata (a shared reference
counts at each use: a small pickle of shared references can expand to 2^n)."""


@dataclass(frozen=True)
class Extent:
    """How far a container reaches: its longest chain of nested containers, and its entries counted at
    every use (capped just above :data:`MAX_JSON_ENTRIES`), as ``json.dumps`` would walk them."""

    height: int
    expanded: int


def _parts(value: object) -> list[object]:
    if isinstance(value, Mapping):
        return [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return []


def extents(root: object) -> dict[int, Extent]:
    """The :class:`Extent` of ``root`` and of every container in it, by ``id``. Iterative, each distinct
    container visited once (shared references are not walked again; a reference back into a container
    being walked, a cycle, adds nothing), so a hostile pickle's shape costs one pass over what it holds."""
    done: dict[int, Extent] = {}
    open_: set[int] = set()
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        value, children_done = stack.pop()
        key = id(value)
        if not children_done:
            if key in done or key in open_ or not _parts(value):
                continue
            open_.add(key)
            stack.append((value, True))
            stack.extend((part, False) for part in _parts(value) if id(part) not in done)
            continue
        open_.discard(key)
        height, expanded = 0, 1
        for part in _parts(value):
            inner = done.get(id(part))
            if inner is not None:
                height, expanded = max(height, inner.height), expanded + inner.expanded
            else:
                expanded += 1
        done[key] = Extent(height + 1, min(expanded, MAX_JSON_ENTRIES + 1))
    return done


def check_nesting(container: object, shown: str) -> dict[int, Extent]:
    """Refuse (:class:`InputError`) a container nested deeper than :data:`MAX_NESTING` before anything
    walks or writes it; the extents, for the writers."""
    found = extents(container)
    deepest = found[id(container)].height if id(container) in found else 0
    if deepest > MAX_NESTING:
        raise InputError(f"{shown}: containers nest {deepest} levels deep (more than {MAX_NESTING}): too deep to "
                         "rewrite (a checkpoint nests a few levels; is the file hostile or corrupt?)")
    return found


def _is_optimizer_state(value: object, depth: int = 0) -> bool:
    """An ``optimizer.state_dict()`` (or a list of them, as Lightning saves ``optimizer_states``; one
    level of lists only, so that a hostile DAG of nested lists cannot make this walk 2^n paths)."""
    if isinstance(value, Mapping):
        return "state" in value and "param_groups" in value
    if isinstance(value, list | tuple) and value and depth == 0:
        return all(_is_optimizer_state(v, depth + 1) for v in value)
    return False


def _with_state(original: object, state: State) -> OrderedDict[str, Any]:
    """The rewritten state dict, keeping the original's non-tensor entries (rare) at the end."""
    out: OrderedDict[str, Any] = state.to_state_dict()
    if isinstance(original, Mapping):
        for k, v in original.items():
            if not isinstance(v, Tensor) and k not in out:
                out[k] = v
    return out


def _replace_at(container: object, path: tuple[str, ...], value: object) -> object:
    """``container`` with the entry at ``path`` (io's model paths: dict keys as text, list indices)
    replaced by ``value``; the dicts and lists on the way are copied, the input is untouched."""
    if not path:
        return value
    part, rest = path[0], path[1:]
    if isinstance(container, Mapping):
        key = part if part in container else next((k for k in container if str(k) == part), part)
        copy = type(container)(container) if isinstance(container, dict) else dict(container)
        copy[key] = _replace_at(container[key], rest, value)
        return copy
    assert isinstance(container, list | tuple)  # Precondition: io found a model along this path
    items = list(container)
    items[int(part)] = _replace_at(items[int(part)], rest, value)
    return items if isinstance(container, list) else tuple(items)


def _drop_optimizers(
    container: object, keep: set[tuple[str, ...]], at: tuple[str, ...] = (),
    copies: dict[int, object] | None = None,
) -> tuple[object, list[str]]:
    """``container`` without optimizer states (looked for in nested dicts, not inside ``keep``). A dict
    referenced from several places is rebuilt once and stays shared (``copies``, by ``id``): a pickle of
    shared references is not expanded into a tree. Recursion is bounded by :func:`check_nesting`."""
    if not isinstance(container, Mapping) or at in keep:
        return container, []
    copies = {} if copies is None else copies
    if id(container) in copies:
        return copies[id(container)], []
    out = type(container)() if isinstance(container, dict) else {}
    copies[id(container)] = out
    dropped: list[str] = []
    for k, v in container.items():
        here = (*at, str(k))
        if here not in keep and _is_optimizer_state(v):
            dropped.append(".".join(here))
            continue
        out[k], more = _drop_optimizers(v, keep, here, copies)
        dropped += more
    return out, dropped


def _optimizer_note(dropped: list[str]) -> str:
    return (f"optimizer state dropped ({short(dropped)}): it refers to the SN parameters; "
            f"{flag('keep_optimizer')} keeps it")


def torch_payload(
    checkpoint: Checkpoint, done: list[tuple[ModelState, StateRewrite]], drop_optimizer: bool
) -> tuple[object, list[str]]:
    """The object to ``torch.save``: the original container with each model's state replaced."""
    container: object = checkpoint.container if checkpoint.container is not None else {}
    check_nesting(container, printable(checkpoint.path))
    notes: list[str] = []
    for model, result in done:
        original = _get(checkpoint.container, tuple(model.path))
        container = _replace_at(container, tuple(model.path), _with_state(original, result.state))
    if drop_optimizer:
        container, dropped = _drop_optimizers(container, {tuple(m.path) for m, _ in done})
        if dropped:
            notes.append(_optimizer_note(dropped))
    if checkpoint.format.startswith("safetensors") and checkpoint.metadata:
        notes.append("the safetensors metadata is not carried into a .pt file")
    return container, notes


def _get(container: object, path: tuple[str, ...]) -> object:
    for part in path:
        if isinstance(container, Mapping):
            container = next((v for k, v in container.items() if str(k) == part), None)
        elif isinstance(container, list | tuple) and part.isdigit() and int(part) < len(container):
            container = container[int(part)]
        else:
            return None
    return container


def safetensors_payload(
    checkpoint: Checkpoint, done: list[tuple[ModelState, StateRewrite]], stamp: dict[str, str],
    drop_optimizer: bool,
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Tensors (prefixed by the model when the file holds several) and string metadata: the input's
    safetensors metadata, or the wrapper's JSON-able entries, plus a provenance entry.

    Refuses (:class:`OutputError`) names that collide once flattened (model ``G`` key ``x.weight`` and
    model ``G.x`` key ``weight`` both give ``G.x.weight``), naming both sources: nothing is dropped
    silently."""
    tensors = _flat_tensors(done)
    metadata: dict[str, str] = {str(k): str(v) for k, v in (checkpoint.metadata or {}).items()}
    notes: list[str] = []
    if isinstance(checkpoint.container, Mapping) and not checkpoint.format.startswith("safetensors"):
        sizes = check_nesting(checkpoint.container, printable(checkpoint.path))
        models = {tuple(m.path)[0] for m, _ in done if tuple(m.path)}
        is_model = any(not tuple(m.path) for m, _ in done)  # a flat state dict: its tensors are written
        kept, left, huge = [], [], []
        optimizers = []
        for k, v in checkpoint.container.items():
            if k in models or (is_model and isinstance(v, Tensor)):
                continue
            if _is_optimizer_state(v):
                optimizers.append(str(k))
                continue
            if id(v) in sizes and sizes[id(v)].expanded > MAX_JSON_ENTRIES:
                huge.append(str(k))
                continue
            try:
                metadata[str(k)] = v if isinstance(v, str) else json.dumps(v)
                kept.append(str(k))
            except (TypeError, ValueError):
                left.append(str(k))
        if kept:
            notes.append(f"wrapper entries kept as safetensors metadata (JSON): {short(kept)}")
        if left:
            notes.append(f"safetensors holds tensors and strings only; left out: {short(left)}")
        if huge:
            notes.append(f"left out, more than {MAX_JSON_ENTRIES:,} entries as JSON (shared references expand at "
                         f"each use): {short(huge)}")
        if optimizers:
            notes.append(_optimizer_note(optimizers) if drop_optimizer else
                         f"optimizer state cannot go into safetensors, left out: {short(optimizers)}")
    metadata["sninspect"] = json.dumps(stamp, sort_keys=True)
    return tensors, metadata, notes


def _flat_tensors(done: list[tuple[ModelState, StateRewrite]]) -> dict[str, Tensor]:
    """Every model's tensors under one flat name (``<model>.<key>`` when the file holds several)."""
    several = len(done) > 1
    tensors: dict[str, Tensor] = {}
    source: dict[str, tuple[str, str]] = {}
    clashes: list[str] = []
    for model, result in done:
        prefix = model.name + "." if several else ""
        for key, tensor in result.state.tensors.items():
            name = prefix + key
            if name in source:
                other_model, other_key = source[name]
                clashes.append(f"'{name}' from model '{other_model}' key '{other_key}' and from model "
                               f"'{model.name}' key '{key}'")
                continue
            source[name] = (model.name, key)
            tensors[name] = tensor
    if clashes:
        raise OutputError(f"safetensors is flat and these names would collide (one tensor would be lost): "
                          f"{short(clashes, 3)} (write a .pt file, which keeps the models apart, or pick one "
                          f"model with {option('key')})")
    return tensors
