"""The package's shape shows its design: imports run one way, no dialect name outside dialects/,
modules readable in one sitting, and the CLI starts without matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sninspect"

RANK = {"errors": -1, "results": 0, "_version": 0, "linalg": 1, "io": 1, "dialects": 2, "audit": 3, "render": 4,
        "rewrite": 4, "monitor": 4, "cli": 5, "integrations": 5, "__init__": 6, "__main__": 7}
"""cli → render/rewrite → audit → dialects → linalg/io; results and errors are read by all. The training
monitor sits beside render (it drives the audit); framework integrations (Lightning) sit on it."""

MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _area(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


LAZY_UPWARD = {("results", "render")}
"""Imports allowed against the layering inside a function body only: a result's notebook hooks
(``Report._repr_html_``, ``Report.plot``) hand it to ``render`` when Jupyter asks. Importing there
keeps the results free of render at import time, so no import cycle and no matplotlib on load."""


def _lazy_lines(path: Path) -> set[int]:
    """Lines of the imports inside function bodies."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return lines


def _imported_areas(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "sninspect":
                continue
            if len(parts) > 1:
                found.append((node.lineno, parts[1]))
            else:  # from sninspect import x, y
                found += [(node.lineno, alias.name if alias.name in RANK else "__init__") for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "sninspect":
                    found.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return found


def test_imports_run_one_way() -> None:
    upward = []
    for path in _modules():
        area = _area(path)
        lazy = _lazy_lines(path)
        for line, target in _imported_areas(path):
            if target == area or ((area, target) in LAZY_UPWARD and line in lazy):
                continue
            if RANK.get(target, 99) >= RANK[area]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def _dialect_names() -> set[str]:
    sys.path.insert(0, str(PACKAGE.parent))
    from sninspect.dialects.base import DialectName

    return {str(member.value) for member in DialectName}


def test_no_dialect_name_literal_outside_dialects() -> None:
    names = _dialect_names()
    found = []
    for path in _modules():
        if RANK[_area(path)] <= RANK["dialects"]:  # below dialects nothing knows them ("torch" is a module there)
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare | ast.match_case):
                continue
            for leaf in ast.walk(node):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str) and leaf.value in names:
                    found.append(f"{path.relative_to(PACKAGE)}:{leaf.lineno} {leaf.value!r}")
    assert not found, "dialect names outside dialects/ (ask the dialect instead):\n" + "\n".join(found)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_readable_in_one_sitting(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (> {MAX_LINES}): split it by concern"


def test_cli_help_does_not_import_matplotlib() -> None:
    code = "import sys, sninspect.cli; sninspect.cli.app(['--help'], standalone_mode=False); " \
           "print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


FORMAT_SYNTAX = {
    "|---": "render/markdown.py",  # a Markdown table's alignment row
    "<table": "render/html.py",
    "<td": "render/html.py",
    "json.dumps(": "results/jsonable.py",  # the one JSON policy
    "csv.writer(": "render/csv.py",
    ".to_csv(": "render/csv.py",
    "::error": "render/github.py",
    "---:": "render/markdown.py",  # a right-aligned Markdown column
    "ElementTree": "render/junit.py",
    "rich.table": "render/terminal.py",
    "rich.panel": "render/terminal.py",
}
"""What only one format's module writes: its syntax appears in no other module of ``render/`` or
``results/`` (a new format is one module, and no result type keeps a writer of its own)."""


def test_one_module_per_format() -> None:
    sys.path.insert(0, str(PACKAGE.parent))
    from sninspect.render import dispatch
    from sninspect.render.formats import CheckFormat, OutputFormat

    assert set(dispatch.FORMAT_MODULES) == set(OutputFormat) and set(dispatch.CHECK_FORMAT_MODULES) == set(CheckFormat)
    assert len(set(dispatch.FORMAT_MODULES.values())) == len(OutputFormat), "two formats share a module"
    for fmt in OutputFormat:
        assert callable(getattr(dispatch.format_module(fmt), "render", None)), f"{fmt}: no render()"
    for check_fmt in CheckFormat:
        module = dispatch.format_module(check_fmt)
        assert callable(getattr(module, "render_check", None)), f"{check_fmt}: no render_check()"
    found = []
    for path in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        if _area(path) not in ("render", "results"):
            continue
        text = path.read_text()
        found += [f"{relative}: {syntax!r} (belongs in {home})" for syntax, home in FORMAT_SYNTAX.items()
                  if syntax in text and relative != home]
    assert not found, "a format's syntax outside its module:\n" + "\n".join(found)
