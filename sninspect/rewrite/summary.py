"""What a rewrite did: one entry per layer, and the result of rewriting a checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerChange:
    """What happened to one layer."""

    name: str
    """Display name (the plain key, prefixed by the model when the file holds several)."""
    source: str
    """Dialect before (``none`` for a plain weight)."""
    target: str
    """Dialect after (``none`` once stripped)."""
    detail: str
    """The divisor baked in, the vectors written, or why nothing changed."""


@dataclass(frozen=True)
class Rewrite:
    """What ``strip`` / ``apply`` / ``convert`` did to a checkpoint file (or would do: ``dry_run``)."""

    operation: str
    """``strip``, ``apply`` or ``convert``."""
    source: str
    """The input checkpoint."""
    output: str
    """The file written (or that a dry run would write)."""
    output_format: str
    """``torch`` or ``safetensors`` (from the output's extension)."""
    changes: tuple[LayerChange, ...]
    """One entry per layer rewritten (or left as it was, with the reason)."""
    notes: tuple[str, ...]
    """Keys dropped, renamed or moved, and why."""
    warnings: tuple[str, ...]
    """Things that may need the user's attention."""
    written: bool
    """False for a dry run."""

    def summary(self) -> list[str]:
        """Lines for the terminal: what changed, then notes and warnings."""
        verb = "wrote" if self.written else "dry run, would write"
        lines = [f"{self.operation} {self.source}: {verb} {self.output} ({self.output_format}), "
                 f"{len(self.changes)} layer(s)"]
        width = max((len(c.name) for c in self.changes), default=0)
        lines += [f"  {c.name:<{width}}  {c.source} → {c.target}  {c.detail}" for c in self.changes]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def short(items: list[str], limit: int = 6) -> str:
    """The first ``limit`` items, joined, and how many more."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
