"""Reference layers for the SN layouts whose vectors (or power iteration) live on the convolution
operator, re-exported by ``reflayers``. Written from the published facts, not copied:

- ``ResFlowSNLinear`` / ``ResFlowSNConv2d``: rtqichen/residual-flows
  ``resflows/layers/base/lipschitz.py`` (SpectralNormLinear, SpectralNormConv2d; Chen et al. 2019;
  ``mixed_lipschitz.py``'s InducedNorm* with domain = codomain = 2 store the same, plus an
  ``initialized`` buffer). ``weight`` stays the module's Parameter; buffers ``scale`` (a 0-d log of σ),
  ``u``, ``v``; the conv adds ``spatial_dims`` (h, w of the first input, float) and registers u, v at
  its first forward: a 1×1 kernel u (out,), v (in,); a k×k kernel v (in·h·w,), u (out·oh·ow,), the
  flattened output of the conv at h×w (stride, padding k//2). Train forward: ``n_iterations`` steps
  v = n(Aᵀu), u = n(A v) written into the buffers (A = W, or the conv and its transpose); every forward
  computes σ = u · (A v) from the buffers, logs it in ``scale`` and divides W by max(1, σ / coeff)
  (``coeff`` a constructor argument, default 0.97, not stored).
- ``ProjectionConv2d``: axgoujon/convex_ridge_regularizers ``others/averaged_cnn`` (LipschitzConv2d
  with the ``spectral_norm_conv`` projection). Parameters ``weight``, ``bias`` and ``lipschitz_weight``
  (same shape). u (1, out, S, S) lives in a dict, not in the state. Train forward: one power step
  v = n(Aᵀu), u = n(A v) (A the zero-padded conv with padding k//2, stride 1), σ = u · (A v),
  ``lipschitz_weight`` ← L·W/σ, and the output uses that weight; eval convolves with the stored
  ``lipschitz_weight``. L (the Lipschitz goal) is a constructor argument, 1 in the published models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12


def _n(x: Tensor) -> Tensor:
    """F.normalize of a flat vector (x / max(‖x‖, 1e-12))."""
    return x / torch.linalg.vector_norm(x).clamp_min(EPS)


class ResFlowSNLinear(nn.Module):
    """Keys ``weight``, ``bias``, ``scale``, ``u``, ``v``."""

    def __init__(self, in_features: int, out_features: int, coeff: float = 0.97, n_iterations: int = 1) -> None:
        super().__init__()
        self.coeff, self.n_iterations = coeff, n_iterations
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("scale", torch.tensor(0.0))
        self.register_buffer("u", _n(torch.randn(out_features)))
        self.register_buffer("v", _n(torch.randn(in_features)))

    def compute_weight(self) -> Tensor:
        u, v, w = self.u, self.v, self.weight
        if self.training:
            with torch.no_grad():
                for _ in range(self.n_iterations):
                    v.copy_(_n(w.t() @ u))
                    u.copy_(_n(w @ v))
        sigma = torch.dot(u, w @ v)
        with torch.no_grad():
            self.scale.copy_(sigma)
        return w / torch.clamp(sigma / self.coeff, min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.compute_weight(), self.bias)

    def eval_divisor(self) -> float:
        """max(1, σ/coeff) with σ = u · (W v) from the stored buffers, in float64."""
        w, u, v = (t.detach().double() for t in (self.weight, self.u, self.v))
        return max(1.0, float(u @ (w @ v)) / self.coeff)


class ResFlowSNConv2d(nn.Module):
    """Keys ``weight``, ``bias``, ``spatial_dims``, ``scale`` and, after the first forward, ``u``, ``v``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, coeff: float = 0.97,
                 n_iterations: int = 1) -> None:
        super().__init__()
        self.coeff, self.n_iterations, self.padding = coeff, n_iterations, kernel_size // 2
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        fan_in = in_channels * kernel_size ** 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / fan_in ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("spatial_dims", torch.tensor([1.0, 1.0]))
        self.register_buffer("scale", torch.tensor(0.0))
        self.initialized = False
        self.out_shape: tuple[int, ...] = ()

    def _conv(self, v: Tensor, w: Tensor) -> Tensor:
        h, wd = (int(d) for d in self.spatial_dims)
        return F.conv2d(v.view(1, self.in_channels, h, wd), w, padding=self.padding)

    def _init_vectors(self) -> None:
        w = self.weight.detach()
        if self.kernel_size == 1:
            self.register_buffer("u", _n(w.new_empty(self.out_channels).normal_()))
            self.register_buffer("v", _n(w.new_empty(self.in_channels).normal_()))
            return
        h, wd = (int(d) for d in self.spatial_dims)
        v = _n(w.new_empty(self.in_channels * h * wd).normal_())
        self.out_shape = tuple(self._conv(v, w).shape)
        self.register_buffer("u", _n(w.new_empty(int(torch.tensor(self.out_shape).prod())).normal_()))
        self.register_buffer("v", v)

    def compute_weight(self) -> Tensor:
        if not self.initialized:
            self._init_vectors()
            self.initialized = True
        u, v, w = self.u, self.v, self.weight
        if self.kernel_size == 1:
            mat = w.view(self.out_channels, self.in_channels)
            if self.training:
                with torch.no_grad():
                    for _ in range(self.n_iterations):
                        v.copy_(_n(mat.t() @ u))
                        u.copy_(_n(mat @ v))
            sigma = torch.dot(u, mat @ v)
        else:
            if self.training:
                with torch.no_grad():
                    for _ in range(self.n_iterations):
                        back = F.conv_transpose2d(u.view(self.out_shape), w, padding=self.padding)
                        v.copy_(_n(back.reshape(-1)))
                        u.copy_(_n(self._conv(v, w).reshape(-1)))
            sigma = torch.dot(u, self._conv(v, w).reshape(-1))
        with torch.no_grad():
            self.scale.copy_(sigma)
        return w / torch.clamp(sigma / self.coeff, min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        if not self.initialized:
            self.spatial_dims.copy_(torch.tensor(x.shape[2:4], dtype=self.spatial_dims.dtype))
        return F.conv2d(x, self.compute_weight(), self.bias, padding=self.padding)

    def eval_divisor(self) -> float:
        """max(1, σ/coeff) with σ = u · (A v) from the stored buffers, in float64."""
        w, u, v = (t.detach().double() for t in (self.weight, self.u, self.v))
        if self.kernel_size == 1:
            sigma = float(u @ (w.view(self.out_channels, self.in_channels) @ v))
        else:
            sigma = float(u @ self._conv(v, w).reshape(-1))
        return max(1.0, sigma / self.coeff)


class ProjectionConv2d(nn.Module):
    """Keys ``weight``, ``bias``, ``lipschitz_weight``; u (1, out, S, S) kept outside the state."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, signal_size: int,
                 lipschitz: float = 1.0) -> None:
        super().__init__()
        self.padding, self.lipschitz = kernel_size // 2, lipschitz
        fan_in = in_channels * kernel_size ** 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / fan_in ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.largest_eigenvector = torch.randn(1, out_channels, signal_size, signal_size)
        self.largest_eigenvector /= self.largest_eigenvector.norm()
        self.lipschitz_weight = nn.Parameter(self._project())

    def _project(self) -> Tensor:
        w = self.weight
        u = self.largest_eigenvector.to(w)
        with torch.no_grad():
            v = F.conv_transpose2d(u, w, padding=self.padding)
            v = v / v.norm().clamp_min(1e-10)
            u = F.conv2d(v, w, padding=self.padding)
            u = u / u.norm().clamp_min(1e-10)
        self.largest_eigenvector = u
        sigma = torch.sum(u * F.conv2d(v, w, padding=self.padding))
        return self.lipschitz * w / sigma

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            weight = self._project()
            self.lipschitz_weight.data = weight.detach()
            return F.conv2d(x, weight, self.bias, padding=self.padding)
        return F.conv2d(x, self.lipschitz_weight, self.bias, padding=self.padding)
