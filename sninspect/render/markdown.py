"""Markdown text of reports: a GitHub-flavoured table per checkpoint and the summary panel's lines."""

from __future__ import annotations

from collections.abc import Sequence

from sninspect.render.escape import for_markdown
from sninspect.render.report import _NUMBERS, VERDICT, number_cells, order_text, shape_text, verdict_lines
from sninspect.results.report import Report, verdict_text


def to_markdown(reports: Sequence[Report]) -> str:
    """A GitHub-flavoured Markdown table per checkpoint, then the verdict of the terminal's summary panel."""
    out: list[str] = []
    header = ("layer", "dialect", "kind", "shape", *_NUMBERS, VERDICT)
    for report in reports:
        out.append(f"## {for_markdown(report.checkpoint)}\n")
        out.append(f"`{report.format}` · device `{report.device}` · `{report.dtype}` · {order_text(report)}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * 4 + ["---:"] * len(_NUMBERS) + ["---"]) + "|")
        for la in report.layers:
            row = [la.name, la.dialect, la.kind, shape_text(la.shape)]
            if la.error is not None:
                row += ["-"] * len(_NUMBERS)
            else:
                row += number_cells(la, report.dtype)
            row.append(verdict_text(la.verdict))
            out.append("| " + " | ".join(for_markdown(c) for c in row) + " |")
            if la.error is not None:  # its own row, the reason whole
                out.append(f"| ↳ not audited: {for_markdown(la.error)} |" + " |" * (len(header) - 1))
        out.append("\n**Summary**\n")
        out += [f"- {for_markdown(line)}" for line, _ in verdict_lines(report)]
        out.append("")
    return "\n".join(out) + "\n"
