"""The topology-aware Lipschitz bound of an exported network: a dynamic program over its graph
(:mod:`sninspect.audit.graph.rules`), with the empirical lower bound beside it.

L(input) = 1, L(constant) = 0, L(node) = rule(L(its inputs)) in graph order; the bound is L at the
output (several outputs: root-sum-square, as one concatenated vector).

Before anything is allocated the graph's shapes are checked on meta tensors
(:func:`~sninspect.audit.graph.interpret.check_shapes`) and the memory the audit will take is put to the
budget (:func:`graph_bytes`). Before a result is returned it is checked against itself: every
operator's certified lower end at most its upper end, and the network's certified lower bound at most
its upper bound; a contradiction is an :class:`~sninspect.errors.InputError` naming the node, never a
printed bound.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from torch import Tensor

from sninspect.audit.graph.empirical import ROUNDING, empirical_lower
from sninspect.audit.graph.interpret import (
    GraphFunction,
    check_shapes,
    dependent_values,
    fold_constants,
    node_refs,
    op_name,
)
from sninspect.audit.graph.rules import bound_step
from sninspect.audit.memory import budget as memory_budget
from sninspect.audit.memory import conv_same_bytes, spectra_bytes
from sninspect.errors import InputError, MemoryBudgetError, SninspectError, UsageError
from sninspect.io.exported import ExportedGraph, load_exported
from sninspect.results.graph import BlockBound, GraphReport, NodeBound

__all__ = ["GraphOptions", "analyze_graph", "graph_bytes", "upper_bound"]

ASSUMPTIONS = (
    "ℓ2 → ℓ2 Lipschitz constant of the exported program (eval mode) at its example input's shape; "
    "convolutions bounded at their real input size, stride, padding and groups (circulant bound at the "
    "padded size, or the size-free frequency bound); residual adds summed, concatenations root-sum-square"
)


@dataclass(frozen=True)
class GraphOptions:
    """What the graph audit computes."""

    lower: bool = True
    """Search for the empirical lower bound (the slow part)."""
    starts: int = 4
    steps: int = 30
    power_steps: int = 20
    seed: int = 0
    smooth: float = 20.0
    """Sharpness β of the softplus that stands in for ReLU while climbing (the bound is on f itself)."""
    max_memory: int | None = None
    """Bytes the audit may allocate (``--max-memory``); None: the memory available now."""

    def __post_init__(self) -> None:
        if not MIN_SEED <= self.seed <= MAX_SEED:
            raise UsageError(f"seed {self.seed}: expected an integer from {MIN_SEED} to {MAX_SEED}")


MIN_SEED, MAX_SEED = -(2**63), 2**63 - 2
"""Seeds torch's generator takes (the search also seeds with seed + 1)."""


def upper_bound(graph: ExportedGraph, env: dict[str, Tensor] | None = None) -> tuple[float, list[NodeBound], float]:
    """(upper bound, each node's step, chain product) of one exported graph (``env``: its folded constants)."""
    env = fold_constants(graph) if env is None else env
    function = GraphFunction(graph, env)  # refuses any operator without a rule, before the math
    function.check_runs()  # arguments the operators refuse, shapes that are not what they say
    bounds: dict[str, float] = {name: 1.0 for name in graph.inputs}
    nodes: list[NodeBound] = []
    chain = 1.0
    for depth, node in enumerate(function.nodes):
        try:
            step = bound_step(node, bounds, env, graph.shapes, graph.file)
        except SninspectError:
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError, RuntimeError) as err:  # odd arguments
            raise InputError(f"{graph.file}: node {node.name!r} ({node.target[:80]}): its arguments cannot be "
                             f"bounded: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
                             ) from None
        if not math.isfinite(step.bound):
            raise InputError(f"{graph.file}: node {node.name!r} has an infinite bound (a weight with "
                             "NaN or infinite entries?)")
        if step.factor is not None and step.factor_lower is not None and not step.factor_lower <= step.factor:
            raise InputError(f"{graph.file}: node {node.name!r} ({node.target[:80]}): its certified lower end "
                             f"{step.factor_lower:.9g} exceeds its upper end {step.factor:.9g}; the bound "
                             "contradicts itself and is not given")
        for name in node.outputs:
            if name is not None:
                bounds[name] = step.bound
        if step.chain_factor is not None:
            chain *= step.chain_factor
        nodes.append(NodeBound(node.name, op_name(node.target), node.module, step.rule, step.factor,
                               step.factor_lower, step.bound, depth))
    missing = [name for name in graph.outputs if name not in bounds]
    if missing:
        raise InputError(f"{graph.file}: output {missing[0]!r} does not depend on the input (a constant "
                         "output has Lipschitz constant 0; nothing to bound)")
    upper = math.sqrt(sum(bounds[name] ** 2 for name in graph.outputs))
    return upper, nodes, chain


