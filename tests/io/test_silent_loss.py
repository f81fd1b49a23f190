"""Nothing lost, nothing wrong, silently: colliding output names, strip notes that match the file
written, zips with duplicate records, racing writers, and signals in the middle of ``strip``."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.nn.utils import spectral_norm

import sninspect
from sninspect.errors import InputError, OutputError
from sninspect.io.load import load_checkpoint
from sninspect.io.write import open_atomic


def sn_linear(n_in: int = 3, n_out: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    layer = spectral_norm(nn.Linear(n_in, n_out))
    layer(torch.randn(2, n_in))  # one training step: σ̂ > 0
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


def written(path: Path) -> tuple[set[str], dict[str, str]]:
    with safe_open(os.fspath(path), "pt") as f:
        return set(f.keys()), dict(f.metadata() or {})


# ----------------------------------------------------------------------------------------------
# Names that collide once flattened


def test_colliding_flat_names_are_refused_naming_both_keys(tmp_path: Path) -> None:
    plain = nn.Linear(3, 4)
    source = tmp_path / "two.pt"
    torch.save({"G": {"x.weight": plain.weight.detach(), "x.bias": plain.bias.detach()}, "G.x": sn_linear()},
               source)
    out = tmp_path / "x.safetensors"
    with pytest.raises(OutputError) as caught:
        sninspect.strip(source, out)
    message = str(caught.value)
    assert "'G.x.weight' from model 'G' key 'x.weight' and from model 'G.x' key 'weight'" in message
    assert "'G.x.bias' from model 'G' key 'x.bias' and from model 'G.x' key 'bias'" in message
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["two.pt"]
    with pytest.raises(OutputError, match="would collide"):  # a dry run says so too
        sninspect.strip(source, out, dry_run=True)
    # A .pt file keeps the models apart: both survive, each whole.
    kept = tmp_path / "x.pt"
    sninspect.strip(source, kept)
    back = torch.load(kept, weights_only=True)
    assert set(back["G"]) == {"x.weight", "x.bias"} and set(back["G.x"]) == {"weight", "bias"}
    assert torch.equal(back["G"]["x.weight"], plain.weight.detach())


def test_distinct_models_flatten_without_loss(tmp_path: Path) -> None:
    source = tmp_path / "gan.pt"
    torch.save({"netG": sn_linear(seed=1), "netD": sn_linear(seed=2)}, source)
    out = tmp_path / "gan.safetensors"
    sninspect.strip(source, out)
    keys, _ = written(out)
    assert keys == {"netG.weight", "netG.bias", "netD.weight", "netD.bias"}


# ----------------------------------------------------------------------------------------------
# The strip notes say exactly what was left out


def left_out(notes: tuple[str, ...]) -> set[str]:
    """The names the notes say were left out of the file."""
    out: set[str] = set()
    for note in notes:
        if "left out:" in note:
            out |= {part.strip() for part in note.split("left out:")[1].split(",")}
    return out


def test_flat_state_dict_notes_leave_nothing_out(tmp_path: Path) -> None:
    source = tmp_path / "flat.pt"
    state = sn_linear()
    torch.save(state, source)
    out = tmp_path / "flat.safetensors"
    result = sninspect.strip(source, out)
    keys, _ = written(out)
    assert keys == {"weight", "bias"}
    assert left_out(result.notes) == set()
    assert not any("left out" in n for n in result.notes), result.notes
    with safe_open(os.fspath(out), "pt") as f:
        assert torch.equal(f.get_tensor("bias"), state["bias"])  # bias written, as the notes now imply


def test_wrapper_notes_name_exactly_what_the_file_lacks(tmp_path: Path) -> None:
    source = tmp_path / "wrapped.pt"
    torch.save({"netD": sn_linear(), "epoch": 7, "config": {"lr": 0.1}, "ema": [torch.ones(2)]}, source)
    out = tmp_path / "wrapped.safetensors"
    result = sninspect.strip(source, out)
    keys, metadata = written(out)
    assert keys == {"weight", "bias"}
    assert json.loads(metadata["epoch"]) == 7 and json.loads(metadata["config"]) == {"lr": 0.1}
    container = {"netD", "epoch", "config", "ema"}
    in_file = {"netD"} | (set(metadata) & container)
    assert left_out(result.notes) == container - in_file == {"ema"}


# ----------------------------------------------------------------------------------------------
# A zip with two records of the same name


def duplicated_zip(source: bytes, target: Path) -> str:
    """``source`` (a torch.save zip) rewritten with a decoy copy of its first tensor record before the
    real one; returns the duplicated name."""
    original = zipfile.ZipFile(io.BytesIO(source))
    name = next(i.filename for i in original.infolist() if i.filename.endswith("/data/0"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name": that is the point
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
            for info in original.infolist():
                data = original.read(info)
                if info.filename == name:
                    out.writestr(name, b"PK\x03\x04" + b"\x7f" * (len(data) - 4))
                out.writestr(info.filename, data)
    return name


@pytest.mark.slow
def test_zip_with_duplicate_records_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(sn_linear(), buffer)
    bad = tmp_path / "dup.pt"
    name = duplicated_zip(buffer.getvalue(), bad)
    names = [i.filename for i in zipfile.ZipFile(bad).infolist()]
    assert names.count(name) == 2  # the file really holds two records of that name
    with pytest.raises(InputError, match=rf"zip records appear more than once \('{name}'\)"):
        load_checkpoint(bad)
    done = subprocess.run([sys.executable, "-m", "sninspect", "report", str(bad), "-f", "json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "more than once" in done.stderr


# ----------------------------------------------------------------------------------------------
# Two writers to one path: exactly one wins


def test_two_racing_writes_exactly_one_wins(tmp_path: Path) -> None:
    target = tmp_path / "out.pt"
    both_inside = threading.Barrier(2, timeout=30)
    outcome: dict[str, str] = {}

    def write(who: str) -> None:
        try:
            with open_atomic(target) as handle:  # no force
                handle.write(who.encode())
                both_inside.wait()  # both temp files exist and both passed the existence check
            outcome[who] = "won"
        except OutputError as err:
            outcome[who] = str(err)

    threads = [threading.Thread(target=write, args=(who,)) for who in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [who for who, result in outcome.items() if result == "won"]
    assert len(winners) == 1, outcome
    loser = ({"first", "second"} - set(winners)).pop()
    assert "already exists" in outcome[loser] and "force=True" in outcome[loser]  # the library's spelling
    assert target.read_bytes() == winners[0].encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]  # no temp file left


@pytest.mark.slow
def test_second_strip_to_the_same_output_refuses(tmp_path: Path) -> None:
    source = tmp_path / "d.pt"
    torch.save(sn_linear(), source)
    out = tmp_path / "plain.pt"
    sninspect.strip(source, out)
    first = out.read_bytes()
    done = subprocess.run([sys.executable, "-m", "sninspect", "strip", str(source), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 4 and "already exists (pass --force to overwrite it)" in done.stderr
    assert out.read_bytes() == first


# ----------------------------------------------------------------------------------------------
# SIGTERM / SIGHUP while `strip` writes a real multi-MB checkpoint


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three SN Linear(1024, 1024): about 12 MB of float32 weights."""
    torch.manual_seed(0)
    model = nn.Sequential(*(spectral_norm(nn.Linear(1024, 1024)) for _ in range(3)))
    path = tmp_path_factory.mktemp("big") / "big.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_strip_leaves_no_temp_file(big_checkpoint: Path, tmp_path: Path, signum: int) -> None:
    caught_mid_write = 0
    for attempt in range(4):  # every kill must be clean, not only the first
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        out = folder / "out.pt"
        proc = subprocess.Popen([sys.executable, "-m", "sninspect", "strip", str(big_checkpoint), "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None and not any(p.name.endswith(".tmp") for p in folder.iterdir()):
            time.sleep(0.0005)
        if proc.poll() is None:  # the hidden temp file exists: the write has begun
            proc.send_signal(signum)
        code = proc.wait(120)
        proc.stderr.close()  # type: ignore[union-attr]
        left = sorted(p.name for p in folder.iterdir())
        if code == -signum and left == []:  # ended by the signal: neither a temp file nor a partial output
            caught_mid_write += 1
            continue
        # The write finished before the signal landed: the whole file, and still no temp file.
        assert code in (0, -signum) and left == ["out.pt"], (code, left)
        assert len(torch.load(out, weights_only=True)) == len(torch.load(big_checkpoint, weights_only=True)) - 6
    assert caught_mid_write, "the signal never landed during the write (4 tries)"


@pytest.mark.slow
def test_a_signal_escaping_a_write_still_ends_the_process_by_that_signal(tmp_path: Path) -> None:
    """A SIGTERM that lands in contextlib's frames around the write escapes its unwinding as ``Signalled``
    (seen once in a loaded run: exit 1 and a traceback); the CLI's error handler ends the process by the
    signal, as its default action would."""
    script = (
        "import sys\n"
        "from sninspect.cli.errors import handle_errors\n"
        "from sninspect.io.write import Signalled\n"
        "@handle_errors\n"
        "def command():\n"
        "    raise Signalled(15)\n"
        "command()\n"
        "print('survived')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stderr)
    assert "survived" not in done.stdout and "Traceback" not in done.stderr
