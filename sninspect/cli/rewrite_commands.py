"""``strip``, ``apply``, ``convert``: rewrite a checkpoint (library: :mod:`sninspect.rewrite`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sninspect import rewrite
from sninspect.cli.app import app
from sninspect.cli.errors import handle_errors, stderr
from sninspect.cli.options import (
    CheckpointArg,
    CoeffOpt,
    DryRunOpt,
    ExcludeOpt,
    ForceOpt,
    IncludeOpt,
    KeepOptimizerOpt,
    KeyOpt,
    OutputOpt,
    TransposedOpt,
    UnsafeOpt,
    examples,
    warn_unsafe,
)
from sninspect.render.escape import for_log_line
from sninspect.rewrite import RewriteOptions


def _print_rewrite(result: rewrite.Rewrite) -> None:
    """The plan on stdout for a dry run; otherwise the summary of what changed on stderr."""
    console = Console(highlight=False, soft_wrap=True, emoji=False) if not result.written else stderr()
    for line in result.summary():
        shown = for_log_line(line)  # layer and file names are data: one line each, never markup
        console.print(shown if line.startswith(" ") else f"sninspect: {shown}", markup=False)


@app.command("strip", epilog=examples(
    "sninspect strip D.pt -o D_plain.pt",
    "sninspect strip D.safetensors -o D_plain.safetensors --sigma exact --dry-run",
))
@handle_errors
def strip_command(
    checkpoint: CheckpointArg,
    output: OutputOpt,
    sigma: Annotated[str, typer.Option("--sigma", help="Divide by: eval (what the model divides by in eval "
                                       "mode), exact (σ1) or power:N (N power steps from the stored "
                                       "vectors).")] = "eval",
    key: KeyOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    transposed: TransposedOpt = None,
    keep_optimizer: KeepOptimizerOpt = False,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    coeff: CoeffOpt = None,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Bake SN into plain weights: SN keys out, plain P in; everything else kept."""
    warn_unsafe(unsafe_load)
    options = RewriteOptions(key=key, include=include, exclude=exclude, transposed=transposed,
                             keep_optimizer=keep_optimizer, force=force, dry_run=dry_run, unsafe_load=unsafe_load)
    _print_rewrite(rewrite.strip(checkpoint, output, options, sigma=sigma, coeff=coeff))


@app.command("apply", epilog=examples(
    "sninspect apply pretrained.pt -o pretrained_sn.pt",
    "sninspect apply D.pt -o D_sn.pt --style parametrize --exclude 'head'",
))
@handle_errors
def apply_command(
    checkpoint: CheckpointArg,
    output: OutputOpt,
    style: Annotated[rewrite.Style, typer.Option("--style", help="PyTorch SN to write: torch (nn.utils."
                                                 "spectral_norm) or parametrize.")] = rewrite.Style.torch,
    transposed: TransposedOpt = None,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Also put SN on embeddings.")] = False,
    key: KeyOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    keep_optimizer: KeepOptimizerOpt = False,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Add SN to plain weights, u and v set to the exact top singular vectors (σ̂ = σ1 at once)."""
    warn_unsafe(unsafe_load)
    options = RewriteOptions(key=key, include=include, exclude=exclude, transposed=transposed,
                             keep_optimizer=keep_optimizer, force=force, dry_run=dry_run, unsafe_load=unsafe_load)
    _print_rewrite(rewrite.apply(checkpoint, output, options, style=style, embeddings=embeddings))


@app.command("convert", epilog=examples(
    "sninspect convert D.pt -o D_parametrize.pt --to parametrize",
))
@handle_errors
def convert_command(
    checkpoint: CheckpointArg,
    output: OutputOpt,
    to: Annotated[rewrite.Style, typer.Option("--to", help="Target: torch (nn.utils.spectral_norm) or "
                                              "parametrize.")],
    key: KeyOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    transposed: TransposedOpt = None,
    keep_optimizer: KeepOptimizerOpt = False,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Move SN to a PyTorch dialect with the same eval output (legacy <-> parametrize keeps u/v)."""
    warn_unsafe(unsafe_load)
    options = RewriteOptions(key=key, include=include, exclude=exclude, transposed=transposed,
                             keep_optimizer=keep_optimizer, force=force, dry_run=dry_run, unsafe_load=unsafe_load)
    _print_rewrite(rewrite.convert(checkpoint, output, options, to=to))

