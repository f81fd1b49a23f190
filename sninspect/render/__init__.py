"""Showing results: terminal, text formats, HTML, plots. Renderers receive results and compute nothing.

:func:`render` is the one entry for a report or a run; :mod:`.check` shows ``check`` verdicts,
:mod:`.inventory` the ``layers`` listing, :mod:`.plots` draws and writes figures.
"""

from sninspect.render.dispatch import render
from sninspect.render.formats import CheckFormat, OutputFormat, PlotFormat

__all__ = ["CheckFormat", "OutputFormat", "PlotFormat", "render"]
