"""sninspect.linalg.conv_bounds, conv_same and network against dense oracles: full Jacobians of real
torch convolutions, an independent maximization of the symbol, brute-force FFT grids, and eval-mode BatchNorm."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize, minimize_scalar
from torch import Tensor, nn

from sninspect.linalg import conv_bounds
from sninspect.linalg.conv_bounds import (
    ConvBound,
    certification_factor,
    conv_operator_bound,
    grid_max,
    grid_sizes,
    reshape_bounds,
)
from sninspect.linalg.conv_same import conv_same_operator_norm
from sninspect.linalg.network import batchnorm_factor, cumulative_product


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These tensors are tiny: one intra-op thread skips OpenMP synchronization, which dominates at
    this size (and balloons on a loaded machine). Restored afterwards for the other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SETTINGS = settings(deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CERTIFIED = 1.0 - 1e-12
"""An upper bound may undershoot the oracle by rounding only."""


# ----------------------------------------------------------------------------------------------
# Oracles


def dense_jacobian(fn: Callable[[Tensor], Tensor], in_shape: tuple[int, ...]) -> np.ndarray:
    """The full matrix of a linear map on (1, *in_shape) inputs: apply it to every basis vector."""
    size = math.prod(in_shape)
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *in_shape)  # (D, *in_shape)
    return fn(basis).reshape(size, -1).T.numpy()  # (out, D)


def sigma1(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


def symbol_values(kernel: Tensor, thetas: np.ndarray) -> np.ndarray:
    """σ_max(K̂(θ)) at points θ (P, d), straight from the definition."""
    k = kernel.numpy()
    grids = np.meshgrid(*(np.arange(n) for n in k.shape[2:]), indexing="ij")
    taps = np.stack(grids, -1).reshape(-1, k.ndim - 2)  # (T, d)
    flat = k.reshape(k.shape[0], k.shape[1], -1)  # (c_out, c_in, T)
    phase = np.exp(-1j * thetas @ taps.T)  # (P, T)
    return np.linalg.svd(np.einsum("pt,oit->poi", phase, flat), compute_uv=False)[:, 0]


def symbol_sup(kernel: Tensor) -> float:
    """σ* = sup_θ σ_max(K̂(θ)), independently: a fine grid, then a local optimizer from its best point."""
    d = kernel.dim() - 2
    per_axis = {1: 4096, 2: 160}[d]
    axes = np.linspace(0.0, 2 * np.pi, per_axis, endpoint=False)
    thetas = np.stack(np.meshgrid(*([axes] * d), indexing="ij"), -1).reshape(-1, d)
    values = symbol_values(kernel, thetas)
    start = thetas[int(np.argmax(values))]
    step = 2 * np.pi / per_axis

    def negative(theta: np.ndarray) -> float:
        return -float(symbol_values(kernel, np.atleast_2d(theta))[0])

    if d == 1:
        found = minimize_scalar(lambda t: negative(np.array([t])), bounds=(start[0] - step, start[0] + step),
                                method="bounded", options={"xatol": 1e-13})
    else:
        found = minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-15})
    return max(float(values.max()), -float(found.fun))


def brute_grid_max(kernel: Tensor, grid: tuple[int, ...]) -> float:
    """The brief's recipe: FFT of the zero-padded kernel to the grid, then every σ_max."""
    symbol = torch.fft.fftn(kernel, s=grid, dim=tuple(range(2, kernel.dim())))  # (c_out, c_in, *grid)
    mats = symbol.movedim(0, -1).movedim(0, -1).reshape(-1, kernel.shape[0], kernel.shape[1])  # (∏N, o, i)
    return float(torch.linalg.svdvals(mats)[:, 0].max())


def one_minus_abs_cos(a: Tensor, b: Tensor) -> float:
    """1 − |cos| without cancellation: ‖a − s b‖² / 2 for unit a, b."""
    a, b = a.reshape(-1) / a.norm(), b.reshape(-1) / b.norm()
    sign = 1.0 if float(a @ b) >= 0 else -1.0
    return 0.5 * float((a - sign * b).norm()) ** 2


