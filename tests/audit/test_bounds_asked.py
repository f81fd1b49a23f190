"""Only what is asked is computed: ``check`` computes the certified conv bounds only with
``--max-lipschitz``, ``SNMonitor`` only when asked or a rule reads them, ``analyze(bounds=False)``
never; every other number is the full report's, and the output says which bounds were left out.
Oracle: a spy on :func:`~sninspect.linalg.conv_bounds.conv_operator_bound` (what is computed) and the
full default report (the values)."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from builders import conv_operator_file, saved, sn_model
from typer.testing import CliRunner

import sninspect
from sninspect.cli import app
from sninspect.monitor import SNHealthWarning, SNMonitor
from sninspect.render import OutputFormat, render
from sninspect.results.report import BOUND_NOT_COMPUTED, LayerAudit, bound_not_computed

runner = CliRunner()


def _numbers_but_bounds(layer: LayerAudit) -> dict[str, Any]:
    skip = {"operator_bound", "operator_lower", "operator_width", "notes"}  # the bracket and its width
    return {f.name: getattr(layer, f.name) for f in fields(LayerAudit) if f.name not in skip}


def test_check_without_max_lipschitz_never_computes_a_bound(tmp_path: Path, bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    result = runner.invoke(app, ["check", str(path), "--device", "cpu", "--max-sigma", "inf",
                                 "--max-cos-error", "inf", "--max-norm-error", "inf", "-q"])
    assert result.exit_code == 0, result.output
    assert bound_calls == []


def test_check_with_max_lipschitz_judges_the_reports_certified_bound(tmp_path: Path, bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    result = runner.invoke(app, ["check", str(path), "--device", "cpu", "--max-lipschitz", "1e-6", "-f", "json",
                                 "--no-cache", "-q"])
    assert result.exit_code == 1, result.output
    assert sorted(bound_calls) == [(8, 3, 3, 3), (16, 8, 3, 3)]
    judged = [v for v in json.loads(result.stdout)["violations"] if v["rule"] == "max_lipschitz"]
    report = json.loads(runner.invoke(app, ["report", str(path), "--device", "cpu", "-f", "json",
                                            "--no-cache"]).stdout)
    assert judged[0]["value"] == report["lipschitz"]["operator_product"]
    assert report["lipschitz"]["operator_product"] is not None


def test_analyze_without_bounds_keeps_every_other_number_and_says_what_is_missing(tmp_path: Path,
                                                                                   bound_calls: list[Any]) -> None:
    path = saved(tmp_path / "D.pt")
    full = sninspect.analyze(path, device="cpu", cache=False)
    bound_calls.clear()
    spectra = sninspect.analyze(path, device="cpu", bounds=False)
    assert bound_calls == []
    for a, b in zip(full.layers, spectra.layers, strict=True):
        assert _numbers_but_bounds(a) == _numbers_but_bounds(b)
        if b.kind == "linear":  # σ_eff is its certified bound: free, kept
            assert b.operator_bound == a.operator_bound == b.sigma_effective
            assert not bound_not_computed(b)
        else:
            assert b.operator_bound is None and b.operator_lower is None and a.operator_bound is not None
            assert bound_not_computed(b) and f"{BOUND_NOT_COMPUTED} (not asked for)" in b.notes
    bound, whole = spectra.primary.lipschitz, full.primary.lipschitz
    assert bound.operator_product is None and whole.operator_product is not None
    assert bound.matrix_product == whole.matrix_product
    assert all(math.isnan(x) for x in bound.cumulative_operator)
    data = json.loads(spectra.to_json())
    assert [la["operator_bound"] for la in data["layers"]][:2] == [None, None]
    assert data["lipschitz"]["operator_product"] is None
    text = render(spectra, OutputFormat.table)
    assert text.count("not computed") >= 2
    assert "certified operator product not claimed (2 layer bounds not computed)" in text
    md = render(spectra, OutputFormat.markdown)
    assert "| not computed |" in md and "not claimed" in md
    assert "not computed" not in render(full, OutputFormat.table)  # the default report: every bound


def test_operator_sized_layers_keep_their_sigma_numbers_without_bounds(tmp_path: Path, bound_calls: list[Any]) -> None:
    path = conv_operator_file(tmp_path / "chain.pt", layers=3)
    full = sninspect.analyze(path, device="cpu", cache=False)
    bound_calls.clear()
    spectra = sninspect.analyze(path, device="cpu", bounds=False)
    assert bound_calls == []
    for a, b in zip(full.layers, spectra.layers, strict=True):
        assert _numbers_but_bounds(a) == _numbers_but_bounds(b)
        assert b.sigma_exact is not None and b.bracket_width is not None  # the operator's, at 10×10
        assert b.operator_bound is None or b.operator_bound == a.operator_bound  # free from the circulant only


def test_monitor_audits_spectra_by_default_and_bounds_on_request(tmp_path: Path, bound_calls: list[Any]) -> None:
    model = sn_model()
    quiet = {"max_sigma": None, "max_cos_error": None, "max_norm_error": None}
    plain = SNMonitor(model, every=1, log=None, rules=quiet).audit(1)
    assert bound_calls == [] and plain.primary.lipschitz.operator_product is None
    assert plain.layers[0].sigma_effective is not None and bound_not_computed(plain.layers[0])
    asked = SNMonitor(model, every=1, log=None, rules=quiet, bounds=True, cache=False).audit(1)
    assert len(bound_calls) == 2 and asked.primary.lipschitz.operator_product is not None
    bound_calls.clear()
    ruled = SNMonitor(model, every=1, log=None, rules={**quiet, "max_lipschitz": 1e9}, cache=False).audit(1)
    assert len(bound_calls) == 2
    assert ruled.primary.lipschitz.operator_product == asked.primary.lipschitz.operator_product
    bound_calls.clear()
    with pytest.warns(SNHealthWarning, match="certified operator product: not available"):
        SNMonitor(model, every=1, log=None, rules={**quiet, "max_lipschitz": 1e9}, bounds=False).audit(1)
    assert bound_calls == []
    with pytest.raises(sninspect.UsageError, match="bounds="):
        SNMonitor(model, every=1, log=None, bounds="yes")  # type: ignore[arg-type]
