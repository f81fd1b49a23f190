"""Watch SN while a model trains: audit it every N steps, log the numbers, warn when a rule breaks.

>>> monitor = SNMonitor(netD, every=100, log="runs/sn.jsonl", tensorboard="runs/tb")
>>> for step in range(1, steps + 1):
...     train_one_step()
...     monitor.step(step)          # audits at steps 100, 200, ...; nothing in between
>>> monitor.close()

Each audit is :func:`sninspect.analyze` of the live module: on the module's device, from its state
dict (no forward, no power step, no copy to the CPU, the RNG untouched). The audit is judged against
``rules`` (the defaults of ``sninspect check``); a broken rule is a :class:`SNHealthWarning`, or with
``fail_fast`` an :class:`SNHealthError`. The latest audit is ``monitor.last``. Files are written only
where asked: with ``log``, every audit appends one record to that JSON-lines file
(:mod:`sninspect.audit.runs.log`; ``sninspect report run.jsonl`` shows it as a training run); with a
TensorBoard writer or folder, scalars go under ``sninspect/``.

The log is append-only: an existing file is continued, never truncated (a resumed run appends its
records after the old ones). Each record is one ``O_APPEND`` write (:func:`sninspect.io.write.append_line`),
so a reader never sees half a record except a last line still being written, which it skips.
"""

from __future__ import annotations

import json
import operator
import os
import stat
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sninspect.audit.options import Options, as_rules, with_overrides
from sninspect.audit.runs.log import log_record
from sninspect.audit.sources import analyze, check
from sninspect.errors import OutputError, SninspectError, UsageError
from sninspect.io.files import printable
from sninspect.io.write import append_line
from sninspect.results.check import Rules, Verdict
from sninspect.results.report import Report

__all__ = ["SNHealthError", "SNHealthWarning", "SNMonitor"]

TB_PREFIX = "sninspect"
"""TensorBoard tag prefix: ``sninspect/sigma_effective/main.2.weight``, ``sninspect/lipschitz/...``."""

TB_LAYER_NUMBERS = ("sigma_effective", "sigma_rel_error", "cos_error_u", "cos_error_v", "sigma_exact")
"""Per-layer numbers written to TensorBoard (the log has every JSON field)."""


class SNHealthWarning(UserWarning):
    """An audit during training broke a rule (σ_eff above the limit, a stale u, ...)."""


class SNHealthError(SninspectError):
    """An audit during training broke a rule and the monitor was asked to stop (``fail_fast``)."""


class SNMonitor:
    """Audit ``model`` every ``every`` steps (see the module docstring).

    ``model``: an ``nn.Module`` (or a dict of modules, ``{"netD": D, "netG": G}``).
    ``rules``: a :class:`~sninspect.Rules`, a mapping of its fields, or None for the defaults.
    ``log``: the JSON-lines file appended to (None, the default: no file; the latest audit stays in
    ``last`` and a broken rule still warns). ``tensorboard``: a
    ``torch.utils.tensorboard.SummaryWriter``, a folder to create one in, or None.
    ``options``/``overrides``: how to audit, as for :func:`sninspect.analyze` (``bound_tol=0.05``).
    ``bounds``: compute the certified conv bounds (and the network's operator product) at each audit;
    None (the default): only when a rule reads them (``max_lipschitz``). Spectra, σ̂, σ_eff and cosine
    errors are always audited; a bound not computed is null in the log, its layer noted so.
    """

    def __init__(self, model: torch.nn.Module | Mapping[str, Any], every: int = 100, *,
                 rules: Rules | Mapping[str, Any] | None = None, log: str | os.PathLike[str] | None = None,
                 tensorboard: Any = None, fail_fast: bool = False, options: Options | None = None,
                 bounds: bool | None = None, **overrides: object) -> None:
        check_every(every)
        if bounds is not None and not isinstance(bounds, bool):
            raise UsageError(f"bounds={bounds!r}: expected True, False or None (bounds only when a rule reads them)")
        self.model = model
        self.every = every
        self.rules = as_rules(rules)
        self.log = Path(os.fspath(log)) if log is not None else None
        self.fail_fast = fail_fast
        wanted = self.rules.max_lipschitz is not None if bounds is None else bounds
        self.options = with_overrides(options, {**overrides, "rules": self.rules, "bounds": wanted})
        self._writer, self._own_writer = _writer(tensorboard)
        if self.log is not None:  # after the writer: a SummaryWriter in runs/tb makes runs/ for runs/sn.jsonl
            try:
                _check_log(self.log)
            except OutputError:
                self.close()
                raise
        self.last: Report | None = None
        """The latest audit."""
        self.last_step: int | None = None
        self.audits = 0

    def step(self, global_step: int) -> Report | None:
        """Call once per training step: audits when ``global_step`` is a multiple of ``every`` and
        returns the report; otherwise returns None at once."""
        global_step = _step_number(global_step)
        if global_step % self.every:
            return None
        return self.audit(global_step)

    def audit(self, global_step: int) -> Report:
        """Audit now (whatever the step), log, and judge."""
        global_step = _step_number(global_step)
        start = time.perf_counter()
        report = analyze(self.model, self.options)
        verdict = check(report, self.rules)
        seconds = time.perf_counter() - start
        if self.log is not None:
            record = log_record(global_step, report, verdict, time=time.time(), audit_seconds=seconds)
            append_line(self.log, json.dumps(record, allow_nan=False, separators=(",", ":")))
        if self._writer is not None:
            _scalars(self._writer, report, verdict, global_step)
        self.last, self.last_step = report, global_step
        self.audits += 1
        self._judge(verdict, global_step)
        return report

    def close(self) -> None:
        """Flush TensorBoard, and close the writer when the monitor made it."""
        if self._writer is not None:
            self._writer.flush()
            if self._own_writer:
                self._writer.close()

    def __enter__(self) -> SNMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _judge(self, verdict: Verdict, step: int) -> None:
        if verdict.passed:
            return
        lines = "; ".join(v.message for v in verdict.violations[:5])
        more = f" (and {len(verdict.violations) - 5} more)" if len(verdict.violations) > 5 else ""
        message = f"sninspect: step {step}: {len(verdict.violations)} SN rule(s) broken: {lines}{more}"
        if self.fail_fast:
            raise SNHealthError(message)
        warnings.warn(message, SNHealthWarning, stacklevel=3)


