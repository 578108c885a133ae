"""The compiled kernels only the Monte Carlo calls, against their numpy twins in
jacgeom.reference.montecarlo, and the twins against numpy.linalg: the spectral summary (C++)
and the live-row placement (numba), on awkward stacks and shapes (0 and 1 included)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from jacgeom import _backends
from jacgeom.reference import montecarlo as twin

core = _backends.core
numba_kernels = _backends.numba_kernels
needs_core = pytest.mark.skipif(core is None, reason="the compiled extension is not built here")
needs_numba = pytest.mark.skipif(numba_kernels is None, reason="numba is not importable here")
DTYPES = [np.float64, np.float32]
# (m, n) of the spectral summary's Jacobians: square, tall, wide, 1, 0, past the certificate's
# sizes (64) and a syrk-sized Gram (3 x 40 live rows of 40 columns)
SHAPES = [(16, 16), (7, 5), (5, 7), (1, 1), (1, 4), (4, 1), (3, 40), (70, 70), (0, 3), (3, 0)]


def _jacobians_with_dead_rows(
    rng: np.random.Generator, B: int, m: int, n: int, dtype: type
) -> NDArray[Any]:
    """Gaussian stacks with Bernoulli(1/2) dead rows, and awkward members: all rows dead, all
    live, repeated rows (rank below the live count), equal singular values, one row 1e-9
    smaller (near the tolerance in float32), huge and tiny scales."""
    J = rng.standard_normal((B, m, n))
    J *= (rng.random((B, m)) < 0.5)[:, :, None]
    if B < 7 or m == 0 or n == 0:
        return J.astype(dtype)
    J[0] = 0.0
    J[1] = rng.standard_normal((m, n))
    if m >= 3:
        J[2, 1] = J[2, 0]
        J[2, 2] = 3.0 * J[2, 0]
    q = np.linalg.qr(rng.standard_normal((max(m, n), max(m, n))))[0][:m, :n]
    J[3] = 2.0 * q
    J[3, m // 2 :] = 0.0  # orthogonal live rows of equal norm: one repeated singular value
    J[4, 0] *= 1e-9
    big = 1e150 if dtype == np.float64 else 1e15
    J[5] *= big
    J[6] /= big
    return J.astype(dtype)


def _assert_summaries_agree(got: tuple[Any, ...], want: tuple[Any, ...], J: NDArray[Any]) -> None:
    """Compiled and twin summaries of J: ranks exactly; sigma_max, ||J||_F^2 and the volume to
    rounding; sigma_min where it is defined (rank p, or fewer live rows than p: exactly 0)."""
    rank, log_smax, log_smin, fro2, log_volume = got
    m, n = J.shape[1:]
    p = min(m, n)
    dtype = J.dtype
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape == (J.shape[0],)
        assert a.dtype == b.dtype
    assert rank.dtype == np.int64
    assert log_smax.dtype == dtype
    np.testing.assert_array_equal(rank, want[0])
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(log_smax, want[1], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fro2, want[3], rtol=rtol * 10)
    defined = (rank == p) | (twin.live_row_counts(J) < p)
    np.testing.assert_allclose(log_smin[defined], want[2][defined], rtol=1e3 * rtol, atol=rtol)
    np.testing.assert_array_equal(np.isfinite(log_volume), np.isfinite(want[4]))
    np.testing.assert_array_equal(np.isnan(log_volume), np.isnan(want[4]))
    finite = np.isfinite(log_volume)
    np.testing.assert_allclose(log_volume[finite], want[4][finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("shape", [(16, 16), (7, 5), (5, 7), (64, 64), (1, 1), (3, 40), (70, 70)])
def test_spectral_summary_matches_numpy(shape: tuple[int, int], dtype: type) -> None:
    # The compiled summary against numpy.linalg directly (matrix_rank, svd).
    if core is None:
        pytest.skip("the compiled extension is not importable here")
    m, n = shape
    rng = np.random.default_rng(m * 100 + n)
    J = _jacobians_with_dead_rows(rng, 200, m, n, dtype)
    J_before = J.copy()
    rank, log_smax, log_smin, fro2, log_volume = core.spectral_summary(J)
    np.testing.assert_array_equal(J, J_before)
    s = np.linalg.svd(J.astype(np.float64), compute_uv=False)
    live = np.count_nonzero(np.any(J != 0, axis=2), axis=1)
    p = min(m, n)
    want_rank = np.array([np.linalg.matrix_rank(Jb) for Jb in J])  # in J's precision
    np.testing.assert_array_equal(rank, want_rank)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    has = s[:, 0] > 0
    np.testing.assert_allclose(np.exp(log_smax[has]), s[has, 0], rtol=rtol)
    assert np.all(np.isneginf(log_smax[~has]))
    # sigma_min: exactly zero where rows are dead, else numpy's to the SVD's accuracy.
    assert np.all(np.isneginf(log_smin[live < p]))
    full = (live >= p) & (rank == p)
    np.testing.assert_allclose(
        np.exp(log_smin[full]), s[full, -1], rtol=1e3 * rtol * max(m, n), atol=0
    )
    np.testing.assert_allclose(fro2, np.sum(J.astype(np.float64) ** 2, axis=(1, 2)), rtol=rtol)
    if m >= n:
        regular = rank == n
        assert np.all(np.isneginf(log_volume[~regular]))
        np.testing.assert_allclose(
            log_volume[regular], np.log(s[regular]).sum(axis=1), rtol=1e-4, atol=1e-4
        )
    else:
        assert np.all(np.isnan(log_volume))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("shape", [(6, 6), (9, 5), (5, 9), (1, 1)])
def test_spectral_summary_twin_matches_numpy_linalg(shape: tuple[int, int], dtype: type) -> None:
    # The twin against an independent truth: matrix_rank, and slogdet for the log-volume.
    m, n = shape
    J = _jacobians_with_dead_rows(np.random.default_rng(m + 10 * n), 60, m, n, dtype)
    J[7:] = np.random.default_rng(1).standard_normal((53, m, n))  # most of them full rank
    rank, log_smax, log_smin, fro2, log_volume = twin.spectral_summary(J)
    np.testing.assert_array_equal(rank, [np.linalg.matrix_rank(Jb) for Jb in J])
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(fro2, np.sum(J.astype(np.float64) ** 2, axis=(1, 2)), rtol=rtol)
    two_norm = np.linalg.norm(J.astype(np.float64), ord=2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(log_smax, np.log(two_norm), rtol=rtol, atol=rtol)
    if m == n:
        sign, logdet = np.linalg.slogdet(J.astype(np.float64))
        regular = rank == n
        np.testing.assert_allclose(log_volume[regular], logdet[regular], rtol=1e-4, atol=1e-4)
        assert np.all(np.isneginf(log_volume[~regular]))
        np.testing.assert_allclose(log_smin[regular], -np.log(np.linalg.norm(
            np.linalg.inv(J[regular].astype(np.float64)), ord=2, axis=(1, 2)
        )), rtol=1e3 * rtol, atol=1e-4)  # fmt: skip
    elif m < n:
        assert np.all(np.isnan(log_volume))


@needs_core
@pytest.mark.parametrize("spectra", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{n}" for m, n in SHAPES])
@pytest.mark.parametrize("B", [0, 1, 60])
def test_spectral_summary_twins_agree(
    B: int, shape: tuple[int, int], dtype: type, spectra: bool
) -> None:
    assert core is not None
    m, n = shape
    J = _jacobians_with_dead_rows(np.random.default_rng(B + 7 * m + n), B, m, n, dtype)
    bound = np.minimum(twin.live_row_counts(J), min(m, n))  # a true bound: changes nothing
    for rank_bound in (None, bound):
        got = core.spectral_summary(J, rank_bound, spectra)
        want = twin.spectral_summary(J, rank_bound, spectra)
        if spectra:
            _assert_summaries_agree(got, want, J)
        else:
            np.testing.assert_array_equal(got[0], want[0])
            for a, b in zip(got[1:], want[1:], strict=True):
                assert a.dtype == b.dtype == J.dtype
                assert np.all(np.isnan(a)) and np.all(np.isnan(b))


@needs_core
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{n}" for m, n in SHAPES])
@pytest.mark.parametrize("B", [0, 1, 60])
def test_spectral_summary_rows_twins_agree(B: int, shape: tuple[int, int], dtype: type) -> None:
    # The packed form: each sample's live rows, times a scale, stand for the (m, n) matrix.
    assert core is not None
    m, n = shape
    rng = np.random.default_rng(B + 3 * m + n)
    J = rng.standard_normal((B, m, n)).astype(dtype)
    live = rng.random((B, m)) < 0.5
    if B:
        live[0] = False  # a sample without live rows
    J[~live] = 0.0
    counts = live.sum(axis=1).astype(np.int64)
    rows = np.ascontiguousarray(J[live] / dtype(0.5))
    rows_before = rows.copy()
    for spectra in (True, False):
        got = core.spectral_summary_rows(rows, counts, m, 0.5, None, spectra)
        want = twin.spectral_summary_rows(rows, counts, m, 0.5, None, spectra)
        np.testing.assert_array_equal(got[0], want[0])
        if spectra:
            _assert_summaries_agree(got, want, J)
            # the packed form is the stack's summary
            _assert_summaries_agree(got, core.spectral_summary(J), J)
    np.testing.assert_array_equal(rows, rows_before)  # the input is not modified


@needs_core
def test_spectral_summary_rank_only_agrees() -> None:
    assert core is not None
    rng = np.random.default_rng(8)
    for dtype in (np.float64, np.float32):
        J = rng.standard_normal((300, 9, 7)).astype(dtype)
        J[rng.random((300, 9)) < 0.5] = 0.0  # dead rows
        J[:50, :, 3] = J[:50, :, 2]  # rank below the live rows: the SVD decides
        full = core.spectral_summary(J)
        rank, *rest = core.spectral_summary(J, None, False)
        np.testing.assert_array_equal(rank, full[0])
        assert all(np.all(np.isnan(r)) for r in rest)


@needs_core
def test_spectral_summary_rows_bad_counts() -> None:
    assert core is not None
    rows, counts = np.ones((3, 4)), np.array([2, 1], dtype=np.int64)
    with pytest.raises(ValueError, match=r"in \[0, m\]"):
        core.spectral_summary_rows(rows, counts, 1)
    with pytest.raises(ValueError, match="add up"):
        core.spectral_summary_rows(rows, np.array([1, 1], dtype=np.int64), 4)


def _placement_inputs(
    seed: int, N: int, m: int, n: int
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    """(h, cols, u, live, G, B) for place_live_rows: inputs with zeros (dead units below), a
    row of zeros (unconstrained rows), a negative pivot; as many normals as the rows take."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((N, n)) * (rng.random((N, n)) < 0.6)
    if N > 3 and n > 0:
        h[2] = 0.0  # every input dead: rows unconstrained
        h[3, 0] = -2.0  # a negative pivot
    cols = (rng.random((N, n)) < 0.5) | (h != 0)
    u = rng.standard_normal((N, m))
    live = u > -0.3
    rows, n_cols = live.sum(axis=1), cols.sum(axis=1)
    G = rng.standard_normal(int(rows @ (n_cols - (h != 0).any(axis=1))))
    B = rng.standard_normal(int(rows @ (n - n_cols)))
    return h, cols, u, live, G, B


