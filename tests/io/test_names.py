"""Names are data: hostile key and file names reach every output escaped for it, never interpreted.

The corpus is built into real checkpoints (one tiny SN Linear per name, its module key the name) and a
file with an odd name, then rendered in every format through the real command (``python -m
sninspect``, stdout/stderr as bytes, UTF-8 strict): each run exits as it should, prints no ESC byte,
and shows every layer once, recoverably. Unit tests pin each escaping function against expectations
written out by hand.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.text import Text as MplText
from rich.console import Console
from rich.table import Table
from torch import nn

from sninspect.render.escape import (
    for_csv_cell,
    for_html,
    for_json,
    for_log_line,
    for_markdown,
    for_plot,
    for_terminal,
    visible,
)

# (name, as the terminal/log/plots show it, as a CSV reader gets it back)
CORPUS: list[tuple[str, str, str]] = [
    ("[/]", "[/]", "[/]"),
    ("[bold red]x", "[bold red]x", "[bold red]x"),
    ("a\nb", "a\\nb", "a\\nb"),
    ("\x1b[31mred", "\\x1b[31mred", "\\x1b[31mred"),
    ("\udcff", "\\udcff", "\\udcff"),
    ("$\\foo$", "$\\foo$", "$\\foo$"),
    ('=HYPERLINK("x")', '=HYPERLINK("x")', '\'=HYPERLINK("x")'),
    ("|col|", "|col|", "|col|"),
    ("# heading", "# heading", "# heading"),
    ("<script>", "<script>", "<script>"),
    (":thumbs_up:", ":thumbs_up:", ":thumbs_up:"),
    ("r\u202eevil", "r\\u202eevil", "r\\u202eevil"),
]
NAMES = [name for name, _, _ in CORPUS]
FILE_NAME = "run[red]\x1b[31m$x$\n=q|:warning:\u202e.pt"
"""A checkpoint file name with markup, an escape sequence, mathtext, a newline, a formula start and a
bidi override. (A byte that is not UTF-8 is left out: torch.load cannot open such a path; sninspect
refuses it in one line.)"""
FILE_SHOWN = "run[red]\\x1b[31m$x$\\n=q|:warning:\\u202e.pt"


def hostile_state() -> OrderedDict[str, torch.Tensor]:
    torch.manual_seed(0)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name in NAMES:
        layer = nn.utils.spectral_norm(nn.Linear(3, 4))
        layer(torch.randn(2, 3))  # one training step: σ̂ > 0
        for key, value in layer.state_dict().items():
            state[f"{name}.{key}"] = value
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("names")
    plain = folder / "hostile.pt"
    torch.save(hostile_state(), plain)
    odd = folder / FILE_NAME
    odd.write_bytes(plain.read_bytes())
    return plain, odd


def sninspect(*args: str | Path) -> tuple[int, str, str]:
    """Run the real command; stdout and stderr must be valid UTF-8 with no ESC byte."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "MPLBACKEND": "Agg", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "sninspect", *map(os.fspath, args)], capture_output=True,
                          env=env, timeout=300)
    for stream in (done.stdout, done.stderr):
        assert b"\x1b" not in stream
        assert b"Traceback" not in stream, done.stderr.decode("utf-8", "replace")
    return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")


def layer_lines(text: str) -> list[str]:
    """The table rows: every layer of the corpus is a Linear(3, 4) (the summary and the column legend
    also say "linear", never with its shape)."""
    return [line for line in text.splitlines() if "linear" in line and "4×3" in line]


# ----------------------------------------------------------------------------------------------
# Through the command, every format


@pytest.mark.slow
def test_table_shows_every_name_literally(files: tuple[Path, Path]) -> None:
    code, out, _ = sninspect("report", files[0], "--device", "cpu")
    assert code == 0
    rows = layer_lines(out)
    assert len(rows) == len(CORPUS)
    for row, (_, shown, _) in zip(rows, CORPUS, strict=True):
        assert row.strip().startswith(f"{shown}.weight ")
    assert "# heading.weight" in out and ":thumbs_up:.weight" in out  # not markup, not an emoji


@pytest.mark.slow
def test_json_round_trips_every_name(files: tuple[Path, Path]) -> None:
    code, out, _ = sninspect("report", files[0], "-f", "json", "--device", "cpu")
    assert code == 0
    names = [layer["name"] for layer in json.loads(out)["layers"]]
    expected = [f"{name}.weight" for name in NAMES]
    expected[NAMES.index("\udcff")] = "\\udcff.weight"  # lone surrogates: their escape text (documented)
    assert names == expected


@pytest.mark.slow
def test_csv_gives_every_name_back_neutralised(files: tuple[Path, Path]) -> None:
    code, out, _ = sninspect("report", files[0], "-f", "csv", "--device", "cpu")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [row["name"] for row in rows] == [f"{back}.weight" for _, _, back in CORPUS]
    assert all(float(row["sigma_exact"]) > 0 for row in rows)  # numbers stay numbers


