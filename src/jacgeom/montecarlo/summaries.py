"""Mergeable summaries of Monte Carlo chunks: what a run at 1e9 samples keeps instead of its
samples.

:func:`summarise` turns a chunk's per-sample arrays (:func:`chunk_statistics`) into a
:class:`Summary` whose size does not grow with the number of samples, and
:meth:`Summary.merge` combines two of them:

- every integer statistic (rank, exact rank, and per layer the active counts, layer ranks
  and layer exact ranks) as exact counts per value, with the joint counts of the exact rank
  against the fewest active units of a sample, and the number of samples with a zeroed
  unit: merging adds integers, so it is exact and order-free;
- every real statistic (log_smax, log_smin, log_cond, frobenius2, log_volume, and the
  per-sample mean active fraction) as streaming moments (count, mean, M2 of the finite
  values, their min and max, counts of -inf, +inf and NaN; Chan et al.'s pairwise update)
  and a sparse histogram on a fixed grid: bin k holds the values with
  floor(asinh(x) / BIN_WIDTH) = k, so a bin spans about BIN_WIDTH in absolute terms near 0
  and a relative BIN_WIDTH for |x| >> 1, over the whole float64 range.

Floating-point moments depend on the order of merging: :func:`jacgeom.montecarlo.run`
merges in chunk order, so a result depends only on (spec, seed, chunk size, sampler
version). :meth:`Summary.summary` gives the keys of :meth:`Result.summary`: exactly the
same numbers for everything computed from counts, the same mean and standard deviation to
rounding, and quantiles good to the width of their bin (within it, the bin's midpoint on
the asinh scale, clipped to the observed min and max).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import theory
from .spec import Spec

__all__ = ["BIN_WIDTH", "Moments", "Summary", "summarise"]

# Width of a histogram bin on the asinh scale: quantiles good to 0.4% (relative) of |x| > 1.
BIN_WIDTH = 1.0 / 256
# Per-layer integer statistics, (N, L) each.
PER_LAYER = ("active_counts", "layer_ranks", "layer_exact_ranks")
# Per-sample integer statistics, (N,) each.
PER_SAMPLE = ("rank", "exact_rank")
# Real statistics histogrammed (active_fraction: the mean over layers of active / width).
REAL = ("log_smax", "log_smin", "log_cond", "frobenius2", "log_volume", "active_fraction")


@dataclasses.dataclass
class Moments:
    """Streaming moments and sparse histogram of one real statistic.

    Attributes
    ----------
    count : int
        Finite values.
    mean, m2 : float
        Their mean and sum of squared deviations (NaN when count is 0).
    minimum, maximum : float
        Their min and max (+inf / -inf when count is 0).
    neginf, posinf, nan : int
        Values that are -inf, +inf, NaN.
    bins : (k,) int64 array
        Occupied bins, increasing: floor(asinh(x) / BIN_WIDTH) for the finite values.
    counts : (k,) int64 array
        Finite values in each.
    """

    count: int
    mean: float
    m2: float
    minimum: float
    maximum: float
    neginf: int
    posinf: int
    nan: int
    bins: NDArray[np.int64]
    counts: NDArray[np.int64]

    @classmethod
    def of(cls, x: NDArray[Any]) -> Moments:
        """The moments and histogram of the values x (any shape)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        finite = x[np.isfinite(x)]
        bins, counts = np.unique(
            np.floor(np.arcsinh(finite) / BIN_WIDTH).astype(np.int64), return_counts=True
        )
        n = finite.size
        # Squares beyond float64 (frobenius2 of a huge Jacobian) make M2 inf, as numpy's std.
        with np.errstate(over="ignore"):
            mean = float(finite.mean()) if n else math.nan
            m2 = float(np.sum((finite - mean) ** 2)) if n else math.nan
        return cls(
            count=n,
            mean=mean,
            m2=m2,
            minimum=float(finite.min()) if n else math.inf,
            maximum=float(finite.max()) if n else -math.inf,
            neginf=int(np.count_nonzero(x == -np.inf)),
            posinf=int(np.count_nonzero(x == np.inf)),
            nan=int(np.count_nonzero(np.isnan(x))),
            bins=bins,
            counts=counts.astype(np.int64),
        )

    def merge(self, other: Moments) -> Moments:
        """Self's values followed by other's (Chan et al.'s update of mean and M2)."""
        n = self.count + other.count
        if self.count == 0 or other.count == 0:
            mean, m2 = (self.mean, self.m2) if other.count == 0 else (other.mean, other.m2)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                delta = other.mean - self.mean
                mean = self.mean + delta * other.count / n
                m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        bins = np.concatenate([self.bins, other.bins])
        union, inverse = np.unique(bins, return_inverse=True)
        counts = np.bincount(
            inverse, weights=np.concatenate([self.counts, other.counts]), minlength=union.size
        )
        return Moments(
            count=n,
            mean=mean,
            m2=m2,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
            neginf=self.neginf + other.neginf,
            posinf=self.posinf + other.posinf,
            nan=self.nan + other.nan,
            bins=union.astype(np.int64),
            counts=np.rint(counts).astype(np.int64),
        )

    @property
    def total(self) -> int:
        """All values, finite or not."""
        return self.count + self.neginf + self.posinf + self.nan

    def order_statistic(self, k: int) -> float:
        """The k-th smallest value (0-based; NaN sorts last, as in numpy.sort), good to its
        bin: the bin's midpoint on the asinh scale, clipped to [minimum, maximum]."""
        if k < self.neginf:
            return -math.inf
        k -= self.neginf
        if k < self.count:
            b = int(self.bins[np.searchsorted(np.cumsum(self.counts), k, side="right")])
            mid = math.sinh((b + 0.5) * BIN_WIDTH)
            return min(max(mid, self.minimum), self.maximum)
        k -= self.count
        return math.inf if k < self.posinf else math.nan

    def distribution(self) -> dict[str, float]:
        """The keys of result.distribution_summary: mean and std (ddof 0) of the finite
        values, their fraction, quantiles 5 to 95% and a 95% interval for the median."""
        return _distribution(self.total, self.order_statistic, self.count, self.mean, self.m2)


