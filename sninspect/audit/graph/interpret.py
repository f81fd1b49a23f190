"""Run an exported graph (:class:`~sninspect.io.exported.ExportedGraph`) with a fixed list of aten
operators, in float64.

A node's target is matched, as a whole string, against a fixed table of exact overloads
(``torch.ops.aten.relu.default``): the overloads torch registers for the names in :data:`FOLD_OPS`
and :data:`RUN_OPS`, less the ``out=`` variants that write into an argument. Nothing is looked up by
a name read from the archive, so a target such as ``torch.ops.aten.relu.__setattr__`` is refused, not
called; a graph calling anything outside the table is refused with the operator's name.

Before any real tensor is made, :func:`check_shapes` runs the whole graph on meta tensors (shapes and
dtypes only): every value must have a recorded shape, equal to the one it computes, and of at most
:data:`MAX_ELEMENTS` entries. Nodes that do not depend on the user's input (spectral normalization's
W / (uᵀWv), reshapes of weights) are then evaluated once: they are the weights the model really uses
in eval mode.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from sninspect.errors import InputError
from sninspect.io.exported import ExportedGraph, GraphNode, Ref

__all__ = ["RUN_OPS", "GraphFunction", "check_shapes", "dependent_values", "fold_constants", "node_refs", "op_name",
           "operator"]

_SHAPE_OPS = {
    "view", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
    "contiguous", "clone", "alias", "detach", "expand", "slice", "select", "narrow", "_to_copy", "to",
    "type_as", "dropout", "feature_dropout", "identity", "lift_fresh_copy", "unflatten", "cat", "stack",
    "view_as", "reshape_as", "flip", "repeat", "split", "chunk", "movedim", "numpy_T", "mT",
}
_ARITH_OPS = {"add", "sub", "rsub", "mul", "div", "neg", "linear", "mm", "matmul", "addmm", "sum", "mean",
              "batch_norm", "_native_batch_norm_legit_no_training"}
_CONV_OPS = {"conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "_convolution"}
_POOL_OPS = {"avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
             "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "max_pool1d", "max_pool2d", "max_pool3d"}
_ACTIVATIONS = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "tanh", "tanh_", "softsign", "sigmoid",
                "sigmoid_", "hardsigmoid", "hardsigmoid_", "leaky_relu", "leaky_relu_", "elu", "elu_",
                "softplus", "gelu", "gelu_", "silu", "silu_"}
RUN_OPS = _SHAPE_OPS | _ARITH_OPS | _CONV_OPS | _POOL_OPS | _ACTIVATIONS
"""aten operators that may be run on values that depend on the input (each has a bound rule)."""

FOLD_OPS = RUN_OPS | {
    "sqrt", "rsqrt", "pow", "reciprocal", "abs", "max", "min", "amax", "clamp", "clamp_min", "clamp_max",
    "norm", "linalg_vector_norm", "frobenius_norm", "exp", "log", "sign", "zeros_like", "ones_like",
    "full_like", "copy", "squeeze_", "unsqueeze_", "expand_as", "addmv", "where", "eq", "gt", "lt", "ge",
    "le", "ne", "logical_not", "linalg_matrix_norm", "bmm", "mv", "dot", "vdot", "index_select",
    "ones", "zeros", "full", "scalar_tensor", "new_ones", "new_zeros", "new_full",
}
"""aten operators that may be run on the archive's tensors alone (computing the eval weights)."""

_CASTS = ("_to_copy", "to", "type_as")
_NEVER = {"from_file", "empty", "empty_strided", "resize_", "set_", "_local_scalar_dense", "copy_"}


_ATEN = "torch.ops.aten."
"""How torch.export names the aten operators: ``torch.ops.aten.<name>.<overload>``."""


def _is_aten(target: str) -> bool:
    return target.startswith(_ATEN) and len(target[len(_ATEN):].split(".")) == 2


