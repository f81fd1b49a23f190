"""Options shared by several commands, declared once; the small parsers behind them."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from sninspect.audit.memory import parse_size
from sninspect.audit.options import Options
from sninspect.cli.errors import say
from sninspect.errors import UsageError

# Reading checkpoints (report, check, layers, strip, apply, convert).
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N (N: the GPU's index)")
    return value


class Dtype(StrEnum):
    """``--dtype`` choices: the working precision of the math."""

    float64 = "float64"
    float32 = "float32"


DeviceOpt = Annotated[str, typer.Option("--device", metavar="[auto|cpu|cuda|cuda:N]", callback=_device,
                                        help="Where the math runs: auto (CUDA when present), cpu, cuda or "
                                        "cuda:N.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Working precision.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Sub-dict of a wrapped checkpoint, e.g. netD or a.b.")]
IncludeOpt = Annotated[str | None, typer.Option("--include", help="Only layers whose name matches this regex.")]
ExcludeOpt = Annotated[str | None, typer.Option("--exclude", help="Leave out layers matching this regex.")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe-load", help="Unpickle arbitrary objects. Runs code from "
                                         "the file: only for files you trust.")]
MaxMemoryOpt = Annotated[str | None, typer.Option("--max-memory", help="Memory one layer's audit may use, e.g. "
                                              "2G or 512M (default: the memory available now). A layer "
                                              "that would need more is reported as not audited, with "
                                              "the size it would need.")]
def _coeff(value: float | None) -> float | None:
    if value is not None and not (value > 0.0 and value < float("inf")):
        raise typer.BadParameter(f"{value:g} is not a positive finite number (soft SN's coefficient)")
    return value


CoeffOpt = Annotated[float | None, typer.Option("--coeff", callback=_coeff, help="Soft SN's "
                                           "coefficient c (eval divides by max(1, σ/c)); the checkpoint "
                                           "does not store it [default 1.0 for soft SN, 0.97 for "
                                           "residual-flows SN, said in the layer's notes].")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=1, show_default=False, help="Layers audited "
                                              "at once on a CPU [default: as many as the cores and "
                                              "torch's threads allow, at most 4, and as the memory "
                                              "budget holds]; 1: one at a time.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr (errors "
                                       "still print).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Compute every certified bound afresh: neither "
                                          "read nor add to the bound cache ($XDG_CACHE_HOME/sninspect, else "
                                          "~/.cache/sninspect).")]

# Rewriting checkpoints (strip, apply, convert).
CheckpointArg = Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint file (.pt, .pth, .ckpt, "
                                                    ".bin, .safetensors, *.index.json).")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="File to write; its extension (.pt, .pth, "
                                         ".ckpt, .bin or .safetensors) decides the format.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists (never the input).")]
ReportForceOpt = Annotated[bool, typer.Option("--force", help="Replace the -o file and the --plots figures if "
                                              "they exist (never an input).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would change; write nothing.")]
KeepOptimizerOpt = Annotated[bool, typer.Option("--keep-optimizer", help="Keep optimizer state (dropped by "
                                                "default: it refers to the SN parameters).")]
TransposedOpt = Annotated[str | None, typer.Option("--transposed", help="Regex naming ConvTranspose layers "
                                                   "(SN along dim=1).")]


def audit_options(*, device: str, dtype: Dtype | str, key: str | None, include: str | None, exclude: str | None,
                  unsafe_load: bool, max_memory: str | None = None, **more: Any) -> Options:
    """The library's options from the shared ones (and a command's own, ``more``); warns once about
    ``--unsafe-load``."""
    warn_unsafe(unsafe_load)
    return Options(device=device, dtype=str(dtype), key=key, include=include, exclude=exclude,
                   unsafe_load=unsafe_load, max_memory=parse_size(max_memory) if max_memory else None,
                   on_warning=lambda line: say(f"warning: {line}"), **more)


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


def examples(*lines: str) -> str:
    """A command's ``--help`` epilog: ``Examples:`` and one command per line, kept as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
