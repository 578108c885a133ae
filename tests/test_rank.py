"""Masked-row ranks: every backend equals numpy.linalg.matrix_rank on hard matrices, the
closed forms of docs/theory.md ("Closed forms for relu rank collapse") hold statistically,
bad inputs get clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jacgeom
from jacgeom import _backends, reference

from .conftest import BACKENDS


def numpy_threshold(
    s: np.ndarray, k: int, n: int, dtype: type, tol: float | None, rtol: float | None
) -> float:
    if tol is not None:
        return tol
    r = rtol if rtol is not None else max(k, n) * np.finfo(dtype).eps
    return float(s[0]) * r if s.size else 0.0


def assert_ranks_match(
    W: np.ndarray,
    masks: np.ndarray,
    got: np.ndarray,
    tol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Equal to numpy's matrix_rank, except where a singular value lies within the rounding
    of any SVD of the threshold: 1e-8 relative, or 8 eps sigma_max absolute (the backward
    error of LAPACK's SVD; two correct SVDs can disagree inside that band)."""
    assert got.dtype == np.int64
    for keep, r in zip(masks, got, strict=True):
        A = W[keep]
        want = int(np.linalg.matrix_rank(A, tol=tol, rtol=rtol)) if A.size else 0
        if r == want:
            continue
        s = np.linalg.svd(A, compute_uv=False)
        t = numpy_threshold(s, A.shape[0], A.shape[1], W.dtype.type, tol, rtol)
        band = max(1e-8 * t, 8 * np.finfo(W.dtype).eps * float(s[0]))
        assert np.any(np.abs(s - t) <= band), (r, want, s, t)


def hard_matrices(dtype: type) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(123)
    out: dict[str, np.ndarray] = {}
    out["gaussian_square"] = rng.standard_normal((12, 12))
    out["rank3_of_10x8"] = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 8))
    base = rng.standard_normal((5, 7))
    out["duplicated_scaled_rows"] = np.vstack([base, 3.0 * base[:3], -base[1:2]])
    out["rows_sums_of_others"] = np.vstack(
        [base, base[0] + base[1], base[2] - 2 * base[3], base.sum(0)]
    )
    U, _ = np.linalg.qr(rng.standard_normal((14, 9)))
    V, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    out["graded_1e-12_to_1"] = (U * np.logspace(0, -12, 9)) @ V.T
    out["tall_30x4"] = rng.standard_normal((30, 4))
    out["wide_4x30"] = rng.standard_normal((4, 30))
    out["m_equals_1"] = rng.standard_normal((1, 6))
    out["n_equals_1"] = rng.standard_normal((7, 1))
    out["zero_rows"] = np.vstack([rng.standard_normal((4, 5)), np.zeros((3, 5))])
    out["rank1_tall"] = np.outer(rng.standard_normal(9), rng.standard_normal(3))
    return {k: v.astype(dtype) for k, v in out.items()}


def all_or_random_masks(m: int, rng: np.random.Generator) -> np.ndarray:
    if m <= 10:  # every subset
        grid = (np.arange(2**m)[:, None] >> np.arange(m)) & 1
        return grid.astype(bool)
    return rng.random((600, m)) < rng.uniform(0.2, 0.9, size=(600, 1))


@pytest.mark.parametrize("name", list(hard_matrices(np.float64)))
def test_hard_matrices_match_numpy(name: str, backend: str, dtype: type) -> None:
    W = hard_matrices(dtype)[name]
    masks = all_or_random_masks(W.shape[0], np.random.default_rng(len(name)))
    got = jacgeom.masked_rank(W, masks, backend=backend)
    assert got.shape == (masks.shape[0],)
    assert_ranks_match(W, masks, got)


@pytest.mark.parametrize(
    ("tol", "rtol"),
    [(None, 1e-3), (None, 1e-9), (1e-6, None), (0.0, None), (1e6, None), (None, 0.0)],
)
def test_tolerances_match_numpy(tol: float | None, rtol: float | None, backend: str) -> None:
    W = hard_matrices(np.float64)["graded_1e-12_to_1"]
    masks = all_or_random_masks(W.shape[0], np.random.default_rng(0))
    got = jacgeom.masked_rank(W, masks, tol=tol, rtol=rtol, backend=backend)
    assert_ranks_match(W, masks, got, tol=tol, rtol=rtol)


