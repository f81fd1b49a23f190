"""The math's typed failures: torch's solver errors become :class:`~sninspect.errors.SolverError`.

LAPACK and cuSOLVER report an SVD or eigen-solve that did not converge (an ill-conditioned or
non-finite matrix) as ``torch.linalg.LinAlgError``; the public solvers of :mod:`sninspect.linalg`
are wrapped with :func:`typed_solver_errors` so that every failure of the math is a
:class:`~sninspect.errors.LinalgError`, which the audit turns into one layer's error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

from sninspect.errors import SolverError

P = ParamSpec("P")
R = TypeVar("R")


def typed_solver_errors(function: Callable[P, R]) -> Callable[P, R]:
    """``torch.linalg.LinAlgError`` raised inside ``function`` becomes a one-line :class:`SolverError`."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except torch.linalg.LinAlgError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SolverError(f"solver failed: {first}") from err

    return wrapper
