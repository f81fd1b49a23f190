"""Several checkpoints: expand folders into checkpoint files, audit each, order them as a run.

The I/O half of a training run (listing folders, modification times); the ordering and the series
are pure and live in :mod:`sninspect.audit.runs.trend`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from sninspect.audit import checks
from sninspect.audit.layers.pipeline import analyze
from sninspect.audit.options import Options
from sninspect.audit.runs import trend
from sninspect.audit.runs.log import reports_from_log, tell
from sninspect.errors import InputError
from sninspect.io.files import printable
from sninspect.io.monitor_log import is_log
from sninspect.io.suffixes import CHECKPOINT_SUFFIXES, INDEX_SUFFIX
from sninspect.results.check import Rules, Verdict
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


def audit(paths: Sequence[Path], options: Options, *, progress: ProgressHook | None = None,
          failures: list[InputError] | None = None, notes: list[str] | None = None) -> list[Report]:
    """``analyze`` each path, in the order given, advancing ``progress``; a monitor log
    (``*.jsonl``) gives the report of each of its records instead (``notes`` collects its skipped
    torn lines; without a list, each is a warning).

    With ``failures`` (a list to fill), a checkpoint that cannot be read is appended there and the
    others are still audited; without it, the first such error is raised. A single path always
    raises: there is nothing else to report."""
    reports = []
    for path in paths:
        if progress is not None:
            progress.start(path.name)
        try:
            if is_log(path):
                logged, skipped = reports_from_log(path, options.rules)
                reports.extend(logged)
                tell(skipped, notes)
            else:
                reports.append(analyze(path, _announcing(options, path, progress)))
        except InputError as err:
            if failures is None or len(paths) == 1:
                raise
            failures.append(err)
        if progress is not None:
            progress.advance()
    return reports


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


def check(paths: Sequence[Path], options: Options, rules: Rules, *,
          progress: ProgressHook | None = None) -> list[Verdict]:
    """Audit and judge each checkpoint; one that cannot be read gets an ``unreadable`` verdict
    instead of stopping the others (usage errors, like an unknown ``--key``, still raise)."""
    verdicts = []
    options = replace(options, rules=rules)  # each report's verdicts are the ones judged here
    for path in paths:
        if progress is not None:
            progress.start(path.name)
        try:
            reports = reports_from_log(path, rules)[0] if is_log(path) else [analyze(path, options)]
        except InputError as err:
            verdicts.append(checks.unreadable(str(path), str(err)))
        else:
            verdicts.extend(checks.check(report, rules) for report in reports)
        if progress is not None:
            progress.advance()
    return verdicts
