"""Where a command's text goes: stdout, or a file through the one atomic writer (never over an input)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from sninspect.io.write import write_text


def write_output(text: str, output: Path | None, inputs: Sequence[Path]) -> None:
    """Print to stdout, or write ``output`` atomically (never over one of the inputs)."""
    if output is None:
        sys.stdout.write(text)
        return
    # TODO(issue 12): --force. `report -o` has always replaced an existing file; keep that until the
    # option exists (links, devices and the inputs are refused regardless).
    write_text(output, text, force=True, inputs=inputs)
