"""``report``, ``check``, ``layers``: read checkpoints, call the library, render, exit."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from sninspect.audit.layers.inventory import inventory
from sninspect.audit.layers.pipeline import Interrupted
from sninspect.audit.options import Options
from sninspect.audit.runs import run
from sninspect.audit.runs.run import Outcome
from sninspect.audit.sources import analyze_paths, check_paths
from sninspect.cli import config
from sninspect.cli.app import app
from sninspect.cli.errors import handle_errors, say
from sninspect.cli.live import LiveReport
from sninspect.cli.options import (
    CoeffOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    ExcludeOpt,
    FailOnWarningOpt,
    FormatOpt,
    IncludeOpt,
    KeyOpt,
    MaxCosErrorOpt,
    MaxLipschitzOpt,
    MaxMemoryOpt,
    MaxNormErrorOpt,
    MaxSigmaOpt,
    NoCacheOpt,
    OutputFileOpt,
    PlotFormatOpt,
    PlotsOpt,
    QuietOpt,
    ReportForceOpt,
    StrictCosOpt,
    UnsafeOpt,
    WorkersOpt,
    examples,
    memory_limit,
    parse_input_size,
    warn_unsafe,
    warning,
)
from sninspect.cli.output import choose_format, refuse_early, write_output
from sninspect.cli.progress import Progress
from sninspect.io.inputs import InputSet
from sninspect.render import CheckFormat, OutputFormat, PlotFormat, render, render_check
from sninspect.render.junit import to_junit
from sninspect.render.terminal import render_inventory, summary_line, terminal_console
from sninspect.results.report import Report


@app.command(epilog=examples(
    "sninspect report D.pt",
    "sninspect report D.safetensors -o audit.html",
    "sninspect report runs/ -o run.json --plots figures/ --force",
))
@handle_errors
def report(
    checkpoints: Annotated[list[Path], typer.Argument(readable=False,
                                                      metavar="CHECKPOINT", help="Checkpoint files (.pt, "
                                                      ".pth, .ckpt, .bin, .safetensors, *.index.json), "
                                                      "folders of them, or a training monitor's log "
                                                      "(.jsonl, one checkpoint per audit). Several form a "
                                                      "training run, ordered by their step entry, else the "
                                                      "number in the file name, "
                                                      "else the modification time.")],
    format: FormatOpt = None,
    output: OutputFileOpt = None,
    force: ReportForceOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.float64,
    key: KeyOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    all_layers: Annotated[bool, typer.Option("--all", help="Also report the layers without SN.")] = False,
    bound_tol: Annotated[float | None, typer.Option("--bound-tol", help="Relative width of every certified "
                                                    "convolution bound. Default: what a work budget buys "
                                                    "per layer, refined toward 1% where the network "
                                                    "bound gains most (the summary says what was "
                                                    "reached).", min=1e-6, max=0.5)] = None,
    spectra: Annotated[bool, typer.Option("--spectra", help="JSON: include every layer's singular "
                                          "values.")] = False,
    input_size: Annotated[str | None, typer.Option("--input-size", help="H[,W[,D]]: also give each conv's "
                                                   "exact zero-padded 'same' operator norm at this input "
                                                   "size (operator_at_input).")] = None,
    plots: PlotsOpt = None,
    plot_format: PlotFormatOpt = PlotFormat.png,
    max_memory: MaxMemoryOpt = None,
    coeff: CoeffOpt = None,
    workers: WorkersOpt = None,
    explain: Annotated[bool, typer.Option("--explain", help="Table: end with what each column and "
                                          "summary term means (Markdown and HTML always do).")] = False,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
    unsafe_load: UnsafeOpt = False,
    max_sigma: MaxSigmaOpt = None,
    max_cos_error: MaxCosErrorOpt = None,
    strict_cos: StrictCosOpt = None,
    max_norm_error: MaxNormErrorOpt = None,
    max_lipschitz: MaxLipschitzOpt = None,
    fail_on_warning: FailOnWarningOpt = None,
) -> None:
    """Audit SN layers: exact σ, the stored estimate σ̂, cosine errors, effective σ, network bound.

    Each layer's verdict (ok, or the rules it breaks) is check's, with the same rules: the defaults,
    [tool.sninspect.check] of the nearest pyproject.toml, then the rule flags; every highlight follows it.
    """
    fmt = choose_format(format, output)
    rules, pyproject = config.rules_for("report", {"max_sigma": max_sigma, "max_cos_error": max_cos_error,
                                                   "strict_cos": strict_cos, "max_norm_error": max_norm_error,
                                                   "max_lipschitz": max_lipschitz,
                                                   "fail_on_warning": fail_on_warning}, quiet=quiet)
    warn_unsafe(unsafe_load)
    options = Options(device=device, dtype=dtype.value, key=key, include=include, exclude=exclude,
                      all_layers=all_layers, bound_tol=bound_tol, unsafe_load=unsafe_load,
                      input_size=parse_input_size(input_size), max_memory=memory_limit(max_memory), coeff=coeff,
                      workers=workers, rules=rules, cache=not no_cache, on_warning=warning)
    paths = run.collect(checkpoints)
    inputs = InputSet.of(paths).add([pyproject] if pyproject else [])  # its rules were read: no output replaces it
    refuse_early(output, inputs, force=force)
    if plots is not None:
        from sninspect.render.plots.files import refuse_plots_early  # matplotlib: only when plotting

        refuse_plots_early(plots, plot_format, inputs)
    live = LiveReport(terminal_console()) if fmt is OutputFormat.table and output is None and len(paths) == 1 \
        and sys.stdout.isatty() else None
    if live is not None:
        options = replace(options, on_partial=live.update)
    try:
        with Progress(len(paths), "auditing", quiet=quiet or live is not None) as bar, live or nullcontext():
            outcome = analyze_paths(paths, options, progress=bar)  # none readable: the first one's error
    except Interrupted as stop:  # Ctrl-C during the bounds: the report as it stands, on stdout only
        render_interrupted(stop.report, output)
        raise typer.Exit(130) from None
    for note in outcome.notes:  # a monitor log's last line still being written
        say(f"warning: {note}")
    _write_report(outcome, fmt, output, inputs, plots=plots, plot_format=plot_format, force=force, quiet=quiet,
                  spectra=spectra, explain=explain)
    for unreadable in outcome.unreadable:  # the readable ones are reported above; each unreadable one named
        say(f"error: {unreadable.reason}")
    if outcome.unreadable:
        say(f"{len(outcome.unreadable)} of {outcome.inputs} checkpoints could not be read; the other "
            f"{len(outcome.reports)} are reported")
    raise typer.Exit(int(outcome.exit_code))


def _write_report(outcome: Outcome, fmt: OutputFormat, output: Path | None, inputs: InputSet, *, plots: Path | None,
                  plot_format: PlotFormat, force: bool, quiet: bool, spectra: bool, explain: bool) -> None:
    """Render the outcome's result and write it (stdout or ``output``), then its figures into ``plots``;
    every figure's path is checked before the report or any figure is written."""
    result = outcome.result()
    console = terminal_console() if output is None else None
    with Progress(len(outcome.reports) if fmt.draws_figures else 0, "drawing", quiet=quiet) as bar:
        text = render(result, fmt, console=console, spectra=spectra, on_checkpoint=lambda _: bar.advance(),
                      explain=explain)
    if plots is None:
        write_output(text, output, inputs, force=force)
        return
    from sninspect.render.plots.files import check_plot_paths, plot_plan, write_plots

    planned = [p for _, where in plot_plan(result, plots, plot_format) for p in where.values()]
    check_plot_paths(planned, plots, force=force, inputs=inputs)
    write_output(text, output, inputs, force=force)
    with Progress(len(outcome.reports), "plotting", quiet=quiet) as bar:
        written = write_plots(result, plots, plot_format, progress=bar, force=force, inputs=inputs)
    if not quiet:
        say(f"wrote {len(written)} figures to {plots}")