@dataclasses.dataclass
class Summary:
    """The mergeable summary of some chunks of one spec.

    Attributes
    ----------
    samples : int
    integers : dict of str to int64 array
        Counts per value: "rank" and "exact_rank" (p + 1,), p = min(n_0, n_L); the
        per-layer statistics (L, max(n_1..n_L) + 1); "exact_rank_by_min_active"
        (p + 1, max(n_1..n_L) + 1) the joint counts of exact rank and the fewest active
        units of a sample; "any_zeroed" (1,) the samples with some unit zeroed.
    reals : dict of str to Moments
    """

    samples: int
    integers: dict[str, NDArray[np.int64]]
    reals: dict[str, Moments]

    def merge(self, other: Summary) -> Summary:
        """Self's samples followed by other's."""
        if self.integers.keys() != other.integers.keys() or self.reals.keys() != other.reals.keys():
            raise ValueError("summaries of different statistics cannot be merged")
        return Summary(
            self.samples + other.samples,
            {k: v + other.integers[k] for k, v in self.integers.items()},
            {k: v.merge(other.reals[k]) for k, v in self.reals.items()},
        )

    def summary(self, spec: Spec, level: float = 0.95) -> dict[str, Any]:
        """The keys of Result.summary (``theory`` left out), from the counts and moments,
        with ``bin_width``: the histogram's bin width on the asinh scale."""
        w = spec.resolved_widths()
        p = min(w[0], w[-1])
        out: dict[str, Any] = {"samples": self.samples, "widths": list(w)}
        exact = self.integers["exact_rank"]
        out["p_exact_rank_deficient"] = _probability(int(exact[:p].sum()), self.samples, level)
        out["mean_exact_rank"] = _count_distribution(exact, 1.0)
        rank = self.integers["rank"]
        out["p_rank_deficient"] = _probability(int(rank[:p].sum()), self.samples, level)
        out["p_any_zeroed"] = _probability(int(self.integers["any_zeroed"][0]), self.samples, level)
        out["active_fraction"] = self.reals["active_fraction"].distribution()
        out["rank_fraction"] = _count_distribution(rank, 1.0 / p)
        for key in REAL[:-1]:
            if key in self.reals:
                out[key] = self.reals[key].distribution()
        out["bin_width"] = BIN_WIDTH
        return out


