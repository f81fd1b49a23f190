"""Graph bounds against closed forms and dense Jacobians: lower ≤ truth ≤ upper."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from graphnets import dense_norm, export, trained_resnet_d  # noqa: E402

import sninspect  # noqa: E402
from sninspect.audit.graph.analysis import GraphOptions, analyze_graph  # noqa: E402
from sninspect.audit.graph.interpret import GraphFunction, fold_constants  # noqa: E402
from sninspect.errors import InputError  # noqa: E402
from sninspect.io.exported import load_exported  # noqa: E402
from sninspect.linalg import operators  # noqa: E402
from sninspect.linalg.conv_bounds import conv_operator_bound  # noqa: E402

FAST = GraphOptions(starts=2, steps=4, power_steps=10)


def _report(module: nn.Module, example: torch.Tensor, tmp_path: Path, options: GraphOptions = FAST):
    return analyze_graph(export(module, example, tmp_path / "m.pt2"), options)


class Lambda(nn.Module):
    def __init__(self, fn, **params) -> None:  # noqa: ANN001
        super().__init__()
        self.fn = fn
        for name, value in params.items():
            setattr(self, name, nn.Parameter(value))

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.fn(self, x)


def test_linear_layer_is_sigma1_from_both_sides(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(7, 5)
    truth = float(np.linalg.svd(layer.weight.detach().double().numpy(), compute_uv=False)[0])
    report = _report(layer, torch.randn(1, 7), tmp_path)
    assert report.lower <= truth * (1 + 1e-9) <= report.upper * (1 + 1e-9)
    assert report.upper == pytest.approx(truth, rel=1e-9)
    assert report.lower == pytest.approx(truth, rel=1e-4)  # a linear map: the search finds σ1
    assert report.nodes[0].rule.startswith("linear: σ1")


def test_analyze_graph_is_public_and_takes_a_path_or_a_read_archive(tmp_path: Path) -> None:
    import sninspect

    torch.manual_seed(0)
    layer = nn.Linear(7, 5)
    truth = float(np.linalg.svd(layer.weight.detach().double().numpy(), compute_uv=False)[0])
    path = export(layer, torch.randn(1, 7), tmp_path / "m.pt2")
    options = sninspect.GraphOptions(lower=False)
    from_path = sninspect.analyze_graph(path, options)
    assert isinstance(from_path, sninspect.GraphReport)
    assert from_path.upper == pytest.approx(truth, rel=1e-9)
    assert sninspect.analyze_graph(load_exported(path), options).upper == from_path.upper
    assert not hasattr(sninspect, "graph_report")


@pytest.mark.parametrize("source", [3, None, b"m.pt2", ["m.pt2"]])
def test_analyze_graph_refuses_what_is_not_a_path_or_an_archive(source: object) -> None:
    with pytest.raises(sninspect.UsageError, match="analyze_graph: got a"):
        sninspect.analyze_graph(source)  # type: ignore[arg-type]


def test_analyze_graph_refuses_options_of_another_kind(tmp_path: Path) -> None:
    with pytest.raises(sninspect.UsageError, match="expected a sninspect.GraphOptions"):
        sninspect.analyze_graph(tmp_path / "m.pt2", sninspect.Options())  # type: ignore[arg-type]


def test_residual_linear_block(tmp_path: Path) -> None:
    torch.manual_seed(1)
    a = torch.randn(6, 6) * 0.3
    block = Lambda(lambda m, x: x + x @ m.a.T, a=a)
    identity_plus = np.eye(6) + a.double().numpy()
    truth = float(np.linalg.svd(identity_plus, compute_uv=False)[0])
    norm_a = float(np.linalg.svd(a.double().numpy(), compute_uv=False)[0])
    report = _report(block, torch.randn(1, 6), tmp_path)
    assert report.lower <= truth * (1 + 1e-9) <= report.upper * (1 + 1e-9)
    assert report.upper == pytest.approx(1 + norm_a, rel=1e-9)  # the sum rule: 1 + ‖A‖
    assert report.lower == pytest.approx(truth, rel=1e-4)
    assert any(n.rule.startswith("sum") for n in report.nodes)


def test_strided_conv_against_dense_jacobian(tmp_path: Path) -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    truth = dense_norm(lambda t: F.conv2d(t, conv.weight.detach(), None, 2, 1), x)
    report = _report(conv.float(), x.float(), tmp_path)
    assert report.lower <= truth * (1 + 1e-9) <= report.upper * (1 + 1e-9)
    assert report.lower == pytest.approx(truth, rel=1e-3)
    # the size-free per-layer bound the chain uses is ≥ the bound at this size
    assert report.chain_product >= report.upper * (1 - 1e-9)


def test_circulant_bound_at_a_small_size() -> None:
    """A 3×3 conv on a 4×4 map (pad 1): the circulant bound at 6×6 is certified (≥ the dense norm) and
    below the size-free frequency bound for a kernel whose symbol peaks between the 6-grid points."""
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, 1] = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)  # a row filter with a slanted tap
    weight[0, 0, 1, 2] = 0.5
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    truth = dense_norm(lambda t: F.conv2d(t, weight, padding=1), x)
    norm = operators.conv_norm_at(weight, x.shape, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1)
    frequency = operators.grouped_conv_bound(weight, 1, transposed=False)
    assert norm.lower <= truth * (1 + 1e-9) <= norm.upper * (1 + 1e-9) <= frequency * (1 + 1e-9)
    for stride, dilation in [(2, 1), (1, 2)]:
        op = lambda t, s=stride, d=dilation: F.conv2d(t, weight, stride=s, padding=1, dilation=d)  # noqa: E731
        x5 = torch.randn(1, 1, 5, 5, dtype=torch.float64)
        bound = operators.circulant_bound(weight, [7, 7], [dilation] * 2, 1)
        assert dense_norm(op, x5) <= bound * (1 + 1e-9)


@settings(max_examples=6, deadline=None)
@given(stride=st.integers(1, 3), padding=st.integers(0, 2), dilation=st.integers(1, 2),
       groups=st.sampled_from([1, 2]), size=st.integers(5, 9), transposed=st.booleans())
def test_conv_norm_at_size_brackets_the_dense_norm(stride: int, padding: int, dilation: int, groups: int,
                                                  size: int, transposed: bool) -> None:
    torch.manual_seed(stride * 100 + padding * 10 + size)
    weight = torch.randn(4, 2 if not transposed else 2, 3, 3, dtype=torch.float64)
    c_in = weight.shape[0] if transposed else weight.shape[1] * groups
    x = torch.randn(1, c_in, size, size, dtype=torch.float64)
    out_pad = [0, 0]

    def op(t: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.convolution(t, weight, None, [stride] * 2, [padding] * 2, [dilation] * 2,
                                          transposed, out_pad, groups)

    try:
        op(x)
    except RuntimeError:
        return  # a layer torch itself refuses (output smaller than one)
    truth = dense_norm(op, x)
    norm = operators.conv_norm_at(weight, x.shape, stride=[stride] * 2, padding=[padding] * 2,
                                  dilation=[dilation] * 2, groups=groups, transposed=transposed)
    assert norm.lower <= truth * (1 + 1e-9) <= norm.upper * (1 + 1e-9)
    assert norm.lower == pytest.approx(truth, rel=1e-2)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                                    dict(kernel_size=3, stride=1, ceil_mode=True)])
def test_avg_pool_norm_against_dense_jacobian(kwargs: dict) -> None:
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    truth = dense_norm(lambda t: F.avg_pool2d(t, **kwargs), x)
    norm = operators.nonnegative_norm_at(lambda t: F.avg_pool2d(t, **kwargs), x.shape)
    assert norm.lower <= truth * (1 + 1e-9) <= norm.upper * (1 + 1e-9)
    assert norm.lower == pytest.approx(truth, rel=1e-3)
    if kwargs == dict(kernel_size=2):
        assert norm.upper == pytest.approx(0.5, rel=1e-9)  # 1/√4, exact by the Schur test


def test_max_pool_bound_holds(tmp_path: Path) -> None:
    pool = Lambda(lambda m, x: F.max_pool2d(x, 3, stride=2, padding=1))
    report = _report(pool, torch.randn(1, 2, 8, 8), tmp_path)
    assert report.upper == pytest.approx(math.sqrt(4))  # interior inputs lie in 2×2 windows
    assert report.lower <= report.upper


def test_activation_constants_against_a_fine_grid() -> None:
    grid = torch.linspace(-12, 12, 480_001, dtype=torch.float64, requires_grad=True)
    for name, fn, args in [("gelu", F.gelu, []), ("silu", F.silu, []), ("sigmoid", torch.sigmoid, []),
                           ("tanh", torch.tanh, []), ("elu", F.elu, [1.0])]:
        (derivative,) = torch.autograd.grad(fn(grid).sum(), grid)
        sup = float(derivative.abs().max())
        constant = operators.activation_lipschitz(name, args)
        assert constant is not None and sup <= constant * (1 + 1e-12), name
        assert constant == pytest.approx(sup, abs=1e-4), name
    assert operators.activation_lipschitz("leaky_relu", [0.2]) == 1.0
    assert operators.activation_lipschitz("gelu", ["tanh"]) is None  # no certified constant: refused


def test_sigmoid_and_concat_against_dense_jacobian(tmp_path: Path) -> None:
    torch.manual_seed(3)
    a, b = torch.randn(4, 5), torch.randn(3, 5)
    net = Lambda(lambda m, x: torch.cat([x @ m.a.T, torch.sigmoid(x @ m.b.T)], dim=1), a=a, b=b)
    report = _report(net, torch.randn(1, 5), tmp_path)
    norm_a = float(torch.linalg.matrix_norm(a.double(), 2))
    norm_b = float(torch.linalg.matrix_norm(b.double(), 2))
    assert report.upper == pytest.approx(math.sqrt(norm_a ** 2 + (0.25 * norm_b) ** 2), rel=1e-9)
    cat_only = float(torch.linalg.matrix_norm(torch.cat([a, b]).double(), 2))
    assert report.lower <= report.upper
    assert report.lower >= norm_a * (1 - 1e-3)  # J = [A; diag(σ')B] with σ' ≤ 1/4: ≥ ‖A‖
    assert cat_only > 0
    assert "root-sum-square" in {n.rule for n in report.nodes}


def test_broadcast_scale_and_batchnorm_against_dense_jacobian(tmp_path: Path) -> None:
    torch.manual_seed(4)
    bn = nn.BatchNorm2d(3)
    bn.running_var.uniform_(0.2, 2.0)
    bn.running_mean.normal_()
    bn.weight.data.normal_()
    scale = torch.randn(1, 3, 1, 4)
    net = Lambda(lambda m, x: m.bn(x.expand(-1, 3, -1, -1)) * m.s, s=scale)
    net.bn = bn
    x = torch.randn(1, 1, 5, 4)
    report = _report(net, x, tmp_path)
    truth = dense_norm(lambda t: net.double()(t), x.double())
    assert report.lower <= truth * (1 + 1e-9) <= report.upper * (1 + 1e-9)


def test_sn_weights_are_the_eval_weights(tmp_path: Path) -> None:
    """Both SN styles: the folded conv weight equals the module's eval-mode weight."""
    torch.manual_seed(5)
    legacy = nn.utils.spectral_norm(nn.Conv2d(2, 3, 3))
    modern = nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 4, 3))
    net = nn.Sequential(legacy, nn.ReLU(), modern)
    net.train()
    for _ in range(3):
        net(torch.randn(2, 2, 8, 8))
    graph = load_exported(export(net, torch.randn(1, 2, 8, 8), tmp_path / "sn.pt2"))
    env = fold_constants(graph)
    convs = [n for n in graph.nodes if n.target.endswith("conv2d.default")]
    with torch.no_grad():
        expected = [legacy.weight, modern.weight]
    for node, weight in zip(convs, expected, strict=True):
        assert torch.allclose(env[node.args[1].name], weight.double(), rtol=1e-6, atol=1e-7)
    function = GraphFunction(graph, env)
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        assert torch.allclose(function(x.double()).float(), net(x).reshape(-1), atol=1e-5)