def op_name(target: str) -> str:
    """``torch.ops.aten.conv2d.default`` → ``conv2d``; anything outside aten → its full name."""
    return target[len(_ATEN):].split(".")[0] if _is_aten(target) else target


@functools.cache
def _overloads() -> dict[str, Any]:
    """The fixed table: ``torch.ops.aten.<name>.<overload>`` → the overload, for the names this module
    lists (never a name from an archive) and every overload torch registers for them but ``out=`` ones."""
    table: dict[str, Any] = {}
    for name in sorted(FOLD_OPS - _NEVER):
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:  # not in this torch version
            continue
        for overload in packet.overloads():
            if "out" not in overload:
                table[f"{_ATEN}{name}.{overload}"] = getattr(packet, overload)
    return table


_DISCONTINUOUS = {f"{_ATEN}div.Tensor_mode", f"{_ATEN}div.Scalar_mode"}
"""Overloads that may fold constants but never run on the input: division with rounding is not
Lipschitz (the rule for ``div`` is a scale)."""


def operator(target: str, allowed: set[str], file: str) -> Callable[..., Any]:
    """The overload a node's ``target`` names exactly, from the fixed table; anything else is refused."""
    op = _overloads().get(target)
    if op is None or op_name(target) not in allowed or (allowed is RUN_OPS and target in _DISCONTINUOUS):
        raise InputError(f"{file}: operator {target[:100]} is not one sninspect can bound or run (supported: "
                         "convolutions, linear, activations with known Lipschitz constants, pooling, "
                         "BatchNorm in eval mode, residual adds, concatenation, reshapes)")
    return op  # type: ignore[no-any-return]


def _resolve(value: Any, env: Mapping[str, Any]) -> Any:
    if isinstance(value, Ref):
        return env[value.name]
    if isinstance(value, list):
        return [_resolve(v, env) for v in value]
    return value


def _refs(value: Any) -> list[str]:
    if isinstance(value, Ref):
        return [value.name]
    if isinstance(value, list):
        return [name for v in value for name in _refs(v)]
    return []


def node_refs(node: GraphNode) -> list[str]:
    """The names of the values a node reads."""
    return [name for v in (*node.args, *node.kwargs.values()) for name in _refs(v)]


def dependent_values(graph: ExportedGraph) -> set[str]:
    """Names of the values that depend on a user input."""
    found = set(graph.inputs)
    for node in graph.nodes:
        if any(name in found for name in node_refs(node)):
            found.update(name for name in node.outputs if name is not None)
    return found


def _float64(tensor: Tensor) -> Tensor:
    return tensor.double() if tensor.is_floating_point() else tensor


def _smoothed(name: str, args: list[Any], beta: float) -> Tensor | None:
    """ReLU and LeakyReLU with their kink smoothed (softplus of sharpness ``beta``), else None."""
    if name in ("relu", "relu_"):
        return torch.nn.functional.softplus(args[0], beta=beta)
    if name in ("leaky_relu", "leaky_relu_"):
        slope = float(args[1]) if len(args) > 1 else 0.01
        return slope * args[0] + (1.0 - slope) * torch.nn.functional.softplus(args[0], beta=beta)
    return None


_META = torch.device("meta")
_FACTORIES_NO_INPUT = {"ones", "zeros", "full", "scalar_tensor"}


def _on_meta(value: Any) -> Any:
    return _META if isinstance(value, torch.device) else [_on_meta(v) for v in value] \
        if isinstance(value, list) else value