def _blocks(graph: ExportedGraph, function: GraphFunction, nodes: list[NodeBound]) -> list[BlockBound]:
    """Per top-level module: the bound leaving it (its last node) over the bound entering it (the
    largest bound among the values it reads from outside)."""
    bound_of = {}
    for graph_node, result in zip(function.nodes, nodes, strict=True):
        for name in graph_node.outputs:
            if name is not None:
                bound_of[name] = result.bound
    for name in graph.inputs:
        bound_of[name] = 1.0
    order: list[str] = []
    members: dict[str, list[int]] = {}
    for index, node in enumerate(function.nodes):
        top = node.module.split(".")[0] if node.module else ""
        if top not in members:
            order.append(top)
            members[top] = []
        members[top].append(index)
    blocks = []
    for top in order:
        if not top:
            continue
        inside = {o for i in members[top] for o in function.nodes[i].outputs if o is not None}
        entering = [bound_of[r] for i in members[top] for r in node_refs(function.nodes[i])
                    if r in bound_of and r not in inside]
        bound_in = max(entering, default=1.0)
        bound_out = nodes[members[top][-1]].bound
        blocks.append(BlockBound(top, bound_in, bound_out, bound_out / bound_in if bound_in > 0 else math.inf))
    return blocks


def analyze_graph(source: str | os.PathLike[str] | ExportedGraph, options: GraphOptions | None = None) -> GraphReport:
    """The sandwich [lower, upper] of an exported network's Lipschitz constant. ``source``: the path
    of a ``.pt2`` archive, read without running code from it, or an archive already read
    (:func:`~sninspect.io.exported.load_exported`). Reading and the audit stay within
    ``options.max_memory``, else the memory available now."""
    if options is not None and not isinstance(options, GraphOptions):
        raise UsageError(f"options={type(options).__name__}: expected a sninspect.GraphOptions or None")
    options = options or GraphOptions()
    if isinstance(source, ExportedGraph):
        graph = source
    elif isinstance(source, str | os.PathLike):
        graph = load_exported(source, budget=memory_budget(options.max_memory))
    else:
        raise UsageError(f"analyze_graph: got a {type(source).__name__}; expected the path of a .pt2 archive "
                         "(torch.export.save) or an archive read by sninspect.io.exported.load_exported")
    limit = memory_budget(options.max_memory)
    began = time.perf_counter()
    limit.require(graph_bytes(graph, check_shapes(graph), lower=options.lower), f"{graph.file}: the graph audit ")
    try:
        env = fold_constants(graph)
        function = GraphFunction(graph, env)
        upper, nodes, chain = upper_bound(graph, env)
        seconds = time.perf_counter() - began
        empirical = None
        if options.lower:
            empirical = empirical_lower(function, function.input_shape, starts=options.starts,
                                        steps=options.steps, power_steps=options.power_steps, seed=options.seed,
                                        surrogate=function.smoothed(options.smooth))
    except MemoryError as err:  # the estimate fell short of what the allocator could give
        raise MemoryBudgetError(f"{graph.file}: the graph audit could not allocate memory ({str(err)[:120]}); "
                                "try a machine with more memory", 0, limit.bytes or 0) from None
    except RuntimeError as err:
        if "alloc" not in str(err):
            raise
        raise MemoryBudgetError(f"{graph.file}: the graph audit could not allocate memory "
                                f"({str(err).splitlines()[0][:160]}); try a machine with more memory",
                                0, limit.bytes or 0) from None
    lower = empirical.lower if empirical is not None else None
    if lower is not None and not lower <= upper:
        raise InputError(f"{graph.file}: at output node {_output_node(graph, function)!r} the certified lower "
                         f"bound {lower:.9g} exceeds the upper bound {upper:.9g}: the graph rules do not hold for "
                         "this archive, and no bound is given")
    if empirical is not None and not empirical.jacobian <= upper * (1.0 + ROUNDING):
        raise InputError(f"{graph.file}: the Jacobian norm {empirical.jacobian:.9g} found at a searched input "
                         f"exceeds the upper bound {upper:.9g} at output node {_output_node(graph, function)!r}: "
                         "the graph rules do not hold for this archive, and no bound is given")
    ratio = upper / lower if lower else None
    return GraphReport(graph.file, tuple(function.input_shape), upper, lower, ratio, chain,
                       chain / upper if upper > 0 else math.inf, tuple(nodes),
                       tuple(_blocks(graph, function, nodes)), empirical, seconds, ASSUMPTIONS)


