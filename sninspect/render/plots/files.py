"""Writing figures to files: the only file I/O of the plots."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import assert_never

from matplotlib.figure import Figure

from sninspect.audit.run import CHECKPOINT_SUFFIXES, ProgressHook
from sninspect.errors import OutputError
from sninspect.io.write import open_atomic
from sninspect.render.formats import PlotFormat
from sninspect.render.plots.report import report_figures
from sninspect.render.plots.trend import trend_figures
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend


def write_plots(result: Report | Trend | Separate, folder: Path, fmt: PlotFormat | str, *,
                progress: ProgressHook | None = None, force: bool = False) -> list[Path]:
    """The figures of a report, or of a run and each of its reports: one checkpoint →
    ``folder/sigma.png`` ...; a run → ``folder/<checkpoint>/sigma.png`` ... and ``folder/trend_sigma.png``,
    ``folder/trend_cos_error.png``; unrelated checkpoints → ``folder/<checkpoint>/sigma.png`` ... only.
    Existing figures are replaced only with ``force``."""
    written: list[Path] = []
    if isinstance(result, (Trend, Separate)):
        if isinstance(result, Trend):
            written += save_figures(trend_figures(result), folder, fmt, force=force)
        reports = list(result.reports)
        names = _folder_names(reports) if len(reports) > 1 else [""]
    else:
        reports, names = [result], [""]
    for report, name in zip(reports, names, strict=True):
        if progress is not None:
            progress.start(Path(report.checkpoint).name)
        written += save_figures(report_figures(report), folder / name if name else folder, fmt, force=force)
        if progress is not None:
            progress.advance()
    return written


def save_figures(figures: Mapping[str, Figure], folder: str | os.PathLike[str],
                 fmt: PlotFormat | str = PlotFormat.png, *, dpi: int = 120, force: bool = False) -> list[Path]:
    """Write each figure as ``folder/<name>.<fmt>`` through the one atomic writer; the folder is
    created. An existing figure is replaced only with ``force``: without it, every one already there
    is named before anything is written. Returns the paths written."""
    fmt = PlotFormat(fmt)
    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{target}: cannot create the plot folder ({err.strerror or err})") from err
    paths = {name: target / f"{name}.{fmt.value}" for name in figures}
    present = [p.name for p in paths.values() if os.path.lexists(p)]
    if present and not force:
        raise OutputError(f"{target}: already holds {', '.join(present)} (pass --force to overwrite, or "
                          "choose another folder)")
    for name, fig in figures.items():
        with open_atomic(paths[name], "wb", force=force) as handle:
            fig.savefig(handle, format=fmt.value, dpi=dpi, metadata=_metadata(fmt))
    return list(paths.values())


def _metadata(fmt: PlotFormat) -> dict[str, str | None]:
    """Reproducible files: no creation date in SVG/PDF."""
    match fmt:
        case PlotFormat.svg:
            return {"Date": None}
        case PlotFormat.pdf:
            return {"CreationDate": None}
        case PlotFormat.png:
            return {}
        case _:
            assert_never(fmt)


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