def check_every(every: Any) -> None:
    """``every`` must be a positive int (also checked where a callback is built, before training)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UsageError(f"every={every!r}: expected a positive whole number of steps")


_RECORD_START = b'{"sninspect_monitor"'


def _check_log(path: Path) -> None:
    """Refuse, when the monitor is built (before training starts), a log it could not append to: a
    symbolic link, a folder, a FIFO or any other non-regular file, a file it may not write, a missing
    folder or one it may not create the file in, and an existing file that is not a monitor log
    (appending to a user's checkpoint or notes would damage it)."""
    shown = printable(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as err:
        raise OutputError(f"log={shown}: cannot look it up: {err.strerror or err} (check the path)") from None
    if info is None:
        _check_log_folder(path.parent, shown)
        return
    if stat.S_ISLNK(info.st_mode):
        raise OutputError(f"log={shown}: is a symbolic link (to {printable(os.readlink(path))}); the monitor "
                          "appends to a regular file only (give the real path, or remove the link)")
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"log={shown}: is a folder (give the path of a .jsonl file to append to)")
    if not stat.S_ISREG(info.st_mode):
        what = "a named pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
        raise OutputError(f"log={shown}: is {what} (give the path of a .jsonl file to append to)")
    if not os.access(path, os.W_OK):
        raise OutputError(f"log={shown}: is not writable (check its permissions, or pick another path)")
    try:
        with open(path, "rb") as file:
            head = file.read(len(_RECORD_START))
    except OSError as err:
        raise OutputError(f"log={shown}: cannot read the existing file: {err.strerror or err}") from None
    if head and head != _RECORD_START:
        raise OutputError(f"log={shown}: exists and is not an SNMonitor log (it does not start with a "
                          "monitor record); refusing to append to it: pick a new path")


def _check_log_folder(folder: Path, shown: str) -> None:
    """The folder a new log is created in exists, is a folder, and may be written."""
    try:
        is_folder = stat.S_ISDIR(os.stat(folder).st_mode)
    except FileNotFoundError:
        raise OutputError(f"log={shown}: folder {printable(folder)} does not exist (create it first)") from None
    except OSError as err:
        raise OutputError(f"log={shown}: cannot look up folder {printable(folder)}: {err.strerror or err} "
                          "(check the path)") from None
    if not is_folder:
        raise OutputError(f"log={shown}: {printable(folder)} is not a folder (give a path inside a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"log={shown}: cannot create it: folder {printable(folder)} is not writable (check "
                          "its permissions, or pick another path)")


def _step_number(step: Any) -> int:
    """``step`` as an int (an int, a NumPy integer or a 0-d integer tensor); anything else is a UsageError
    naming the step (a string, a float such as ``2.0`` or NaN is not a training step to log)."""
    if isinstance(step, bool):
        raise UsageError(f"step {step!r}: expected the whole number of the training step")
    try:
        return operator.index(step)
    except TypeError:
        raise UsageError(f"step {str(step)[:40]!r} ({type(step).__name__}): expected the whole number of the "
                         "training step (an int, e.g. trainer.global_step)") from None


def _writer(tensorboard: Any) -> tuple[Any, bool]:
    """``(writer, made here)`` from a SummaryWriter-like object, a folder, or None."""
    if tensorboard is None:
        return None, False
    if hasattr(tensorboard, "add_scalar"):
        return tensorboard, False
    if not isinstance(tensorboard, (str, os.PathLike)):
        raise UsageError(f"tensorboard={type(tensorboard).__name__}: expected a SummaryWriter, a folder or None")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise UsageError("tensorboard=: needs the tensorboard package (pip install 'sninspect[tensorboard]')"
                         ) from err
    return SummaryWriter(log_dir=os.fspath(tensorboard)), True


def _scalars(writer: Any, report: Report, verdict: Verdict, step: int) -> None:
    """Per-layer numbers, the network bound and the count of broken rules at ``step``."""
    for layer in report.layers:
        if not layer.has_sn or layer.error is not None:
            continue
        for quantity in TB_LAYER_NUMBERS:
            value = getattr(layer, quantity)
            if value is not None:
                writer.add_scalar(f"{TB_PREFIX}/{quantity}/{layer.name}", value, step)
    bound = report.primary.lipschitz
    for quantity in ("matrix_product", "operator_product"):
        value = getattr(bound, quantity)
        if value is not None:
            writer.add_scalar(f"{TB_PREFIX}/lipschitz/{quantity}", value, step)
    writer.add_scalar(f"{TB_PREFIX}/violations", len(verdict.violations), step)
