"""``sninspect graph``: the sandwich [lower, upper] of an exported network, as text, Markdown, JSON or
an HTML page with the bound-by-depth figure. Reads a :class:`GraphReport`; computes nothing."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import assert_never

from sninspect._version import __version__
from sninspect.render.escape import for_csv_cell, for_html, for_json, for_log_line, for_markdown
from sninspect.render.fit import fit_text_table, hidden_note, wrap_line
from sninspect.render.formats import OutputFormat
from sninspect.results.graph import GraphReport

__all__ = ["render_graph"]

_NODE_HEADER = ("depth", "node", "module", "rule", "factor", "bound")
_BLOCK_HEADER = ("block", "bound in", "bound out", "factor")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def _summary(report: GraphReport) -> list[tuple[str, str]]:
    emp = report.empirical
    rows = [("input shape", "x".join(map(str, report.input_shape))),
            ("upper bound (certified, graph rules)", _num(report.upper)),
            ("lower bound (certified, best input pair)", _num(report.lower) if emp else "skipped"),
            ("upper / lower", _num(report.ratio)),
            ("chain product of per-layer bounds", _num(report.chain_product)),
            ("chain product / upper", _num(report.chain_over_upper))]
    if emp is not None:
        rows += [("best ‖J(x)v‖ (power iteration)", _num(emp.jacobian)),
                 ("search", f"{emp.starts} starts x {emp.steps} ascent steps, best: {emp.best_start}, "
                            f"{emp.seconds:.1f} s")]
    rows.append(("upper bound time", f"{report.seconds:.1f} s"))
    return rows


def _node_rows(report: GraphReport) -> list[tuple[str, ...]]:
    return [(str(n.depth), n.name, n.module or "-", n.rule, _num(n.factor), _num(n.bound)) for n in report.nodes]


def _block_rows(report: GraphReport) -> list[tuple[str, ...]]:
    return [(b.module, _num(b.bound_in), _num(b.bound_out), _num(b.factor)) for b in report.blocks]


_NODE_HIDE = ("module", "depth", "factor")
"""On a narrow console the node table's columns go in this order (never the node, its rule, its bound)."""
_BLOCK_HIDE = ("factor", "bound in")


def _text_table(header: tuple[str, ...], rows: list[tuple[str, ...]], width: int, hide: tuple[str, ...],
                names: tuple[int, ...], right: tuple[int, ...]) -> list[str]:
    cells = [tuple(for_log_line(c) for c in row) for row in rows]
    lines, hidden = fit_text_table(header, cells, width, hide, names=names, right=right)
    return lines + ([hidden_note(hidden, width, "-f markdown or json show them")] if hidden else [])


def to_text(report: GraphReport, width: int = 160) -> str:
    """The summary, the blocks and the node tables, ``width`` columns wide (the ``report`` table's
    rules: whole columns hidden and named, names broken between their parts only)."""
    out = wrap_line(f"{for_log_line(report.file)}: Lipschitz constant of the exported network", width)
    key_width = max(len(k) for k, _ in _summary(report))
    for k, v in _summary(report):
        out += wrap_line(f"  {k.ljust(key_width)}  {v}", width, " " * (key_width + 4))
    out += ["", "Blocks (top-level modules: bound leaving / bound entering)"]
    out += _text_table(_BLOCK_HEADER, _block_rows(report), width, _BLOCK_HIDE, (0,), (1, 2, 3))
    out += ["", *wrap_line("Graph (each operator on the input's path, its rule, and the bound up to it)", width)]
    out += _text_table(_NODE_HEADER, _node_rows(report), width, _NODE_HIDE, (1, 2, 3), (0, 4, 5))
    out += ["", *wrap_line(f"Covers: {report.assumptions}.", width)]
    return "\n".join(out) + "\n"


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(for_markdown(c) for c in row) + " |" for row in rows]
    return lines


def to_markdown(report: GraphReport) -> str:
    out = [f"## {for_markdown(report.file)}: Lipschitz sandwich", ""]
    out += _md_table(("quantity", "value"), _summary(report))
    out += ["", "### Blocks", ""] + _md_table(_BLOCK_HEADER, _block_rows(report))
    out += ["", "### Graph", ""] + _md_table(_NODE_HEADER, _node_rows(report))
    out += ["", f"Covers: {for_markdown(report.assumptions)}."]
    return "\n".join(out) + "\n"


def to_json(report: GraphReport) -> str:
    payload = {"format": "sninspect-graph", "version": __version__, **asdict(report)}
    payload = _finite(payload)
    return json.dumps(for_json(payload), indent=2, allow_nan=False) + "\n"


def _finite(value: object) -> object:
    """JSON has no inf/NaN: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _html_table(header: tuple[str, ...], rows: list[tuple[str, ...]], left: set[int]) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} class="l">{for_html(text)}</{tag}>' if i in left else f"<{tag}>{for_html(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: GraphReport) -> str:
    from sninspect.render.html import _CSS, figure_data_uri  # matplotlib: only when drawing
    from sninspect.render.plots.graph import graph_depth_figure

    figure = figure_data_uri(graph_depth_figure(report))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sninspect graph · {for_html(report.file)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>sninspect graph · {for_html(report.file)}</h1>",
        f'<p class="meta">Lipschitz sandwich of an exported network, sninspect {for_html(__version__)}</p>',
        _html_table(("quantity", "value"), _summary(report), {0}),
        f'<figure><img alt="bound by depth" src="{figure}"><figcaption>Upper bound of the Lipschitz '
        "constant from the input to each operator along the graph (log scale), with the certified lower "
        "bound and the chain product.</figcaption></figure>",
        "<h2>Blocks</h2>", _html_table(_BLOCK_HEADER, _block_rows(report), {0}),
        "<h2>Graph</h2>", '<div class="scroll">', _html_table(_NODE_HEADER, _node_rows(report), {1, 2, 3}),
        "</div>", f'<p class="assume">Covers: {for_html(report.assumptions)}.</p>', "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_graph(report: GraphReport, fmt: OutputFormat, width: int = 160) -> str:
    """``report`` as ``fmt`` text (csv: the node table); the text table ``width`` columns wide."""
    match fmt:
        case OutputFormat.table:
            return to_text(report, width)
        case OutputFormat.json:
            return to_json(report)
        case OutputFormat.markdown:
            return to_markdown(report)
        case OutputFormat.csv:
            import csv
            import io

            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(_NODE_HEADER)
            writer.writerows([for_csv_cell(cell) for cell in row] for row in _node_rows(report))
            return buffer.getvalue()
        case OutputFormat.html:
            return to_html(report)
        case _:
            assert_never(fmt)
