"""strip, apply, convert against real modules: train under each SN dialect (PyTorch's, or the
reference layers of tests/reflayers.py), rewrite the state dict, load it with ``strict=True`` into the
target architecture and compare eval outputs."""

from __future__ import annotations

from collections import OrderedDict
from functools import cache

import pytest
import reflayers
import torch
from conftest import CASES, Trained, build_trained, plain_layer, sn_dim
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm

import sninspect
from sninspect.errors import LayerError, UsageError
from sninspect.rewrite import Sigma, State, apply_state, convert_state, strip_state

RTOL = 1e-6
STYLES = ("torch", "parametrize")
MATRIX_KINDS = ("linear", "conv1d", "conv2d", "convT_square", "embedding")


def param_name(kind: str) -> str:
    return "gain" if kind == "vector" else "weight"


def plain(kind: str) -> nn.Sequential:
    return nn.Sequential(plain_layer(kind))


def wrapped(kind: str, style: str, dim: int) -> nn.Sequential:
    """The plain architecture with its layer under PyTorch's SN of ``style`` along ``dim``."""
    layer = plain_layer(kind)
    wrap = spectral_norm if style == "torch" else parametrizations.spectral_norm
    return nn.Sequential(wrap(layer, param_name(kind), dim=dim))


def eval_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x).double()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    error, scale = float((actual - expected).abs().max()), float(expected.abs().max())
    assert error <= rtol * scale, f"max error {error:.3g} vs scale {scale:.3g}"


def sigma1(weight: torch.Tensor, dim: int) -> float:
    w = weight.detach().double()
    if w.dim() == 1:
        return float(torch.linalg.vector_norm(w))
    return float(torch.linalg.matrix_norm(w.movedim(dim, 0).reshape(w.shape[dim], -1), ord=2))


def expected_output(trained: Trained, x: torch.Tensor) -> torch.Tensor:
    """The source model's first eval output (a version-None checkpoint: its stored buffer's)."""
    if trained.dialect != "torch-none":
        return eval_output(trained.model, x)
    target = plain(trained.kind)
    buffer = trained.state["0.weight"]
    target.load_state_dict({k: v for k, v in trained.state.items() if not k.startswith("0.weight_")} |
                           {"0.weight": buffer}, strict=True)
    return eval_output(target, x)


@cache
def trained_case(kind: str, dialect: str) -> tuple[Trained, torch.Tensor, torch.Tensor]:
    """A trained model, an input, and the first eval output on it, built once per case (the eval
    forward of cosgrove stores a power step, so the output is taken once, right after training).
    The rewrites are pure: sharing ``trained.state`` between tests is safe."""
    trained = build_trained(kind, dialect)
    x = trained.make_input()
    return trained, x, expected_output(trained, x)


# ----------------------------------------------------------------------------------------------
# strip


@pytest.mark.parametrize(("kind", "dialect"), CASES)
def test_strip_loads_strict_and_keeps_the_eval_output(kind: str, dialect: str) -> None:
    trained, x, expected = trained_case(kind, dialect)

    result = strip_state(State.from_state_dict(trained.state))
    target = plain(kind)
    target.load_state_dict(result.state.to_state_dict(), strict=True)

    assert_close(eval_output(target, x), expected)
    source_name = f"0.{'module.' if dialect == 'cosgrove' else ''}{param_name(kind)}"
    assert [(c.name, c.target) for c in result.changes] == [(source_name, "none")]
    meta = result.state.metadata or {}
    assert all("spectral_norm" not in entry for entry in meta.values())
    assert not any("parametrizations" in key or key.endswith("module") for key in meta)
    if dialect == "cosgrove":
        assert any("wrapper level removed" in note for note in result.notes)


@pytest.mark.parametrize("dialect", ["torch", "torch-parametrize", "mimicry", "cosgrove"])
def test_strip_exact_gives_unit_sigma_and_power_steps_converge(dialect: str) -> None:
    kind = "conv2d" if dialect == "mimicry" else "convT_square"
    trained = build_trained(kind, dialect)
    state = State.from_state_dict(trained.state)
    exact = strip_state(state, sigma="exact").state.tensors["0.weight"]
    assert sigma1(exact, trained.dim) == pytest.approx(1.0, rel=1e-6)
    many = strip_state(state, sigma=Sigma.parse("power:300")).state.tensors["0.weight"]
    assert sigma1(many, trained.dim) == pytest.approx(1.0, rel=1e-4)


