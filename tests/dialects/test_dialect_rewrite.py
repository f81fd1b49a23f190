"""The part of the dialect interface the rewrites drive: each dialect owns its power step, the side
its stored u lives on, the eval weight it stores, the vectors a PyTorch SN needs, and (for the two
PyTorch layouts) the keys it emits."""

from __future__ import annotations

import pytest
import torch

from sninspect import dialects
from sninspect.dialects import DialectName, SNLayer
from sninspect.errors import LayerError
from sninspect.rewrite import Style


def test_every_registered_dialect_is_named_by_the_enum() -> None:
    names = [dialect.name for dialect in dialects.REGISTRY]
    assert all(isinstance(name, DialectName) for name in names)
    assert set(names) == set(DialectName) - {DialectName.none}


@pytest.mark.parametrize("style", list(Style))
def test_each_style_maps_to_a_dialect_that_emits(style: Style) -> None:
    writer = style.writer
    assert writer.name is style.dialect
    weight, u, v = torch.randn(3, 4), torch.randn(3), torch.randn(4)
    keys = [key for key, _ in writer.emit("D.c.", "weight", weight, u, v)]
    assert keys[0] in ("D.c.weight_orig", "D.c.parametrizations.weight.original")
    assert len(keys) == 3


def test_only_the_pytorch_layouts_are_targets() -> None:
    with pytest.raises(NotImplementedError):
        dialects.by_name(DialectName.mimicry).emit("", "weight", torch.randn(2, 2), None, None)


def test_legacy_target_stamps_the_version_metadata() -> None:
    metadata: dict[str, dict[str, object]] = {}
    torch_sn = dialects.by_name(DialectName.torch)
    assert torch_sn.writes_metadata
    torch_sn.mark_metadata(metadata, "D.c.", "weight")
    assert metadata == {"D.c": {"spectral_norm": {"weight.version": 1}}}
    assert not dialects.by_name(DialectName.parametrize).writes_metadata


def test_cosgrove_power_step_adds_eps_to_the_norm() -> None:
    matrix = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    plain = dialects.by_name(DialectName.mimicry).power_step(matrix, u)[0]
    cosgrove = dialects.by_name(DialectName.cosgrove).power_step(matrix, u)[0]
    assert plain == pytest.approx(2.0, rel=0, abs=1e-15)
    assert cosgrove < plain  # x / (‖x‖ + 1e-12)


def test_biggan_u0_on_the_input_side_runs_on_the_transpose() -> None:
    layer = SNLayer(DialectName.biggan, "", "weight", "weight", "weight", "u0", None, dim=0)
    matrix = torch.randn(3, 5, dtype=torch.float64)
    tensors = {"weight": matrix, "u0": torch.randn(1, 5)}
    left, u = dialects.of(layer).left_matrix(layer, matrix, tensors)
    assert left.shape == (5, 3) and u.numel() == 5
    mimicry = SNLayer(DialectName.mimicry, "", "weight", "weight", "weight", "u0", None, dim=0)
    with pytest.raises(LayerError, match="u has 5 entries, expected 3"):
        dialects.of(mimicry).left_matrix(mimicry, matrix, tensors)


def test_conv_operator_cannot_iterate_or_convert() -> None:
    layer = SNLayer(DialectName.conv_operator, "", "weight", "weight_orig", "weight", "weight_u", None,
                    "weight", dim=0)
    dialect = dialects.of(layer)
    tensors = {"weight_orig": torch.randn(2, 1, 3, 3), "weight": torch.randn(2, 1, 3, 3),
               "weight_u": torch.randn(1, 1, 4, 4)}
    stored = dialect.stored_eval_weight(layer, tensors)
    assert stored is not None and torch.equal(stored, tensors["weight"])
    with pytest.raises(LayerError, match="iterates on the convolution"):
        dialect.power_sigma(layer, torch.randn(2, 9), tensors, 3)
    with pytest.raises(LayerError, match="cannot express"):
        dialect.pytorch_vectors(layer, tensors, Style.torch.writer)


def test_legacy_version_none_lets_both_dims_of_a_square_conv_transpose_be_guessed() -> None:
    layer = SNLayer(DialectName.torch, "", "weight", "weight_orig", "weight", "weight_u", None, "weight")
    tensors = {"weight_orig": torch.randn(4, 4, 3, 3), "weight": torch.randn(4, 4, 3, 3), "weight_u": torch.randn(4)}
    assert dialects.of(layer).guessable_dims(layer, tensors) == [0, 1]
    with_v = SNLayer(DialectName.torch, "", "weight", "weight_orig", "weight", "weight_u", "weight_v")
    assert dialects.of(with_v).guessable_dims(with_v, tensors) == []


def test_parametrize_one_d_becomes_a_legacy_column() -> None:
    layer = SNLayer(DialectName.parametrize, "", "weight", "parametrizations.weight.original", "weight", dim=0)
    weight = torch.tensor([3.0, 4.0])
    vectors = dialects.of(layer).pytorch_vectors(layer, {layer.weight_key: weight}, Style.torch.writer)
    assert vectors.u is not None and vectors.v is not None
    assert torch.allclose(vectors.u, torch.tensor([0.6, 0.8])) and torch.equal(vectors.v, torch.ones(1))
    assert dialects.by_name(DialectName.parametrize).one_d_by_norm
