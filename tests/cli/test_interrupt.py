"""``report`` on a terminal shows the per-layer table before the certified bounds, and Ctrl-C during the
bounds prints the report as it stands (bounds not computed marked so, no network operator product
claimed), exits 130 and writes nothing to ``-o``. Run in a pseudo-terminal (the pty module), the
interrupt sent as SIGINT once the bound phase is seen on the terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import spectral_norm

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two quick convs and one 256-channel conv whose bound at --bound-tol 0.001 takes minutes."""
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Conv2d(3, 8, 3)), nn.ReLU(), spectral_norm(nn.Conv2d(8, 256, 3)),
                          spectral_norm(nn.Conv2d(256, 256, 3)))
    model(torch.randn(2, 3, 16, 16))
    path = tmp_path_factory.mktemp("slow") / "slow.pt"
    torch.save(model.state_dict(), path)
    return path


def _reset_signals() -> None:
    """The child starts with SIGINT and SIGHUP at their defaults, whatever pytest's were (Python then
    turns SIGINT into KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def interrupted_run(args: list[str], ready: str, tmp_path: Path) -> tuple[int, str]:
    """Run ``sninspect`` on a pseudo-terminal, send SIGINT one second after ``ready`` appears, and
    return its exit code and everything it printed (colours and cursor moves removed)."""
    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS="220", LINES="50", TERM="xterm", PYTHONPATH=str(ROOT))
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "sninspect", *args], stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=_reset_signals, env=env, cwd=tmp_path)
    os.close(slave)
    out = b""
    sent_at: float | None = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], 0.1)
            if readable:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if sent_at is None and ready in ANSI.sub("", out.decode(errors="replace")):
                sent_at = time.monotonic()
            if sent_at is not None and proc.poll() is None and time.monotonic() > sent_at + 1.0:
                proc.send_signal(signal.SIGINT)
                sent_at = float("inf")
            if proc.poll() is not None and not readable:
                break
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert sent_at == float("inf"), ANSI.sub("", out.decode(errors="replace"))[-3000:]
    return code, ANSI.sub("", out.decode(errors="replace"))


@pytest.mark.slow
def test_ctrl_c_during_the_bounds_prints_the_live_table_as_it_stands(slow: Path, tmp_path: Path) -> None:
    code, text = interrupted_run(["report", str(slow), "--device", "cpu", "--bound-tol", "0.001"],
                                 "certified bounds: 0 of 3 done", tmp_path)
    assert code == 130, text[-3000:]
    final = text[text.rindex("sninspect · "):]  # the report printed after the live display
    rows = [line for line in final.splitlines() if re.match(r"\s+\d\.weight ", line)]
    assert len(rows) == 3 and "256×256×3×3" in rows[2]
    assert "not computed" in rows[2]  # the wide bound was under way
    # each op bound cell holds a number or "not computed", then the layer's verdict
    assert all(re.search(r"(\d\.\d+|not computed)\s+(ok|-|[a-z_]+(, [a-z_]+)*)\s*$", row) for row in rows), rows
    assert "certified operator product not claimed" in final
    assert "operator bound not computed (interrupted)" in final
    assert "interrupted during the certified bounds" in final
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_with_an_output_file_writes_nothing_there(slow: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    code, text = interrupted_run(["report", str(slow), "--device", "cpu", "--bound-tol", "0.001", "-o", str(out)],
                                 "slow.pt · 3.weight", tmp_path)  # the progress bar names the bound under way
    assert code == 130, text[-3000:]
    assert not out.exists() and list(tmp_path.iterdir()) == []
    final = text[text.rindex("sninspect · "):]
    assert "not computed" in final and "certified operator product not claimed" in final
    assert f"nothing written to {out}" in final.replace("\r\n", "").replace("\n", "")
