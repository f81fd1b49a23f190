"""Where a command's text goes: stdout, or a file through the one atomic writer (never over an input),
in the format the file's extension asks for."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from sninspect.errors import UsageError
from sninspect.io.inputs import InputSet
from sninspect.io.write import check_target, write_text
from sninspect.render.formats import SUFFIXES, OutputFormat


def choose_format(asked: OutputFormat | None, output: Path | None) -> OutputFormat:
    """``--format`` when given, else the one ``-o FILE``'s extension names (.json .csv .md .html .txt),
    else the table. An extension that says one format and ``--format`` another is a usage error, and
    so is ``-o`` with an unknown extension and no ``--format``."""
    if output is None:
        return asked or OutputFormat.table
    implied = OutputFormat.for_path(output)
    if asked is None:
        if implied is None:
            raise UsageError(f"-o {output}: cannot tell the format from the extension "
                             f"{output.suffix or '(none)'!s} (use one of {' '.join(SUFFIXES)}, or pass --format)")
        return implied
    if implied is not None and implied is not asked:
        raise UsageError(f"-o {output} names a {implied.value} file but --format is {asked.value} "
                         f"(drop --format, or give the file a matching extension)")
    return asked


def refuse_early(output: Path | None, inputs: InputSet | Sequence[Path], *, force: bool) -> None:
    """Before a long audit: an ``output`` the writer would refuse (an input, a link, an existing file
    without ``--force``, a missing folder) is refused now, not after it."""
    if output is not None:
        check_target(output, force=force, inputs=inputs)


def write_output(text: str, output: Path | None, inputs: InputSet | Sequence[Path], *,
                 force: bool = False) -> None:
    """Print to stdout, or write ``output`` atomically: an existing file only with ``force``, an input
    never."""
    if output is None:
        sys.stdout.write(text)
        return
    write_text(output, text, force=force, inputs=inputs)
