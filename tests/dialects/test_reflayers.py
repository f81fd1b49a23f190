"""The reference SN layers (tests/reflayers.py) and the shared fixtures (tests/conftest.py).

The reference layers must store exactly what the originals store and divide, in eval mode, by
what the originals divide by; the fixtures' σ̂ must be what each real module divides by.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import reflayers
import torch
import torch.nn.functional as F
from conftest import CASES, Trained, build_trained, eval_sigmas
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn.utils import parametrizations, spectral_norm

from sninspect import dialects
from sninspect.linalg.spectral import to_matrix


def close(a: Tensor, b: Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def sgd_steps(model: nn.Module, make_input: Callable[[], Tensor], steps: int = 3) -> None:
    """D(real) + D(fake) style steps: two forwards, one backward, one SGD step."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(steps):
        loss = model(make_input()).square().mean() - model(make_input()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, Tensor], after: dict[str, Tensor], key: str) -> bool:
    return not torch.equal(before[key], after[key])


# ----------------------------------------------------------------------------------------------
# key layouts, exactly as the originals' state dicts


@pytest.mark.parametrize(
    ("make", "layout"),
    [
        (lambda: reflayers.MimicrySNLinear(6, 5),
         [("weight", (5, 6)), ("bias", (5,)), ("sn_u", (1, 5)), ("sn_sigma", (1,))]),
        (lambda: reflayers.MimicrySNConv2d(3, 4, 3, padding=1),
         [("weight", (4, 3, 3, 3)), ("bias", (4,)), ("sn_u", (1, 4)), ("sn_sigma", (1,))]),
        (lambda: reflayers.MimicrySNEmbedding(7, 5),
         [("weight", (7, 5)), ("sn_u", (1, 7)), ("sn_sigma", (1,))]),
        (lambda: reflayers.BigGANSNLinear(6, 5, num_svs=2),
         [("weight", (5, 6)), ("bias", (5,)), ("u0", (1, 5)), ("sv0", (1,)), ("u1", (1, 5)), ("sv1", (1,))]),
        (lambda: reflayers.BigGANSNConv2d(3, 4, 3, transpose=True),
         [("weight", (4, 3, 3, 3)), ("bias", (4,)), ("u0", (1, 27)), ("sv0", (1,))]),
        (lambda: reflayers.BigGANSNEmbedding(7, 5), [("weight", (7, 5)), ("u0", (1, 7)), ("sv0", (1,))]),
        (lambda: reflayers.CosgroveSN(nn.Linear(6, 5)),
         [("module.bias", (5,)), ("module.weight_u", (5,)), ("module.weight_v", (6,)),
          ("module.weight_bar", (5, 6))]),
        (lambda: reflayers.CosgroveSN(nn.ConvTranspose2d(4, 3, 2)),
         [("module.bias", (3,)), ("module.weight_u", (4,)), ("module.weight_v", (12,)),
          ("module.weight_bar", (4, 3, 2, 2))]),
    ],
)
def test_state_dict_layout(make: Callable[[], nn.Module], layout: list[tuple[str, tuple[int, ...]]]) -> None:
    state = make().state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == layout


def test_cosgrove_vectors_are_frozen_parameters() -> None:
    layer: Any = reflayers.CosgroveSN(nn.Linear(6, 5))
    names = {n: p.requires_grad for n, p in layer.named_parameters()}
    assert names == {"module.bias": True, "module.weight_u": False, "module.weight_v": False,
                     "module.weight_bar": True}
    assert "weight" not in layer.module._parameters


# ----------------------------------------------------------------------------------------------
# train mode moves the state; eval mode divides by eval_divisor()

REF = {
    "mimicry-linear": (lambda: reflayers.MimicrySNLinear(6, 5), "linear6", ("sn_u", "sn_sigma")),
    "mimicry-conv2d": (lambda: reflayers.MimicrySNConv2d(3, 4, 3, padding=1), "conv", ("sn_u", "sn_sigma")),
    "mimicry-embedding": (lambda: reflayers.MimicrySNEmbedding(7, 5), "embed", ("sn_u", "sn_sigma")),
    "biggan-linear": (lambda: reflayers.BigGANSNLinear(6, 5), "linear6", ("u0", "sv0")),
    "biggan-linear-2svs-3itrs": (lambda: reflayers.BigGANSNLinear(6, 5, num_svs=2, num_itrs=3), "linear6",
                                 ("u0", "sv0", "u1", "sv1")),
    "biggan-linear-transpose": (lambda: reflayers.BigGANSNLinear(6, 5, transpose=True), "linear6",
                                ("u0", "sv0")),
    "biggan-conv2d": (lambda: reflayers.BigGANSNConv2d(3, 4, 3, padding=1), "conv", ("u0", "sv0")),
    "biggan-embedding": (lambda: reflayers.BigGANSNEmbedding(7, 5), "embed", ("u0", "sv0")),
    "cosgrove-linear": (lambda: reflayers.CosgroveSN(nn.Linear(6, 5)), "linear6",
                        ("module.weight_u", "module.weight_v")),
    "cosgrove-conv2d": (lambda: reflayers.CosgroveSN(nn.Conv2d(3, 4, 3, padding=1)), "conv",
                        ("module.weight_u", "module.weight_v")),
    "cosgrove-convT": (lambda: reflayers.CosgroveSN(nn.ConvTranspose2d(4, 4, 2)), "convT",
                       ("module.weight_u", "module.weight_v")),
}

