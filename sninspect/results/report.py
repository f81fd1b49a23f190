"""Results as frozen dataclasses; the field names are the JSON names (see README "JSON schema").

Nothing here computes a number: :mod:`sninspect.audit` fills these, :mod:`sninspect.render` reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sninspect.results.check import Rules
from sninspect.results.jsonable import SCHEMA_VERSION, dumps, json_safe


@dataclass(frozen=True)
class LayerAudit:
    """The audit of one weight layer. ``None`` where a number does not apply."""

    name: str
    """Display name: the module path and parameter (``main.2.weight``); prefixed by the model in pairs."""
    model: str
    """The model in the checkpoint this layer belongs to (``""`` when the file holds one model)."""
    dialect: str
    """SN layout (``torch``, ``torch-parametrize``, ``mimicry``, ``biggan``, ``cosgrove``,
    ``conv-operator``, ``soft``, ``residual-flows``, ``projection``: ``DialectName`` in
    :mod:`sninspect.dialects`), or ``none`` for a layer without SN."""
    kind: str
    """``linear``, ``conv1d``/``conv2d``/``conv3d`` (``conv_transpose*`` when SN says dim=1),
    ``embedding``, ``vector`` (a 1-D weight)."""
    shape: tuple[int, ...]
    """Shape of the stored (un-normalized) weight."""
    dim: int
    """The axis SN puts first when reshaping the weight to a matrix (0, or 1 for ConvTranspose)."""
    dtype: str
    """Storage dtype of the weight in the checkpoint."""
    sigma_exact: float | None = None
    """σ1 of the weight matrix, exact (SVD or exact eigen-solve), in ``dtype`` of the computation."""
    sigma_estimate: float | None = None
    """σ̂: what the model divides by in eval mode, per dialect (the README's table of SN layouts)."""
    sigma_rel_error: float | None = None
    """(σ̂ − σ1) / σ1; negative = underestimate = the layer runs above 1."""
    sigma_effective: float | None = None
    """Spectral norm of the weight the model really uses (σ1 / σ̂, or of the stored eval buffer)."""
    cos_error_u: float | None = None
    """1 − |cos(stored u, exact top left singular vector)|; ``None`` when u is not stored or σ1 ≈ σ2."""
    cos_error_v: float | None = None
    """1 − |cos(stored v, exact top right singular vector)|; ``None`` when v is not stored or σ1 ≈ σ2."""
    gap_cos_error_u: float | None = None
    """The gap-aware cosine error of u, the number ``check``'s ``max_cos_error`` judges: 1 − √(1 − sin²θ·(1 −
    (σ2/σ1)²)) for the angle θ behind ``cos_error_u``, the relative σ̂ deficit that angle forces (0 as
    σ2 → σ1, ``cos_error_u`` when σ2 = 0). The name is the ``quantity`` of check's violation of it."""
    gap_cos_error_v: float | None = None
    """The gap-aware cosine error of v (see ``gap_cos_error_u``)."""
    spectral_gap: float | None = None
    """σ2 / σ1 (power iteration converges like (σ2/σ1)² per step); ``None`` for rank-1 shapes."""
    stable_rank: float | None = None
    """‖W‖_F² / σ1²."""
    operator_bound: float | None = None
    """Certified upper bound of the layer's operator 2-norm for the effective weight (linear: σ_eff)."""
    operator_lower: float | None = None
    """A certified lower bound on the same supremum over input sizes (conv: the exact circular-padding
    norm on the grid), not on the norm at one given size, which can be smaller."""
    operator_width: float | None = None
    """Certified relative width of [``operator_lower``, ``operator_bound``]: upper / lower − 1 (0 where
    the bound is exact: linear and 1×1 layers). By default what the work budget bought for this layer
    (``ModelAudit.bounds``), with ``--bound-tol T`` at most T."""
    operator_at_input: float | None = None
    """With ``--input-size``: the norm of the zero-padded 'same' stride-1 convolution of the effective
    weight at that input size (conv layers only): the certified lower end of a bracket of relative
    width ``bracket_width``."""
    bracket_width: float | None = None
    """Largest relative width (upper / lower − 1) of the Lanczos brackets behind this layer's
    operator-at-a-size numbers (conv-operator σ exact and σ_eff, ``operator_at_input``); the printed
    values are the certified lower ends. ``None`` where no such number is computed."""
    u_norm: float | None = None
    """‖stored u‖ (should be 1; EMA-averaged buffers break this)."""
    v_norm: float | None = None
    """‖stored v‖ (should be 1)."""
    uv_residual: float | None = None
    """‖u − normalize(W v)‖ for the stored u, v (0 when the stored pair is consistent)."""
    degenerate: bool = False
    """σ1 ≈ σ2: the top singular vector is not unique, so no cosine is given."""
    notes: tuple[str, ...] = ()
    """Facts about this layer worth a reader's attention (dim choice, version None, ...)."""
    error: str | None = None
    """Why this layer could not be audited (NaN weights, u of the wrong length); numbers are then None."""
    verdict: tuple[str, ...] | None = None
    """The ``check`` rules this layer breaks under ``Report.rules`` (``max_sigma``, ``max_cos_error``,
    ``max_norm_error``, ``non_finite``, ``not_audited``), ``()`` when it breaks none (shown ``ok``);
    ``None`` when it is not judged (a layer without SN that was audited: its σ is not meant to be 1)."""
    singular_values: tuple[float, ...] = field(default=(), repr=False)
    """All singular values, descending (for plots; left out of JSON unless asked for)."""

    @property
    def has_sn(self) -> bool:
        """Whether the layer is spectrally normalized (its dialect is not ``none``)."""
        return self.dialect != PLAIN

    @property
    def flagged(self) -> bool:
        """Whether the layer breaks a rule (its ``verdict`` names one): what every output highlights."""
        return bool(self.verdict)

    def breaks(self, rule: str) -> bool:
        """Whether ``verdict`` names ``rule`` (``"max_sigma"``)."""
        return rule in (self.verdict or ())


STORED_ORDER = "stored"
"""``Report.layer_order``: the checkpoint's own order (torch.save keeps the module order)."""
NATURAL_ORDER = "natural"
"""``Report.layer_order``: names in numeric-aware order (safetensors, whose keys are stored sorted)."""

CHAINED_ORDER = "chained"
"""``Report.layer_order``: the stored order is not a forward chain by shape (an output layer stored
first), so the layers are put in the one order in which their shapes chain."""

PLAIN = "none"
"""The ``dialect`` of a layer without SN (``DialectName.none`` in ``sninspect.dialects``)."""

BOUND_NOT_COMPUTED = "operator bound not computed"
"""How the note of a convolution whose certified bound was not computed begins (not asked for, or the
run interrupted before it): its ``operator_bound`` is None, and no network operator product is claimed."""


def bound_not_computed(layer: LayerAudit) -> bool:
    """Whether ``layer``'s certified operator bound was left out (its note says so)."""
    return layer.operator_bound is None and any(n.startswith(BOUND_NOT_COMPUTED) for n in layer.notes)


FACTOR_SN = "sn"
"""``ChainFactor.role``: a spectrally normalized weight layer."""
FACTOR_PLAIN = "plain"
"""``ChainFactor.role``: a weight layer without SN (an unnormalized head, a netG layer)."""
FACTOR_BATCHNORM = "batchnorm"
"""``ChainFactor.role``: an eval-mode BatchNorm (a per-channel scaling)."""


@dataclass(frozen=True)
class ChainFactor:
    """One factor of the network chain, with the norm it brings to each product."""

    name: str
    """The layer's display name (the BatchNorm's module path for a BatchNorm)."""
    role: str
    """``sn`` (a layer with SN), ``plain`` (a weight layer without SN) or ``batchnorm``."""
    kind: str
    """The layer's ``kind`` (``linear``, ``conv2d``, ...); ``batchnorm`` for a BatchNorm."""
    shape: tuple[int, ...]
    """The stored weight's shape (a BatchNorm: its channel count)."""
    matrix: float | None
    """This factor in ``matrix_product``: σ_eff of the reshaped weight; a BatchNorm's max |γ|/√(var + ε),
    which is both its matrix and its operator norm (a per-channel scaling)."""
    operator: float | None
    """This factor in ``operator_product``: the certified operator bound; None when there is none."""


@dataclass(frozen=True)
class NetworkBound:
    """Lipschitz upper bounds of the network read as a feed-forward chain in checkpoint order."""

    matrix_product: float | None
    """∏ of per-factor matrix norms (σ_eff of each reshaped weight, BatchNorm's scaling): what users
    usually quote; NOT certified for convolutions."""
    operator_product: float | None
    """∏ of certified per-factor operator bounds over the same factors (BatchNorm in eval mode included);
    never below ``matrix_product``, since each factor's operator bound is at least its matrix norm."""
    cumulative_matrix: tuple[float, ...]
    """Running ``matrix_product`` by depth, one entry per layer in ``layers``."""
    cumulative_operator: tuple[float, ...]
    """Running ``operator_product`` by depth, one entry per layer in ``layers``."""
    layers: tuple[str, ...]
    """The layers in the chain, in order."""
    excluded: tuple[str, ...]
    """Layers left out of the chain (embeddings, layers with errors, normalizations without a bound)."""
    assumptions: str
    """What the bounds assume; shown with every output."""
    unavailable: str | None = None
    """Why there is no bound although the chain has layers (a layer with σ̂ ≤ 0 flips the weight's sign:
    a product through it bounds nothing); the products are then None."""
    factors: tuple[ChainFactor, ...] = ()
    """Every factor of both products, in chain order: SN layers, layers without SN, BatchNorms."""


WIDTH_LADDER = (0.01, 0.02, 0.05, 0.1, 0.2)
"""The frequency rungs the default's work budget chooses among for each conv bound, finest first (below
the last, the cheap rung with no grid, where every layer starts: its width is whatever it comes out);
the summary counts layers by the smallest of these at or above their width, and the wider ones together."""


@dataclass(frozen=True)
class BoundWidths:
    """How wide the certified operator bounds were asked to be, and what was reached (each layer's
    ``operator_width``)."""

    target: float
    """The width every layer's bound is refined toward: ``--bound-tol`` where given, else 1%."""
    budgeted: bool
    """True (the default): each layer's width is what a work budget bought, spent first where the
    network bound's width gains most; False: ``--bound-tol`` asked ``target`` of every layer."""
    seconds_at_target: float | None = None
    """Estimated seconds of this model's audit with ``target`` on every layer (``--bound-tol``), from
    the layers' measured times; None where every layer reached it."""


@dataclass(frozen=True)
class ModelAudit:
    """One model inside a checkpoint (a G/D pair gives two)."""

    name: str
    layers: tuple[LayerAudit, ...]
    lipschitz: NetworkBound
    warnings: tuple[str, ...] = ()
    reordered: bool = False
    """Whether the layers and the chain are in the order their shapes chain, not the stored one."""
    bounds: BoundWidths | None = None
    """The operator bounds' widths asked and reached; None where none was computed."""


@dataclass(frozen=True)
class Report:
    """The audit of one checkpoint file."""

    checkpoint: str
    """Path of the checkpoint as given."""
    format: str
    """``torch-zip``, ``torch-legacy``, ``safetensors`` or ``safetensors-sharded``."""
    device: str
    """Where the math ran (``cpu``, ``cuda:0``)."""
    dtype: str
    """``float64`` (default) or ``float32``."""
    models: tuple[ModelAudit, ...]
    warnings: tuple[str, ...] = ()
    """Checkpoint-level warnings (unrecognised SN-like keys, ...)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Scalar entries of the checkpoint (step, epoch) used to order a training run."""
    layer_order: str = STORED_ORDER
    """The order of ``layers`` and of the network chain: ``stored`` (as in the checkpoint), ``natural``
    (safetensors stores names sorted, so module paths are put in numeric-aware order: 2 before 10) or
    ``chained`` (that order is no forward chain by shape; the one order whose shapes chain is used)."""
    rules: Rules | None = None
    """The ``check`` rules the verdicts were judged by (``Options.rules``: check's defaults unless given)."""
    verdict: tuple[str, ...] | None = None
    """Every ``check`` rule the checkpoint breaks under ``rules``, layers' and checkpoint-wide ones
    (``max_lipschitz``, ``no_sn_layers``, ``warning``), each once; ``()``: all hold; ``None``: not judged."""

    def __str__(self) -> str:
        """The terminal summary: the layer table and the summary panel as ``sninspect report`` prints
        them into a file (100 columns, no colour); ``repr`` keeps the dataclass fields."""
        from sninspect.render.terminal import table_text

        return table_text(self, width=100)

    @property
    def layers(self) -> tuple[LayerAudit, ...]:
        """All layers of all models, in order."""
        return tuple(layer for model in self.models for layer in model.layers)

    @property
    def primary(self) -> ModelAudit:
        """The model whose bound is the report's ``lipschitz``: the discriminator of a pair, else the first."""
        for model in self.models:
            if model.name.split(".")[-1].lower() in {"d", "netd", "discriminator", "critic", "disc"}:
                return model
        return self.models[0]

    @property
    def all_warnings(self) -> tuple[str, ...]:
        """Checkpoint warnings followed by each model's."""
        out = list(self.warnings)
        for model in self.models:
            prefix = f"{model.name}: " if model.name and len(self.models) > 1 else ""
            out.extend(prefix + w for w in model.warnings)
        return tuple(out)

    def to_dict(self, *, spectra: bool = False) -> dict[str, Any]:
        """The JSON object (schema in the README); ``spectra`` adds each layer's singular values."""
        return {
            "schema": SCHEMA_VERSION,
            "checkpoint": self.checkpoint,
            "format": self.format,
            "device": self.device,
            "dtype": self.dtype,
            "layer_order": self.layer_order,
            "rules": None if self.rules is None else json_safe(asdict(self.rules)),
            "verdict": None if self.verdict is None else list(self.verdict),
            "layers": [_layer_dict(layer, spectra) for layer in self.layers],
            "lipschitz": {**json_safe(asdict(self.primary.lipschitz)), "model": self.primary.name},
            "models": [
                {"name": m.name, "lipschitz": json_safe(asdict(m.lipschitz)), "warnings": list(m.warnings),
                 "bounds": None if m.bounds is None else json_safe(asdict(m.bounds))}
                for m in self.models
            ],
            "warnings": list(self.all_warnings),
            "extras": json_safe(self.extras),
        }

    def to_json(self, *, indent: int | None = 2, spectra: bool = False) -> str:
        """``to_dict`` as JSON under the one policy (:mod:`sninspect.results.jsonable`: NaN and infinities
        become ``null``, UTF-8 text)."""
        return dumps(self.to_dict(spectra=spectra), indent=indent)

    def to_dataframe(self) -> Any:
        """One row per layer, the JSON layer fields as columns (pandas is imported on demand)."""
        import pandas as pd

        rows = [_layer_dict(layer, spectra=False) for layer in self.layers]
        columns = [f.name for f in fields(LayerAudit) if f.name != "singular_values"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["shape"] = frame["shape"].map(lambda s: "x".join(str(n) for n in s))
        frame["notes"] = frame["notes"].map(lambda n: "; ".join(n))
        frame["verdict"] = frame["verdict"].map(lambda v: verdict_text(None if v is None else tuple(v), ""))
        return frame

    def _repr_html_(self) -> str:
        """The layer table and summary, for a notebook cell (``sninspect.render`` is imported on demand)."""
        from sninspect.render.html import notebook_html

        return notebook_html(self)

    def plot(self) -> dict[str, Any]:
        """The report's matplotlib figures by name (``sigma``, ``cos_error``, ``spectra``,
        ``lipschitz_depth``); matplotlib is imported on demand."""
        from sninspect.render.plots import report_figures

        return dict(report_figures(self))


def verdict_text(verdict: tuple[str, ...] | None, not_judged: str = "-") -> str:
    """A layer's verdict in words: ``ok``, the rules it breaks (``max_sigma, max_cos_error``), or
    ``not_judged`` (a layer without SN)."""
    if verdict is None:
        return not_judged
    return ", ".join(verdict) if verdict else "ok"


def report_from_dict(data: dict[str, Any], *, checkpoint: str | None = None,
                     extras: dict[str, Any] | None = None) -> Report:
    """The :class:`Report` whose ``to_dict()`` is ``data`` (a ``report --format json`` object or a
    monitor log record's ``report``); non-finite numbers come back as None, as JSON stored them.
    ``checkpoint`` and ``extras`` replace the stored ones. Raises KeyError/TypeError/ValueError on
    a malformed object (the caller names the file and line)."""
    names = {f.name for f in fields(LayerAudit)}
    rules = data.get("rules")
    verdict = data.get("verdict")
    layers = [LayerAudit(**{k: _tupled(v) for k, v in layer.items() if k in names}) for layer in data["layers"]]
    models = []
    for entry in data["models"]:
        bound = {k: _tupled(v) for k, v in entry["lipschitz"].items() if k in _BOUND_FIELDS}
        bound["factors"] = tuple(ChainFactor(**{k: _tupled(v) for k, v in f.items()})
                                 for f in entry["lipschitz"].get("factors", ()))
        widths = entry.get("bounds")  # absent in logs written before it existed
        models.append(ModelAudit(name=entry["name"], layers=tuple(la for la in layers if la.model == entry["name"]),
                                 lipschitz=NetworkBound(**bound), warnings=tuple(entry["warnings"]),
                                 bounds=None if widths is None else BoundWidths(**widths)))
    own = sum(len(m.warnings) for m in models)
    every = list(data.get("warnings", []))
    return Report(checkpoint=data["checkpoint"] if checkpoint is None else checkpoint, format=data["format"],
                  device=data["device"], dtype=data["dtype"], models=tuple(models),
                  warnings=tuple(every[: len(every) - own]),
                  extras=dict(data.get("extras", {}) if extras is None else extras),
                  layer_order=data.get("layer_order", STORED_ORDER),
                  rules=None if rules is None else Rules(**rules),
                  verdict=None if verdict is None else tuple(verdict))


_BOUND_FIELDS = frozenset(f.name for f in fields(NetworkBound))


def _tupled(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _layer_dict(layer: LayerAudit, spectra: bool) -> dict[str, Any]:
    data = asdict(layer)
    values = data.pop("singular_values")
    if spectra:
        data["singular_values"] = values
    data["shape"] = list(layer.shape)
    data["notes"] = list(layer.notes)
    data["verdict"] = None if layer.verdict is None else list(layer.verdict)
    return json_safe(data)

