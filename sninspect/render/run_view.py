"""Show a training run (:class:`sninspect.results.trend.Trend`): a summary row per checkpoint and a trend row
per layer, for the terminal (rich) and as Markdown. Reads only ``trend``; computes nothing beyond
picking first, last and worst values.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import PurePath

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sninspect.render.escape import for_markdown, for_terminal
from sninspect.render.fit import name_cell, name_limit
from sninspect.render.grouping import group_warnings
from sninspect.render.report import fit_table, fmt, hidden_line, strip_trailing
from sninspect.results.check import Rule
from sninspect.results.trend import MODIFICATION_TIME, Trend


def summary_rows(trend: Trend) -> list[list[str]]:
    """One row per checkpoint: name, step, layers, worst σ_eff and its layer, worst gap-aware cosine
    error and its layer, ∏σ_eff, certified ∏, layers not audited, the rules ``check`` finds broken."""
    rows = []
    for s in trend.summary:
        rows.append([
            PurePath(s.checkpoint).name,
            step_text(s.step, trend),
            str(s.layers),
            fmt(s.worst_sigma_effective),
            s.worst_sigma_layer or "-",
            fmt(s.worst_gap_cos_error, 3),
            s.worst_gap_cos_layer or "-",
            fmt(s.matrix_product),
            fmt(s.operator_product),
            str(s.not_audited),
            "-" if s.verdict is None else ", ".join(s.verdict) or "ok",
        ])
    return rows


SUMMARY_HEADER = ("checkpoint", "step", "layers", "worst σ eff", "in layer", "worst gap cos", "in layer",
                  "∏ σ eff", "certified ∏", "errors", "verdict")
SUMMARY_LEFT = {0, 4, 6}
TREND_HEADER = ("layer", "in", "σ eff first", "σ eff last", "σ eff max (at)", "gap cos first", "gap cos last",
                "gap cos max (at)")


def trend_rows(trend: Trend) -> list[list[str]]:
    """One row per layer: present in k/n checkpoints, σ_eff and gap-aware cosine error first, last, worst."""
    rows = []
    for series in trend.layers:
        rows.append([
            series.name,
            f"{sum(series.present)}/{len(series.present)}",
            *_first_last_max(series.sigma_effective, trend, digits=6),
            *_first_last_max(series.gap_cos_error, trend, digits=3),
        ])
    return rows


SUMMARY_HIDE = ("in layer", "layers", "errors", "∏ σ eff", "step")
"""On a narrow console the summary table's columns go in this order (never the checkpoint's name)."""
TREND_HIDE = ("in", "σ eff first", "gap cos first", "gap cos last", "gap cos max (at)", "σ eff max (at)")
"""On a narrow console the trend table's columns go in this order (never the layer's name)."""


def print_run(trend: Trend, console: Console) -> None:
    """Both tables (whole columns hidden to fit the console, and named) and the layers that appear or
    vanish."""
    width = console.width
    for build, order in ((lambda hidden: summary_table(trend, hidden, width), SUMMARY_HIDE),
                         (lambda hidden: trend_table(trend, hidden, width), TREND_HIDE)):
        table, hidden = fit_table(build, order, console.width, console)
        console.print(table)
        if hidden:
            console.print(hidden_line(hidden, console.width))
    for change in group_warnings(trend.changes, measured=False):
        console.print(for_terminal(f"note: {change}", "yellow"))
    console.print(Text("per-layer numbers of each checkpoint: --format json, markdown, csv or html",
                       style="dim"))


def summary_table(trend: Trend, hidden: Sequence[str] = (), width: int = 200) -> Table:
    table = Table(box=box.SIMPLE_HEAVY, title=f"training run · {len(trend.reports)} checkpoints ordered by "
                  f"{trend.order_by}", title_justify="left")
    rows = summary_rows(trend)
    limits = {i: name_limit([row[i] for row in rows], width, floor=10 if i else 16) for i in SUMMARY_LEFT}
    shown = [i for i, title in enumerate(SUMMARY_HEADER) if title not in hidden]
    for i in shown:
        left = i in SUMMARY_LEFT
        table.add_column(SUMMARY_HEADER[i], justify="left" if left else "right",
                         overflow="fold" if left else "ellipsis", no_wrap=not left,
                         max_width=limits[i] if left else None)
    for s, row in zip(trend.summary, rows, strict=True):
        broken = s.verdict or ()  # the report's verdict: the run view applies no threshold of its own
        # names are data, never markup; they break between their parts only
        cells: list[str | Text] = [name_cell(c, limits[i]) if i in limits else for_terminal(c)
                                   for i, c in enumerate(row)]
        cells[3] = Text(row[3], style="red" if Rule.max_sigma in broken else "")
        cells[5] = Text(row[5], style="yellow" if Rule.max_cos_error in broken else "")
        cells[9] = Text(row[9], style="bold red" if s.not_audited else "")
        cells[10] = Text(row[10], style="red" if broken else "green")
        table.add_row(*(cells[i] for i in shown))
    return table


def trend_table(trend: Trend, hidden: Sequence[str] = (), width: int = 200) -> Table:
    table = Table(box=box.SIMPLE_HEAVY, title="per-layer trend", title_justify="left")
    limit = name_limit([series.name for series in trend.layers], width)
    shown = [i for i, title in enumerate(TREND_HEADER) if title not in hidden]
    for i in shown:
        table.add_column(TREND_HEADER[i], justify="left" if i == 0 else "right",
                         overflow="fold" if i == 0 else "ellipsis", no_wrap=i > 0,
                         min_width=min(limit, 16) if i == 0 else None, max_width=limit if i == 0 else None)
    for series, row in zip(trend.layers, trend_rows(trend), strict=True):
        cells: list[str | Text] = [name_cell(c, limit) if i == 0 else for_terminal(c) for i, c in enumerate(row)]
        cells[1] = Text(row[1], style="" if all(series.present) else "yellow")
        cells[3] = Text(row[3], style="red" if series.breaks_last(Rule.max_sigma) else "")
        cells[6] = Text(row[6], style="yellow" if series.breaks_last(Rule.max_cos_error) else "")
        table.add_row(*(cells[i] for i in shown))
    return table


def run_text(trend: Trend, *, width: int = 160) -> str:
    """The terminal rendering as plain text (``-o run.txt``)."""
    buffer = io.StringIO()
    print_run(trend, Console(file=buffer, width=width, color_system=None, legacy_windows=False))
    return strip_trailing(buffer.getvalue())


def run_markdown(trend: Trend) -> str:
    """A ``## Training run`` section: the summary table, the per-layer trend table, the changes."""
    out = [f"## Training run ({len(trend.reports)} checkpoints, ordered by {trend.order_by})\n"]
    out += _md_table(SUMMARY_HEADER, summary_rows(trend),
                     right=set(range(len(SUMMARY_HEADER))) - SUMMARY_LEFT)
    out.append("")
    out += _md_table(TREND_HEADER, trend_rows(trend), right=set(range(1, len(TREND_HEADER))))
    out.append("")
    out += [f"- {for_markdown(change)}" for change in group_warnings(trend.changes, measured=False)]
    return "\n".join(out) + "\n\n"


def step_text(step: float, trend: Trend) -> str:
    if trend.order_by == MODIFICATION_TIME:
        return "-"
    return str(int(step)) if float(step).is_integer() else f"{step:g}"


# ----------------------------------------------------------------------------------------------


def _first_last_max(values: Sequence[float | None], trend: Trend, digits: int) -> list[str]:
    known = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not known:
        return ["-", "-", "-"]
    worst, at = max(known)
    where = PurePath(trend.checkpoints[at]).name if trend.order_by == MODIFICATION_TIME \
        else step_text(trend.steps[at], trend)
    return [fmt(known[0][0], digits), fmt(known[-1][0], digits), f"{fmt(worst, digits)} ({where})"]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(for_markdown(c) for c in row) + " |" for row in rows]
    return out