def modulated_bump(shape: tuple[int, ...], grid: tuple[int, ...], bins: tuple[int, ...], seed: int) -> Tensor:
    """K[o, i, x] = a_oi cos(ω0_1 x_1 + φ_oi) ∏_{i>1} cos(ω0_i x_i) with ω0 = 2π(j + ½)/N: the
    symbol peaks between grid points."""
    gen = torch.Generator().manual_seed(seed)
    d = len(shape) - 2
    lead = (*shape[:2], *([1] * d))
    kernel = torch.randn(shape[:2], generator=gen, dtype=torch.float64).reshape(lead)  # (c_out, c_in, 1..)
    phase = 2 * math.pi * torch.rand(shape[:2], generator=gen, dtype=torch.float64).reshape(lead)
    for axis, (k, n, j) in enumerate(zip(shape[2:], grid, bins, strict=True)):
        x = torch.arange(k, dtype=torch.float64).reshape(1, 1, *[k if a == axis else 1 for a in range(d)])
        kernel = kernel * torch.cos(2 * math.pi * (j + 0.5) / n * x + (phase if axis == 0 else 0.0))
    return kernel.expand(shape).contiguous()


def complex_as_real(taps: np.ndarray) -> Tensor:
    """A complex 1×1 kernel c_x as the 2×2 real kernel [[Re, −Im], [Im, Re]]: σ(K̂) = |ĉ(ω)|, |ĉ(−ω)|."""
    real, imag = torch.tensor(taps.real), torch.tensor(taps.imag)
    return torch.stack([torch.stack([real, -imag]), torch.stack([imag, real])])  # (2, 2, k)


# ----------------------------------------------------------------------------------------------
# Strategies


