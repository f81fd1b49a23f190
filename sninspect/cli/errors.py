"""Where failures become exit codes: library errors, interrupts and bugs, each one line on stderr. A
command that ran to its end exits with its outcome's ``exit_code`` (:class:`sninspect.audit.runs.run.Outcome`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from sninspect.errors import ExitCode, SninspectError, command_line_spelling
from sninspect.io.write import Signalled
from sninspect.render.escape import for_log_line

F = TypeVar("F", bound=Callable[..., Any])


def stderr() -> Console:
    """Where notes, warnings and errors go (stdout is for the report)."""
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def say(line: str) -> None:
    """``sninspect: <line>`` on stderr, as one line shown literally (names in it are data)."""
    stderr().print(f"sninspect: {for_log_line(line)}", markup=False)


def handle_errors(command: F) -> F:
    """Turn library errors into one line on stderr and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with command_line_spelling():  # messages name options as flags: --key, not key=
                return command(*args, **kwargs)
        except SninspectError as err:
            _exit(f"error: {err}", err.exit_code)
        except Signalled as caught:  # SIGTERM/SIGHUP that escaped a write's own unwinding: end as it says
            caught.die()
        except KeyboardInterrupt:
            stderr().print("sninspect: interrupted", markup=False)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as err:  # a bug: still one line, unless asked for the traceback
            if os.environ.get("SNINSPECT_DEBUG"):
                raise
            _exit(f"internal error: {type(err).__name__}: {err} (rerun with SNINSPECT_DEBUG=1 for the "
                  "traceback, and please report it)", ExitCode.INTERNAL)

    return wrapper  # type: ignore[return-value]


def _exit(line: str, code: ExitCode) -> NoReturn:
    say(line)
    raise typer.Exit(int(code)) from None
