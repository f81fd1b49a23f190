"""The ``sninspect`` command: parse → call the library → render → exit code. Nothing else."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from sninspect import rewrite
from sninspect._version import __version__
from sninspect.audit import checks, run
from sninspect.audit.checks import CheckFormat
from sninspect.audit.inventory import inventory
from sninspect.audit.options import Options
from sninspect.cli.progress import Progress
from sninspect.errors import ExitCode, OutputError, SninspectError, UsageError
from sninspect.io import residency
from sninspect.render.plots import PlotFormat
from sninspect.render.report import OutputFormat, print_report, terminal_console, to_csv, to_json, to_markdown
from sninspect.render.run_view import print_run, run_markdown, run_text

app = typer.Typer(
    name="sninspect",
    help="Audit spectral normalization in PyTorch checkpoints: exact σ, power-iteration errors, "
    "Lipschitz bounds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def handle_errors(command: F) -> F:
    """Turn library errors into one line on stderr and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SninspectError as err:
            _stderr().print(f"sninspect: error: {err}", markup=False)
            raise typer.Exit(int(err.exit_code)) from None
        except KeyboardInterrupt:
            _stderr().print("sninspect: interrupted", markup=False)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as err:  # a bug: still one line, unless asked for the traceback
            if os.environ.get("SNINSPECT_DEBUG"):
                raise
            _stderr().print(
                f"sninspect: internal error: {type(err).__name__}: {err} "
                "(rerun with SNINSPECT_DEBUG=1 for the traceback, and please report it)",
                markup=False,
            )
            raise typer.Exit(int(ExitCode.INTERNAL)) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sninspect {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Audit spectral normalization (SN) in PyTorch checkpoints."""
    residency.limit_heap_retention()  # this process is ours: freed layer-sized blocks go back to the OS


# Options shared by the commands that read checkpoints.
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Working precision: float64 or float32.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Sub-dict of a wrapped checkpoint, e.g. netD or a.b.")]
IncludeOpt = Annotated[str | None, typer.Option("--include", help="Only layers whose name matches this regex.")]
ExcludeOpt = Annotated[str | None, typer.Option("--exclude", help="Leave out layers matching this regex.")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe-load", help="Unpickle arbitrary objects. Runs code from "
                                         "the file: only for files you trust.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr (errors "
                                       "still print).")]


def write_output(text: str, output: Path | None, inputs: list[Path]) -> None:
    """Print to stdout, or write ``output`` atomically (never over one of the inputs)."""
    if output is None:
        sys.stdout.write(text)
        return
    for source in inputs:
        if output.exists() and source.exists() and os.path.samefile(output, source):
            raise OutputError(f"{output}: is the input checkpoint; choose another output file")
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{output}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{output.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, output)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{output}: could not write ({err.strerror or err})") from err


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


def _warn_unsafe(unsafe_load: bool) -> None:
    if unsafe_load:
        _stderr().print("sninspect: warning: --unsafe-load unpickles arbitrary objects; this runs code from "
                        "the file", markup=False)


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
    quiet: QuietOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Audit SN layers: exact σ, the stored estimate σ̂, cosine errors, effective σ, network bound."""
    _warn_unsafe(unsafe_load)
    options = Options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                      all_layers=all_layers, bound_tol=bound_tol, unsafe_load=unsafe_load,
                      input_size=parse_input_size(input_size))
    paths = run.collect(checkpoints)
    with Progress(len(paths), "auditing", quiet=quiet) as bar:
        reports = run.audit(paths, options, progress=bar)
    trend = run.order(reports) if len(reports) > 1 else None
    if trend is not None:
        reports = list(trend.reports)
    if format is OutputFormat.table:
        if output is None:
            console = terminal_console()
            if trend is not None:
                print_run(trend, console)
            else:
                print_report(reports[0], console)
        else:
            from sninspect.render.report import table_text

            write_output(run_text(trend) if trend is not None else table_text(reports[0]), output, paths)
    elif format is OutputFormat.json:
        write_output(to_json(reports, spectra=spectra, trend=trend), output, paths)
    elif format is OutputFormat.csv:
        write_output(to_csv(reports), output, paths)
    elif format is OutputFormat.markdown:
        write_output((run_markdown(trend) if trend is not None else "") + to_markdown(reports), output, paths)
    elif format is OutputFormat.html:
        from sninspect.render.html import to_html

        with Progress(len(reports), "drawing", quiet=quiet) as bar:
            page = to_html(reports, trend=trend, on_checkpoint=lambda name: bar.advance())
        write_output(page, output, paths)
    if plots is not None:
        with Progress(len(reports), "plotting", quiet=quiet) as bar:
            written = run.write_plots(reports, trend, plots, plot_format, progress=bar)
        if not quiet:
            _stderr().print(f"sninspect: wrote {len(written)} figures to {plots}", markup=False)


