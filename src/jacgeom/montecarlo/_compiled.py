"""The compiled kernels the Monte Carlo calls, each beside its numpy twin: the one module of
jacgeom.montecarlo that reads ``_backends.core`` or ``_backends.numba_kernels``.

Every call runs with BLAS pinned to one thread: the Monte Carlo's matrices are small and
its parallelism is across chunks (see runner.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import _backends
from ..reference import montecarlo as twin

SpectralSummary = twin.SpectralSummary


def singular_values(A: NDArray[Any], backend: str) -> NDArray[Any]:
    """Singular values (n, min(r, c)) of every A[b] (n, r, c), descending."""
    A = np.ascontiguousarray(A)
    if backend == "numpy":
        return np.linalg.svd(A, compute_uv=False)
    kernels = _backends.core if backend == "cpp" else _backends.numba_kernels
    assert kernels is not None
    with _backends.single_threaded_blas():
        return kernels.batched_singular_values(A)


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
    """jacgeom.reference.montecarlo.place_live_rows (arguments and law documented there),
    by numba's one pass without the GIL where numba is installed, on every backend."""
    if _backends.numba_kernels is not None:
        _backends.numba_kernels.place_live_rows(
            np.ascontiguousarray(h), cols, u, live, G, B, fill_rest, std, W
        )
    else:
        twin.place_live_rows(h, cols, u, live, G, B, fill_rest, std, W)


def spectral_summary(
    J: NDArray[Any], rank_bound: NDArray[np.int64] | None, spectra: bool, backend: str
) -> SpectralSummary:
    """(rank, log_smax, log_smin, frobenius2, log_volume) of every J[b] (n, n_L, n_0): the C++
    kernel on "cpp", elsewhere the twin's statistics of the backend's singular values."""
    if backend == "cpp":
        assert _backends.core is not None
        with _backends.single_threaded_blas():
            return _backends.core.spectral_summary(np.ascontiguousarray(J), rank_bound, spectra)
    s = singular_values(J, backend)
    return twin.spectral_summary_of_singular_values(
        s, twin.live_row_counts(J), J.shape[1:], spectra
    )


def spectral_summary_rows(
    rows: NDArray[Any],
    counts: NDArray[np.int64],
    m: int,
    scale: float,
    rank_bound: NDArray[np.int64] | None,
    spectra: bool,
) -> SpectralSummary:
    """spectral_summary of the (n, m, n_0) stack given by its packed non-zero rows (C++ only:
    the other backends never pack)."""
    assert _backends.core is not None
    with _backends.single_threaded_blas():
        return _backends.core.spectral_summary_rows(rows, counts, m, scale, rank_bound, spectra)


def masked_layer_rank(W: NDArray[Any], d: NDArray[Any]) -> NDArray[np.int64]:
    """numpy.linalg.matrix_rank of the non-zero rows of every diag(d[b]) W (C++ only), W
    (m, n) shared or (N, m, n) per sample, d (N, m) contiguous."""
    assert _backends.core is not None
    with _backends.single_threaded_blas():
        return _backends.core.masked_rank(np.ascontiguousarray(W), d, None, 0, 0.0, False)[0]


def chain_active(Ws: list[NDArray[Any]], Ds: list[NDArray[Any]], reverse: bool) -> NDArray[Any]:
    """D_L W_L ... D_1 W_1 per sample (C++ only), each W shared (m, n) or per sample
    (N, m, n), D_l = diag(Ds[l]); each sample multiplies in its cheaper order, ``reverse``
    (from the output) breaking ties."""
    assert _backends.core is not None
    with _backends.single_threaded_blas():
        return _backends.core.chain_active([np.ascontiguousarray(W) for W in Ws], Ds, reverse)
