"""The topology-aware Lipschitz bound of an exported network: a dynamic program over its graph
(:mod:`sninspect.audit.graph_rules`), with the empirical lower bound beside it.

L(input) = 1, L(constant) = 0, L(node) = rule(L(its inputs)) in graph order; the bound is L at the
output (several outputs: root-sum-square, as one concatenated vector).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from sninspect.audit.empirical import empirical_lower
from sninspect.audit.graph_eval import GraphFunction, fold_constants, node_refs, op_name
from sninspect.audit.graph_rules import bound_step
from sninspect.errors import InputError, SninspectError
from sninspect.io.exported import ExportedGraph, load_exported
from sninspect.results.graph import BlockBound, GraphReport, NodeBound

__all__ = ["GraphOptions", "analyze_graph", "graph_report", "upper_bound"]

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


def upper_bound(graph: ExportedGraph) -> tuple[float, list[NodeBound], float]:
    """(upper bound, each node's step, chain product) of one exported graph."""
    env = fold_constants(graph)
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


def analyze_graph(graph: ExportedGraph, options: GraphOptions | None = None) -> GraphReport:
    """The sandwich [lower, upper] of one exported graph's Lipschitz constant."""
    options = options or GraphOptions()
    began = time.perf_counter()
    env = fold_constants(graph)
    function = GraphFunction(graph, env)
    upper, nodes, chain = upper_bound(graph)
    seconds = time.perf_counter() - began
    empirical = None
    if options.lower:
        empirical = empirical_lower(function, function.input_shape, starts=options.starts,
                                    steps=options.steps, power_steps=options.power_steps, seed=options.seed,
                                    surrogate=function.smoothed(options.smooth))
    lower = empirical.lower if empirical is not None else None
    ratio = upper / lower if lower else None
    return GraphReport(graph.file, tuple(function.input_shape), upper, lower, ratio, chain,
                       chain / upper if upper > 0 else math.inf, tuple(nodes),
                       tuple(_blocks(graph, function, nodes)), empirical, seconds, ASSUMPTIONS)


def graph_report(path: str | os.PathLike[str], options: GraphOptions | None = None) -> GraphReport:
    """Load a ``.pt2`` archive without running code from it and bound its network."""
    return analyze_graph(load_exported(path), options)
