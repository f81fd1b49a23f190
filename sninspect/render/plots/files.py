"""Writing figures to files: the only file I/O of the plots."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import assert_never

from matplotlib.figure import Figure

from sninspect.audit.runs.run import ProgressHook
from sninspect.errors import OutputError
from sninspect.io.inputs import as_input_set
from sninspect.io.suffixes import checkpoint_stem
from sninspect.io.write import Inputs, check_target, open_atomic
from sninspect.render.formats import PlotFormat
from sninspect.render.plots.report import report_figures
from sninspect.render.plots.trend import trend_figures
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend

REPORT_FIGURES = ("sigma", "cos_error", "spectra", "lipschitz_depth")
"""The figures of one checkpoint, by file stem (:func:`report_figures`)."""
TREND_FIGURES = ("trend_sigma", "trend_cos_error")
"""The figures of a run, by file stem (:func:`trend_figures`)."""


def write_plots(result: Report | Trend | Separate, folder: Path, fmt: PlotFormat | str, *,
                progress: ProgressHook | None = None, force: bool = False, inputs: Inputs = ()) -> list[Path]:
    """The figures of a report, or of a run and each of its reports: one checkpoint →
    ``folder/sigma.png`` ...; a run → ``folder/<checkpoint>/sigma.png`` ... and ``folder/trend_sigma.png``,
    ``folder/trend_cos_error.png``; unrelated checkpoints → ``folder/<checkpoint>/sigma.png`` ... only.
    Every path is checked before anything is drawn
    (:func:`check_plot_paths`): existing figures are replaced only with ``force``, an input never."""
    inputs = as_input_set(inputs)
    plan = plot_plan(result, folder, fmt)
    check_plot_paths([p for _, paths in plan for p in paths.values()], folder, force=force, inputs=inputs)
    _make_folders([p for _, paths in plan for p in paths.values()])
    written: list[Path] = []
    for item, paths in plan:
        if isinstance(item, Trend):
            written += _save(trend_figures(item), paths, PlotFormat(fmt), 120, force, inputs)
            continue
        if progress is not None:
            progress.start(Path(item.checkpoint).name)
        written += _save(report_figures(item), paths, PlotFormat(fmt), 120, force, inputs)
        if progress is not None:
            progress.advance()
    return written


def plot_plan(result: Report | Trend | Separate, folder: Path, fmt: PlotFormat | str
              ) -> list[tuple[Report | Trend, dict[str, Path]]]:
    """What :func:`write_plots` draws and where, known before anything is drawn: each report (and a
    run's trend) with the path of each of its figures."""
    suffix = PlotFormat(fmt).value
    folder = Path(folder)
    if isinstance(result, Report):
        return [(result, {name: folder / f"{name}.{suffix}" for name in REPORT_FIGURES})]
    plan: list[tuple[Report | Trend, dict[str, Path]]] = [
        (result, {name: folder / f"{name}.{suffix}" for name in TREND_FIGURES})] if isinstance(result, Trend) else []
    reports = list(result.reports)
    names = _folder_names(reports) if len(reports) > 1 else [""]
    for report, name in zip(reports, names, strict=True):
        where = folder / name if name else folder
        plan.append((report, {fig: where / f"{fig}.{suffix}" for fig in REPORT_FIGURES}))
    return plan


def check_plot_paths(paths: Sequence[Path], folder: str | os.PathLike[str], *, force: bool,
                     inputs: Inputs = ()) -> None:
    """Refuse now, before anything is drawn, every figure path the writer would refuse: an input
    (``force`` or not), a link, a folder or device; without ``force``, every figure already there is
    named in one line."""
    inputs = as_input_set(inputs)
    present: list[str] = []
    for path in paths:
        if os.path.isdir(path.parent) or inputs.find(path) is not None:
            check_target(path, force=True, inputs=inputs)  # an input, a link, a folder, a device
        if not force and os.path.lexists(path):
            present.append(_relative(path, Path(folder)))
    if present:
        raise OutputError(f"{folder}: already holds {', '.join(present)} (pass --force to overwrite, or "
                          "choose another folder)")


def refuse_plots_early(folder: Path, fmt: PlotFormat | str, inputs: Inputs) -> None:
    """Before a long audit: an input where a figure would go (``folder/sigma.png``, or one subfolder
    down for a run) is refused now; the full check (:func:`check_plot_paths`) follows the audit."""
    suffix = "." + PlotFormat(fmt).value
    stems = set(REPORT_FIGURES) | set(TREND_FIGURES)
    top = os.path.realpath(folder)
    for source in as_input_set(inputs):
        real = Path(os.path.realpath(source))
        if real.suffix == suffix and real.stem in stems and top in (str(real.parent), str(real.parent.parent)):
            check_target(folder / real.relative_to(top), force=True, inputs=inputs)


def save_figures(figures: Mapping[str, Figure], folder: str | os.PathLike[str],
                 fmt: PlotFormat | str = PlotFormat.png, *, dpi: int = 120, force: bool = False,
                 inputs: Inputs = ()) -> list[Path]:
    """Write each figure as ``folder/<name>.<fmt>`` through the one atomic writer; the folder is
    created. Every path is checked first: an input is never replaced, an existing figure only with
    ``force`` (without it, every one already there is named before anything is written). Returns the
    paths written."""
    fmt = PlotFormat(fmt)
    target = Path(folder)
    inputs = as_input_set(inputs)
    paths = {name: target / f"{name}.{fmt.value}" for name in figures}
    check_plot_paths(list(paths.values()), target, force=force, inputs=inputs)
    _make_folders(list(paths.values()))
    return _save(figures, paths, fmt, dpi, force, inputs)


def _save(figures: Mapping[str, Figure], paths: Mapping[str, Path], fmt: PlotFormat, dpi: int, force: bool,
          inputs: Inputs) -> list[Path]:
    # Precondition: the figures are the ones planned (same names).
    assert set(figures) == set(paths), f"figures {sorted(figures)} but planned {sorted(paths)}"
    for name, fig in figures.items():
        with open_atomic(paths[name], "wb", force=force, inputs=inputs) as handle:
            fig.savefig(handle, format=fmt.value, dpi=dpi, metadata=_metadata(fmt))
    return list(paths.values())


def _make_folders(paths: Sequence[Path]) -> None:
    for folder in dict.fromkeys(p.parent for p in paths):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{folder}: cannot create the plot folder ({err.strerror or err})") from err


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


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
        base = checkpoint_stem(Path(report.checkpoint).name)
        base = re.sub(r"[^\w.+-]", "_", base).lstrip(".") or "checkpoint"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names
