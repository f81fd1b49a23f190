"""The audit end to end: saved checkpoints → analyze → numbers checked against independent oracles
(numpy's SVD for σ and singular vectors; PyTorch's SN modules in eval mode for σ̂)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm

import sninspect
from sninspect.results.report import LayerAudit


def oracle(weight: torch.Tensor, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy float64 SVD of the weight reshaped the way SN reshapes it."""
    w = weight.detach().double().numpy()
    w = np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)
    return np.linalg.svd(w, full_matrices=False)


def np_cos_error(stored: torch.Tensor, exact: np.ndarray) -> float:
    a = stored.detach().double().numpy().ravel()
    a = a / np.linalg.norm(a)
    # 1 - |cos| through the angle, computed in extended precision independently of sninspect's formula.
    cos = abs(float(np.dot(a.astype(np.longdouble), exact.astype(np.longdouble))))
    return float(1 - min(cos, 1.0))


def discriminator(style: str) -> nn.Module:
    wrap = spectral_norm if style == "torch" else parametrizations.spectral_norm
    return nn.Sequential(
        wrap(nn.Conv2d(3, 8, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
        wrap(nn.ConvTranspose2d(8, 8, 3, padding=1), dim=1), nn.LeakyReLU(0.2),
        wrap(nn.Conv2d(8, 16, 3, stride=2, padding=1)), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
        nn.Flatten(), wrap(nn.Linear(16 * 4 * 4, 1)),
    )


def by_name(layers: tuple[LayerAudit, ...]) -> dict[str, LayerAudit]:
    return {layer.name: layer for layer in layers}


@pytest.mark.parametrize("style", ["torch", "torch-parametrize"])
def test_numbers_match_numpy_and_the_module(style: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = discriminator(style)
    train(model, lambda: torch.randn(4, 3, 16, 16), steps=4)
    path = tmp_path / "d.pt"
    torch.save(model.state_dict(), path)
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))

    report = sninspect.analyze(path, device="cpu")
    layers = by_name(report.layers)
    assert sorted(layers) == ["0.weight", "2.weight", "4.weight", "8.weight"]
    for index, dim in ((0, 0), (2, 1), (4, 0), (8, 0)):
        module = model[index]
        audit = layers[f"{index}.weight"]
        original = module.weight_orig if style == "torch" else module.parametrizations.weight.original
        u = module.weight_u if style == "torch" else module.parametrizations.weight[0]._u
        v = module.weight_v if style == "torch" else module.parametrizations.weight[0]._v
        left, s, right = oracle(original, dim)
        assert audit.dialect == style and audit.dim == dim
        assert math.isclose(audit.sigma_exact, s[0], rel_tol=1e-9)
        divisor = float(original.detach().flatten()[0] / module.weight.detach().flatten()[0])
        assert math.isclose(audit.sigma_estimate, divisor, rel_tol=1e-6)
        assert math.isclose(audit.sigma_effective, s[0] / audit.sigma_estimate, rel_tol=1e-9)
        assert math.isclose(audit.sigma_rel_error, (audit.sigma_estimate - s[0]) / s[0], rel_tol=1e-9)
        assert audit.cos_error_u == pytest.approx(np_cos_error(u, left[:, 0]), abs=1e-7)
        assert audit.cos_error_v == pytest.approx(np_cos_error(v, right[0]), abs=1e-7)
        if len(s) > 1:
            assert math.isclose(audit.spectral_gap, s[1] / s[0], rel_tol=1e-9)
        assert math.isclose(audit.stable_rank, float((s**2).sum() / s[0] ** 2), rel_tol=1e-9)
        np.testing.assert_allclose(audit.singular_values, s, rtol=1e-9, atol=1e-12 * s[0])
    # The matrix product is the product of σ_eff over the chain, times BatchNorm's scaling (a per-channel
    # scaling: its matrix norm is its operator norm, so it enters both products).
    bn = model[5]
    scale = float((bn.weight.detach().double().abs() / (bn.running_var.double() + bn.eps).sqrt()).max())
    product = math.prod(layers[n].sigma_effective for n in ("0.weight", "2.weight", "4.weight", "8.weight"))
    assert math.isclose(report.primary.lipschitz.matrix_product, product * scale, rel_tol=1e-12)
    assert report.primary.lipschitz.layers == ("0.weight", "2.weight", "4.weight", "5", "8.weight")


def test_cos_error_resolves_tiny_angles_in_a_real_layer(tmp_path: Path) -> None:
    """A stored u at angle 1e-5 from the exact vector must report ~5e-11, not 0."""
    torch.manual_seed(4)
    w = torch.randn(6, 9, dtype=torch.float64)
    left, s, right = np.linalg.svd(w.numpy())
    u1, v1 = torch.from_numpy(left[:, 0]), torch.from_numpy(right[0])
    other = torch.from_numpy(left[:, 1])
    theta = 1e-5
    u = math.cos(theta) * u1 + math.sin(theta) * other
    state = {"fc.weight_orig": w, "fc.weight_u": u, "fc.weight_v": v1}
    torch.save(state, tmp_path / "tiny.pt")
    audit = sninspect.analyze(tmp_path / "tiny.pt", device="cpu").layers[0]
    assert audit.cos_error_u == pytest.approx(1 - math.cos(theta), rel=1e-4)
    assert audit.cos_error_v is not None and audit.cos_error_v < 1e-25


def test_plain_checkpoint_reports_every_weight_layer(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 3), "fc": nn.Linear(4 * 6 * 6, 2), "embed": nn.Embedding(5, 3)})
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    report = sninspect.analyze(tmp_path / "plain.pt", device="cpu")
    layers = by_name(report.layers)
    assert sorted(layers) == ["conv.weight", "embed.weight", "fc.weight"]
    assert layers["embed.weight"].kind == "embedding" and layers["conv.weight"].kind == "conv2d"
    for name, audit in layers.items():
        assert audit.dialect == "none" and audit.sigma_estimate is None and audit.cos_error_u is None
        weight = model.get_parameter(name)
        assert math.isclose(audit.sigma_exact, oracle(weight, 0)[1][0], rel_tol=1e-9)
    assert report.primary.lipschitz.excluded == ("embed.weight",)


