"""The command line through typer's CliRunner: exit codes, one-line errors, every format."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import cli
from torch import nn
from torch.nn.utils import spectral_norm

from sninspect.cli.main import app
from sninspect.errors import ExitCode


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3)), nn.ReLU(), nn.Flatten(), spectral_norm(nn.Linear(16, 1)))
    model(torch.randn(2, 3, 4, 4))
    path = tmp_path / "d.pt"
    torch.save({"netD": model.state_dict(), "step": 3}, path)
    return path


def one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    """stderr of a failed run: exactly one line, no traceback."""
    err = result.stderr.strip()
    assert "Traceback" not in result.output and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def _commands() -> list[str]:
    return [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]


def test_every_command_has_help_with_an_example() -> None:
    """``-h`` and ``--help`` alike; an ``Examples:`` block that runs this very command; a usage line
    a person can read (CHECKPOINT, not a Python type)."""
    names = _commands()
    assert {"report", "check", "layers", "strip", "apply", "convert"} <= set(names)
    for name in names:
        long, short = cli(name, "--help"), cli(name, "-h")
        assert long.exit_code == 0 and short.exit_code == 0, name
        assert long.output == short.output, name
        lines = long.output.splitlines()
        assert "Examples:" in [line.strip() for line in lines], name
        examples = [line.strip() for line in lines[[ln.strip() for ln in lines].index("Examples:") + 1:]]
        assert examples and all(e.startswith(f"sninspect {name} ") for e in examples if e), (name, examples)
        usage = next(line for line in lines if line.startswith("Usage:"))
        assert "<" not in usage and "list[" not in usage and "CHECKPOINT" in usage, usage


def test_device_and_dtype_choices_are_listed_and_checked(checkpoint: Path) -> None:
    text = cli("report", "--help", env={"COLUMNS": "200"}).output
    assert "[auto|cpu|cuda|cuda:N]" in text and "<float64|float32>" in text
    bad = cli("report", checkpoint, "--device", "tpu")
    assert bad.exit_code == ExitCode.USAGE  # one check, the library's, with its one line
    assert one_error_line(bad) == "sninspect: error: --device 'tpu': expected auto, cpu, cuda or cuda:N"
    bad = cli("report", checkpoint, "--dtype", "float16")
    assert bad.exit_code == ExitCode.USAGE
    if not torch.cuda.is_available():  # a well-formed name whose device is absent: the library's one check too
        result = cli("report", checkpoint, "--device", "cuda:1")
        assert result.exit_code == ExitCode.USAGE and "CUDA is not available" in one_error_line(result)
    ok = cli("report", checkpoint, "--dtype", "float32", "-f", "json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["dtype"] == "float32"


def test_report_table_json_csv_markdown(checkpoint: Path, tmp_path: Path) -> None:
    table = cli("report", checkpoint)
    assert table.exit_code == 0, table.output
    assert "0.weight" in table.output and "summary" in table.output and "network bound" in table.output
    result = cli("report", checkpoint, "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [layer["name"] for layer in data["layers"]] == ["0.weight", "3.weight"]
    assert data["device"] == "cpu"  # cli() audits on the CPU unless told otherwise
    csv = cli("report", checkpoint, "-f", "csv")
    assert csv.stdout.splitlines()[0].startswith("checkpoint,name,model,dialect")
    md = cli("report", checkpoint, "-f", "markdown")
    assert "| layer | dialect |" in md.stdout
    out = tmp_path / "r.json"
    written = cli("report", checkpoint, "-f", "json", "-o", out)
    assert written.exit_code == 0 and json.loads(out.read_text())["layers"]


def test_layers_listing(checkpoint: Path) -> None:
    result = cli("layers", checkpoint)
    assert result.exit_code == 0
    assert "torch" in result.stdout and "weight_u" in result.stdout


def test_report_refuses_to_write_over_its_input(checkpoint: Path) -> None:
    before = checkpoint.read_bytes()
    result = cli("report", checkpoint, "-f", "json", "-o", checkpoint)
    assert result.exit_code == ExitCode.WRITE_FAILED
    assert "is the input" in one_error_line(result)
    assert checkpoint.read_bytes() == before


class RunsCode:
    """A pickle that, if ever unpickled, creates ``sentinel``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "garbage", "truncated", "pickle"])
def test_bad_input_is_one_line_and_exit_3(case: str, tmp_path: Path, checkpoint: Path) -> None:
    path = tmp_path / f"{case}.pt"
    sentinel = tmp_path / "code-ran"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(os.urandom(4096))
    elif case == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:700])
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"w": RunsCode(sentinel)}))
    for command in ("report", "layers"):
        result = cli(command, path)
        assert result.exit_code == ExitCode.BAD_INPUT, (case, result.output)
        assert str(path.name) in one_error_line(result)
    assert not sentinel.exists()


def test_usage_errors_exit_2(checkpoint: Path) -> None:
    result = cli("report", checkpoint, "--key", "nope")
    assert result.exit_code == ExitCode.USAGE
    assert "nope" in one_error_line(result)
    if not torch.cuda.is_available():
        result = cli("report", checkpoint, "--device", "cuda")
        assert result.exit_code == ExitCode.USAGE and "CUDA is not available" in one_error_line(result)
    result = cli("report", checkpoint, "--include", "(")
    assert result.exit_code == ExitCode.USAGE
    assert cli("report", checkpoint, "--format", "xml").exit_code == ExitCode.USAGE


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("sninspect ")