def test_singular_values_returned(backend: str, dtype: type) -> None:
    W = hard_matrices(dtype)["rank3_of_10x8"]
    masks = all_or_random_masks(10, np.random.default_rng(1))[:200]
    r, s = jacgeom.masked_rank(W, masks, backend=backend, return_singular_values=True)
    r_ref, s_ref = reference.masked_rank(W, masks, return_singular_values=True)
    assert s.shape == (200, 8) and s.dtype == dtype
    np.testing.assert_array_equal(r, r_ref)
    scale = float(np.abs(s_ref).max()) * 10
    np.testing.assert_allclose(
        s, s_ref, rtol=0, atol=(1e-4 if dtype == np.float32 else 1e-12) * scale
    )
    assert np.all(np.diff(s, axis=1) <= 0)


def test_one_dimensional_and_empty_masks(backend: str) -> None:
    W = np.arange(12.0).reshape(4, 3) ** 2
    r = jacgeom.masked_rank(W, [True, False, True, True], backend=backend)
    assert np.ndim(r) == 0 and r == np.linalg.matrix_rank(W[[0, 2, 3]])
    assert jacgeom.masked_rank(W, np.zeros(4, bool), backend=backend) == 0
    assert jacgeom.masked_rank(W, np.ones((2, 4), bool), backend=backend).tolist() == [3, 3]
    assert jacgeom.masked_rank(W, np.zeros((0, 4), bool), backend=backend).shape == (0,)
    assert jacgeom.masked_rank(W, np.array([1, 0, 1, 1]), backend=backend) == 3
    assert jacgeom.masked_rank(
        np.ones((3, 0)), np.ones((2, 3), bool), backend=backend
    ).tolist() == [0, 0]


