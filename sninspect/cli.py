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

from sninspect import __version__
from sninspect.analysis import Options, analyze, inventory
from sninspect.errors import ExitCode, OutputError, SninspectError
from sninspect.render import OutputFormat, print_report, to_csv, to_json, to_markdown

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


# Options shared by the commands that read checkpoints.
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Working precision: float64 or float32.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Sub-dict of a wrapped checkpoint, e.g. netD or a.b.")]
IncludeOpt = Annotated[str | None, typer.Option("--include", help="Only layers whose name matches this regex.")]
ExcludeOpt = Annotated[str | None, typer.Option("--exclude", help="Leave out layers matching this regex.")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe-load", help="Unpickle arbitrary objects. Runs code from "
                                         "the file: only for files you trust.")]


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


def _warn_unsafe(unsafe_load: bool) -> None:
    if unsafe_load:
        _stderr().print("sninspect: warning: --unsafe-load unpickles arbitrary objects; this runs code from "
                        "the file", markup=False)


@app.command()
@handle_errors
def report(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint files (.pt, .pth, .ckpt, .bin, "
                                                           ".safetensors, *.index.json).")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
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
    unsafe_load: UnsafeOpt = False,
) -> None:
    """Audit SN layers: exact σ, the stored estimate σ̂, cosine errors, effective σ, network bound."""
    _warn_unsafe(unsafe_load)
    options = Options(device=device, dtype=dtype, key=key, include=include, exclude=exclude,
                      all_layers=all_layers, bound_tol=bound_tol, unsafe_load=unsafe_load)
    reports = [analyze(path, options) for path in checkpoints]
    if format is OutputFormat.table:
        if output is None:
            console = Console(highlight=False)
            for one in reports:
                print_report(one, console)
            return
        from sninspect.render import table_text

        write_output("".join(table_text(one) for one in reports), output, checkpoints)
    elif format is OutputFormat.json:
        write_output(to_json(reports, spectra=spectra), output, checkpoints)
    elif format is OutputFormat.csv:
        write_output(to_csv(reports), output, checkpoints)
    elif format is OutputFormat.markdown:
        write_output(to_markdown(reports), output, checkpoints)
    elif format is OutputFormat.html:
        from sninspect.html import to_html

        write_output(to_html(reports), output, checkpoints)


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
    console = Console(highlight=False)
    console.print(table)
    for warning in sorted({w for row in rows for w in row.warnings}):
        _stderr().print(f"sninspect: warning: {warning}", markup=False)