@app.command()
@handle_errors
def check(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint files or folders of them.")],
    max_sigma: Annotated[float, typer.Option("--max-sigma", help="Largest allowed σ_eff = σ1/σ̂ of an SN "
                                             "layer: the spectral norm of the weight the model really "
                                             "uses. Layers without SN are not judged; σ̂ ≤ 0 (a flipped "
                                             "sign) always fails. inf turns the rule off.",
                                             min=0.0)] = checks.DEFAULT_MAX_SIGMA,
    max_cos_error: Annotated[float, typer.Option("--max-cos-error", help="Largest allowed 1 − |cos| "
                                                 "between a stored u or v and the exact top singular "
                                                 "vector (power iteration not converged). inf turns the "
                                                 "rule off.", min=0.0)] = checks.DEFAULT_MAX_COS_ERROR,
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
    quiet: QuietOpt = False,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Judge checkpoints against limits, for CI: prints only what breaks a rule (layer, number, limit).

    Exit 0 when every rule holds, 1 when one breaks, 3 when a checkpoint cannot be read. A layer that
    could not be audited, or a checkpoint without any SN layer, also breaks a rule.
    """
    _warn_unsafe(unsafe_load)
    options = Options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                      unsafe_load=unsafe_load)
    rules = checks.Rules(max_sigma=_limit(max_sigma), max_cos_error=_limit(max_cos_error),
                         max_lipschitz=_limit(max_lipschitz), fail_on_warning=fail_on_warning)
    paths = run.collect(checkpoints)
    with Progress(len(paths), "checking", quiet=quiet) as bar:
        verdicts = run.check(paths, options, rules, progress=bar)
    unreadable = [v for v in verdicts for x in v.violations if x.rule is checks.Rule.unreadable]
    for verdict in unreadable:
        _stderr().print(f"sninspect: error: {verdict.violations[0].message}", markup=False)
    if format is CheckFormat.json:
        sys.stdout.write(checks.to_json(verdicts, rules))
    else:
        sys.stdout.write(checks.to_text(verdicts))
    if not quiet:
        _stderr().print(f"sninspect: {checks.summary_line(verdicts)}", markup=False)
    if unreadable:
        raise typer.Exit(int(ExitCode.BAD_INPUT))
    if any(not v.passed for v in verdicts):
        raise typer.Exit(int(ExitCode.CHECK_FAILED))


def _limit(value: float | None) -> float | None:
    """``inf`` (or no value) turns a rule off."""
    return None if value is None or value == float("inf") else value

@app.command()
@handle_errors
def layers(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file.")],
    key: KeyOpt = None,
    unsafe_load: UnsafeOpt = False,
) -> None:
    """List weight layers with their SN dialect, shapes and dtypes (fast: no SVD)."""
    _warn_unsafe(unsafe_load)
    from rich.table import Table

    rows = inventory(checkpoint, key=key, unsafe_load=unsafe_load)
    table = Table(title=str(checkpoint), title_justify="left")
    for column in ("layer", "dialect", "kind", "shape", "dim", "dtype", "SN keys"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.name, row.dialect, row.kind, "×".join(map(str, row.shape)),
                      "-" if row.dim is None else str(row.dim), row.dtype, ", ".join(row.sn_keys))
    console = terminal_console()
    console.print(table)
    for warning in sorted({w for row in rows for w in row.warnings}):
        _stderr().print(f"sninspect: warning: {warning}", markup=False)


# ----------------------------------------------------------------------------------------------
# Rewriting checkpoints: strip, apply, convert (library: sninspect.rewrite.core)

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


def _print_rewrite(result: rewrite.Rewrite) -> None:
    """The plan on stdout for a dry run; otherwise the summary of what changed on stderr."""
    console = Console(highlight=False, soft_wrap=True) if not result.written else _stderr()
    for line in result.summary():
        console.print(line if line.startswith(" ") else f"sninspect: {line}", markup=False)


@app.command("strip")
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
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Bake SN into plain weights: SN keys out, plain P in; everything else kept."""
    _warn_unsafe(unsafe_load)
    _print_rewrite(rewrite.strip(checkpoint, output, sigma=sigma, key=key, include=include, exclude=exclude,
                                 transposed=transposed, keep_optimizer=keep_optimizer, force=force,
                                 dry_run=dry_run, unsafe_load=unsafe_load))


@app.command("apply")
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
    _warn_unsafe(unsafe_load)
    _print_rewrite(rewrite.apply(checkpoint, output, style=style, key=key, include=include, exclude=exclude,
                                 transposed=transposed, embeddings=embeddings, keep_optimizer=keep_optimizer,
                                 force=force, dry_run=dry_run, unsafe_load=unsafe_load))


@app.command("convert")
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
    _warn_unsafe(unsafe_load)
    _print_rewrite(rewrite.convert(checkpoint, output, to=to, key=key, include=include, exclude=exclude,
                                   transposed=transposed, keep_optimizer=keep_optimizer, force=force,
                                   dry_run=dry_run, unsafe_load=unsafe_load))
