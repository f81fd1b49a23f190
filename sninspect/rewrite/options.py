"""What the rewrites take from the user: the divisor ``strip`` bakes in (``--sigma``), the PyTorch SN
that ``apply`` and ``convert`` write (``--style`` / ``--to``), and the layer-selecting regexes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from sninspect import dialects
from sninspect.dialects import Dialect, DialectName
from sninspect.errors import UsageError
from sninspect.errors import option as spelled

WEIGHT = re.compile(r"^(weight|\w+_weight|weight_[ih]h_l\d+(_reverse)?)$")
"""Parameter names ``apply`` treats as weights (``weight``, ``in_proj_weight``, LSTM's ``weight_hh_l0``;
not weight norm's ``weight_g`` / ``weight_v``)."""

TRANSPOSED_HINT = re.compile(r"transpose|deconv|convt|tconv|upconv|up_conv", re.IGNORECASE)
"""Names that suggest a ConvTranspose (which SN normalizes along dim=1)."""


class Style(StrEnum):
    """The PyTorch SN that ``apply`` and ``convert`` write."""

    torch = "torch"
    """``torch.nn.utils.spectral_norm``: ``P_orig``, ``P_u``, ``P_v``."""
    parametrize = "parametrize"
    """``torch.nn.utils.parametrizations.spectral_norm``: ``parametrizations.P.original``,
    ``parametrizations.P.0._u``, ``parametrizations.P.0._v``."""

    @property
    def dialect(self) -> DialectName:
        """The name ``sninspect`` reports this SN under."""
        return DialectName.torch if self is Style.torch else DialectName.parametrize

    @property
    def writer(self) -> Dialect:
        """The dialect that emits this SN's keys."""
        return dialects.by_name(self.dialect)

    @classmethod
    def parse(cls, style: Style | str) -> Style:
        try:
            return cls(style)
        except ValueError:
            raise UsageError(f"style {style!r}: expected torch or parametrize") from None


@dataclass(frozen=True)
class Sigma:
    """What ``strip`` divides by: ``eval`` | ``exact`` | ``power:N``."""

    mode: Literal["eval", "exact", "power"] = "eval"
    steps: int = 0
    """Power steps (``power`` only)."""

    @classmethod
    def parse(cls, text: str | Sigma) -> Sigma:
        if isinstance(text, Sigma):
            return text
        if text in ("eval", "exact"):
            return cls(text)  # type: ignore[arg-type]
        match = re.fullmatch(r"power:(\d+)", text)
        if match is None or int(match[1]) < 1:
            raise UsageError(f"{spelled('sigma', repr(text))}: expected eval, exact or power:N with N ≥ 1 "
                             "(e.g. power:10)")
        return cls("power", int(match[1]))

    def __str__(self) -> str:
        return f"power:{self.steps}" if self.mode == "power" else self.mode


class Selector:
    """``--include`` / ``--exclude``: regexes searched in a layer's display name."""

    def __init__(self, include: str | None = None, exclude: str | None = None) -> None:
        self.include = compile_option(include, "include")
        self.exclude = compile_option(exclude, "exclude")

    def __call__(self, name: str) -> bool:
        if self.include is not None and not self.include.search(name):
            return False
        return self.exclude is None or not self.exclude.search(name)


def compile_option(pattern: str | None, option: str) -> re.Pattern[str] | None:
    """A user's regex for ``option``, or None when not given."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise UsageError(f"{spelled(option, repr(pattern))}: not a valid regular expression ({err})") from err
