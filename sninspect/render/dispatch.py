"""THE entry for showing a result: ``render(result, fmt) -> str`` for a report, a training run,
unrelated checkpoints or the graph bound; ``render_check`` for ``check``'s verdicts.

Each format is one module of :mod:`sninspect.render` that renders every result type it supports
(:data:`FORMAT_MODULES`, :data:`CHECK_FORMAT_MODULES`): a new format is that module and one line here.
A module is imported only when its format is asked for (the HTML page draws figures with matplotlib;
``sninspect --help`` and the text formats start without it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from sninspect.render.formats import CheckFormat, OutputFormat, View
from sninspect.results.check import Rules, Verdict
from sninspect.results.graph import GraphReport
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend

if TYPE_CHECKING:
    from rich.console import Console

FORMAT_MODULES: dict[OutputFormat, str] = {
    OutputFormat.table: "terminal",
    OutputFormat.json: "json",
    OutputFormat.csv: "csv",
    OutputFormat.markdown: "markdown",
    OutputFormat.html: "html",
}
"""The module of :mod:`sninspect.render` that writes each ``--format``; it defines ``render(result, view)``."""

CHECK_FORMAT_MODULES: dict[CheckFormat, str] = {
    CheckFormat.text: "terminal",
    CheckFormat.json: "json",
    CheckFormat.github: "github",
}
"""The module that writes each ``check --format``; it defines ``render_check(verdicts, rules, width)``."""


def format_module(fmt: OutputFormat | CheckFormat) -> ModuleType:
    """The module that writes ``fmt``."""
    name = FORMAT_MODULES[fmt] if isinstance(fmt, OutputFormat) else CHECK_FORMAT_MODULES[fmt]
    return importlib.import_module(f"sninspect.render.{name}")


def render(result: Report | Trend | Separate | GraphReport, fmt: OutputFormat, *, console: Console | None = None,
           width: int | None = None, spectra: bool = False, on_checkpoint: Callable[[str], None] | None = None,
           explain: bool = False) -> str:
    """``result`` (one checkpoint's report, a run of several, several unrelated ones each on its own, or
    the graph bound) as ``fmt`` text.

    ``console``: the table as that console would print it (its width and colours; the terminal);
    without one, the table is plain text ``width`` (else 160) columns wide (a file). ``spectra``: JSON
    includes every layer's singular values. ``on_checkpoint``: called with each checkpoint's name once
    its figures are drawn (HTML; a progress hook). ``explain``: the table ends with what each column
    means (Markdown and HTML always have that section). CSV of the graph bound: its node table."""
    view = View(console=console, width=width, spectra=spectra, explain=explain, on_checkpoint=on_checkpoint)
    return str(format_module(fmt).render(result, view))



def render_check(verdicts: Sequence[Verdict], rules: Rules, fmt: CheckFormat, width: int | None = None) -> str:
    """The verdicts in ``fmt``, for stdout; text lines wider than ``width`` wrap at spaces."""
    return str(format_module(fmt).render_check(verdicts, rules, width))
