"""Reference layers for the SN dialects that have no PyTorch module of their own.

Each class reproduces, from the published eval behaviour of the original, the state-dict layout
(same keys, shapes and order) and the forward of one third-party SN implementation:

- ``mimicry``: kwotsin/mimicry ``torch_mimicry/modules/spectral_norm.py`` (SNLinear, SNConv2d,
  SNEmbedding; Lee & Town 2020). Buffers ``sn_u`` (1, out), unnormalized ``randn`` at init, and a
  logged ``sn_sigma`` (1,). W is ``weight.view(weight.shape[0], -1)`` (for the embedding: rows =
  ``num_embeddings``). Every forward, eval included, runs ``num_iters`` steps from the stored u:
  v = F.normalize(u W), u' = F.normalize(v Wᵀ) (x / max(‖x‖, 1e-12)), σ = u' W vᵀ; the weight is
  divided by that σ. Only in train mode are u' and σ written back; ``sn_sigma`` is never read.
- ``biggan``: ajbrock/BigGAN-PyTorch ``layers.py`` (class ``SN``; SNLinear, SNConv2d, SNEmbedding;
  Brock et al. 2019). Buffers ``u0, sv0, u1, sv1, ...`` (``u_i`` (1, num_outputs), unnormalized
  ``randn``; ``sv_i`` (1,) logs). W is ``weight.view(weight.size(0), -1)``, transposed when
  ``transpose=True``. Each of the ``num_itrs`` passes runs one step per u_i, Gram-Schmidt against the
  earlier vectors, and writes u_i back only in train mode; the weight is divided by ``svs[0]`` (from
  u0). In eval mode every pass restarts from the stored u0, so ``num_itrs`` does not matter there.
- ``cosgrove``: christiancosgrove/pytorch-spectral-normalization-gan ``spectral_normalization.py``
  (the ``SpectralNorm`` wrapper). The wrapped module's weight is replaced by the Parameters
  ``weight_u`` (h,), ``weight_v`` (w,) (``requires_grad=False``) and ``weight_bar``; every forward,
  eval included, runs a step v = l2n(Wᵀu), u = l2n(W v) (l2n(x) = x / (‖x‖ + 1e-12)) and *stores
  both*, then divides by u · (W v).
- ``soft``: the soft SN of invertible ResNets (Behrmann et al. 2019, ``spectral_norm_fc``) and of the
  DUE / DDU uncertainty models. The module's ``weight`` becomes the Parameter ``weight_orig`` and
  buffers ``weight_u`` (out,), ``weight_v`` (in*k...,) (normalized ``randn`` at init) and
  ``weight_sigma`` (1,) (a log). W is ``weight_orig`` viewed as (out, -1). In train mode each forward
  runs v = n(Wᵀu), u = n(W v) (F.normalize, eps 1e-12) and stores both; every forward computes
  σ = u · (W v) from the (stored) vectors and divides by max(1, σ / coeff), logging σ in
  ``weight_sigma``. ``coeff`` is a constructor argument, not stored.

The layouts whose vectors live on the convolution operator (residual flows, projection SN) are in
``reflayers_operator`` and re-exported here.

Each layer's :meth:`eval_divisor` gives, in float64 from the *current* stored state, the σ̂ the
next eval forward divides by. The code here is written from those facts, not copied.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12


def normalize_rows(x: Tensor, eps: float = EPS) -> Tensor:
    """``F.normalize(x, eps=eps)`` for a (1, n) row: x / max(‖x‖, eps)."""
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(eps)


def l2normalize(x: Tensor, eps: float = EPS) -> Tensor:
    """The cosgrove wrapper's ``l2normalize``: x / (‖x‖ + eps)."""
    return x / (torch.linalg.vector_norm(x) + eps)


def one_step_sigma(matrix: Tensor, u: Tensor, *, plus_eps: bool = False, steps: int = 1) -> float:
    """σ̂ after ``steps`` fresh power steps from u (not stored), in float64.

    v = n(Wᵀu), u' = n(W v), σ̂ = u' · (W v); ``plus_eps`` picks x / (‖x‖ + eps) over
    x / max(‖x‖, eps).
    """
    norm = l2normalize if plus_eps else (lambda x: x / torch.linalg.vector_norm(x).clamp_min(EPS))
    w = matrix.detach().to(torch.float64)  # (rows, cols)
    u = u.detach().reshape(-1).to(torch.float64)  # (rows,)
    v = torch.zeros(w.shape[1], dtype=torch.float64)
    for _ in range(steps):
        v = norm(w.T @ u)  # (cols,)
        u = norm(w @ v)  # (rows,)
    return float(torch.dot(u, w @ v))


