"""Mergeable summaries of Monte Carlo chunks: what a run at 1e9 samples keeps instead of its
samples.

:func:`summarise` turns a block of per-sample arrays (:func:`chunk_statistics`) into a
:class:`Summary` whose size does not grow with the number of samples, and
:meth:`Summary.merge` combines two of them:

- every integer statistic (rank, exact rank, and per layer the active counts, numerical
  layer ranks and exact ranks of the partial products) as exact counts per value, with the
  joint counts of the exact rank against the fewest active units of a sample, and the
  number of samples with a zeroed unit: merging adds integers, so it is exact and
  order-free;
- every real statistic (log_smax, log_smin, log_cond, frobenius2, log_volume, log_gain and the
  per-sample mean active fraction) as streaming moments (count, mean, M2 of the finite
  values, their min and max, counts of -inf, +inf and NaN; Chan et al.'s pairwise update)
  and a histogram on a fixed grid: bin k holds the values with
  floor(asinh(x) / BIN_WIDTH) = k, so a bin spans about BIN_WIDTH in absolute terms near 0
  and a relative BIN_WIDTH for |x| >> 1, over the whole float64 range. Only the bins
  between the smallest and largest value seen are kept, as an int64 array of counts and the
  index of its first bin (counted by numpy's bincount; a merge adds two such arrays over
  the union of their ranges, as boost-histogram's growing axes do);
  :attr:`Moments.histogram` gives them as a ``boost_histogram.Histogram`` with a growing
  ``Integer`` axis. Building one costs about 20 us, as much as summarising a statistic of
  a thousand samples, so the hot path of a run (summarise, to_arrays, from_arrays, merge)
  builds none.

Floating-point moments depend on the order of merging: :func:`jacgeom.montecarlo.run`
merges in chunk order (and within a chunk in block order), so a result depends only on
(spec, seed, chunk size, sampler version). :meth:`Summary.summary` gives the keys of
:meth:`Result.summary`: exactly the same numbers as the per-sample arrays give for
everything computed from counts, the same mean and standard deviation to rounding, and
quantiles good to the width of their bin (within it, the bin's midpoint on the asinh
scale, clipped to the observed min and max), which it states as ``bin_width``, and the
median's interval widened to the outer edges of its ends' bins, so that it contains the
interval the exact order statistics give.

:meth:`Summary.to_arrays` / :meth:`Summary.from_arrays`: the summary as a flat dict of
numpy arrays (sparse histograms), what a checkpoint file and a remote worker carry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import boost_histogram as bh
import numpy as np
from numpy.typing import NDArray

from .. import theory
from .spec import Spec
from .statistics import SPECTRA

__all__ = ["BIN_WIDTH", "Moments", "Summary", "summarise"]

# Width of a histogram bin on the asinh scale: quantiles good to 0.4% (relative) of |x| > 1.
BIN_WIDTH = 1.0 / 256
# Per-layer integer statistics, (N, L) each.
PER_LAYER = ("active_counts", "layer_numerical_ranks", "layer_exact_ranks")
# Per-sample integer statistics, (N,) each.
PER_SAMPLE = ("rank", "exact_rank")
# Real statistics histogrammed (active_fraction: the mean over layers of active / width).
REAL = (*SPECTRA, "active_fraction")


def _grid_histogram(lo: int = 0, hi: int = 1) -> bh.Histogram[Any]:
    """An empty histogram of grid indices k (bins lo .. hi - 1), growing as it is filled."""
    return bh.Histogram(
        bh.axis.Integer(lo, hi, underflow=False, overflow=False, growth=True),
        storage=bh.storage.Int64(),
    )


def _grid_index(x: NDArray[np.float64]) -> NDArray[np.int64]:
    """floor(asinh(x) / BIN_WIDTH) of finite x: the grid bin of each value."""
    # In place on one temporary; dividing by BIN_WIDTH = 2^-8 is multiplying by 2^8, exactly.
    t = np.arcsinh(x)
    t *= 1.0 / BIN_WIDTH
    return np.floor(t, out=t).astype(np.int64)


def _grid_counts(x: NDArray[np.float64]) -> tuple[int, NDArray[np.int64]]:
    """(first, counts): the counts of finite x (at least one value) per grid index first,
    first + 1, ... up to the largest occupied one."""
    # numpy's bincount: about a third of the time of filling a histogram value by value.
    k = _grid_index(x)
    first = int(k.min())
    k -= first
    return first, np.bincount(k)


def _add_counts(
    first: int, counts: NDArray[np.int64], other_first: int, other: NDArray[np.int64]
) -> tuple[int, NDArray[np.int64]]:
    """Two grid count arrays added over the union of their ranges (what boost-histogram's
    sum of two growing Integer axes gives), in a few microseconds against its ~20."""
    lo = min(first, other_first)
    out = np.zeros(max(first + counts.size, other_first + other.size) - lo, dtype=np.int64)
    out[first - lo : first - lo + counts.size] = counts
    out[other_first - lo : other_first - lo + other.size] += other
    return lo, out


@dataclasses.dataclass
class Moments:
    """Streaming moments and histogram of one real statistic.

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
    first_bin : int
        The grid index of ``bin_counts[0]``.
    bin_counts : (k,) int64 ndarray
        Counts of the finite values per grid index floor(asinh(x) / BIN_WIDTH) = first_bin,
        first_bin + 1, ..., over the occupied range (one empty bin at 0 when count is 0);
        :attr:`histogram` gives them as a boost-histogram, :meth:`value_histogram` on the
        values' own scale.
    """

    count: int
    mean: float
    m2: float
    minimum: float
    maximum: float
    neginf: int
    posinf: int
    nan: int
    first_bin: int
    bin_counts: NDArray[np.int64]

    @classmethod
    def of(cls, x: NDArray[Any]) -> Moments:
        """The moments and histogram of the values x (any shape)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size and np.isfinite(minimum := x.min()) and np.isfinite(maximum := x.max()):
            finite, neginf, posinf, nan = x, 0, 0, 0  # (min and max are NaN if any value is)
        else:
            is_finite = np.isfinite(x)
            n = int(np.count_nonzero(is_finite))
            # Every value not finite is -inf, +inf or NaN.
            neginf = int(np.count_nonzero(x == -np.inf)) if n < x.size else 0
            posinf = int(np.count_nonzero(x == np.inf)) if n < x.size else 0
            nan = x.size - n - neginf - posinf
            if n == 0:
                empty = np.zeros(1, dtype=np.int64)
                return cls(
                    0, math.nan, math.nan, math.inf, -math.inf, neginf, posinf, nan, 0, empty
                )
            finite = x[is_finite]
            minimum, maximum = finite.min(), finite.max()
        # Squares beyond float64 (frobenius2 of a huge Jacobian) make M2 inf, as numpy's std.
        with np.errstate(over="ignore"):
            mean = float(finite.mean())
            m2 = float(np.sum((finite - mean) ** 2))
        first, counts = _grid_counts(finite)
        return cls(
            count=finite.size,
            mean=mean,
            m2=m2,
            minimum=float(minimum),
            maximum=float(maximum),
            neginf=neginf,
            posinf=posinf,
            nan=nan,
            first_bin=first,
            bin_counts=counts,
        )

    def merge(self, other: Moments) -> Moments:
        """Self's values followed by other's (Chan et al.'s update of mean and M2)."""
        n = self.count + other.count
        if self.count == 0 or other.count == 0:
            mean, m2 = (self.mean, self.m2) if other.count == 0 else (other.mean, other.m2)
            # An empty histogram's bin at 0 would only stretch the other's.
            kept = self if other.count == 0 else other
            first, counts = kept.first_bin, kept.bin_counts.copy()
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                delta = other.mean - self.mean
                mean = self.mean + delta * other.count / n
                m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
            first, counts = _add_counts(
                self.first_bin, self.bin_counts, other.first_bin, other.bin_counts
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
            first_bin=first,
            bin_counts=counts,
        )

    @property
    def total(self) -> int:
        """All values, finite or not."""
        return self.count + self.neginf + self.posinf + self.nan

    @property
    def histogram(self) -> bh.Histogram[Any]:
        """The bin counts as a ``boost_histogram.Histogram`` of grid indices (a growing
        ``Integer`` axis over the occupied range, Int64 storage; a new one at each call)."""
        hist = _grid_histogram(self.first_bin, self.first_bin + self.bin_counts.size)
        hist.view()[:] = self.bin_counts
        return hist

    def sparse(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(bins, counts): the occupied grid indices, increasing, and their counts."""
        occupied = np.flatnonzero(self.bin_counts)
        return occupied + self.first_bin, self.bin_counts[occupied]

    @classmethod
    def from_sparse(
        cls,
        ints: NDArray[np.int64],
        floats: NDArray[np.float64],
        bins: NDArray[np.int64],
        counts: NDArray[np.int64],
    ) -> Moments:
        """The moments of :meth:`to_arrays`' arrays; ValueError if they do not agree."""
        count, neginf, posinf, nan = (int(v) for v in ints)
        if min(count, neginf, posinf, nan) < 0 or bins.shape != counts.shape or bins.ndim != 1:
            raise ValueError("moments with negative counts or mismatched histogram arrays")
        if int(counts.sum()) != count or (counts.size and (np.diff(bins) <= 0).any()):
            raise ValueError("a histogram whose counts do not add up to its finite values")
        first = int(bins[0]) if bins.size else 0
        dense = np.zeros(int(bins[-1]) - first + 1 if bins.size else 1, dtype=np.int64)
        dense[bins - first] = counts
        mean, m2, minimum, maximum = (float(v) for v in floats)
        return cls(count, mean, m2, minimum, maximum, neginf, posinf, nan, first, dense)

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """ints (count, neginf, posinf, nan), floats (mean, m2, min, max), bins, counts."""
        bins, counts = self.sparse()
        return {
            "ints": np.array([self.count, self.neginf, self.posinf, self.nan], dtype=np.int64),
            "floats": np.array([self.mean, self.m2, self.minimum, self.maximum]),
            "bins": bins,
            "counts": counts,
        }

    def value_histogram(self) -> bh.Histogram[Any]:
        """The histogram of the finite values on their own scale: a ``Variable`` axis whose
        edges are sinh(k BIN_WIDTH) over the occupied grid range."""
        edges = np.arange(self.first_bin, self.first_bin + self.bin_counts.size + 1.0)
        out = bh.Histogram(
            bh.axis.Variable(np.sinh(edges * BIN_WIDTH), underflow=False, overflow=False),
            storage=bh.storage.Int64(),
        )
        out.view()[:] = self.bin_counts
        return out

    def order_statistic(self, k: int) -> float:
        """The k-th smallest value (0-based; NaN sorts last, as in numpy.sort), good to its
        bin: the bin's midpoint on the asinh scale, clipped to [minimum, maximum]."""
        if k < self.neginf:
            return -math.inf
        k -= self.neginf
        if k < self.count:
            i = int(np.searchsorted(np.cumsum(self.bin_counts), k, side="right"))
            mid = math.sinh((self.first_bin + i + 0.5) * BIN_WIDTH)
            return min(max(mid, self.minimum), self.maximum)
        k -= self.count
        return math.inf if k < self.posinf else math.nan

    def order_statistic_bounds(self, k: int) -> tuple[float, float]:
        """(lo, hi) with lo <= the k-th smallest value <= hi (0-based, as
        :meth:`order_statistic`): the outer edges of its bin, clipped to [minimum,
        maximum]; the value itself where it is not finite.

        The edges are sinh(j BIN_WIDTH) widened by a few units of rounding in asinh and
        sinh, so that a value that the grid placed in bin j (floor(asinh(x) / BIN_WIDTH),
        rounded) lies between them."""
        if k < self.neginf:
            return -math.inf, -math.inf
        k -= self.neginf
        if k < self.count:
            i = int(np.searchsorted(np.cumsum(self.bin_counts), k, side="right"))
            t_lo, t_hi = (self.first_bin + i) * BIN_WIDTH, (self.first_bin + i + 1) * BIN_WIDTH
            lo = _outward(_sinh(t_lo - _ASINH_SLACK * max(1.0, abs(t_lo))), -math.inf)
            hi = _outward(_sinh(t_hi + _ASINH_SLACK * max(1.0, abs(t_hi))), math.inf)
            return max(lo, self.minimum), min(hi, self.maximum)
        k -= self.count
        value = math.inf if k < self.posinf else math.nan
        return value, value

    def distribution(self, level: float = 0.95) -> dict[str, float]:
        """The keys of result.distribution_summary: mean and std (ddof 0) of the finite
        values, their fraction, quantiles 5 to 95% (bin midpoints, good to their bin) and
        an interval for the median at ``level`` whose bounds are widened to the outer edges
        of their bins, so that it contains the interval of the exact order statistics."""
        return _distribution(
            self.total,
            self.order_statistic,
            self.order_statistic_bounds,
            self.count,
            self.mean,
            self.m2,
            level,
        )


# Slack of a bin edge on the asinh scale, relative to max(1, |edge|): numpy's arcsinh and
# math.sinh are each good to a few units in the last place, so a value whose computed
# floor(asinh(x) / BIN_WIDTH) is j can sit that far outside sinh(j BIN_WIDTH).
_ASINH_SLACK = 8 * float(np.finfo(np.float64).eps)


def _sinh(t: float) -> float:
    """sinh(t), +-inf beyond the float64 range (the top bin's outer edge is beyond it)."""
    try:
        return math.sinh(t)
    except OverflowError:
        return math.copysign(math.inf, t)


def _outward(x: float, toward: float) -> float:
    """x moved four floats toward ``toward`` (-inf or inf): the rounding of sinh."""
    for _ in range(4):
        x = math.nextafter(x, toward)
    return x


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

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The summary as flat numpy arrays (histograms sparse): ``samples``,
        ``int.<key>`` per integer statistic, ``real.<key>.<part>`` per real statistic (parts
        of :meth:`Moments.to_arrays`). What checkpoint files and remote workers carry."""
        out: dict[str, NDArray[Any]] = {"samples": np.array([self.samples], dtype=np.int64)}
        for k, v in self.integers.items():
            out[f"int.{k}"] = np.ascontiguousarray(v, dtype=np.int64)
        for k, m in self.reals.items():
            for part, a in m.to_arrays().items():
                out[f"real.{k}.{part}"] = a
        return out

    @classmethod
    def from_arrays(cls, spec: Spec, arrays: dict[str, NDArray[Any]]) -> Summary:
        """The summary of :meth:`to_arrays`' arrays for ``spec``; ValueError naming what does
        not fit the spec (a key missing or extra, a shape, counts that do not add up)."""
        want = summary_shapes(spec)
        if set(arrays) - {"samples"} and {_owner(k) for k in arrays if k != "samples"} != set(want):
            got = sorted({_owner(k) for k in arrays if k != "samples"})
            raise ValueError(f"it summarises {got}, expected {sorted(want)}")
        try:
            samples = int(arrays["samples"][0])
            integers = {}
            reals = {}
            for key, shape in want.items():
                if shape is None:
                    parts = [
                        arrays[f"real.{key}.{p}"] for p in ("ints", "floats", "bins", "counts")
                    ]
                    if parts[0].shape != (4,) or parts[1].shape != (4,):
                        raise ValueError(f"the moments of {key!r} have the wrong shape")
                    reals[key] = Moments.from_sparse(*parts)
                    if reals[key].total != samples:
                        raise ValueError(f"{key!r} counts {reals[key].total} values")
                else:
                    a = arrays[f"int.{key}"]
                    if a.shape != shape:
                        raise ValueError(f"{key!r} has shape {a.shape}, expected {shape}")
                    integers[key] = a.astype(np.int64)
        except KeyError as exc:
            raise ValueError(f"array {exc} is missing") from None
        for key in ("rank", "exact_rank", "exact_rank_by_min_active"):
            if int(integers[key].sum()) != samples:
                raise ValueError(f"{key!r} counts {int(integers[key].sum())} of {samples} samples")
        return cls(samples, integers, reals)

    def summary(self, spec: Spec, level: float = 0.95) -> dict[str, Any]:
        """The keys of Result.summary (``theory`` left out; listed in its docstring, among
        them ``p_gain_zero`` = P(J e_1 = 0) when log_gain is recorded), from the counts and
        moments, with ``bin_width``: the histogram's bin width on the asinh scale.
        ``level``: the confidence level of the probabilities' and medians' intervals."""
        w = spec.resolved_widths()
        p = min(w[0], w[-1])
        out: dict[str, Any] = {"samples": self.samples, "widths": list(w)}
        exact = self.integers["exact_rank"]
        out["p_exact_rank_deficient"] = _probability(int(exact[:p].sum()), self.samples, level)
        out["mean_exact_rank"] = _count_distribution(exact, 1.0, level)
        rank = self.integers["rank"]
        out["p_rank_deficient"] = _probability(int(rank[:p].sum()), self.samples, level)
        out["p_any_zeroed"] = _probability(int(self.integers["any_zeroed"][0]), self.samples, level)
        out["active_fraction"] = self.reals["active_fraction"].distribution(level)
        out["rank_fraction"] = _count_distribution(rank, 1.0 / p, level)
        for key in REAL[:-1]:
            if key in self.reals:
                out[key] = self.reals[key].distribution(level)
        if "log_gain" in self.reals:  # J e_1 = 0 exactly
            zero = self.reals["log_gain"].neginf
            out["p_gain_zero"] = _probability(int(zero), self.samples, level)
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
    joint = np.bincount(stats["exact_rank"] * (top + 1) + fewest, minlength=(p + 1) * (top + 1))
    integers["exact_rank_by_min_active"] = joint.reshape(p + 1, top + 1).astype(np.int64)
    integers["any_zeroed"] = np.array(
        [np.count_nonzero(np.any(active < np.array(w[1:]), axis=1))], dtype=np.int64
    )
    reals = {k: Moments.of(stats[k]) for k in REAL[:-1] if k in stats}
    reals["active_fraction"] = Moments.of((active / np.array(w[1:])).mean(axis=1))
    return Summary(n, integers, reals)


def summary_shapes(spec: Spec) -> dict[str, tuple[int, ...] | None]:
    """The statistics a summary of ``spec`` holds: integer ones with their count table's
    shape, real ones with None (their histograms grow)."""
    w = spec.resolved_widths()
    p, top, L = min(w[0], w[-1]), max(w[1:]), len(w) - 1
    out: dict[str, tuple[int, ...] | None] = {k: (p + 1,) for k in PER_SAMPLE}
    layers = PER_LAYER if spec.layer_ranks else PER_LAYER[:1]
    out.update({k: (L, top + 1) for k in layers})
    out["exact_rank_by_min_active"] = (p + 1, top + 1)
    out["any_zeroed"] = (1,)
    reals = REAL if spec.spectra else REAL[-1:]
    out.update(dict.fromkeys(reals))
    return out


def _owner(name: str) -> str:
    # "int.rank" -> "rank", "real.log_cond.bins" -> "log_cond"
    return name.split(".")[1]


def _probability(k: int, n: int, level: float) -> dict[str, float]:
    lo, hi = theory.clopper_pearson(k, n, level)
    return {"p": k / n if n else math.nan, "lo": lo, "hi": hi, "count": k}


def _count_distribution(
    counts: NDArray[np.int64], scale: float, level: float = 0.95
) -> dict[str, float]:
    """distribution_summary of integer values v (counts[v] of each) times scale: exact."""
    n = int(counts.sum())
    values = np.arange(counts.size) * scale
    mean = float(np.dot(counts, values) / n) if n else math.nan
    m2 = float(np.dot(counts, (values - mean) ** 2)) if n else math.nan
    cum = np.cumsum(counts)

    def order_statistic(k: int) -> float:
        return float(values[np.searchsorted(cum, k, side="right")])

    def bounds(k: int) -> tuple[float, float]:
        value = order_statistic(k)
        return value, value

    return _distribution(n, order_statistic, bounds, n, mean, m2, level)


def _distribution(
    n: int,
    order_statistic: Callable[[int], float],
    bounds: Callable[[int], tuple[float, float]],
    finite: int,
    mean: float,
    m2: float,
    level: float,
) -> dict[str, float]:
    # The order statistics of result.distribution_summary: inverted CDF for the quantiles, a
    # binomial (distribution-free) interval for the median at ``level``, its ends from
    # ``bounds`` (lo of the lower, hi of the upper order statistic).
    if n == 0:
        nan = math.nan
        keys = ("mean", "std", "finite_fraction", "q05", "q25", "median", "q75", "q95")
        return dict.fromkeys((*keys, "median_lo", "median_hi"), nan)
    q = [
        order_statistic(min(n - 1, math.ceil(f * n) - 1 if f * n >= 1 else 0))
        for f in (0.05, 0.25, 0.5, 0.75, 0.95)
    ]
    lo_i, hi_i = theory.median_order_statistics(n, level)
    # Too few samples for the level: no pair of order statistics covers the median so often.
    median_lo = bounds(lo_i)[0] if lo_i >= 0 else -math.inf
    median_hi = bounds(hi_i)[1] if hi_i < n else math.inf
    return {
        "mean": float(mean) if finite else math.nan,
        "std": math.sqrt(m2 / finite) if finite > 1 else math.nan,
        "finite_fraction": finite / n,
        "q05": q[0],
        "q25": q[1],
        "median": q[2],
        "q75": q[3],
        "q95": q[4],
        "median_lo": median_lo,
        "median_hi": median_hi,
    }
