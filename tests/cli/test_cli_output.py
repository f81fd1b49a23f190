"""What ``report`` writes and how it reads (issue 12): files picked by extension and never replaced
without ``--force``, tables that lose no value, the layer order said, no bound from σ̂ ≤ 0, filters
that match nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli
from rich.cells import cell_len
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import spectral_norm

import sninspect
from sninspect.errors import ExitCode
from sninspect.render.numbers import fmt
from sninspect.render.terminal import table_text


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3)), nn.ReLU(), nn.Flatten(), spectral_norm(nn.Linear(16, 1)))
    model(torch.randn(2, 3, 4, 4))
    path = tmp_path / "d.pt"
    torch.save(model.state_dict(), path)
    return path


def report(*args: str | Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return cli("report", *args, "-q", env=env)


def error_line(result) -> str:  # type: ignore[no-untyped-def]
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------------------------
# -o FILE: the extension picks the format; --format may agree or is refused


@pytest.mark.parametrize(("suffix", "looks_like"), [
    (".json", lambda t: json.loads(t)["layers"][0]["name"] == "0.weight"),
    (".csv", lambda t: t.startswith("checkpoint,name,model,dialect")),
    (".md", lambda t: "| layer | dialect |" in t and "**Summary**" in t),
    (".txt", lambda t: "sninspect · " in t and "╭─ summary" in t),
    (".HTML", lambda t: t.startswith("<!DOCTYPE html>")),
])
def test_output_extension_picks_the_format(checkpoint: Path, tmp_path: Path, suffix: str, looks_like) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / f"r{suffix}"
    result = report(checkpoint, "-o", out)
    assert result.exit_code == 0, result.output
    assert looks_like(out.read_text(encoding="utf-8")), out.read_text(encoding="utf-8")[:300]


def test_format_and_extension_must_agree(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    result = report(checkpoint, "-o", out, "--format", "csv")
    assert result.exit_code == ExitCode.USAGE and "names a json file but --format is csv" in error_line(result)
    assert not out.exists()
    unknown = tmp_path / "x.out"
    result = report(checkpoint, "-o", unknown)
    assert result.exit_code == ExitCode.USAGE and "cannot tell the format" in error_line(result)
    assert not unknown.exists()
    # An explicit --format settles an unknown extension, and agreeing with a known one is fine.
    assert report(checkpoint, "-o", unknown, "--format", "json").exit_code == 0
    assert json.loads(unknown.read_text())["layers"]
    assert report(checkpoint, "-o", tmp_path / "y.md", "-f", "markdown").exit_code == 0


def test_existing_output_needs_force(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("keep me")
    result = report(checkpoint, "-o", out)
    assert result.exit_code == ExitCode.WRITE_FAILED and "pass --force" in error_line(result)
    assert out.read_text() == "keep me"
    assert report(checkpoint, "-o", out, "--force").exit_code == 0
    assert json.loads(out.read_text())["layers"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt", "r.json"]  # no temporary file left


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc (no files can be created there)")
def test_unwritable_target_is_one_clean_line(checkpoint: Path) -> None:
    result = report(checkpoint, "-o", "/proc/x.json")
    assert result.exit_code == ExitCode.WRITE_FAILED, result.output
    line = error_line(result)
    assert line.startswith("sninspect: error: /proc/x.json: ") and "internal error" not in line


def test_plots_go_through_the_writer_and_need_force(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "figs"
    assert report(checkpoint, "--plots", folder).exit_code == 0
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"sigma.png", "cos_error.png", "spectra.png", "lipschitz_depth.png"} <= set(first)
    assert not [name for name in first if name.endswith(".tmp")]
    result = report(checkpoint, "--plots", folder)
    assert result.exit_code == ExitCode.WRITE_FAILED
    line = error_line(result)
    assert "sigma.png" in line and "lipschitz_depth.png" in line and "--force" in line  # every one named
    assert report(checkpoint, "--plots", folder, "--force").exit_code == 0
    assert set(p.name for p in folder.iterdir()) == set(first)


# ----------------------------------------------------------------------------------------------
# Order and meaning


def test_safetensors_layers_in_natural_order_and_said(tmp_path: Path) -> None:
    """safetensors stores ``layer.10`` before ``layer.2``; the report puts 2 first and says so."""
    torch.manual_seed(1)
    layers = {i: spectral_norm(nn.Linear(6, 6)) for i in (0, 2, 10, 11)}
    for layer in layers.values():
        layer(torch.randn(3, 6))
    state = {f"layer.{i}.{k}": v.detach().contiguous() for i, m in layers.items() for k, v in m.state_dict().items()}
    save_file(state, tmp_path / "m.safetensors")
    torch.save(state, tmp_path / "m.pt")
    stored = [k for k in json.loads((tmp_path / "m.safetensors").read_bytes()[8:][
        :int.from_bytes((tmp_path / "m.safetensors").read_bytes()[:8], "little")]) if k.endswith("weight_orig")]
    assert stored == sorted(stored) and stored.index("layer.10.weight_orig") < stored.index("layer.2.weight_orig")
    data = json.loads(report(tmp_path / "m.safetensors", "-f", "json").stdout)
    assert data["layer_order"] == "natural"
    assert [la["name"] for la in data["layers"]] == [f"layer.{i}.weight" for i in (0, 2, 10, 11)]
    assert data["lipschitz"]["layers"] == [f"layer.{i}.weight" for i in (0, 2, 10, 11)]
    assert json.loads(report(tmp_path / "m.pt", "-f", "json").stdout)["layer_order"] == "stored"
    table = report(tmp_path / "m.safetensors", env={"COLUMNS": "160"}).stdout
    assert "layers in natural name order" in table
    assert "layers in natural name order" in report(tmp_path / "m.safetensors", "-f", "markdown").stdout


def test_no_bound_from_a_non_positive_sigma_hat(tmp_path: Path) -> None:
    """u flipped: σ̂ = u·(W v) = −σ1 < 0, so σ_eff = −1 and any product through it bounds nothing."""
    torch.manual_seed(7)
    w = torch.randn(4, 5, dtype=torch.float64)
    left, s, right = np.linalg.svd(w.numpy())
    state = {"fc.weight_orig": w, "fc.weight_u": -torch.from_numpy(left[:, 0]),
             "fc.weight_v": torch.from_numpy(right[0]),
             "out.weight_orig": torch.eye(3, 4, dtype=torch.float64),
             "out.weight_u": torch.tensor([1.0, 0, 0], dtype=torch.float64),
             "out.weight_v": torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)}
    torch.save(state, tmp_path / "neg.pt")
    data = json.loads(report(tmp_path / "neg.pt", "-f", "json").stdout)
    fc = next(la for la in data["layers"] if la["name"] == "fc.weight")
    assert fc["sigma_estimate"] == pytest.approx(-s[0], rel=1e-12)  # the oracle: −σ1 from numpy's SVD
    assert data["lipschitz"]["matrix_product"] is None and data["lipschitz"]["operator_product"] is None
    assert "fc.weight" in data["lipschitz"]["unavailable"] and "σ̂ ≤ 0" in data["lipschitz"]["unavailable"]
    table = report(tmp_path / "neg.pt", env={"COLUMNS": "160"}).stdout
    line = next(line for line in table.splitlines() if "network bound" in line)
    assert "network bound: none: σ̂ ≤ 0 in fc.weight" in line and not re.search(r"product -?\d", line)
    md = report(tmp_path / "neg.pt", "-f", "markdown").stdout
    assert "network bound: none: σ̂ ≤ 0 in fc.weight" in md


def test_filter_that_leaves_nothing_is_a_usage_error(checkpoint: Path) -> None:
    result = report(checkpoint, "--include", "^nothing")
    assert result.exit_code == ExitCode.USAGE
    line = error_line(result)
    assert "--include '^nothing' leaves no layer" in line and "0.weight" in line
    result = report(checkpoint, "--exclude", "weight")
    assert result.exit_code == ExitCode.USAGE and "--exclude 'weight'" in error_line(result)
    kept = json.loads(report(checkpoint, "--include", "^3", "-f", "json").stdout)
    assert [la["name"] for la in kept["layers"]] == ["3.weight"]


# ----------------------------------------------------------------------------------------------
# Tables that never lose a value


def _long_names_report(tmp_path: Path) -> sninspect.Report:
    torch.manual_seed(3)
    model = nn.Module()
    model.discriminator_feature_extractor_block = nn.Sequential(spectral_norm(nn.Linear(5, 7)),
                                                                spectral_norm(nn.Linear(7, 3)))
    model.discriminator_feature_extractor_block(torch.randn(2, 5))
    state = dict(model.state_dict())
    state["broken.weight_orig"] = torch.full((3, 3), float("nan"))
    state["broken.weight_u"] = torch.ones(3) / 3**0.5
    state["broken.weight_v"] = torch.ones(3) / 3**0.5
    torch.save(state, tmp_path / "long.pt")
    return sninspect.analyze(tmp_path / "long.pt", device="cpu")


@pytest.mark.parametrize("width", [40, 50, 60, 80, 100, 160])
def test_table_fits_without_losing_a_value(tmp_path: Path, width: int) -> None:
    result = _long_names_report(tmp_path)
    text = table_text(result, width=width)
    lines = text.splitlines()
    assert all(cell_len(line) <= width for line in lines), width  # σ̂ is two code points, one cell
    assert not [line for line in lines if line != line.rstrip()]  # no trailing spaces
    table = lines[: next(i for i, line in enumerate(lines) if line.startswith("╭"))]
    rule = next(i for i, line in enumerate(table) if "━━━" in line)
    rows = [line.split()[0] for line in table[rule + 1:] if line.strip() and not line.startswith(("torch", "hidden"))]
    for la in result.layers:  # a name folded onto several lines is still all there, in order
        assert la.name in "".join(rows), (la.name, rows)
    # every number shown is whole, or visibly cut
    header = table[rule - 1]
    shown = [t for t in ("σ exact", "σ eff", "cos err u", "op bound") if f" {t} " in f"{header} "]
    assert "σ eff" in shown and header.split()[0] == "layer"
    titles = {"layer", "dialect", "kind", "shape", "σ exact", "σ̂", "rel err", "σ eff", "cos err u", "cos err v",
              "gap cos u", "gap cos v", "verdict",
              "σ2/σ1", "op bound"}
    assert set(re.split(r"\s{2,}", header.strip())) <= titles, header  # no header cut either
    values = {"σ exact": "sigma_exact", "σ eff": "sigma_effective", "cos err u": "cos_error_u",
              "op bound": "operator_bound"}
    body = "\n".join(table[rule + 1:])
    for la in result.layers:  # every number shown is whole
        for title in shown:
            value = getattr(la, values[title])
            if value is not None:
                assert f" {fmt(value, 3 if title == 'cos err u' else 6)}" in body, (title, value)
    # hidden columns are named on one line, and only when something was hidden
    starts = [i for i, line in enumerate(lines) if line.startswith("hidden at")]
    assert len(starts) <= 1 and (width <= 80) <= bool(starts)  # one (wrapped) line, when columns went
    hidden = []
    if starts:
        end = next(i for i in range(starts[0], len(lines)) if lines[i].endswith("them)"))
        hidden = [" ".join(lines[starts[0]:end + 1])]
    said = hidden[0].split(": ", 1)[1].split(" (-f")[0].split(", ") if hidden else []
    assert set(re.split(r"\s{2,}", header.strip())) | set(said) == titles  # a column is shown, or said hidden
    # the broken layer's reason is in its own row, not in a σ column
    row = next(line for line in lines if "broken.weight" in line and "not audited" not in line)
    assert "NaN" not in row and "not audited" in text
    reason = next(line for line in lines if "not audited" in line)
    assert reason.lstrip().startswith("↳ not audited")
    # the summary panel is as wide as the table, not wider
    panel_top = next(line for line in lines if line.startswith("╭"))
    assert len(panel_top) <= max(len(table[rule]) + 2, 40)


def test_pipe_uses_columns(checkpoint: Path) -> None:
    for columns in ("70", "120"):
        text = report(checkpoint, env={"COLUMNS": columns}).stdout
        assert max(cell_len(line) for line in text.splitlines()) <= int(columns)
    wide = report(checkpoint, env={"COLUMNS": ""}).stdout  # no COLUMNS: a wide page, nothing hidden
    assert "hidden at" not in wide and "σ2/σ1" in wide


def test_html_and_markdown_carry_the_terminal_verdict() -> None:
    """The summary panel's lines (worst σ_eff, layers above 1, bound, validity, notes) in all three."""
    from html import escape

    from sninspect.render.html import to_html
    from sninspect.render.markdown import reports_markdown
    from sninspect.render.summary import verdict_lines

    sample = Path(__file__).resolve().parents[2] / "sample_checkpoints" / "biggan_style_sn.pt"
    result = sninspect.analyze(sample, device="cpu")
    lines = [line for line, _ in verdict_lines(result)]
    assert any(line.startswith("worst σ_eff: ") for line in lines)
    assert any(line.startswith("network bound: matrix product") for line in lines)
    assert any(line.startswith("note: eval runs one fresh power step from u0") for line in lines)
    page, md = to_html(result), reports_markdown([result])
    terminal = re.sub(r"\s+", " ", table_text(result, width=400).replace("│", " "))
    for line in lines:
        assert escape(line) in page and f"- {line}" in md and line in terminal, line