# ----------------------------------------------------------------------------------------------
# mimicry


class _MimicrySN:
    """Shared state and weight computation of the mimicry layers (mixed into an nn layer)."""

    weight: Tensor
    training: bool
    num_iters: int
    eps: float
    sn_u: Tensor
    sn_sigma: Tensor
    register_buffer: Any

    def _init_sn(self, n_dim: int, num_iters: int = 1, eps: float = EPS) -> None:
        self.num_iters = num_iters
        self.eps = eps
        self.register_buffer("sn_u", torch.randn(1, n_dim))  # (1, out), not normalized at init
        self.register_buffer("sn_sigma", torch.ones(1))  # a log; never read by the forward

    def matrix(self) -> Tensor:
        """W as the power iteration sees it: (shape[0], rest)."""
        return self.weight.view(self.weight.shape[0], -1)

    def sn_weight(self) -> Tensor:
        """The normalized weight; in train mode also stores the new u and σ."""
        w = self.matrix()  # (out, n)
        u = self.sn_u  # (1, out)
        with torch.no_grad():
            for _ in range(self.num_iters):
                v = normalize_rows(u @ w, self.eps)  # (1, n)
                u = normalize_rows(v @ w.t(), self.eps)  # (1, out)
        sigma = u @ (w @ v.t())  # (1, 1), differentiable in W
        if self.training:
            with torch.no_grad():
                self.sn_sigma.copy_(sigma.reshape(1))
                self.sn_u.copy_(u)
        return self.weight / sigma

    def eval_divisor(self) -> float:
        """σ̂ of the next eval forward: ``num_iters`` fresh steps from ``sn_u`` (``sn_sigma`` unused)."""
        return one_step_sigma(self.matrix(), self.sn_u, steps=self.num_iters)


class MimicrySNLinear(nn.Linear, _MimicrySN):
    """``torch_mimicry.modules.spectral_norm.SNLinear``: keys weight, bias, sn_u (1, out), sn_sigma."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, num_iters: int = 1) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_sn(out_features, num_iters)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.sn_weight(), self.bias)


class MimicrySNConv2d(nn.Conv2d, _MimicrySN):
    """``torch_mimicry.modules.spectral_norm.SNConv2d``: W viewed as (out, in*kh*kw)."""

    def __init__(self, in_channels: int, out_channels: int, *args: Any, num_iters: int = 1,
                 **kwargs: Any) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, *args, **kwargs)
        self._init_sn(out_channels, num_iters)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.sn_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class MimicrySNEmbedding(nn.Embedding, _MimicrySN):
    """``torch_mimicry.modules.spectral_norm.SNEmbedding``: u has ``num_embeddings`` entries (the
    weight's rows); the forward passes only the input and the weight to F.embedding."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *args: Any, **kwargs: Any) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, *args, **kwargs)
        self._init_sn(num_embeddings)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.sn_weight())


# ----------------------------------------------------------------------------------------------
# BigGAN


def _project_out(x: Tensor, ys: list[Tensor]) -> Tensor:
    """Gram-Schmidt: x minus its projections on each row y in ys (all (1, n))."""
    for y in ys:
        x = x - (y @ x.t()) * y / (y @ y.t())
    return x


