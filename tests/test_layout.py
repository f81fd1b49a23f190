"""The package's shape shows its design: imports run one way, no dialect name outside dialects/,
modules readable in one sitting, and the CLI starts without matplotlib."""

from __future__ import annotations

import ast
import re
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


@pytest.mark.slow
def test_cli_help_does_not_import_matplotlib() -> None:
    code = "import sys, sninspect.cli; sninspect.cli.app(['--help'], standalone_mode=False); " \
           "print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def _docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every docstring in ``path``: the module's, each class's and function's, and the
    string statements that document an attribute or constant."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for statement in body:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
                    and isinstance(statement.value.value, str):
                found.append((statement.lineno, statement.value.value))
    return found


_FILE_NAME = re.compile(r"[\w./-]*\w\.(?:md|py)\b")
_ISSUE = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)


def _in_repo(name: str) -> bool:
    """A path from the repository's root or the package's, or a bare file name found in the repository."""
    root = PACKAGE.parent
    if (root / name).exists() or (PACKAGE / name).exists():
        return True
    return "/" not in name and any(not set(p.relative_to(root).parts) & {".git", ".venv", "site-packages"}
                                   for p in root.rglob(name))


def test_docstrings_name_only_files_in_the_repo_and_no_issues() -> None:
    """A docstring says what and why now: a file it points to is one a reader of the repository can open,
    and the history of a change (its issue, its pass) belongs to the commit, not to the code."""
    bad = []
    for path in _modules():
        for line, text in _docstrings(path):
            where = f"{path.relative_to(PACKAGE)}:{line}"
            bad += [f"{where} names {name}, not in the repository" for name in _FILE_NAME.findall(text)
                    if not _in_repo(name)]
            bad += [f"{where} cites {match!r}" for match in _ISSUE.findall(text)]
    assert not bad, "\n".join(bad)


def test_public_names_are_sorted() -> None:
    import sninspect

    assert list(sninspect.__all__) == sorted(sninspect.__all__)
    assert all(hasattr(sninspect, name) for name in sninspect.__all__)


def _library_names(tree: ast.Module) -> set[str]:
    """Names a CLI module imports from the library (sninspect outside cli/): functions, classes, modules."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "sninspect" and node.module.split(".")[1:2] != ["cli"]:
            names |= {alias.asname or alias.name for alias in node.names if alias.name != "cli"}
        elif isinstance(node, ast.Import):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names
                      if alias.name.split(".")[0] == "sninspect" and alias.name.split(".")[1:2] != ["cli"]}
    return names


def _root(node: ast.expr) -> str | None:
    """The name an expression starts from: ``run`` of ``run.audit``, ``f`` of ``f``."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_cli_passes_no_keyword_bundle_into_the_library() -> None:
    """The CLI builds the library's typed options (``Options``, ``GraphOptions``, ``RewriteOptions``) field
    by field: no call from cli/ hands ``**something`` to a function, class or module it imports from the
    library (its own helpers, ``dataclasses.replace`` and the decorator's pass-through are not the library)."""
    found = []
    for path in sorted((PACKAGE / "cli").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        library = _library_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and any(k.arg is None for k in node.keywords) \
                    and _root(node.func) in library:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node.func)}(**...)")
    assert not found, "keyword bundles from the CLI into the library (build the options object):\n" + "\n".join(found)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _inside_with_overrides(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether ``node`` is (part of) an argument of a ``with_overrides(...)`` call."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.Call) and node is not parent.func \
                and ast.unparse(parent.func).rpartition(".")[2] == "with_overrides":
            return True
        node = parent
    return False


def _enclosing_parameters(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> set[str]:
    """The parameters of every function that encloses ``node`` (a decorator's wrapped function)."""
    names: set[str] = set()
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names |= {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
    return names


def test_library_entry_points_take_no_loose_keyword_options() -> None:
    """Below the CLI, a function's ``**overrides`` are a notebook's keyword spelling of one typed options
    object: they go straight into ``with_overrides`` (unknown names refused there) and nowhere else. The
    other ``**`` parameters allowed: a decorator's wrapper passing them to the function it wraps, and
    stand-ins that ignore them. (Integrations, like the CLI, sit above the library.)"""
    found = []
    for path in _modules():
        if RANK[_area(path)] >= RANK["cli"]:
            continue
        tree = ast.parse(path.read_text(), str(path))
        parents = _parents(tree)
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) or function.args.kwarg is None:
                continue
            bundle = function.args.kwarg.arg
            for use in ast.walk(function):
                if not (isinstance(use, ast.Name) and use.id == bundle) or _inside_with_overrides(use, parents):
                    continue
                call = parents.get(parents.get(use))  # f(**bundle): Name → keyword → Call
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) \
                        and call.func.id in _enclosing_parameters(function, parents):
                    continue  # a decorator's wrapper calling the function it wraps
                found.append(f"{path.relative_to(PACKAGE)}:{use.lineno} {function.name}(**{bundle})")
    assert not found, "keyword options that bypass the typed options (use with_overrides):\n" + "\n".join(found)


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
