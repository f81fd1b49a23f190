"""The default width of the certified conv bounds (audit/bounds/plan.py): the plan, the certified
brackets it gives in the report, the fields and the summary line that says what was reached."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sninspect
from sninspect.audit.bounds import plan as bound_plan
from sninspect.audit.bounds.plan import (
    CHEAP,
    LADDER,
    BoundTask,
    half_grid_count,
    plan_widths,
    seconds_at,
    spectra_work,
)
from sninspect.cli.main import app
from sninspect.linalg.conv_bounds import certification_factor
from sninspect.linalg.symbol import half_grid
from sninspect.render.numbers import percent
from sninspect.render.summary import widths_text
from sninspect.results.report import Report, report_from_dict

CHANNELS = [(3, 4), (4, 8), (8, 16), (16, 24), (24, 24)]
"""A plain conv chain (c_in, c_out), 3×3: costs spread over two orders of magnitude."""


def fft_sup(weight: torch.Tensor, grid: int = 256) -> float:
    """max over a fine grid of σ_max(K̂(ω)) (numpy FFT + SVD): a lower bound of σ*, and σ* is at most
    this times the grid's certification factor (1.00015 for 3×3 at 256)."""
    symbol = np.fft.fft2(weight.numpy(), s=(grid, grid))  # (c_out, c_in, N, N)
    mats = symbol.transpose(2, 3, 0, 1).reshape(-1, *weight.shape[:2])
    return float(np.linalg.svd(mats, compute_uv=False)[:, 0].max())


