"""Network bounds and operator audits against dense Jacobians and gradient ascent."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

import sninspect


def dense_jacobian(fn, shape: tuple[int, ...]) -> np.ndarray:  # type: ignore[no-untyped-def]
    x = torch.zeros(shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(fn, x)
    out = int(np.prod(jac.shape[: len(jac.shape) - len(shape)]))
    return jac.reshape(out, -1).numpy()


def same(kernel: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda x: F.conv2d(x, kernel, padding=kernel.shape[-1] // 2)


def test_conv_operator_dialect_is_audited_as_an_operator(tmp_path: Path) -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    jac = dense_jacobian(same(w), (1, 3, 6, 6))
    left, s, right = np.linalg.svd(jac)
    # "Real SN" training state: u (input-shaped) after a few power steps, σ̂ = ‖A u‖, buffer W/σ̂.
    u = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    for _ in range(3):
        y = same(w)(u)
        u = F.conv_transpose2d(y, w, padding=1)
        u = u / u.norm()
    sigma_hat = float(same(w)(u).norm())
    state = {"c.weight_orig": w, "c.weight": w / sigma_hat, "c.weight_u": u, "c.bias": torch.zeros(4)}
    torch.save(state, tmp_path / "real_sn.pt")
    layer = sninspect.analyze(tmp_path / "real_sn.pt", device="cpu").layers[0]
    assert layer.dialect == "conv-operator"
    # σ numbers are the certified lower ends of brackets that hold the dense truth; the certified upper
    # end is the norm of the circulant on the padded size (width at 6×6: a few %), the lower end exact.
    assert layer.bracket_width is not None and 0.0 <= layer.bracket_width < 0.2
    assert layer.sigma_exact == pytest.approx(s[0], rel=1e-8)
    assert layer.sigma_exact <= s[0] * (1 + 1e-12) <= layer.sigma_exact * (1 + layer.bracket_width) * (1 + 1e-12)
    assert math.isclose(layer.sigma_estimate, sigma_hat, rel_tol=1e-9)
    assert math.isclose(layer.sigma_effective, s[0] / sigma_hat, rel_tol=1e-5)
    stored = u.reshape(-1).numpy()
    expected = 1 - abs(float(stored @ right[0]))
    assert layer.cos_error_u == pytest.approx(expected, abs=1e-5)  # the vector stops with the bracket
    assert layer.operator_bound >= layer.sigma_effective * (1 - 1e-12)
    assert any("operator norms" in note for note in layer.notes)


def test_input_size_gives_the_exact_same_padding_norm(tmp_path: Path) -> None:
    torch.manual_seed(1)
    conv = spectral_norm(nn.Conv2d(2, 3, 3, padding=1))
    conv(torch.randn(1, 2, 5, 5))
    conv.eval()
    with torch.no_grad():
        conv(torch.randn(1, 2, 5, 5))
    torch.save(conv.state_dict(), tmp_path / "c.pt")
    layer = sninspect.analyze(tmp_path / "c.pt", device="cpu", input_size=(7,)).layers[0]
    eff = conv.weight_orig.detach().double() / layer.sigma_estimate  # the eval weight, in float64
    sigma = np.linalg.svd(dense_jacobian(same(eff), (1, 2, 7, 7)), compute_uv=False)[0]
    top = layer.operator_at_input * (1 + layer.bracket_width) * (1 + 1e-12)
    assert layer.operator_at_input <= sigma * (1 + 1e-12) <= top
    assert layer.operator_at_input == pytest.approx(sigma, rel=1e-8)
    assert layer.operator_bound >= sigma


def max_input_gradient(model: nn.Module, shape: tuple[int, ...], restarts: int = 4, steps: int = 60) -> float:
    """A lower bound on the Lipschitz constant: the largest ‖∇ₓ f(x)‖ found by gradient ascent."""
    best = 0.0
    for seed in range(restarts):
        torch.manual_seed(seed)
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([x], lr=0.05)
        for _ in range(steps):
            (grad,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
            norm = grad.norm()
            best = max(best, float(norm.detach()))
            opt.zero_grad()
            (-norm).backward()
            opt.step()
    return best


def test_network_bound_is_above_gradient_ascent_on_a_trained_net(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        spectral_norm(nn.Conv2d(2, 6, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(6, 6, 3, padding=1)), nn.BatchNorm2d(6), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(6, 4, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
        nn.Flatten(), spectral_norm(nn.Linear(4 * 2 * 2, 1)),
    ).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30):  # a few GAN-like steps: push outputs of two distributions apart
        real, fake = torch.randn(8, 2, 8, 8, dtype=torch.float64) + 1, torch.randn(8, 2, 8, 8, dtype=torch.float64)
        loss = F.softplus(-model(real)).mean() + F.softplus(model(fake)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), tmp_path / "net.pt")
    model.eval()
    found = max_input_gradient(model, (1, 2, 8, 8))
    bound = sninspect.analyze(tmp_path / "net.pt", device="cpu").primary.lipschitz
    assert bound.operator_product is not None and found > 0
    assert bound.operator_product >= found
    assert len(bound.cumulative_operator) == len(bound.layers) == 5  # 4 weights + the BatchNorm


def test_layernorm_is_flagged(tmp_path: Path) -> None:
    model = nn.Sequential()
    model.add_module("fc", spectral_norm(nn.Linear(4, 4)))
    model.add_module("ln", nn.LayerNorm(4))
    torch.save(model.state_dict(), tmp_path / "ln.pt")
    warnings = sninspect.analyze(tmp_path / "ln.pt", device="cpu").all_warnings
    assert any("not globally Lipschitz" in w and "ln" in w for w in warnings)


def test_layernorm_is_no_weight_layer_and_no_factor_of_the_chain(tmp_path: Path) -> None:
    """A WGAN critic with parametrize SN and nn.LayerNorm([C, H, W]): the LayerNorm's 3-D affine weight
    and its bias are neither weight layers nor chain factors (its reshaped σ, √(C·H·W) at init,
    inflated the certified product by orders of magnitude); a warning says so."""
    from torch.nn.utils.parametrizations import spectral_norm as sn_param

    from sninspect.audit.layers.inventory import inventory

    torch.manual_seed(0)
    model = nn.Sequential(
        sn_param(nn.Conv2d(3, 8, 3, padding=1)), nn.LayerNorm([8, 6, 6]), nn.LeakyReLU(0.2),
        nn.Flatten(), sn_param(nn.Linear(8 * 6 * 6, 1)),
    ).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        real, fake = torch.randn(4, 3, 6, 6, dtype=torch.float64) + 1, torch.randn(4, 3, 6, 6, dtype=torch.float64)
        loss = model(fake).mean() - model(real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), tmp_path / "critic.pt")
    model.eval()
    with torch.no_grad():  # the eval weights, as the model uses them
        conv_eff = float(torch.linalg.matrix_norm(model[0].weight.reshape(8, -1), ord=2))
        lin_eff = float(torch.linalg.matrix_norm(model[4].weight, ord=2))
    assert conv_eff == pytest.approx(1.0, abs=0.1) and lin_eff == pytest.approx(1.0, abs=0.1)

    report = sninspect.analyze(tmp_path / "critic.pt", device="cpu", all_layers=True)
    names = [a.name for a in report.layers]
    assert names == ["0.weight", "4.weight"]  # no 1.weight (LayerNorm), no biases
    bound = report.primary.lipschitz
    assert bound.layers == ("0.weight", "4.weight")
    lin = report.layers[1]
    assert lin.sigma_effective == pytest.approx(lin_eff, rel=1e-9)
    # Certified conv bound ≤ √(kh·kw)·‖W_mat‖ (each output sums kh·kw shifted copies): the product is
    # that of the two SN factors, not the LayerNorm's √(8·6·6) ≈ 17 times more.
    assert bound.operator_product is not None
    assert conv_eff * lin_eff * 0.999 <= bound.operator_product <= 3 * conv_eff * lin_eff
    assert bound.matrix_product == pytest.approx(conv_eff * lin_eff, rel=1e-9)
    warning = next(w for w in report.all_warnings if "normalisation layers" in w)
    assert "(1)" in warning and "not globally Lipschitz" in warning and "left out" in warning
    listed = [row.name for row in inventory(tmp_path / "critic.pt")]
    assert listed == ["0.weight", "4.weight"]


def test_bias_is_never_a_weight_layer(tmp_path: Path) -> None:
    """A 2-D bias (a per-position additive term) is not a weight layer; a 2-D weight next to it is."""
    state = {"pos.weight": torch.randn(4, 5), "pos.bias": torch.randn(4, 5), "fc.weight": torch.randn(3, 4),
             "fc.in_proj_bias": torch.randn(2, 3)}
    torch.save(state, tmp_path / "b.pt")
    report = sninspect.analyze(tmp_path / "b.pt", device="cpu", all_layers=True)
    # pos: weight and bias of one shape, no running stats = an elementwise affine (normalisation-like)
    assert [a.name for a in report.layers] == ["fc.weight"]
    assert report.layers[0].sigma_exact == pytest.approx(
        float(torch.linalg.matrix_norm(state["fc.weight"].double(), ord=2)), rel=1e-12)
