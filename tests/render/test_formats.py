"""One module per format over one table: every JSON output follows one policy (``"schema"`` first,
non-finite numbers as null, UTF-8), and Markdown, HTML, CSV and the terminal show the cells of the same
:mod:`sninspect.render.table` with the same marks."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest

import sninspect
from sninspect.render import OutputFormat, dispatch, html, markdown, render, render_check, table, terminal
from sninspect.render.escape import for_html, for_markdown
from sninspect.render.formats import CheckFormat
from sninspect.results.check import Rules
from sninspect.results.graph import BlockBound, GraphReport, NodeBound
from sninspect.results.jsonable import SCHEMA_VERSION, dumps, json_safe
from sninspect.results.trend import Separate

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_checkpoints" / "dcgan_sn_torch.pt"


@pytest.fixture(scope="module")
def report() -> sninspect.Report:
    return sninspect.analyze(SAMPLE, device="cpu")


def _graph(upper: float = math.inf) -> GraphReport:
    nodes = (NodeBound("conv2d_1", "conv2d", "block1.c1", "conv 1x3x8x8 stride 1 (lanczos)", 2.5, None, 2.5, 0),
             NodeBound("relu_1", "relu", "block1", "relu: 1", 1.0, None, upper, 1))
    return GraphReport(file="net.pt2", input_shape=(1, 3, 8, 8), upper=upper, lower=None, ratio=math.nan,
                       chain_product=2.5, chain_over_upper=0.0, nodes=nodes,
                       blocks=(BlockBound("block1", 1.0, 2.5, 2.5),), empirical=None, seconds=0.1,
                       assumptions="ReLU networks")


def test_json_policy_by_hand() -> None:
    text = dumps({"σ": (1.0, math.inf, -math.inf, math.nan), "name": "a\udcff"})
    assert json.loads(text) == {"σ": [1.0, None, None, None], "name": "a\\udcff"}
    assert "σ" in text and "\\u03c3" not in text  # UTF-8, not ASCII escapes
    text.encode("utf-8")  # a lone surrogate never reaches the text
    assert json_safe({"a": [(math.nan,)]}) == {"a": [[None]]}


def test_every_json_output_starts_with_the_schema(report: sninspect.Report) -> None:
    separate = Separate(reports=(report, report), why="test")
    outputs = [render(report, OutputFormat.json), render(separate, OutputFormat.json),
               render(_graph(), OutputFormat.json), report.to_json(),
               render_check([sninspect.check(report, Rules())], Rules(), CheckFormat.json)]
    for text in outputs:
        data = json.loads(text)
        assert next(iter(data)) == "schema" and data["schema"] == SCHEMA_VERSION
    graph = json.loads(outputs[2])
    assert graph["upper"] is None and graph["ratio"] is None and graph["nodes"][1]["bound"] is None
    assert "format" not in graph and "version" not in graph  # the one version field


def test_markdown_html_and_terminal_show_the_same_cells(report: sninspect.Report) -> None:
    layers = table.layer_table(report)
    md = markdown.reports_markdown([report])
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| layer ")]
    assert rows == ["| " + " | ".join(for_markdown(t) for t in texts) + " |" for texts in layers.texts()]
    page = html.html_table(layers)
    for texts in layers.texts():
        assert "".join(re.findall(r">([^<]*)</td>", page)).count("".join(for_html(t) for t in texts)) == 1
    rich, hidden = terminal.layer_table(report, width=400)
    assert not hidden and [c.header for c in rich.columns] == list(layers.header)


def test_marks_are_colours_and_classes_alike(report: sninspect.Report) -> None:
    """Every cell the table marks is coloured in the terminal and classed in HTML by that mark, and no other."""
    layers = table.layer_table(report)
    marks = {(r, c): cell.mark for r, row in enumerate(layers.rows) for c, cell in enumerate(row.cells) if cell.mark}
    assert {table.OK, table.DIM} <= set(marks.values())  # SN layers judged, a layer without SN not
    rich, _ = terminal.layer_table(report, width=400)
    styles = {(r, c): str(cell.style) for c, column in enumerate(rich.columns)
              for r, cell in enumerate(column.cells) if str(getattr(cell, "style", "")).replace("bold", "").strip()}
    assert styles == {at: terminal.STYLES[mark] for at, mark in marks.items()}
    body = html.html_table(layers).split("<tbody>", 1)[1]
    classes = {}
    for r, tr in enumerate(body.split("</tr>")[:-1]):
        for c, td in enumerate(re.findall(r"<td(?: class=\"([^\"]*)\")?>", tr)):
            if set(td.split()) - {"l"}:
                classes[(r, c)] = " ".join(k for k in td.split() if k != "l")
    assert classes == {at: html._CLASSES[mark] for at, mark in marks.items()}


def test_graph_tables_in_every_format() -> None:
    graph = _graph(upper=2.5)
    md = render(graph, OutputFormat.markdown)
    assert "| depth | node | module | rule | factor | bound |\n|---:|---|---|---|---:|---:|" in md
    rows = list(csv.reader(io.StringIO(render(graph, OutputFormat.csv))))
    assert rows[0] == list(table.graph_nodes(graph).header) and rows[1] == list(table.graph_nodes(graph).texts()[0])
    text = render(graph, OutputFormat.table, width=160)
    assert "conv 1x3x8x8 stride 1 (lanczos)" in text and "net.pt2: Lipschitz constant" in text


def test_each_format_is_one_module() -> None:
    names = {fmt: dispatch.format_module(fmt).__name__ for fmt in OutputFormat}
    assert names == {fmt: f"sninspect.render.{dispatch.FORMAT_MODULES[fmt]}" for fmt in OutputFormat}
    assert dispatch.format_module(CheckFormat.github).__name__ == "sninspect.render.github"
