"""``convert``: SN moves between dialects with the same eval output. torch ↔ parametrize keeps u and
v; mimicry, BigGAN and the cosgrove wrapper run one fresh power step at every eval forward, and that
step is baked into the stored u, v (each source dialect says how: ``Dialect.pytorch_vectors``)."""

from __future__ import annotations

from torch import Tensor

from sninspect import dialects
from sninspect.audit.options import Selector, compile_option
from sninspect.dialects import SNLayer
from sninspect.io.load import display_name
from sninspect.rewrite.files import PathLike, rewrite_file
from sninspect.rewrite.options import RewriteOptions, Style, with_overrides
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


def convert_state(
    state: State, *, to: Style | str, include: str | None = None, exclude: str | None = None,
    transposed: str | None = None, prefix: str = "",
) -> StateRewrite:
    """Move every SN layer of ``state`` to the PyTorch dialect ``to`` with the same eval output.

    ``transposed``: a regex naming ConvTranspose layers, needed only for version-None state of a
    ConvTranspose with in == out (no v stored: both dims fit)."""
    target = Style(to)
    writer = target.writer
    selector = Selector(include, exclude)
    mark = compile_option(transposed, "transposed")
    found, warnings = detect(state)
    layers = scope(found, selector, prefix)
    metadata = copy_metadata(state.metadata)
    if writer.writes_metadata and metadata is None:
        metadata = {}  # what the state-dict hook saves needs a place to go
    replace_at: dict[str, list[tuple[str, Tensor]]] = {}
    drop: set[str] = set()
    changes, notes, moved = [], [], []
    for layer in layers:
        name = prefix + display_name(layer.name)
        layer, guess = resolved(layer, state.tensors, name, mark)
        if guess:
            warnings.append(guess)
        if layer.dialect == writer.name and layer.buffer_key is None:
            changes.append(LayerChange(name, layer.dialect, layer.dialect, "already in this dialect"))
            continue
        with named(name):
            vectors = dialects.of(layer).pytorch_vectors(layer, state.tensors, writer)
        stored = state.tensors[layer.weight_key]
        replace_at[layer.weight_key] = writer.emit(layer.module, layer.param, stored, vectors.u, vectors.v)
        drop.update(layer.keys)
        if vectors.warning:
            warnings.append(f"layer '{name}': {vectors.warning}")
        changes.append(LayerChange(name, layer.dialect, target.dialect, vectors.detail))
        moved.append(layer)
    tensors = rebuild(state.tensors, replace_at, drop)
    for layer in moved:
        clear_sn_metadata(metadata, [layer], tensors)
        if metadata is not None:
            writer.mark_metadata(metadata, layer.module, layer.param)
    notes += _dim0_notes(moved, state, prefix)
    extras = sorted({prefix + k for layer in moved for k in layer.extra_keys})
    if extras:
        notes.append(f"dropped SN bookkeeping the PyTorch dialects do not keep: {short(extras)}")
    out = State(tensors, metadata)
    notes += unwrap(out, moved, prefix)
    return StateRewrite(out, changes, notes, warnings)


def _dim0_notes(moved: list[SNLayer], state: State, prefix: str) -> list[str]:
    """A note for conv layers of dialects that cannot tell a ConvTranspose (normalized along dim 0)."""
    convs = [layer for layer in moved
             if dialects.of(layer).assumes_dim0 and state.tensors[layer.weight_key].dim() > 2]
    if not convs:
        return []
    kinds = "/".join(sorted({layer.dialect for layer in convs}))
    names = [prefix + display_name(layer.name) for layer in convs]
    return [f"{kinds} normalizes along dim 0: if any of {short(names)} is a ConvTranspose, "
            "wrap it with spectral_norm(..., dim=0)"]


def convert(
    path: PathLike, output: PathLike, options: RewriteOptions | None = None, *, to: Style | str,
    **overrides: object,
) -> Rewrite:
    """Move SN to the PyTorch dialect ``to`` (``torch`` or ``parametrize``) with the same eval output.
    ``overrides`` are :class:`RewriteOptions` fields (``dry_run=True``, ``key="netD"``)."""
    options = with_overrides(options, overrides)
    target = Style.parse(to)
    return rewrite_file(
        "convert", path, output,
        lambda state, prefix: convert_state(state, to=target, include=options.include, exclude=options.exclude,
                                            transposed=options.transposed, prefix=prefix),
        provenance={"to": str(target)}, options=options,
    )
