"""``--model package.module:factory``: build the user's own module, load a checkpoint into it, export it.

This imports and runs the user's code (the factory and the module's forward, traced by
``torch.export``): only on the explicit ``--model`` opt-in. The checkpoint itself is still read with
:func:`~sninspect.io.load.load_checkpoint` (no code from the file); the export is then read back as
data by :func:`~sninspect.io.exported.load_exported`, like any ``.pt2``.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from pathlib import Path

import torch

from sninspect.errors import InputError, UsageError
from sninspect.io.exported import ExportedGraph, MemoryBudget, load_exported
from sninspect.io.files import one_line
from sninspect.io.load import load_checkpoint

__all__ = ["export_user_model"]


def _factory(spec: str):  # noqa: ANN202 (the user's callable)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--model {spec!r}: expected package.module:factory (a callable returning the "
                         "nn.Module, e.g. models.sngan:Discriminator)")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the user's project, as `python -m` would see it
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (Exception, SystemExit) as err:  # the user's import failing is the user's error, said in one line
        raise UsageError(f"--model {spec!r}: cannot import it: {type(err).__name__}: {one_line(err)}") from None
    if not callable(target):
        raise UsageError(f"--model {spec!r}: {attr} is not callable")
    return target


def export_user_model(spec: str, checkpoint: str | os.PathLike[str], input_shape: tuple[int, ...], *,
                      key: str | None = None, unsafe_load: bool = False,
                      budget: MemoryBudget | None = None) -> ExportedGraph:
    """Build ``spec``'s module, load the checkpoint's state dict into it (strict), export it at a batch
    of one input of ``input_shape`` (without the batch axis) in eval mode, and read the export back."""
    factory = _factory(spec)
    ckpt = load_checkpoint(checkpoint, key=key, unsafe_load=unsafe_load, budget=budget)
    if len(ckpt.models) != 1:
        names = ", ".join(m.name or "(top)" for m in ckpt.models)
        raise UsageError(f"{checkpoint}: holds {len(ckpt.models)} models ({names}); pick one with --key")
    try:
        module = factory()
        if not isinstance(module, torch.nn.Module):
            raise UsageError(f"--model {spec!r} returned a {type(module).__name__}, not an nn.Module")
        missing, unexpected = module.load_state_dict(dict(ckpt.models[0].tensors), strict=False)
    except (UsageError, InputError):
        raise
    except (Exception, SystemExit) as err:  # SystemExit: a factory that calls sys.exit()
        raise UsageError(f"--model {spec!r}: building it or loading {Path(checkpoint).name} into it failed: "
                         f"{type(err).__name__}: {one_line(err)}") from None
    if missing or unexpected:
        raise UsageError(f"--model {spec!r} does not match {Path(checkpoint).name}: missing "
                         f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]} (use --key to pick the "
                         "sub-dict, or the factory of the right class)")
    module.eval()
    try:
        program = torch.export.export(module, (torch.zeros(1, *input_shape),))
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
    except (Exception, SystemExit) as err:
        raise UsageError(f"--model {spec!r}: torch.export failed at input 1x{'x'.join(map(str, input_shape))}: "
                         f"{type(err).__name__}: {one_line(err)[:200]}") from None
    buffer.seek(0)
    return load_exported(buffer, shown=f"{Path(checkpoint).name} in {spec}", budget=budget)
