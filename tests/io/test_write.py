"""The one atomic writer: a write leaves the whole new file or nothing, never writes through a link, a
device or over an input, and cleans up after errors and SIGTERM/SIGHUP."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sninspect.io.write
from sninspect.errors import OutputError, command_line_spelling
from sninspect.io.write import atomic_path, open_atomic, write_bytes, write_text


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def umask() -> Iterator[int]:
    """A umask unlike the usual 022, restored afterwards."""
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------------------------
# Writing, force, permissions


def test_writes_bytes_and_text(tmp_path: Path) -> None:
    assert write_bytes(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    write_text(tmp_path / "b.txt", "σ ≤ 1\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "σ ≤ 1\n".encode()
    assert names(tmp_path) == ["a.bin", "b.txt"]


def test_open_atomic_gives_a_file_object(tmp_path: Path) -> None:
    with open_atomic(tmp_path / "out.txt", "w") as handle:
        handle.write("one\n")
        handle.write("two\n")
        assert not (tmp_path / "out.txt").exists()  # nothing at the target until the block ends
    assert (tmp_path / "out.txt").read_text() == "one\ntwo\n"
    with pytest.raises(ValueError, match="mode"):
        with open_atomic(tmp_path / "x", "ab"):
            pass
    assert names(tmp_path) == ["out.txt"]


def test_atomic_path_gives_a_file_name(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "out.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"data")
    assert names(tmp_path) == ["out.bin"] and (tmp_path / "out.bin").read_bytes() == b"data"


def test_new_file_gets_normal_permissions(tmp_path: Path, umask: int) -> None:
    write_bytes(tmp_path / "out", b"x")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o666 & ~umask  # 0o640, not mkstemp's 0o600


def test_existing_file_needs_force_and_keeps_its_mode(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    out.chmod(0o604)
    with pytest.raises(OutputError, match=r"already exists \(pass force=True to overwrite it\)"):
        write_bytes(out, b"new")
    assert out.read_bytes() == b"old"
    write_bytes(out, b"new", force=True)
    assert out.read_bytes() == b"new" and out.stat().st_mode & 0o777 == 0o604
    assert names(tmp_path) == ["out"]


# ----------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("to", ["file", "dangling", "folder"])
def test_refuses_a_symlink(tmp_path: Path, force: bool, to: str) -> None:
    pointee = tmp_path / "pointee"
    if to == "file":
        pointee.write_bytes(b"keep")
    elif to == "folder":
        pointee.mkdir()
    link = tmp_path / "link"
    link.symlink_to(pointee)
    with pytest.raises(OutputError, match=r"link: is a symbolic link \(to .*pointee\)") as caught:
        write_bytes(link, b"new", force=force)
    assert "\n" not in str(caught.value)
    assert link.is_symlink() and names(tmp_path) == (["link"] if to == "dangling" else ["link", "pointee"])
    if to == "file":
        assert pointee.read_bytes() == b"keep"


@pytest.mark.parametrize("force", [False, True])
def test_refuses_a_directory(tmp_path: Path, force: bool) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="out: is a directory, not a regular file"):
        write_bytes(tmp_path / "out", b"x", force=force)


def test_refuses_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OutputError, match=r"pipe: is a named pipe \(FIFO\), not a regular file"):
        write_bytes(tmp_path / "pipe", b"x", force=True)
    assert names(tmp_path) == ["pipe"]


def test_refuses_a_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative name: socket paths are limited to ~100 bytes
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock")
        with pytest.raises(OutputError, match="sock: is a socket, not a regular file"):
            write_bytes("sock", b"x", force=True)


def test_refuses_a_device() -> None:
    with pytest.raises(OutputError, match="/dev/null: is a device, not a regular file"):
        write_bytes("/dev/null", b"x", force=True)


def test_refuses_every_spelling_of_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "in.pt"
    source.write_bytes(b"input")
    (tmp_path / "soft.pt").symlink_to(source)
    os.link(source, tmp_path / "hard.pt")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for out in ["in.pt", "./in.pt", tmp_path / "sub" / ".." / "in.pt", "soft.pt", "hard.pt"]:
        with pytest.raises(OutputError, match="is the input .*even with force=True"):
            write_bytes(out, b"x", force=True, inputs=[source])
    with pytest.raises(OutputError, match="is the input"):
        write_bytes(source, b"x", force=True, inputs=["soft.pt"])
    assert source.read_bytes() == b"input"


def test_refuses_a_missing_folder_or_a_file_as_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"folder .*nope does not exist \(create it first\)"):
        write_bytes(tmp_path / "nope" / "out", b"x")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="file is not a folder"):
        write_bytes(tmp_path / "file" / "out", b"x")


@pytest.mark.parametrize(("code", "words"), [
    (errno.EACCES, r"Permission denied \(check the folder's permissions\)"),
    (errno.EROFS, r"Read-only file system \(the file system is read-only; write somewhere else\)"),
])
def test_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    real_open = os.open

    def refuse(path: Any, *args: Any, **kwargs: Any) -> int:  # creating the temp file fails, nothing else
        if str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sninspect.io.write.os, "open", refuse)
    with pytest.raises(OutputError, match=f"out: cannot create a file in .*: {words}"):
        write_bytes(tmp_path / "out", b"x")


# ----------------------------------------------------------------------------------------------
# Failures leave nothing behind


def test_exception_in_the_writer_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    with pytest.raises(OutputError) as caught:
        with open_atomic(out, force=True) as handle:
            handle.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(caught.value) == (f"{out}: could not write: No space left on device (free some space or write "
                                 "somewhere else; nothing was changed; the existing file is intact)")
    assert names(tmp_path) == ["out"] and out.read_bytes() == b"old"


def test_interrupt_propagates_and_leaves_no_temp(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with open_atomic(tmp_path / "out") as handle:
            handle.write(b"half")
            raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_file_created_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="already exists .*appeared while writing.*force=True"):
        with open_atomic(out) as handle:
            handle.write(b"mine")
            out.write_bytes(b"theirs")  # another process creates the target between temp and link
    assert out.read_bytes() == b"theirs" and names(tmp_path) == ["out"]


@pytest.mark.parametrize("code", [errno.EPERM, errno.EXDEV])
def test_without_hard_links_the_name_is_claimed_exclusively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def no_links(*_: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(sninspect.io.write.os, "link", no_links)
    write_bytes(tmp_path / "out", b"new")
    assert (tmp_path / "out").read_bytes() == b"new" and names(tmp_path) == ["out"]
    with pytest.raises(OutputError, match="appeared while writing"):
        with open_atomic(tmp_path / "late") as handle:
            handle.write(b"mine")
            (tmp_path / "late").write_bytes(b"theirs")
    assert (tmp_path / "late").read_bytes() == b"theirs" and names(tmp_path) == ["late", "out"]


# ----------------------------------------------------------------------------------------------
# SIGTERM / SIGHUP during a write

KILLED_MID_WRITE = textwrap.dedent("""
    import os, signal, sys, time
    from sninspect.io.write import open_atomic

    target, signum, force = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "force"
    with open_atomic(target, force=force) as handle:
        handle.write(b"half of the new file")
        handle.flush()
        os.kill(os.getpid(), signum)
        time.sleep(30)  # not reached: the signal unwinds the write, then ends the process
        handle.write(b"the rest")
    print("survived")
