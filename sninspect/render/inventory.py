"""``sninspect layers``: the weight layers of a checkpoint as a table (no numbers computed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from sninspect.render.report import shape_text, strip_trailing

if TYPE_CHECKING:
    from sninspect.audit.inventory import LayerInfo

COLUMNS = ("layer", "dialect", "kind", "shape", "dim", "dtype", "SN keys")


def inventory_table(title: str, rows: Sequence[LayerInfo]) -> Table:
    """One row per layer: name, dialect, kind, shape, SN dim, dtype and the SN keys found."""
    table = Table(title=title, title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.name, row.dialect, row.kind, shape_text(row.shape),
                      "-" if row.dim is None else str(row.dim), row.dtype, ", ".join(row.sn_keys))
    return table


def render_inventory(title: str, rows: Sequence[LayerInfo], console: Console) -> str:
    """The table as ``console`` would print it."""
    with console.capture() as captured:
        console.print(inventory_table(title, rows))
    return strip_trailing(captured.get())
