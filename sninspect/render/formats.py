"""The output choices of the CLI, as ``StrEnum``s. Importing them imports nothing heavy (no matplotlib)."""

from __future__ import annotations

from enum import StrEnum


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
