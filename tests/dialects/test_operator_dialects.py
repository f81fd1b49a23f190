"""Residual-flows SN, projection SN and the side of a stored conv-operator u: detection against
look-alikes, σ̂ and σ_eff as the reference layers' eval forward divides (dense Jacobians as the
operator oracle), and ``strip`` baking the eval weight."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import reflayers
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

import sninspect
from sninspect import dialects
from sninspect.cli.main import app
from sninspect.dialects import DialectName

COEFF = 0.9


def dense(fn, shape: tuple[int, ...]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The Jacobian of a linear map as a matrix (out, in)."""
    jac = torch.autograd.functional.jacobian(fn, torch.zeros(shape, dtype=torch.float64))
    return jac.reshape(-1, math.prod(shape)).numpy()


def train(model: nn.Module, shape: tuple[int, ...], steps: int = 3) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        loss = model(torch.randn(shape, dtype=torch.float64)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


# -- residual flows ----------------------------------------------------------------------------------

def resflow_model(coeff: float = COEFF) -> nn.Sequential:
    """3×3 conv (σ above coeff), 1×1 conv, linear (σ below coeff: used as stored), trained 3 steps."""
    torch.manual_seed(5)
    model = nn.Sequential(
        reflayers.ResFlowSNConv2d(3, 4, 3, coeff=coeff), nn.ELU(),
        reflayers.ResFlowSNConv2d(4, 4, 1, coeff=coeff), nn.ELU(), nn.Flatten(),
        reflayers.ResFlowSNLinear(4 * 5 * 5, 3, coeff=coeff),
    ).double()
    with torch.no_grad():
        model[0].weight.mul_(4.0)
        model[5].weight.mul_(0.05)
    train(model, (4, 3, 5, 5))
    return model


def test_resflow_reference_layout_and_eval() -> None:
    model = resflow_model()
    keys = list(model.state_dict())
    assert keys[:6] == ["0.weight", "0.bias", "0.spatial_dims", "0.scale", "0.u", "0.v"]
    assert model.state_dict()["0.u"].shape == (4 * 25,) and model.state_dict()["2.u"].shape == (4,)
    conv = model[0]
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    u_before = conv.u.clone()
    with torch.no_grad():
        out = conv(x)
    assert torch.equal(conv.u, u_before)  # eval does not iterate
    sigma = float(conv.u @ F.conv2d(conv.v.view(1, 3, 5, 5), conv.weight.detach(), padding=1).reshape(-1))
    assert sigma > COEFF
    torch.testing.assert_close(out, F.conv2d(x, conv.weight / (sigma / COEFF), conv.bias, padding=1))


def test_resflow_detection_and_lookalikes() -> None:
    shapes = {k: tuple(t.shape) for k, t in resflow_model().state_dict().items()}
    layers, warnings = dialects.detect(shapes)
    assert [(la.dialect, la.weight_key) for la in layers] == [
        (DialectName.residual_flows, "0.weight"), (DialectName.residual_flows, "2.weight"),
        (DialectName.residual_flows, "5.weight")]
    assert layers[0].extra_keys == ("0.scale", "0.spatial_dims") and warnings == []
    # buffers u, v without the scale log: not this layout
    no_scale = {k: s for k, s in shapes.items() if not k.endswith("scale")}
    assert dialects.detect(no_scale)[0] == []
    # u of a length that fits neither layout; a scale without u, v (an ℓ∞ Lipschitz layer)
    wrong = dict(shapes) | {"5.u": (7,)}
    assert [la.weight_key for la in dialects.detect(wrong)[0]] == ["0.weight", "2.weight"]
    assert dialects.detect({"l.weight": (3, 4), "l.bias": (3,), "l.scale": ()})[0] == []


@pytest.mark.parametrize("coeff", [COEFF, None])
def test_resflow_sigma_hat_and_effective_are_the_eval_forward(tmp_path: Path, coeff: float | None) -> None:
    model = resflow_model()
    torch.save(model.state_dict(), tmp_path / "flow.pt")
    used = COEFF if coeff is not None else 0.97
    for layer in (model[0], model[2], model[5]):
        layer.coeff = used
    report = sninspect.analyze(tmp_path / "flow.pt", device="cpu", coeff=coeff)
    conv, one, linear = report.layers
    assert [a.dialect for a in report.layers] == ["residual-flows"] * 3
    for audit, layer in zip(report.layers, (model[0], model[2], model[5]), strict=True):
        assert audit.sigma_estimate == pytest.approx(layer.eval_divisor(), rel=1e-9)
        told = "from coeff" if coeff is not None else "the layers' default"  # called from Python
        assert any(f"coeff = {used:g} ({told}" in n for n in audit.notes)
    # the 3×3 conv: the operator at spatial_dims (dense Jacobian), u output side, v input side
    w = model[0].weight.detach()
    left, s, right = np.linalg.svd(dense(lambda x: F.conv2d(x, w, padding=1), (1, 3, 5, 5)))
    assert conv.sigma_exact == pytest.approx(s[0], rel=1e-6)
    assert conv.sigma_effective == pytest.approx(s[0] / model[0].eval_divisor(), rel=1e-6)
    assert conv.cos_error_u == pytest.approx(1 - abs(float(model[0].u.numpy() @ left[:, 0])), abs=1e-5)
    assert conv.cos_error_v == pytest.approx(1 - abs(float(model[0].v.numpy() @ right[0])), abs=1e-5)
    assert any("output-side u, input-side v" in n for n in conv.notes)
    # the 1×1 conv and the linear layer: the matrix
    for audit, layer in ((one, model[2]), (linear, model[5])):
        mat = layer.weight.detach().reshape(layer.weight.shape[0], -1).numpy()
        lu, ls, lv = np.linalg.svd(mat)
        assert audit.sigma_exact == pytest.approx(ls[0], rel=1e-9)
        assert audit.sigma_effective == pytest.approx(ls[0] / layer.eval_divisor(), rel=1e-9)
        assert audit.cos_error_v == pytest.approx(1 - abs(float(layer.v.numpy() @ lv[0])), abs=1e-9)
    assert linear.sigma_estimate == 1.0 and any("used as stored" in n for n in linear.notes)


def test_resflow_strip_bakes_the_eval_weight(tmp_path: Path) -> None:
    model = resflow_model()
    torch.save(model.state_dict(), tmp_path / "flow.pt")
    sninspect.strip(tmp_path / "flow.pt", tmp_path / "plain.safetensors", coeff=COEFF)
    state = load_file(tmp_path / "plain.safetensors")
    assert sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight", "5.bias", "5.weight"]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ELU(), nn.Conv2d(4, 4, 1), nn.ELU(), nn.Flatten(),
                          nn.Linear(100, 3)).double()
    plain.load_state_dict(state, strict=True)
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-6)


