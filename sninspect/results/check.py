"""What ``check`` found, as data: the rules, each broken rule, the verdict per checkpoint.

Judged by :func:`sninspect.audit.checks.check`; shown by :mod:`sninspect.render.check`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

DEFAULT_MAX_SIGMA = 1.05
"""σ_eff up to 5% above 1: one power step per training step keeps trained SN well inside this."""
DEFAULT_MAX_COS_ERROR = 1e-2
"""1 − |cos| ≤ 0.01 is an angle of about 8° between the stored and the exact top vector."""


class Rule(StrEnum):
    """The name of a broken rule (the ``rule`` field of a violation in JSON)."""

    max_sigma = "max_sigma"
    max_cos_error = "max_cos_error"
    max_lipschitz = "max_lipschitz"
    not_audited = "not_audited"
    no_sn_layers = "no_sn_layers"
    warning = "warning"
    unreadable = "unreadable"


@dataclass(frozen=True)
class Rules:
    """The limits; ``None`` turns a rule off."""

    max_sigma: float | None = DEFAULT_MAX_SIGMA
    """Largest allowed σ_eff of an SN layer."""
    max_cos_error: float | None = DEFAULT_MAX_COS_ERROR
    """Largest allowed 1 − |cos| between a stored u or v and the exact top singular vector."""
    max_lipschitz: float | None = None
    """Largest allowed certified operator product of the primary model."""
    fail_on_warning: bool = False
    """Every report warning is a violation."""


@dataclass(frozen=True)
class Violation:
    """One broken rule."""

    checkpoint: str
    rule: Rule
    layer: str | None
    """The layer that breaks it; ``None`` for a checkpoint-wide rule."""
    quantity: str | None
    """The JSON name of the number judged (``sigma_effective``, ``cos_error_u``, ``operator_product``)."""
    value: float | None
    limit: float | None
    message: str
    """One line a person can act on."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rule"] = self.rule.value
        if data["value"] is not None and not math.isfinite(data["value"]):
            data["value"] = None
        return data


@dataclass(frozen=True)
class Verdict:
    """The outcome for one checkpoint."""

    checkpoint: str
    layers_checked: int
    """SN layers judged."""
    violations: tuple[Violation, ...]

    @property
    def passed(self) -> bool:
        return not self.violations
