"""Rewriting checkpoints: strip, apply, convert, as drivers over the dialects."""

from sninspect.rewrite.core import Rewrite, Style, apply, convert, strip

__all__ = ["Rewrite", "Style", "apply", "convert", "strip"]