def test_unknown_op_refused_naming_it(tmp_path: Path) -> None:
    net = Lambda(lambda m, x: torch.sort(x, dim=1).values)
    with pytest.raises(InputError, match=r"aten\.sort"):
        _report(net, torch.randn(1, 4), tmp_path)
    square = Lambda(lambda m, x: x * x)
    with pytest.raises(InputError, match="not Lipschitz"):
        _report(square, torch.randn(1, 4), tmp_path)


def test_sngan_resnet_discriminator(tmp_path: Path) -> None:
    model = trained_resnet_d(ch=8, size=16, steps=2, batch=4)
    report = _report(model, torch.randn(1, 3, 16, 16), tmp_path)
    assert 0 < report.lower <= report.upper
    assert report.ratio == pytest.approx(report.upper / report.lower)
    # the chain product is the checkpoint report's rule: ∏ size-free bounds of every conv and linear
    expected = 1.0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                expected *= conv_operator_bound(module.weight.double()).upper
            elif isinstance(module, nn.Linear):
                expected *= float(torch.linalg.matrix_norm(module.weight.double(), 2))
    assert report.chain_product == pytest.approx(expected, rel=1e-6)
    assert report.chain_over_upper == pytest.approx(report.chain_product / report.upper)
    assert [b.module for b in report.blocks] == ["block1", "block2", "block3", "block4", "fc"]
    for seed in range(3):  # ‖∇f(x)‖ at any point (dense, by autograd on the module) lies below the upper bound
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        assert dense_norm(model.double(), x) <= report.upper
    model.float()
    with torch.no_grad():  # the evaluator reproduces the module
        graph = load_exported(tmp_path / "m.pt2")
        x = torch.randn(1, 3, 16, 16)
        assert torch.allclose(GraphFunction(graph)(x.double()).float(), model(x).reshape(-1), atol=1e-4)


