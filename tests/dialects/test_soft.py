"""Soft SN (i-ResNet / DUE): detection against torch SN, σ̂ and σ_eff as the reference layer's eval
forward divides, ``--coeff``, and ``strip`` baking that eval weight."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import reflayers
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import spectral_norm
from typer.testing import CliRunner

import sninspect
from sninspect import dialects
from sninspect.cli.main import app
from sninspect.dialects import DialectName

COEFF = 0.9


def soft_model(coeff: float = COEFF) -> nn.Sequential:
    """Conv (σ well above coeff) → Linear (σ below coeff: used as stored), trained 3 steps."""
    torch.manual_seed(3)
    model = nn.Sequential(
        reflayers.SoftSN(nn.Conv2d(3, 4, 3, padding=1), coeff=coeff), nn.LeakyReLU(0.2), nn.Flatten(),
        reflayers.SoftSN(nn.Linear(4 * 5 * 5, 3), coeff=coeff),
    ).double()
    with torch.no_grad():
        model[0].layer.weight_orig.mul_(6.0)
        model[3].layer.weight_orig.mul_(0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(3):
        loss = model(torch.randn(4, 3, 5, 5, dtype=torch.float64)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def eval_matrix(layer: reflayers.SoftSN) -> torch.Tensor:
    with torch.no_grad():
        w = layer.eval_weight()
    return w.reshape(w.shape[0], -1)


def test_reference_layer_eval_divides_by_max_1_sigma_over_coeff() -> None:
    model = soft_model()
    conv = model[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        out = conv(x)
    for key in ("layer.weight_u", "layer.weight_v"):  # eval does not iterate
        assert torch.equal(conv.state_dict()[key], before["0." + key])
    w, u, v = conv.layer.weight_orig.detach(), conv.layer.weight_u, conv.layer.weight_v
    sigma = float(u @ (w.reshape(4, -1) @ v))
    assert sigma > COEFF
    expected = F.conv2d(x, w / (sigma / COEFF), conv.layer.bias, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert list(model.state_dict()) == [
        "0.layer.bias", "0.layer.weight_orig", "0.layer.weight_u", "0.layer.weight_v", "0.layer.weight_sigma",
        "3.layer.bias", "3.layer.weight_orig", "3.layer.weight_u", "3.layer.weight_v", "3.layer.weight_sigma"]


def test_soft_is_detected_apart_from_torch_sn() -> None:
    soft = {k: tuple(t.shape) for k, t in soft_model().state_dict().items()}
    layers, warnings = dialects.detect(soft)
    assert [(layer.dialect, layer.weight_key) for layer in layers] == [
        (DialectName.soft, "0.layer.weight_orig"), (DialectName.soft, "3.layer.weight_orig")]
    assert layers[0].extra_keys == ("0.layer.weight_sigma",) and warnings == []
    plain_sn = spectral_norm(nn.Linear(4, 3)).state_dict()
    layers, _ = dialects.detect({k: tuple(t.shape) for k, t in plain_sn.items()})
    assert [layer.dialect for layer in layers] == [DialectName.torch]


@pytest.mark.parametrize("coeff", [COEFF, None])
def test_sigma_hat_and_sigma_eff_are_the_eval_forward(tmp_path: Path, coeff: float | None) -> None:
    """σ̂ = the eval divisor max(1, σ/coeff), σ_eff = ‖eval weight‖ (coeff default 1.0, said so)."""
    model = soft_model()
    torch.save(model.state_dict(), tmp_path / "soft.pt")
    used = COEFF if coeff is not None else 1.0
    for layer in (model[0], model[3]):
        layer.coeff = used  # the reference at the coefficient sninspect is told (or assumes)
    report = sninspect.analyze(tmp_path / "soft.pt", device="cpu", coeff=coeff)
    assert [a.dialect for a in report.layers] == ["soft", "soft"]
    for audit, layer in zip(report.layers, (model[0], model[3]), strict=True):
        assert audit.sigma_estimate == pytest.approx(layer.eval_divisor(), rel=1e-9)
        eff = float(torch.linalg.matrix_norm(eval_matrix(layer), ord=2))
        assert audit.sigma_effective == pytest.approx(eff, rel=1e-6)
        told = "from coeff" if coeff is not None else "the default"  # the library names keyword arguments
        assert any(f"coeff = {used:g} ({told}" in n for n in audit.notes)
    conv, linear = report.layers
    if coeff is not None:
        assert conv.sigma_effective == pytest.approx(COEFF, rel=0.05)  # the soft rule caps σ near coeff
    assert linear.sigma_estimate == 1.0 and any("used as stored" in n for n in linear.notes)


def test_strip_bakes_the_eval_weight(tmp_path: Path) -> None:
    model = soft_model()
    torch.save(model.state_dict(), tmp_path / "soft.pt")
    sninspect.strip(tmp_path / "soft.pt", tmp_path / "plain.safetensors", coeff=COEFF)
    state = load_file(tmp_path / "plain.safetensors")
    assert sorted(state) == ["0.layer.bias", "0.layer.weight", "3.layer.bias", "3.layer.weight"]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(100, 3)).double()
    plain.load_state_dict({k.replace(".layer", ""): v for k, v in state.items()}, strict=True)
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-6)
    # with the wrong coefficient the bake differs: the coefficient matters and is not stored
    sninspect.strip(tmp_path / "soft.pt", tmp_path / "other.safetensors", coeff=2 * COEFF)
    other = load_file(tmp_path / "other.safetensors")
    assert not torch.allclose(other["0.layer.weight"], state["0.layer.weight"])


def test_cli_coeff(tmp_path: Path) -> None:
    model = soft_model()
    torch.save(model.state_dict(), tmp_path / "soft.pt")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "soft.pt"), "--coeff", str(COEFF), "-f", "json",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    assert layers[0]["dialect"] == "soft"
    assert math.isclose(layers[0]["sigma_estimate"], model[0].eval_divisor(), rel_tol=1e-9)
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "soft.pt"), "--coeff", "0"])
    assert bad.exit_code == 2
