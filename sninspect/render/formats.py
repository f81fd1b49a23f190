"""The output choices of the CLI, as ``StrEnum``s, and the :class:`View` options every format reads.
Importing them imports nothing heavy (no matplotlib, no rich)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


class OutputFormat(StrEnum):
    """``report --format`` choices."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    html = "html"

    @property
    def draws_figures(self) -> bool:
        """Whether rendering draws figures (slow enough for a progress bar)."""
        return self is OutputFormat.html

    @classmethod
    def for_path(cls, path: PurePath) -> OutputFormat | None:
        """The format a file name asks for by its extension (``r.json`` → json), None when unknown."""
        return _BY_SUFFIX.get(path.suffix.lower())


_BY_SUFFIX = {
    ".json": OutputFormat.json,
    ".csv": OutputFormat.csv,
    ".md": OutputFormat.markdown,
    ".markdown": OutputFormat.markdown,
    ".html": OutputFormat.html,
    ".htm": OutputFormat.html,
    ".txt": OutputFormat.table,
}
"""``report -o FILE``: the extensions that choose a format (README "Output files")."""

SUFFIXES = tuple(_BY_SUFFIX)


class PlotFormat(StrEnum):
    """``--plot-format`` choices."""

    png = "png"
    svg = "svg"
    pdf = "pdf"


class CheckFormat(StrEnum):
    """``check --format`` choices."""

    text = "text"
    json = "json"
    github = "github"


@dataclass(frozen=True)
class View:
    """How a result is to be shown, whatever the format; each format reads what applies to it."""

    console: Console | None = None
    """The terminal table as this console prints it (its width and colours); None: plain text for a file."""
    width: int | None = None
    """The width of a plain-text table without a console (None: 160 columns)."""
    spectra: bool = False
    """JSON: every layer's singular values."""
    explain: bool = False
    """The terminal table ends with what each column means (Markdown and HTML always have it)."""
    on_checkpoint: Callable[[str], None] | None = None
    """Called with each checkpoint's name once its figures are drawn (HTML; a progress hook)."""

    @property
    def text_width(self) -> int:
        """The width of plain text: the console's, else ``width``, else 160."""
        if self.console is not None:
            return self.console.width
        return self.width if self.width is not None else 160