class _BigGANSN:
    """Shared state and weight computation of the BigGAN ``layers.SN`` layers."""

    weight: Tensor
    training: bool
    num_svs: int
    num_itrs: int
    transpose: bool
    eps: float
    register_buffer: Any

    def _init_sn(self, num_svs: int, num_itrs: int, num_outputs: int, transpose: bool, eps: float) -> None:
        self.num_svs = num_svs
        self.num_itrs = num_itrs
        self.transpose = transpose
        self.eps = eps
        for i in range(num_svs):
            self.register_buffer(f"u{i}", torch.randn(1, num_outputs))  # (1, rows of W), not normalized
            self.register_buffer(f"sv{i}", torch.ones(1))  # logs only

    @property
    def us(self) -> list[Tensor]:
        return [getattr(self, f"u{i}") for i in range(self.num_svs)]

    @property
    def svs(self) -> list[Tensor]:
        return [getattr(self, f"sv{i}") for i in range(self.num_svs)]

    def matrix(self) -> Tensor:
        """W as the power iteration sees it: (size(0), rest), or its transpose."""
        w = self.weight.view(self.weight.size(0), -1)
        return w.t() if self.transpose else w

    def _pass(self, w: Tensor, update: bool) -> list[Tensor]:
        """One step for every stored u_i (Gram-Schmidt against earlier vectors); the σ_i."""
        us: list[Tensor] = []
        vs: list[Tensor] = []
        sigmas: list[Tensor] = []
        for stored in self.us:
            with torch.no_grad():
                v = normalize_rows(_project_out(stored @ w, vs), self.eps)  # (1, cols)
                vs.append(v)
                u = normalize_rows(_project_out(v @ w.t(), us), self.eps)  # (1, rows)
                us.append(u)
                if update:
                    stored.copy_(u)
            sigmas.append(((v @ w.t()) @ u.t()).squeeze())  # differentiable in W
        return sigmas

    def sn_weight(self) -> Tensor:
        """The weight divided by σ_0; in train mode u_i and sv_i are stored."""
        w = self.matrix()
        sigmas: list[Tensor] = []
        for _ in range(self.num_itrs):
            sigmas = self._pass(w, update=self.training)
        if self.training:
            with torch.no_grad():
                for log, sigma in zip(self.svs, sigmas, strict=True):
                    log.copy_(sigma.reshape(1))
        return self.weight / sigmas[0]

    def eval_divisor(self) -> float:
        """σ̂ of the next eval forward: one fresh step from ``u0`` (``sv0`` unused, ``num_itrs`` moot)."""
        return one_step_sigma(self.matrix(), self.us[0])


