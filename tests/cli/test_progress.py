"""The progress bar: drawn on a terminal, silent when stderr is not one or with --quiet."""

from __future__ import annotations

import io
import time

from rich.console import Console

from sninspect.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def console(file: io.StringIO) -> Console:
    return Console(file=file, force_terminal=True, width=80)


def run(bar: Progress, items: int = 3) -> None:
    with bar:
        for i in range(items):
            bar.start(f"ckpt_{i}.pt")
            bar.advance()


def test_drawn_on_a_terminal_after_the_delay() -> None:
    out = Terminal()
    bar = Progress(3, "auditing", console=console(out), delay=0.0)
    run(bar)
    assert bar.shown and "auditing" in out.getvalue()


def test_a_fast_run_prints_nothing() -> None:
    out = Terminal()
    bar = Progress(3, "auditing", console=console(out), delay=5.0)
    run(bar)
    assert not bar.shown and out.getvalue() == ""


def test_a_slow_step_shows_up_by_itself() -> None:
    out = Terminal()
    with Progress(1, "auditing", console=console(out), delay=0.05) as bar:
        bar.start("big.pt")
        time.sleep(0.4)
        bar.advance()
    assert bar.shown and "big.pt" in out.getvalue()


def test_silent_when_not_a_terminal_or_quiet() -> None:
    pipe = io.StringIO()  # force_terminal alone (FORCE_COLOR in CI) does not make a live bar
    bar = Progress(3, "auditing", console=console(pipe), delay=0.0)
    run(bar)
    assert not bar.shown and pipe.getvalue() == ""
    out = Terminal()
    quiet = Progress(3, "auditing", console=console(out), delay=0.0, quiet=True)
    run(quiet)
    assert not quiet.shown and out.getvalue() == ""
