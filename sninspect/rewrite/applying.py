"""``apply``: plain weights become the SN state of ``torch.nn.utils.spectral_norm`` or of the
parametrize API, with u and v set to the exact top singular pair, so that σ̂ = σ1 from the first
forward."""

from __future__ import annotations

from torch import Tensor

from sninspect.audit.options import Selector, compile_option
from sninspect.dialects import DialectName
from sninspect.dialects.base import module_and_param, weight64
from sninspect.errors import LayerError, flag, option
from sninspect.io.load import display_name
from sninspect.linalg.exact import exact_spectra
from sninspect.linalg.spectral import to_matrix
from sninspect.rewrite.files import PathLike, rewrite_file
from sninspect.rewrite.options import TRANSPOSED_HINT, WEIGHT, RewriteOptions, Style, with_overrides
from sninspect.rewrite.state import State, StateRewrite, copy_metadata, detect, named, rebuild
from sninspect.rewrite.summary import LayerChange, Rewrite, short


def apply_state(
    state: State, *, style: Style | str = Style.torch, include: str | None = None, exclude: str | None = None,
    transposed: str | None = None, embeddings: bool = False, prefix: str = "",
) -> StateRewrite:
    """Put SN on every plain weight of ``state`` (≥ 2-D, floating point, a :data:`WEIGHT` name;
    embeddings only with ``embeddings``), with u, v the exact top singular pair of the matrix SN
    normalizes, so that u · (W v) = σ1."""
    target = Style(style)
    writer = target.writer
    found, warnings = detect(state)
    notes: list[str] = []
    if found:
        notes.append(f"{len(found)} layer(s) already under SN left as they are")
    picked, more_notes, more_warnings = _pick(state, {k for layer in found for k in layer.keys}, include=include,
                                              exclude=exclude, transposed=transposed, embeddings=embeddings,
                                              prefix=prefix)
    notes += more_notes
    warnings += more_warnings

    matrices = []
    for key, name, dim in picked:
        with named(name):
            matrices.append(to_matrix(weight64(state.tensors, key), dim))  # (rows, cols)
    spectra = exact_spectra(matrices)
    metadata = copy_metadata(state.metadata)
    if writer.writes_metadata and metadata is None:
        metadata = {}  # what the state-dict hook saves needs a place to go
    replace_at: dict[str, list[tuple[str, Tensor]]] = {}
    changes = []
    for (key, name, dim), spectrum in zip(picked, spectra, strict=True):
        if not spectrum.sigma1 > 0.0:
            raise LayerError(f"layer '{name}': the weight is all zeros (σ1 = 0, SN would divide by 0) — "
                             f"{option('exclude')} it")
        stored = state.tensors[key]
        module, param = module_and_param(key)
        u = spectrum.u1.to(stored.dtype)  # (rows,)
        v = spectrum.v1.to(stored.dtype)  # (cols,)
        replace_at[key] = writer.emit(module, param, stored, u, v)
        if metadata is not None:
            writer.mark_metadata(metadata, module, param)
        detail = f"u, v = exact top singular pair (σ1 = {spectrum.sigma1:.6g}), dim={dim}"
        changes.append(LayerChange(name, DialectName.none, target.dialect, detail))
    tensors = rebuild(state.tensors, replace_at, set())
    return StateRewrite(State(tensors, metadata), changes, notes, warnings)


def _pick(
    state: State, claimed: set[str], *, include: str | None, exclude: str | None, transposed: str | None,
    embeddings: bool, prefix: str,
) -> tuple[list[tuple[str, str, int]], list[str], list[str]]:
    """The plain weights to put SN on, as (key, display name, dim), with notes and warnings."""
    selector = Selector(include, exclude)
    mark = compile_option(transposed, "transposed")
    picked: list[tuple[str, str, int]] = []
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
    notes, warnings = [], []
    if skipped_embeddings:
        notes.append(f"embeddings left plain ({flag('embeddings')} includes them): {short(skipped_embeddings)}")
    if hinted:
        warnings.append(f"these look like ConvTranspose layers, which need dim=1: {short(hinted)} — "
                        f"mark them with {option('transposed', 'REGEX')} if they are")
    return picked, notes, warnings


def apply(
    path: PathLike, output: PathLike, options: RewriteOptions | None = None, *, style: Style | str = Style.torch,
    embeddings: bool = False, **overrides: object,
) -> Rewrite:
    """Add SN to plain weights, u and v set to the exact top singular pair (σ̂ = σ1 from the start).

    ``transposed``: a regex naming ConvTranspose layers (SN dim=1); a plain checkpoint cannot tell
    them from convolutions. Embeddings get SN only with ``embeddings=True``; 1-D tensors never.
    ``overrides`` are :class:`RewriteOptions` fields (``dry_run=True``, ``transposed="up"``).
    """
    options = with_overrides(options, overrides)
    target = Style.parse(style)
    return rewrite_file(
        "apply", path, output,
        lambda state, prefix: apply_state(state, style=target, include=options.include, exclude=options.exclude,
                                          transposed=options.transposed, embeddings=embeddings, prefix=prefix),
        provenance={"style": str(target)}, options=options,
    )
