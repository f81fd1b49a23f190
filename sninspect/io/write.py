"""THE one atomic writer: every file sninspect writes (checkpoints, reports, figures) goes through here.

A write leaves either the complete new file at the target or nothing changed. The data goes to a
hidden temporary file ``.NAME.XXXXXXXX.tmp`` beside the target; it is fsynced, given normal
permissions (``0o666 & ~umask`` for a new file, the old bits for a replaced one) and published:

* without ``force`` by ``os.link(tmp, target)``, which fails if the target appeared meanwhile, so
  creating a file cannot race with another writer; where the file system has no hard links, by
  claiming the name with ``O_CREAT | O_EXCL`` and renaming over the claim;
* with ``force`` by ``os.replace``.

Refused, ``force`` or not: a target that is one of ``inputs`` (an :class:`~sninspect.io.inputs.InputSet`:
every file the command read, shards and folder contents included; same file, through any link), a
symbolic link, a directory, a device, a FIFO or a socket. The temporary file is removed on any
exception, and on SIGTERM/SIGHUP during the write, which are then re-delivered to the handlers the
process had. Every failure is one :class:`~sninspect.errors.OutputError` line naming the path, the
reason and the fix.

Three ways in: :func:`write_bytes` / :func:`write_text` for data in memory; :func:`open_atomic` for a
writer that takes a file object (``torch.save``, ``savefig``); :func:`atomic_path` for one that takes
a file name (``safetensors.torch.save_file``).

One way to grow a file: :func:`append_line`, for an append-only log (the training monitor's JSON
lines). Replacing a growing log by temp file + rename at every record would copy it each time and
could drop a line another process appended meanwhile; instead each record is ONE ``write`` to a file
opened with ``O_APPEND``, which the OS places at the end whole, after whatever is there. An existing
log is never truncated; the same target checks apply (no links, no devices, the folder must exist).
A crash can leave at most a torn last line, which the next append closes with a newline first and
the reader skips (:mod:`sninspect.io.monitor_log`).
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from sninspect.errors import OutputError, flag
from sninspect.io.files import one_line, printable
from sninspect.io.inputs import InputSet, as_input_set

__all__ = ["append_line", "atomic_path", "check_target", "open_atomic", "write_bytes", "write_text"]

Inputs = InputSet | Sequence[str | os.PathLike[str]]
"""What a writer must not replace: an :class:`~sninspect.io.inputs.InputSet`, or paths (expanded into one)."""

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
"""Signals that end a process politely: the write unwinds (removing its temporary file) first."""

_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
"""``os.link`` errors meaning "this file system will not link": fall back to an ``O_EXCL`` claim."""

_HINTS = {
    errno.EACCES: "check the folder's permissions",
    errno.EPERM: "check the folder's permissions",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "over the disk quota; free some space or write somewhere else",
}


def write_bytes(path: str | os.PathLike[str], data: bytes, *, force: bool = False, inputs: Inputs = ()) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path written."""
    with open_atomic(path, "wb", force=force, inputs=inputs) as handle:
        handle.write(data)
    return Path(os.fspath(path))


def write_text(
    path: str | os.PathLike[str], text: str, *, force: bool = False, inputs: Inputs = (), encoding: str = "utf-8"
) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path written."""
    with open_atomic(path, "w", force=force, inputs=inputs, encoding=encoding) as handle:
        handle.write(text)
    return Path(os.fspath(path))


@contextmanager
def open_atomic(
    path: str | os.PathLike[str], mode: str = "wb", *, force: bool = False, inputs: Inputs = (),
    encoding: str = "utf-8",
) -> Iterator[IO[Any]]:
    """A file object to write ``path`` through: ``with open_atomic(p, force=True) as f: torch.save(obj, f)``.

    ``mode`` is ``"wb"`` or ``"w"`` (text in ``encoding``). The file appears at ``path`` when the block
    ends without an exception, and not at all otherwise.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic writes a new file: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path, force=force, inputs=inputs) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, force: bool = False, inputs: Inputs = ()) -> Iterator[Path]:
    """The temporary file's path to write ``path`` through, for writers that want a file name.

    Everything is checked before the block runs; after it, the temporary file is published at ``path``
    (see the module docstring), or removed if the block raised or a SIGTERM/SIGHUP arrived.
    """
    target = Path(os.fspath(path))
    shown = printable(target)
    existing = _check_target(target, shown, inputs, force)
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else _new_file_mode()
    with _unwind_on_signals(shown):
        made: list[Path] = []  # the temp file's name, known before the file exists (see _temp_file)
        try:
            tmp = _temp_file(target, shown, made)
            yield tmp
            _fsync(tmp)
            os.chmod(tmp, mode)
            _publish(tmp, target, shown, force)
        except BaseException as err:
            for path in made:
                _remove(path)
            if not isinstance(err, Exception) or isinstance(err, OutputError):
                raise
            raise _write_failed(shown, target, err) from None
    _fsync(target.parent, folder=True)


