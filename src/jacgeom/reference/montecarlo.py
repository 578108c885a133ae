"""numpy twins of the compiled kernels that only the Monte Carlo (jacgeom.montecarlo) calls.

- :func:`place_live_rows`: twin of ``jacgeom._numba.place_live_rows``, the conditional
  sampler's rows of live units, drawn from their law given the pre-activations;
- :func:`spectral_summary` and :func:`spectral_summary_rows`: twins of
  ``jacgeom._core.spectral_summary`` / ``spectral_summary_rows``, the per-sample statistics
  of a stack of end-to-end Jacobians (numerical rank, log singular values, squared Frobenius
  norm, log-volume).

Same names and arguments as the compiled kernels. The twins agree with them to rounding, not
bit for bit: the compiled summary settles a sample with dead rows by a rank certificate and
the largest eigenvalue of the live rows' Gram matrix where it can, the twin always takes
numpy's SVD. All logarithms are natural. Inputs are assumed validated by the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "live_row_counts",
    "numerical_rank",
    "place_live_rows",
    "spectral_summary",
    "spectral_summary_of_singular_values",
    "spectral_summary_rows",
]

FloatArray = NDArray[np.floating[Any]]
# (rank, log_smax, log_smin, frobenius2, log_volume), each (B,)
SpectralSummary = tuple[NDArray[np.int64], FloatArray, FloatArray, FloatArray, FloatArray]


def place_live_rows(
    h: NDArray[np.float64],
    cols: NDArray[np.bool_],
    u: NDArray[np.float64],
    live: NDArray[np.bool_],
    G: NDArray[np.float64],
    B: NDArray[np.float64],
    fill_rest: bool,
    std: float,
    W: NDArray[np.float64],
) -> None:
    """Write W[s, i] for the live units (s, i) from their law given
    w . h[s] = std |h[s]| u[s, i]; zero rows for the dead units.

    Parameters
    ----------
    h : (N, n) float64
        The layer's input; its non-zero columns must be in ``cols``. Only h / |h| matters,
        and |h|^2 is formed as the plain sum of squares, so a non-zero row must have it in
        float64's normal range (the caller, sampling.draw_layer_given_input, rescales the
        rows whose squares underflow or overflow by a power of two).
    cols : (N, n) bool
        Columns whose entries come from G (the others from B).
    u : (N, m) float64
        Standardised pre-activations: w_i . h[s] = std |h[s]| u[s, i].
    live : (N, m) bool
        Units whose rows are drawn; the other rows are set to zero.
    G, B : (k_G,), (k_B,) float64
        As many standard normals as the live rows take (see Notes), consumed in order.
    fill_rest : bool
        False leaves the columns outside ``cols`` zero and reads nothing of B.
    std : float
        Standard deviation of the weights.
    W : (N, m, n) float64
        Written in place.

    Notes
    -----
    With h^ = h / |h| and H the Householder reflection that maps e_j0 to -sign(h_j0) h^ (j0
    the first column where h is non-zero; H is the identity off the support of h),
    w = std H y with y_j0 = -sign(h_j0) u and every other y_j iid N(0, 1) is N(0, std^2 I)
    given w . h^ = std u. The y_j of the columns in ``cols`` (other than j0) are the next
    entries of G, those of the other columns the next entries of B (zero when not
    ``fill_rest``), row by row (rows in row-major order of (s, i)), columns ascending. A row
    of h = 0 has no pivot: all its y_j come from G and B. Cost: O(N n + live rows x n).

    Examples
    --------
    >>> import numpy as np
    >>> h, u = np.array([[3.0, 4.0]]), np.array([[1.0, -1.0]])
    >>> cols, live = np.ones((1, 2), dtype=bool), np.array([[True, False]])
    >>> W = np.empty((1, 2, 2))
    >>> place_live_rows(h, cols, u, live, np.array([0.5]), np.empty(0), False, 2.0, W)
    >>> bool(np.isclose(W[0, 0] @ h[0], 2.0 * 5.0 * u[0, 0])), W[0, 1].tolist()
    (True, [0.0, 0.0])
    """
    N, n = h.shape
    W[~live] = 0.0
    if W.size == 0:  # no entries to write, and a row of no columns takes no normals
        return
    owner = np.nonzero(live)[0]  # the sample of each live row, in row-major order
    nonzero = h != 0
    has_pivot = nonzero.any(axis=1)
    j0 = np.argmax(nonzero, axis=1)
    pivot = np.zeros((N, n), dtype=bool)
    pivot[has_pivot, j0[has_pivot]] = True
    norm = np.sqrt(np.einsum("ij,ij->i", h, h))
    hhat = h / np.where(norm > 0, norm, 1.0)[:, None]
    sgn = np.where(hhat[np.arange(N), j0] > 0, 1.0, -1.0) * has_pivot
    v = pivot + sgn[:, None] * hhat  # zero off the support of h
    Y = np.zeros((owner.size, n))
    Y[(cols & ~pivot)[owner]] = G
    if fill_rest:
        Y[~cols[owner]] = B
    Y[pivot[owner]] = -(sgn[:, None] * u)[live][has_pivot[owner]]
    V = v[owner]
    coef = 2.0 * np.einsum("ij,ij->i", V, Y) / np.maximum(np.einsum("ij,ij->i", V, V), 1.0)
    W[live] = std * (Y - coef[:, None] * V)


def live_row_counts(J: NDArray[Any]) -> NDArray[np.int64]:
    """Number of rows of each J[b] (B, m, n) that are not exactly zero, (B,) int64."""
    return np.count_nonzero(np.any(J != 0, axis=2), axis=1).astype(np.int64)


def spectral_summary_of_singular_values(
    s: NDArray[Any],
    live_rows: NDArray[np.int64],
    shape: tuple[int, int],
    spectra: bool = True,
) -> SpectralSummary:
    """The statistics of :func:`spectral_summary` from singular values already computed.

    Parameters
    ----------
    s : (B, p) array
        Singular values of each J[b] (m, n), descending, p = min(m, n). Overwritten: the
        values from index ``live_rows[b]`` on are set to exactly zero.
    live_rows : (B,) int64
        Non-zero rows of each J[b] (:func:`live_row_counts`); J[b] has rank at most that, so
        the singular values past it are zeros, reported exactly rather than as an SVD's
        rounding.
    shape : (int, int)
        (m, n) of the Jacobians.
    spectra : bool, default True
        False: the rank only, the other four statistics NaN.

    Returns
    -------
    rank, log_smax, log_smin, frobenius2, log_volume : (B,) each
        See :func:`spectral_summary`.
    """
    B, p = s.shape
    m, n = shape
    s[np.arange(p)[None, :] >= live_rows[:, None]] = 0.0
    rank = numerical_rank(s, shape)
    nan = np.full(B, np.nan, dtype=s.dtype)
    if not spectra:
        return rank, nan, nan.copy(), nan.copy(), nan.copy()
    with np.errstate(divide="ignore"):
        logs = np.log(s)
    if p == 0:  # no singular values: the compiled kernel's conventions
        ninf = np.full(B, -np.inf, dtype=s.dtype)
        return rank, ninf, ninf.copy(), np.zeros(B, dtype=s.dtype), ninf.copy() if m >= n else nan
    log_smax, log_smin = logs[:, 0], logs[:, -1]
    frobenius2 = np.sum(s * s, axis=1)
    if m >= n:
        log_volume = np.where(rank == n, logs.sum(axis=1), -np.inf).astype(s.dtype, copy=False)
    else:
        log_volume = nan
    return rank, log_smax, log_smin, frobenius2, log_volume


def numerical_rank(s: NDArray[Any], shape: tuple[int, int]) -> NDArray[np.int64]:
    """numpy.linalg.matrix_rank's count for a stack of (m, n) matrices, from their singular
    values s (B, p), descending: the number above sigma_max * max(m, n) * eps(s.dtype)."""
    if s.shape[1] == 0:
        return np.zeros(s.shape[0], dtype=np.int64)
    tol = s[:, :1] * (max(shape) * np.finfo(s.dtype).eps)  # factor first: s near the maximum
    return np.count_nonzero(s > tol, axis=1).astype(np.int64)


def spectral_summary(
    J: NDArray[Any], rank_bound: NDArray[np.int64] | None = None, spectra: bool = True
) -> SpectralSummary:
    """Per-sample statistics of a stack of Jacobians.

    Parameters
    ----------
    J : (B, m, n) float32 or float64
    rank_bound : (B,) int64, optional
        An upper bound of each rank known to the caller. It lets the compiled kernel skip
        work and changes no result; the twin does not use it.
    spectra : bool, default True
        False: the rank only, the other four statistics NaN.

    Returns
    -------
    rank : (B,) int64
        The numerical (float) rank: singular values above sigma_max * max(m, n) * eps of J's
        dtype (numpy.linalg.matrix_rank's rule).
    log_smax, log_smin : (B,) of J's dtype
        Natural log of the largest and smallest of the p = min(m, n) singular values; -inf
        for an exact zero (J[b] with fewer than p non-zero rows has sigma_min = 0 exactly).
    frobenius2 : (B,) of J's dtype
        ||J[b]||_F^2, the sum of the squared singular values.
    log_volume : (B,) of J's dtype
        Sum of the n natural-log singular values when m >= n (-inf when rank < n, and when
        n = 0); NaN when m < n.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.array([[[2.0, 0.0], [0.0, 0.5]], [[1.0, 1.0], [0.0, 0.0]]])
    >>> rank, log_smax, log_smin, frobenius2, log_volume = spectral_summary(J)
    >>> rank.tolist(), np.exp(log_smax).round(6).tolist(), frobenius2.round(6).tolist()
    ([2, 1], [2.0, 1.414214], [4.25, 2.0])
    >>> log_smin.tolist()[1]
    -inf
    >>> log_volume.tolist()
    [0.0, -inf]
    """
    del rank_bound  # a hint to the compiled kernel only
    s = np.linalg.svd(J, compute_uv=False)
    return spectral_summary_of_singular_values(s, live_row_counts(J), J.shape[1:], spectra)


def spectral_summary_rows(
    rows: NDArray[Any],
    counts: NDArray[np.int64],
    m: int,
    scale: float = 1.0,
    rank_bound: NDArray[np.int64] | None = None,
    spectra: bool = True,
) -> SpectralSummary:
    """:func:`spectral_summary` of the stack J (B, m, n) given by its packed rows.

    Parameters
    ----------
    rows : (K, n) float32 or float64
        The rows of every sample, samples in order.
    counts : (B,) int64
        Sample b holds the next counts[b] rows (0 <= counts[b] <= m, summing to K); its
        other m - counts[b] rows are zero.
    m : int
        Rows of each J[b]: it sets the tolerance of the rank and the count of singular values.
    scale : float, default 1.0
        J = scale * the packed rows (applied in the rows' dtype).
    rank_bound, spectra
        As in :func:`spectral_summary`.

    Returns
    -------
    rank, log_smax, log_smin, frobenius2, log_volume : (B,) each

    Examples
    --------
    >>> import numpy as np
    >>> rows, counts = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]]), np.array([2, 1])
    >>> spectral_summary_rows(rows, counts, 3, scale=2.0)[0].tolist()
    [2, 1]
    """
    B, n = counts.shape[0], rows.shape[1]
    J = np.zeros((B, m, n), dtype=rows.dtype)
    J[np.arange(m)[None, :] < counts[:, None]] = rows * rows.dtype.type(scale)
    return spectral_summary(J, rank_bound, spectra)
