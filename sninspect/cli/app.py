"""The typer app and its callback (``--version``, process-wide settings). Commands register on ``app``."""

from __future__ import annotations

from typing import Annotated

import typer

from sninspect._version import __version__
from sninspect.io import residency

app = typer.Typer(
    name="sninspect",
    help="Audit spectral normalization in PyTorch checkpoints: exact σ, power-iteration errors, "
    "Lipschitz bounds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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
