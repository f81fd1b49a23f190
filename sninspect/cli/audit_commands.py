"""``report``, ``check``, ``layers``: read checkpoints, call the library, render, exit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sninspect.audit import run
from sninspect.audit.inventory import inventory
from sninspect.cli.app import app
from sninspect.cli.errors import exit_for, handle_errors, say, unreadable
from sninspect.cli.options import (
    DeviceOpt,
    DtypeOpt,
    ExcludeOpt,
    IncludeOpt,
    KeyOpt,
    MaxMemoryOpt,
    QuietOpt,
    UnsafeOpt,
    audit_options,
    limit,
    parse_input_size,
    warn_unsafe,
)
from sninspect.cli.output import write_output
from sninspect.cli.progress import Progress
from sninspect.errors import InputError
from sninspect.render import CheckFormat, OutputFormat, PlotFormat, render
from sninspect.render.check import render_check, summary_line
from sninspect.render.inventory import render_inventory
from sninspect.render.report import terminal_console
from sninspect.results.check import DEFAULT_MAX_COS_ERROR, DEFAULT_MAX_SIGMA, Rules


@app.command()
@handle_errors
def report(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint files (.pt, .pth, .ckpt, .bin, "
                                                           ".safetensors, *.index.json) or folders of them. "
                                                           "Several form a training run, ordered by their "
                                                           "step entry, else the number in the file name, "
                                                           "else the modification time.")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format (html: one self-"
                                                 "contained page with the figures).")] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of "
                                                "stdout.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float64",
    key: KeyOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    all_layers: Annotated[bool, typer.Option("--all", help="Also report the layers without SN.")] = False,
    bound_tol: Annotated[float, typer.Option("--bound-tol", help="Relative width of the certified "
                                             "convolution bound.", min=1e-6, max=0.5)] = 0.01,
    spectra: Annotated[bool, typer.Option("--spectra", help="JSON: include every layer's singular "
                                          "values.")] = False,
    input_size: Annotated[str | None, typer.Option("--input-size", help="H[,W[,D]]: also give each conv's "
                                                   "exact zero-padded 'same' operator norm at this input "
                                                   "size (operator_at_input).")] = None,
    plots: Annotated[Path | None, typer.Option("--plots", help="Write figures into this folder (created): "
                                               "sigma, cos_error, spectra, lipschitz_depth; several "
                                               "checkpoints: one subfolder each, plus trend_sigma and "
                                               "trend_cos_error.")] = None,
    plot_format: Annotated[PlotFormat, typer.Option("--plot-format", help="File format of the "
                                                    "figures.")] = PlotFormat.png,
    max_memory: MaxMemoryOpt = None,
    quiet: QuietOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Audit SN layers: exact σ, the stored estimate σ̂, cosine errors, effective σ, network bound."""
    options = audit_options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                            unsafe_load=unsafe_load, all_layers=all_layers, bound_tol=bound_tol,
                            input_size=parse_input_size(input_size), max_memory=max_memory)
    paths = run.collect(checkpoints)
    failures: list[InputError] = []
    with Progress(len(paths), "auditing", quiet=quiet) as bar:
        reports = run.audit(paths, options, progress=bar, failures=failures)
    if not reports:  # every checkpoint of several unreadable: the first one's reason, exit 3
        raise failures[0]
    result = run.as_result(reports)
    console = terminal_console() if output is None else None
    with Progress(len(reports) if format.draws_figures else 0, "drawing", quiet=quiet) as bar:
        text = render(result, format, console=console, spectra=spectra, on_checkpoint=lambda _: bar.advance())
    write_output(text, output, paths)
    if plots is not None:
        from sninspect.render.plots import write_plots  # matplotlib: only when plotting

        with Progress(len(reports), "plotting", quiet=quiet) as bar:
            written = write_plots(result, plots, plot_format, progress=bar)
        if not quiet:
            say(f"wrote {len(written)} figures to {plots}")
    if failures:  # the readable ones are reported above; each unreadable one named here, then exit 3
        for err in failures:
            say(f"error: {err}")
        say(f"{len(failures)} of {len(paths)} checkpoints could not be read; the other {len(reports)} are reported")
        raise typer.Exit(int(failures[0].exit_code))


@app.command()
@handle_errors
def check(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint files or folders of them.")],
    max_sigma: Annotated[float, typer.Option("--max-sigma", help="Largest allowed σ_eff = σ1/σ̂ of an SN "
                                             "layer: the spectral norm of the weight the model really "
                                             "uses. Layers without SN are not judged; σ̂ ≤ 0 (a flipped "
                                             "sign) always fails. inf turns the rule off.",
                                             min=0.0)] = DEFAULT_MAX_SIGMA,
    max_cos_error: Annotated[float, typer.Option("--max-cos-error", help="Largest allowed 1 − |cos| "
                                                 "between a stored u or v and the exact top singular "
                                                 "vector (power iteration not converged). inf turns the "
                                                 "rule off.", min=0.0)] = DEFAULT_MAX_COS_ERROR,
    max_lipschitz: Annotated[float | None, typer.Option("--max-lipschitz", help="Largest allowed certified "
                                                        "Lipschitz bound: the product of the certified "
                                                        "per-layer operator bounds (lipschitz."
                                                        "operator_product, BatchNorm included) of the "
                                                        "discriminator (else the first model); valid for a "
                                                        "feed-forward chain with 1-Lipschitz activations. "
                                                        "Off unless given.", min=0.0)] = None,
    fail_on_warning: Annotated[bool, typer.Option("--fail-on-warning", help="Every warning of the report "
                                                  "(‖u‖ ≠ 1, σ1 ≈ σ2, ...) breaks a rule.")] = False,
    format: Annotated[CheckFormat, typer.Option("--format", "-f", help="text: one line per broken rule; "
                                                "json: the rules, every checkpoint and every "
                                                "violation.")] = CheckFormat.text,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float64",
    key: KeyOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    max_memory: MaxMemoryOpt = None,
    quiet: QuietOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Judge checkpoints against limits, for CI: prints only what breaks a rule (layer, number, limit).

    Exit 0 when every rule holds, 1 when one breaks, 3 when a checkpoint cannot be read. A layer that
    could not be audited, or a checkpoint without any SN layer, also breaks a rule.
    """
    options = audit_options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                            unsafe_load=unsafe_load, max_memory=max_memory)
    rules = Rules(max_sigma=limit(max_sigma), max_cos_error=limit(max_cos_error),
                  max_lipschitz=limit(max_lipschitz), fail_on_warning=fail_on_warning)
    paths = run.collect(checkpoints)
    with Progress(len(paths), "checking", quiet=quiet) as bar:
        verdicts = run.check(paths, options, rules, progress=bar)
    for verdict in unreadable(verdicts):
        say(f"error: {verdict.violations[0].message}")
    sys.stdout.write(render_check(verdicts, rules, format))
    if not quiet:
        say(summary_line(verdicts))
    exit_for(verdicts)


@app.command()
@handle_errors
def layers(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file.")],
    key: KeyOpt = None,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """List weight layers with their SN dialect, shapes and dtypes (fast: no SVD)."""
    warn_unsafe(unsafe_load)
    rows = inventory(checkpoint, key=key, unsafe_load=unsafe_load)
    sys.stdout.write(render_inventory(str(checkpoint), rows, terminal_console()))
    for warning in sorted({w for row in rows for w in row.warnings}):
        say(f"warning: {warning}")
