"""``python -m sninspect``."""

from sninspect.cli.main import app

app()
