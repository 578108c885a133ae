"""Per-layer geometry of a network: each layer's Jacobian A_l at its own inputs h_{l-1}.

``Network.layer_jacobians`` and ``Network.layer_report`` delegate here. Every layer is read
as a one-layer :class:`jacgeom.Network` (same weights, activation, residual and norm
settings) applied to the layer's inputs, so ranks, spectra and log-volumes come from the
Network's own machinery (the graded frame of ``Network.log_singular_values``); nothing is
recomputed by a second method. This module imports no other part of jacgeom's network
code at run time (it receives the network), so ``jacgeom.network`` can import it lazily
without an import cycle.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np
from numpy.typing import NDArray

from . import _dispatch, _frame, _json
from .homeomorphism import derivative_zeros, homeomorphism_report
from .interop import to_array_library, to_numpy
from .typing import BackendName

if TYPE_CHECKING:
    from .network import Network

__all__ = [
    "Distribution",
    "LayerGeometry",
    "LayerReport",
    "Verdict",
    "layer_jacobians",
    "layer_report",
]

FloatArray = NDArray[np.floating[Any]]
Verdict = Literal[
    "injective",  # criterion holds: phi strictly monotone, rank W = n_{l-1}
    "rank lost",  # the layer's Jacobian is singular at some probe samples
    "criterion fails",  # not guaranteed, but every probe sample has full exact rank
    "not injective",  # a layer normalisation (loses the mean direction) or n_l < n_{l-1}
    "undecided",  # residual and kernel layers: the criterion does not apply
]
DEFAULT_SATURATION_TOL = 1e-2


class DistributionDict(TypedDict):
    count: int
    infinite: int
    min: float
    q05: float
    median: float
    q95: float
    max: float


@dataclasses.dataclass(frozen=True)
class Distribution:
    """Quantiles of a per-sample quantity over the probe batch, every sample counted.

    Attributes
    ----------
    count : int
        Samples.
    infinite : int
        Samples where the value is +-inf (a log-volume of -inf, a log condition number of
        +inf: exact rank lost). They count in every quantile as the values they are: where
        more than half the samples lost exact rank, the median log condition number is inf.
    min, q05, median, q95, max : float
        Quantiles over all ``count`` samples: linear interpolation between order
        statistics, as ``numpy.quantile``'s default, with an infinite neighbour that has
        weight taken as the value (so the median of [1, inf] is inf, as ``numpy.median``
        says). NaN only where no sample was given, or where the two neighbours are -inf
        and +inf.

    Notes
    -----
    With the values sorted, v_0 <= ... <= v_{N-1}, quantile q sits at h = q (N - 1) and is
    v_k + (h - k) (v_{k+1} - v_k) with k = floor(h): v_k itself where h = k, the infinite
    neighbour where one of v_k, v_{k+1} is infinite and weighted.

    Examples
    --------
    >>> d = Distribution.of([1.0, 2.0, 3.0, float("inf")])
    >>> d.infinite, d.min, d.median, d.q95, d.max
    (1, 1.0, 2.5, inf, inf)
    >>> Distribution.of([float("-inf")] * 3).median
    -inf
    """

    count: int
    infinite: int
    min: float
    q05: float
    median: float
    q95: float
    max: float

    @classmethod
    def of(cls, values: Any) -> Distribution:
        """The distribution of ``values`` (any shape, flattened; NaN refused).

        Raises
        ------
        ValueError
            Where ``values`` holds NaN: a sample without a value cannot be placed among
            the quantiles.
        """
        v = np.sort(np.asarray(values, dtype=np.float64).ravel())
        if np.isnan(v).any():
            raise ValueError(
                f"values holds {int(np.isnan(v).sum())} NaN of {v.size}; a Distribution "
                "takes numbers, infinities included"
            )
        if v.size == 0:
            nan = float("nan")
            return cls(0, 0, nan, nan, nan, nan, nan)
        q = [_quantile(v, p) for p in (0.0, 0.05, 0.5, 0.95, 1.0)]
        return cls(int(v.size), int(np.count_nonzero(np.isinf(v))), *q)

    def as_dict(self) -> DistributionDict:
        return DistributionDict(
            count=self.count,
            infinite=self.infinite,
            min=self.min,
            q05=self.q05,
            median=self.median,
            q95=self.q95,
            max=self.max,
        )


def _quantile(v: FloatArray, q: float) -> float:
    """The q-quantile of sorted ``v`` (no NaN, at least one value): numpy's linear rule,
    with an infinite neighbour that has weight taken as the value rather than the NaN of
    inf - inf or 0 * inf that the interpolation formula gives there."""
    h = q * (v.size - 1)  # numpy's virtual index for the linear method
    lo = math.floor(h)
    hi = min(lo + 1, v.size - 1)
    g = h - lo
    a, b = float(v[lo]), float(v[hi])
    if g == 0.0 or a == b:
        return a
    if math.isinf(a) or math.isinf(b):
        if math.isinf(a) and math.isinf(b):
            return float("nan")  # -inf and +inf: no value between them
        return a if math.isinf(a) else b
    return float(np.quantile(v, q))


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
    """The geometry of one layer's Jacobian A_l over the probe batch.

    Attributes
    ----------
    layer : int
        0-based index l.
    name : str
        What the layer was made of (torch module names after ``Network.from_torch``).
    activation : str
    shape : (int, int)
        (n_l, n_{l-1}).
    dead_fraction : float
        Units with phi'(z) = 0 exactly (relu's z <= 0), or with gamma = 0 in an affine layer
        normalisation, on every probe sample: their rows of A_l are zero.
    inactive_fraction : float
        (sample, unit) pairs with phi'(z) = 0 exactly (or gamma = 0).
    saturated_fraction : float
        (sample, unit) pairs with 0 < |phi'(z)| < saturation_tol: alive, but their rows of
        A_l are shrunk by more than 1 / saturation_tol.
    exact_rank : Distribution
        **Exact** rank of A_l per sample: singular values non-zero in exact arithmetic
        (``Network.exact_rank``'s definition: the count of finite log singular values).
    numerical_rank : Distribution
        **Numerical (float64)** rank of A_l per sample, numpy.linalg.matrix_rank's rule
        sigma_i > max(n_l, n_{l-1}) eps_64 sigma_1 on accurately computed singular values.
    full_rank : int
        min(n_l, n_{l-1}).
    rank_lost_samples : int
        Samples whose exact rank is below ``full_rank``.
    log_volume : Distribution
        Sum of the natural-log singular values of A_l (0.5 log det(A^T A) for n_l >= n_{l-1},
        0.5 log det(A A^T) otherwise); -inf when exact rank is lost.
    log_condition : Distribution
        Natural log of sigma_1 / sigma_min(n_l, n_{l-1}); +inf when exact rank is lost.
    verdict : Verdict
        Whether the layer is a homeomorphism onto its image (jacgeom.homeomorphism_report's
        criterion: phi strictly monotone and rank W = n_{l-1}), checked on the probe samples.
    near_fold_samples : int
        Samples with a pre-activation within 1e-2 of an isolated zero of phi' (gelu, silu).
    """

    layer: int
    name: str
    activation: str
    shape: tuple[int, int]
    dead_fraction: float
    inactive_fraction: float
    saturated_fraction: float
    exact_rank: Distribution
    numerical_rank: Distribution
    full_rank: int
    rank_lost_samples: int
    log_volume: Distribution
    log_condition: Distribution
    verdict: Verdict
    near_fold_samples: int


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """:meth:`jacgeom.Network.layer_report`'s result: one :class:`LayerGeometry` per layer.

    Attributes
    ----------
    layers : list of LayerGeometry
    samples : int
    dtype : str
        The network's dtype (the forward pass and the unit fractions); ranks, spectra and
        volumes are computed in float64 whatever it is.
    saturation_tol : float
    notes : list of str
    """

    layers: list[LayerGeometry]
    samples: int
    dtype: str
    saturation_tol: float
    notes: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Nested dicts of Python values (NaN and infinities as floats)."""
        return dataclasses.asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """Strict JSON (``json.dumps`` keywords such as ``indent`` pass through): infinities
        as the strings "inf" and "-inf", NaN (a statistic of no sample) as null."""
        return json.dumps(_json.strict(self.as_dict()), **kwargs)

    def table(self) -> str:
        """A plain-text table, one row per layer.

        Columns: dead (units dead on every sample), sat (saturated pairs), exact rank and
        float64 numerical rank (median [min]), log vol and log cond (natural logs, medians
        over all samples: a sample whose exact rank is lost counts as -inf and inf, so the
        median is infinite where more than half of them lost it), inf (the samples whose
        exact rank is lost), verdict.
        """
        head = (
            f"{'layer':<5} {'activation':<10} {'shape':>9} {'dead':>6} {'sat':>6} "
            f"{'exact rank':>11} {'f64 rank':>11} {'log vol':>9} {'log cond':>9} "
            f"{'inf':>4}  verdict"
        )
        lines = [head, "-" * len(head)]
        for g in self.layers:

            def rank(d: Distribution) -> str:
                return f"{d.median:g} [{d.min:g}]"

            lines.append(
                f"{g.layer:<5} {g.activation:<10} {g.shape[0]:>4}x{g.shape[1]:<4} "
                f"{g.dead_fraction:>6.3f} {g.saturated_fraction:>6.3f} "
                f"{rank(g.exact_rank):>11} {rank(g.numerical_rank):>11} "
                f"{g.log_volume.median:>9.3g} {g.log_condition.median:>9.3g} "
                f"{g.rank_lost_samples:>4}  {g.verdict}"
            )
        lines.append(
            f"{self.samples} samples; ranks: exact and float64 numerical (median [min]); "
            "log vol, log cond: natural logs, medians over all samples, a sample with exact "
            "rank lost counting as -inf, inf; inf: samples with exact rank lost"
        )
        lines.extend(self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _one_layer(net: Network, l: int, dtype: Any) -> Network:
    """Layer l alone, as a Network of the given dtype (weights shared when it matches)."""
    W = net.weights[l]
    kernel = net.kernel_layers[l]
    return type(net)(
        [W._astype(np.dtype(dtype)) if kernel else W.astype(dtype, copy=False)],
        [None if kernel else net.biases[l]],  # type: ignore[list-item]
        activation=[None if kernel else net.activations[l]],
        residual=net.residual_layers[l],
        norm="layer" if net.norm_layers[l] else None,
        norm_eps=net.norm_eps,
        memory_budget=net.memory_budget,
        check_finite=False,
        norm_weights=None if net.norm_weights is None else [net.norm_weights[l]],
        norm_biases=None if net.norm_biases is None else [net.norm_biases[l]],
    )


def _inputs(net: Network, X: Any, check_finite: bool = True) -> tuple[FloatArray, bool]:
    """X as (B, n_0) C-contiguous in the network's dtype: torch tensors detached first,
    then the Network's own validation (messages name X)."""
    return net._inputs(to_numpy(X), check_finite)


def _iter_layers(
    net: Network, X: FloatArray, backend: str
) -> Iterator[tuple[int, Network, FloatArray]]:
    """(l, layer l alone, its inputs h_{l-1}) for every layer, inputs in the net's dtype."""
    H = X
    for l in range(net.depth):
        sub = _one_layer(net, l, net.dtype)
        yield l, sub, H
        H = sub._forward(H, backend)  # phi as the backend's products evaluate it


def layer_jacobians(
    net: Network,
    X: Any,
    lazy: bool = False,
    backend: BackendName = "auto",
    as_input: bool = False,
) -> Any:
    """See :meth:`jacgeom.Network.layer_jacobians`."""
    Xk, squeeze = _inputs(net, X)

    def gen() -> Iterator[Any]:
        for _, sub, H in _iter_layers(net, Xk, backend):
            J = sub.jacobian(H, backend=backend, check_finite=False)
            J = J[0] if squeeze else J
            yield to_array_library(J, X) if as_input else J

    return gen() if lazy else list(gen())


def layer_report(
    net: Network,
    X: Any,
    saturation_tol: float = DEFAULT_SATURATION_TOL,
    backend: BackendName = "auto",
    names: list[str] | None = None,
    notes: list[str] | None = None,
) -> LayerReport:
    """See :meth:`jacgeom.Network.layer_report`."""
    if not (math.isfinite(saturation_tol) and saturation_tol >= 0):
        raise ValueError(f"saturation_tol must be a finite number >= 0, got {saturation_tol!r}")
    if names is not None and len(names) != net.depth:
        raise ValueError(f"names has {len(names)} entries for {net.depth} layers")
    Xk, _ = _inputs(net, X)
    if Xk.shape[0] == 0:
        raise ValueError("X has no rows: a layer report summarises at least one sample")
    eps64 = float(np.finfo(np.float64).eps)
    out = []
    for l, sub, H in _iter_layers(net, Xk, backend):
        m, n = net.widths[l + 1], net.widths[l]
        p = min(m, n)
        kernel = net.kernel_layers[l]
        act = net.activations[l]
        B = H.shape[0]
        # Unit fractions in the network's own dtype: what its forward pass computes.
        if kernel:
            zero = np.zeros((B, m), dtype=bool)
            saturated = zero
            arg = None
        else:
            z = sub.preactivations(H, check_finite=False)[0]
            gamma = None
            arg = z
            if net.norm_layers[l]:
                state = sub._normalised(0, z)
                arg, gamma = state.arg, state.gamma
            d = act.derivative(arg)
            zero = act.derivative_is_zero(arg)
            if gamma is not None:
                # a unit with gamma = 0 has a zero row of the layer Jacobian, as a dead one
                # has; saturation is of the row's scale, gamma phi'
                zero = zero | (gamma == 0)
                d = d * gamma
            saturated = ~zero & (np.abs(d) < saturation_tol)
        # Ranks and spectra in float64, from the graded frame: finite logs are exactly the
        # exact rank (Network.log_singular_values' contract), no second pass for it.
        sub64 = sub if net.dtype == np.float64 else _one_layer(net, l, np.float64)
        H64 = H.astype(np.float64, copy=False)
        logs: FloatArray = np.empty((B, p))
        todo = np.ones(B, dtype=bool)
        if not (kernel or net.residual_layers[l] or net.norm_layers[l]) and B and p:
            logs, todo = _certified_logs(net, l, H64, backend)
        if todo.any():
            logs[todo] = sub64.log_singular_values(
                H64[todo], backend=backend, check_finite=False
            ).reshape(-1, p)
        exact = np.isfinite(logs).sum(axis=1)
        # numpy's rule on the exact values, for the whole batch at once (the frame's summary).
        numerical = _frame.stable_summary(
            np.asarray(logs, dtype=np.float64), exact.astype(np.int64), (m, n), eps64
        ).rank
        with np.errstate(invalid="ignore"):
            log_volume = logs.sum(axis=1) if p else np.zeros(B)
            log_condition = (logs[:, 0] - logs[:, -1]) if p else np.zeros(B)
        log_condition = np.where(exact < p, np.inf, log_condition)
        lost = int(np.count_nonzero(exact < p))
        verdict, near = _verdict(net, l, arg, exact)
        out.append(
            LayerGeometry(
                layer=l,
                name=names[l] if names is not None else f"layer {l}",
                activation="kernel" if kernel else act.name,
                shape=(m, n),
                dead_fraction=float(zero.all(axis=0).mean()) if B and m else 0.0,
                inactive_fraction=float(zero.mean()) if zero.size else 0.0,
                saturated_fraction=float(saturated.mean()) if saturated.size else 0.0,
                exact_rank=Distribution.of(exact),
                numerical_rank=Distribution.of(numerical),
                full_rank=p,
                rank_lost_samples=lost,
                log_volume=Distribution.of(log_volume),
                log_condition=Distribution.of(log_condition),
                verdict=verdict,
                near_fold_samples=near,
            )
        )
    return LayerReport(
        layers=out,
        samples=int(Xk.shape[0]),
        dtype=str(net.dtype),
        saturation_tol=float(saturation_tol),
        notes=list(notes or []),
    )


# A plain layer's spectrum is taken from one SVD of D W where its smallest structural value
# is above this fraction of the largest: the SVD's absolute error (eps times the largest)
# is then below 1e-9 of every value, and none of them is zero in exact arithmetic.
_CERTIFIED_RATIO = 1e-6


def _certified_logs(
    net: Network, l: int, H: FloatArray, backend: str
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """log singular values (B, p) of a plain layer's Jacobians D W at inputs H (float64),
    from the backend's batched SVD where they are certified, and the samples left for the
    graded frame (a zero or tiny structural value: exact rank to decide, saturation).

    The exact rank is at most q = min(live units, n) (units whose phi' is zero
    mathematically are removed); where the SVD's q-th value exceeds _CERTIFIED_RATIO of
    the first, it is q, the first q values are accurate and the rest are exact zeros."""
    W = np.asarray(net.weights[l], dtype=np.float64)
    b = np.asarray(net.biases[l], dtype=np.float64)
    act = net.activations[l]
    m, n = W.shape
    p = min(m, n)
    z = H @ W.T + b
    zero = act.derivative_is_zero(z)
    with np.errstate(all="ignore"):
        d = np.where(zero, 0.0, act.derivative(z)).astype(np.float64)
    s = _dispatch.call("singular_values", backend, np.ascontiguousarray(W), np.ascontiguousarray(d))
    s = np.asarray(s, dtype=np.float64).reshape(-1, p)
    q = np.minimum(np.count_nonzero(~zero, axis=1), n)
    rows = np.arange(s.shape[0])
    smallest = s[rows, np.maximum(q - 1, 0)]
    ok = (q > 0) & np.isfinite(s).all(axis=1) & (smallest > _CERTIFIED_RATIO * s[:, 0])
    with np.errstate(divide="ignore"):
        logs = np.where(np.arange(p)[None, :] < q[:, None], np.log(s), -np.inf)
    return logs, ~ok


def _verdict(
    net: Network, l: int, arg: FloatArray | None, exact: NDArray[np.int64]
) -> tuple[Verdict, int]:
    m, n = net.widths[l + 1], net.widths[l]
    if net.kernel_layers[l] or net.residual_layers[l]:
        return "undecided", 0
    act = net.activations[l]
    if net.norm_layers[l] or m < n:
        verdict: Verdict = "not injective"
    else:
        crit = homeomorphism_report(net.weights[l], act)
        if crit.injective:
            verdict = "injective"
        elif np.any(exact < n):
            verdict = "rank lost"
        else:
            verdict = "criterion fails"
    near = 0
    if arg is not None and act.derivative_can_vanish and not act.is_custom and act.smooth:
        hits = np.zeros(arg.shape[0], dtype=bool)
        for z0 in derivative_zeros(act):
            hits |= np.any(np.abs(arg - z0) < 1e-2, axis=1)
        near = int(np.count_nonzero(hits))
    return verdict, near
