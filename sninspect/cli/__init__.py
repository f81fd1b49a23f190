"""The ``sninspect`` command line: a thin layer over the library."""

from sninspect.cli.main import app

__all__ = ["app"]