def test_resflow_uninitialized_is_a_layer_error(tmp_path: Path) -> None:
    state = resflow_model().state_dict()
    state["0.initialized"] = torch.tensor(0)
    torch.save(state, tmp_path / "flow.pt")
    report = sninspect.analyze(tmp_path / "flow.pt", device="cpu")
    assert "saved before the layer's first forward" in (report.layers[0].error or "") and report.layers[1].error is None


# -- projection SN -----------------------------------------------------------------------------------

def projection_model() -> nn.Sequential:
    torch.manual_seed(7)
    model = nn.Sequential(
        reflayers.ProjectionConv2d(1, 4, 3, signal_size=8), nn.ReLU(),
        reflayers.ProjectionConv2d(4, 4, 3, signal_size=8), nn.ReLU(),
        reflayers.ProjectionConv2d(4, 1, 3, signal_size=8),
    ).double()
    train(model, (2, 1, 8, 8))
    return model


def sup_norm(kernel: torch.Tensor, grid: int = 256) -> float:
    """max over frequencies of σ_max(K̂(ω)): the conv's norm over all input sizes (circular limit)."""
    k = kernel.detach().numpy()
    spectrum = np.fft.fft2(k, s=(grid, grid), axes=(2, 3))  # (out, in, N, N)
    blocks = np.moveaxis(spectrum, (0, 1), (2, 3)).reshape(-1, k.shape[0], k.shape[1])
    return float(np.linalg.norm(blocks, ord=2, axis=(1, 2)).max())