PLACEMENT_SHAPES = [(7, 4, 6), (1, 1, 1), (1, 3, 1), (5, 1, 4), (0, 3, 4), (3, 0, 4), (3, 4, 0)]


@pytest.mark.parametrize("fill_rest", [True, False])
@pytest.mark.parametrize(
    "shape", PLACEMENT_SHAPES, ids=["x".join(map(str, s)) for s in PLACEMENT_SHAPES]
)
@pytest.mark.parametrize("seed", range(3))
def test_live_row_placement_twin(fill_rest: bool, shape: tuple[int, int, int], seed: int) -> None:
    # The twin's rows have the conditioned law's two exact properties: they reproduce their
    # pre-activations, and the columns outside ``cols`` are std times B's entries (or zero).
    N, m, n = shape
    h, cols, u, live, G, B = _placement_inputs(seed, N, m, n)
    inputs = [a.copy() for a in (h, cols, u, live, G, B)]
    W = np.full((N, m, n), np.nan)
    twin.place_live_rows(h, cols, u, live, G, B, fill_rest, 0.7, W)
    for a, b in zip(inputs, (h, cols, u, live, G, B), strict=True):
        np.testing.assert_array_equal(a, b)  # inputs not modified
    assert not np.isnan(W).any()
    assert np.all(W[~live] == 0)
    np.testing.assert_allclose(
        np.einsum("sij,sj->si", W, h)[live],
        (0.7 * np.linalg.norm(h, axis=1)[:, None] * u)[live],
        atol=1e-12,
    )
    rest = np.broadcast_to(~cols[:, None, :], W.shape) & live[:, :, None]
    np.testing.assert_allclose(W[rest], 0.7 * B if fill_rest else 0.0, rtol=1e-15)


@needs_numba
@pytest.mark.parametrize("fill_rest", [True, False])
@pytest.mark.parametrize(
    "shape", PLACEMENT_SHAPES, ids=["x".join(map(str, s)) for s in PLACEMENT_SHAPES]
)
@pytest.mark.parametrize("seed", range(3))
def test_live_row_placement_twins_agree(
    fill_rest: bool, shape: tuple[int, int, int], seed: int
) -> None:
    # float64 only: the conditional sampler, the kernel's one caller, draws in float64.
    assert numba_kernels is not None
    h, cols, u, live, G, B = _placement_inputs(seed, *shape)
    W_numpy, W_numba = np.full(shape, np.nan), np.full(shape, np.nan)
    twin.place_live_rows(h, cols, u, live, G, B, fill_rest, 0.7, W_numpy)
    numba_kernels.place_live_rows(h, cols, u, live, G, B, fill_rest, 0.7, W_numba)
    np.testing.assert_allclose(W_numba, W_numpy, rtol=1e-12, atol=1e-14)
