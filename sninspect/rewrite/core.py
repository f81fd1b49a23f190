"""strip, apply, convert: state dicts in, state dicts out (issue #3).

- ``strip``: every SN layer becomes its plain parameter, divided by what the model divides by in eval
  mode (``--sigma eval``), by σ1 (``exact``) or after N power steps (``power:N``).
- ``apply``: plain weights become the SN state of ``torch.nn.utils.spectral_norm`` or of the
  parametrize API, with u and v set to the exact top singular pair, so that σ̂ = σ1 from the first
  forward.
- ``convert``: SN moves between dialects. torch ↔ parametrize keeps u and v; mimicry, BigGAN and the
  cosgrove wrapper run one fresh power step at every eval forward, and that step is baked into the
  stored u, v so that the converted model's eval output equals the source's.

``strip_state``, ``apply_state`` and ``convert_state`` are pure (one state dict in, a new one out,
inputs untouched). ``strip``, ``apply`` and ``convert`` do the same for a checkpoint file: every model
in it is rewritten, the rest of the container is kept, and the result is written with
``io.save_checkpoint`` (atomic; never over the input). Nothing here prints.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import torch
from torch import Tensor

from sninspect import dialects
from sninspect.dialects import SNLayer
from sninspect.dialects.base import candidate_dims, module_and_param, vector
from sninspect.dialects.torch_legacy import recover_v
from sninspect.errors import LayerError, UsageError
from sninspect.io.load import (
    TORCH_SUFFIXES,
    Checkpoint,
    ModelState,
    display_name,
    load_checkpoint,
    save_checkpoint,
)
from sninspect.linalg.exact import exact_spectra
from sninspect.linalg.spectral import normalize, power_step, to_matrix

EPS = 1e-12
"""The eps of PyTorch's SN (``F.normalize``)."""

WEIGHT = re.compile(r"^(weight|\w+_weight|weight_[ih]h_l\d+(_reverse)?)$")
"""Parameter names ``apply`` treats as weights (``weight``, ``in_proj_weight``, LSTM's ``weight_hh_l0``;
not weight norm's ``weight_g`` / ``weight_v``)."""

TRANSPOSED_HINT = re.compile(r"transpose|deconv|convt|tconv|upconv|up_conv", re.IGNORECASE)
"""Names that suggest a ConvTranspose (which SN normalizes along dim=1)."""


class Style(StrEnum):
    """The PyTorch SN that ``apply`` and ``convert`` write."""

    torch = "torch"
    """``torch.nn.utils.spectral_norm``: ``P_orig``, ``P_u``, ``P_v``."""
    parametrize = "parametrize"
    """``torch.nn.utils.parametrizations.spectral_norm``: ``parametrizations.P.original``,
    ``parametrizations.P.0._u``, ``parametrizations.P.0._v``."""

    @property
    def dialect(self) -> str:
        """The name ``sninspect`` reports this SN under."""
        return "torch" if self is Style.torch else "torch-parametrize"


@dataclass(frozen=True)
class Sigma:
    """What ``strip`` divides by: ``eval`` | ``exact`` | ``power:N``."""

    mode: Literal["eval", "exact", "power"] = "eval"
    steps: int = 0
    """Power steps (``power`` only)."""

    @classmethod
    def parse(cls, text: str | Sigma) -> Sigma:
        if isinstance(text, Sigma):
            return text
        if text in ("eval", "exact"):
            return cls(text)  # type: ignore[arg-type]
        match = re.fullmatch(r"power:(\d+)", text)
        if match is None or int(match[1]) < 1:
            raise UsageError(f"--sigma {text!r}: expected eval, exact or power:N with N ≥ 1 (e.g. power:10)")
        return cls("power", int(match[1]))

    def __str__(self) -> str:
        return f"power:{self.steps}" if self.mode == "power" else self.mode


@dataclass
class State:
    """One model's state dict: raw key → tensor (in order) and torch's ``_metadata`` (module → dict)."""

    tensors: dict[str, Tensor]
    metadata: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> State:
        """From ``module.state_dict()`` (its ``_metadata`` included)."""
        return cls(dict(state_dict), _copy_metadata(getattr(state_dict, "_metadata", None)))

    def to_state_dict(self) -> OrderedDict[str, Tensor]:
        """What ``module.load_state_dict`` takes (with ``_metadata`` when there is one)."""
        out: OrderedDict[str, Tensor] = OrderedDict(self.tensors)
        if self.metadata is not None:
            out._metadata = self.metadata  # type: ignore[attr-defined]
        return out


@dataclass(frozen=True)
class LayerChange:
    """What happened to one layer."""

    name: str
    """Display name (the plain key, prefixed by the model when the file holds several)."""
    source: str
    """Dialect before (``none`` for a plain weight)."""
    target: str
    """Dialect after (``none`` once stripped)."""
    detail: str
    """The divisor baked in, the vectors written, or why nothing changed."""


