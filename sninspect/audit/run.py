"""Several checkpoints: expand folders into checkpoint files, audit each, order them as a run.

The I/O half of a training run (listing folders, modification times); the ordering and the series
are pure and live in :mod:`sninspect.trend`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from sninspect.audit import checks, trend
from sninspect.audit.pipeline import Options, analyze
from sninspect.cli.progress import Progress
from sninspect.errors import InputError
from sninspect.results.report import Report

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".index.json")
"""Files a folder given on the command line is searched for (not recursively)."""
_SHARD = re.compile(r"-\d+-of-\d+\.(safetensors|bin|pt)$")


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
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.name.lower().endswith(CHECKPOINT_SUFFIXES))
        if any(p.name.lower().endswith(".index.json") for p in files):
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


def audit(paths: Sequence[Path], options: Options, *, progress: Progress | None = None) -> list[Report]:
    """``analyze`` each path, in the order given, advancing ``progress``."""
    reports = []
    for path in paths:
        if progress is not None:
            progress.start(path.name)
        reports.append(analyze(path, options))
        if progress is not None:
            progress.advance()
    return reports


def order(reports: Sequence[Report]) -> trend.Trend:
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


def check(paths: Sequence[Path], options: Options, rules: checks.Rules, *,
          progress: Progress | None = None) -> list[checks.Verdict]:
    """Audit and judge each checkpoint; one that cannot be read gets an ``unreadable`` verdict
    instead of stopping the others (usage errors, like an unknown ``--key``, still raise)."""
    verdicts = []
    for path in paths:
        if progress is not None:
            progress.start(path.name)
        try:
            report = analyze(path, options)
        except InputError as err:
            verdicts.append(checks.unreadable(str(path), str(err)))
        else:
            verdicts.append(checks.check(report, rules))
        if progress is not None:
            progress.advance()
    return verdicts


def write_plots(reports: Sequence[Report], run: trend.Trend | None, folder: Path, fmt: str, *,
                progress: Progress | None = None) -> list[Path]:
    """The figures of each report, and of the run: one checkpoint → ``folder/sigma.png`` ...; several →
    ``folder/<checkpoint>/sigma.png`` ... and ``folder/trend_sigma.png``, ``folder/trend_cos_error.png``."""
    from sninspect.render import plots

    written: list[Path] = []
    if run is not None:
        written += plots.save_figures(plots.trend_figures(run), folder, fmt)
    names = _folder_names(reports) if len(reports) > 1 else [""]
    for report, name in zip(reports, names, strict=True):
        if progress is not None:
            progress.start(Path(report.checkpoint).name)
        written += plots.save_figures(plots.report_figures(report), folder / name if name else folder, fmt)
        if progress is not None:
            progress.advance()
    return written


def _folder_names(reports: Sequence[Report]) -> list[str]:
    """A subfolder name per checkpoint: its file name without the checkpoint suffix, made unique."""
    names: list[str] = []
    for report in reports:
        base = Path(report.checkpoint).name
        for suffix in CHECKPOINT_SUFFIXES:
            if base.lower().endswith(suffix) and len(base) > len(suffix):
                base = base[: -len(suffix)]
                break
        base = re.sub(r"[^\w.+-]", "_", base).lstrip(".") or "checkpoint"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names
