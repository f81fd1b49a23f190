"""The terminal format (``--format table``, ``check``'s text, ``layers``): every result as rich tables
fitted to the console, or as the plain text they print into a file.

Reads the tables of :mod:`sninspect.render.table` and the verdict lines of
:mod:`sninspect.render.summary`; a cell's mark is its colour here (:data:`STYLES`). The width rules
(whole columns hidden in a fixed order and named, names broken between their parts) are those of
:mod:`sninspect.render.fit`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Literal

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table as RichTable
from rich.text import Text

from sninspect.render import table as tables
from sninspect.render.escape import for_log_line, for_terminal
from sninspect.render.fit import fit_text_table, hidden_note, name_cell, name_limit, wrap_line
from sninspect.render.formats import View
from sninspect.render.grouping import group_warnings
from sninspect.render.legend import legend_lines
from sninspect.render.summary import separate_line, verdict_lines
from sninspect.render.table import Cell, Table
from sninspect.results.check import Rule, Rules, Verdict
from sninspect.results.graph import GraphReport
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend

if TYPE_CHECKING:
    from sninspect.audit.layers.inventory import LayerInfo

STYLES = {tables.ABOVE: "red", tables.WARN: "yellow", tables.OK: "green", tables.DIM: "dim",
          tables.ERROR: "bold red"}
"""The colour of each cell mark."""

PIPE_WIDTH = 200
"""Width of the table written into a pipe or file when ``COLUMNS`` is not set."""


def render(result: Report | Trend | Separate | GraphReport, view: View) -> str:
    """``result`` as the console of ``view`` prints it (its width and colours); without one, plain text
    ``view.text_width`` columns wide (a file). ``view.explain``: the table ends with what each column means."""
    if isinstance(result, GraphReport):
        return graph_text(result, view.text_width)
    text = _tables(result, view.console, view.text_width)
    if view.explain:
        text = text.rstrip("\n") + "\n\n" + "\n".join(legend_lines(view.text_width)) + "\n"
    return text


def _tables(result: Report | Trend | Separate, console: Console | None, width: int) -> str:
    if console is None:
        if isinstance(result, Separate):
            return "\n".join([separate_line(result), "", *(table_text(r, width=width) for r in result.reports)])
        return run_text(result, width=width) if isinstance(result, Trend) else table_text(result, width=width)
    with console.capture() as captured:
        if isinstance(result, Trend):
            print_run(result, console)
        elif isinstance(result, Separate):
            console.print(for_terminal(separate_line(result), "yellow"))
            for report in result.reports:
                console.print()
                print_report(report, console)
        else:
            print_report(result, console)
    return strip_trailing(captured.get())


def terminal_console() -> Console:
    """stdout console: the terminal's width; into a file or pipe, ``COLUMNS`` when set, else a wide page."""
    import os
    import sys

    width = None
    if not sys.stdout.isatty():
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH
    return Console(highlight=False, emoji=False, width=width)


# ----------------------------------------------------------------------------------------------
# Tables


def rich_table(table: Table, hidden: Sequence[str] = (), width: int = 200) -> RichTable:
    """``table`` as a rich table without the columns titled in ``hidden``: names fold between their
    parts (at most a third of ``width``), other cells stay on one line and end in "…" when cut."""
    out = RichTable(box=box.SIMPLE_HEAVY, title=for_terminal(table.title) if table.title else None,
                    title_justify="left", caption=None if table.caption is None else for_terminal(table.caption),
                    caption_justify="left")
    shown = [i for i, column in enumerate(table.columns) if column.title not in hidden]
    limits = {i: name_limit([row.cells[i].text for row in table.rows], width, floor=column.name_floor)
              for i, column in enumerate(table.columns) if column.name_floor is not None}
    for i in shown:
        column = table.columns[i]
        justify: Literal["left", "right"] = "right" if column.right else "left"
        if i in limits:  # a name breaks onto more lines rather than lose a character; it is never hidden
            out.add_column(column.title, justify=justify, overflow="fold", max_width=limits[i],
                           min_width=min(limits[i], 16) if column.min_width else None)
        else:  # no_wrap: a cell that does not fit ends in "…", never silently cut
            out.add_column(column.title, justify=justify, no_wrap=True, overflow="ellipsis")
    for row in table.rows:
        out.add_row(*(name_cell(row.cells[i].text, limits[i]) if i in limits else _text(row.cells[i]) for i in shown))
        if row.note is not None:  # its own row: the whole reason, folded under the name
            out.add_row(for_terminal(f"↳ not audited: {row.note}", "bold red"), *([""] * (len(shown) - 1)))
    return out


