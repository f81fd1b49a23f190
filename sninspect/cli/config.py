"""``check`` rules from ``[tool.sninspect.check]`` in the nearest ``pyproject.toml`` (flags override).

The nearest file is the first ``pyproject.toml`` found from the current directory upward, as black
and pytest find their project root; a file without the table gives the built-in defaults. Keys are
the flag names without ``--``; ``inf`` (TOML's own ``inf``) turns a limit off::

    [tool.sninspect.check]
    max-sigma = 1.08
    max-cos-error = inf
    max-lipschitz = 50.0
    fail-on-warning = true
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from sninspect.cli.errors import say
from sninspect.errors import UsageError
from sninspect.results.check import Rules

LIMITS = ("max-sigma", "max-cos-error", "max-norm-error", "max-lipschitz")
SWITCHES = ("fail-on-warning", "strict-cos")
assert {k.replace("-", "_") for k in LIMITS + SWITCHES} == {f.name for f in fields(Rules)}  # Precondition


def find_pyproject(start: Path) -> Path | None:
    """The first ``pyproject.toml`` in ``start`` or a folder above it."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_table(path: Path) -> dict[str, Any]:
    """``[tool.sninspect.check]`` of ``path`` (empty when absent); a file that is not TOML, or a
    table that is not one, is a usage error naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"{path}: cannot read the [tool.sninspect.check] settings: {err}") from None
    table: Any = data.get("tool", {}).get("sninspect", {}).get("check", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [tool.sninspect.check] must be a table")
    return table


def _float(value: int | float) -> float:
    """``value`` as a float; NaN for an integer too long for one (TOML integers are not bounded here)."""
    try:
        return float(value)
    except OverflowError:
        return math.nan


def rules_from(table: dict[str, Any], source: Path, flags: dict[str, Any]) -> Rules:
    """The built-in defaults, then ``table``'s keys, then every flag given (not ``None``)."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in LIMITS:
            if isinstance(value, bool) or not isinstance(value, int | float) or not _float(value) >= 0:
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                raise UsageError(f"{source}: [tool.sninspect.check] {key} = {shown}: expected a "
                                 f"non-negative number (inf turns the rule off)")
            values[key.replace("-", "_")] = None if math.isinf(value) else float(value)
        elif key in SWITCHES:
            if not isinstance(value, bool):
                raise UsageError(f"{source}: [tool.sninspect.check] {key} = {value!r}: expected true or false")
            values[key.replace("-", "_")] = value
        else:
            known = ", ".join(LIMITS + SWITCHES)
            raise UsageError(f"{source}: [tool.sninspect.check] has an unknown key {key!r} (known: {known})")
    for name, value in flags.items():
        if value is not None:
            values[name] = None if isinstance(value, float) and math.isinf(value) else value
    return replace(Rules(), **values)


def rules_for(command: str, flags: dict[str, Any], *, quiet: bool) -> tuple[Rules, Path | None]:
    """The rules ``command`` judges by: the defaults, the nearest ``[tool.sninspect.check]`` (said on
    stderr unless ``quiet``), then ``flags`` (``None``: not given); and that ``pyproject.toml`` (an input:
    no output may replace it), None when there is none. ``check`` and ``report`` both read them here, so
    a layer's verdict is the same in both."""
    pyproject = find_pyproject(Path.cwd())
    table = read_table(pyproject) if pyproject is not None else {}
    if table and not quiet:
        say(f"{command}: rules from {pyproject} [tool.sninspect.check]")
    return rules_from(table, pyproject or Path("pyproject.toml"), flags), pyproject
