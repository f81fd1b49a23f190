"""Errors a user can act on, and the exit codes they map to.

Every error sninspect raises on purpose is a :class:`SninspectError`. Its message names the thing,
what was expected, what arrived and, where there is one, the fix. ``cli.py`` turns it into one line
on stderr and ``exit_code``; nothing else in the package prints or exits.
"""

from __future__ import annotations

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


class UsageError(SninspectError):
    """The command line asks for something that does not exist (``--key``, a bad option value)."""

    exit_code = ExitCode.USAGE


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