def _call(node: GraphNode, env: Mapping[str, Any], allowed: set[str], file: str,
          smooth: float | None = None, meta: bool = False) -> None:
    op = operator(node.target, allowed, file)
    try:
        args = [_resolve(a, env) for a in node.args]
        kwargs = {k: _resolve(v, env) for k, v in node.kwargs.items()}
        if meta:  # shapes only: a factory makes its tensor on the meta device too
            args, kwargs = _on_meta(args), {k: _on_meta(v) for k, v in kwargs.items()}
            if op_name(node.target) in _FACTORIES_NO_INPUT:
                kwargs["device"] = _META
    except KeyError as err:
        raise InputError(f"{file}: node {node.name!r} ({node.target[:80]}) reads value {str(err)[:60]}, which no "
                         "earlier node or input defines (is the archive corrupt or crafted?)") from None
    name = op_name(node.target)
    try:
        soft = _smoothed(name, args, smooth) if smooth is not None else None
        # casts are identities: everything stays float64
        result = soft if soft is not None else args[0] if name in _CASTS else op(*args, **kwargs)
    except Exception as err:  # an archive whose graph does not run: say which node
        raise InputError(f"{file}: node {node.name!r} ({node.target}) fails to run: "
                         f"{str(err).splitlines()[0][:160] if str(err) else type(err).__name__}") from None
    values = list(result) if isinstance(result, (tuple, list)) else [result]
    values = [_float64(v) if isinstance(v, Tensor) else v for v in values]  # constants made here too
    for name, value in zip(node.outputs, values, strict=False):
        if name is not None:
            env[name] = value  # type: ignore[index]


MAX_ELEMENTS = 2**28
"""Largest tensor a graph may ask for (2 GiB of float64): checked on every recorded shape and on the
size argument of every factory (ones, zeros, full) before anything runs."""

_FACTORIES = {"ones", "zeros", "full", "new_ones", "new_zeros", "new_full"}


def check_sizes(graph: ExportedGraph) -> None:
    """Refuse a graph whose values or factory calls would allocate more than :data:`MAX_ELEMENTS`."""
    for name, shape in graph.shapes.items():
        if math.prod(shape) > MAX_ELEMENTS:
            raise InputError(f"{graph.file}: value {name[:60]!r} has shape {list(shape)}, more than "
                             f"{MAX_ELEMENTS} elements (is the archive crafted?)")
    for node in graph.nodes:
        if op_name(node.target) not in _FACTORIES:
            continue
        sizes = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, list)]
        if any(math.prod(abs(v) for v in size if isinstance(v, int) and not isinstance(v, bool)) > MAX_ELEMENTS
               for size in sizes):
            raise InputError(f"{graph.file}: node {node.name!r} ({node.target}) asks for a tensor of more "
                             f"than {MAX_ELEMENTS} elements (is the archive crafted?)")


def check_shapes(graph: ExportedGraph) -> dict[str, Tensor]:
    """Every value of the graph as a meta tensor (its shape and dtype; float64 where floating), computed
    without allocating: each must have a recorded shape equal to the one it computes, and at most
    :data:`MAX_ELEMENTS` entries. The bound rules read the recorded shapes; this makes them the real ones."""
    check_sizes(graph)
    env: dict[str, Any] = {}
    for name, tensor in graph.tensors.items():
        env[name] = torch.empty(tensor.shape, dtype=_float64(tensor).dtype, device=_META)
        _recorded(graph, name, env[name], "archive tensor")
    for name in graph.inputs:
        env[name] = torch.empty(graph.shapes[name], dtype=torch.float64, device=_META)
    dependent = dependent_values(graph)
    for node in graph.nodes:
        live = any(name in dependent for name in node.outputs if name is not None)
        _call(node, env, RUN_OPS if live else FOLD_OPS, graph.file, meta=True)
        for out in node.outputs:
            if out is not None and isinstance(env.get(out), Tensor):
                _recorded(graph, out, env[out], f"node {node.name!r} ({node.target[:80]}): its output")
    return env