def test_strip_power_one_is_one_training_forward() -> None:
    trained = build_trained("convT_square", "torch")
    one = strip_state(State.from_state_dict(trained.state), sigma="power:1").state.tensors["0.weight"]
    layer = trained.model[0]
    layer.train()
    with torch.no_grad():
        layer(trained.make_input())  # one power step from the stored vectors, then W / σ̂
    assert_close(one.double(), layer.weight.detach().double(), rtol=1e-5)


def test_strip_keeps_other_tensors_bn_stats_and_dtype() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Linear(4, 6)), nn.BatchNorm1d(6), nn.Linear(6, 2)).half()
    state = State.from_state_dict(model.state_dict())
    out = strip_state(state).state.tensors
    assert list(out) == ["0.bias", "0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                         "1.num_batches_tracked", "2.weight", "2.bias"]
    assert out["0.weight"].dtype == torch.float16
    for key in ("1.running_var", "1.num_batches_tracked", "2.weight"):
        assert torch.equal(out[key], state.tensors[key])
    assert "0.weight_orig" in state.tensors  # the input is untouched


def test_strip_include_exclude_and_bad_options() -> None:
    model = nn.Sequential(spectral_norm(nn.Linear(4, 4)), spectral_norm(nn.Linear(4, 4)))
    state = State.from_state_dict(model.state_dict())
    out = strip_state(state, exclude=r"^1\.").state.tensors
    assert "0.weight" in out and "1.weight_orig" in out
    with pytest.raises(UsageError, match="power:N"):
        strip_state(state, sigma="power:x")
    with pytest.raises(UsageError, match="include='\\('"):  # the library names keyword arguments
        strip_state(state, include="(")


def test_strip_nan_weight_names_the_layer() -> None:
    model = nn.Sequential(spectral_norm(nn.Linear(4, 4)))
    state = State.from_state_dict(model.state_dict())
    state.tensors["0.weight_orig"] = torch.full((4, 4), float("nan"))
    with pytest.raises(LayerError, match=r"layer '0.weight'.*NaN"):
        strip_state(state)


def test_strip_refuses_a_parametrization_chain() -> None:
    layer = nn.Linear(3, 3)
    torch.nn.utils.parametrize.register_parametrization(layer, "weight", nn.Identity())
    parametrizations.spectral_norm(layer)
    with pytest.raises(LayerError, match="other parametrizations"):
        strip_state(State.from_state_dict(layer.state_dict()))


# ----------------------------------------------------------------------------------------------
# apply


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_apply_loads_strict_and_divides_by_sigma1(kind: str, style: str) -> None:
    torch.manual_seed(5)
    source = plain(kind)
    dim = sn_dim(kind, "torch")
    result = apply_state(State.from_state_dict(source.state_dict()), style=style, embeddings=True,
                         transposed="0" if dim == 1 else None)
    target = wrapped(kind, style, dim)
    target.load_state_dict(result.state.to_state_dict(), strict=True)
    eval_output(target, plain_input(kind))  # the legacy hook sets module.weight in its forward
    effective = target[0].weight.detach().double()
    original = source[0].weight.detach().double()
    assert sigma1(effective, dim) == pytest.approx(1.0, rel=1e-6)
    assert_close(effective * sigma1(original, dim), original)


def plain_input(kind: str) -> torch.Tensor:
    return build_inputs[kind]()


build_inputs = {kind: build_trained(kind, "torch-parametrize", steps=0).make_input for kind in MATRIX_KINDS}


def test_apply_skips_vectors_and_embeddings_and_warns_about_transposition() -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(5, 3), "deconv": nn.ConvTranspose2d(2, 3, 3),
                           "bn": nn.BatchNorm2d(3), "fc": nn.Linear(3, 3)})
    result = apply_state(State.from_state_dict(model.state_dict()))
    assert [c.name for c in result.changes] == ["deconv.weight", "fc.weight"]
    assert "emb.weight" in result.state.tensors and "bn.weight" in result.state.tensors
    assert any("embeddings=True" in n for n in result.notes)
    assert any("deconv.weight" in w and "transposed=REGEX" in w for w in result.warnings)
    marked = apply_state(State.from_state_dict(model.state_dict()), transposed="deconv")
    assert not marked.warnings
    assert marked.state.tensors["deconv.weight_u"].shape == (3,)  # dim=1: out channels


def test_apply_picks_weights_by_name() -> None:
    state = State({"wn.weight_g": torch.rand(3, 1), "wn.weight_v": torch.randn(3, 3),
                   "attn.in_proj_weight": torch.randn(9, 3), "rnn.weight_hh_l0": torch.randn(8, 2),
                   "pos": torch.randn(4, 3)})
    result = apply_state(state)
    assert [c.name for c in result.changes] == ["attn.in_proj_weight", "rnn.weight_hh_l0"]


