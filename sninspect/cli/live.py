"""``report`` on a terminal: the per-layer table as soon as the spectra are done, the certified bounds
filling in as each is computed.

A rich ``Live`` display on stdout, transient and cropped to the screen (a table taller than the
terminal cannot be redrawn in place), with a line counting the bounds done; when the audit ends (or is
interrupted) it is erased and the report is printed once, in full, as it always is. Only for one
checkpoint rendered as a table on a terminal, without ``-o``: every other output is unchanged.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from sninspect.render.terminal import layer_table, summary_panel
from sninspect.results.report import Report, bound_not_computed


class LiveReport:
    """``with LiveReport(console) as live: analyze(..., on_partial=live.update)``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live = Live(console=console, transient=True, vertical_overflow="crop", auto_refresh=True,
                          refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._total: int | None = None
        self._shown = False

    def __enter__(self) -> LiveReport:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def update(self, report: Report) -> None:
        """Show ``report`` as it stands (bounds not computed yet shown so)."""
        missing = sum(bound_not_computed(la) for la in report.layers)
        with self._lock:
            if self._total is None:
                self._total = missing
            table, _hidden = layer_table(report, self.console.width, self.console)
            done = self._total - missing
            line = Text(f"certified bounds: {done} of {self._total} done · "
                        f"{time.monotonic() - self._started:.0f} s · Ctrl-C prints the report as it stands",
                        style="dim")
            if not self._shown:
                self._shown = True
                self._live.start()
            self._live.update(Group(table, line, summary_panel(report, width=min(self.console.width, 120))),
                              refresh=True)

    def stop(self) -> None:
        """Erase the live display (the caller prints the report)."""
        with self._lock:
            if self._shown:
                self._live.stop()
                self._shown = False
