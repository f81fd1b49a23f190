"""Golden outputs: what a person reads, pinned byte for byte (numbers in JSON and CSV to 7 significant
digits, float noise below 1e-12 as 0).

Regenerate on purpose only: ``python -m pytest tests/render/test_golden.py --update-golden``, then read the
diff before committing it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from sninspect.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
SAMPLES = ("dcgan_sn_torch.pt", "biggan_style_sn.pt", "mlp_sn_parametrize.safetensors", "plain_discriminator.pt")

runner = CliRunner()


NOISE = 1e-12
"""Below this a sample's number is float noise (a relative error or cosine error of a few ulps: 1.97e-16
on one machine, 3.94e-16 on another); pinned as 0."""


def _round(value: Any) -> Any:
    """Floats to 7 significant digits, and noise-sized ones to 0: the last bits of a float64 reduction
    differ across BLAS builds and machines (the 8th digit of a float32 weight's relative error moved)."""
    if isinstance(value, float):
        return 0.0 if abs(value) < NOISE else float(f"{value:.7g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def _normalise(text: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(_round(json.loads(text)), indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":  # full float64 reprs: last bits may differ across BLAS builds, as in JSON
        rows = list(csv.reader(io.StringIO(text)))
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([[_cell(c) for c in row] for row in rows])
        return out.getvalue()
    return text


def _cell(text: str) -> str:
    try:
        return f"{_round(float(text)):.7g}" if any(ch.isdigit() for ch in text) and "x" not in text else text
    except ValueError:
        return text


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, cwd: Path = ROOT, columns: int = 160) -> str:
    monkeypatch.chdir(cwd)
    result = runner.invoke(app, args, env={"COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code in (0, 1), (args, result.output)
    return result.stdout


def _compare(name: str, text: str, request: pytest.FixtureRequest) -> None:
    path = GOLDEN / name
    if request.config.getoption("--update-golden"):
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"{path.name} missing: run pytest tests/render/test_golden.py --update-golden"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from the golden file (--update-golden if intended)"


def _stem(sample: str) -> str:
    return re.sub(r"\W", "_", sample.rsplit(".", 1)[0])


FORMATS = {"table": "txt", "json": "json", "csv": "csv", "markdown": "md"}


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_report(sample: str, fmt: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    text = _cli(["report", f"sample_checkpoints/{sample}", "--format", fmt, "--device", "cpu", "-q"], monkeypatch)
    _compare(f"report_{_stem(sample)}.{FORMATS[fmt]}", _normalise(text, fmt), request)


@pytest.mark.parametrize("sample", SAMPLES)
def test_report_narrow(sample: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """COLUMNS=80 through a pipe: whole columns hidden (and named), every line within 80 columns."""
    text = _cli(["report", f"sample_checkpoints/{sample}", "--device", "cpu", "-q"], monkeypatch, columns=80)
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    _compare(f"report_{_stem(sample)}_80.txt", text, request)


@pytest.mark.parametrize("fmt", ["table", "json", "markdown"])
def test_report_run(fmt: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
                    tmp_path: Path) -> None:
    """Two checkpoints of one model (the same layer set): the run view, ordered by modification time
    (fixed here: a clone sets its own)."""
    names = ["D_first.pt", "D_second.pt"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes((ROOT / "sample_checkpoints" / "biggan_style_sn.pt").read_bytes())
        os.utime(tmp_path / name, (1_700_000_000 + 100 * i, 1_700_000_000 + 100 * i))
    text = _cli(["report", *names, "--format", fmt, "--device", "cpu", "-q"], monkeypatch, tmp_path)
    _compare(f"run.{FORMATS[fmt]}", _normalise(text, fmt), request)
    if fmt == "table":  # and through a pipe 80 columns wide: whole columns hidden and named
        text = _cli(["report", *names, "--device", "cpu", "-q"], monkeypatch, tmp_path, columns=80)
        assert max(cell_len(line) for line in text.splitlines()) <= 80
        _compare("run_80.txt", text, request)


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_report_unrelated(fmt: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Two checkpoints of different models: each reported on its own, with the reason; no run."""
    args = ["report", "sample_checkpoints/dcgan_sn_torch.pt", "sample_checkpoints/biggan_style_sn.pt"]
    text = _cli([*args, "--format", fmt, "--device", "cpu", "-q"], monkeypatch, columns=80)
    if fmt == "table":
        assert max(cell_len(line) for line in text.splitlines()) <= 80
    _compare(f"unrelated.{FORMATS[fmt]}", _normalise(text, fmt), request)


CHECK_FORMATS = {"text": "txt", "json": "json", "github": "github"}


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("fmt", list(CHECK_FORMATS))
def test_check(sample: str, fmt: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Default rules: the three SN samples pass (empty output), the plain one fails (no SN)."""
    text = _cli(["check", f"sample_checkpoints/{sample}", "--format", fmt, "--device", "cpu", "-q"], monkeypatch)
    _compare(f"check_{_stem(sample)}.{CHECK_FORMATS[fmt]}", _normalise(text, fmt), request)


def test_check_strict_and_junit(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    """The old strict rules (raw cosine ≤ 0.01, σ_eff ≤ 1.05) on every sample: GitHub commands and
    the JUnit report, which names every SN layer."""
    junit = tmp_path / "check.xml"
    args = ["check", *(f"sample_checkpoints/{s}" for s in SAMPLES), "--strict-cos", "--max-cos-error", "0.01",
            "--max-sigma", "1.05", "--format", "github", "--junit-xml", str(junit), "--device", "cpu", "-q"]
    _compare("check_strict.github", _cli(args, monkeypatch), request)
    _compare("check_strict.junit.xml", junit.read_text(encoding="utf-8"), request)


@pytest.mark.parametrize("sample", SAMPLES)
def test_layers(sample: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    _compare(f"layers_{_stem(sample)}.txt", _cli(["layers", f"sample_checkpoints/{sample}"], monkeypatch), request)


@pytest.mark.parametrize(("command", "sample", "extra"), [
    ("strip", "dcgan_sn_torch.pt", []),
    ("strip", "mlp_sn_parametrize.safetensors", []),
    ("strip", "biggan_style_sn.pt", []),
    ("apply", "plain_discriminator.pt", []),
    ("convert", "dcgan_sn_torch.pt", ["--to", "parametrize"]),
])
def test_rewrite_plan(command: str, sample: str, extra: list[str], monkeypatch: pytest.MonkeyPatch,
                      request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = tmp_path / f"out{Path(sample).suffix}"
    text = _cli([command, f"sample_checkpoints/{sample}", "-o", str(out), "--dry-run", *extra], monkeypatch)
    assert not out.exists()
    _compare(f"{command}_{_stem(sample)}.txt", text.replace(str(out), "OUT"), request)