def test_apply_zero_weight_is_an_error() -> None:
    with pytest.raises(LayerError, match="all zeros"):
        apply_state(State({"fc.weight": torch.zeros(3, 3)}))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", ["linear", "conv2d", "convT_square"])
def test_strip_of_apply_has_unit_sigma(kind: str, style: str) -> None:
    torch.manual_seed(7)
    dim = sn_dim(kind, "torch")
    source = plain(kind)
    applied = apply_state(State.from_state_dict(source.state_dict()), style=style,
                          transposed="." if dim == 1 else None)
    stripped = strip_state(applied.state).state
    assert set(stripped.tensors) == set(source.state_dict())
    assert sigma1(stripped.tensors["0.weight"], dim) == pytest.approx(1.0, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# convert


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("kind", "dialect"), CASES)
def test_convert_keeps_the_eval_output(kind: str, dialect: str, style: str) -> None:
    trained, x, expected = trained_case(kind, dialect)
    if dialect == "torch-none":  # PyTorch ≥ 1 evaluates W / σ̂ with v recovered (as trained.model does)
        expected = eval_output(trained.model, x)
    state = State.from_state_dict(trained.state)
    ambiguous = (kind, dialect) == ("convT_square", "torch-none")  # no v, both dims fit: say so
    if ambiguous:
        assert any("transposed=" in w for w in convert_state(state, to=style).warnings)
    result = convert_state(state, to=style, transposed="0" if ambiguous else None)
    assert not any("transposed=" in w for w in result.warnings)
    if dialect == "torch-none":  # the stored buffer is what 0.4 used; PyTorch ≥ 1 uses W / σ̂
        assert any("buffer is replaced" in w for w in result.warnings)
    target = wrapped(kind, style, trained.dim)
    target.load_state_dict(result.state.to_state_dict(), strict=True)
    assert_close(eval_output(target, x), expected)
    if style == "torch":
        assert result.state.metadata is not None
        assert result.state.metadata["0"]["spectral_norm"] == {f"{param_name(kind)}.version": 1}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("options", [{"transpose": True}, {"num_svs": 2}])
def test_convert_biggan_transposed_and_several_vectors(style: str, options: dict[str, object]) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(reflayers.BigGANSNLinear(7, 5, **options))
    model.train()
    for _ in range(3):
        model(torch.randn(4, 7)).square().mean().backward()
    state = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    x = torch.randn(3, 7)
    expected = eval_output(model, x)
    result = convert_state(State(dict(state)), to=style)
    target = wrapped("linear", style, 0)
    target.load_state_dict(result.state.to_state_dict(), strict=True)
    assert_close(eval_output(target, x), expected)
    if "num_svs" in options:
        assert any("0.u1" in n and "0.sv1" in n for n in result.notes)


def test_convert_already_in_target_changes_nothing() -> None:
    trained = build_trained("linear", "torch")
    state = State.from_state_dict(trained.state)
    result = convert_state(state, to="torch")
    assert result.changes[0].detail == "already in this dialect"
    assert all(torch.equal(result.state.tensors[k], v) for k, v in state.tensors.items())


def test_convert_1d_legacy_to_parametrize_warns() -> None:
    torch.manual_seed(3)
    layer = spectral_norm(plain_layer("vector"), "gain", dim=0)
    layer.train()
    layer(torch.randn(2, 5))
    layer.gain_orig.data.mul_(1.5).add_(0.1)  # the stored u no longer matches the weight exactly
    result = convert_state(State.from_state_dict(layer.state_dict()), to="parametrize")
    assert any("exact L2 norm" in c.detail for c in result.changes)
    assert any("changes from" in w for w in result.warnings)


def test_convert_refuses_conv_operator() -> None:
    state = State({"c.weight_orig": torch.randn(2, 3, 3, 3), "c.weight": torch.randn(2, 3, 3, 3),
                   "c.weight_u": torch.randn(1, 3, 8, 8)})
    with pytest.raises(LayerError, match="conv-operator.*strip"):
        convert_state(state, to="torch")
    assert set(strip_state(state).state.tensors) == {"c.weight"}


# ----------------------------------------------------------------------------------------------
# math invariants and the public API


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_apply_then_strip_gives_the_normalized_weight(rows: int, cols: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    applied = apply_state(State({"w.weight": weight}))
    for sigma in ("eval", "exact", "power:3"):
        baked = strip_state(applied.state, sigma=sigma).state.tensors["w.weight"]
        assert torch.allclose(baked * torch.linalg.matrix_norm(weight, ord=2), weight, rtol=1e-9, atol=1e-12)


def test_public_api_exports() -> None:
    assert {"strip", "apply", "convert"} <= set(sninspect.__all__)