@dataclass
class StateRewrite:
    """The result of rewriting one state dict."""

    state: State
    changes: list[LayerChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things the user should know (keys dropped or renamed)."""
    warnings: list[str] = field(default_factory=list)
    """Things that may be wrong (a layer that looks transposed, σ̂ ≤ 0)."""


# ----------------------------------------------------------------------------------------------
# Shared helpers


class Selector:
    """``--include`` / ``--exclude``: regexes searched in a layer's display name."""

    def __init__(self, include: str | None = None, exclude: str | None = None) -> None:
        self.include = _compile(include, "--include")
        self.exclude = _compile(exclude, "--exclude")

    def __call__(self, name: str) -> bool:
        if self.include is not None and not self.include.search(name):
            return False
        return self.exclude is None or not self.exclude.search(name)


def _compile(pattern: str | None, option: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise UsageError(f"{option} {pattern!r}: not a valid regular expression ({err})") from err


def _module_meta(module: str) -> str:
    """Raw key prefix ``a.b.`` → the ``_metadata`` key ``a.b`` (``""`` for the root)."""
    return module[:-1] if module.endswith(".") else module


def _weight64(tensors: Mapping[str, Tensor], key: str) -> Tensor:
    """A stored weight in float64 on the CPU, checked usable."""
    weight = tensors[key].detach().to(device="cpu", dtype=torch.float64)
    if weight.numel() == 0:
        raise LayerError(f"'{key}' is empty (shape {list(weight.shape)})")
    if not bool(torch.isfinite(weight).all()):
        raise LayerError(f"'{key}' holds {int((~torch.isfinite(weight)).sum())} NaN or infinite values")
    return weight


def _matrix(layer: SNLayer, weight: Tensor) -> Tensor:
    """The matrix the layer's dialect normalizes. Legacy ``spectral_norm`` views a 1-D weight as a
    column (n, 1), unlike parametrize's single row."""
    if layer.dialect == "torch" and weight.dim() == 1:
        return weight.reshape(-1, 1)  # (n, 1)
    return to_matrix(weight, layer.dim or 0)  # (rows, cols)


@contextmanager
def _layer(name: str) -> Iterator[None]:
    """A LayerError raised inside gets the layer's name in front."""
    try:
        yield
    except LayerError as err:
        raise LayerError(f"layer '{name}': {err}") from err


def _rebuild(
    tensors: Mapping[str, Tensor], replace_at: Mapping[str, list[tuple[str, Tensor]]], drop: set[str]
) -> dict[str, Tensor]:
    """``tensors`` with the entries in ``replace_at`` swapped in at their key's position and ``drop``
    left out; a new key that collides with a kept one is an error."""
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if key in replace_at:
            for new_key, new_value in replace_at[key]:
                taken = new_key in tensors and new_key not in drop and new_key not in replace_at
                if new_key in out or taken:
                    raise LayerError(f"cannot write '{new_key}': the state dict already has that key")
                out[new_key] = new_value
        elif key not in drop:
            out[key] = value
    return out


def _copy_metadata(metadata: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
    if metadata is None:
        return None
    return {module: {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in entry.items()}
            for module, entry in metadata.items()}


def _set_sn_version(metadata: dict[str, dict[str, Any]], module: str, param: str) -> None:
    """What ``SpectralNormStateDictHook`` saves: ``_metadata[module]['spectral_norm'][P.version] = 1``."""
    entry = metadata.setdefault(_module_meta(module), {})
    entry.setdefault("spectral_norm", {})[f"{param}.version"] = 1


def _clear_sn_metadata(
    metadata: dict[str, dict[str, Any]] | None, layer: SNLayer, keys: Iterable[str]
) -> None:
    """Remove what SN left in ``_metadata`` for ``layer`` (the legacy version entry, the entries of
    the parametrization submodules), so that a module without it loads with ``strict=True``."""
    if metadata is None:
        return
    entry = metadata.get(_module_meta(layer.module))
    if entry is not None and isinstance(entry.get("spectral_norm"), dict):
        entry["spectral_norm"].pop(f"{layer.param}.version", None)
        if not entry["spectral_norm"]:
            del entry["spectral_norm"]
    if layer.dialect == "torch-parametrize":
        head = f"{layer.module}parametrizations"
        still = any(k.startswith(head + ".") for k in keys)
        for meta_key in list(metadata):
            if meta_key == f"{head}.{layer.param}" or meta_key.startswith(f"{head}.{layer.param}."):
                del metadata[meta_key]
            elif meta_key == head and not still:
                del metadata[meta_key]


def _detect(state: State) -> tuple[list[SNLayer], list[str]]:
    shapes = {k: tuple(t.shape) for k, t in state.tensors.items()}
    return dialects.detect(shapes)


def _resolved(
    layer: SNLayer, tensors: Mapping[str, Tensor], name: str, transposed: re.Pattern[str] | None = None
) -> tuple[SNLayer, str | None]:
    """``layer`` with its dim decided (``transposed`` forces dim=1 where the u length allows it), and
    a warning when the dim was a guess: version None stores no v, so a square ConvTranspose fits
    both dims and u alone decides, unreliably before u has converged."""
    with _layer(name):
        layer = dialects.resolve(layer, tensors)
        if layer.dialect == "torch-parametrize":
            _check_parametrize_alone(layer, tensors)
    if layer.u_key is None or layer.v_key is not None or layer.dialect != "torch":
        return layer, None
    shape = tuple(tensors[layer.weight_key].shape)
    dims = candidate_dims(shape, tensors[layer.u_key].numel(), None)
    if transposed is not None and transposed.search(name) and 1 in dims:
        return replace(layer, dim=1), None
    if len(dims) < 2:
        return layer, None
    return layer, (f"layer '{name}': SN dim={layer.dim} guessed from u alone (no v stored, and both "
                   f"dims fit the shape {list(shape)}); if this is a ConvTranspose, pass --transposed")


def _check_parametrize_alone(layer: SNLayer, tensors: Mapping[str, Tensor]) -> None:
    """SN must be the only parametrization of P: the others are code, not state, and cannot be baked."""
    head = f"{layer.module}parametrizations.{layer.param}."
    others = [k for k in tensors if k.startswith(head) and k not in layer.keys]
    index = None if layer.u_key is None else layer.u_key[len(head) :].split(".")[0]
    if others or (index is not None and index != "0"):
        raise LayerError(
            f"'{layer.param}' has other parametrizations besides SN ({', '.join(others) or 'before it'}); "
            "their effect is not in the state dict, so it cannot be rewritten — --exclude this layer"
        )


def _cosgrove_wrappers(layers: Iterable[SNLayer]) -> dict[str, str]:
    """The cosgrove wrapper's inner prefix ``X.module.`` → the plain module's prefix ``X.``."""
    out = {}
    for layer in layers:
        if layer.dialect == "cosgrove" and layer.module.endswith("module."):
            out[layer.module] = layer.module[: -len("module.")]
    return out


def _unwrap(state: State, wrappers: Mapping[str, str], prefix: str = "") -> list[str]:
    """Move every key under a cosgrove wrapper's ``X.module.`` to ``X.`` (the plain architecture has
    no wrapper level); returns a note per wrapper."""
    if not wrappers:
        return []
    renamed: dict[str, Tensor] = {}
    for key, tensor in state.tensors.items():
        new = key
        for inner, outer in wrappers.items():
            if key.startswith(inner):
                new = outer + key[len(inner) :]
                break
        if new in renamed:
            raise LayerError(f"cannot move '{key}' to '{new}': that key exists already")
        renamed[new] = tensor
    state.tensors = renamed
    if state.metadata is not None:
        meta: dict[str, dict[str, Any]] = {}
        wrapper_entries = {_module_meta(outer) for outer in wrappers.values()}
        for key, value in state.metadata.items():
            if key in wrapper_entries:
                continue  # the wrapper module itself is gone
            new = key
            for inner, outer in wrappers.items():
                inner_meta = _module_meta(inner)
                if key == inner_meta or key.startswith(inner):
                    new = _module_meta(outer) + key[len(inner_meta) :]
                    break
            meta[new] = value
        state.metadata = meta
    shown = ", ".join(f"'{prefix}{inner}*' → '{prefix}{outer}*'" for inner, outer in wrappers.items())
    return [f"cosgrove wrapper level removed so the unwrapped module loads strictly: {shown}"]


def _scope(layers: Iterable[SNLayer], selector: Selector, prefix: str) -> list[SNLayer]:
    return [layer for layer in layers if selector(prefix + display_name(layer.name))]


# ----------------------------------------------------------------------------------------------
# strip


def strip_state(
    state: State, *, sigma: Sigma | str = "eval", include: str | None = None, exclude: str | None = None,
    transposed: str | None = None, prefix: str = "",
) -> StateRewrite:
    """Bake every SN layer of ``state`` into its plain parameter (float64, cast back to the stored
    dtype); every other key is kept. ``transposed`` as for :func:`convert_state`."""
    mode = Sigma.parse(sigma)
    selector = Selector(include, exclude)
    mark = _compile(transposed, "--transposed")
    found, warnings = _detect(state)
    layers = _scope(found, selector, prefix)
    replace_at: dict[str, list[tuple[str, Tensor]]] = {}
    drop: set[str] = set()
    changes, notes = [], []
    metadata = _copy_metadata(state.metadata)
    resolved = []
    for layer in layers:
        name = prefix + display_name(layer.name)
        layer, guess = _resolved(layer, state.tensors, name, mark)
        if guess and mode.mode != "eval":  # eval uses the stored buffer: the dim does not matter
            warnings.append(guess)
        with _layer(name):
            baked, divisor, detail = _bake(layer, state.tensors, mode)
        replace_at[layer.weight_key] = [(layer.plain_key, baked)]
        drop.update(layer.keys)
        changes.append(LayerChange(name, layer.dialect, "none", detail))
        if divisor < 0.0:
            warnings.append(f"layer '{name}': σ̂ < 0 flips the sign of the baked weight (as in the model)")
        resolved.append(layer)
    tensors = _rebuild(state.tensors, replace_at, drop)
    for layer in resolved:
        _clear_sn_metadata(metadata, layer, tensors)
    extras = sorted({prefix + k for layer in resolved for k in layer.extra_keys})
    if extras:
        notes.append(f"dropped SN bookkeeping: {_short(extras)}")
    out = State(tensors, metadata)
    notes += _unwrap(out, _cosgrove_wrappers(resolved), prefix)
    return StateRewrite(out, changes, notes, warnings)


def _bake(layer: SNLayer, tensors: Mapping[str, Tensor], sigma: Sigma) -> tuple[Tensor, float, str]:
    """The plain weight for ``layer`` in its stored dtype, the divisor (0 for a stored buffer) and a
    line saying what was done."""
    stored = tensors[layer.weight_key]
    weight = _weight64(tensors, layer.weight_key)
    matrix = _matrix(layer, weight)
    if sigma.mode == "eval" and layer.buffer_key is not None:
        buffer = tensors[layer.buffer_key]
        if tuple(buffer.shape) != tuple(stored.shape):
            raise LayerError(f"buffer '{layer.buffer_key}' has shape {list(buffer.shape)}, unlike the weight")
        _weight64(tensors, layer.buffer_key)  # finite
        return buffer.detach().clone().to(stored.dtype), 0.0, "= the stored eval buffer"
    if sigma.mode == "eval":
        divisor = dialects.by_name(layer.dialect).estimate(layer, matrix, tensors).sigma_hat
    elif sigma.mode == "exact":
        divisor = float(torch.linalg.matrix_norm(matrix, ord=2))
    else:
        divisor = _power_sigma(layer, matrix, tensors, sigma.steps)
    if not math.isfinite(divisor) or divisor == 0.0:
        raise LayerError(f"the divisor σ̂ = {divisor} ({sigma}) cannot be baked in")
    baked = (weight / divisor).to(stored.dtype)  # float64 math, stored dtype out
    return baked, divisor, f"÷ σ̂ = {divisor:.6g} ({sigma})"


def _power_sigma(layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor], steps: int) -> float:
    """σ̂ = u · (W v) after ``steps`` power steps from the stored vectors, in the dialect's own order."""
    if layer.dialect == "conv-operator":
        raise LayerError("conv-operator SN iterates on the convolution (stride, padding unknown here): "
                         "use --sigma eval or exact")
    if layer.u_key is None:  # 1-D parametrize: the exact L2 norm is what every step gives
        return max(float(torch.linalg.vector_norm(matrix)), EPS)
    left, u = _left_matrix(layer, matrix, tensors)
    if layer.dialect == "torch-parametrize":
        assert layer.v_key is not None  # Precondition: detected with both vectors
        v = vector(tensors, layer.v_key, matrix)
        for _ in range(steps):  # parametrize: u = n(W v), then v = n(Wᵀ u)
            u = normalize(left @ v)
            v = normalize(left.T @ u)
        return float(torch.dot(u, left @ v))
    sigma = 0.0
    for _ in range(steps):  # legacy, mimicry, BigGAN, cosgrove: v = n(Wᵀ u), then u = n(W v)
        sigma, u, _v = power_step(left, u, plus_eps=layer.dialect == "cosgrove")
    return sigma


def _left_matrix(layer: SNLayer, matrix: Tensor, tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The matrix whose left vector the stored u is (BigGAN's transpose=True stores the right one)."""
    assert layer.u_key is not None  # Precondition: called for dialects that store u
    u = vector(tensors, layer.u_key, matrix)
    if u.numel() == matrix.shape[0]:
        return matrix, u
    if layer.dialect == "biggan" and u.numel() == matrix.shape[1]:
        return matrix.T, u
    raise LayerError(f"u has {u.numel()} entries, expected {matrix.shape[0]} (rows of the weight matrix)")


# ----------------------------------------------------------------------------------------------
# SN state in the two PyTorch layouts


def _sn_entries(
    style: Style, module: str, param: str, weight: Tensor, u: Tensor | None, v: Tensor | None
) -> list[tuple[str, Tensor]]:
    """The keys and tensors of one SN parameter in ``style`` (u, v: ``None`` for 1-D parametrize)."""
    base = module + param
    if style is Style.torch:
        assert u is not None and v is not None  # Precondition: legacy SN always stores both
        return [(base + "_orig", weight), (base + "_u", u), (base + "_v", v)]
    head = f"{module}parametrizations.{param}."
    entries = [(head + "original", weight)]
    if u is not None and v is not None:
        entries += [(head + "0._u", u), (head + "0._v", v)]
    return entries


# ----------------------------------------------------------------------------------------------
# apply


def apply_state(
    state: State, *, style: Style | str = Style.torch, include: str | None = None, exclude: str | None = None,
    transposed: str | None = None, embeddings: bool = False, prefix: str = "",
) -> StateRewrite:
    """Put SN on every plain weight of ``state`` (≥ 2-D, floating point, a :data:`WEIGHT` name;
    embeddings only with ``embeddings``), with u, v the exact top singular pair of the matrix SN
    normalizes, so that u · (W v) = σ1."""
    target = Style(style)
    selector = Selector(include, exclude)
    mark = _compile(transposed, "--transposed")
    found, warnings = _detect(state)
    claimed = {k for layer in found for k in layer.keys}
    notes: list[str] = []
    if found:
        notes.append(f"{len(found)} layer(s) already under SN left as they are")
    picked: list[tuple[str, str, int]] = []  # (key, name, dim)
    skipped_embeddings, hinted = [], []
    for key, tensor in state.tensors.items():
        name = prefix + display_name(key)
        param = key.rpartition(".")[2]
        if key in claimed or tensor.dim() < 2 or not tensor.is_floating_point() or not WEIGHT.match(param):
            continue
        if not selector(name):
            continue
        if "emb" in name.lower() and not embeddings:
            skipped_embeddings.append(name)
            continue
        dim = 1 if mark is not None and mark.search(name) else 0
        if dim == 0 and TRANSPOSED_HINT.search(name):
            hinted.append(name)
        picked.append((key, name, dim))
    if skipped_embeddings:
        notes.append(f"embeddings left plain (--embeddings includes them): {_short(skipped_embeddings)}")
    if hinted:
        warnings.append(f"these look like ConvTranspose layers, which need dim=1: {_short(hinted)} — "
                        "mark them with --transposed REGEX if they are")

    matrices = []
    for key, name, dim in picked:
        with _layer(name):
            matrices.append(to_matrix(_weight64(state.tensors, key), dim))  # (rows, cols)
    spectra = exact_spectra(matrices)
    metadata = _copy_metadata(state.metadata)
    if target is Style.torch and metadata is None:
        metadata = {}  # what SpectralNormStateDictHook saves needs a place to go
    replace_at: dict[str, list[tuple[str, Tensor]]] = {}
    changes = []
    for (key, name, dim), spectrum in zip(picked, spectra, strict=True):
        if not spectrum.sigma1 > 0.0:
            raise LayerError(f"layer '{name}': the weight is all zeros (σ1 = 0, SN would divide by 0) — "
                             "--exclude it")
        stored = state.tensors[key]
        module, param = module_and_param(key)
        u = spectrum.u1.to(stored.dtype)  # (rows,)
        v = spectrum.v1.to(stored.dtype)  # (cols,)
        replace_at[key] = _sn_entries(target, module, param, stored, u, v)
        if target is Style.torch:
            assert metadata is not None
            _set_sn_version(metadata, module, param)
        detail = f"u, v = exact top singular pair (σ1 = {spectrum.sigma1:.6g}), dim={dim}"
        changes.append(LayerChange(name, "none", target.dialect, detail))
    tensors = _rebuild(state.tensors, replace_at, set())
    return StateRewrite(State(tensors, metadata), changes, notes, warnings)


# ----------------------------------------------------------------------------------------------
# convert


def convert_state(
    state: State, *, to: Style | str, include: str | None = None, exclude: str | None = None,
    transposed: str | None = None, prefix: str = "",
) -> StateRewrite:
    """Move every SN layer of ``state`` to the PyTorch dialect ``to`` with the same eval output.

    ``transposed``: a regex naming ConvTranspose layers, needed only for version-None state of a
    ConvTranspose with in == out (no v stored: both dims fit)."""
    target = Style(to)
    selector = Selector(include, exclude)
    mark = _compile(transposed, "--transposed")
    found, warnings = _detect(state)
    layers = _scope(found, selector, prefix)
    metadata = _copy_metadata(state.metadata)
    if target is Style.torch and metadata is None:
        metadata = {}  # what SpectralNormStateDictHook saves needs a place to go
    replace_at: dict[str, list[tuple[str, Tensor]]] = {}
    drop: set[str] = set()
    changes, notes, moved = [], [], []
    for layer in layers:
        name = prefix + display_name(layer.name)
        layer, guess = _resolved(layer, state.tensors, name, mark)
        if guess:
            warnings.append(guess)
        if layer.dialect == target.dialect and layer.buffer_key is None:
            changes.append(LayerChange(name, layer.dialect, layer.dialect, "already in this dialect"))
            continue
        if layer.dialect == "conv-operator":
            raise LayerError(f"layer '{name}': conv-operator SN divides by the convolution's norm, which "
                             "PyTorch SN cannot express — use `sninspect strip` (or --exclude it)")
        with _layer(name):
            (u, v), detail, extra_warning = _target_vectors(layer, state.tensors, target)
        stored = state.tensors[layer.weight_key]
        replace_at[layer.weight_key] = _sn_entries(target, layer.module, layer.param, stored, u, v)
        drop.update(layer.keys)
        if extra_warning:
            warnings.append(f"layer '{name}': {extra_warning}")
        changes.append(LayerChange(name, layer.dialect, target.dialect, detail))
        moved.append(layer)
    tensors = _rebuild(state.tensors, replace_at, drop)
    for layer in moved:
        _clear_sn_metadata(metadata, layer, tensors)
        if target is Style.torch:
            assert metadata is not None
            _set_sn_version(metadata, layer.module, layer.param)
    convs = [prefix + display_name(layer.name) for layer in moved
             if layer.dialect == "cosgrove" and state.tensors[layer.weight_key].dim() > 2]
    if convs:
        notes.append(f"cosgrove normalizes along dim 0: if any of {_short(convs)} is a ConvTranspose, "
                     "wrap it with spectral_norm(..., dim=0)")
    extras = sorted({prefix + k for layer in moved for k in layer.extra_keys})
    if extras:
        notes.append(f"dropped SN bookkeeping the PyTorch dialects do not keep: {_short(extras)}")
    out = State(tensors, metadata)
    notes += _unwrap(out, _cosgrove_wrappers(moved), prefix)
    return StateRewrite(out, changes, notes, warnings)


def _target_vectors(
    layer: SNLayer, tensors: Mapping[str, Tensor], target: Style
) -> tuple[tuple[Tensor | None, Tensor | None], str, str | None]:
    """u, v for the target dialect (stored dtype) such that its eval divisor u · (W v) equals the
    source's; a detail for the summary; a warning when the eval output cannot be kept exactly."""
    dtype = tensors[layer.weight_key].dtype
    weight = _weight64(tensors, layer.weight_key)
    matrix = _matrix(layer, weight)
    dialect = dialects.by_name(layer.dialect)
    if layer.dialect in ("torch", "torch-parametrize") and layer.v_key is not None:
        assert layer.u_key is not None
        u_stored, v_stored = tensors[layer.u_key].detach(), tensors[layer.v_key].detach()
        if target is Style.parametrize and weight.dim() == 1:
            # Legacy SN on a 1-D weight (a column); parametrize divides a 1-D weight by its exact norm.
            sigma_hat = dialect.estimate(layer, matrix, tensors).sigma_hat
            norm = float(torch.linalg.vector_norm(weight))
            return (None, None), "1-D: parametrize divides by the exact L2 norm", (
                f"1-D weight: eval divisor changes from σ̂ = {sigma_hat:.6g} to ‖W‖ = {norm:.6g}")
        return (u_stored.reshape(-1).clone(), v_stored.reshape(-1).clone()), "u, v kept", None
    if layer.dialect == "torch-parametrize":  # 1-D parametrize → legacy: u = W/‖W‖, v = [1]
        norm = max(float(torch.linalg.vector_norm(weight)), EPS)
        u = (weight / norm).to(dtype)  # (n,)
        v = torch.ones(1, dtype=dtype)  # (1,): legacy SN views a 1-D weight as an (n, 1) column
        return (u, v), f"1-D: u = W/‖W‖, v = [1] (σ̂ = ‖W‖ = {norm:.6g})", None
    if layer.dialect == "torch":  # version None: v as PyTorch's load hook recovers it
        estimate = dialect.estimate(layer, matrix, tensors)
        assert layer.u_key is not None and estimate.u is not None
        v = recover_v(matrix, estimate.u, estimate.sigma_hat)
        detail = f"version None → 1: v recovered as PyTorch's load hook does (σ̂ = {estimate.sigma_hat:.6g})"
        note = next((n for n in estimate.notes if n.startswith("buffer vs")), None)
        return (tensors[layer.u_key].detach().reshape(-1).clone(), v.to(dtype)), detail, (
            f"the stored eval buffer is replaced by W/σ̂ ({note})" if note else None)
    # mimicry, BigGAN, cosgrove: bake the eval forward's fresh power step into u, v.
    left, u0 = _left_matrix(layer, matrix, tensors)
    sigma, u_new, v_new = power_step(left, u0, plus_eps=layer.dialect == "cosgrove")
    if left is matrix:
        u, v = u_new, v_new
    else:  # BigGAN transpose=True: the step ran on Wᵀ, so its (u', v) are W's (v, u)
        u, v = v_new, u_new
    detail = f"eval's power step baked into u, v (σ̂ = {sigma:.6g})"
    return (u.to(dtype), v.to(dtype)), detail, None


def _short(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ----------------------------------------------------------------------------------------------
# Checkpoint files


@dataclass(frozen=True)
class Rewrite:
    """What ``strip`` / ``apply`` / ``convert`` did to a checkpoint file (or would do: ``dry_run``)."""

    operation: str
    """``strip``, ``apply`` or ``convert``."""
    source: str
    """The input checkpoint."""
    output: str
    """The file written (or that a dry run would write)."""
    output_format: str
    """``torch`` or ``safetensors`` (from the output's extension)."""
    changes: tuple[LayerChange, ...]
    """One entry per layer rewritten (or left as it was, with the reason)."""
    notes: tuple[str, ...]
    """Keys dropped, renamed or moved, and why."""
    warnings: tuple[str, ...]
    """Things that may need the user's attention."""
    written: bool
    """False for a dry run."""

    def summary(self) -> list[str]:
        """Lines for the terminal: what changed, then notes and warnings."""
        verb = "wrote" if self.written else "dry run, would write"
        lines = [f"{self.operation} {self.source}: {verb} {self.output} ({self.output_format}), "
                 f"{len(self.changes)} layer(s)"]
        width = max((len(c.name) for c in self.changes), default=0)
        lines += [f"  {c.name:<{width}}  {c.source} → {c.target}  {c.detail}" for c in self.changes]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


PathLike = str | os.PathLike[str]


def output_format(output: PathLike) -> str:
    """``torch`` or ``safetensors``, from the output's extension (whatever the input was)."""
    suffix = os.fspath(output).lower()
    if suffix.endswith(".safetensors"):
        return "safetensors"
    if suffix.endswith(TORCH_SUFFIXES):
        return "torch"
    raise UsageError(f"{os.fspath(output)}: unknown output extension; use .pt, .pth, .ckpt, .bin or "
                     ".safetensors")


def strip(
    path: PathLike, output: PathLike, *, sigma: Sigma | str = "eval", key: str | None = None,
    include: str | None = None, exclude: str | None = None, transposed: str | None = None,
    keep_optimizer: bool = False, force: bool = False, dry_run: bool = False, unsafe_load: bool = False,
) -> Rewrite:
    """Bake SN into plain weights: ``sninspect.strip("D.pt", "D_plain.safetensors")``.

    Every SN layer becomes its plain parameter divided by ``sigma`` (``eval``: what the model divides
    by in eval mode; ``exact``: σ1; ``power:N``: after N power steps); the rest of the checkpoint is
    kept. Optimizer state (it refers to the SN parameters) is dropped unless ``keep_optimizer``.
    """
    mode = Sigma.parse(sigma)
    return _rewrite_file(
        "strip", path, output,
        lambda state, prefix: strip_state(state, sigma=mode, include=include, exclude=exclude,
                                          transposed=transposed, prefix=prefix),
        provenance={"sigma": str(mode)}, key=key, keep_optimizer=keep_optimizer, force=force,
        dry_run=dry_run, unsafe_load=unsafe_load,
    )


def apply(
    path: PathLike, output: PathLike, *, style: Style | str = Style.torch, key: str | None = None,
    include: str | None = None, exclude: str | None = None, transposed: str | None = None,
    embeddings: bool = False, keep_optimizer: bool = False, force: bool = False, dry_run: bool = False,
    unsafe_load: bool = False,
) -> Rewrite:
    """Add SN to plain weights, u and v set to the exact top singular pair (σ̂ = σ1 from the start).

    ``transposed``: a regex naming ConvTranspose layers (SN dim=1); a plain checkpoint cannot tell
    them from convolutions. Embeddings get SN only with ``embeddings=True``; 1-D tensors never.
    """
    target = _style(style)
    return _rewrite_file(
        "apply", path, output,
        lambda state, prefix: apply_state(state, style=target, include=include, exclude=exclude,
                                          transposed=transposed, embeddings=embeddings, prefix=prefix),
        provenance={"style": str(target)}, key=key, keep_optimizer=keep_optimizer, force=force,
        dry_run=dry_run, unsafe_load=unsafe_load,
    )


def convert(
    path: PathLike, output: PathLike, *, to: Style | str, key: str | None = None, include: str | None = None,
    exclude: str | None = None, transposed: str | None = None, keep_optimizer: bool = False,
    force: bool = False, dry_run: bool = False, unsafe_load: bool = False,
) -> Rewrite:
    """Move SN to the PyTorch dialect ``to`` (``torch`` or ``parametrize``) with the same eval output."""
    target = _style(to)
    return _rewrite_file(
        "convert", path, output,
        lambda state, prefix: convert_state(state, to=target, include=include, exclude=exclude,
                                            transposed=transposed, prefix=prefix),
        provenance={"to": str(target)}, key=key, keep_optimizer=keep_optimizer, force=force,
        dry_run=dry_run, unsafe_load=unsafe_load,
    )


def _style(style: Style | str) -> Style:
    try:
        return Style(style)
    except ValueError:
        raise UsageError(f"style {style!r}: expected torch or parametrize") from None


def _rewrite_file(
    operation: str, path: PathLike, output: PathLike, rewrite: Callable[[State, str], StateRewrite], *,
    provenance: dict[str, str], key: str | None, keep_optimizer: bool, force: bool, dry_run: bool,
    unsafe_load: bool,
) -> Rewrite:
    """Load ``path``, rewrite every model in it, rebuild the container for the output format and
    (unless ``dry_run``) write it atomically."""
    fmt = output_format(output)
    checkpoint = load_checkpoint(path, key=key, unsafe_load=unsafe_load)
    several = len(checkpoint.models) > 1
    done: list[tuple[ModelState, StateRewrite]] = []
    for model in checkpoint.models:
        state = State(dict(model.tensors), _copy_metadata(model.torch_metadata))
        done.append((model, rewrite(state, model.name + "." if several else "")))
    changes = [c for _, r in done for c in r.changes]
    notes = [n for _, r in done for n in r.notes]
    warnings = [w for _, r in done for w in r.warnings]
    if not any(c.source != c.target for c in changes):
        warnings.append(f"nothing to {operation}: the output is a copy of the input")
    drop_optimizer = not keep_optimizer and any(c.source != c.target for c in changes)
    metadata: dict[str, str] | None = None
    payload: object
    if fmt == "torch":
        payload, more = _torch_payload(checkpoint, done, drop_optimizer)
    else:
        stamp = {"operation": operation, "source": os.path.basename(os.fspath(path)), **provenance,
                 "version": _version()}
        payload, metadata, more = _safetensors_payload(checkpoint, done, stamp, drop_optimizer)
    notes += more
    if not dry_run:
        save_checkpoint(output, payload, inputs=[path], force=force, metadata=metadata)
    elif os.path.exists(output):
        same = os.path.exists(path) and os.path.samefile(output, path)
        warnings.append(f"{os.fspath(output)} is the input: the real run will refuse it" if same else
                        f"{os.fspath(output)} exists: the real run needs --force" if not force else
                        f"{os.fspath(output)} exists and will be replaced (--force)")
    return Rewrite(operation, os.fspath(path), os.fspath(output), fmt, tuple(changes), tuple(notes),
                   tuple(warnings), written=not dry_run)


def _version() -> str:
    from sninspect._version import __version__

    return __version__


def _is_optimizer_state(value: object) -> bool:
    """An ``optimizer.state_dict()`` (or a list of them, as Lightning saves ``optimizer_states``)."""
    if isinstance(value, Mapping):
        return "state" in value and "param_groups" in value
    if isinstance(value, list | tuple) and value:
        return all(_is_optimizer_state(v) for v in value)
    return False


def _with_state(original: object, state: State) -> OrderedDict[str, Any]:
    """The rewritten state dict, keeping the original's non-tensor entries (rare) at the end."""
    out: OrderedDict[str, Any] = state.to_state_dict()
    if isinstance(original, Mapping):
        for k, v in original.items():
            if not isinstance(v, Tensor) and k not in out:
                out[k] = v
    return out


def _replace_at(container: object, path: tuple[str, ...], value: object) -> object:
    """``container`` with the entry at ``path`` (io's model paths: dict keys as text, list indices)
    replaced by ``value``; the dicts and lists on the way are copied, the input is untouched."""
    if not path:
        return value
    part, rest = path[0], path[1:]
    if isinstance(container, Mapping):
        key = part if part in container else next((k for k in container if str(k) == part), part)
        copy = type(container)(container) if isinstance(container, dict) else dict(container)
        copy[key] = _replace_at(container[key], rest, value)
        return copy
    assert isinstance(container, list | tuple)  # Precondition: io found a model along this path
    items = list(container)
    items[int(part)] = _replace_at(items[int(part)], rest, value)
    return items if isinstance(container, list) else tuple(items)


def _drop_optimizers(
    container: object, keep: set[tuple[str, ...]], at: tuple[str, ...] = ()
) -> tuple[object, list[str]]:
    """``container`` without optimizer states (looked for in nested dicts, not inside ``keep``)."""
    if not isinstance(container, Mapping) or at in keep:
        return container, []
    out = type(container)() if isinstance(container, dict) else {}
    dropped: list[str] = []
    for k, v in container.items():
        here = (*at, str(k))
        if here not in keep and _is_optimizer_state(v):
            dropped.append(".".join(here))
            continue
        out[k], more = _drop_optimizers(v, keep, here)
        dropped += more
    return out, dropped


def _optimizer_note(dropped: list[str]) -> str:
    return (f"optimizer state dropped ({_short(dropped)}): it refers to the SN parameters; "
            "--keep-optimizer keeps it")


def _torch_payload(
    checkpoint: Checkpoint, done: list[tuple[ModelState, StateRewrite]], drop_optimizer: bool
) -> tuple[object, list[str]]:
    """The object to ``torch.save``: the original container with each model's state replaced."""
    container: object = checkpoint.container if checkpoint.container is not None else {}
    notes: list[str] = []
    for model, result in done:
        original = _get(checkpoint.container, tuple(model.path))
        container = _replace_at(container, tuple(model.path), _with_state(original, result.state))
    if drop_optimizer:
        container, dropped = _drop_optimizers(container, {tuple(m.path) for m, _ in done})
        if dropped:
            notes.append(_optimizer_note(dropped))
    if checkpoint.format.startswith("safetensors") and checkpoint.metadata:
        notes.append("the safetensors metadata is not carried into a .pt file")
    return container, notes


def _get(container: object, path: tuple[str, ...]) -> object:
    for part in path:
        if isinstance(container, Mapping):
            container = next((v for k, v in container.items() if str(k) == part), None)
        elif isinstance(container, list | tuple) and part.isdigit() and int(part) < len(container):
            container = container[int(part)]
        else:
            return None
    return container


def _safetensors_payload(
    checkpoint: Checkpoint, done: list[tuple[ModelState, StateRewrite]], stamp: dict[str, str],
    drop_optimizer: bool,
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Tensors (prefixed by the model when the file holds several) and string metadata: the input's
    safetensors metadata, or the wrapper's JSON-able entries, plus a provenance entry."""
    several = len(done) > 1
    tensors: dict[str, Tensor] = {}
    for model, result in done:
        prefix = model.name + "." if several else ""
        tensors.update({prefix + k: t for k, t in result.state.tensors.items()})
    metadata: dict[str, str] = {str(k): str(v) for k, v in (checkpoint.metadata or {}).items()}
    notes: list[str] = []
    if isinstance(checkpoint.container, Mapping) and not checkpoint.format.startswith("safetensors"):
        models = {tuple(m.path)[0] for m, _ in done if tuple(m.path)}
        kept, left = [], []
        optimizers = []
        for k, v in checkpoint.container.items():
            if k in models:
                continue
            if _is_optimizer_state(v):
                optimizers.append(str(k))
                continue
            try:
                metadata[str(k)] = v if isinstance(v, str) else json.dumps(v)
                kept.append(str(k))
            except (TypeError, ValueError):
                left.append(str(k))
        if kept:
            notes.append(f"wrapper entries kept as safetensors metadata (JSON): {_short(kept)}")
        if left:
            notes.append(f"safetensors holds tensors and strings only; left out: {_short(left)}")
        if optimizers:
            notes.append(_optimizer_note(optimizers) if drop_optimizer else
                         f"optimizer state cannot go into safetensors, left out: {_short(optimizers)}")
    metadata["sninspect"] = json.dumps(stamp, sort_keys=True)
    return tensors, metadata, notes
