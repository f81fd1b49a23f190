"""The ``sninspect`` command: parse → call the library → render → exit code. Nothing else.

:mod:`.app` holds the typer app, :mod:`.options` the shared options, :mod:`.errors` the one place
where failures become exit codes; the commands live in :mod:`.audit_commands` (report, check,
layers) and :mod:`.rewrite_commands` (strip, apply, convert) and register on import.
"""

from __future__ import annotations

from sninspect.cli import audit_commands, graph_commands, rewrite_commands
from sninspect.cli.app import app

__all__ = ["app", "audit_commands", "graph_commands", "rewrite_commands"]