@pytest.mark.parametrize("form", ["sub", "rsub", "add_scaled_shift"])
def test_scaled_sums_against_closed_forms(form: str, tmp_path: Path) -> None:
    torch.manual_seed(7)
    a = torch.randn(5, 5) * 0.4
    eye = torch.eye(5, dtype=torch.float64)
    ad = a.double()
    if form == "sub":  # A x − 3 x
        net = Lambda(lambda m, x: torch.sub(x @ m.a.T, x, alpha=3.0), a=a)
        matrix, upper = ad - 3 * eye, None
    elif form == "rsub":  # x − 2 A x
        net = Lambda(lambda m, x: torch.rsub(x @ m.a.T, x, alpha=2.0), a=a)
        matrix, upper = eye - 2 * ad, None
    else:  # A (1 − 2x): a shift scaled by α, then a linear map (one linear run)
        net = Lambda(lambda m, x: torch.add(torch.ones(1, 5), x, alpha=-2.0) @ m.a.T, a=a)
        matrix, upper = -2 * ad, 2 * float(torch.linalg.matrix_norm(ad, 2))
    truth = float(torch.linalg.matrix_norm(matrix, 2))
    report = _report(net, torch.randn(1, 5), tmp_path)
    assert report.lower <= truth * (1 + 1e-9) <= report.upper * (1 + 1e-9), form
    assert report.lower == pytest.approx(truth, rel=1e-4)
    if upper is not None:
        assert report.upper == pytest.approx(upper, rel=1e-6)
