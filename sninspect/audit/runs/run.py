"""Several checkpoints: expand folders into checkpoint files, audit each, order them as a run.

The I/O half of a training run (listing folders, modification times); the ordering and the series
are pure and live in :mod:`sninspect.audit.runs.trend`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from sninspect.audit import checks
from sninspect.audit.layers.pipeline import analyze
from sninspect.audit.options import Options
from sninspect.audit.runs import trend
from sninspect.audit.runs.log import reports_from_log
from sninspect.errors import ExitCode, InputError
from sninspect.io.files import printable
from sninspect.io.monitor_log import is_log
from sninspect.io.suffixes import CHECKPOINT_SUFFIXES, INDEX_SUFFIX
from sninspect.results.check import Verdict
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend

_SHARD = re.compile(r"-\d+-of-\d+\.(safetensors|bin|pt)$")


class ProgressHook(Protocol):
    """What a long loop reports: the item it starts, and each item done (the CLI passes a progress bar)."""

    def start(self, label: str) -> None: ...

    def advance(self) -> None: ...


def collect(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Each path as given, a folder replaced by the checkpoint files directly in it (sorted; the
    shards of a sharded checkpoint are left to its ``*.index.json``). Missing files are kept: the
    loader gives them their one-line error."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            out.append(path)
            continue
        try:
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and p.name.lower().endswith(CHECKPOINT_SUFFIXES))
        except OSError as err:  # a folder without read permission: unreadable input, exit 3
            raise InputError(f"{printable(path)}: cannot list the folder: {err.strerror or err} (check its "
                             "permissions, e.g. chmod u+rx)") from None
        if any(p.name.lower().endswith(INDEX_SUFFIX) for p in files):
            files = [p for p in files if not _SHARD.search(p.name.lower())]
        if not files:
            raise InputError(f"{path}: folder holds no checkpoint file (looked for "
                             f"{', '.join('*' + s for s in CHECKPOINT_SUFFIXES)})")
        out.extend(files)
    seen: set[Path] = set()
    unique = []
    for path in out:
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


@dataclass(frozen=True)
class Unreadable:
    """An input that could not be read: its path and the error that says why (one line, its exit code)."""

    path: str
    error: InputError

    @property
    def reason(self) -> str:
        return str(self.error)

    @property
    def exit_code(self) -> ExitCode:
        return self.error.exit_code


@dataclass(frozen=True)
class Outcome:
    """What auditing several inputs gave, as black's ``Report``: each input's reports or why it could not
    be read (in the order given), the notes about the run (a monitor log's skipped torn lines), the
    verdicts when judged (``check``), and the one :attr:`exit_code` the command ends with."""

    inputs: int
    """How many inputs were asked for."""
    items: tuple[Report | Unreadable, ...]
    """Per input, in order: its report (a monitor log: one per record), or why it could not be read."""
    notes: tuple[str, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    """``check``'s verdicts (one per report, or an ``unreadable`` one per unreadable input); empty when
    not judged."""

    reports: tuple[Report, ...] = field(init=False)
    """The reports of the inputs that could be read, in order."""
    unreadable: tuple[Unreadable, ...] = field(init=False)
    """The inputs that could not be read, in order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reports", tuple(item for item in self.items if isinstance(item, Report)))
        object.__setattr__(self, "unreadable", tuple(item for item in self.items if isinstance(item, Unreadable)))

    @property
    def exit_code(self) -> ExitCode:
        """The first unreadable input's code (3), else 1 when a verdict fails, else 0."""
        unreadable = self.unreadable
        if unreadable:
            return unreadable[0].exit_code
        if any(not v.passed for v in self.verdicts):
            return ExitCode.CHECK_FAILED
        return ExitCode.OK

    def raise_if_nothing_read(self) -> None:
        """Raise the first input's error when no input could be read: there is nothing to report."""
        if not self.reports and self.unreadable:
            raise self.unreadable[0].error

    def result(self) -> Report | Trend | Separate:
        """The reports as one result (:func:`as_result`)."""
        return as_result(self.reports)


def audit(paths: Sequence[Path], options: Options, *, progress: ProgressHook | None = None,
          keep_going: bool = True) -> Outcome:
    """``analyze`` each path, in the order given, advancing ``progress``; a monitor log
    (``*.jsonl``) gives the report of each of its records instead (its skipped torn lines become the
    outcome's notes).

    A checkpoint that cannot be read is kept in the outcome as :class:`Unreadable` and the others are
    still audited; with ``keep_going=False`` the first such error is raised instead."""
    items: list[Report | Unreadable] = []
    notes: list[str] = []
    for path in paths:
        if progress is not None:
            progress.start(path.name)
        try:
            if is_log(path):
                logged, skipped = reports_from_log(path, options.rules)
                items.extend(logged)
                notes.extend(skipped)
            else:
                items.append(analyze(path, _announcing(options, path, progress)))
        except InputError as err:
            if not keep_going:
                raise
            items.append(Unreadable(str(path), err))
        if progress is not None:
            progress.advance()
    return Outcome(len(paths), tuple(items), tuple(notes))


def _announcing(options: Options, path: Path, progress: ProgressHook | None) -> Options:
    """``options`` whose per-layer callback names the checkpoint and the layer on the progress line."""
    if progress is None:
        return options
    return replace(options, on_layer=lambda layer: progress.start(f"{path.name} · {layer}"))


def as_result(reports: Sequence[Report]) -> Report | Trend | Separate:
    """One report as itself; several of one model as a training run, in order (:func:`order`);
    several unrelated ones each on its own, with the reason (:func:`sninspect.audit.runs.trend.not_a_run`)."""
    # Precondition: at least one report (collect() raises on an empty folder, typer on no argument).
    assert reports, "no report to show"
    if len(reports) == 1:
        return reports[0]
    why = trend.not_a_run(reports)
    return order(reports) if why is None else Separate(tuple(reports), why)


def order(reports: Sequence[Report]) -> Trend:
    """The reports as a training run (step entry, else file-name number, else modification time)."""
    return trend.build(reports, modification_times(reports))


def modification_times(reports: Sequence[Report]) -> dict[str, float]:
    """``st_mtime`` of each report's checkpoint (0 when it can no longer be read)."""
    times = {}
    for report in reports:
        try:
            times[report.checkpoint] = os.stat(report.checkpoint).st_mtime
        except OSError:
            times[report.checkpoint] = 0.0
    return times


def judged(outcome: Outcome, judge: Callable[[Report], Verdict]) -> Outcome:
    """``outcome`` with its verdicts: ``judge`` of each report, an ``unreadable`` verdict for each input that
    could not be read (in the order given)."""
    verdicts = tuple(judge(item) if isinstance(item, Report) else checks.unreadable(item.path, item.reason)
                     for item in outcome.items)
    return replace(outcome, verdicts=verdicts)
