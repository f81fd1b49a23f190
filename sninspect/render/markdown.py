"""The Markdown format: GitHub-flavoured tables of every result (a report, a run, unrelated
checkpoints, the graph bound) and the column legend, all written by :func:`md_table` from the tables
of :mod:`sninspect.render.table`; the verdict as the summary panel's lines."""

from __future__ import annotations

from sninspect.render.escape import for_markdown
from sninspect.render.formats import View
from sninspect.render.grouping import group_warnings
from sninspect.render.legend import SUMMARY
from sninspect.render.summary import order_text, separate_line, verdict_lines
from sninspect.render.table import (
    Cell,
    Column,
    Table,
    graph_blocks,
    graph_nodes,
    graph_summary,
    layer_table,
    legend_table,
    summary_table,
    trend_table,
)
from sninspect.results.graph import GraphReport
from sninspect.results.report import Report
from sninspect.results.trend import Separate, Trend


def render(result: Report | Trend | Separate | GraphReport, view: View) -> str:
    """A run's section first (or why the checkpoints are each on their own), a section per checkpoint,
    then the legend; the graph bound: its summary, blocks and nodes."""
    if isinstance(result, GraphReport):
        return graph_markdown(result)
    run = run_markdown(result) if isinstance(result, Trend) else ""
    if isinstance(result, Separate):
        run = f"{separate_line(result)}\n\n"
    reports = [result] if isinstance(result, Report) else list(result.reports)
    return run + reports_markdown(reports) + legend_markdown()


def md_table(table: Table) -> list[str]:
    """The table's lines: the header, the alignment row (numbers right), a line per row; a row's note
    (why a layer was not audited) on a line of its own, in the first cell."""
    lines = ["| " + " | ".join(table.header) + " |",
             "|" + "|".join("---:" if column.right else "---" for column in table.columns) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(c, x) for c, x in zip(table.columns, row.cells, strict=True)) + " |")
        if row.note is not None:
            lines.append(f"| ↳ not audited: {for_markdown(row.note)} |" + " |" * (len(table.columns) - 1))
    return lines


def _cell(column: Column, cell: Cell) -> str:
    return f"`{cell.text}`" if column.code else for_markdown(cell.text)


def reports_markdown(reports: list[Report]) -> str:
    """A table per checkpoint, then the verdict of the terminal's summary panel."""
    out: list[str] = []
    for report in reports:
        out.append(f"## {for_markdown(report.checkpoint)}\n")
        out.append(f"`{report.format}` · device `{report.device}` · `{report.dtype}` · {order_text(report)}\n")
        out += md_table(layer_table(report))
        out.append("\n**Summary**\n")
        out += [f"- {for_markdown(line)}" for line, _ in verdict_lines(report)]
        out.append("")
    return "\n".join(out) + "\n"


def run_markdown(trend: Trend) -> str:
    """A ``## Training run`` section: the summary table, the per-layer trend table, the changes."""
    out = [f"## Training run ({len(trend.reports)} checkpoints, ordered by {trend.order_by})\n"]
    out += md_table(summary_table(trend))
    out.append("")
    out += md_table(trend_table(trend))
    out.append("")
    out += [f"- {for_markdown(change)}" for change in group_warnings(trend.changes, measured=False)]
    return "\n".join(out) + "\n\n"


def legend_markdown() -> str:
    """A ``### Columns`` section: each column's title, JSON field and meaning, then the summary terms."""
    out = ["### Columns\n", *md_table(legend_table()), ""]
    out += [f"- **{for_markdown(term)}**: {for_markdown(meaning)}" for term, meaning in SUMMARY]
    return "\n".join(out) + "\n"


def graph_markdown(report: GraphReport) -> str:
    """The sandwich, the blocks and the nodes of the graph bound."""
    out = [f"## {for_markdown(report.file)}: Lipschitz sandwich", ""]
    out += md_table(graph_summary(report))
    out += ["", "### Blocks", ""] + md_table(graph_blocks(report))
    out += ["", "### Graph", ""] + md_table(graph_nodes(report))
    out += ["", f"Covers: {for_markdown(report.assumptions)}."]
    return "\n".join(out) + "\n"