FORGED = "\r=cmd|' /C calc'!A0"
"""A layer name whose CR, written bare, starts a new spreadsheet row holding a formula."""


def _one_row_per_layer(out: str, names: list[str], column: str) -> None:
    """Read back with the csv module AND by a naive line split: each layer one row, no line (row) starting
    with a formula character, the forged name given back as its escape text."""
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [row[column] for row in rows] == names
    lines = re.split(r"\r\n|\r|\n", out.rstrip("\r\n"))
    assert len(lines) == len(names) + 1, lines
    assert not [line for line in lines if line.startswith(("=", "+", "-", "@", "\t"))]


@pytest.mark.slow
def test_csv_forges_no_row_from_a_carriage_return(tmp_path: Path) -> None:
    """Issue 27: pandas quoted a cell holding LF but not CR; a spreadsheet started a row at the CR."""
    torch.manual_seed(0)
    layer = nn.utils.spectral_norm(nn.Linear(3, 4))
    layer(torch.randn(2, 3))
    state = {f"{FORGED}.{key}": value for key, value in layer.state_dict().items()}
    for step in (1, 2):
        torch.save({**state, "step": step}, tmp_path / f"ck_{step}.pt")
    code, out, _ = sninspect("report", tmp_path / "ck_1.pt", "-f", "csv", "--device", "cpu")
    assert code == 0
    _one_row_per_layer(out, ["\\r=cmd|' /C calc'!A0.weight"], "name")
    code, out, _ = sninspect("report", tmp_path, "-f", "csv", "--device", "cpu")  # a run: every checkpoint
    assert code == 0
    _one_row_per_layer(out, ["\\r=cmd|' /C calc'!A0.weight"] * 2, "name")


def test_graph_csv_forges_no_row_either(tmp_path: Path) -> None:
    """``graph -f csv``: node and module names come from the archive; a CR in one forged a row too."""
    import dataclasses
    import sys

    from sninspect.audit.graph.analysis import GraphOptions, analyze_graph
    from sninspect.render import render
    from sninspect.render.formats import OutputFormat

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from graphnets import export

    torch.manual_seed(0)
    net = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(4, 5)), nn.ReLU(), nn.Linear(5, 1))
    report = analyze_graph(export(net, torch.randn(1, 4), tmp_path / "net.pt2"), GraphOptions(lower=False))
    nodes = tuple(dataclasses.replace(n, name=FORGED + n.name, module=FORGED) for n in report.nodes)
    out = render(dataclasses.replace(report, nodes=nodes), OutputFormat.csv)
    _one_row_per_layer(out, ["\\r=cmd|' /C calc'!A0" + n.name for n in report.nodes], "node")


@pytest.mark.slow
def test_markdown_forges_no_row_and_no_heading(files: tuple[Path, Path]) -> None:
    code, out, _ = sninspect("report", files[0], files[1], "-f", "markdown", "--device", "cpu")
    assert code == 0
    headings = [line for line in out.splitlines() if line.startswith("#")]
    assert headings == ["## Training run (2 checkpoints, ordered by modification time)",
                        f"## {for_markdown(str(files[0]))}", f"## {for_markdown(str(files[1]))}", "### Columns"]
    rows = layer_lines(out)
    assert len(rows) == 2 * len(CORPUS)
    columns = {row.replace("\\|", "").count("|") for row in rows}
    assert columns == {16}  # 15 cells: no name opened a cell
    assert "<script>" not in out and "\\<script\\>.weight" in out


@pytest.mark.slow
def test_html_escapes_every_name(files: tuple[Path, Path]) -> None:
    code, out, _ = sninspect("report", files[1], "-f", "html", "--device", "cpu")
    assert code == 0
    assert "<script>" not in out and "&lt;script&gt;.weight" in out
    assert for_html(FILE_SHOWN) in out


@pytest.mark.slow
def test_check_text_is_one_line_per_violation(files: tuple[Path, Path]) -> None:
    args = ("check", files[1], "--max-cos-error", "inf", "--max-sigma", "0.5", "--device", "cpu")
    code, out, err = sninspect(*args)
    assert code == 1
    code_json, out_json, _ = sninspect(*args, "-f", "json")
    violations = json.loads(out_json)["violations"]
    lines = out.splitlines()
    assert len(lines) == len(violations) == len(CORPUS)
    assert all(line.startswith(f"{FILE_SHOWN}: ") for line in lines)
    assert len(err.splitlines()) == 1  # the summary line


@pytest.mark.slow
def test_layers_lists_every_name_once(files: tuple[Path, Path]) -> None:
    code, out, _ = sninspect("layers", files[1])
    assert code == 0
    assert len(layer_lines(out)) == len(CORPUS)
    assert "[bold red]x.weight" in out and "\\x1b[31mred.weight" in out