def test_projection_detection_and_lookalikes() -> None:
    shapes = {k: tuple(t.shape) for k, t in projection_model().state_dict().items()}
    layers, warnings = dialects.detect(shapes)
    assert [(la.dialect, la.weight_key, la.buffer_key) for la in layers] == [
        (DialectName.projection, f"{i}.weight", f"{i}.lipschitz_weight") for i in (0, 2, 4)]
    assert warnings == []
    # a plain conv next to a tensor called lipschitz_weight of another shape
    assert dialects.detect({"c.weight": (4, 3, 3, 3), "c.bias": (4,), "c.lipschitz_weight": (4,)})[0] == []


def test_projection_lookalike_of_the_same_shape_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = {"c.weight": torch.randn(4, 3, 3, 3, dtype=torch.float64),
             "c.lipschitz_weight": torch.randn(4, 3, 3, 3, dtype=torch.float64)}
    torch.save(state, tmp_path / "odd.pt")
    layer = sninspect.analyze(tmp_path / "odd.pt", device="cpu").layers[0]
    assert layer.error is not None and "not projection SN" in layer.error


def test_projection_sigma_hat_and_effective(tmp_path: Path) -> None:
    model = projection_model()
    torch.save(model.state_dict(), tmp_path / "avg.pt")
    report = sninspect.analyze(tmp_path / "avg.pt", device="cpu")
    assert [a.dialect for a in report.layers] == ["projection"] * 3
    for audit, layer in zip(report.layers, (model[0], model[2], model[4]), strict=True):
        w = layer.weight.detach().reshape(-1, 1).numpy()
        b = layer.lipschitz_weight.detach().reshape(-1, 1).numpy()
        assert audit.sigma_estimate == pytest.approx(float(np.linalg.lstsq(b, w[:, 0], rcond=None)[0][0]), rel=1e-9)
        sup_eval, sup_raw = sup_norm(layer.lipschitz_weight), sup_norm(layer.weight)
        # the lower ends of certified brackets (width ≤ --bound-tol 0.01) of the norms over all sizes
        assert sup_eval * (1 - 0.01) <= audit.sigma_effective <= sup_eval * (1 + 1e-9) <= audit.operator_bound
        assert sup_raw * (1 - 0.01) <= audit.sigma_exact <= sup_raw * (1 + 1e-9)
        kernel = layer.lipschitz_weight.detach()
        at_size = np.linalg.svd(dense(lambda x, k=kernel: F.conv2d(x, k, padding=1), (1, k_in(layer), 8, 8)),
                                compute_uv=False)[0]
        assert at_size <= audit.operator_bound  # the eval conv at the training size


def k_in(layer: nn.Module) -> int:
    return int(layer.weight.shape[1])


def test_projection_strip_bakes_lipschitz_weight(tmp_path: Path) -> None:
    model = projection_model()
    torch.save(model.state_dict(), tmp_path / "avg.pt")
    sninspect.strip(tmp_path / "avg.pt", tmp_path / "plain.safetensors")
    state = load_file(tmp_path / "plain.safetensors")
    assert sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 1, 3, padding=1)).double()
    plain.load_state_dict(state, strict=True)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-6)


# -- the side of a stored conv-operator u ------------------------------------------------------------

def realsn_state(c_in: int, c_out: int, side: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """RealSN state with u stored on ``side``: that side's exact top singular vector (dense SVD) plus 1%
    noise, as a converged power iteration leaves it; the conv's dense Jacobian."""
    torch.manual_seed(c_in * 10 + c_out)
    w = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64)
    jac = dense(lambda x: F.conv2d(x, w, padding=1), (1, c_in, 6, 6))
    left, s, right = np.linalg.svd(jac)
    top, channels = (left[:, 0], c_out) if side == "output" else (right[0], c_in)
    noisy = top + 0.01 * np.random.default_rng(c_in + c_out).standard_normal(top.shape) / math.sqrt(top.size)
    u = torch.from_numpy(noisy / np.linalg.norm(noisy)).reshape(1, channels, 6, 6)
    sigma = float(s[0]) * 1.001
    return {"c.weight_orig": w, "c.weight": w / sigma, "c.weight_u": u}, jac


