"""Issue 27: no writer replaces any file the command read, with or without ``--force`` (the shards
behind an index, the files in a folder argument, the checkpoints a monitor log names, the ``--model``
sources), every figure path is checked before anything is drawn; exit codes and one-line messages
for unreadable inputs, non-UTF-8 file names, surrogate keys, ``--model`` failures, ``--junit-xml``;
the monitor checks its log when built and says exactly what a failed append left."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import spectral_norm
from typer.testing import CliRunner

import sninspect.io.files
import sninspect.io.write
import sninspect.monitor
from sninspect.cli.main import app
from sninspect.errors import ExitCode, OutputError
from sninspect.io.inputs import InputSet
from sninspect.io.write import append_line, write_bytes
from sninspect.monitor import SNMonitor

runner = CliRunner()
QUIET_RULES = {"max_sigma": None, "max_cos_error": None}


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(spectral_norm(nn.Linear(4, 5)), nn.ReLU(), spectral_norm(nn.Linear(5, 2)))
    model(torch.randn(2, 4))
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _sharded(folder: Path) -> tuple[Path, list[Path]]:
    """``model.safetensors.index.json`` and its two shards in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = _state()
    keys = sorted(state)
    shards = [folder / "model-00001-of-00002.safetensors", folder / "model-00002-of-00002.safetensors"]
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for shard, names in zip(shards, halves, strict=True):
        save_file({k: state[k] for k in names}, shard)
        weight_map.update({k: shard.name for k in names})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index, shards


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(result: Any) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _cli(*args: str | Path) -> Any:
    return runner.invoke(app, [*map(str, args)])


# ----------------------------------------------------------------------------------------------
# 1. Every writer knows every input


@pytest.mark.parametrize("given", ["index", "folder"])
def test_report_never_replaces_a_shard(tmp_path: Path, given: str) -> None:
    index, shards = _sharded(tmp_path / "m")
    before = _snapshot(tmp_path)
    source = index if given == "index" else index.parent
    for out in (shards[0], shards[1], index):
        result = _cli("report", source, "-o", out, "--format", "json", "--force", "-q", "--device", "cpu")
        assert result.exit_code == ExitCode.WRITE_FAILED, result.output
        assert "is the input" in _one_error(result) and "even with --force" in result.stderr
    assert _snapshot(tmp_path) == before
    ok = _cli("report", source, "-o", tmp_path / "r.json", "-q", "--device", "cpu")
    assert ok.exit_code == 0 and json.loads((tmp_path / "r.json").read_text())["layers"]


def test_report_refuses_a_figure_path_that_is_an_input_before_writing_anything(tmp_path: Path) -> None:
    figs = tmp_path / "figs"
    figs.mkdir()
    checkpoint = figs / "sigma.png"  # a checkpoint whose name is a figure's
    torch.save(_state(), checkpoint)
    before = _snapshot(tmp_path)
    result = _cli("report", checkpoint, "--plots", figs, "--force", "-o", tmp_path / "r.json", "-q",
                  "--device", "cpu")
    assert result.exit_code == ExitCode.WRITE_FAILED
    assert "sigma.png: is the input" in _one_error(result)
    assert _snapshot(tmp_path) == before  # neither the report nor any other figure was written