def plain_chain(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    state = {f"net.{i}.weight": torch.randn(o, c, 3, 3, generator=gen, dtype=torch.float64) / (3 * c) ** 0.5
             for i, (c, o) in enumerate(CHANNELS)}
    state["net.9.weight"] = torch.randn(2, 24 * 4, generator=gen, dtype=torch.float64)  # a linear head
    path = folder / "chain.pt"
    torch.save(state, path)
    return path, state


@pytest.fixture
def tight_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget that buys 1% for the narrow kernels only: no start-up allowance, and a ratio that, on
    this chain's spectra, leaves the two widest kernels at coarser rungs (checked in the tests)."""
    monkeypatch.setattr(bound_plan, "START_WORK", 0.0)
    monkeypatch.setattr(bound_plan, "BUDGET_RATIO", 10.0)


@pytest.mark.parametrize("grid", [(8, 8), (11, 11), (32, 32), (5,), (6,), (6, 7), (4, 4, 3)])
def test_half_grid_count_is_the_grids(grid: tuple[int, ...]) -> None:
    assert half_grid_count(grid) == half_grid(grid, torch.device("cpu")).shape[0]


def test_plan_refines_narrow_kernels_first_within_the_budget() -> None:
    tasks = [BoundTask(f"l{n}", (n, n, 3, 3)) for n in (16, 64, 256, 1024, 512)]
    tasks.append(BoundTask("free", (64, 64, 3, 3), free_width=0.0056))
    tasks.append(BoundTask("twice", (512, 512, 3, 3), bounds=2))  # σ numbers from the bound: no cheap rung
    spectra = sum(spectra_work(t.shape) for t in tasks)
    plan = plan_widths(tasks, spectra)
    assert plan == plan_widths(tasks, spectra)  # shapes only: the same every time
    assert plan.spent <= plan.budget
    assert set(plan.widths.values()) <= {*LADDER, CHEAP}
    assert plan.widths["free"] == LADDER[0]  # free at the target
    assert plan.widths["twice"] <= LADDER[-1]
    by_width = [plan.widths[f"l{n}"] for n in (16, 64, 256, 512, 1024)]
    assert by_width == sorted(by_width) and by_width[0] == LADDER[0] and by_width[-1] == CHEAP
    # what was spent is the work of the rungs chosen beyond the widest
    assert plan.spent == pytest.approx(sum(t.work(plan.widths[t.key]) - t.work(t.rungs(LADDER)[-1]) for t in tasks))
    everything = plan_widths(tasks, spectra, ratio=1e6)
    assert set(everything.widths.values()) == {LADDER[0]}
    nothing = plan_widths(tasks, spectra, ratio=0.0)
    assert {k: w for k, w in nothing.widths.items() if k not in ("free", "twice")} == dict.fromkeys(
        [t.key for t in tasks if t.key not in ("free", "twice")], CHEAP)
    assert nothing.widths["free"] == LADDER[0] and nothing.widths["twice"] == LADDER[-1] and nothing.spent == 0.0


def test_the_cheap_rung_is_the_cheapest_and_costs_about_a_spectrum() -> None:
    """The plan's model of the cheap rung: below every frequency rung (a tenth of the coarsest at n = 1024),
    of the order of the layer's own exact spectrum."""
    for shape in [(64, 64, 3, 3), (256, 128, 3, 3), (1024, 1024, 3, 3), (768, 512, 3, 3), (64, 32, 5, 5)]:
        cheap = bound_plan.bound_work(shape, CHEAP)
        assert 0.0 < cheap < bound_plan.bound_work(shape, LADDER[-1])
        assert 0.3 < cheap / spectra_work(shape) < 3.0
    big = (1024, 1024, 3, 3)
    assert bound_plan.bound_work(big, CHEAP) < 0.1 * bound_plan.bound_work(big, LADDER[-1])


def test_bound_work_grows_with_the_grid_and_n_cubed() -> None:
    works = [bound_plan.bound_work((64, 64, 3, 3), w) for w in LADDER]
    assert works == sorted(works, reverse=True)
    assert bound_plan.bound_work((64, 64, 1, 1), 0.01) == 0.0
    ratio = bound_plan.bound_work((512, 512, 3, 3), 0.01) / bound_plan.bound_work((256, 256, 3, 3), 0.01)
    assert 7.5 < ratio < 8.0  # n³ with a little n² (forming G)


def test_seconds_estimate_paces_cheap_layers_by_the_largest_frequency_layer() -> None:
    """A layer on the cheap rung: its missing work at the pace (seconds per operation) of the layer with
    the most work on a frequency rung, not its own (GEMM and copies, another pace than Cholesky)."""
    tasks = [BoundTask("a", (64, 64, 3, 3)), BoundTask("b", (256, 256, 3, 3)), BoundTask("c", (512, 512, 3, 3))]
    widths = {"a": 0.01, "b": 0.05, "c": CHEAP}
    seconds = {"a": 1.0, "b": 2.0, "c": 0.5}
    pace = 2.0 / tasks[1].work(0.05)
    expected = 10.0 + 2.0 * (tasks[1].work(0.01) / tasks[1].work(0.05) - 1.0)
    expected += (tasks[2].work(0.01) - tasks[2].work(CHEAP)) * pace
    assert seconds_at(tasks, widths, seconds, 10.0, 0.01) == pytest.approx(expected)
    alone = seconds_at(tasks[2:], {"c": CHEAP}, {"c": 0.5}, 10.0, 0.01)  # no frequency layer: its own pace
    assert alone == pytest.approx(10.0 + 0.5 * (tasks[2].work(0.01) / tasks[2].work(CHEAP) - 1.0))


def test_seconds_estimate_scales_the_measured_layers() -> None:
    tasks = [BoundTask("a", (64, 64, 3, 3)), BoundTask("b", (256, 256, 3, 3))]
    widths = {"a": 0.01, "b": 0.2}
    factor = tasks[1].work(0.01) / tasks[1].work(0.2)
    assert seconds_at(tasks, widths, {"a": 1.0, "b": 2.0}, 10.0, 0.01) == pytest.approx(10.0 + 2.0 * (factor - 1))
    assert seconds_at(tasks, dict.fromkeys("ab", 0.01), {"a": 1.0, "b": 2.0}, 10.0, 0.01) is None


def test_default_widths_certify_the_fft_truth(tmp_path: Path, tight_budget: None) -> None:
    """Every default-width bound is a certified bracket of σ*: upper ≥ the fine-grid maximum (≤ σ*),
    lower ≤ that maximum's certified multiple (≥ σ*); the width field is upper/lower − 1, at least the
    actual (upper − lower)/upper; some layers at 1%, the widest on the cheap rung (no frequency grid)."""
    path, state = plain_chain(tmp_path)
    report = sninspect.analyze(path, device="cpu")
    convs = [la for la in report.layers if la.kind == "conv2d"]
    assert len(convs) == len(CHANNELS)
    widths = [la.operator_width for la in convs]
    assert all(w is not None for w in widths)
    assert min(widths) <= 0.01 and max(widths) > 0.02  # the budget left the wide kernels coarse
    for la in convs:
        assert la.operator_bound is not None and la.operator_lower is not None and la.operator_width is not None
        truth = fft_sup(state[la.name])
        assert truth <= la.operator_bound
        assert la.operator_lower <= truth * certification_factor((3, 3), (256, 256)) * (1 + 1e-12)
        assert la.operator_width == la.operator_bound / la.operator_lower - 1.0
        assert la.operator_width >= (la.operator_bound - la.operator_lower) / la.operator_bound
        assert la.operator_width >= (la.operator_bound - truth) / la.operator_bound
        assert math.isfinite(la.operator_width)
    assert max(widths) > LADDER[-1]  # the widest kernel on the cheap rung: certified all the same
    cheap = [la.name for la in convs if la.operator_width is not None and la.operator_width > LADDER[-1]]
    assert cheap == ["net.4.weight"]  # the 24×24 kernel: the plan's last choice, the others refined
    head = next(la for la in report.layers if la.kind == "linear")
    assert head.operator_width == 0.0
    bounds = report.models[0].bounds
    assert bounds is not None and bounds.budgeted and bounds.target == 0.01
    assert bounds.seconds_at_target is not None and bounds.seconds_at_target > 0.0


def _parse(line: str) -> tuple[dict[float, int], str]:
    counts = {float(p) / 100: int(n) for p, n in re.findall(r"≤ ([\d.]+)% on (?:all )?(\d+) layers?", line)}
    return counts, line


def _buckets(widths: list[float], target: float) -> dict[float, int]:
    """The summary's buckets: the ladder's rungs, then one for all finite widths above them, under the
    widest rounded up to a whole percent."""
    levels = [target] + [w for w in LADDER if w > target]
    wider = [w for w in widths if w > levels[-1]]
    if wider:
        levels.append(math.ceil(max(wider) * 100.0) / 100.0)
    counts: dict[float, int] = {}
    for w in widths:
        level = next(lv for lv in levels if w <= lv)
        counts[level] = counts.get(level, 0) + 1
    return counts


def test_the_widths_line_says_what_the_fields_hold(tmp_path: Path, tight_budget: None) -> None:
    path, _ = plain_chain(tmp_path)
    report = sninspect.analyze(path, device="cpu")
    model = report.models[0]
    line = widths_text(model)
    assert line is not None
    counts, _ = _parse(line)
    widths = [la.operator_width for la in model.layers if la.operator_width is not None]
    assert counts == _buckets(widths, 0.01) and sum(counts.values()) == len(widths) and len(counts) > 1
    assert model.bounds is not None and model.bounds.seconds_at_target is not None
    tail = re.search(r"bound_tol=0.01 for 1% everywhere, about (\d+) s here$", line)
    assert tail is not None and int(tail.group(1)) == round(model.bounds.seconds_at_target)


def test_bound_tol_asks_every_layer_and_the_cli_says_so(tmp_path: Path, tight_budget: None) -> None:
    path, state = plain_chain(tmp_path)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["report", str(path), "--device", "cpu", "--bound-tol", "0.02", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["models"][0]["bounds"] == {"target": 0.02, "budgeted": False, "seconds_at_target": None}
    widths = [la["operator_width"] for la in data["layers"]]
    assert all(0.0 <= w <= 0.02 for w in widths)
    text = CliRunner().invoke(app, ["report", str(path), "--device", "cpu", "--bound-tol", "0.02"])
    assert "certified widths ≤ 2% on all 6 layers (--bound-tol 0.02)" in text.output
    for la in data["layers"]:
        if la["kind"] == "conv2d":
            assert fft_sup(state[la["name"]]) <= la["operator_bound"]


def test_default_is_the_one_percent_report_when_the_budget_covers_it(tmp_path: Path) -> None:
    """A small model: the default reaches 1% everywhere and computes exactly what bound_tol=0.01 does
    (the same grids, from the same start): no estimate, no hint in the line."""
    path, _ = plain_chain(tmp_path)
    default = sninspect.analyze(path, device="cpu")
    asked = sninspect.analyze(path, device="cpu", bound_tol=0.01)
    pairs = zip(default.layers, asked.layers, strict=True)
    assert all((a.operator_bound, a.operator_lower, a.operator_width) == (b.operator_bound, b.operator_lower,
                                                                          b.operator_width) for a, b in pairs)
    assert widths_text(default.models[0]) == "certified widths ≤ 1% on all 6 layers"


def test_widths_survive_json(tmp_path: Path, tight_budget: None) -> None:
    path, _ = plain_chain(tmp_path)
    report = sninspect.analyze(path, device="cpu")
    back = report_from_dict(json.loads(report.to_json()))
    assert back.models[0].bounds == report.models[0].bounds
    assert [la.operator_width for la in back.layers] == [la.operator_width for la in report.layers]
    old = report.to_dict()
    for model in old["models"]:
        del model["bounds"]  # a log written before the field existed
    assert isinstance(report_from_dict(old), Report) and report_from_dict(old).models[0].bounds is None


def test_percent_and_wide_buckets() -> None:
    assert percent(0.01) == "1%" and percent(0.005) == "0.5%" and percent(0.2) == "20%"
    assert percent(math.inf) == "∞%"


def test_widths_above_the_ladder_are_rounded_up_not_down() -> None:
    """A width above every rung (a reshape fallback, a zero lower end) is shown rounded up, so that
    "≤" still holds; an explicit --bound-tol shows no hint."""
    from sninspect.results.report import BoundWidths, LayerAudit, ModelAudit, NetworkBound

    def layer(width: float) -> LayerAudit:
        return LayerAudit(name="l", model="", dialect="none", kind="conv2d", shape=(1, 1, 3, 3), dim=0,
                          dtype="float32", operator_width=width)

    chain = NetworkBound(None, None, (), (), (), (), "")
    layers = tuple(layer(w) for w in (0.0, 0.009, 0.15, 1.234, math.inf))
    model = ModelAudit("", layers, chain, bounds=BoundWidths(target=0.01, budgeted=True, seconds_at_target=41.6))
    assert widths_text(model) == ("certified widths ≤ 1% on 2 layers, ≤ 20% on 1 layer, ≤ 124% on 1 layer, "
                                  "≤ ∞% on 1 layer; bound_tol=0.01 for 1% everywhere, about 42 s here")
    # the cheap rung's widths, whatever they came out, in one bucket under the widest (rounded up)
    cheap = tuple(layer(w) for w in (0.01, 0.64, 0.913, 1.0063, 0.5, 0.2))
    model = ModelAudit("", cheap, chain, bounds=BoundWidths(target=0.01, budgeted=True, seconds_at_target=300.0))
    assert widths_text(model) == ("certified widths ≤ 1% on 1 layer, ≤ 20% on 1 layer, ≤ 101% on 4 layers; "
                                  "bound_tol=0.01 for 1% everywhere, about 300 s here")
    asked = ModelAudit("", layers[:2], chain, bounds=BoundWidths(target=0.01, budgeted=False))
    assert widths_text(asked) == "certified widths ≤ 1% on all 2 layers (bound_tol=0.01)"
