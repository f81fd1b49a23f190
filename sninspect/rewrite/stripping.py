"""``strip``: every SN layer becomes its plain parameter, divided by what the model divides by in eval
mode (``--sigma eval``), by σ1 (``exact``) or after N power steps (``power:N``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from sninspect import dialects
from sninspect.audit.options import Selector, compile_option
from sninspect.dialects import DialectName, SNLayer
from sninspect.errors import LayerError
from sninspect.io.load import display_name
from sninspect.rewrite.files import PathLike, rewrite_file
from sninspect.rewrite.options import RewriteOptions, Sigma, with_overrides
from sninspect.rewrite.state import (
    State,
    StateRewrite,
    clear_sn_metadata,
    copy_metadata,
    detect,
    named,
    rebuild,
    resolved,
    scope,
    unwrap,
)
from sninspect.rewrite.summary import LayerChange, Rewrite, short


def strip_state(
    state: State, *, sigma: Sigma | str = "eval", include: str | None = None, exclude: str | None = None,
    transposed: str | None = None, prefix: str = "", coeff: float | None = None,
) -> StateRewrite:
    """Bake every SN layer of ``state`` into its plain parameter (float64, cast back to the stored
    dtype); every other key is kept. ``transposed`` as for ``convert_state``; ``coeff``: soft SN's
    coefficient (not stored; default 1.0)."""
    mode = Sigma.parse(sigma)
    selector = Selector(include, exclude)
    mark = compile_option(transposed, "transposed")
    found, warnings = detect(state, coeff)
    layers = scope(found, selector, prefix)
    replace_at: dict[str, list[tuple[str, Tensor]]] = {}
    drop: set[str] = set()
    changes, notes = [], []
    done = []
    for layer in layers:
        name = prefix + display_name(layer.name)
        layer, guess = resolved(layer, state.tensors, name, mark)
        if guess and mode.mode != "eval":  # eval uses the stored buffer: the dim does not matter
            warnings.append(guess)
        with named(name):
            baked, divisor, detail = _bake(layer, state.tensors, mode)
        replace_at[layer.weight_key] = [(layer.plain_key, baked)]
        drop.update(layer.keys)
        changes.append(LayerChange(name, layer.dialect, DialectName.none, detail))
        if divisor < 0.0:
            warnings.append(f"layer '{name}': σ̂ < 0 flips the sign of the baked weight (as in the model)")
        done.append(layer)
    tensors = rebuild(state.tensors, replace_at, drop)
    metadata = copy_metadata(state.metadata)
    clear_sn_metadata(metadata, done, tensors)
    extras = sorted({prefix + k for layer in done for k in layer.extra_keys})
    if extras:
        notes.append(f"dropped SN bookkeeping: {short(extras)}")
    out = State(tensors, metadata)
    notes += unwrap(out, done, prefix)
    return StateRewrite(out, changes, notes, warnings)


def _bake(layer: SNLayer, tensors: Mapping[str, Tensor], sigma: Sigma) -> tuple[Tensor, float, str]:
    """The plain weight for ``layer`` in its stored dtype, the divisor (0 for a stored buffer) and a
    line saying what was done."""
    dialect = dialects.of(layer)
    weight, matrix = dialect.weight_matrix(layer, tensors)
    if sigma.mode == "eval":
        buffer = dialect.stored_eval_weight(layer, tensors)
        if buffer is not None:
            return buffer, 0.0, "= the stored eval buffer"
        divisor = dialect.estimate(layer, matrix, tensors).sigma_hat
    elif sigma.mode == "exact":
        divisor = float(torch.linalg.matrix_norm(matrix, ord=2))
    else:
        divisor = dialect.power_sigma(layer, matrix, tensors, sigma.steps)
    if not math.isfinite(divisor) or divisor == 0.0:
        raise LayerError(f"the divisor σ̂ = {divisor} ({sigma}) cannot be baked in")
    baked = (weight / divisor).to(tensors[layer.weight_key].dtype)  # float64 math, stored dtype out
    return baked, divisor, f"÷ σ̂ = {divisor:.6g} ({sigma})"


def strip(
    path: PathLike, output: PathLike, options: RewriteOptions | None = None, *, sigma: Sigma | str = "eval",
    coeff: float | None = None, **overrides: object,
) -> Rewrite:
    """Bake SN into plain weights: ``sninspect.strip("D.pt", "D_plain.safetensors")``.

    Every SN layer becomes its plain parameter divided by ``sigma`` (``eval``: what the model divides
    by in eval mode; ``exact``: σ1; ``power:N``: after N power steps); the rest of the checkpoint is
    kept. Optimizer state (it refers to the SN parameters) is dropped unless ``keep_optimizer``.
    ``coeff``: soft SN's coefficient, which the checkpoint does not store (default 1.0).
    ``overrides`` are :class:`RewriteOptions` fields (``dry_run=True``, ``include="main"``).
    """
    options = with_overrides(options, overrides)
    mode = Sigma.parse(sigma)
    return rewrite_file(
        "strip", path, output,
        lambda state, prefix: strip_state(state, sigma=mode, include=options.include, exclude=options.exclude,
                                          transposed=options.transposed, prefix=prefix, coeff=coeff),
        provenance={"sigma": str(mode)} | ({"coeff": f"{coeff:g}"} if coeff is not None else {}),
        options=options,
    )