def test_duplicate_masks_are_expanded_correctly(backend: str) -> None:
    rng = np.random.default_rng(5)
    W = rng.standard_normal((70, 20))  # 70 units: the byte-string key path
    base = rng.random((5, 70)) < 0.3
    masks = base[rng.integers(0, 5, size=300)]
    got = jacgeom.masked_rank(W, masks, backend=backend)
    np.testing.assert_array_equal(got, [np.linalg.matrix_rank(W[k]) for k in masks])


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    r=st.integers(0, 12),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_hypothesis_low_rank(m: int, n: int, r: int, seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    r = min(r, m, n)
    W = (rng.standard_normal((m, r)) @ rng.standard_normal((r, n))).astype(dtype)
    masks = rng.random((40, m)) < 0.6
    for backend in BACKENDS:
        assert_ranks_match(W, masks, jacgeom.masked_rank(W, masks, backend=backend))


def test_active_and_jacobian_rank(backend: str, dtype: type) -> None:
    rng = np.random.default_rng(8)
    W = rng.standard_normal((9, 6)).astype(dtype)
    X = rng.standard_normal((50, 6)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    mask = (X @ W.T + b) > 0
    a = jacgeom.active_rank(W, X, b, backend=backend)
    np.testing.assert_array_equal(a, jacgeom.masked_rank(W, mask, backend="numpy"))
    np.testing.assert_array_equal(jacgeom.jacobian_rank(W, X, b, backend=backend), a)
    for act in ["tanh", "gelu", "leaky_relu", "softplus"]:
        d = jacgeom.layer_derivatives(W, X, b, activation=act, backend="numpy")
        got = jacgeom.jacobian_rank(W, X, b, activation=act, backend=backend)
        want = [np.linalg.matrix_rank(di[di != 0, None] * W[di != 0]) for di in d]
        np.testing.assert_array_equal(got, want)
    assert jacgeom.active_rank(W, X[0], b, backend=backend) == a[0]
    r, s = jacgeom.jacobian_rank(
        W, X[:3], b, activation="tanh", backend=backend, return_singular_values=True
    )
    assert s.shape == (3, 6)
    np.testing.assert_allclose(
        s,
        jacgeom.layer_singular_values(W, X[:3], b, activation="tanh"),
        rtol=1e-4 if dtype == np.float32 else 1e-10,
    )


def test_rank_deficient_w_caps_every_activation(backend: str) -> None:
    # rank(J) <= rank(W) = 2 for every activation; strictly monotone ones reach it.
    rng = np.random.default_rng(3)
    W = rng.standard_normal((8, 2)) @ rng.standard_normal((2, 5))
    X = rng.standard_normal((30, 5))
    for act in jacgeom.activation_names():
        ranks = jacgeom.jacobian_rank(W, X, activation=act, backend=backend)
        assert ranks.max() <= 2
        if jacgeom.activation(act).strictly_monotone:
            assert np.all(ranks == 2)


def clopper_pearson(k: int, n: int, alpha: float = 1e-4) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@pytest.mark.parametrize(("m", "n"), [(4, 4), (10, 10), (12, 6), (20, 10)])
def test_closed_form_rank_deficiency(m: int, n: int, backend: str) -> None:
    # Gaussian W, Bernoulli(1/2) masks independent of W: rank(W_S) = min(|S|, n) a.s., so
    # P(rank < n) = P(Binomial(m, 1/2) < n) (1 - 2^-n when m = n). Fixed seed; the interval
    # is an exact Clopper-Pearson interval at level 1 - 1e-4 for the sample count.
    rng = np.random.default_rng([m, n])
    W = rng.standard_normal((m, n))
    samples = 4000 if backend == "numpy" else 40000
    masks = rng.random((samples, m)) < 0.5
    ranks = jacgeom.masked_rank(W, masks, backend=backend)
    np.testing.assert_array_equal(ranks, np.minimum(masks.sum(1), n))
    p = sum(math.comb(m, k) for k in range(n)) / 2.0**m
    lo, hi = clopper_pearson(int((ranks < n).sum()), samples)
    assert lo <= p <= hi, (lo, p, hi)
    assert p == pytest.approx(1 - 2.0**-n) if m == n else True


def test_certificate_path_is_used_and_falls_back() -> None:
    core = _backends.core
    assert core is not None
    rng = np.random.default_rng(0)
    W = rng.standard_normal((40, 30))
    masks = (rng.random((200, 40)) < 0.5).astype(np.float64)
    _, _, fallbacks = core.masked_rank(W, masks, W @ W.T, 0, 0.0, False)
    assert fallbacks == 0  # well-conditioned: every rank certified from the Gram matrix
    Wd = rng.standard_normal((40, 5)) @ rng.standard_normal((5, 30))
    ranks, _, fallbacks = core.masked_rank(Wd, masks, Wd @ Wd.T, 0, 0.0, False)
    assert fallbacks == np.sum(masks.sum(1) > 5)  # deficient: the SVD decides
    np.testing.assert_array_equal(ranks, np.minimum(masks.sum(1), 5))


MASK_CATALOGUE = [
    (dict(mask=np.ones((3, 4))), TypeError, r"mask has dtype float64; expected bool"),
    (dict(mask=np.full((3, 5), 2)), ValueError, r"mask holds integers other than 0 and 1"),
    (
        dict(mask=np.ones((3, 5), bool)),
        ValueError,
        r"mask has shape \(3, 5\) but W has 4 rows; expected mask of shape \(B, 4\)",
    ),
    (dict(mask=np.ones(5, bool)), ValueError, r"expected mask of shape \(4,\)"),
    (dict(mask=np.ones((2, 3, 4), bool)), ValueError, r"mask has 3 dimension\(s\)"),
    (dict(tol=1e-3, rtol=1e-3), ValueError, r"tol and rtol cannot both be given"),
    (dict(tol=-1.0), ValueError, r"tol must be a finite number >= 0"),
    (dict(rtol=float("nan")), ValueError, r"rtol must be a finite number >= 0"),
    (dict(tol="1e-3"), TypeError, r"tol must be a real scalar"),
    (dict(W=np.full((4, 3), np.nan)), ValueError, r"W contains NaN or Inf"),
    (dict(W=np.ones(4)), ValueError, r"W has 1 dimension\(s\)"),
    (dict(W=np.ones((4, 3), complex)), TypeError, r"W has dtype complex128"),
    (dict(backend="gpu"), ValueError, r"unknown backend 'gpu'"),
    (dict(return_singular_values="yes"), TypeError, r"return_singular_values must be a bool"),
]


@pytest.mark.parametrize(("over", "error", "match"), MASK_CATALOGUE)
def test_masked_rank_bad_inputs(
    over: dict, error: type[Exception], match: str, backend: str
) -> None:
    args = dict(W=np.ones((4, 3)), mask=np.ones((3, 4), bool), backend=backend)
    args.update(over)
    with pytest.raises(error, match=match):
        jacgeom.masked_rank(**args)


def test_rank_inputs_not_modified(backend: str) -> None:
    rng = np.random.default_rng(2)
    W = rng.standard_normal((6, 4))[::-1]
    masks = (rng.random((10, 6)) < 0.5)[:, ::-1]
    W0, m0 = W.copy(), masks.copy()
    got = jacgeom.masked_rank(W, masks, backend=backend)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(masks, m0)
    assert_ranks_match(np.ascontiguousarray(W), masks, got)
