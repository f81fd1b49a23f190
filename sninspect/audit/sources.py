"""What ``sninspect.analyze`` accepts, and how each source becomes a :class:`Checkpoint`.

- a path (``str`` or ``os.PathLike``) of a checkpoint file: loaded by :mod:`sninspect.io.load`;
- a binary file object (``io.BytesIO``, ``open(path, "rb")``): its bytes spooled to a temporary file
  and loaded the same way (:mod:`sninspect.io.streams`), named after the object;
- a state dict (a mapping of names to tensors), or a wrapper around state dicts (``{"model": sd,
  "step": 100}``, ``{"netG": ..., "netD": ...}``): unwrapped exactly as a loaded file is;
- an ``nn.Module`` (or a mapping holding modules): its ``state_dict()``. Reading the state dict runs no
  forward and no parametrization: ``torch.nn.utils.spectral_norm`` keeps ``weight_orig``/``weight_u``/
  ``weight_v`` as a parameter and buffers, ``parametrizations.spectral_norm`` keeps ``original``/``_u``/
  ``_v``; the state dict holds detached views of them (no copy, on the model's device). Reading
  ``module.weight`` instead would run a power step on a parametrized module in training mode.

A folder is a training run, not one checkpoint: :func:`analyze` refuses it with the pointer to
:func:`analyze_run`, which audits every checkpoint in it (or every source of a list) and returns the
:class:`Trend`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, TypeAlias

import torch

from sninspect.audit import checks
from sninspect.audit.layers.pipeline import analyze_checkpoint
from sninspect.audit.memory import budget
from sninspect.audit.options import Options, as_rules, resolve_device, resolve_dtype, with_overrides
from sninspect.audit.runs import run
from sninspect.audit.runs.run import Outcome, ProgressHook
from sninspect.errors import UsageError
from sninspect.io import wrappers
from sninspect.io.checkpoint import Checkpoint, find_models
from sninspect.io.load import load_checkpoint
from sninspect.io.streams import is_file_object, spooled, stream_name
from sninspect.results.check import Rules, Verdict
from sninspect.results.report import Report
from sninspect.results.trend import Trend

__all__ = ["MODULE_FORMAT", "STATE_DICT_FORMAT", "Source", "analyze", "analyze_paths", "analyze_run", "check",
           "check_paths", "trend"]

Source: TypeAlias = "str | os.PathLike[str] | IO[bytes] | Mapping[str, Any] | torch.nn.Module"
"""Anything :func:`analyze` audits."""

MODULE_FORMAT = "module"
"""``Report.format`` of a live ``nn.Module``."""
STATE_DICT_FORMAT = "state-dict"
"""``Report.format`` of an in-memory state dict (or a wrapper around state dicts)."""


def analyze(source: Source, options: Options | None = None, **overrides: object) -> Report:
    """Audit one checkpoint, from any source: a path, a binary file object, a state dict or an
    ``nn.Module``. ``sninspect.analyze(netD).to_dataframe()``.

    ``overrides`` are :class:`Options` fields (``device="cpu"``, ``key="netD"``, ``include="main"``).
    A module or state dict is audited where its tensors are (``device="auto"`` means *their* device
    for in-memory sources: a model training on CUDA is audited on CUDA, and nothing is copied to the
    CPU); its state is not changed (no power step, no buffer written, the RNG untouched).
    A folder raises :class:`~sninspect.errors.UsageError` (a ``ValueError``): use :func:`analyze_run`.
    """
    options = with_overrides(options, overrides)
    dtype = resolve_dtype(options.dtype)
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        if path.is_dir():
            raise UsageError(f"{source}: is a folder, a training run rather than one checkpoint; "
                             "sninspect.analyze_run(folder) audits each checkpoint in it and returns the Trend")
        device = resolve_device(options.device)  # a bad device fails before a long load
        checkpoint = load_checkpoint(path, key=options.key, unsafe_load=options.unsafe_load,
                                     budget=budget(options.max_memory))
        return analyze_checkpoint(checkpoint, options, device=device, dtype=dtype)
    if is_file_object(source):
        shown = stream_name(source)  # type: ignore[arg-type]
        device = resolve_device(options.device)
        with spooled(source, shown) as path:  # type: ignore[arg-type]
            checkpoint = load_checkpoint(path, key=options.key, unsafe_load=options.unsafe_load, shown=shown,
                                         budget=budget(options.max_memory))
            report = analyze_checkpoint(checkpoint, options, device=device, dtype=dtype, name=shown)
            del checkpoint  # the tensors map the temporary file: let them go before it is removed
        return report
    if isinstance(source, (Mapping, torch.nn.Module)):
        checkpoint = in_memory(source, options.key)
        device = _home_device(checkpoint) if options.device == "auto" else resolve_device(options.device)
        return analyze_checkpoint(checkpoint, options, device=device, dtype=dtype, name=str(checkpoint.path))
    raise UsageError(f"cannot audit a {type(source).__name__}: expected a checkpoint path, a binary file "
                     "object, a state dict (name -> tensor) or an nn.Module")


def in_memory(source: Mapping[str, Any] | torch.nn.Module, key: str | None) -> Checkpoint:
    """A module or (wrapped) state dict as a :class:`Checkpoint`, unwrapped as a loaded file is."""
    is_module = isinstance(source, torch.nn.Module)
    label = f"<{type(source).__name__}>" if is_module else "<state dict>"
    models = find_models(source, label, key)
    fmt = MODULE_FORMAT if is_module or _holds_modules(source) else STATE_DICT_FORMAT
    return Checkpoint(Path(label), fmt, models, source, {}, wrappers.extras(source))


def analyze_run(source: str | os.PathLike[str] | Sequence[Source], options: Options | None = None,
                **overrides: object) -> Trend:
    """Audit a training run and put it in order: a folder of checkpoints, a monitor log
    (``run.jsonl`` written by :class:`sninspect.monitor.SNMonitor`), or a list of sources (paths, file
    objects, state dicts, modules). Ordered as ``sninspect report`` orders a run: by the step entry
    saved in every checkpoint, else the number in every file name, else the modification time."""
    options = with_overrides(options, overrides)
    if isinstance(source, (str, os.PathLike)):
        outcome = analyze_paths([source], options, keep_going=False)
        for note in outcome.notes:  # a monitor log's torn last line
            warnings.warn(note, UserWarning, stacklevel=2)
        return run.order(outcome.reports)
    if isinstance(source, (Mapping, torch.nn.Module)) or is_file_object(source):
        raise UsageError("analyze_run takes a folder, a monitor log or a list of sources; one source is "
                         "one checkpoint: sninspect.analyze(source)")
    if not isinstance(source, Sequence):
        raise UsageError(f"analyze_run: cannot read a {type(source).__name__} as a run (expected a folder, a "
                         "monitor log or a list of sources)")
    if not source:
        raise UsageError("analyze_run: an empty list (expected a folder, a monitor log or some sources)")
    return trend([analyze(item, options) for item in source])


def analyze_paths(paths: Sequence[str | os.PathLike[str]], options: Options, *, progress: ProgressHook | None = None,
                  keep_going: bool = True) -> Outcome:
    """Audit checkpoint files, folders of them and monitor logs, in the order given: what ``sninspect
    report`` shows (``outcome.result()``) and :func:`analyze_run` orders. An input that cannot be read is
    kept in the outcome (``keep_going=False``: raised) and the others are still audited; when none can be
    read, the first one's error is raised: there is nothing to report."""
    outcome = run.audit(run.collect(paths), options, progress=progress, keep_going=keep_going)
    outcome.raise_if_nothing_read()
    return outcome


