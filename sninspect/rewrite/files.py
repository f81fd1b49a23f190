"""The file side of strip, apply and convert: load a checkpoint, rewrite every model in it, keep the
rest of the container and write the result with ``io.save_checkpoint`` (atomic; never over the
input). Nothing here prints."""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum

from sninspect._version import __version__
from sninspect.errors import UsageError, flag
from sninspect.io.inputs import InputSet
from sninspect.io.load import TORCH_SUFFIXES, ModelState, load_checkpoint, save_checkpoint
from sninspect.rewrite.container import safetensors_payload, torch_payload
from sninspect.rewrite.options import RewriteOptions
from sninspect.rewrite.state import State, StateRewrite, copy_metadata
from sninspect.rewrite.summary import Rewrite

PathLike = str | os.PathLike[str]


class OutputFormat(StrEnum):
    """What a rewrite writes, decided by the output's extension."""

    torch = "torch"
    """``torch.save``: the original container, each model's state replaced."""
    safetensors = "safetensors"
    """Tensors and string metadata only."""


def output_format(output: PathLike) -> OutputFormat:
    """``torch`` or ``safetensors``, from the output's extension (whatever the input was)."""
    suffix = os.fspath(output).lower()
    if suffix.endswith(".safetensors"):
        return OutputFormat.safetensors
    if suffix.endswith(TORCH_SUFFIXES):
        return OutputFormat.torch
    raise UsageError(f"{os.fspath(output)}: unknown output extension; use .pt, .pth, .ckpt, .bin or "
                     ".safetensors")


def rewrite_file(
    operation: str, path: PathLike, output: PathLike, rewrite: Callable[[State, str], StateRewrite], *,
    provenance: dict[str, str], options: RewriteOptions,
) -> Rewrite:
    """Load ``path``, rewrite every model in it, rebuild the container for the output format and
    (unless ``options.dry_run``) write it atomically."""
    fmt = output_format(output)
    force, dry_run = options.force, options.dry_run
    checkpoint = load_checkpoint(path, key=options.key, unsafe_load=options.unsafe_load)
    several = len(checkpoint.models) > 1
    done: list[tuple[ModelState, StateRewrite]] = []
    for model in checkpoint.models:
        state = State(dict(model.tensors), copy_metadata(model.torch_metadata))
        done.append((model, rewrite(state, model.name + "." if several else "")))
    changes = [c for _, r in done for c in r.changes]
    notes = [n for _, r in done for n in r.notes]
    warnings = [w for _, r in done for w in r.warnings]
    if not any(c.source != c.target for c in changes):
        warnings.append(f"nothing to {operation}: the output is a copy of the input")
    drop_optimizer = not options.keep_optimizer and any(c.source != c.target for c in changes)
    metadata: dict[str, str] | None = None
    payload: object
    if fmt is OutputFormat.torch:
        payload, more = torch_payload(checkpoint, done, drop_optimizer)
    else:
        stamp = {"operation": operation, "source": os.path.basename(os.fspath(path)), **provenance,
                 "version": __version__}
        payload, metadata, more = safetensors_payload(checkpoint, done, stamp, drop_optimizer)
    notes += more
    inputs = InputSet.of([path])  # the index's shards too: none of them is ever written over
    if not dry_run:
        save_checkpoint(output, payload, inputs=inputs, force=force, metadata=metadata)
    elif os.path.exists(output):
        hit = inputs.find(output)
        warnings.append(f"{os.fspath(output)} is the input {os.fspath(hit)}: the real run will refuse it"
                        if hit is not None else
                        f"{os.fspath(output)} exists: the real run needs {flag('force')}" if not force else
                        f"{os.fspath(output)} exists and will be replaced ({flag('force')})")
    return Rewrite(operation, os.fspath(path), os.fspath(output), fmt.value, tuple(changes), tuple(notes),
                   tuple(warnings), written=not dry_run)
