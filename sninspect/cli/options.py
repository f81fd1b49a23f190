"""Options shared by several commands, declared once; the small parsers behind them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sninspect.audit.memory import parse_size
from sninspect.cli.errors import say
from sninspect.errors import UsageError
from sninspect.render.formats import OutputFormat, PlotFormat
from sninspect.results.check import DEFAULT_MAX_COS_ERROR, DEFAULT_MAX_NORM_ERROR, DEFAULT_MAX_SIGMA

# Reading checkpoints (report, check, layers, strip, apply, convert).


class Dtype(StrEnum):
    """``--dtype`` choices: the working precision of the math."""

    float64 = "float64"
    float32 = "float32"


DeviceOpt = Annotated[str, typer.Option("--device", metavar="[auto|cpu|cuda|cuda:N]",
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

# The rules a layer is judged by (check; report's verdict column and highlights): defaults, then
# [tool.sninspect.check] of the nearest pyproject.toml, then these flags (cli.config.rules_for).
RULES_PANEL = "Rules (check's verdict; report highlights by the same)"
MaxSigmaOpt = Annotated[float | None, typer.Option("--max-sigma", help=f"Largest allowed σ_eff = σ1/σ̂ of "
                                                    f"an SN layer: the spectral norm of the weight the "
                                                    f"model really uses [default {DEFAULT_MAX_SIGMA}]. "
                                                    f"Layers without SN are not judged; σ̂ ≤ 0 (a flipped "
                                                    f"sign) always fails.", min=0.0, rich_help_panel=RULES_PANEL)]
MaxCosErrorOpt = Annotated[float | None, typer.Option("--max-cos-error", help=f"Largest allowed gap-aware "
                                                        f"cosine error of a stored u or v: the relative σ̂ "
                                                        f"error its angle to the exact top singular vector "
                                                        f"forces given σ2/σ1, 1 − √(1 − sin²θ·(1 − "
                                                        f"(σ2/σ1)²)) [default {DEFAULT_MAX_COS_ERROR}]. "
                                                        f"With --strict-cos: the raw 1 − |cos|.",
                                                        min=0.0, rich_help_panel=RULES_PANEL)]
StrictCosOpt = Annotated[bool | None, typer.Option("--strict-cos/--no-strict-cos", help="Judge the raw "
                                                    "1 − |cos| against --max-cos-error whatever the "
                                                    "spectral gap (fails healthy layers whose top "
                                                    "singular values nearly coincide).", rich_help_panel=RULES_PANEL)]
MaxNormErrorOpt = Annotated[float | None, typer.Option("--max-norm-error", help=f"Largest allowed "
                                                         f"|‖u‖ − 1| and |‖v‖ − 1| of a stored vector "
                                                         f"[default {DEFAULT_MAX_NORM_ERROR}].",
                                                         min=0.0, rich_help_panel=RULES_PANEL)]
MaxLipschitzOpt = Annotated[float | None, typer.Option("--max-lipschitz", help="Largest allowed certified "
                                                        "Lipschitz bound: the product of the certified "
                                                        "per-layer operator bounds (lipschitz."
                                                        "operator_product, BatchNorm included) of the "
                                                        "discriminator (else the first model); valid for a "
                                                        "feed-forward chain with 1-Lipschitz activations. "
                                                        "Off unless given.", min=0.0, rich_help_panel=RULES_PANEL)]
FailOnWarningOpt = Annotated[bool | None, typer.Option("--fail-on-warning/--no-fail-on-warning",
                                                         help="Every warning of the report (σ1 ≈ σ2, ...) "
                                                         "breaks a rule.", rich_help_panel=RULES_PANEL)]

# Where a command's result goes (report, graph).
FormatOpt = Annotated[OutputFormat | None, typer.Option("--format", "-f", show_default=False, help="Output "
                                                        "format (html: one self-contained page with the "
                                                        "figures). Default: from the -o file's extension "
                                                        "(.json .csv .md .html .txt), else table.")]
OutputFileOpt = Annotated[Path | None, typer.Option("--output", "-o", readable=False, help="Write to this file "
                                                    "instead of stdout; its extension picks the format.")]
PlotsOpt = Annotated[Path | None, typer.Option("--plots", readable=False, help="Write the figures into this folder "
                                               "(created): report: sigma, cos_error, spectra, lipschitz_depth "
                                               "(several checkpoints: one subfolder each, plus trend_sigma and "
                                               "trend_cos_error); graph: graph_depth.")]
PlotFormatOpt = Annotated[PlotFormat, typer.Option("--plot-format", help="File format of the figures.")]
ReportForceOpt = Annotated[bool, typer.Option("--force", help="Replace the -o file and the --plots figures if "
                                              "they exist (never an input).")]

# Rewriting checkpoints (strip, apply, convert).
CheckpointArg = Annotated[Path, typer.Argument(readable=False,
                                               metavar="CHECKPOINT", help="Checkpoint file (.pt, .pth, .ckpt, "
                                                    ".bin, .safetensors, *.index.json).")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", readable=False,
                                         help="File to write; its extension (.pt, .pth, "
                                         ".ckpt, .bin or .safetensors) decides the format.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists (never the input).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would change; write nothing.")]
KeepOptimizerOpt = Annotated[bool, typer.Option("--keep-optimizer", help="Keep optimizer state (dropped by "
                                                "default: it refers to the SN parameters).")]
TransposedOpt = Annotated[str | None, typer.Option("--transposed", help="Regex naming ConvTranspose layers "
                                                   "(SN along dim=1).")]


def memory_limit(text: str | None) -> int | None:
    """``--max-memory`` in bytes (``2G``, ``512M``); None when not given."""
    return parse_size(text) if text else None


def warning(line: str) -> None:
    """A warning about the run itself (the library's ``on_warning``), on stderr."""
    say(f"warning: {line}")


def warn_unsafe(unsafe_load: bool) -> None:
    if unsafe_load:
        say("warning: --unsafe-load unpickles arbitrary objects; this runs code from the file")


LARGEST_INPUT = 2**31 - 1
"""The largest ``--input-size`` per axis (torch's sizes are int64, and the memory guard says what one costs)."""


def parse_input_size(text: str | None) -> tuple[int, ...] | None:
    """``64`` or ``64,48`` → (64,) / (64, 48)."""
    if text is None:
        return None
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if not size or len(size) > 3 or any(not 1 <= n <= LARGEST_INPUT for n in size):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UsageError(f"--input-size {shown!r}: expected H, H,W or H,W,D as integers from 1 to {LARGEST_INPUT}")
    return size


def examples(*lines: str) -> str:
    """A command's ``--help`` epilog: ``Examples:`` and one command per line, kept as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