def test_all_adds_plain_layers_to_an_sn_report(tmp_path: Path) -> None:
    model = nn.Sequential(spectral_norm(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 2))
    torch.save(model.state_dict(), tmp_path / "mixed.pt")
    assert [la.name for la in sninspect.analyze(tmp_path / "mixed.pt", device="cpu").layers] == ["0.weight"]
    both = sninspect.analyze(tmp_path / "mixed.pt", device="cpu", all_layers=True)
    assert [la.name for la in both.layers] == ["0.weight", "2.weight"]
    # The network bound covers every layer of the chain whatever is shown.
    assert both.primary.lipschitz.layers == ("0.weight", "2.weight")


def test_pair_of_models_and_prefixes(tmp_path: Path) -> None:
    torch.manual_seed(6)
    d = nn.Sequential(spectral_norm(nn.Linear(3, 4)), nn.ReLU(), spectral_norm(nn.Linear(4, 1)))
    g = nn.Sequential(nn.Linear(2, 3))
    wrapped = {"netG": g.state_dict(), "netD": {"module." + k: v for k, v in d.state_dict().items()}, "step": 7}
    torch.save(wrapped, tmp_path / "pair.pt")
    report = sninspect.analyze(tmp_path / "pair.pt", device="cpu")
    assert [m.name for m in report.models] == ["netG", "netD"]
    assert report.primary.name == "netD"
    assert [la.name for la in report.layers] == ["netG.0.weight", "netD.0.weight", "netD.2.weight"]
    assert report.extras.get("step") == 7
    only_d = sninspect.analyze(tmp_path / "pair.pt", device="cpu", key="netD")
    assert [la.name for la in only_d.layers] == ["0.weight", "2.weight"]


