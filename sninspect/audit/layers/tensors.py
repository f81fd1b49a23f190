"""The model's tensors as the audit reads them: every kind of tensor made a dense real one or refused.

- quantized tensors are dequantized (a note on the layer says so);
- sparse ones (COO, CSR, CSC, BSR, BSC) are densified, under the memory guard;
- meta (no data), complex, integer and boolean ones are refused with the reason
  (:class:`~sninspect.errors.TensorKindError`), which becomes the layer's error.

``layers`` and ``report`` decide which tensors are weight layers with :func:`is_weight_candidate`;
biases and normalisation layers (:func:`normalisation_modules`) never are.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping

import torch
from torch import Tensor

from sninspect.audit.memory import Budget
from sninspect.errors import TensorKindError

NORM_NAME = re.compile(r"(^|[._])(ln|gn|norm\w*|layer_?norm\w*|group_?norm\w*)\d*$", re.IGNORECASE)
"""A module named like a normalisation layer (``ln``, ``norm1``, ``layer_norm``, ``gn2``)."""


def normalisation_modules(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Module prefixes (``a.ln.``) of LayerNorm / GroupNorm-like layers: a ``weight`` without running
    statistics that has a ``bias`` of its own shape (a multi-dimensional affine, as
    ``nn.LayerNorm([C, H, W])`` saves) or sits in a module named like a norm (1-D weights only then
    when a bias goes with them, as before). They scale by a data-dependent statistic: not weight
    layers, and not globally Lipschitz."""
    found = []
    for key, shape in shapes.items():
        if not (key == "weight" or key.endswith(".weight")):
            continue
        module = key[: -len("weight")]
        if module + "running_var" in shapes:
            continue  # BatchNorm: its eval-mode factor is in the chain
        bias = shapes.get(module + "bias")
        named = NORM_NAME.search(module.rstrip(".")) is not None
        if len(shape) >= 2 and (bias == shape or named):
            found.append(module)
        elif len(shape) == 1 and bias is not None and named:
            found.append(module)
    return found


def is_bias(key: str) -> bool:
    """``a.bias``, ``in_proj_bias``: an additive term, never a weight layer."""
    last = key.rsplit(".", 1)[-1].lower()
    return last == "bias" or last.endswith("_bias")


def is_weight_candidate(key: str, tensor: Tensor, norm_modules: Collection[str] = ()) -> bool:
    """A tensor audited as a weight layer when no SN layer claims it: at least 2-D, not a bias nor the
    weight of a normalisation layer (``norm_modules``, from :func:`normalisation_modules`), and real
    floating point, or of a kind that only a weight would be saved as (complex, quantized), or an
    integer or boolean tensor named like a weight (refused as such, rather than silently skipped)."""
    if tensor.dim() < 2 or is_bias(key):
        return False
    if key.endswith("weight") and key[: -len("weight")] in norm_modules:
        return False
    if tensor.is_floating_point() or tensor.is_complex() or tensor.is_quantized:
        return True
    return "weight" in key.rsplit(".", 1)[-1].lower()


class UsableTensors(Mapping[str, Tensor]):
    """A read-only view of a model's tensors that hands out dense, real floating-point tensors, or
    raises :class:`TensorKindError`; converted tensors are kept (one conversion per key)."""

    def __init__(self, raw: Mapping[str, Tensor], budget: Budget) -> None:
        self.raw, self.budget = raw, budget
        self._converted: dict[str, Tensor] = {}
        self.notes: dict[str, str] = {}
        """What was done to a key's tensor to read it (dequantized, densified)."""

    def __getitem__(self, key: str) -> Tensor:
        if key in self._converted:
            return self._converted[key]
        tensor = self.raw[key]
        usable, note = usable_tensor(key, tensor, self.budget)
        if note is not None:
            self._converted[key], self.notes[key] = usable, note
        return usable

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __contains__(self, key: object) -> bool:
        return key in self.raw  # Mapping's default reads the item: an integer flag would be refused

    def __len__(self) -> int:
        return len(self.raw)

    def notes_for(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.notes[k] for k in keys if k in self.notes)


def usable_tensor(key: str, tensor: Tensor, budget: Budget) -> tuple[Tensor, str | None]:
    """``tensor`` as a dense real floating-point tensor and a note when it had to be converted."""
    kind = str(tensor.dtype).removeprefix("torch.")
    if tensor.device.type == "meta":
        raise TensorKindError(f"'{key}' is a meta tensor: a shape without data (saved from a model on the "
                              "meta device?)")
    note = None
    if tensor.is_quantized:
        budget.require(tensor.numel() * 4, f"dequantizing '{key}' ")
        tensor = tensor.dequantize()
        note = f"'{key}' is quantized ({kind}): dequantized to {str(tensor.dtype).removeprefix('torch.')}"
    elif tensor.layout != torch.strided:
        layout = str(tensor.layout).removeprefix("torch.")
        budget.require(tensor.numel() * tensor.element_size(), f"densifying sparse '{key}' ")
        tensor = tensor.to_dense()
        note = f"'{key}' is sparse ({layout}): densified"
    if tensor.is_complex():
        raise TensorKindError(f"'{key}' is complex ({kind}): SN weights are real, and dropping the imaginary "
                              "part would give wrong numbers")
    if not tensor.is_floating_point():
        what = "booleans" if tensor.dtype == torch.bool else f"integers ({kind})"
        raise TensorKindError(f"'{key}' holds {what}, not floating-point weights")
    return tensor, note