def _text(cell: Cell) -> Text:
    style = " ".join(s for s in (STYLES.get(cell.mark, ""), "bold" if cell.strong else "") if s)
    return for_terminal(cell.text, style)


def fit(table: Table, width: int, console: Console | None = None) -> tuple[RichTable, list[str]]:
    """``table`` with whole columns hidden, in its ``hide_order``, until it fits ``width`` on one line
    per row; returns the rich table and the titles hidden."""
    console = console or Console(width=width, color_system=None, legacy_windows=False)
    hidden: list[str] = []
    out = rich_table(table, hidden, width)
    for title in table.hide_order:
        if _natural_width(out, console) <= width:
            break
        hidden.append(title)
        out = rich_table(table, hidden, width)
    return out, hidden


def _natural_width(table: RichTable, console: Console) -> int:
    """The width the table takes with every cell on one line (error rows aside: they fold)."""
    return console.measure(table, options=console.options.update(width=10_000)).maximum


def hidden_line(hidden: Sequence[str], width: int) -> Text:
    """The one line saying which columns went to fit."""
    return Text(hidden_note(hidden, width, "-f markdown shows them"), style="dim")


def strip_trailing(text: str) -> str:
    """Every line without trailing spaces (rich pads to the table width), colour codes kept."""
    return "\n".join(_TRAILING.sub(r"\1", line) for line in text.split("\n"))


_TRAILING = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$")


# ----------------------------------------------------------------------------------------------
# A report


def layer_table(report: Report, width: int = 200, console: Console | None = None) -> tuple[RichTable, list[str]]:
    """The per-layer table and the columns hidden to fit ``width``; what the layer's verdict says it
    breaks in red (σ_eff, the verdict) or yellow (the cosine error judged), the worst in bold."""
    return fit(tables.layer_table(report), width, console)


def summary_panel(report: Report, width: int | None = None) -> Panel:
    """The verdict (:func:`~sninspect.render.summary.verdict_lines`) in a box ``width`` wide (the table's)."""
    lines = [for_terminal(line, style) for line, style in verdict_lines(report)]
    return Panel(Group(*lines), title="summary", title_align="left", width=width)


def print_report(report: Report, console: Console) -> None:
    """The table, a line naming the columns hidden to fit, and the summary panel as wide as the table."""
    table, hidden = layer_table(report, console.width, console)
    width = min(console.measure(table).maximum, console.width)
    table.title = name_cell(f"sninspect · {report.checkpoint}", width)  # a long path breaks at its "/"
    console.print(table)
    if hidden:
        console.print(hidden_line(hidden, console.width))
    console.print(summary_panel(report, width=max(width, 40)))