# ----------------------------------------------------------------------------------------------
# Checks before writing


def check_target(path: str | os.PathLike[str], *, force: bool = False, inputs: Inputs = ()) -> None:
    """The checks a write makes first, on their own: a command runs them before a long computation so
    that a refused output fails at once (the write checks again)."""
    target = Path(os.fspath(path))
    _check_target(target, printable(target), inputs, force)


def append_line(path: str | os.PathLike[str], line: str) -> Path:
    """Append ``line`` (one record, no newline inside) and a newline to ``path``, created if absent.

    One ``write`` of the whole record with ``O_APPEND`` (module docstring); a file that does not end
    with a newline (a record torn by a crash) gets one first, so the new record stands on its own line.
    """
    # Precondition: one record per line (the reader splits on newlines).
    assert "\n" not in line, "a log record is one line"
    target = Path(os.fspath(path))
    shown = printable(target)
    _check_target(target, shown, (), force=True)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o666)
    except OSError as err:
        raise _write_failed(shown, target, err) from None
    size, written = 0, 0
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        data = ("\n" if torn else "").encode() + line.encode("utf-8") + b"\n"
        while written < len(data):
            written += os.write(fd, data[written:])
    except OSError as err:
        raise _append_failed(shown, fd, size, written, err) from None
    finally:
        os.close(fd)
    return target


def _append_failed(shown: str, fd: int, size: int, written: int, err: OSError) -> OutputError:
    """What a failed append (a full disk mid-record) left, said exactly: nothing; or a partial record
    cut back off (when the log still ends with it: no other writer appended meanwhile); or a torn
    record of N bytes, which the reader skips and the next append closes with a newline."""
    detail = err.strerror or str(err)
    hint = f"{_HINTS[err.errno]}; " if err.errno in _HINTS else ""
    if written == 0:
        return OutputError(f"{shown}: could not append the record: {detail} ({hint}nothing was written)")
    try:
        if os.fstat(fd).st_size != size + written:
            raise OSError(errno.EBUSY, "another writer appended meanwhile")
        os.ftruncate(fd, size)
    except OSError:
        return OutputError(f"{shown}: could not append the record: {detail} ({hint}a torn record of {written} "
                           "bytes remains in the log; readers skip it and the next record starts on a new line)")
    return OutputError(f"{shown}: could not append the record: {detail} ({hint}the {written} bytes written were "
                       "cut off again: the log is as it was)")


