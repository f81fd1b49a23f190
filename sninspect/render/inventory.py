"""``sninspect layers``: the weight layers of a checkpoint as a table (no numbers computed), fitted to
the console as ``report``'s table is (:mod:`sninspect.render.fit`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sninspect.render.escape import for_terminal
from sninspect.render.fit import hidden_note, name_cell, name_limit
from sninspect.render.report import fit_table, shape_text, strip_trailing

if TYPE_CHECKING:
    from sninspect.audit.layers.inventory import LayerInfo

COLUMNS = ("layer", "dialect", "kind", "shape", "dim", "dtype", "SN keys")
HIDE_ORDER = ("SN keys", "dtype", "dim", "kind", "shape")
"""On a narrow console whole columns go in this order; the layer name and its dialect always stay."""


def inventory_table(title: str, rows: Sequence[LayerInfo], hidden: Sequence[str] = (), width: int = 200) -> Table:
    """One row per layer: name, dialect, kind, shape, SN dim, dtype and the SN keys found."""
    table = Table(box=box.SIMPLE_HEAVY, title=for_terminal(title), title_justify="left")
    limit = name_limit([row.name for row in rows], width)
    shown = [c for c in COLUMNS if c not in hidden]
    for column in shown:
        if column == "layer":
            table.add_column(column, overflow="fold", max_width=limit)
        else:
            table.add_column(column, no_wrap=True, overflow="ellipsis")
    for row in rows:
        cells = {"dialect": row.dialect, "kind": row.kind,
                 "shape": shape_text(row.shape), "dim": "-" if row.dim is None else str(row.dim),
                 "dtype": row.dtype, "SN keys": ", ".join(row.sn_keys)}
        # names are data, never markup
        table.add_row(*(name_cell(row.name, limit) if c == "layer" else for_terminal(cells[c]) for c in shown))
    return table


def render_inventory(title: str, rows: Sequence[LayerInfo], console: Console) -> str:
    """The table as ``console`` would print it, whole columns hidden (and named) to fit its width."""
    width = console.width
    table, hidden = fit_table(lambda hide: inventory_table(title, rows, hide, width), HIDE_ORDER, width, console)
    table.title = name_cell(title, min(console.measure(table).maximum, width))  # a long path breaks at its "/"
    with console.capture() as captured:
        console.print(table)
        if hidden:
            console.print(Text(hidden_note(hidden, width, "a wider COLUMNS shows them"), style="dim"))
    return strip_trailing(captured.get())
