"""The two exact-spectra paths of linalg/exact.py — the Gram/eigen route (``auto``) and the plain SVD —
against numpy's LAPACK SVD, on random, graded, clustered, rank-deficient and badly scaled matrices.

The contract (exact.TARGET_ULPS): every singular value to 4096·eps·σ1 absolute (9.1e-13·σ1 in
float64), σ1 to that relative, the top pair's residual below it. The tests also show *why* the
fallbacks exist: √λ of the Gram matrix alone misses the contract on small singular values.
"""

from __future__ import annotations

import math
import platform
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sninspect.linalg import exact
from sninspect.linalg.exact import TARGET_ULPS, Spectrum, exact_spectra, gram_allowance, sqrt_trust

EPS64 = torch.finfo(torch.float64).eps
CONTRACT = TARGET_ULPS * EPS64  # 9.1e-13


def with_spectrum(rows: int, cols: int, values: np.ndarray, seed: int = 0) -> torch.Tensor:
    """U diag(values) Vᵀ with Haar-random orthonormal U, V (float64)."""
    rng = np.random.default_rng(seed)
    k = min(rows, cols)
    u, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, k)))
    return torch.from_numpy((u * values[:k]) @ v.T)


def reference(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy's SVD in float64 (absolute error a few eps·σ1: the yardstick)."""
    return np.linalg.svd(matrix.double().numpy(), full_matrices=False)


def assert_contract(matrix: torch.Tensor, spectrum: Spectrum, *, ulps: float = TARGET_ULPS) -> None:
    """Values to ulps·eps·σ1, σ1 relative, the pair's residual, and the pair's angle bound."""
    eps = torch.finfo(matrix.dtype).eps
    u, s, vt = reference(matrix)
    got = spectrum.values.double().numpy()
    assert got.shape == s.shape
    assert np.all(np.diff(got) <= 0), "values must be descending"
    assert np.max(np.abs(got - s)) <= ulps * eps * s[0]
    assert abs(got[0] - s[0]) <= ulps * eps * s[0]
    w = matrix.double() / s[0]  # unit scale: the residual's own arithmetic must not overflow
    u1, v1 = spectrum.u1.double(), spectrum.v1.double()
    assert math.isclose(float(u1.norm()), 1, abs_tol=1e-6) and math.isclose(float(v1.norm()), 1, abs_tol=1e-6)
    residual = float(torch.linalg.vector_norm(w.T @ u1 - (got[0] / s[0]) * v1))
    assert residual <= ulps * eps * 1.01
    if len(s) > 1 and s[0] - s[1] > 1e-3 * s[0]:
        # Wedin: the angle to the exact pair is at most r/(σ1 − σ2); numpy's own pair is off by ~eps/gap.
        bound = (ulps + 64) * eps * s[0] / (s[0] - s[1])
        assert angle(u1.numpy(), u[:, 0]) <= bound
        assert angle(v1.numpy(), vt[0]) <= bound


def angle(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − ±b‖ for unit vectors: 2 sin(θ/2), no cancellation at small angles."""
    sign = 1.0 if float(a @ b) >= 0 else -1.0
    return float(np.linalg.norm(a - sign * b))


# ----------------------------------------------------------------------------------------------
# Both paths agree with LAPACK


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), count=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_random_matrices_both_paths(rows: int, cols: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mats = [torch.from_numpy(rng.standard_normal((rows, cols))) for _ in range(count)]
    for method in ("auto", "gram", "svd"):
        for matrix, spectrum in zip(mats, exact_spectra(mats, method=method), strict=True):
            assert_contract(matrix, spectrum)
            if method != "gram":  # small matrices: auto takes the SVD (SVD_BELOW)
                assert spectrum.method == "svd"


@pytest.mark.parametrize("shape", [(64, 576), (576, 64), (128, 128), (1, 50), (50, 1), (1, 1), (150, 151)])
@pytest.mark.parametrize("decades", [0, 1, 2, 3, 4, 6, 8, 10, 13, 16])
def test_graded_spectra_meet_the_contract(shape: tuple[int, int], decades: int) -> None:
    """σ_i log-spaced from 1 to 10^-decades: condition numbers up to 1e16."""
    k = min(shape)
    matrix = with_spectrum(*shape, np.logspace(0, -decades, k), seed=decades)
    (spectrum,) = exact_spectra([matrix], method="gram")
    assert_contract(matrix, spectrum)
    if decades <= 1 or k == 1:
        assert spectrum.method == "gram"  # everything ≥ 0.01·σ1 (or a single value): √λ alone
    if decades >= 8 and k > 8:
        assert spectrum.method == "gram+svdvals"  # values below ~1e-5·σ1 are not vouched for


def test_gram_alone_misses_the_contract_on_small_values() -> None:
    """Why the Ritz/SVD fallbacks exist: √λ of W Wᵀ is off by ~eps·σ1²/σ_i."""
    matrix = with_spectrum(80, 200, np.logspace(0, -9, 80))
    lam = torch.linalg.eigvalsh(matrix @ matrix.T).flip(0).clamp(min=0).sqrt().numpy()
    _, s, _ = reference(matrix)
    assert np.max(np.abs(lam - s)) > 1e3 * CONTRACT * s[0]  # √λ alone: far outside
    trusted = s >= sqrt_trust(80) * s[0]
    assert np.max(np.abs(lam[trusted] - s[trusted])) <= CONTRACT * s[0]
    (spectrum,) = exact_spectra([matrix], method="gram")
    assert_contract(matrix, spectrum)


@pytest.mark.parametrize("family", ["gaussian", "graded", "flat", "clustered", "one-big"])
@pytest.mark.parametrize("shape", [(96, 96), (64, 640), (200, 450)])
def test_gram_eigenvalue_constant_is_far_below_its_allowance(family: str, shape: tuple[int, int]) -> None:
    """gram_allowance (c = 16·√m) bounds |λ̂ − λ| ≤ c·eps·λ1 with a margin: measured c ≤ 3.8·√m here
    and up to 1024 × 4096 (BENCHMARKS.md)."""
    rows, cols = shape
    k = min(shape)
    rng = np.random.default_rng(len(family) + rows)
    values = {
        "gaussian": None,
        "graded": np.logspace(0, -6, k),
        "flat": np.ones(k),
        "clustered": 1 + 1e-12 * rng.standard_normal(k),
        "one-big": np.r_[1.0, np.full(k - 1, 1e-3)],
    }[family]
    matrix = (torch.from_numpy(rng.standard_normal(shape)) if values is None
              else with_spectrum(rows, cols, np.sort(np.abs(values))[::-1].copy()))
    lam = torch.linalg.eigvalsh(matrix @ matrix.T).flip(0).numpy()
    _, s, _ = reference(matrix)
    measured = np.max(np.abs(lam - s * s)) / (EPS64 * s[0] ** 2)
    assert measured < gram_allowance(rows) / 4


# ----------------------------------------------------------------------------------------------
# Hard cases


@pytest.mark.parametrize("gap", [1e-1, 1e-3, 1e-5, 1e-7, 1e-9])
def test_top_pair_across_gaps(gap: float) -> None:
    values = np.r_[1.0, 1.0 - gap, np.linspace(0.5, 0.1, 38)]
    matrix = with_spectrum(40, 120, values)
    (spectrum,) = exact_spectra([matrix], method="gram")
    assert_contract(matrix, spectrum)
    u, s, vt = reference(matrix)
    # Angle to the exact pair: what an SVD gives, ~eps/gap.
    assert angle(spectrum.u1.numpy(), u[:, 0]) <= 1e3 * EPS64 / gap


@pytest.mark.parametrize("where", [1e-3, 1e-4, 3e-5])
def test_clustered_small_values(where: float) -> None:
    """A tail of near-equal tiny singular values (spread 1e-10 relative)."""
    tail = where * (1 + 1e-10 * np.arange(30))[::-1]
    matrix = with_spectrum(60, 150, np.r_[np.linspace(1, 0.2, 30), tail])
    (spectrum,) = exact_spectra([matrix], method="gram")
    assert_contract(matrix, spectrum)


def test_exactly_degenerate_top_pair() -> None:
    """σ1 = σ2: any unit vector of the top singular subspace is a valid pair; the audit gives no cosine."""
    matrix = torch.zeros(4, 20, dtype=torch.float64)
    matrix[0, 0] = matrix[1, 1] = 2.0
    matrix[2, 2] = matrix[3, 3] = 1.0
    (spectrum,) = exact_spectra([matrix], method="gram")
    assert spectrum.degenerate
    assert_contract(matrix, spectrum)  # values, and ‖Wᵀu1 − σ1 v1‖: a genuine singular pair


def test_rank_deficient_and_zero_rows() -> None:
    rng = np.random.default_rng(1)
    low_rank = torch.from_numpy(rng.standard_normal((50, 4)) @ rng.standard_normal((4, 90)))
    dead = torch.from_numpy(rng.standard_normal((30, 70)))
    dead[::3] = 0  # pruned / dead units
    for matrix in (low_rank, dead, dead.T.contiguous()):
        (spectrum,) = exact_spectra([matrix], method="gram")
        assert_contract(matrix, spectrum)
        assert spectrum.method == "gram+svdvals"  # exact zeros are not vouched for by the Gram path


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e-30, 1.0, 1e30, 1e150, 1e300])
def test_extreme_scales(scale: float) -> None:
    matrix = torch.from_numpy(np.random.default_rng(2).standard_normal((20, 70))) * scale
    (spectrum,) = exact_spectra([matrix], method="gram")
    assert spectrum.method == "gram"
    assert_contract(matrix, spectrum)


def test_zero_and_nonfinite_matrices_take_the_svd() -> None:
    zero = torch.zeros(4, 6, dtype=torch.float64)
    (spectrum,) = exact_spectra([zero], method="gram")
    assert spectrum.method == "svd" and float(spectrum.values.abs().max()) == 0.0
    bad = torch.ones(3, 5, dtype=torch.float64)
    bad[1, 2] = math.nan
    for method in ("gram", "auto"):
        with pytest.raises(RuntimeError):  # LAPACK refuses non-finite input, as it always did
            exact_spectra([bad], method=method)


def test_float32_meets_its_own_contract() -> None:
    rng = np.random.default_rng(3)
    for shape, values in (((48, 300), None), ((100, 100), None), ((40, 90), np.logspace(0, -5, 40))):
        m = rng.standard_normal(shape) if values is None else with_spectrum(*shape, values).numpy()
        matrix = torch.from_numpy(m).float()
        (spectrum,) = exact_spectra([matrix], method="gram")
        assert spectrum.values.dtype == torch.float32
        assert_contract(matrix, spectrum)


def test_float32_gram_ignores_reduced_matmul_precision() -> None:
    """TF32/bf16 matmuls would round W to 8-10 bits inside W Wᵀ; the Gram path forms it at full
    float32 and restores the caller's setting."""
    matrix = torch.from_numpy(np.random.default_rng(4).standard_normal((32, 200))).float()
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        (spectrum,) = exact_spectra([matrix], method="gram")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    assert_contract(matrix, spectrum)


# ----------------------------------------------------------------------------------------------
# Batching


def test_batches_keep_order_and_use_loaded_blocks_in_place() -> None:
    rng = np.random.default_rng(5)
    block = torch.from_numpy(rng.standard_normal((5, 12, 30)))
    mats = [block[j] for j in range(5)]
    batch = exact._as_batch(mats)
    assert batch.data_ptr() == block.data_ptr() and batch.shape == (5, 12, 30)
    mixed = [torch.from_numpy(rng.standard_normal(s)) for s in ((12, 30), (30, 12), (12, 30), (7, 7))]
    mixed.append(mixed[0].float())
    for budget in (1, 12 * 30 * 8, 2**30):
        spectra = exact_spectra(mixed, batch_bytes=budget, method="gram")
        for matrix, spectrum in zip(mixed, spectra, strict=True):
            assert spectrum.u1.shape == (matrix.shape[0],) and spectrum.v1.shape == (matrix.shape[1],)
            assert spectrum.values.dtype == matrix.dtype
            assert_contract(matrix, spectrum)
    assert exact._as_batch([mats[0], mats[2]]).data_ptr() != block.data_ptr()  # not consecutive: stacked


def test_batch_with_mixed_outcomes() -> None:
    """One batch holding a plain, a graded, a rank-deficient and a zero matrix: each gets its own path."""
    rng = np.random.default_rng(6)
    mats = [
        torch.from_numpy(rng.standard_normal((20, 60))),
        with_spectrum(20, 60, np.logspace(0, -3, 20)),
        torch.from_numpy(rng.standard_normal((20, 2)) @ rng.standard_normal((2, 60))),
        torch.zeros(20, 60, dtype=torch.float64),
    ]
    spectra = exact_spectra(mats, method="gram")
    assert [s.method for s in spectra] == ["gram", "gram+ritz", "gram+svdvals", "svd"]
    for matrix, spectrum in zip(mats[:3], spectra[:3], strict=True):
        assert_contract(matrix, spectrum)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:  # pragma: no cover - runs where a GPU is present
    rng = np.random.default_rng(7)
    mats = [torch.from_numpy(rng.standard_normal((64, 576))) for _ in range(3)]
    mats.append(with_spectrum(128, 128, np.logspace(0, -8, 128)))
    for dtype in (torch.float64, torch.float32):
        on_gpu = exact_spectra([m.to("cuda", dtype) for m in mats], method="gram")
        for matrix, spectrum in zip(mats, on_gpu, strict=True):
            assert spectrum.values.device.type == "cuda"
            cpu = Spectrum(spectrum.values.cpu(), spectrum.u1.cpu(), spectrum.v1.cpu(), spectrum.method)
            assert_contract(matrix.to(dtype), cpu)


# ----------------------------------------------------------------------------------------------
# Loading for the audit (audit.batch.load_matrix) and handing mapped pages back


class _BusSpy(torch.Tensor):
    """Records ``Tensor.to`` calls and pretends to move to any device (there is no GPU here)."""

    calls: list[tuple[object, ...]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "to":
            cls.calls.append((args[1:], tuple(sorted(kwargs))))
            return args[0].as_subclass(torch.Tensor).clone()  # "on the device", still the stored dtype
        return super().__torch_function__(func, types, args, kwargs)


def test_weights_cross_to_the_device_in_their_stored_dtype() -> None:
    """fp16 on the bus, float64 only on the device: a quarter of the bytes of converting first."""
    from sninspect.audit.layers.batch import load_matrix

    stored = torch.randn(6, 4, 3, 3).half()
    _BusSpy.calls = []
    spy = stored.as_subclass(_BusSpy)
    slot = torch.empty(6, 36, dtype=torch.float64)
    matrix = load_matrix({"w": spy}, "w", 0, torch.device("cuda"), torch.float64, out=slot)
    assert _BusSpy.calls == [((torch.device("cuda"),), ("non_blocking",))]  # no dtype argument
    assert matrix.data_ptr() == slot.data_ptr() and matrix.dtype == torch.float64
    assert torch.equal(matrix, stored.double().reshape(6, -1))


def test_release_keeps_every_byte(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """MADV_PAGEOUT drops clean mapped pages and never loses data, written pages included."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sninspect.io import residency

    state = {f"l{i}": torch.randn(256, 1024) for i in range(4)}
    torch.save(state, tmp_path / "c.pt")
    save_file(state, tmp_path / "c.safetensors")
    loaded = torch.load(tmp_path / "c.pt", mmap=True, weights_only=True)
    loaded["l0"][0, 0] = 123.0  # a page written in place (copy-on-write) must survive
    pointers = [t.untyped_storage().data_ptr() for t in loaded.values()]
    handle = safe_open(str(tmp_path / "c.safetensors"), framework="pt", device="cpu")
    _ = [handle.get_tensor(k) for k in state]
    residency.release(pointers)
    assert float(loaded["l0"][0, 0]) == 123.0
    for key, tensor in state.items():
        assert torch.equal(loaded[key][1:], tensor[1:])
        assert torch.equal(handle.get_tensor(key), tensor)


def test_auto_picks_the_gram_path_for_real_layer_sizes() -> None:
    rng = np.random.default_rng(8)
    small = torch.from_numpy(rng.standard_normal((16, 144)))
    conv = torch.from_numpy(rng.standard_normal((128, 1152)))  # a 128→128 3×3 conv
    spectra = exact_spectra([small, conv])
    assert [s.method for s in spectra] == ["svd", "gram"]
    for matrix, spectrum in zip((small, conv), spectra, strict=True):
        assert_contract(matrix, spectrum)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_piecewise_loading_gives_the_same_audit(tmp_path, monkeypatch, suffix) -> None:  # type: ignore[no-untyped-def]
    """Weights copied into the block in pieces (each piece's file pages handed back) are audited
    exactly as when copied whole; mapped checkpoints of both formats, a square ConvTranspose-like
    layer (dim resolved piecewise) included."""
    from safetensors.torch import save_file

    import sninspect
    from sninspect.audit.layers import batch

    generator = torch.Generator().manual_seed(5)
    state = {}
    for name, shape in {"a": (24, 40), "b": (12, 12, 3, 3)}.items():
        weight = torch.randn(*shape, generator=generator)
        matrix = weight.reshape(shape[0], -1).double()
        u = torch.randn(shape[0], generator=generator, dtype=torch.float64)
        for _ in range(3):
            v = matrix.T @ u
            v /= v.norm()
            u = matrix @ v
            u /= u.norm()
        state.update({f"{name}.weight_orig": weight, f"{name}.weight_u": u.float(), f"{name}.weight_v": v.float()})
    path = tmp_path / f"c{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, path)
    whole = sninspect.analyze(path, device="cpu").to_dict()
    monkeypatch.setattr(batch, "RELEASE_BYTES", 64)  # many pieces per layer
    pieces = sninspect.analyze(path, device="cpu").to_dict()
    assert pieces == whole


def test_limit_heap_retention_is_safe_to_call() -> None:
    from sninspect.io import residency

    took = residency.limit_heap_retention()
    assert isinstance(took, bool)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert took
    assert torch.equal(torch.ones(2**18) * 2, torch.full((2**18,), 2.0))  # big allocations still work


def test_heap_retention_limited_is_a_context() -> None:
    from sninspect.io import residency

    with residency.heap_retention_limited() as took:
        assert isinstance(took, bool)
        assert torch.equal(torch.ones(2**18) * 2, torch.full((2**18,), 2.0))
    assert torch.equal(torch.ones(2**18) * 3, torch.full((2**18,), 3.0))  # and after it


@pytest.mark.parametrize("rows", [512, 515, 1031])
def test_paneled_gram_is_w_wt_and_symmetric(rows: int) -> None:
    """The panel-by-panel Gram matrix (upper block rows, lower mirrored) equals W Wᵀ to rounding, is
    exactly symmetric, and the spectra through it match numpy's SVD to the contract."""
    generator = torch.Generator().manual_seed(rows)
    wide = torch.randn(2, rows, rows + 70, generator=generator, dtype=torch.float64)
    gram = exact._gram(wide)
    dense = (wide @ wide.mT).numpy()
    np.testing.assert_allclose(gram.numpy(), dense, rtol=0, atol=1e-12 * float(np.abs(dense).max()))
    step = -(-rows // exact.GRAM_PANELS)  # off the diagonal panels the lower triangle is a mirror
    assert torch.equal(gram[:, step:, :step], gram[:, :step, step:].mT)
    for matrix, spectrum in zip(wide, exact_spectra(list(wide), method="gram"), strict=True):
        assert_contract(matrix, spectrum)


def test_scratch_reused_only_where_the_cli_limited_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator phase lets glibc reuse its few-MB buffers only in the CLI's process (where the 1 MiB
    limit was set), and puts the limit back; in library use it changes nothing."""
    from sninspect.io import residency

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(residency, "_mallopt", lambda parameter, value: calls.append((parameter, value)) or True)
    monkeypatch.setattr(residency, "_LIMITED", None)
    with residency.scratch_reused():
        pass
    assert calls == []
    monkeypatch.setattr(residency, "_LIMITED", 2**20)
    with residency.scratch_reused(32 * 2**20):
        assert calls == [(residency.M_TRIM_THRESHOLD, 64 * 2**20), (residency.M_MMAP_THRESHOLD, 32 * 2**20)]
    assert calls[2:] == [(residency.M_MMAP_THRESHOLD, 2**20),
                         (residency.M_TRIM_THRESHOLD, residency.DEFAULT_TRIM_THRESHOLD)]
