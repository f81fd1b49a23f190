"""Showing results, one module per format: :mod:`.terminal` (rich tables, ``check``'s text),
:mod:`.markdown`, :mod:`.html`, :mod:`.json`, :mod:`.csv`, :mod:`.github` and :mod:`.junit` (``check``),
each rendering every result type it supports from the tables of :mod:`.table`. Renderers receive
results and compute nothing.

:func:`render` is the one entry for a report, a run or the graph bound, :func:`render_check` for
``check`` verdicts (:mod:`.dispatch` maps each format to its module); :mod:`.plots` draws and writes
figures.
"""

from sninspect.render.dispatch import render, render_check
from sninspect.render.formats import CheckFormat, OutputFormat, PlotFormat

__all__ = ["CheckFormat", "OutputFormat", "PlotFormat", "render", "render_check"]