def _check_target(target: Path, shown: str, inputs: Inputs, force: bool) -> os.stat_result | None:
    """The target's ``lstat`` when it is a regular file that may be replaced, None when it is absent."""
    folder = target.parent
    try:
        folder_is_dir = stat.S_ISDIR(os.stat(folder).st_mode)
    except FileNotFoundError:
        raise OutputError(f"{shown}: folder {printable(folder)} does not exist (create it first)") from None
    except OSError as err:
        if err.errno != errno.ENOTDIR:
            raise OutputError(f"{shown}: cannot look up folder {printable(folder)}: {err.strerror or err} "
                              f"({_HINTS.get(err.errno or 0, 'check the path')})") from None
        folder_is_dir = False
    if not folder_is_dir:
        raise OutputError(f"{shown}: {printable(folder)} is not a folder (give a path inside a folder)")
    source = as_input_set(inputs).find(target)
    if source is not None:
        raise OutputError(f"{shown}: is the input {printable(source)}; an input is never overwritten, "
                          f"even with {flag('force')} (choose another output path)")
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OutputError(f"{shown}: cannot look up the output: {err.strerror or err} "
                          f"({_HINTS.get(err.errno or 0, 'check the path')})") from None
    if stat.S_ISLNK(info.st_mode):
        raise OutputError(f"{shown}: is a symbolic link (to {printable(os.readlink(target))}); sninspect does "
                          f"not write through or over links, even with {flag('force')} (give the path of a regular "
                          "file, or remove the link)")
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{shown}: is {_kind(info.st_mode)}, not a regular file (give the path of a file to "
                          "write)")
    if not force:
        raise OutputError(f"{shown}: already exists (pass {flag('force')} to overwrite it)")
    return info


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _new_file_mode() -> int:
    """What ``open`` would give a new file: ``0o666 & ~umask`` (the temp file's 0600 is too tight)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:  # reads the umask without setting it
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


# ----------------------------------------------------------------------------------------------
# Writing and publishing


def _temp_file(target: Path, shown: str, made: list[Path]) -> Path:
    """Create ``.NAME.XXXXXXXX.tmp`` (mode 0600, ``O_EXCL``) beside ``target``.

    Its name goes into ``made`` *before* the file is created: a SIGTERM raising at any point after
    the ``open`` finds it there, so the caller's cleanup removes it (``tempfile.mkstemp`` returns
    the name only after creating the file, leaving a window where a signal leaks it)."""
    for _ in range(100):
        candidate = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        made.append(candidate)
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            made.remove(candidate)  # somebody else's
            continue
        except OSError as err:
            made.remove(candidate)
            hint = _HINTS.get(err.errno or 0, "check the folder's permissions and free space")
            raise OutputError(f"{shown}: cannot create a file in {printable(target.parent)}: "
                              f"{err.strerror or err} ({hint})") from None
        os.close(fd)
        return candidate
    raise OutputError(f"{shown}: cannot create a temporary file in {printable(target.parent)} (100 names "
                      "taken; remove stale .*.tmp files there)")


def _publish(tmp: Path, target: Path, shown: str, force: bool) -> None:
    """Move the finished ``tmp`` to ``target``: replacing it with ``force``, else only if still absent."""
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _appeared(shown) from None
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS:
            raise
        _claim_and_replace(tmp, target, shown)
        return
    _remove(tmp)


def _claim_and_replace(tmp: Path, target: Path, shown: str) -> None:
    """Without hard links: create ``target`` empty with ``O_EXCL`` (fails if it exists), then rename over it."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _appeared(shown) from None
    os.close(fd)
    try:
        os.replace(tmp, target)
    except BaseException:
        _remove(target)  # our empty claim, nobody else's file
        raise


def _appeared(shown: str) -> OutputError:
    return OutputError(f"{shown}: already exists (it appeared while writing; pass {flag('force')} to overwrite it)")


def _write_failed(shown: str, target: Path, err: Exception) -> OutputError:
    code = err.errno if isinstance(err, OSError) else None
    detail = err.strerror if isinstance(err, OSError) and err.strerror else one_line(err)
    hint = f"{_HINTS[code]}; " if code in _HINTS else ""
    kept = "; the existing file is intact" if os.path.lexists(target) else ""
    return OutputError(f"{shown}: could not write: {detail} ({hint}nothing was changed{kept})")


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush ``path`` to disk; for a folder (making a rename durable) only where the file system allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------
# SIGTERM / SIGHUP during a write


class Signalled(BaseException):
    """Raised from the signal handler to unwind the write (like KeyboardInterrupt for SIGINT). It can
    escape the write when the signal lands inside contextlib's own frames around the block (the
    generator's cleanup then runs later, at garbage collection): whoever catches it calls :meth:`die`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def die(self) -> NoReturn:
        """End the process as the signal's default action does (the write's handlers may still be set)."""
        signal.signal(self.signum, signal.SIG_DFL)
        signal.raise_signal(self.signum)
        raise SystemExit(128 + self.signum)  # a platform where the default action does not end the process


@contextmanager
def _unwind_on_signals(shown: str) -> Iterator[None]:
    """While the block runs, SIGTERM/SIGHUP raise inside it (so ``finally``/``except`` clean up), then
    go to the handlers the process had: by default the process ends as the signal says.

    Only the main thread can set handlers; elsewhere the block runs unguarded. Signals the process
    ignores stay ignored; a second signal while unwinding is left to the first one's delivery.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not fired:
            fired.append(signum)
            raise Signalled(signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int] = {}
    for signum in _SIGNALS:
        old = signal.getsignal(signum)
        if old is None or old == signal.SIG_IGN:  # None: set outside Python, cannot be restored
            continue
        previous[signum] = old
        signal.signal(signum, handler)
    try:
        yield
    except Signalled as caught:
        _restore(previous)
        signal.raise_signal(caught.signum)  # the process's own response; by default it ends here
        name = signal.Signals(caught.signum).name
        raise OutputError(f"{shown}: interrupted by {name} (nothing was written)") from None
    finally:
        _restore(previous)


def _restore(previous: dict[int, Callable[[int, FrameType | None], Any] | int]) -> None:
    for signum, old in previous.items():
        signal.signal(signum, old)
    previous.clear()
