"""``report``, ``check``, ``layers``: read checkpoints, call the library, render, exit."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from sninspect.audit import run
from sninspect.audit.inventory import inventory
from sninspect.audit.pipeline import Interrupted
from sninspect.cli import config
from sninspect.cli.app import app
from sninspect.cli.errors import exit_for, handle_errors, say, unreadable
from sninspect.cli.live import LiveReport
from sninspect.cli.options import (
    CoeffOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    ExcludeOpt,
    IncludeOpt,
    KeyOpt,
    MaxMemoryOpt,
    NoCacheOpt,
    QuietOpt,
    ReportForceOpt,
    UnsafeOpt,
    WorkersOpt,
    audit_options,
    examples,
    parse_input_size,
    warn_unsafe,
)
from sninspect.cli.output import choose_format, refuse_early, write_output
from sninspect.cli.progress import Progress
from sninspect.errors import InputError
from sninspect.render import CheckFormat, OutputFormat, PlotFormat, render
from sninspect.render.check import render_check, summary_line, to_junit
from sninspect.render.inventory import render_inventory
from sninspect.render.report import terminal_console
from sninspect.results.check import DEFAULT_MAX_COS_ERROR, DEFAULT_MAX_NORM_ERROR, DEFAULT_MAX_SIGMA
from sninspect.results.report import Report


@app.command(epilog=examples(
    "sninspect report D.pt",
    "sninspect report D.safetensors -o audit.html",
    "sninspect report runs/ -o run.json --plots figures/ --force",
))
@handle_errors
def report(
    checkpoints: Annotated[list[Path], typer.Argument(metavar="CHECKPOINT", help="Checkpoint files (.pt, "
                                                      ".pth, .ckpt, .bin, .safetensors, *.index.json), "
                                                      "folders of them, or a training monitor's log "
                                                      "(.jsonl, one checkpoint per audit). Several form a "
                                                      "training run, ordered by their step entry, else the "
                                                      "number in the file name, "
                                                      "else the modification time.")],
    format: Annotated[OutputFormat | None, typer.Option("--format", "-f", show_default=False, help="Output "
                                                        "format (html: one self-contained page with the "
                                                        "figures). Default: from the -o file's extension "
                                                        "(.json .csv .md .html .txt), else table.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of "
                                                "stdout; its extension picks the format.")] = None,
    force: ReportForceOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.float64,
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
    coeff: CoeffOpt = None,
    workers: WorkersOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Audit SN layers: exact σ, the stored estimate σ̂, cosine errors, effective σ, network bound."""
    fmt = choose_format(format, output)
    options = audit_options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                            unsafe_load=unsafe_load, all_layers=all_layers, bound_tol=bound_tol,
                            input_size=parse_input_size(input_size), max_memory=max_memory, coeff=coeff,
                            workers=workers, cache=not no_cache)
    paths = run.collect(checkpoints)
    refuse_early(output, paths, force=force)
    failures: list[InputError] = []
    notes: list[str] = []
    live = LiveReport(terminal_console()) if fmt is OutputFormat.table and output is None and len(paths) == 1 \
        and sys.stdout.isatty() else None
    if live is not None:
        options = replace(options, on_partial=live.update)
    try:
        with Progress(len(paths), "auditing", quiet=quiet or live is not None) as bar, live or nullcontext():
            reports = run.audit(paths, options, progress=bar, failures=failures, notes=notes)
    except Interrupted as stop:  # Ctrl-C during the bounds: the report as it stands, on stdout only
        render_interrupted(stop.report, output)
        raise typer.Exit(130) from None
    for note in notes:  # a monitor log's last line still being written
        say(f"warning: {note}")
    if not reports:  # every checkpoint of several unreadable: the first one's reason, exit 3
        raise failures[0]
    result = run.as_result(reports)
    console = terminal_console() if output is None else None
    with Progress(len(reports) if fmt.draws_figures else 0, "drawing", quiet=quiet) as bar:
        text = render(result, fmt, console=console, spectra=spectra, on_checkpoint=lambda _: bar.advance())
    write_output(text, output, paths, force=force)
    if plots is not None:
        from sninspect.render.plots import write_plots  # matplotlib: only when plotting

        with Progress(len(reports), "plotting", quiet=quiet) as bar:
            written = write_plots(result, plots, plot_format, progress=bar, force=force)
        if not quiet:
            say(f"wrote {len(written)} figures to {plots}")
    if failures:  # the readable ones are reported above; each unreadable one named here, then exit 3
        for err in failures:
            say(f"error: {err}")
        say(f"{len(failures)} of {len(paths)} checkpoints could not be read; the other {len(reports)} are reported")
        raise typer.Exit(int(failures[0].exit_code))


