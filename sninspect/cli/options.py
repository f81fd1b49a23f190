"""Options shared by several commands, declared once; the small parsers behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sninspect.audit.memory import parse_size
from sninspect.audit.options import Options
from sninspect.cli.errors import say
from sninspect.errors import UsageError

# Reading checkpoints (report, check, layers, strip, apply, convert).
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Working precision: float64 or float32.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Sub-dict of a wrapped checkpoint, e.g. netD or a.b.")]
IncludeOpt = Annotated[str | None, typer.Option("--include", help="Only layers whose name matches this regex.")]
ExcludeOpt = Annotated[str | None, typer.Option("--exclude", help="Leave out layers matching this regex.")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe-load", help="Unpickle arbitrary objects. Runs code from "
                                         "the file: only for files you trust.")]
MaxMemoryOpt = Annotated[str | None, typer.Option("--max-memory", help="Memory one layer's audit may use, e.g. "
                                              "2G or 512M (default: the memory available now). A layer "
                                              "that would need more is reported as not audited, with "
                                              "the size it would need.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr (errors "
                                       "still print).")]

# Rewriting checkpoints (strip, apply, convert).
CheckpointArg = Annotated[Path, typer.Argument(help="Checkpoint file (.pt, .pth, .ckpt, .bin, .safetensors, "
                                                    "*.index.json).")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="File to write; its extension (.pt, .pth, "
                                         ".ckpt, .bin or .safetensors) decides the format.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists (never the input).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would change; write nothing.")]
KeepOptimizerOpt = Annotated[bool, typer.Option("--keep-optimizer", help="Keep optimizer state (dropped by "
                                                "default: it refers to the SN parameters).")]
TransposedOpt = Annotated[str | None, typer.Option("--transposed", help="Regex naming ConvTranspose layers "
                                                   "(SN along dim=1).")]


def audit_options(*, device: str, dtype: str, key: str | None, include: str | None, exclude: str | None,
                  unsafe_load: bool, max_memory: str | None = None, **more: Any) -> Options:
    """The library's options from the shared ones (and a command's own, ``more``); warns once about
    ``--unsafe-load``."""
    warn_unsafe(unsafe_load)
    return Options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                   unsafe_load=unsafe_load, max_memory=parse_size(max_memory) if max_memory else None, **more)


def warn_unsafe(unsafe_load: bool) -> None:
    if unsafe_load:
        say("warning: --unsafe-load unpickles arbitrary objects; this runs code from the file")


def parse_input_size(text: str | None) -> tuple[int, ...] | None:
    """``64`` or ``64,48`` → (64,) / (64, 48)."""
    if text is None:
        return None
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if not size or len(size) > 3 or any(n < 1 for n in size):
        raise UsageError(f"--input-size {text!r}: expected H, H,W or H,W,D as positive integers")
    return size


def limit(value: float | None) -> float | None:
    """``inf`` (or no value) turns a rule off."""
    return None if value is None or value == float("inf") else value