def summarise(spec: Spec, stats: dict[str, NDArray[Any]]) -> Summary:
    """The summary of one chunk's per-sample arrays (keys of :func:`chunk_statistics`)."""
    w = spec.resolved_widths()
    p, top = min(w[0], w[-1]), max(w[1:])
    n = int(stats["rank"].shape[0])
    integers: dict[str, NDArray[np.int64]] = {}
    for key in PER_SAMPLE:
        integers[key] = np.bincount(stats[key], minlength=p + 1).astype(np.int64)
    for key in PER_LAYER:
        if key in stats:
            a = stats[key]
            integers[key] = np.stack(
                [np.bincount(a[:, l], minlength=top + 1) for l in range(a.shape[1])]
            ).astype(np.int64)
    active = stats["active_counts"]
    fewest = active.min(axis=1) if active.shape[1] else np.full(n, top)
    joint = np.zeros((p + 1, top + 1), dtype=np.int64)
    np.add.at(joint, (stats["exact_rank"], fewest), 1)
    integers["exact_rank_by_min_active"] = joint
    integers["any_zeroed"] = np.array(
        [np.count_nonzero(np.any(active < np.array(w[1:]), axis=1))], dtype=np.int64
    )
    reals = {k: Moments.of(stats[k]) for k in REAL[:-1] if k in stats}
    reals["active_fraction"] = Moments.of((active / np.array(w[1:])).mean(axis=1))
    return Summary(n, integers, reals)


def _probability(k: int, n: int, level: float) -> dict[str, float]:
    lo, hi = theory.clopper_pearson(k, n, level)
    return {"p": k / n if n else math.nan, "lo": lo, "hi": hi, "count": k}


def _count_distribution(counts: NDArray[np.int64], scale: float) -> dict[str, float]:
    """distribution_summary of integer values v (counts[v] of each) times scale: exact."""
    n = int(counts.sum())
    values = np.arange(counts.size) * scale
    mean = float(np.dot(counts, values) / n) if n else math.nan
    m2 = float(np.dot(counts, (values - mean) ** 2)) if n else math.nan
    cum = np.cumsum(counts)

    def order_statistic(k: int) -> float:
        return float(values[np.searchsorted(cum, k, side="right")])

    return _distribution(n, order_statistic, n, mean, m2)


def _distribution(
    n: int, order_statistic: Any, finite: int, mean: float, m2: float
) -> dict[str, float]:
    # The order statistics of result.distribution_summary: inverted CDF for the quantiles, a
    # binomial (distribution-free) interval for the median.
    if n == 0:
        nan = math.nan
        keys = ("mean", "std", "finite_fraction", "q05", "q25", "median", "q75", "q95")
        return dict.fromkeys((*keys, "median_lo", "median_hi"), nan)
    q = [
        order_statistic(min(n - 1, math.ceil(f * n) - 1 if f * n >= 1 else 0))
        for f in (0.05, 0.25, 0.5, 0.75, 0.95)
    ]
    half = 1.96 * math.sqrt(n) / 2
    lo_i, hi_i = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return {
        "mean": float(mean) if finite else math.nan,
        "std": math.sqrt(m2 / finite) if finite > 1 else math.nan,
        "finite_fraction": finite / n,
        "q05": q[0],
        "q25": q[1],
        "median": q[2],
        "q75": q[3],
        "q95": q[4],
        "median_lo": order_statistic(lo_i),
        "median_hi": order_statistic(hi_i),
    }