def test_a_run_checks_every_figure_of_every_checkpoint_before_drawing(tmp_path: Path) -> None:
    """A run writes trend figures first, then one subfolder per checkpoint: an input in a subfolder
    was found only after the trend figures were written."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for step in (1, 2):
        torch.save({**_state(step), "step": step}, runs / f"ck_{step}.pt")
    figs = tmp_path / "figs"
    (figs / "ck_2").mkdir(parents=True)
    hidden = figs / "ck_2" / "spectra.png"
    torch.save({**_state(3), "step": 3}, hidden)
    before = _snapshot(tmp_path)
    result = _cli("report", runs, hidden, "--plots", figs, "--force", "-q", "--device", "cpu")
    assert result.exit_code == ExitCode.WRITE_FAILED
    assert "spectra.png: is the input" in _one_error(result)
    assert _snapshot(tmp_path) == before
    # Without the collision the same run writes everything, trend figures included.
    hidden.unlink()
    assert _cli("report", runs, "--plots", figs, "-q", "--device", "cpu").exit_code == 0
    assert (figs / "trend_sigma.png").is_file() and (figs / "ck_2" / "spectra.png").is_file()


def test_report_of_a_log_protects_the_log_and_the_checkpoints_it_names(tmp_path: Path) -> None:
    model = nn.Sequential(spectral_norm(nn.Linear(4, 5)), nn.ReLU(), spectral_norm(nn.Linear(5, 2)))
    model(torch.randn(2, 4))
    log = tmp_path / "run.jsonl"
    SNMonitor(model, every=1, log=log, rules=QUIET_RULES).step(1)
    named = tmp_path / "named.json"  # a checkpoint path written into a record
    named.write_text("{}")
    record = json.loads(log.read_text())
    record["report"]["checkpoint"] = "named.json"
    log.write_text(log.read_text() + json.dumps(record) + "\n")
    before = _snapshot(tmp_path)
    for out in (log, named):
        result = _cli("report", log, "-o", out, "--format", "json", "--force", "-q")
        assert result.exit_code == ExitCode.WRITE_FAILED and "is the input" in _one_error(result), result.output
    assert _snapshot(tmp_path) == before


def test_check_junit_never_replaces_an_input_and_has_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index, shards = _sharded(tmp_path / "m")
    before = _snapshot(tmp_path)
    result = _cli("check", index, "--junit-xml", shards[1], "--force", "-q", "--device", "cpu")
    assert result.exit_code == ExitCode.WRITE_FAILED and "is the input" in _one_error(result)
    assert _snapshot(tmp_path) == before
    rules = tmp_path / "pyproject.toml"  # check reads its rules from here: an input too
    rules.write_text("[tool.sninspect.check]\nmax-sigma = 2.0\n")
    monkeypatch.chdir(tmp_path)
    result = _cli("check", index, "--junit-xml", "pyproject.toml", "--force", "-q", "--device", "cpu")
    assert result.exit_code == ExitCode.WRITE_FAILED and "is the input" in _one_error(result)
    assert rules.read_text() == "[tool.sninspect.check]\nmax-sigma = 2.0\n"
    junit = tmp_path / "junit.xml"
    junit.write_text("old")
    result = _cli("check", index, "--junit-xml", junit, "-q", "--device", "cpu")
    assert result.exit_code == ExitCode.WRITE_FAILED and "pass --force" in _one_error(result)
    assert junit.read_text() == "old"  # refused before the audit: nothing printed on stdout either
    assert result.stdout == ""
    result = _cli("check", index, "--junit-xml", junit, "--force", "-q", "--device", "cpu", "--max-sigma", "inf",
                  "--max-cos-error", "inf")
    assert result.exit_code in (0, 1) and junit.read_text().startswith("<?xml")


@pytest.mark.parametrize("command", [["strip"], ["apply"], ["convert", "--to", "parametrize"]])
def test_rewrites_never_replace_a_shard(tmp_path: Path, command: list[str]) -> None:
    index, shards = _sharded(tmp_path / "m")
    before = _snapshot(tmp_path)
    for out in shards:
        result = _cli(command[0], index, "-o", out, *command[1:], "--force")
        assert result.exit_code == ExitCode.WRITE_FAILED and "is the input" in _one_error(result), result.output
    assert _snapshot(tmp_path) == before


def _usernet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "usernet27.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(4, 5)), nn.ReLU(), "
        "nn.Linear(5, 1))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    sys.modules.pop("usernet27", None)
    module = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(4, 5)), nn.ReLU(), nn.Linear(5, 1))
    checkpoint = tmp_path / "d.pt"
    torch.save(module.state_dict(), checkpoint)
    return checkpoint


def test_graph_never_replaces_the_model_source_or_an_input_figure(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = _usernet(tmp_path, monkeypatch)
    figs = tmp_path / "figs"
    figs.mkdir()
    os.link(checkpoint, figs / "graph_depth.png")  # the checkpoint again, under a figure's name
    before = _snapshot(tmp_path)
    model = ["--model", "usernet27:build", "--input-shape", "4", "--no-lower", "-q"]
    result = _cli("graph", checkpoint, *model, "-o", tmp_path / "usernet27.py", "-f", "json", "--force")
    assert result.exit_code == ExitCode.WRITE_FAILED and "usernet27.py: is the input" in _one_error(result)
    result = _cli("graph", checkpoint, *model, "--plots", figs, "--force")
    assert result.exit_code == ExitCode.WRITE_FAILED and "graph_depth.png: is the input" in _one_error(result)
    assert {k: v for k, v in _snapshot(tmp_path).items() if "__pycache__" not in k} == before


def test_the_input_set_resolves_links_and_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index, shards = _sharded(tmp_path / "m")
    (tmp_path / "soft.safetensors").symlink_to(shards[0])
    os.link(shards[1], tmp_path / "hard.safetensors")
    monkeypatch.chdir(tmp_path)
    for given in ([index], [tmp_path / "m"], ["m/../m/model.safetensors.index.json"]):
        found = InputSet.of(given)
        for target in (shards[0], shards[1], "soft.safetensors", "hard.safetensors", "m/./" + shards[0].name):
            assert found.find(target) is not None, (given, target)
        assert found.find(tmp_path / "other.json") is None
        with pytest.raises(OutputError, match="is the input"):
            write_bytes("hard.safetensors", b"x", force=True, inputs=found)
    assert InputSet.of([tmp_path / "m" / shards[0].name]).find(shards[1]) is None  # a shard alone is one file


# ----------------------------------------------------------------------------------------------
# 6. Exit codes and one-line messages


def test_an_unreadable_input_is_exit_3_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mode 000 (simulated: the tests run as root, who reads anything): click's own readable check
    made it a 4-line usage error, exit 2; now the loader says it, exit 3."""
    checkpoint = tmp_path / "d.pt"
    torch.save(_state(), checkpoint)
    real_access, real_open = os.access, os.open

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        return False if os.fspath(path).endswith("d.pt") else real_access(path, mode, *args, **kwargs)

    def refuse(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path).endswith("d.pt"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(sninspect.io.files.os, "open", refuse)
    for command in (["report", checkpoint, "-q"], ["check", checkpoint, "-q"], ["layers", checkpoint],
                    ["strip", checkpoint, "-o", tmp_path / "o.pt"]):
        result = _cli(*command)
        assert result.exit_code == ExitCode.BAD_INPUT, (command, result.output)
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sninspect: error")]
        assert len(lines) == 1 and "permission denied" in lines[0], result.stderr
        assert "Usage:" not in result.output


def test_an_unlistable_folder_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()

    def refuse(self: Path) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", refuse)
    result = _cli("report", folder, "-q")
    assert result.exit_code == ExitCode.BAD_INPUT and "cannot list the folder" in _one_error(result)


def _run(*args: str | bytes | Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sninspect", *args], capture_output=True, env=env, timeout=300,
                          cwd=args[-1] if isinstance(args[-1], Path) and args[-1].is_dir() else None)


@pytest.mark.slow
def test_non_utf8_file_names_are_read_and_shown_escaped(tmp_path: Path) -> None:
    state = _state()
    folder = os.fsencode(tmp_path)
    torch.save(state, os.fsdecode(folder + b"/zip\xff.pt"))
    torch.save(state, os.fsdecode(folder + b"/legacy\xfe.pt"), _use_new_zipfile_serialization=False)
    save_file(state, os.fsdecode(folder + b"/st\xff.safetensors"))
    for name, shown in ((b"zip\xff.pt", b"zip\\udcff.pt"), (b"legacy\xfe.pt", b"legacy\\udcfe.pt"),
                        (b"st\xff.safetensors", b"st\\udcff.safetensors")):
        path = folder + b"/" + name
        done = _run("report", path, "-f", "json", "--device", "cpu", "-q")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["checkpoint"].encode().endswith(shown)
        assert len(json.loads(done.stdout)["layers"]) == 2
        layers = _run("layers", path)
        assert layers.returncode == 0 and shown in layers.stdout, layers.stderr
    stripped = _run("strip", folder + b"/zip\xff.pt", "-o", folder + b"/out\xff.safetensors")
    assert stripped.returncode == 0 and os.path.exists(folder + b"/out\xff.safetensors"), stripped.stderr


def test_a_surrogate_key_to_safetensors_is_named(tmp_path: Path) -> None:
    state = {f"x\udcff.{k}": v for k, v in _state().items()}
    torch.save(state, tmp_path / "sur.pt")
    result = _cli("strip", tmp_path / "sur.pt", "-o", tmp_path / "plain.safetensors")
    assert result.exit_code == ExitCode.WRITE_FAILED
    line = _one_error(result)
    assert "'x\\udcff.0.weight'" in line and "UTF-8" in line and "codec" not in line and ".pt file" in line
    assert not (tmp_path / "plain.safetensors").exists()
    assert _cli("strip", tmp_path / "sur.pt", "-o", tmp_path / "plain.pt").exit_code == 0


@pytest.mark.slow
def test_a_wrong_input_shape_is_one_line_without_torch_logging(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = _usernet(tmp_path, monkeypatch)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "sninspect", "graph", str(checkpoint), "--model", "usernet27:build",
                           "--input-shape", "3", "--no-lower", "-q"], capture_output=True, env=env, timeout=300,
                          cwd=tmp_path)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == ExitCode.USAGE and len(lines) == 1, done.stderr.decode()
    assert "torch.export failed at input 1x3" in lines[0]