@st.composite
def conv_cases(draw: st.DrawFn, transposed: bool) -> dict:
    """A small real conv layer: weight, geometry, and whether the weight is an adversarial bump."""
    d = 2 if transposed else draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2]))
    per_in, per_out = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    c_in, c_out = groups * per_in, groups * per_out
    ks = tuple(draw(st.integers(1, 5 if d == 1 else 4)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    padding = tuple(draw(st.integers(0, k)) for k in ks)
    size = tuple(draw(st.integers(1, 10 if d == 1 else 7)) for _ in range(d))
    tol = draw(st.sampled_from([0.01, 0.05, 0.2]))
    shape = (c_in, per_out, *ks) if transposed else (c_out, per_in, *ks)
    seed = draw(st.integers(0, 2**16))
    if draw(st.booleans()):
        grid = conv_operator_bound(torch.ones(shape), tol=tol).grid  # the N the code will pick
        bins = tuple(draw(st.integers(0, max(0, n - 1))) for n in grid)
        weight = modulated_bump(shape, grid, bins, seed)
    else:
        weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    case = dict(d=d, groups=groups, c_in=c_in, c_out=c_out, ks=ks, stride=stride, dilation=dilation,
                padding=padding, size=size, tol=tol, weight=weight)
    if transposed:
        limits = [max(s, dl) - 1 for s, dl in zip(stride, dilation, strict=True)]
        case["output_padding"] = tuple(draw(st.integers(0, limit)) for limit in limits)
    else:
        case["mode"] = draw(st.sampled_from(["zeros", "circular"]))
    return case


def conv_jacobian(case: dict) -> np.ndarray:
    d, weight, size = case["d"], case["weight"], case["size"]
    conv = (F.conv1d, F.conv2d)[d - 1]
    axes = list(zip(size, case["padding"], case["dilation"], case["ks"], case["stride"], strict=True))
    out = [(n + 2 * p - dl * (k - 1) - 1) // s + 1 for n, p, dl, k, s in axes]
    assume(all(o >= 1 for o in out))
    if case["mode"] == "circular":
        # Covered while the outputs do not wrap onto themselves: distinct circulant rows.
        assume(all(p <= n and (o - 1) * s < n for (n, p, _, _, s), o in zip(axes, out, strict=True)))
        pads = [p for p in reversed(case["padding"]) for _ in range(2)]

        def fn(x: Tensor) -> Tensor:
            return conv(F.pad(x, pads, mode="circular"), weight, stride=case["stride"],
                        dilation=case["dilation"], groups=case["groups"])
    else:
        def fn(x: Tensor) -> Tensor:
            return conv(x, weight, stride=case["stride"], padding=case["padding"],
                        dilation=case["dilation"], groups=case["groups"])
    return dense_jacobian(fn, (case["c_in"], *size))


def conv_transpose_jacobian(case: dict) -> np.ndarray:
    axes = zip(case["size"], case["stride"], case["padding"], case["dilation"], case["ks"],
               case["output_padding"], strict=True)
    out = [(n - 1) * s - 2 * p + dl * (k - 1) + op + 1 for n, s, p, dl, k, op in axes]
    assume(all(o >= 1 for o in out))

    def fn(x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, case["weight"], stride=case["stride"], padding=case["padding"],
                                  output_padding=case["output_padding"], groups=case["groups"],
                                  dilation=case["dilation"])

    return dense_jacobian(fn, (case["c_in"], *case["size"]))


def assert_certified(weight: Tensor, tol: float, oracle: float) -> ConvBound:
    bound = conv_operator_bound(weight, tol=tol)
    assert bound.upper >= oracle * CERTIFIED
    assert bound.tight >= oracle * CERTIFIED
    reshapes = reshape_bounds(weight)
    assert all(r >= oracle * CERTIFIED for r in reshapes)  # each reshape on its own
    if bound.cheap is None:  # computed only where it wins
        assert min(reshapes) > bound.tight and bound.upper == bound.tight
    else:
        assert bound.cheap == pytest.approx(min(reshapes), rel=1e-8) and bound.cheap <= bound.tight
        assert bound.upper == bound.cheap
    assert bound.lower <= bound.upper
    return bound


# ----------------------------------------------------------------------------------------------
# Certification against real layers


@settings(SETTINGS, max_examples=150)
@given(case=conv_cases(transposed=False))
def test_bound_holds_for_conv_layers(case: dict) -> None:
    oracle = sigma1(conv_jacobian(case))
    assert_certified(case["weight"], case["tol"], oracle)


@settings(SETTINGS, max_examples=150)
@given(case=conv_cases(transposed=True))
def test_bound_holds_for_conv_transpose_layers(case: dict) -> None:
    oracle = sigma1(conv_transpose_jacobian(case))
    assert_certified(case["weight"], case["tol"], oracle)


@SETTINGS
@given(
    d=st.sampled_from([1, 2]),
    c_out=st.integers(1, 3),
    c_in=st.integers(1, 3),
    k=st.integers(2, 5),
    tol=st.sampled_from([0.005, 0.02, 0.1, 0.5]),
    adversarial=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bracket_contains_symbol_sup(d: int, c_out: int, c_in: int, k: int, tol: float,
                                     adversarial: bool, seed: int) -> None:
    """lower ≤ σ* ≤ upper with σ* maximized independently, and the bracket is within tol."""
    ks = (k,) if d == 1 else (k, max(2, k - 2))
    shape = (c_out, c_in, *ks)
    grid = conv_operator_bound(torch.ones(shape), tol=tol).grid
    if adversarial:
        weight = modulated_bump(shape, grid, tuple(seed % n for n in grid), seed)
    else:
        weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    bound = conv_operator_bound(weight, tol=tol)
    assert bound.grid == grid
    sup = symbol_sup(weight)
    assert bound.lower <= sup * (1 + 1e-12)
    assert sup * CERTIFIED <= bound.upper <= bound.tight
    assert bound.upper / bound.lower - 1.0 <= tol


@SETTINGS
@given(k=st.integers(2, 6), n_extra=st.integers(0, 12), c=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_certification_constant_never_undershoots(k: int, n_extra: int, c: int, seed: int) -> None:
    """σ* ≤ grid max · ∏ 1/cos(π(k−1)/(2N)) for every N > k − 1, on kernels whose peak is put at the
    worst place (half a bin off the grid) by a complex modulation in 2×2 real form."""
    n = k + n_extra
    rng = np.random.default_rng(seed)
    taps = (rng.standard_normal(k) + 1j * rng.standard_normal(k)) * np.exp(1j * np.pi / n * np.arange(k))
    weight = complex_as_real(taps)  # (2, 2, k)
    if c > 1:  # block diagonal with a second, unmodulated complex kernel
        other = complex_as_real(rng.standard_normal(k) + 1j * rng.standard_normal(k))
        weight = torch.cat([torch.cat([weight, torch.zeros_like(weight)], 1),
                            torch.cat([torch.zeros_like(weight), other], 1)])  # (4, 4, k)
    sup = symbol_sup(weight)
    assert grid_max(weight, (n,)) * certification_factor((k,), (n,)) >= sup * CERTIFIED


@pytest.mark.parametrize(("k", "n"), [(2, 3), (3, 4), (3, 32), (5, 12), (5, 8), (7, 30)])
def test_certification_constant_is_sharp(k: int, n: int) -> None:
    """δ_0 + δ_{k−1} modulated by half a bin (N divisible by k − 1) attains the constant exactly, and
    the 1/sqrt(cos(π(k−1)/N)) constant is never smaller."""
    taps = np.zeros(k, complex)
    taps[0] = taps[-1] = 1.0
    weight = complex_as_real(taps * np.exp(1j * np.pi / n * np.arange(k)))
    assert symbol_sup(weight) == pytest.approx(2.0, rel=1e-12)
    certified = grid_max(weight, (n,)) * certification_factor((k,), (n,))
    assert certified == pytest.approx(2.0, rel=1e-12)
    if n > 2 * (k - 1):
        assert 1 / math.sqrt(math.cos(math.pi * (k - 1) / n)) >= certification_factor((k,), (n,))


@SETTINGS
@given(
    ks=st.sampled_from([(2,), (3,), (5,), (2, 2), (3, 3), (3, 1), (2, 3), (2, 2, 2)]),
    tol=st.sampled_from([0.1, 0.3, 0.6]),
    c_out=st.integers(1, 3),
    c_in=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_lower_is_exact_circular_norm(ks: tuple[int, ...], tol: float, c_out: int, c_in: int,
                                      seed: int) -> None:
    """The grid maximum is the norm of the circular convolution at size N (dense circulant Jacobian),
    and equals the FFT + svdvals computation over the full grid."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn((c_out, c_in, *ks), generator=gen, dtype=torch.float64)
    bound = conv_operator_bound(weight, tol=tol)
    assume(math.prod(bound.grid) * max(c_in, c_out) <= 300)
    d = len(ks)
    pads = [p for k in reversed(ks) for p in (0, k - 1)]

    def circular(x: Tensor) -> Tensor:
        return (F.conv1d, F.conv2d, F.conv3d)[d - 1](F.pad(x, pads, mode="circular"), weight)

    oracle = sigma1(dense_jacobian(circular, (c_in, *bound.grid)))
    assert bound.lower == pytest.approx(oracle, rel=1e-10)
    assert bound.lower == pytest.approx(brute_grid_max(weight, bound.grid), rel=1e-10)


@pytest.mark.parametrize(
    "shape",
    [(3, 2, 3), (2, 5, 4), (8, 8, 3, 3), (5, 12, 3, 3), (12, 5, 2, 4), (24, 24, 3, 3), (4, 3, 2, 3, 2)],
)
@pytest.mark.parametrize("chunk_bytes", [conv_bounds.CHUNK_BYTES, 2**16])
def test_screened_grid_max_matches_brute_force(shape: tuple[int, ...], chunk_bytes: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Cholesky screening with a running maximum finds the same maximum as an SVD at every frequency,
    in one chunk or many."""
    monkeypatch.setattr(conv_bounds, "CHUNK_BYTES", chunk_bytes)
    gen = torch.Generator().manual_seed(sum(shape))
    grid = grid_sizes(shape[2:], 0.05)
    random = torch.randn(shape, generator=gen, dtype=torch.float64)
    low_pass = random.abs() + 1.0  # a peak near ω = 0
    for weight in (random, low_pass, torch.ones(shape, dtype=torch.float64)):  # ones: ties, peak at ω = 0
        symmetric = weight + weight.flip(-1)  # σ(ω) = σ(−ω_last): ties across non-conjugate frequencies
        for kernel in (weight, symmetric):
            assert grid_max(kernel, grid) == pytest.approx(brute_grid_max(kernel, grid), rel=1e-12)


def test_grid_sizes_are_smallest_and_certify_tol() -> None:
    for ks in [(3,), (5,), (2,), (3, 3), (4, 4), (3, 5), (3, 1), (1, 3), (3, 3, 3)]:
        for tol in [0.001, 0.01, 0.05, 0.3]:
            grid = grid_sizes(ks, tol)
            assert certification_factor(ks, grid) <= 1 + tol
            assert all(n == 1 for k, n in zip(ks, grid, strict=True) if k == 1)
            if len(ks) == 1:
                n = grid[0]
                assert n - 1 <= ks[0] - 1 or certification_factor(ks, (n - 1,)) > 1 + tol
    assert grid_sizes((3, 3), 0.01) == (32, 32)  # the 1/sqrt(cos(π(k−1)/N)) constant needs (45, 45)
    with pytest.raises(ValueError, match="tol"):
        grid_sizes((3, 3), 0.0)
    with pytest.raises(ValueError, match="N > 2"):
        certification_factor((3,), (2,))


# ----------------------------------------------------------------------------------------------
# Special kernels and layouts


@pytest.mark.parametrize("shape", [(5, 3, 1), (4, 6, 1, 1), (3, 3, 1, 1, 1), (1, 7, 1, 1)])
def test_pointwise_kernels_are_exact(shape: tuple[int, ...]) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = sigma1(weight.reshape(shape[0], shape[1]).numpy())
    bound = conv_operator_bound(weight)
    assert bound.method == "exact (1x1)" and bound.grid == (1,) * (len(shape) - 2)
    assert bound.upper == bound.lower == bound.tight == bound.cheap == pytest.approx(exact, rel=1e-13)


def test_transposed_layout_has_the_same_bound() -> None:
    """A ConvTranspose weight (c_in, c_out, k...) is read as is: K̂ᵀ has the same singular values."""
    weight = torch.randn(3, 5, 3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a, b = conv_operator_bound(weight), conv_operator_bound(weight.transpose(0, 1), device="cpu")
    assert a.lower == pytest.approx(b.lower, rel=1e-12) and a.upper == pytest.approx(b.upper, rel=1e-12)


def test_zero_low_precision_and_bad_kernels() -> None:
    zero = conv_operator_bound(torch.zeros(3, 3, 3, 3))
    assert zero.upper == zero.lower == 0.0
    half = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    exact = conv_operator_bound(half.double()).lower
    assert conv_operator_bound(half).lower == pytest.approx(exact, rel=1e-14)
    bad_kernels = [(torch.randn(3, 3), "conv kernel"), (torch.full((2, 2, 3), math.nan), "NaN"),
                   (torch.randn(2, 2, 3, dtype=torch.complex64), "complex"),
                   (torch.ones(0, 2, 3), "non-empty")]
    for bad, words in bad_kernels:
        with pytest.raises(ValueError, match=words):
            conv_operator_bound(bad)
    for tol in (-1.0, 0.0, 1e-12):  # the last is below the rounding allowance
        with pytest.raises(ValueError, match="tol"):
            conv_operator_bound(torch.ones(2, 2, 3), tol=tol)


def test_method_names_the_winning_bound() -> None:
    # Constant taps u_o v_i: σ* = ‖u‖‖v‖k at ω = 0, and √k·σ1 of the (c_out, c_in·k) reshape is exactly
    # that, so the reshape bound wins over the grid's certified factor.
    flat = torch.einsum("o,i,x->oix", torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0, 0.5]), torch.ones(3))
    bound = conv_operator_bound(flat.double())
    exact = math.sqrt(5.0) * math.sqrt(10.25) * 3
    assert bound.method == "reshape" and bound.upper == bound.cheap == pytest.approx(exact, rel=1e-8)
    assert bound.lower == pytest.approx(exact, rel=1e-12) and bound.tight > bound.cheap
    assert conv_operator_bound(torch.randn(3, 3, 3, 3, dtype=torch.float64)).method == "fft-certified"


# ----------------------------------------------------------------------------------------------
# The 'same' convolution at one input size


def same_conv_jacobian(weight: Tensor, size: tuple[int, ...], transposed: bool) -> np.ndarray:
    """PyTorch's padding='same' conv; transposed: the adjoint (ConvTranspose, padding (k−1)/2, for odd k)."""
    d = weight.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    if transposed and all(k % 2 == 1 for k in weight.shape[2:]):
        conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[d - 1]
        padding = tuple((k - 1) // 2 for k in weight.shape[2:])
        return dense_jacobian(lambda x: conv_t(x, weight, padding=padding), (weight.shape[0], *size))
    forward = dense_jacobian(lambda x: conv(x, weight, padding="same"), (weight.shape[1], *size))
    return forward.T if transposed else forward


def padded_circulant_oracle(weight: Tensor, size: tuple[int, ...]) -> float:
    """numpy: the norm of the circular convolution on the padded size n + k − 1 (max over the FFT grid
    of the symbol's σ_max), the certified upper end of a 'same'-conv bracket."""
    kernel = weight.detach().numpy()
    padded = [n + k - 1 for n, k in zip(size, kernel.shape[2:], strict=True)]
    symbol = np.fft.fftn(kernel, s=padded, axes=tuple(range(2, kernel.ndim)))  # (b, a, *N)
    mats = np.moveaxis(symbol.reshape(*kernel.shape[:2], -1), -1, 0)  # (F, b, a)
    return float(np.linalg.svd(mats, compute_uv=False).max())


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(
    ("shape", "size"),
    [((3, 2, 3), (9,)), ((2, 3, 4), (7,)), ((3, 2, 3, 3), (5, 6)), ((4, 4, 3, 3), (6, 6)),
     ((2, 3, 4, 2), (5, 4)), ((3, 3, 5, 5), (8, 7)), ((2, 2, 3, 2, 3), (3, 4, 3)), ((1, 1, 3, 3), (4, 4))],
)
@pytest.mark.parametrize("transposed", [False, True])
def test_same_conv_norm_matches_dense(shape: tuple[int, ...], size: tuple[int, ...],
                                      transposed: bool) -> None:
    gen = torch.Generator().manual_seed(len(shape) + sum(size))
    weight = torch.randn(shape, generator=gen, dtype=torch.float64)
    jac = same_conv_jacobian(weight, size, transposed)
    _, singular, vh = np.linalg.svd(jac)
    norm = conv_same_operator_norm(weight, size, transposed=transposed)
    # The bracket contains the dense σ1 and is as narrow as asked; the printed (lower) end is within it.
    assert norm.converged and norm.lower <= singular[0] * (1 + 1e-12) and singular[0] <= norm.upper * (1 + 1e-12)
    assert norm.estimate_width <= 1e-5  # the a-posteriori width met the request
    assert norm.upper == pytest.approx(padded_circulant_oracle(weight, size), rel=1e-8)  # certified end
    vector = norm.vector
    assert vector.shape == (1, shape[0] if transposed else shape[1], *size)
    assert vector.norm().item() == pytest.approx(1.0, rel=1e-14)
    # Asked for a tight bracket, the vector is the top one where it is unique.
    tight = conv_same_operator_norm(weight, size, transposed=transposed, rtol=1e-12)
    assert tight.lower == pytest.approx(singular[0], rel=1e-11)
    if singular[1] < singular[0] * (1 - 1e-3):  # a unique, well separated top vector
        assert one_minus_abs_cos(tight.vector, torch.from_numpy(vh[0])) < 1e-8
    # A warm start (e.g. a stored conv-operator u) lands in the same bracket.
    warm = conv_same_operator_norm(weight, size, transposed=transposed, u0=vector + 0.1)
    assert warm.lower <= singular[0] * (1 + 1e-12) <= warm.upper * (1 + 2e-12)


def test_same_conv_norm_degenerate_and_adversarial_starts() -> None:
    # A 1x1 kernel: AᵀA = WᵀW ⊗ I, σ1 has multiplicity (pixels): the value is still exact.
    weight = torch.tensor([[[[2.0]], [[0.0]]], [[[0.0]], [[1.0]]]], dtype=torch.float64)  # (2, 2, 1, 1)
    assert conv_same_operator_norm(weight, (3, 3)).lower == pytest.approx(2.0, rel=1e-11)
    # A start exactly on the second singular vector (channel 1) does not stall there.
    start = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    start[0, 1] = 1.0
    norm = conv_same_operator_norm(weight, (3, 3), u0=start)
    assert norm.lower == pytest.approx(2.0, rel=1e-11) and float(norm.vector[0, 1].abs().max()) < 1e-6
    # Zero kernel, wrong sizes.
    assert conv_same_operator_norm(torch.zeros(2, 2, 3), (5,)).upper == 0.0
    with pytest.raises(ValueError, match="input_size"):
        conv_same_operator_norm(torch.ones(2, 2, 3, 3), (5,))
    with pytest.raises(ValueError, match="u0"):
        conv_same_operator_norm(torch.ones(2, 2, 3), (5,), u0=torch.ones(7))


def test_same_conv_budget_spent_reports_the_bracket_it_has() -> None:
    """Out of products, the bracket is still a bracket (containing σ1), flagged as not converged: the
    upper end is the certified one, the padded circulant's norm or the caller's ceiling if lower."""
    weight = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    truth = np.linalg.svd(same_conv_jacobian(weight, (8, 8), False), compute_uv=False)[0]
    circulant = padded_circulant_oracle(weight, (8, 8))
    norm = conv_same_operator_norm(weight, (8, 8), max_products=3)
    assert not norm.converged and norm.products <= 4
    assert norm.lower <= truth <= norm.upper
    assert norm.upper == pytest.approx(circulant, rel=1e-8)
    ceiling = conv_operator_bound(weight).upper  # over all sizes: never below the circulant's norm
    assert conv_same_operator_norm(weight, (8, 8), max_products=3, ceiling=ceiling).upper == norm.upper
    low = conv_same_operator_norm(weight, (8, 8), max_products=3, ceiling=truth * 1.000001)
    assert low.upper == truth * 1.000001


def _near_orthogonal(channels: int, gen: torch.Generator) -> Tensor:
    """A 3×3 conv whose centre tap is a random orthogonal matrix and the rest tiny: every singular
    value of the operator ≈ 1 (what Lipschitz networks train towards)."""
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=gen, dtype=torch.float64))
    weight = 1e-3 * torch.randn(channels, channels, 3, 3, generator=gen, dtype=torch.float64)
    weight[:, :, 1, 1] = q
    return weight


@pytest.mark.parametrize("case", ["random", "near_degenerate", "rank1", "near_orthogonal"])
def test_same_conv_bracket_contains_the_dense_norm(case: str) -> None:
    """Random, near-degenerate (σ2/σ1 > 0.999), rank-1 and near-orthogonal kernels: the bracket holds
    the dense Jacobian's σ1 and is within the tolerance, and an input as small as 8×8 converges."""
    gen = torch.Generator().manual_seed(11)
    size = (8, 8)
    if case == "random":
        weight = torch.randn(6, 5, 3, 3, generator=gen, dtype=torch.float64)
    elif case == "near_degenerate":  # a 1x1-like kernel: the operator's top values are tied
        weight = 1e-4 * torch.randn(5, 5, 3, 3, generator=gen, dtype=torch.float64)
        weight[:, :, 1, 1] += torch.diag(torch.tensor([2.0, 1.9995, 1.0, 0.5, 0.1], dtype=torch.float64))
    elif case == "rank1":
        a = torch.randn(6, generator=gen, dtype=torch.float64)
        b = torch.randn(5, 3, 3, generator=gen, dtype=torch.float64)
        weight = torch.einsum("o,ikl->oikl", a, b)
    else:
        weight = _near_orthogonal(16, gen)
    singular = np.linalg.svd(same_conv_jacobian(weight, size, False), compute_uv=False)
    if case == "near_degenerate":
        assert singular[1] / singular[0] > 0.999
    norm = conv_same_operator_norm(weight, size)
    assert norm.converged, norm
    assert norm.lower <= singular[0] * (1 + 1e-12) and singular[0] <= norm.upper * (1 + 1e-12)
    assert norm.estimate_width <= 1e-5
    assert norm.upper == pytest.approx(padded_circulant_oracle(weight, size), rel=1e-8)
    assert norm.lower == pytest.approx(singular[0], rel=1e-6)  # the printed end, to its 6 digits


@pytest.mark.parametrize("scale", [1e-170, 1e154])
def test_same_conv_norm_is_scale_free(scale: float) -> None:
    """Kernels at 1e-170 or 1e154 neither underflow to 0 nor overflow: the bracket scales exactly."""
    weight = torch.randn(3, 3, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    base = conv_same_operator_norm(weight, (6, 6))
    scaled = conv_same_operator_norm(weight * scale, (6, 6))
    assert scaled.lower > 0.0 and math.isfinite(scaled.upper)
    assert scaled.lower / scale == pytest.approx(base.lower, rel=1e-9)


# ----------------------------------------------------------------------------------------------
# BatchNorm and the chain


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_factor_matches_eval_jacobian(affine: bool) -> None:
    gen = torch.Generator().manual_seed(6)
    bn = nn.BatchNorm2d(5, affine=affine).double().eval()
    bn.running_var.copy_(torch.rand(5, generator=gen, dtype=torch.float64) * 3 + 1e-3)
    bn.running_mean.copy_(torch.randn(5, generator=gen, dtype=torch.float64))
    if affine:
        bn.weight.data.copy_(torch.randn(5, generator=gen, dtype=torch.float64))  # signs included
    with torch.no_grad():
        jac = dense_jacobian(lambda x: bn(x) - bn(torch.zeros_like(x)), (5, 2, 2))
    factor = batchnorm_factor(bn.weight if affine else None, bn.running_var, bn.eps)
    assert factor == pytest.approx(sigma1(jac), rel=1e-13)
    with pytest.raises(ValueError, match="entries"):
        batchnorm_factor(torch.ones(4), torch.ones(5))


def test_cumulative_product() -> None:
    assert cumulative_product([2.0, 0.5, 3.0]) == [2.0, 1.0, 3.0]
    assert cumulative_product([]) == []


# ----------------------------------------------------------------------------------------------
# The certified frequency bound at the extremes (issue 11)


@pytest.mark.parametrize("scale", [1e-170, 1e154])
def test_frequency_bound_is_scale_free(scale: float) -> None:
    """Kernels at 1e-170 (underflowing products) or 1e154 (overflowing Gram) bound as the scaled kernel."""
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    base = conv_operator_bound(weight)
    bound = conv_operator_bound(weight * scale)
    assert bound.upper > 0.0 and math.isfinite(bound.upper)
    assert bound.upper / scale == pytest.approx(base.upper, rel=1e-12)
    assert bound.lower / scale == pytest.approx(base.lower, rel=1e-12)


def test_centre_tap_kernel_is_bounded_exactly() -> None:
    """A 3×3 kernel using only its centre tap is the 1×1 conv it is: norm exactly σ1 of that tap."""
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    weight = torch.zeros(6, 6, 3, 3, dtype=torch.float64)
    weight[:, :, 1, 1] = q
    bound = conv_operator_bound(weight)
    assert bound.upper == pytest.approx(1.0, rel=1e-12) and bound.lower == pytest.approx(1.0, rel=1e-12)
    # An off-centre single tap (a shift) too: the norm over all sizes ignores where the tap sits.
    shifted = torch.zeros(6, 6, 3, 3, dtype=torch.float64)
    shifted[:, :, 0, 2] = 2.0 * q
    assert conv_operator_bound(shifted).upper == pytest.approx(2.0, rel=1e-12)


def test_eigen_solver_failure_falls_back_to_the_reshape_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """An eigen-solve that does not converge (ill-conditioned extreme kernels) gives the certified reshape
    bound and a grid-point lower bound instead of an error."""
    weight = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = conv_operator_bound(weight)

    def fails(*_: object, **__: object) -> float:
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(conv_bounds, "grid_max", fails)
    bound = conv_operator_bound(weight)
    assert bound.method.startswith("reshape")
    assert bound.lower <= exact.lower * (1 + 1e-12) and bound.upper >= exact.upper / (1 + 0.01)
    assert bound.upper == pytest.approx(min(reshape_bounds(weight)), rel=1e-12)


def test_grid_max_floor_changes_the_work_not_the_bound() -> None:
    """A floor below the grid maximum returns the same maximum (the numpy FFT oracle); a floor above it
    returns the floor: still an upper bound of every frequency, never a value below the truth."""
    weight = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    truth = padded_circulant_oracle(weight, (8, 8))  # the 10×10 grid
    assert conv_bounds.grid_max(weight, (10, 10)) == pytest.approx(truth, rel=1e-8)
    for floor in (0.5 * truth, 0.999 * truth):
        assert conv_bounds.grid_max(weight, (10, 10), floor=floor) == pytest.approx(truth, rel=1e-8)
    assert conv_bounds.grid_max(weight, (10, 10), floor=2.0 * truth) == 2.0 * truth
