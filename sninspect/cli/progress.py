"""A progress bar on stderr for runs longer than about a second.

It appears only after ``delay`` seconds (a fast run prints nothing), is transient (erased when done),
and stays silent when stderr is not a terminal (CI logs, pipes, CliRunner) or with ``--quiet``.
A timer thread starts it, so a single long step (one big checkpoint) still shows a spinner and the
elapsed time.
"""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress

from sninspect.render.escape import for_log_line

DELAY = 1.0
"""Seconds before the bar appears."""


class Progress:
    """``with Progress(3, "auditing") as bar: bar.start("D.pt"); ...; bar.advance()``."""

    def __init__(self, total: int, description: str, *, quiet: bool = False, console: Console | None = None,
                 delay: float = DELAY) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = not quiet and total > 0 and _is_terminal(self.console)
        self.description = description
        self._delay = delay
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._started = False
        self._bar = RichProgress(
            SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console, transient=True,
        )
        self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> Progress:
        if self.enabled:
            if self._delay <= 0:
                self._show()
            else:
                self._timer = threading.Timer(self._delay, self._show)
                self._timer.daemon = True
                self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self._started and self.enabled:
                self._bar.stop()
            self.enabled = False

    def start(self, label: str) -> None:
        """Say what is being worked on now (``D_000500.pt``)."""
        self._bar.update(self._task, description=f"{self.description} {for_log_line(label)}")  # a file name: data

    def advance(self) -> None:
        """One item done."""
        self._bar.advance(self._task)

    @property
    def shown(self) -> bool:
        """Whether the bar has been drawn."""
        return self._started

    def _show(self) -> None:
        with self._lock:
            if self.enabled and not self._started:
                self._started = True
                self._bar.start()


def _is_terminal(console: Console) -> bool:
    """A real terminal only: FORCE_COLOR in a CI log must not turn on a live bar."""
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(isatty and isatty()) and console.is_terminal
    except ValueError:  # a closed stream
        return False