@app.command(epilog=examples(
    "sninspect check D.pt",
    "sninspect check runs/ --max-sigma 1.05 --max-lipschitz 100",
))
@handle_errors
def check(
    checkpoints: Annotated[list[Path], typer.Argument(metavar="CHECKPOINT", help="Checkpoint files or "
                                                      "folders of them.")],
    max_sigma: Annotated[float | None, typer.Option("--max-sigma", help=f"Largest allowed σ_eff = σ1/σ̂ of "
                                                    f"an SN layer: the spectral norm of the weight the "
                                                    f"model really uses [default {DEFAULT_MAX_SIGMA}]. "
                                                    f"Layers without SN are not judged; σ̂ ≤ 0 (a flipped "
                                                    f"sign) always fails.", min=0.0)] = None,
    max_cos_error: Annotated[float | None, typer.Option("--max-cos-error", help=f"Largest allowed gap-aware "
                                                        f"cosine error of a stored u or v: the relative σ̂ "
                                                        f"error its angle to the exact top singular vector "
                                                        f"forces given σ2/σ1, 1 − √(1 − sin²θ·(1 − "
                                                        f"(σ2/σ1)²)) [default {DEFAULT_MAX_COS_ERROR}]. "
                                                        f"With --strict-cos: the raw 1 − |cos|.",
                                                        min=0.0)] = None,
    strict_cos: Annotated[bool | None, typer.Option("--strict-cos/--no-strict-cos", help="Judge the raw "
                                                    "1 − |cos| against --max-cos-error whatever the "
                                                    "spectral gap (fails healthy layers whose top "
                                                    "singular values nearly coincide).")] = None,
    max_norm_error: Annotated[float | None, typer.Option("--max-norm-error", help=f"Largest allowed "
                                                         f"|‖u‖ − 1| and |‖v‖ − 1| of a stored vector "
                                                         f"[default {DEFAULT_MAX_NORM_ERROR}].",
                                                         min=0.0)] = None,
    max_lipschitz: Annotated[float | None, typer.Option("--max-lipschitz", help="Largest allowed certified "
                                                        "Lipschitz bound: the product of the certified "
                                                        "per-layer operator bounds (lipschitz."
                                                        "operator_product, BatchNorm included) of the "
                                                        "discriminator (else the first model); valid for a "
                                                        "feed-forward chain with 1-Lipschitz activations. "
                                                        "Off unless given.", min=0.0)] = None,
    fail_on_warning: Annotated[bool | None, typer.Option("--fail-on-warning/--no-fail-on-warning",
                                                         help="Every warning of the report (σ1 ≈ σ2, ...) "
                                                         "breaks a rule.")] = None,
    format: Annotated[CheckFormat, typer.Option("--format", "-f", help="text: one line per broken rule; "
                                                "github: one ::error workflow command per broken rule; "
                                                "json: the rules, every checkpoint and every "
                                                "violation.")] = CheckFormat.text,
    junit_xml: Annotated[Path | None, typer.Option("--junit-xml", help="Also write a JUnit XML report "
                                                   "here: a test suite per checkpoint, a test case per "
                                                   "SN layer.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.float64,
    key: KeyOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    max_memory: MaxMemoryOpt = None,
    coeff: CoeffOpt = None,
    workers: WorkersOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Judge checkpoints against limits, for CI: prints only what breaks a rule (layer, number, limit).

    Exit 0 when every rule holds, 1 when one breaks, 3 when a checkpoint cannot be read. A layer that
    could not be audited, a non-finite number, or a checkpoint without any SN layer also breaks a
    rule. Rules are read from [tool.sninspect.check] in the nearest pyproject.toml (from the current
    folder upward); flags override them; inf turns a limit off.
    """
    flags = {"max_sigma": max_sigma, "max_cos_error": max_cos_error, "strict_cos": strict_cos,
             "max_norm_error": max_norm_error, "max_lipschitz": max_lipschitz,
             "fail_on_warning": fail_on_warning}
    pyproject = config.find_pyproject(Path.cwd())
    table = config.read_table(pyproject) if pyproject is not None else {}
    if table and not quiet:
        say(f"check: rules from {pyproject} [tool.sninspect.check]")
    rules = config.rules_from(table, pyproject or Path("pyproject.toml"), flags)
    # Only --max-lipschitz reads the certified conv bounds: without it, the spectra alone.
    options = audit_options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                            unsafe_load=unsafe_load, max_memory=max_memory, coeff=coeff, workers=workers,
                            bounds=rules.max_lipschitz is not None, cache=not no_cache)
    paths = run.collect(checkpoints)
    with Progress(len(paths), "checking", quiet=quiet) as bar:
        verdicts = run.check(paths, options, rules, progress=bar)
    for verdict in unreadable(verdicts):
        say(f"error: {verdict.violations[0].message}")
    sys.stdout.write(render_check(verdicts, rules, format))
    if junit_xml is not None:
        write_output(to_junit(verdicts), junit_xml, paths)
    if not quiet:
        say(summary_line(verdicts))
    exit_for(verdicts)


def render_interrupted(report: Report, output: Path | None) -> None:
    """The report of an audit interrupted during its bounds, as it stood, on stdout (never into ``-o``:
    nothing partial is written there); the caller exits 130."""
    sys.stdout.write(render(report, OutputFormat.table, console=terminal_console()))
    say("interrupted during the certified bounds: the report above is as it stood (bounds not computed are "
        f"marked so, no network operator product claimed){'; nothing written to ' + str(output) if output else ''}")


@app.command(epilog=examples(
    "sninspect layers D.pt",
    "sninspect layers train_state.ckpt --key netD",
))
@handle_errors
def layers(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint file.")],
    key: KeyOpt = None,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """List weight layers with their SN dialect, shapes and dtypes (fast: no SVD)."""
    warn_unsafe(unsafe_load)
    rows = inventory(checkpoint, key=key, unsafe_load=unsafe_load)
    sys.stdout.write(render_inventory(str(checkpoint), rows, terminal_console()))
    for warning in sorted({w for row in rows for w in row.warnings}):
        say(f"warning: {warning}")
