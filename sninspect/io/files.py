"""Paths as a user reads them, and the check that an input is a readable, non-empty regular file."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sninspect.errors import InputError, MissingFileError

__all__ = ["library_path", "one_line", "open_regular", "printable"]


def printable(file: str | os.PathLike[str]) -> str:
    """``file`` as printed in a message: as given, or ``ascii()`` of it when it holds unprintable characters."""
    text = os.fspath(file)
    return text if text.isprintable() else ascii(text)


@contextmanager
def library_path(file: str | os.PathLike[str]) -> Iterator[str]:
    """A name by which a library that takes only UTF-8 paths (torch.load's zip reader, safetensors) can
    open ``file`` while the block runs.

    A file name that is not valid UTF-8 reaches Python as a ``str`` with lone surrogates
    (``surrogateescape``), which such libraries refuse; the file is then opened here through its
    bytes and named ``/proc/self/fd/N`` (Linux). Any other name is passed as it is."""
    name = os.fspath(file)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        if os.path.isdir("/proc/self/fd"):
            fd = os.open(os.fsencode(name), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                yield f"/proc/self/fd/{fd}"
            finally:
                os.close(fd)
            return
    yield name


def open_regular(file: Path, shown: str) -> bytes:
    """The first 32 bytes of ``file`` after making sure it is a readable, non-empty regular file.

    ``os.stat`` comes first and the open is non-blocking: opening a FIFO for reading would wait forever.
    """
    try:
        info = os.stat(file)
    except FileNotFoundError:
        raise MissingFileError(f"{shown}: no such file (check the path)") from None
    except PermissionError:
        raise InputError(f"{shown}: permission denied (cannot look up the file; check the folder's "
                         "permissions)") from None
    except OSError as err:
        raise InputError(f"{shown}: cannot access: {err.strerror or err}") from None
    _require_regular(info.st_mode, shown)
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise InputError(f"{shown}: permission denied (make the file readable, e.g. chmod u+r)") from None
    except OSError as err:
        raise InputError(f"{shown}: cannot open: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        _require_regular(info.st_mode, shown)  # replaced between stat and open
        if info.st_size == 0:
            raise InputError(f"{shown}: empty file (0 bytes; expected a checkpoint written by torch.save or "
                             "safetensors)")
        return os.read(fd, 32)
    except OSError as err:
        raise InputError(f"{shown}: cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)


def _require_regular(mode: int, shown: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        what = "a directory"
    elif stat.S_ISFIFO(mode):
        what = "a named pipe (FIFO)"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    else:
        what = "not a regular file"
    raise InputError(f"{shown}: is {what}, not a checkpoint file (pass the path of a .pt/.pth/.ckpt/.bin, "
                     ".safetensors or .safetensors.index.json file)")


def one_line(err: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, without ANSI escapes, at most ``limit`` long."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."