class BigGANSNLinear(nn.Linear, _BigGANSN):
    """BigGAN ``layers.SNLinear``: keys weight, bias, u0, sv0, u1, sv1, ...

    ``transpose=True`` (an option of the ``SN`` base the released layers do not expose) runs the
    iteration on Wᵀ, so u_i then have ``in_features`` entries.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, num_svs: int = 1,
                 num_itrs: int = 1, eps: float = EPS, transpose: bool = False) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_sn(num_svs, num_itrs, in_features if transpose else out_features, transpose, eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.sn_weight(), self.bias)


class BigGANSNConv2d(nn.Conv2d, _BigGANSN):
    """BigGAN ``layers.SNConv2d``: W viewed as (out, in*kh*kw) (its transpose with ``transpose``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 num_svs: int = 1, num_itrs: int = 1, eps: float = EPS, transpose: bool = False) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                           bias)
        cols = self.weight[0].numel()
        self._init_sn(num_svs, num_itrs, cols if transpose else out_channels, transpose, eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.sn_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class BigGANSNEmbedding(nn.Embedding, _BigGANSN):
    """BigGAN ``layers.SNEmbedding``: u_i have ``num_embeddings`` entries (the weight's rows)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, num_svs: int = 1, num_itrs: int = 1,
                 eps: float = EPS) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim)
        self._init_sn(num_svs, num_itrs, num_embeddings, False, eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.sn_weight())


# ----------------------------------------------------------------------------------------------
# cosgrove


class CosgroveSN(nn.Module):
    """The ``SpectralNorm`` wrapper of pytorch-spectral-normalization-gan.

    State (under the wrapper's own prefix): ``module.<other params>``, ``module.weight_u`` (h,),
    ``module.weight_v`` (w,), ``module.weight_bar`` (shape of the weight), in that order; W is
    ``weight_bar.view(h, -1)`` with h = shape[0] (also for ConvTranspose, whose shape[0] is *in*).
    """

    def __init__(self, module: nn.Module, name: str = "weight", power_iterations: int = 1) -> None:
        super().__init__()
        self.module = module
        self.name = name
        self.power_iterations = power_iterations
        if not all(hasattr(module, name + s) for s in ("_u", "_v", "_bar")):
            self._make_params()

    def _make_params(self) -> None:
        w = getattr(self.module, self.name).data
        h = w.shape[0]
        width = w.view(h, -1).shape[1]
        u = nn.Parameter(l2normalize(w.new_empty(h).normal_(0, 1)), requires_grad=False)
        v = nn.Parameter(l2normalize(w.new_empty(width).normal_(0, 1)), requires_grad=False)
        del self.module._parameters[self.name]
        self.module.register_parameter(self.name + "_u", u)
        self.module.register_parameter(self.name + "_v", v)
        self.module.register_parameter(self.name + "_bar", nn.Parameter(w))

    def _vectors(self) -> tuple[Tensor, Tensor, Tensor]:
        return (getattr(self.module, self.name + "_u"), getattr(self.module, self.name + "_v"),
                getattr(self.module, self.name + "_bar"))

    def forward(self, *args: Any) -> Any:
        u, v, w = self._vectors()
        h = w.shape[0]
        for _ in range(self.power_iterations):
            # Stored at every forward, eval included. Like the original, swap ``.data`` (no version
            # bump), so D(real) + D(fake) still backpropagates.
            v.data = l2normalize(w.data.view(h, -1).t() @ u.data)
            u.data = l2normalize(w.data.view(h, -1) @ v.data)
        sigma = torch.dot(u, w.view(h, -1) @ v)  # differentiable in W
        setattr(self.module, self.name, w / sigma)  # a plain attribute, not in the state dict
        return self.module(*args)

    def eval_divisor(self) -> float:
        """σ̂ of the next forward (train or eval): one fresh step from the stored u, x / (‖x‖ + eps).
        The stored v does not enter: the step overwrites it first."""
        u, _, w = self._vectors()
        steps = self.power_iterations
        return one_step_sigma(w.view(w.shape[0], -1), u, plus_eps=True, steps=steps)


# ----------------------------------------------------------------------------------------------
# soft SN (i-ResNet / DUE)


def _normalize(x: Tensor, eps: float = EPS) -> Tensor:
    """``F.normalize(x, dim=0, eps=eps)`` for a 1-D x."""
    return x / torch.linalg.vector_norm(x).clamp_min(eps)


class SoftSN(nn.Module):
    """A layer (Linear or Conv2d) under soft SN: keys ``layer.bias``, ``layer.weight_orig``,
    ``layer.weight_u``, ``layer.weight_v``, ``layer.weight_sigma`` (the weight re-registered after the
    bias, as the original's ``delattr`` + ``register_parameter`` does)."""

    def __init__(self, layer: nn.Module, coeff: float = 1.0, n_power_iterations: int = 1) -> None:
        super().__init__()
        self.layer, self.coeff, self.n_power_iterations = layer, coeff, n_power_iterations
        weight = layer.weight
        del layer._parameters["weight"]
        layer.register_parameter("weight_orig", weight)
        rows = weight.shape[0]
        cols = weight.numel() // rows
        layer.register_buffer("weight_u", _normalize(weight.new_empty(rows).normal_(0, 1)))
        layer.register_buffer("weight_v", _normalize(weight.new_empty(cols).normal_(0, 1)))
        layer.register_buffer("weight_sigma", weight.new_ones(1))
        self.eval_weight()  # a plain attribute ``weight`` for the wrapped layer's forward

    def matrix(self) -> Tensor:
        w = self.layer.weight_orig
        return w.view(w.shape[0], -1)  # (out, in*k...)

    def eval_weight(self) -> Tensor:
        """The weight the forward uses; in train mode first one power step per iteration, stored."""
        w = self.matrix()
        u, v = self.layer.weight_u, self.layer.weight_v
        if self.training:
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    v = _normalize(w.t() @ u)  # (in*k,)
                    u = _normalize(w @ v)  # (out,)
                self.layer.weight_u.copy_(u)
                self.layer.weight_v.copy_(v)
            u, v = u.clone(), v.clone()
        sigma = torch.dot(u, w @ v)  # differentiable in W
        factor = torch.clamp(sigma / self.coeff, min=1.0)  # max(1, σ/coeff)
        with torch.no_grad():
            self.layer.weight_sigma.copy_(sigma.detach().reshape(1))
        weight = self.layer.weight_orig / factor
        self.layer.weight = weight
        return weight

    def forward(self, x: Tensor) -> Tensor:
        self.eval_weight()
        return self.layer(x)

    def eval_divisor(self) -> float:
        """What the next eval forward divides by: max(1, σ/coeff) with σ = u · (W v), stored u, v."""
        w = self.matrix().detach().to(torch.float64)
        u = self.layer.weight_u.detach().to(torch.float64)
        v = self.layer.weight_v.detach().to(torch.float64)
        return max(1.0, float(torch.dot(u, w @ v)) / self.coeff)


from reflayers_operator import ProjectionConv2d, ResFlowSNConv2d, ResFlowSNLinear  # noqa: E402, F401

REFERENCE_LAYERS = (_MimicrySN, _BigGANSN, CosgroveSN, SoftSN, ResFlowSNLinear, ResFlowSNConv2d)
"""Classes whose instances have ``eval_divisor()``."""
