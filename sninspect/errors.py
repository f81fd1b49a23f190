"""Errors a user can act on, and the exit codes they map to.

Every error sninspect raises on purpose is a :class:`SninspectError`. Its message names the thing,
what was expected, what arrived and, where there is one, the fix. :mod:`sninspect.cli.errors` turns
it into one line on stderr and ``exit_code``; nothing else in the package prints or exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (documented in the README)."""

    OK = 0
    """Done; for ``check``: every rule holds."""
    CHECK_FAILED = 1
    """``check``: at least one rule is broken."""
    USAGE = 2
    """Bad command line: unknown option, bad value, unknown ``--key``."""
    BAD_INPUT = 3
    """An input file is missing, unreadable, malformed, or refused as unsafe."""
    WRITE_FAILED = 4
    """An output could not be written (exists without ``--force``, is the input, disk error)."""
    INTERNAL = 5
    """A bug in sninspect (one line; ``SNINSPECT_DEBUG=1`` shows the traceback)."""


class SninspectError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(SninspectError):
    """A checkpoint that cannot be read: missing, a directory, empty, truncated, garbage."""

    exit_code = ExitCode.BAD_INPUT


class UnsafeCheckpointError(InputError):
    """A pickle that would need arbitrary code to load; refused unless ``--unsafe-load``."""


class UsageError(SninspectError, ValueError):
    """The caller asks for something that does not exist (a ``key``, a bad option value): a
    :class:`ValueError` too, so ``except ValueError`` catches it from Python."""

    exit_code = ExitCode.USAGE


class MissingFileError(InputError, FileNotFoundError):
    """A checkpoint path that does not exist: a :class:`FileNotFoundError` too."""


class UnknownKeyError(UsageError, KeyError):
    """A ``key`` (a sub-dict of a wrapped checkpoint) that is not there: a :class:`KeyError` too."""


class OutputError(SninspectError):
    """An output that must not or could not be written; the previous file is left intact."""

    exit_code = ExitCode.WRITE_FAILED


class LayerError(SninspectError):
    """One layer is broken (NaN weights, u/v of the wrong length); the others are still audited."""


class LinalgError(LayerError):
    """The math could not be done on one layer's tensors; raised by :mod:`sninspect.linalg` and turned
    into that layer's ``error`` by the audit's per-layer boundary."""


class OperandError(LinalgError, ValueError):
    """A tensor the math does not take: wrong shape, empty, non-finite, complex, mismatched lengths."""


class SolverError(LinalgError, RuntimeError):
    """A solver failed on a valid operand: an SVD or eigen-solve that did not converge (an
    ill-conditioned matrix), a Cholesky that broke down, an iteration that ran out of steps."""


class NotConvergedError(SolverError):
    """An iterative eigen-solve ran out of iterations before its residual test held."""


class TensorKindError(LayerError, TypeError):
    """A tensor of a kind sninspect cannot audit: meta (no data), complex, integer or boolean."""


class MemoryBudgetError(LayerError, MemoryError):
    """A layer (or its ``--bound-tol`` / ``--input-size`` work) would need more memory than the budget:
    the available memory, or ``--max-memory``. Raised before anything is allocated."""

    def __init__(self, message: str, needed: int = 0, budget: int = 0) -> None:
        super().__init__(message)
        self.needed, self.budget = needed, budget


# ----------------------------------------------------------------------------------------------
# How a message names an option: the command line's flag or the library's keyword argument.

_COMMAND_LINE: ContextVar[bool] = ContextVar("sninspect_command_line", default=False)


@contextmanager
def command_line_spelling() -> Iterator[None]:
    """Within this block, messages name options as flags (``--key``); the CLI enters it around each
    command. Outside it (the library), they name keyword arguments (``key=``)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def option(name: str, value: str = "") -> str:
    """Option ``name`` (the library's keyword, ``max_memory``) with its shown ``value`` as the user
    wrote it: ``--max-memory 2x`` on the command line, ``max_memory=2x`` from Python; without a value,
    ``--max-memory`` / ``max_memory=``."""
    if _COMMAND_LINE.get():
        flag = "--" + name.replace("_", "-")
        return f"{flag} {value}" if value else flag
    return f"{name}={value}"


def flag(name: str, cli: str | None = None) -> str:
    """A switch (``unsafe_load``) as the user turns it on: ``--unsafe-load`` or ``unsafe_load=True``;
    ``cli`` where the flag is not the keyword's spelling (``all_layers`` is ``--all``)."""
    if _COMMAND_LINE.get():
        return cli or "--" + name.replace("_", "-")
    return f"{name}=True"