def check_paths(paths: Sequence[str | os.PathLike[str]], options: Options, rules: Rules | Mapping[str, Any] | None,
                *, progress: ProgressHook | None = None) -> Outcome:
    """Audit as :func:`analyze_paths` and judge every report by ``rules`` as :func:`check` does (the
    reports' own verdicts by the same rules): what ``sninspect check`` prints. An input that cannot be
    read gets an ``unreadable`` verdict (even when none can), and ``outcome.exit_code`` is 3, else 1 when
    a rule breaks."""
    rules = as_rules(rules)
    outcome = run.audit(run.collect(paths), replace(options, rules=rules), progress=progress)
    return run.judged(outcome, lambda report: check(report, rules))


def trend(reports: Sequence[Report]) -> Trend:
    """Several reports of one model as a training run: ``sninspect.trend([r100, r200, r300])``."""
    if not reports:
        raise UsageError("trend: no report (expected the reports of a training run)")
    odd = next((r for r in reports if not isinstance(r, Report)), None)
    if odd is not None:
        raise UsageError(f"trend: got a {type(odd).__name__} where a Report was expected (from sninspect.analyze)")
    return run.order(reports)


def check(report: Report, rules: Rules | Mapping[str, Any] | None = None) -> Verdict:
    """Judge ``report`` as ``sninspect check`` does: ``sninspect.check(report).passed``.

    ``rules``: a :class:`Rules`, a mapping of its fields (``{"max_sigma": 1.05}``: the others keep
    their defaults), or None for the defaults."""
    if not isinstance(report, Report):
        raise UsageError(f"check: got a {type(report).__name__}, expected a Report (from sninspect.analyze)")
    return checks.check(report, as_rules(rules))


def _holds_modules(source: object) -> bool:
    return isinstance(source, Mapping) and any(isinstance(v, torch.nn.Module) for v in source.values())


def _home_device(checkpoint: Checkpoint) -> torch.device:
    """Where an in-memory model's weights are: the device of its first floating-point tensor (CPU when
    it has none)."""
    for model in checkpoint.models:
        for tensor in model.tensors.values():
            if tensor.is_floating_point() and tensor.device.type != "meta":
                return tensor.device
    return torch.device("cpu")