@pytest.mark.slow
def test_plots_draw_every_name(files: tuple[Path, Path], tmp_path: Path) -> None:
    code, _, err = sninspect("report", files[0], files[1], "-f", "json", "-o", tmp_path / "r.json",
                             "--plots", tmp_path / "plots", "--device", "cpu")
    assert code == 0, err
    drawn = sorted(p.name for p in (tmp_path / "plots").rglob("*.png"))
    assert drawn.count("sigma.png") == 2 and "trend_sigma.png" in drawn


@pytest.mark.slow
def test_stderr_lines_are_one_line_each(files: tuple[Path, Path], tmp_path: Path) -> None:
    code, _, err = sninspect("report", tmp_path / "gone[red]\x1b[2J\nforged.pt")
    assert code == 3
    assert len(err.splitlines()) == 1
    assert err.startswith("sninspect: error: ") and "gone[red]\\x1b[2J\\nforged.pt" in err
    code, _, err = sninspect("strip", files[1], "-o", tmp_path / "plain.pt")
    assert code == 0
    changed = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(changed) == len(CORPUS)
    for line, (_, shown, _) in zip(changed, CORPUS, strict=True):
        assert line.strip().startswith(f"{shown}.weight ")


# ----------------------------------------------------------------------------------------------
# Each escaping function


@pytest.mark.parametrize(("name", "shown", "_back"), CORPUS)
def test_terminal_text_is_the_visible_name(name: str, shown: str, _back: str) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)  # markup and emoji on, as by default
    table = Table("layer")
    table.add_row(for_terminal(name))
    console.print(table)
    console.print(for_terminal(f"warning: {name}"))
    assert shown in buffer.getvalue() and f"warning: {shown}" in buffer.getvalue()
    assert for_log_line(name) == shown == visible(name)


@given(st.text())
def test_visible_is_one_printable_line(text: str) -> None:
    shown = visible(text)
    assert shown.isprintable() and len(shown.splitlines()) <= 1
    shown.encode("utf-8")  # raises on a lone surrogate
    if text.isprintable():
        assert shown == text


@given(st.text())
def test_markdown_cell_stays_one_cell(text: str) -> None:
    cell = for_markdown(text)
    assert "\n" not in cell and "\r" not in cell
    unescaped = cell.replace("\\\\", "").replace("\\|", "")
    assert "|" not in unescaped and "`" not in cell.replace("\\`", "")


def test_markdown_escapes_by_hand() -> None:
    assert for_markdown("# heading") == "\\# heading"
    assert for_markdown("a|b`c`*d*") == "a\\|b\\`c\\`\\*d\\*"
    assert for_markdown("[x](http://e)<b>&amp;") == "\\[x\\](http://e)\\<b\\>\\&amp;"
    assert for_markdown("weight_orig") == "weight_orig" and for_markdown("_x_") == "\\_x\\_"
    assert for_markdown("a\nb") == "a\\\\nb"


@pytest.mark.parametrize(("cell", "expected"), [
    ("=1+2", "'=1+2"), ("+A1", "'+A1"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("\rx", "\\rx"), ("-0.5", "-0.5"), ("+1e5", "+1e5"), ("a,b\"c\nd", "a,b\"c\\nd"), ("x\x1by", "x\\x1by"),
    ("-", "-"), ("\r=cmd|' /C calc'!A0", "\\r=cmd|' /C calc'!A0"),
    ("\udcff", "\\udcff"), (-0.5, -0.5), (None, None),
])
def test_csv_cells(cell: object, expected: object) -> None:
    assert for_csv_cell(cell) == expected
    if isinstance(cell, str):
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerow([for_csv_cell(cell), "next"])
        assert list(csv.reader(io.StringIO(buffer.getvalue(), newline=""))) == [[expected, "next"]]


def test_json_is_valid_utf8_and_keeps_other_names() -> None:
    value = {"a\udcffb": ["\udcff", "\x1b[31m", 1.5, None], "ok": "σ [/]"}
    safe = for_json(value)
    assert safe == {"a\\udcffb": ["\\udcff", "\x1b[31m", 1.5, None], "ok": "σ [/]"}
    text = json.dumps(safe, ensure_ascii=False)
    assert json.loads(text.encode("utf-8").decode("utf-8")) == safe


@pytest.mark.parametrize("name", NAMES + ["\\$x$", "a$b", "$$", "\\"])
def test_plot_labels_are_never_mathtext(name: str) -> None:
    label = MplText(0, 0, for_plot(name))
    drawn, is_math = label._preprocess_math(label.get_text())  # what the renderer would draw
    assert is_math is False
    assert drawn == visible(name)


def test_html_by_hand() -> None:
    assert for_html("<script>&\"'\x1b") == "&lt;script&gt;&amp;&quot;&#x27;\\x1b"