def _recorded(graph: ExportedGraph, name: str, value: Tensor, what: str) -> None:
    recorded = graph.shapes.get(name)
    if recorded is None:
        raise InputError(f"{graph.file}: {what} {name[:60]!r} has no recorded shape; sninspect bounds only "
                         "values whose shape the archive records (is it corrupt or crafted?)")
    if tuple(value.shape) != recorded:
        raise InputError(f"{graph.file}: {what} {name[:60]!r} gives shape {list(value.shape)} where the archive "
                         f"records {list(recorded)} (is the archive corrupt or crafted?)")
    if value.numel() > MAX_ELEMENTS:
        raise InputError(f"{graph.file}: {what} {name[:60]!r} has shape {list(value.shape)}, more than "
                         f"{MAX_ELEMENTS} elements (is the archive crafted?)")


def fold_constants(graph: ExportedGraph) -> dict[str, Tensor]:
    """Every value that does not depend on a user input, in float64 (floating tensors), after
    :func:`check_shapes` has checked every shape without allocating."""
    check_shapes(graph)
    env: dict[str, Any] = {name: _float64(t) for name, t in graph.tensors.items()}
    dependent = dependent_values(graph)
    with torch.no_grad():
        for node in graph.nodes:
            if not any(name in dependent for name in node.outputs if name is not None):
                _call(node, env, FOLD_OPS, graph.file)
    return env


class GraphFunction:
    """The exported program as a float64 function of its (single) input tensor, built from
    :data:`RUN_OPS` only; differentiable with autograd and ``torch.func``. ``smooth``: ReLU kinks
    replaced by softplus of this sharpness (a surrogate whose Jacobian varies smoothly, for searching)."""

    def __init__(self, graph: ExportedGraph, constants: Mapping[str, Tensor] | None = None, *,
                 smooth: float | None = None) -> None:
        self.smooth = smooth
        if len(graph.inputs) != 1:
            raise InputError(f"{graph.file}: the program takes {len(graph.inputs)} tensor inputs; the "
                             "graph bound covers functions of one input tensor")
        self.graph = graph
        self.constants = dict(constants) if constants is not None else fold_constants(graph)
        dependent = dependent_values(graph)
        self.nodes: Sequence[GraphNode] = [n for n in graph.nodes
                                           if any(o in dependent for o in n.outputs if o is not None)]
        for node in self.nodes:
            operator(node.target, RUN_OPS, graph.file)
        self.input_shape = graph.shapes[graph.inputs[0]]
        if math.prod(self.input_shape) == 0:
            raise InputError(f"{graph.file}: the input's recorded shape {list(self.input_shape)} has no entries "
                             "(exported with an empty example batch?); nothing to bound")

    def check_runs(self) -> None:
        """Run the function once on zeros of the input shape and check that every value comes out with
        the shape the archive records: the bound rules read those shapes (a convolution is bounded at
        its recorded input size) and the arguments (stride, groups) that this run validates."""
        env: dict[str, Any] = dict(self.constants)
        env[self.graph.inputs[0]] = torch.zeros(self.input_shape, dtype=torch.float64)
        with torch.no_grad():
            for node in self.nodes:
                _call(node, env, RUN_OPS, self.graph.file)
                for name in node.outputs:
                    value, recorded = env.get(name) if name is not None else None, self.graph.shapes.get(name or "")
                    if isinstance(value, Tensor) and recorded is not None and tuple(value.shape) != recorded:
                        raise InputError(f"{self.graph.file}: node {node.name!r} ({node.target[:80]}) gives shape "
                                         f"{list(value.shape)} where the archive records {list(recorded)} (is the "
                                         "archive corrupt or crafted?)")

    def smoothed(self, beta: float) -> GraphFunction:
        """The same function with ReLU kinks smoothed (softplus of sharpness ``beta``)."""
        return GraphFunction(self.graph, self.constants, smooth=beta)

    def __call__(self, x: Tensor) -> Tensor:
        env: dict[str, Any] = dict(self.constants)
        env[self.graph.inputs[0]] = x
        for node in self.nodes:
            _call(node, env, RUN_OPS, self.graph.file, self.smooth)
        outs = [env[name].reshape(-1) for name in self.graph.outputs]
        return outs[0] if len(outs) == 1 else torch.cat(outs)  # (total outputs,)
