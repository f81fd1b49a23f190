"""The typer app and its callback (``--version``, process-wide settings). Commands register on ``app``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sninspect._version import __version__
from sninspect.io import residency


class _Commands(TyperGroup):
    """The command list of ``--help`` with each command's whole summary (the first paragraph of its
    help, wrapped), where click would cut it at 45 characters with "..."."""

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:  # type: ignore[override]
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.short_help and command.help:
                command.short_help = " ".join(command.help.strip().split("\n\n")[0].split())
        super().format_commands(ctx, formatter)


app = typer.Typer(
    cls=_Commands,
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