""")


@pytest.mark.slow
@pytest.mark.parametrize("force", [True, False])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_write_leaves_no_temp_and_the_old_file(tmp_path: Path, signum: int, force: bool) -> None:
    out = tmp_path / "out"
    if force:
        out.write_bytes(b"old")
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(out), str(signum),
                           "force" if force else "new"], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signum, done.stderr
    assert "survived" not in done.stdout
    assert names(tmp_path) == (["out"] if force else [])
    if force:
        assert out.read_bytes() == b"old"


KILLED_AS_THE_TEMP_FILE_APPEARS = textwrap.dedent("""
    import os, signal, sys
    from sninspect.io.write import write_bytes

    real_close = os.close

    def close_then_signal(fd):  # the first close is the new temp file's: the signal lands right after
        os.close = real_close
        os.kill(os.getpid(), int(sys.argv[2]))
        real_close(fd)

    os.close = close_then_signal
    write_bytes(sys.argv[1], b"data")
    print("survived")
""")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_just_after_the_temp_file_is_created_removes_it(tmp_path: Path, signum: int) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_AS_THE_TEMP_FILE_APPEARS, str(tmp_path / "out"),
                           str(signum)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signum, done.stderr
    assert names(tmp_path) == []


def test_signal_goes_to_the_previous_handler_and_handlers_are_restored(tmp_path: Path) -> None:
    seen: list[int] = []

    def record(signum: int, _frame: Any) -> None:
        seen.append(signum)

    old = signal.signal(signal.SIGTERM, record)
    try:
        with pytest.raises(OutputError, match=r"out: interrupted by SIGTERM \(nothing was written\)"):
            with open_atomic(tmp_path / "out") as handle:
                handle.write(b"half")
                os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is record
        assert names(tmp_path) == []
        write_bytes(tmp_path / "out", b"whole")
        assert signal.getsignal(signal.SIGTERM) is record
    finally:
        signal.signal(signal.SIGTERM, old)


def test_an_ignored_signal_stays_ignored(tmp_path: Path) -> None:
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with open_atomic(tmp_path / "out") as handle:
            handle.write(b"whole")
            os.kill(os.getpid(), signal.SIGHUP)
        assert (tmp_path / "out").read_bytes() == b"whole"
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


# ----------------------------------------------------------------------------------------------
# The CLI's text reports go through it


def test_cli_write_output_uses_the_writer(tmp_path: Path) -> None:
    from sninspect.cli.output import write_output

    out = tmp_path / "report.txt"
    out.write_text("old report")
    with command_line_spelling(), pytest.raises(OutputError, match="already exists .pass --force"):
        write_output("new report\n", out, [])
    assert out.read_text() == "old report"
    write_output("new report\n", out, [], force=True)
    assert out.read_text() == "new report\n" and names(tmp_path) == ["report.txt"]
    (tmp_path / "link.txt").symlink_to(out)
    with pytest.raises(OutputError, match="is a symbolic link"):
        write_output("x", tmp_path / "link.txt", [], force=True)
    with pytest.raises(OutputError, match="is the input"):
        write_output("x", out, [tmp_path / "link.txt"], force=True)
    assert out.read_text() == "new report\n"
