"""The width rules every table follows (``report``, ``layers``, ``graph``, ``check``, the run view):
the console's width (80 on a terminal that wide, ``COLUMNS`` on a pipe), whole columns dropped in a
fixed order and named in one line, and names broken only between their parts (after ``.``, ``_``,
``/``, ``-`` or ``:``), never mid-word — unless one part alone is wider than the room.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text

from sninspect.render.escape import visible

_PARTS = re.compile(r"[^._/:\-\s]*(?:[._/:\-\s]+|$)")


def name_limit(names: Sequence[str], width: int, floor: int = 16) -> int:
    """The widest a name column gets at ``width``: the longest name, at most a third of the width
    (the numbers need the rest), never under ``floor`` (or the longest name, when shorter)."""
    longest = max((cell_len(n) for n in names), default=5)
    return max(min(longest, width // 3), min(longest, floor), 1)


def wrap_name(name: str, limit: int) -> str:
    """``name`` on lines of at most ``limit`` cells, broken after its separators (``main.4.`` |
    ``weight``); a single part wider than ``limit`` is cut (there is no other way to fit it)."""
    if cell_len(name) <= limit:
        return name
    lines: list[str] = []
    line = ""
    for part in (p for p in _PARTS.findall(name) if p):
        while cell_len(part) > limit:  # one part wider than the room: cut it, the only mid-word break
            if line:
                lines.append(line)
                line = ""
            lines.append(part[:limit])
            part = part[limit:]
        if cell_len(line + part) > limit and line:
            lines.append(line)
            line = ""
        line += part
    if line:
        lines.append(line)
    return "\n".join(lines)


def name_cell(name: str, limit: int) -> Text:
    """A name for a rich table cell: shown literally (no markup, control characters made visible), then
    broken between its parts to ``limit`` cells."""
    return Text(wrap_name(visible(name), limit))


def hidden_note(hidden: Sequence[str], width: int, hint: str = "") -> str:
    """The one line naming the columns dropped to fit ``width``."""
    return f"hidden at {width} columns: {', '.join(hidden)}" + (f" ({hint})" if hint else "")


def fit_text_table(header: Sequence[str], rows: Sequence[Sequence[str]], width: int,
                   hide_order: Sequence[str], names: Sequence[int] = (0,),
                   right: Sequence[int] = ()) -> tuple[list[str], list[str]]:
    """A plain-text table (two spaces between columns, a dashed rule under the header) that fits
    ``width``: whole columns go in ``hide_order`` until it does; then the ``names`` columns wrap at
    their separators. Returns the lines and the titles hidden."""
    hidden: list[str] = []
    keep = list(range(len(header)))

    def natural() -> int:
        return sum(max(cell_len(str(r[i])) for r in [header, *rows]) for i in keep) + 2 * (len(keep) - 1)

    for title in hide_order:
        if natural() <= width:
            break
        if title in header:
            hidden.append(title)
            keep = [i for i in keep if header[i] != title]
    widths = {i: max(cell_len(str(r[i])) for r in [header, *rows]) for i in keep}
    wrap = [i for i in keep if i in names]
    over = sum(widths.values()) + 2 * (len(keep) - 1) - width
    if over > 0 and wrap:  # share the room left among the name columns, each at least its header
        room = sum(widths[i] for i in wrap) - over
        for i in wrap:
            widths[i] = max(cell_len(header[i]), room // len(wrap), 8)
    lines = [_row([header[i] for i in keep], keep, widths, right)]
    lines.append("  ".join("-" * widths[i] for i in keep))
    for row in rows:
        cells = [wrap_name(str(row[i]), widths[i]) if i in wrap else str(row[i]) for i in keep]
        lines.append(_row(cells, keep, widths, right))
    return lines, hidden


def _row(cells: Sequence[str], keep: Sequence[int], widths: dict[int, int], right: Sequence[int]) -> str:
    split = [c.split("\n") for c in cells]
    height = max(len(s) for s in split)
    out = []
    for k in range(height):
        parts = []
        for column, lines in zip(keep, split, strict=True):
            text = lines[k] if k < len(lines) else ""
            pad = " " * max(widths[column] - cell_len(text), 0)
            parts.append(pad + text if column in right else text + pad)
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def wrap_line(line: str, width: int, indent: str = "  ") -> list[str]:
    """A message on lines of at most ``width`` cells, broken at spaces only (a name is never split),
    continuation lines indented."""
    if cell_len(line) <= width:
        return [line]
    return textwrap.wrap(line, width=width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) or [line]