INPUTS: dict[str, Callable[[], Tensor]] = {
    "linear6": lambda: torch.randn(8, 6),
    "conv": lambda: torch.randn(2, 3, 5, 5),
    "convT": lambda: torch.randn(2, 4, 3, 3),
    "embed": lambda: torch.randint(0, 7, (9,)),
}


def functional_eval(layer: nn.Module, x: Tensor, divisor: float) -> Tensor:
    """The layer's plain counterpart run with weight / divisor (what eval should compute)."""
    cosgrove = isinstance(layer, reflayers.CosgroveSN)
    inner: Any = layer.module if cosgrove else layer
    weight = (inner.weight_bar if cosgrove else inner.weight).detach() / divisor
    bias = inner.bias.detach() if getattr(inner, "bias", None) is not None else None
    if isinstance(inner, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(inner, nn.Embedding):
        return F.embedding(x, weight)
    if isinstance(inner, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, weight, bias, inner.stride, inner.padding,  # type: ignore[arg-type]
                                  inner.output_padding, inner.groups, inner.dilation)
    conv = F.conv1d if isinstance(inner, nn.Conv1d) else F.conv2d
    return conv(x, weight, bias, inner.stride, inner.padding, inner.dilation, inner.groups)


@pytest.mark.parametrize("case", list(REF))
def test_training_moves_the_state_and_eval_divides_by_eval_divisor(case: str) -> None:
    torch.manual_seed(3)
    make, inputs, moving = REF[case]
    layer: Any = make()
    make_input = INPUTS[inputs]
    before = snapshot(layer)
    sgd_steps(layer, make_input)
    trained = snapshot(layer)
    for key in moving:
        assert changed(before, trained, key), key
    layer.eval()
    divisor = layer.eval_divisor()  # type: ignore[operator]
    x = make_input()
    with torch.no_grad():
        out = layer(x)
    close(out, functional_eval(layer, x, divisor))
    after = snapshot(layer)
    if case.startswith("cosgrove"):
        # The cosgrove wrapper stores its step even in eval mode; the weight does not move.
        assert changed(trained, after, "module.weight_u") and changed(trained, after, "module.weight_v")
        assert torch.equal(trained["module.weight_bar"], after["module.weight_bar"])
    else:
        assert all(torch.equal(trained[k], after[k]) for k in trained), "eval must not store its step"


def test_stored_vectors_are_unit_after_training_but_not_at_init() -> None:
    torch.manual_seed(0)
    for layer, key in ((reflayers.MimicrySNLinear(6, 5), "sn_u"), (reflayers.BigGANSNLinear(6, 5), "u0")):
        assert not math.isclose(float(layer.state_dict()[key].norm()), 1.0, rel_tol=1e-3)  # randn at init
        sgd_steps(layer, INPUTS["linear6"], steps=1)
        assert math.isclose(float(layer.state_dict()[key].norm()), 1.0, rel_tol=1e-6)


def test_mimicry_sn_sigma_is_only_a_log() -> None:
    """sn_sigma is the σ of the last *training* forward; eval runs a fresh step instead."""
    torch.manual_seed(4)
    layer: Any = reflayers.MimicrySNLinear(6, 5)
    sgd_steps(layer, INPUTS["linear6"])
    x = INPUTS["linear6"]()
    layer.train()
    out = layer(x).detach()  # stores u and σ of this forward
    close(out, F.linear(x, layer.weight.detach() / layer.sn_sigma, layer.bias.detach()))
    with torch.no_grad():
        layer.weight.mul_(1.5)  # an optimizer step moved W after the last training forward
    layer.eval()
    assert not math.isclose(layer.eval_divisor(), float(layer.sn_sigma), rel_tol=1e-3)
    close(layer(x).detach(), functional_eval(layer, x, layer.eval_divisor()))


def test_biggan_num_itrs_runs_k_steps_in_train_but_one_in_eval() -> None:
    torch.manual_seed(5)
    layer: Any = reflayers.BigGANSNLinear(6, 5, num_itrs=3)
    w = layer.weight.detach().double()
    u = layer.u0.detach().double().reshape(-1)
    for _ in range(3):
        v = F.normalize(w.T @ u, dim=0)
        u = F.normalize(w @ v, dim=0)
    layer.train()
    layer(INPUTS["linear6"]())
    close(layer.u0.reshape(-1).double(), u)
    assert math.isclose(float(layer.sv0), float(u @ (w @ v)), rel_tol=1e-5)
    # eval: every pass restarts from u0, so the divisor is one step from the stored u0
    layer.eval()
    x = INPUTS["linear6"]()
    assert math.isclose(layer.eval_divisor(), reflayers.one_step_sigma(layer.weight, layer.u0), rel_tol=1e-12)
    close(layer(x).detach(), functional_eval(layer, x, layer.eval_divisor()))


def test_biggan_second_vector_is_orthogonalized() -> None:
    torch.manual_seed(6)
    layer: Any = reflayers.BigGANSNLinear(6, 5, num_svs=2, num_itrs=4)
    sgd_steps(layer, INPUTS["linear6"])
    assert abs(float(layer.u0 @ layer.u1.T)) < 1e-5
    assert float(layer.sv1) <= float(layer.sv0) + 1e-6


def test_biggan_transpose_iterates_on_the_transposed_matrix() -> None:
    torch.manual_seed(7)
    layer: Any = reflayers.BigGANSNLinear(6, 5, transpose=True)
    sgd_steps(layer, INPUTS["linear6"])
    assert layer.u0.shape == (1, 6)
    expected = reflayers.one_step_sigma(layer.weight.T, layer.u0)
    assert math.isclose(layer.eval_divisor(), expected, rel_tol=1e-12)


def test_cosgrove_eval_divisor_ignores_the_stored_v() -> None:
    torch.manual_seed(8)
    layer: Any = reflayers.CosgroveSN(nn.Linear(6, 5))
    sgd_steps(layer, INPUTS["linear6"])
    divisor = layer.eval_divisor()
    with torch.no_grad():
        layer.module.weight_v.normal_()
    assert layer.eval_divisor() == divisor
    layer.eval()
    x = INPUTS["linear6"]()
    close(layer(x).detach(), functional_eval(layer, x, divisor))


# ----------------------------------------------------------------------------------------------
# the fixtures: σ̂ is what each real module divides by


def run_eval(trained: Trained) -> tuple[Tensor, Tensor]:
    x = trained.make_input()
    with torch.no_grad():
        return x, trained.model(x)


def sn_param(trained: Trained) -> str:
    return "gain" if trained.kind == "vector" else "weight"


@pytest.mark.parametrize(("kind", "dialect"), CASES)
def test_fixture_sigma_is_the_eval_divisor(kind: str, dialect: str) -> None:
    trained = build_trained(kind, dialect)
    assert not trained.model.training
    param = sn_param(trained)
    (key, sigma), = trained.sigmas.items()
    assert sigma > 0
    layer: Any = trained.model[0]  # type: ignore[index]
    if dialect in ("torch", "torch-none"):
        assert key == f"0.{param}"
        run_eval(trained)  # the pre-hook sets the eval weight
        ratio = layer.weight_orig.detach().double() / layer.weight.detach().double()
        close(ratio, torch.full_like(ratio, sigma))
    elif dialect == "torch-parametrize":
        assert key == f"0.{param}"
        original = layer.parametrizations[param].original.detach().double()
        ratio = original / getattr(layer, param).detach().double()
        close(ratio, torch.full_like(ratio, sigma))
    else:
        assert key == ("0.module.weight" if dialect == "cosgrove" else "0.weight")
        x = trained.make_input()
        expected = functional_eval(layer, x, sigma)
        with torch.no_grad():
            close(trained.model(x), expected)


@pytest.mark.parametrize("kind", ["linear", "conv2d", "convT_square", "embedding"])
def test_fixture_version_none_is_what_pytorch_0_4_saved(kind: str) -> None:
    trained = build_trained(kind, "torch-none")
    state = trained.state
    assert "0.weight_v" not in state and {"0.weight_orig", "0.weight", "0.weight_u"} <= set(state)
    assert "spectral_norm" not in state._metadata["0"]  # type: ignore[attr-defined]
    # PyTorch's load hook: σ̂ = mean(W_orig / W); v solved from W_orig v ∝ u and rescaled to σ̂.
    expected = float((state["0.weight_orig"].double() / state["0.weight"].double()).mean())
    assert math.isclose(trained.sigmas["0.weight"], expected, rel_tol=1e-4)


def test_make_trained_saves_a_loadable_checkpoint(make_trained: Callable[..., Trained]) -> None:
    trained = make_trained("conv2d", "mimicry")
    assert trained.path is not None and trained.path.exists()
    loaded = torch.load(trained.path, weights_only=True)
    assert list(loaded) == list(trained.state)
    assert all(torch.equal(loaded[k], trained.state[k]) for k in loaded)


# ----------------------------------------------------------------------------------------------
# sninspect's dialects agree with the real modules on every fixture


@pytest.mark.parametrize(("kind", "dialect"), CASES)
def test_sninspect_estimate_matches_the_fixture(kind: str, dialect: str) -> None:
    trained = build_trained(kind, dialect)
    state = dict(trained.state)
    layers, warnings = dialects.detect({k: tuple(v.shape) for k, v in state.items()})
    assert warnings == []
    (layer,) = layers
    layer = dialects.resolve(layer, state)
    assert layer.dialect == ("torch" if dialect == "torch-none" else dialect)
    assert (layer.dim or 0) == trained.dim
    matrix = to_matrix(state[layer.weight_key].double(), layer.dim or 0)
    estimate = dialects.by_name(layer.dialect).estimate(layer, matrix, state)
    (sigma,) = trained.sigmas.values()
    assert layer.plain_key in trained.sigmas
    # A version-None file's v is recovered by solving a linear system: PyTorch's load hook does it in the
    # weight's float32, and its σ̂ moves by ~1.5e-6 with the BLAS thread count (conv1d: 0.9178683 on one
    # thread, 0.9178697 on two); sninspect solves in float64.
    tol = 1e-5 if dialect == "torch-none" else 1e-6
    assert math.isclose(estimate.sigma_hat, sigma, rel_tol=tol)


# ----------------------------------------------------------------------------------------------
# the committed samples: they load into their architectures, and sninspect's σ̂ is the module's

SAMPLES = Path(__file__).resolve().parents[2] / "sample_checkpoints"


def sample_model(name: str) -> tuple[nn.Module, dict[str, Tensor]]:
    """The architecture of a committed sample (from make_samples.py) with its state loaded."""
    sys.path.insert(0, str(SAMPLES))
    try:
        import make_samples as ms
    finally:
        sys.path.remove(str(SAMPLES))
    if name == "dcgan_sn_torch.pt":
        model: nn.Module = ms.DCGANDiscriminator(spectral_norm)
        state = torch.load(SAMPLES / name, weights_only=True)["netD"]
    elif name == "mlp_sn_parametrize.safetensors":
        model = ms.AECritic(parametrizations.spectral_norm)
        state = load_file(SAMPLES / name)
    elif name == "soft_sn_dcgan.pt":
        model = ms.DCGANDiscriminator(lambda m: reflayers.SoftSN(m, coeff=ms.SOFT_COEFF))
        state = torch.load(SAMPLES / name, weights_only=True)
    else:
        model = ms.DCGANDiscriminator(conv=reflayers.BigGANSNConv2d,
                                      linear=lambda i, o: reflayers.BigGANSNLinear(i, o, num_svs=2))
        state = torch.load(SAMPLES / name, weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval(), state


SAMPLE_FILES = ["dcgan_sn_torch.pt", "mlp_sn_parametrize.safetensors", "biggan_style_sn.pt", "soft_sn_dcgan.pt"]
SAMPLE_COEFF = {"soft_sn_dcgan.pt": 0.9}
"""Soft SN's coefficient of a sample (make_samples.SOFT_COEFF; not stored in the file)."""


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_samples_load_and_sninspect_matches_the_module(name: str) -> None:
    if not (SAMPLES / name).is_file():
        pytest.skip(f"{name} not generated (python sample_checkpoints/make_samples.py)")
    model, state = sample_model(name)
    expected = eval_sigmas(model)
    assert len(expected) >= 5
    found = {}
    layers, warnings = dialects.detect({k: tuple(v.shape) for k, v in state.items()}, coeff=SAMPLE_COEFF.get(name))
    assert warnings == []
    for layer in layers:
        layer = dialects.resolve(layer, state)
        matrix = to_matrix(state[layer.weight_key].double(), layer.dim or 0)
        found[layer.plain_key] = dialects.by_name(layer.dialect).estimate(layer, matrix, state).sigma_hat
    assert found.keys() == expected.keys()
    for key, sigma in expected.items():
        assert math.isclose(found[key], sigma, rel_tol=1e-6), key
