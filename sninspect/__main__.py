"""``python -m sninspect``."""

from sninspect.cli import app

app()
