"""Is a layer x -> phi(W x + b) a homeomorphism onto its image? The seed's criterion, and
where it fails in practice."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dispatch, _validation
from .activations import Activation
from .activations import activation as _lookup
from .layer import layer_singular_values, preactivations
from .rank import jacobian_rank
from .typing import ActivationName

__all__ = ["HomeomorphismReport", "derivative_zeros", "homeomorphism_report"]


def derivative_zeros(
    act: str | Activation, lo: float = -10.0, hi: float = 10.0, grid: int = 20001
) -> NDArray[np.float64]:
    """Isolated zeros of phi' in [lo, hi]: sign changes on a fine grid, refined by bisection.

    Half-lines where phi' is identically zero (relu's) are not isolated zeros and are not
    listed.

    Examples
    --------
    >>> derivative_zeros("gelu").round(5).tolist()
    [-0.75179]
    >>> derivative_zeros("silu").round(5).tolist()
    [-1.27846]
    >>> derivative_zeros("tanh").tolist()
    []
    """
    a = _lookup(act)
    lo, hi = _validation.real("lo", lo), _validation.real("hi", hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"lo and hi must be finite with lo < hi, got lo={lo!r}, hi={hi!r}")
    grid = _validation.integer("grid", grid)
    if grid < 2:
        raise ValueError(f"grid must be an integer >= 2, got {grid}")
    z = np.linspace(lo, hi, grid)
    d = a.derivative(z)
    roots = []
    for i in np.nonzero((d[:-1] < 0) & (d[1:] > 0) | (d[:-1] > 0) & (d[1:] < 0))[0]:
        left, right = z[i], z[i + 1]
        sign_left = np.sign(d[i])
        for _ in range(80):
            mid = 0.5 * (left + right)
            if np.sign(a.derivative(np.array([mid]))[0]) == sign_left:
                left = mid
            else:
                right = mid
        roots.append(0.5 * (left + right))
    return np.array(roots)


@dataclasses.dataclass
class HomeomorphismReport:
    """What :func:`homeomorphism_report` found.

    Attributes
    ----------
    injective : bool
        The seed's sufficient criterion holds: phi strictly monotone and W of full column
        rank (then the layer is injective, continuous with a continuous inverse on its image).
    strictly_monotone : bool
    weight_rank, n : int
        rank(W) and the input dimension.
    samples : int
        Samples examined (0 without X).
    rank_lost : (k,) int ndarray
        Indices of samples whose Jacobian D_phi W has rank < n.
    min_singular_value : float
        Smallest singular value of D_phi W over the samples (NaN without X).
    derivative_zeros : (r,) ndarray
        Isolated zeros of phi' (gelu, silu): where rows are deleted exactly.
    near_derivative_zero : (j,) int ndarray
        Samples with some pre-activation within ``delta`` of a zero of phi' (the fold).
    """

    injective: bool
    strictly_monotone: bool
    weight_rank: int
    n: int
    samples: int
    rank_lost: NDArray[np.int64]
    min_singular_value: float
    derivative_zeros: NDArray[np.float64]
    near_derivative_zero: NDArray[np.int64]

    def __str__(self) -> str:
        lines = [
            "criterion (phi strictly monotone and rank W = n): "
            f"{'holds' if self.injective else 'fails'}"
            f" (monotone: {self.strictly_monotone}, rank W = {self.weight_rank}, n = {self.n})",
        ]
        if self.samples:
            lines.append(
                f"{len(self.rank_lost)} of {self.samples} samples lost rank; smallest singular "
                f"value {self.min_singular_value:.3g}; "
                f"{len(self.near_derivative_zero)} near a zero of phi'"
            )
        return "\n".join(lines)


def homeomorphism_report(
    W: ArrayLike,
    activation: ActivationName | Activation = "relu",
    X: ArrayLike | None = None,
    b: ArrayLike | None = None,
    delta: float = 1e-2,
) -> HomeomorphismReport:
    """The seed's injectivity criterion for x -> phi(W x + b), and its failures on samples.

    Parameters
    ----------
    W : (m, n) array_like
    activation : str or Activation
    X : (B, n) array_like, optional
        Samples at which to look for rank loss and folds.
    b : (m,) array_like, optional
    delta : float, default 1e-2
        Distance to a zero of phi' that counts as "near the fold".

    Returns
    -------
    HomeomorphismReport

    Examples
    --------
    >>> import numpy as np
    >>> rep = homeomorphism_report(np.eye(2), "relu", X=[[1.0, 2.0], [1.0, -2.0]])
    >>> rep.injective, rep.rank_lost.tolist()
    (False, [1])
    >>> homeomorphism_report(np.eye(2), "tanh").injective
    True
    """
    act = _lookup(activation)
    Wk = _validation.weight_matrix(W, True)
    if not (np.isfinite(_validation.real("delta", delta)) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    m, n = Wk.shape
    # numpy.linalg.matrix_rank's rule, on the compiled SVD with BLAS pinned to one thread.
    weight_rank = (
        int(
            _dispatch.matrix_rank_count(
                _dispatch.batched_singular_values(Wk[None], "auto"), (m, n)
            )[0]
        )
        if Wk.size
        else 0
    )
    zeros = (
        derivative_zeros(act) if act.derivative_can_vanish and not act.is_custom else np.array([])
    )
    injective = bool(act.strictly_monotone and weight_rank == n)
    empty = np.zeros(0, dtype=np.int64)
    if X is None:
        if b is not None:
            raise ValueError("b is given without X: the bias is used only at the samples X")
        return HomeomorphismReport(
            injective, act.strictly_monotone, weight_rank, n, 0, empty, float("nan"), zeros, empty
        )
    ranks = np.atleast_1d(jacobian_rank(Wk, X, b, activation=act))
    s = np.atleast_2d(layer_singular_values(Wk, X, b, activation=act))
    Z = np.atleast_2d(preactivations(Wk, X, b))
    near = np.zeros(Z.shape[0], dtype=bool)
    for z0 in zeros:
        near |= np.any(np.abs(Z - z0) < delta, axis=1)
    smin = float(s[:, -1].min()) if s.size else float("nan")
    return HomeomorphismReport(
        injective,
        act.strictly_monotone,
        weight_rank,
        n,
        int(Z.shape[0]),
        np.nonzero(ranks < n)[0].astype(np.int64),
        smin,
        zeros,
        np.nonzero(near)[0].astype(np.int64),
    )