# ----------------------------------------------------------------------------------------------
# The monitor's log


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Linear(4, 5)), nn.ReLU(), spectral_norm(nn.Linear(5, 2)))
    model(torch.randn(2, 4))
    return model


def test_the_monitor_refuses_a_bad_log_when_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    target = tmp_path / "real.jsonl"
    target.write_text("")
    (tmp_path / "link.jsonl").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.jsonl")
    cases = {tmp_path / "link.jsonl": "is a symbolic link", tmp_path / "fifo.jsonl": "named pipe",
             tmp_path / "no" / "run.jsonl": "does not exist", tmp_path: "is a folder"}
    for log, words in cases.items():
        with pytest.raises(OutputError, match=words):
            SNMonitor(model, every=1, log=log)
    real_access = os.access
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    (readonly / "old.jsonl").write_text("")

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:  # root writes anywhere: simulate
        return False if "readonly" in os.fspath(path) and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(sninspect.monitor.os, "access", access)
    with pytest.raises(OutputError, match="folder .*readonly is not writable"):
        SNMonitor(model, every=1, log=readonly / "new.jsonl")
    with pytest.raises(OutputError, match="old.jsonl: is not writable"):
        SNMonitor(model, every=1, log=readonly / "old.jsonl")
    assert target.read_text() == "" and sorted(p.name for p in readonly.iterdir()) == ["old.jsonl"]


