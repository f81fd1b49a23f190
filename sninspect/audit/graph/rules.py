"""One bound rule per operator: the Lipschitz bound of a node's output from its inputs' bounds.

L(v) bounds ‖v(x) − v(x')‖ / ‖x − x'‖ for the network input x. Values that do not depend on x have
L = 0. A node applying a linear or Lipschitz map g to one input has L ≤ ‖g‖ · L(input), where ‖g‖ is
taken at the node's real input size (convolutions with their stride, padding, dilation and groups;
pooling; reductions). Sums add (‖Δa + Δb‖ ≤ ‖Δa‖ + ‖Δb‖: a residual x + f(x) gets 1 + L(f));
concatenations take the root-sum-square (‖(Δa, Δb)‖² = ‖Δa‖² + ‖Δb‖²). Broadcasting copies an entry
k times and multiplies its contribution by √k. A product of two input-dependent values is not
Lipschitz at all: refused, as is every operator without a rule here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sninspect.audit.graph.interpret import op_name, operator
from sninspect.errors import InputError
from sninspect.io.exported import GraphNode, Ref
from sninspect.linalg import operators
from sninspect.linalg.network import batchnorm_factor

__all__ = ["Step", "bound_step"]

_IDENTITIES = {"view", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze", "permute", "transpose",
               "t", "contiguous", "clone", "alias", "detach", "identity", "lift_fresh_copy", "unflatten",
               "view_as", "reshape_as", "flip", "movedim", "_to_copy", "to", "type_as", "neg", "numpy_T", "mT"}
_PROJECTIONS = {"slice", "select", "narrow", "split", "chunk"}
_COPIES = {"expand", "repeat"}
_AVG = {"avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
        "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "mean", "sum"}
_CONV = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
         "conv_transpose3d"}


@dataclass(frozen=True)
class Step:
    """A node's rule, its own factor (where it has one), and the bound of its output."""

    rule: str
    factor: float | None
    factor_lower: float | None
    bound: float
    chain_factor: float | None = None
    """The size-free bound a per-layer chain product would use for this node (convs, linear, BN)."""


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def bound_step(node: GraphNode, bounds: Mapping[str, float], env: Mapping[str, Any],
               shapes: Mapping[str, tuple[int, ...]], file: str) -> Step:
    """The :class:`Step` of one node whose output depends on the input."""
    name = op_name(node.target)
    args, kwargs = list(node.args), dict(node.kwargs)
    live = any(isinstance(a, Ref) and a.name in bounds for a in args)

    def refuse(why: str) -> InputError:
        return InputError(f"{file}: node {node.name!r} ({node.target[:80]}"
                          f"{' in ' + node.module if node.module else ''}): {why}; the graph bound is refused "
                          "rather than given without a valid rule")

    plain = [v for a in (*args, *kwargs.values()) for v in (a if isinstance(a, list) else [a])]
    if any(isinstance(v, float) and math.isnan(v) for v in plain):  # JSON from Python may spell NaN
        raise refuse("an argument is NaN")
    for ref in (a for a in (*args, *kwargs.values()) if isinstance(a, Ref)):
        value = env.get(ref.name)
        if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise refuse(f"its constant operand {ref.name[:60]!r} has NaN or infinite entries")

    def single(factor: float, rule: str, lower: float | None = None, chain: float | None = None) -> Step:
        source = args[0]
        if not isinstance(source, Ref) or source.name not in bounds:
            raise refuse("the input-dependent value is not its first argument")
        return Step(rule, factor, lower, factor * bounds[source.name], chain)

    if name in _IDENTITIES:
        return single(1.0, f"{name}: 1 (isometry)")
    if name in _PROJECTIONS or name in ("dropout", "feature_dropout"):
        if name in ("dropout", "feature_dropout") and (len(args) > 2 and args[2] or kwargs.get("train")):
            raise refuse("dropout in training mode is random; export the model in eval mode")
        return single(1.0, f"{name}: 1 (a projection)" if name in _PROJECTIONS else f"{name} (eval): 1")
    if name in _COPIES:
        k = _copies(shapes[args[0].name], _out_shape(node, shapes))
        return single(math.sqrt(k), f"{name}: √{k:g} (each entry copied {k:g} times)")
    if name in ("cat", "stack"):
        parts = [bounds.get(r.name, 0.0) for r in args[0] if isinstance(r, Ref)]
        return Step("root-sum-square", None, None, math.sqrt(sum(b * b for b in parts)))
    act = operators.activation_lipschitz(name, args[1:] + list(kwargs.values()))
    if act is not None:
        return single(act, f"{name}: {act:.6g}")
    if name in ("add", "sub", "rsub"):
        return _sum(node, args, kwargs, bounds, shapes, refuse)
    if name in ("mul", "div"):
        return _scale(node, name, args, bounds, env, shapes, refuse)
    if name in _CONV:
        return _conv(name, args, kwargs, shapes, env, single, refuse)
    if name in ("linear", "mm", "matmul", "addmm"):
        return _matrix(name, args, bounds, env, single, refuse)
    if name in ("batch_norm", "_native_batch_norm_legit_no_training"):
        training = args[5] if name == "batch_norm" and len(args) > 5 else False
        if training:
            raise refuse("BatchNorm in training mode normalizes by batch statistics (not Lipschitz)")
        eps = args[7] if name == "batch_norm" else args[6]
        gamma, var = env.get(args[1].name) if isinstance(args[1], Ref) else None, env[args[4].name]
        factor = batchnorm_factor(gamma, var, float(eps))
        return single(factor, "batchnorm (eval): max |γ|/√(var+ε)", factor, factor)
    if name in _AVG:
        return _average(node, name, args, kwargs, shapes, single)
    if name.startswith("max_pool"):
        return _max_pool(node, name, args, shapes, single)
    raise refuse("no Lipschitz rule for this operator" if live else "no rule for this operator")