def test_bad_layer_is_reported_and_the_others_audited(tmp_path: Path) -> None:
    model = nn.Sequential(
        spectral_norm(nn.Linear(3, 4)), spectral_norm(nn.Linear(4, 5)), spectral_norm(nn.Linear(5, 2))
    )
    state = dict(model.state_dict())
    state["0.weight_orig"] = state["0.weight_orig"].clone()
    state["0.weight_orig"][0, 0] = float("nan")
    state["1.weight_u"] = torch.randn(7)  # wrong length
    state["2.weight_orig"] = torch.zeros(2, 5)
    torch.save(state, tmp_path / "bad.pt")
    report = sninspect.analyze(tmp_path / "bad.pt", device="cpu")
    layers = by_name(report.layers)
    assert "NaN" in (layers["0.weight"].error or "")
    assert "u has 7 entries" in (layers["1.weight"].error or "")
    assert "all zeros" in (layers["2.weight"].error or "")
    assert len([w for w in report.all_warnings if "not audited" in w]) == 3


def test_negative_sigma_hat_and_broken_norms_are_warned(tmp_path: Path) -> None:
    torch.manual_seed(7)
    w = torch.randn(4, 5, dtype=torch.float64)
    left, _, right = np.linalg.svd(w.numpy())
    state = {"fc.weight_orig": w, "fc.weight_u": -torch.from_numpy(left[:, 0]) * 1.5,
             "fc.weight_v": torch.from_numpy(right[0])}
    torch.save(state, tmp_path / "neg.pt")
    report = sninspect.analyze(tmp_path / "neg.pt", device="cpu")
    text = " ".join(report.all_warnings)
    assert "≤ 0 flips the sign" in text and "‖u‖ = 1.5" in text


def test_degenerate_top_singular_value_gives_no_cosine(tmp_path: Path) -> None:
    w = torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64))
    state = {"fc.weight_orig": w, "fc.weight_u": torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64),
             "fc.weight_v": torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)}
    torch.save(state, tmp_path / "deg.pt")
    audit = sninspect.analyze(tmp_path / "deg.pt", device="cpu").layers[0]
    assert audit.degenerate and audit.cos_error_u is None and audit.cos_error_v is None
    assert math.isclose(audit.sigma_estimate or 0, 2.0)


def test_float32_and_half_precision_storage(tmp_path: Path) -> None:
    torch.manual_seed(8)
    model = spectral_norm(nn.Linear(16, 8))
    train(model, lambda: torch.randn(4, 16), steps=4)
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "bf16.pt")
    r64 = sninspect.analyze(tmp_path / "bf16.pt", device="cpu")
    r32 = sninspect.analyze(tmp_path / "bf16.pt", device="cpu", dtype="float32")
    assert r64.dtype == "float64" and r32.dtype == "float32"
    assert r64.layers[0].dtype == "bfloat16"
    s = oracle(state["weight_orig"].float(), 0)[1][0]
    assert math.isclose(r64.layers[0].sigma_exact, s, rel_tol=1e-9)
    assert math.isclose(r32.layers[0].sigma_exact, s, rel_tol=1e-5)


def test_json_schema_has_every_documented_field(tmp_path: Path) -> None:
    model = nn.Sequential(spectral_norm(nn.Conv2d(2, 3, 3)), nn.Flatten(), spectral_norm(nn.Linear(12, 1)))
    train(model, lambda: torch.randn(2, 2, 4, 4), steps=4)
    torch.save(model.state_dict(), tmp_path / "s.pt")
    data = json.loads(sninspect.analyze(tmp_path / "s.pt", device="cpu").to_json())
    assert {"checkpoint", "format", "device", "dtype", "layers", "lipschitz", "warnings"} <= set(data)
    assert {"matrix_product", "operator_product"} <= set(data["lipschitz"])
    fields = {"name", "dialect", "kind", "shape", "dim", "sigma_exact", "sigma_estimate", "sigma_rel_error",
              "sigma_effective", "cos_error_u", "cos_error_v", "spectral_gap", "stable_rank",
              "operator_bound", "operator_lower"}
    for layer in data["layers"]:
        assert fields <= set(layer)
        assert "singular_values" not in layer
    frame = sninspect.analyze(tmp_path / "s.pt", device="cpu").to_dataframe()
    assert list(frame["name"]) == ["0.weight", "2.weight"]