def _output_node(graph: ExportedGraph, function: GraphFunction) -> str:
    """The last node that writes one of the graph's outputs (where a contradiction of the bounds shows)."""
    return next((n.name for n in reversed(function.nodes) if set(graph.outputs) & set(n.outputs)), graph.outputs[0])


def graph_bytes(graph: ExportedGraph, values: dict[str, Tensor], *, lower: bool = True) -> int:
    """Bytes the graph audit allocates at its peak, from the shapes of ``values`` (meta tensors from
    :func:`~sninspect.audit.graph.interpret.check_shapes`): every value kept in float64 while the constants
    are folded, the input-dependent ones once more for the shape check, then the largest of one
    operator's bound (a conv's Lanczos basis or circulant bound, a matrix's SVD, a pooling's Lanczos)
    and the lower-bound search (autograd keeps the forward values, the double-backward graph and the
    Adam state: 10 × the input-dependent values)."""
    def nbytes(t: Tensor) -> int:
        return t.numel() * t.element_size()

    dependent = dependent_values(graph)
    everything = sum(nbytes(t) for t in values.values())
    live = sum(nbytes(values[n]) for n in dependent if isinstance(values.get(n), Tensor))
    rules = 0
    for node in graph.nodes:
        name = op_name(node.target)
        refs = [values.get(r) for r in node_refs(node)]
        tensors = [t for t in refs if isinstance(t, Tensor)]
        if not tensors or not any(o in dependent for o in node.outputs if o is not None):
            continue
        if "conv" in name and len(tensors) >= 2 and tensors[1].dim() >= 3:
            weight, x = tensors[1], tensors[0]
            out = values.get(node.outputs[0] or "")
            transposed = "transpose" in name or (len(node.args) > 6 and node.args[6] is True)
            spatial = (out if transposed and isinstance(out, Tensor) else x).shape[2:]
            rules = max(rules, conv_same_bytes(tuple(weight.shape), tuple(spatial), transposed))
        elif name in ("linear", "mm", "matmul", "addmm"):
            rules = max([rules] + [spectra_bytes(1, t.shape[0], t.shape[1], 8) for t in tensors if t.dim() == 2])
        else:  # pooling and reductions: Lanczos on vectors of the input's size
            rules = max(rules, 56 * nbytes(tensors[0]))
    search = 10 * live if lower else 0
    return everything + live + max(rules, search)

