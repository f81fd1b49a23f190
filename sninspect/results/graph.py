"""Results of the topology-aware bound of an exported network: frozen data, field = JSON name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeBound:
    """One operator on the input's path and the bound of the network up to its output."""

    name: str
    """The graph node's name (``conv2d_3``)."""
    op: str
    """The aten operator (``conv2d``)."""
    module: str
    """The module that called it (``block2.c1``), '' at the top level."""
    rule: str
    """How its bound follows from its inputs' (``conv 1x64x16x16 stride 1 (lanczos)``, ``sum``,
    ``root-sum-square``, ``relu: 1``)."""
    factor: float | None
    """The operator's own Lipschitz factor (upper end), None for rules that combine several inputs."""
    factor_lower: float | None
    """A certified lower end of the operator's norm at this size, where one is computed."""
    bound: float
    """Upper bound of the Lipschitz constant from the network input to this node's output."""
    depth: int
    """Position along the graph (0 = the first operator on the input's path)."""


@dataclass(frozen=True)
class BlockBound:
    """A top-level module's share: the bound leaving it over the bound entering it."""

    module: str
    bound_in: float
    bound_out: float
    factor: float
    """bound_out / bound_in: the block's Lipschitz factor as the graph bound counts it."""


@dataclass(frozen=True)
class EmpiricalLower:
    """The best certified lower bound found by searching inputs."""

    lower: float
    """max ‖f(x) − f(y)‖ / ‖x − y‖ over the pairs tried, recomputed in float64: a lower bound of the
    Lipschitz constant by its definition (no smoothness assumed)."""
    jacobian: float
    """max ‖J(x) v‖ over the power-iteration vectors v (unit): ‖J(x)‖ from below at the points tried."""
    starts: int
    """Random and data-like starting inputs searched."""
    steps: int
    """Gradient-ascent steps per start."""
    best_start: str
    """Which start gave ``lower`` (``gaussian 2``, ``smooth 0``)."""
    seconds: float


@dataclass(frozen=True)
class GraphReport:
    """The sandwich [lower, upper] on one exported network's Lipschitz constant (ℓ2 → ℓ2)."""

    file: str
    input_shape: tuple[int, ...]
    """The input the bounds are for (the exported example input's shape, batch included)."""
    upper: float
    """Certified upper bound: the graph rules composed along the graph (see ``nodes``)."""
    lower: float | None
    """``empirical.lower``, None when the search was skipped."""
    ratio: float | None
    """upper / lower: how far the sandwich is from closed."""
    chain_product: float
    """∏ of the size-free per-layer bounds of every conv, linear and BatchNorm on the path (the
    checkpoint report's operator_product rule), for comparison."""
    chain_over_upper: float
    """chain_product / upper: how much the topology-aware bound tightens the chain product."""
    nodes: tuple[NodeBound, ...]
    blocks: tuple[BlockBound, ...]
    empirical: EmpiricalLower | None
    seconds: float
    """Time spent on the upper bound."""
    assumptions: str
    """What the bound covers."""
