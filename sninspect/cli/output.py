"""Where a command's text goes: stdout, or a file written atomically (never over an input)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sninspect.errors import OutputError


def write_output(text: str, output: Path | None, inputs: Sequence[Path]) -> None:
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