def _out_shape(node: GraphNode, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The recorded shape of the node's first output (checked equal to the computed one); a node without
    one is refused (KeyError), never bounded at a guessed size."""
    if not node.outputs or node.outputs[0] is None:
        raise KeyError(f"node {node.name!r} names no output")
    return shapes[node.outputs[0]]


def _copies(small: Sequence[int], big: Sequence[int]) -> float:
    """How many times broadcasting ``small`` to ``big`` copies each entry."""
    return max(1.0, math.prod(big) / max(1, math.prod(small)))


def _sum(node: GraphNode, args: list[Any], kwargs: dict[str, Any], bounds: Mapping[str, float],
         shapes: Mapping[str, tuple[int, ...]], refuse: Callable[[str], InputError]) -> Step:
    out = _out_shape(node, shapes)
    alpha = abs(float(kwargs.get("alpha", args[2] if len(args) > 2 else 1.0)))
    scaled = 0 if op_name(node.target) == "rsub" else 1  # rsub(a, b, α) = b − α·a; add/sub: a ± α·b
    total, terms = 0.0, []
    for index, arg in enumerate(args[:2]):
        if isinstance(arg, Ref) and arg.name in bounds:
            k = _copies(shapes[arg.name], out)
            weight = (alpha if index == scaled else 1.0) * math.sqrt(k)
            total += weight * bounds[arg.name]
            terms.append(f"{weight:g}·L({arg.name})" if weight != 1.0 else f"L({arg.name})")
    if not terms:
        raise refuse("no input-dependent operand")
    return Step("sum " + " + ".join(terms) if len(terms) > 1 else "shift (adds a constant)", None, None, total)


def _scale(node: GraphNode, name: str, args: list[Any], bounds: Mapping[str, float], env: Mapping[str, Any],
           shapes: Mapping[str, tuple[int, ...]], refuse: Callable[[str], InputError]) -> Step:
    first, second = args[0], args[1]
    live = [a for a in (first, second) if isinstance(a, Ref) and a.name in bounds]
    if len(live) == 2:
        raise refuse(f"{name} of two input-dependent values is not Lipschitz")
    if name == "div" and live[0] is not first:
        raise refuse("dividing by an input-dependent value is not Lipschitz")
    x = live[0]
    other = second if x is first else first
    const = env[other.name] if isinstance(other, Ref) else torch.tensor(float(other), dtype=torch.float64)
    const = const.double()
    scale = const.abs() if name == "mul" else 1.0 / const.abs()
    out = _out_shape(node, shapes) or tuple(shapes[x.name])
    # Broadcasting: output entry j = x[π(j)]·c_j, so ‖Δy‖² ≤ max_i Σ_{π(j)=i} c_j² ‖Δx‖².
    squares = (scale ** 2).expand(out)
    x_shape = (1,) * (len(out) - len(shapes[x.name])) + tuple(shapes[x.name])
    axes = [i for i, n in enumerate(x_shape) if n == 1 and out[i] != 1]
    per_entry = squares.sum(dim=axes) if axes else squares
    factor = math.sqrt(float(per_entry.max())) if per_entry.numel() else 0.0
    return Step(f"{name} by a constant: {factor:.6g}", factor, None, factor * bounds[x.name])


def _conv(name: str, args: list[Any], kwargs: dict[str, Any], shapes: Mapping[str, tuple[int, ...]],
          env: Mapping[str, Any], single: Callable[..., Step], refuse: Callable[[str], InputError]) -> Step:
    if not isinstance(args[1], Ref) or args[1].name not in env:
        raise refuse("the convolution's weight depends on the input")
    weight = env[args[1].name]
    d = weight.dim() - 2
    full = list(args) + [None] * 9

    def ints(value: Any, default: int) -> list[int]:
        if value is None:
            return [default] * d
        return list(value) * d if len(value) == 1 else list(value)

    transposed = name.startswith("conv_transpose") or (name in ("convolution", "_convolution") and bool(full[6]))
    if name in ("convolution", "_convolution"):
        stride, padding, dilation = ints(full[3], 1), ints(full[4], 0), ints(full[5], 1)
        output_padding, groups = ints(full[7], 0), int(full[8] or 1)
    elif transposed:  # conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)
        stride, padding = ints(full[3], 1), ints(full[4], 0)
        output_padding, groups, dilation = ints(full[5], 0), int(full[6] or 1), ints(full[7], 1)
    else:  # conv(input, weight, bias, stride, padding, dilation, groups); padding may be 'same'/'valid'
        stride, dilation, groups, output_padding = ints(full[3], 1), ints(full[5], 1), int(full[6] or 1), [0] * d
        padding = _padding(full[4], weight, dilation, d)
        if padding is None:
            raise refuse(f"padding {full[4]!r} is not one sninspect reads")
    in_shape = shapes[args[0].name]
    sample = (1, *in_shape[1:]) if len(in_shape) == d + 2 else (1, *in_shape)
    norm = operators.conv_norm_at(weight, sample, stride=stride, padding=padding, dilation=dilation,
                                  groups=groups, transposed=transposed, output_padding=output_padding)
    chain = operators.grouped_conv_bound(weight.double(), groups, transposed=transposed)
    rule = (f"{'conv_transpose' if transposed else 'conv'} at {_shape_text(sample)} stride "
            f"{_shape_text(stride)} pad {_shape_text(padding)}{f' groups {groups}' if groups > 1 else ''} "
            f"({norm.method})")
    return single(norm.upper, rule, norm.lower, chain)


def _padding(value: Any, weight: Tensor, dilation: list[int], d: int) -> list[int] | None:
    if value is None or value == "valid":
        return [0] * d
    if value == "same":  # stride 1: total dilation·(k−1), the odd extra after; zero padding on one side
        totals = [dil * (k - 1) for dil, k in zip(dilation, weight.shape[2:], strict=True)]
        if any(t % 2 for t in totals):
            return None  # asymmetric 'same' pads via F.pad; not read here
        return [t // 2 for t in totals]
    if isinstance(value, list):
        return value * d if len(value) == 1 else list(value)
    return None


def _matrix(name: str, args: list[Any], bounds: Mapping[str, float], env: Mapping[str, Any],
            single: Callable[..., Step], refuse: Callable[[str], InputError]) -> Step:
    if name == "addmm":  # addmm(bias, x, W) = bias + x W
        args = args[1:]
    first, second = args[0], args[1]
    live = [a for a in (first, second) if isinstance(a, Ref) and a.name in bounds]
    if len(live) != 1 or live[0] is not first:
        raise refuse(f"{name} needs the input on the left and a constant matrix on the right")
    if not isinstance(second, Ref) or second.name not in env or env[second.name].dim() != 2:
        raise refuse(f"{name} with a weight that is not a constant matrix")
    norm = operators.matrix_norm(env[second.name])
    return single(norm.upper, f"{name}: σ1 (svd)", norm.lower, norm.upper)


def _average(node: GraphNode, name: str, args: list[Any], kwargs: dict[str, Any],
             shapes: Mapping[str, tuple[int, ...]], single: Callable[..., Step]) -> Step:
    """Average pooling, adaptive average pooling, mean and sum: non-negative linear maps, normed at
    the real input size (one sample for pooling; the whole tensor for a reduction)."""
    overload = operator(node.target, {name}, "")  # from the fixed table (the graph was checked against it)
    in_shape = shapes[args[0].name]
    pooled = name != "mean" and name != "sum"
    shape = (1, *in_shape[1:]) if pooled and len(in_shape) > 2 else in_shape
    rest, extra = args[1:], dict(kwargs)
    extra.pop("dtype", None)

    def forward(x: Tensor) -> Tensor:
        return overload(x, *rest, **extra)

    norm = operators.nonnegative_norm_at(forward, shape)
    return single(norm.upper, f"{name} at {_shape_text(shape)} ({norm.method})", norm.lower)


def _max_pool(node: GraphNode, name: str, args: list[Any], shapes: Mapping[str, tuple[int, ...]],
              single: Callable[..., Step]) -> Step:
    in_shape, out_shape = shapes[args[0].name], _out_shape(node, shapes)
    d = int(name[len("max_pool")])  # max_pool1d / max_pool2d / max_pool3d (the list run by the evaluator)
    full = list(args) + [None] * 6

    def ints(value: Any, default: Sequence[int]) -> list[int]:
        if value is None or value == []:
            return list(default)
        return list(value) * d if len(value) == 1 else list(value)

    kernel = ints(full[1], [1] * d)
    stride, padding, dilation = ints(full[2], kernel), ints(full[3], [0] * d), ints(full[4], [1] * d)
    factor = operators.max_pool_lipschitz(in_shape[-d:], out_shape[-d:], kernel, stride, padding, dilation)
    return single(factor, f"{name}: √(most windows sharing an input) = {factor:.6g}")