@pytest.mark.parametrize(("c_in", "c_out", "side"), [(3, 3, "output"), (3, 3, "input"), (2, 3, "output"),
                                                     (3, 2, "input")])
def test_conv_operator_u_side_is_found_and_named(tmp_path: Path, c_in: int, c_out: int, side: str) -> None:
    state, jac = realsn_state(c_in, c_out, side)
    torch.save(state, tmp_path / "realsn.pt")
    layer = sninspect.analyze(tmp_path / "realsn.pt", device="cpu").layers[0]
    left, s, right = np.linalg.svd(jac)
    assert any(f"u on the {side} side" in n for n in layer.notes), layer.notes
    if c_in == c_out:
        assert any("residual" in n for n in layer.notes)
    top = left[:, 0] if side == "output" else right[0]
    stored = state["c.weight_u"].reshape(-1).numpy()
    expected = 1 - abs(float(stored @ top))
    assert expected < 1e-3  # against the right side's vector: small, not ≈ 1
    assert layer.cos_error_u == pytest.approx(expected, rel=1e-2)
    assert layer.sigma_exact == pytest.approx(s[0], rel=1e-6)
    assert layer.sigma_estimate == pytest.approx(s[0] * 1.001, rel=1e-9)


# -- the CLI end to end --------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["resflow", "projection"])
def test_cli_report_end_to_end(tmp_path: Path, which: str) -> None:
    model = resflow_model(0.97) if which == "resflow" else projection_model()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pt")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "m.pt"), "-f", "json", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    expected = "residual-flows" if which == "resflow" else "projection"
    assert {layer["dialect"] for layer in out["layers"]} == {expected}
    assert all(layer["error"] is None for layer in out["layers"])
    assert not any("fit no known dialect" in w or "not audited" in w for w in out["warnings"]), out["warnings"]


def test_resflow_integer_bookkeeping_buffers_are_read_as_stored(tmp_path: Path) -> None:
    """Attack review: the layers register ``initialized`` as ``torch.tensor(0)`` (int64); a membership
    test on the audit's tensor view read the item, so every induced-norm layer was refused with "holds
    integers, not floating-point weights" (the uninitialized test above passed on that message). An
    integer ``spatial_dims`` is a size all the same; a fractional one is not. Oracle: the same state
    with float bookkeeping (checked against dense Jacobians above)."""
    state = resflow_model().state_dict()
    torch.save(state, tmp_path / "float.pt")
    reference = sninspect.analyze(tmp_path / "float.pt", device="cpu")
    ints = dict(state)
    ints["0.initialized"], ints["2.initialized"] = torch.tensor(1), torch.tensor(True)
    ints["0.spatial_dims"] = state["0.spatial_dims"].to(torch.int64)
    torch.save(ints, tmp_path / "ints.pt")
    report = sninspect.analyze(tmp_path / "ints.pt", device="cpu")
    for got, want in zip(report.layers, reference.layers, strict=True):
        assert got.error is None and want.error is None
        assert got.sigma_effective == pytest.approx(want.sigma_effective, rel=1e-12)
    ints["0.initialized"] = torch.tensor(0)
    torch.save(ints, tmp_path / "fresh.pt")
    assert "saved before the layer's first forward" in (sninspect.analyze(tmp_path / "fresh.pt").layers[0].error or "")
    ints["0.initialized"] = torch.tensor(1)
    ints["0.spatial_dims"] = state["0.spatial_dims"] + 0.5
    torch.save(ints, tmp_path / "half.pt")
    assert "is not an input size" in (sninspect.analyze(tmp_path / "half.pt").layers[0].error or "")