def _full_disk(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """``os.write`` in the writer puts ``after`` bytes on disk, then fails with ENOSPC."""
    real_write = os.write
    left = [after]

    def write(fd: int, data: bytes) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done = real_write(fd, data[: left[0]])
        left[0] -= done
        return done

    monkeypatch.setattr(sninspect.io.write.os, "write", write)


def test_a_full_disk_mid_record_is_cut_back_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "run.jsonl"
    monitor = SNMonitor(_model(), every=1, log=log, rules=QUIET_RULES)
    monitor.step(1)
    before = log.read_bytes()
    _full_disk(monkeypatch, after=100)
    with pytest.raises(OutputError, match=r"No space left on device \(free some space or write somewhere else; "
                                          r"the 100 bytes written were cut off again: the log is as it was\)"):
        monitor.step(2)
    assert log.read_bytes() == before
    _full_disk(monkeypatch, after=0)
    with pytest.raises(OutputError, match="nothing was written"):
        monitor.step(3)
    assert log.read_bytes() == before


def test_a_torn_record_that_cannot_be_cut_is_said_with_its_size(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "run.jsonl"
    append_line(log, '{"sninspect_monitor": 1}')
    before = log.read_bytes()
    _full_disk(monkeypatch, after=10)

    def no_truncate(fd: int, size: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(sninspect.io.write.os, "ftruncate", no_truncate)
    with pytest.raises(OutputError, match="a torn record of 10 bytes remains in the log"):
        append_line(log, '{"sninspect_monitor": 1, "step": 2}')
    assert log.read_bytes() == before + b'{"sninspec'
    monkeypatch.undo()
    append_line(log, '{"sninspect_monitor": 1, "step": 3}')  # closes the torn line first
    assert log.read_bytes().splitlines()[1:] == [b'{"sninspec', b'{"sninspect_monitor": 1, "step": 3}']