def table_text(report: Report, *, width: int = 160, color: bool = False) -> str:
    """The terminal rendering as a string (golden tests, ``-o file.txt``)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="standard" if color else None,
                      force_terminal=color, legacy_windows=False)
    print_report(report, console)
    return strip_trailing(buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# A training run


def print_run(trend: Trend, console: Console) -> None:
    """Both tables (whole columns hidden to fit the console, and named) and the layers that appear or
    vanish."""
    for table in (tables.summary_table(trend), tables.trend_table(trend)):
        out, hidden = fit(table, console.width, console)
        console.print(out)
        if hidden:
            console.print(hidden_line(hidden, console.width))
    for change in group_warnings(trend.changes, measured=False):
        console.print(for_terminal(f"note: {change}", "yellow"))
    console.print(Text("per-layer numbers of each checkpoint: --format json, markdown, csv or html",
                       style="dim"))


def run_text(trend: Trend, *, width: int = 160) -> str:
    """The terminal rendering as plain text (``-o run.txt``)."""
    buffer = io.StringIO()
    print_run(trend, Console(file=buffer, width=width, color_system=None, legacy_windows=False))
    return strip_trailing(buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# ``layers``


def render_inventory(title: str, rows: Sequence[LayerInfo], console: Console) -> str:
    """The inventory as ``console`` would print it, whole columns hidden (and named) to fit its width."""
    width = console.width
    table, hidden = fit(tables.inventory_table(title, rows), width, console)
    table.title = name_cell(title, min(console.measure(table).maximum, width))  # a long path breaks at its "/"
    with console.capture() as captured:
        console.print(table)
        if hidden:
            console.print(Text(hidden_note(hidden, width, "a wider COLUMNS shows them"), style="dim"))
    return strip_trailing(captured.get())


# ----------------------------------------------------------------------------------------------
# ``graph``: plain text (no colour), the same width rules


def graph_text(report: GraphReport, width: int = 160) -> str:
    """The summary, the blocks and the node tables, ``width`` columns wide (the ``report`` table's
    rules: whole columns hidden and named, names broken between their parts only)."""
    summary = tables.graph_summary(report).texts()
    out = wrap_line(f"{for_log_line(report.file)}: Lipschitz constant of the exported network", width)
    key_width = max(len(k) for k, _ in summary)
    for k, v in summary:
        out += wrap_line(f"  {k.ljust(key_width)}  {v}", width, " " * (key_width + 4))
    out += ["", "Blocks (top-level modules: bound leaving / bound entering)"]
    out += _plain_table(tables.graph_blocks(report), width)
    out += ["", *wrap_line("Graph (each operator on the input's path, its rule, and the bound up to it)", width)]
    out += _plain_table(tables.graph_nodes(report), width)
    out += ["", *wrap_line(f"Covers: {report.assumptions}.", width)]
    return "\n".join(out) + "\n"


def _plain_table(table: Table, width: int) -> list[str]:
    cells = [tuple(for_log_line(c) for c in row) for row in table.texts()]
    names = tuple(i for i, c in enumerate(table.columns) if c.name_floor is not None)
    right = tuple(i for i, c in enumerate(table.columns) if c.right)
    lines, hidden = fit_text_table(table.header, cells, width, table.hide_order, names=names, right=right)
    return lines + ([hidden_note(hidden, width, "-f markdown or json show them")] if hidden else [])


# ----------------------------------------------------------------------------------------------
# ``check``: one line per broken rule


def render_check(verdicts: Sequence[Verdict], rules: Rules, width: int | None = None) -> str:
    """One line per broken rule: ``<file>: <layer>: <quantity> = <value> > <limit>``; empty when all
    pass. Unreadable checkpoints are left to the error line on stderr. Names are made visible
    (:func:`~sninspect.render.escape.for_log_line`): a name cannot forge a line of a CI log. With
    ``width``, a longer line wraps at spaces (a name is never split), continued indented."""
    lines = [for_log_line(f"{PurePath(v.checkpoint).name}: {violation.message}")
             for v in verdicts for violation in v.violations if violation.rule is not Rule.unreadable]
    if width is not None:
        lines = [part for line in lines for part in wrap_line(line, width)]
    return "".join(line + "\n" for line in lines)


def summary_line(verdicts: Sequence[Verdict]) -> str:
    """``check: 2 checkpoints, 14 SN layers, 3 rules broken in 1 checkpoint`` (for stderr)."""
    unreadable = [v for v in verdicts if any(x.rule is Rule.unreadable for x in v.violations)]
    unread = len(unreadable)
    failed = [v for v in verdicts if not v.passed and v not in unreadable]
    broken = sum(len(v.violations) for v in failed)
    layers = sum(v.layers_checked for v in verdicts)
    head = f"check: {_plural(len(verdicts), 'checkpoint')}, {_plural(layers, 'SN layer')} judged"
    tail = f"; {unread} could not be read" if unread else ""
    if not failed:  # an unreadable checkpoint fails the check: the rules hold only in those that were read
        return f"{head}: all rules hold in those read{tail} (failed)" if unread else f"{head}: all rules hold"
    return f"{head}: {_plural(broken, 'violation')} in {_plural(len(failed), 'checkpoint')}{tail}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