@app.command(epilog=examples(
    "sninspect check D.pt",
    "sninspect check runs/ --max-sigma 1.05 --max-lipschitz 100",
))
@handle_errors
def check(
    checkpoints: Annotated[list[Path], typer.Argument(readable=False, metavar="CHECKPOINT", help="Checkpoint files or "
                                                      "folders of them.")],
    max_sigma: MaxSigmaOpt = None,
    max_cos_error: MaxCosErrorOpt = None,
    strict_cos: StrictCosOpt = None,
    max_norm_error: MaxNormErrorOpt = None,
    max_lipschitz: MaxLipschitzOpt = None,
    fail_on_warning: FailOnWarningOpt = None,
    format: Annotated[CheckFormat, typer.Option("--format", "-f", help="text: one line per broken rule; "
                                                "github: one ::error workflow command per broken rule; "
                                                "json: the rules, every checkpoint and every "
                                                "violation.")] = CheckFormat.text,
    junit_xml: Annotated[Path | None, typer.Option("--junit-xml", readable=False, help="Also write a JUnit XML report "
                                                   "here: a test suite per checkpoint, a test case per "
                                                   "SN layer.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the --junit-xml file if it exists (never an "
                                        "input).")] = False,
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
    rules, pyproject = config.rules_for("check", {"max_sigma": max_sigma, "max_cos_error": max_cos_error,
                                                  "strict_cos": strict_cos, "max_norm_error": max_norm_error,
                                                  "max_lipschitz": max_lipschitz,
                                                  "fail_on_warning": fail_on_warning}, quiet=quiet)
    warn_unsafe(unsafe_load)
    # Only --max-lipschitz reads the certified conv bounds: without it, the spectra alone.
    options = Options(device=device, dtype=dtype.value, key=key, include=include, exclude=exclude,
                      unsafe_load=unsafe_load, max_memory=memory_limit(max_memory), coeff=coeff, workers=workers,
                      bounds=rules.max_lipschitz is not None, cache=not no_cache, on_warning=warning)
    paths = run.collect(checkpoints)
    inputs = InputSet.of(paths).add([pyproject] if pyproject else [])  # the rules file is read too
    refuse_early(junit_xml, inputs, force=force)
    with Progress(len(paths), "checking", quiet=quiet) as bar:
        outcome = check_paths(paths, options, rules, progress=bar)
    for unreadable in outcome.unreadable:
        say(f"error: {unreadable.reason}")
    sys.stdout.write(render_check(outcome.verdicts, rules, format, terminal_console().width))
    if junit_xml is not None:
        write_output(to_junit(outcome.verdicts), junit_xml, inputs, force=force)
    if not quiet:
        say(summary_line(outcome.verdicts))
    raise typer.Exit(int(outcome.exit_code))


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
    checkpoint: Annotated[Path, typer.Argument(readable=False, metavar="CHECKPOINT", help="Checkpoint file.")],
    key: KeyOpt = None,
    unsafe_load: UnsafeOpt = False,
    max_memory: Annotated[str | None, typer.Option("--max-memory", help="Memory reading a .pt2 archive's "
                                                   "tensors may use, e.g. 2G (default: the memory available "
                                                   "now); refused before anything is allocated.")] = None,
) -> None:
    """List weight layers with their SN dialect, shapes and dtypes (fast: no SVD)."""
    warn_unsafe(unsafe_load)
    rows = inventory(checkpoint, key=key, unsafe_load=unsafe_load, max_memory=memory_limit(max_memory))
    sys.stdout.write(render_inventory(str(checkpoint), rows, terminal_console()))
    for line in sorted({w for row in rows for w in row.warnings}):
        warning(line)
