"""The output choices of the CLI, as ``StrEnum``s. Importing them imports nothing heavy (no matplotlib)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import PurePath


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
