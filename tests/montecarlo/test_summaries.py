"""Mergeable summaries: counts exact, moments to rounding, quantiles to their bin, against
the per-sample summary of runs small enough to keep both."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import reduce
from math import comb
from typing import Any

import boost_histogram as bh
import numpy as np
import pytest

from jacgeom.montecarlo import Spec, chunk_statistics, run
from jacgeom.montecarlo.result import distribution_summary
from jacgeom.montecarlo.summaries import BIN_WIDTH, Moments, Summary, summarise

from .helpers import per_sample_summary

EXACT = ("p_exact_rank_deficient", "p_rank_deficient", "p_any_zeroed")


def assert_within_a_bin(got: float, want: float, key: str) -> None:
    if math.isnan(want) or math.isinf(want):
        assert got == want or (math.isnan(got) and math.isnan(want)), key
    else:
        # Both in the same bin of the asinh grid: at most one bin width apart there.
        assert abs(math.asinh(got) - math.asinh(want)) <= BIN_WIDTH * (1 + 1e-9), (key, got, want)


def assert_distribution_close(got: dict[str, float], want: dict[str, float], key: str) -> None:
    assert got.keys() == want.keys()
    for k in ("mean", "std", "finite_fraction"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12, err_msg=f"{key} {k}")
    for k in ("q05", "q25", "median", "q75", "q95", "median_lo", "median_hi"):
        assert_within_a_bin(got[k], want[k], f"{key} {k}")


@pytest.mark.parametrize(
    "kw",
    [
        {"widths": (6, 6)},
        {"widths": (5, 7, 4), "activation": "tanh", "sigma_b": 0.3},
        {"width": 6, "depth": 3, "layer_ranks": False},
        {"width": 5, "depth": 2, "spectra": False},
        {"width": 5, "depth": 2, "residual": True, "activation": "relu"},
        {"widths": (4, 4), "layer": "kernel"},
        {"widths": (3, 3), "activation": "identity"},
    ],
)
def test_merged_summaries_agree_with_the_per_sample_summary(kw: dict[str, Any]) -> None:
    spec = Spec(**kw, samples=700, chunk_size=200, seed=4)
    res = run(spec, progress=False, workers=1, records=True)
    per_sample = per_sample_summary(res)
    chunks = [summarise(spec, chunk_statistics(spec, i)) for i in range(spec.n_chunks)]
    merged = reduce(Summary.merge, chunks).summary(spec)
    assert merged["samples"] == 700 and merged["bin_width"] == BIN_WIDTH
    # What run returns is the summary of the chunks merged in order.
    from_run = res.summary()
    assert from_run.pop("theory") == res.theory()
    assert from_run == merged
    for key in EXACT:
        assert merged[key] == per_sample[key], key
    # From counts: the same numbers up to the summation order of mean and std.
    for key in ("rank_fraction", "mean_exact_rank"):
        assert_distribution_close(merged[key], per_sample[key], key)
    for key in ("active_fraction", "log_smax", "log_smin", "log_cond", "frobenius2", "log_volume"):
        assert (key in merged) == (key in per_sample), key
        if key in merged:
            assert_distribution_close(merged[key], per_sample[key], key)


def test_integer_counts_are_exact_whatever_the_grouping() -> None:
    spec = Spec(widths=(6, 6, 6), samples=600, chunk_size=100, seed=8)
    chunks = [summarise(spec, chunk_statistics(spec, i)) for i in range(spec.n_chunks)]
    left = reduce(Summary.merge, chunks)
    paired = reduce(
        Summary.merge, [a.merge(b) for a, b in zip(chunks[::2], chunks[1::2], strict=True)]
    )
    data = run(spec, progress=False, records=True).data
    for k, v in left.integers.items():
        np.testing.assert_array_equal(v, paired.integers[k], err_msg=k)
    np.testing.assert_array_equal(left.integers["rank"], np.bincount(data["rank"], minlength=7))
    for l in range(2):
        np.testing.assert_array_equal(
            left.integers["active_counts"][l], np.bincount(data["active_counts"][:, l], minlength=7)
        )
    joint = np.zeros((7, 7), dtype=np.int64)
    np.add.at(joint, (data["exact_rank"], data["active_counts"].min(axis=1)), 1)
    np.testing.assert_array_equal(left.integers["exact_rank_by_min_active"], joint)
    assert left.reals["log_cond"].count == paired.reals["log_cond"].count


def test_moments_of_awkward_values() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.standard_normal(500) * 1e3, [-np.inf, -np.inf, np.inf, np.nan], [1e150, -1e-300]]
    )
    rng.shuffle(x)
    parts = np.array_split(x, 7)
    m = reduce(Moments.merge, [Moments.of(p) for p in parts])
    assert (m.count, m.neginf, m.posinf, m.nan, m.total) == (502, 2, 1, 1, 506)
    assert m.minimum == np.nanmin(x[np.isfinite(x)]) and m.maximum == 1e150
    finite = x[np.isfinite(x)]
    np.testing.assert_allclose(m.mean, finite.mean(), rtol=1e-12)
    np.testing.assert_allclose(math.sqrt(m.m2 / m.count), finite.std(), rtol=1e-12)
    want = distribution_summary(x)
    got = m.distribution()
    assert_distribution_close(got, want, "x")
    srt = np.sort(x)
    for k in (0, 1, 2, 3, 250, 503, 504, 505):
        assert_within_a_bin(m.order_statistic(k), float(srt[k]), str(k))


def test_empty_and_mismatched() -> None:
    empty = Moments.of(np.array([]))
    assert empty.total == 0 and math.isnan(empty.distribution()["median"])
    one = Moments.of(np.array([2.0]))
    assert empty.merge(one).mean == 2.0 and one.merge(empty).count == 1
    a = summarise(
        Spec(widths=(3, 3), samples=5), chunk_statistics(Spec(widths=(3, 3), samples=5), 0)
    )
    lean = Spec(widths=(3, 3), samples=5, spectra=False)
    b = summarise(lean, chunk_statistics(lean, 0))
    with pytest.raises(ValueError, match="summaries of different statistics cannot be merged"):
        a.merge(b)


def _awkward_values(seed: int) -> np.ndarray:
    """Values on, beside and between the grid's bin edges sinh(k BIN_WIDTH), over the
    float64 range, with zeros of both signs and the three non-finite values."""
    rng = np.random.default_rng(seed)
    edges = np.sinh(np.arange(-600, 600) * BIN_WIDTH)
    x = np.concatenate(
        [
            edges,
            np.nextafter(edges, np.inf),
            np.nextafter(edges, -np.inf),
            rng.standard_normal(2000) * 10.0 ** rng.integers(-300, 300, 2000),
            [0.0, -0.0, 5e-324, -5e-324, 1.7e308, -1.7e308, np.inf, -np.inf, np.nan],
        ]
    )
    rng.shuffle(x)
    return x


def _filled(values: np.ndarray) -> bh.Histogram:
    """What the summary held before it counted with bincount: a growing Integer axis of
    grid indices filled value by value."""
    finite = values[np.isfinite(values)]
    k = np.floor(np.arcsinh(finite) / BIN_WIDTH).astype(np.int64)
    hist = bh.Histogram(
        bh.axis.Integer(
            int(k.min()), int(k.max()) + 1, underflow=False, overflow=False, growth=True
        ),
        storage=bh.storage.Int64(),
    )
    hist.fill(k)
    return hist


def _assert_same_histogram(got: bh.Histogram, want: bh.Histogram) -> None:
    np.testing.assert_array_equal(got.axes[0].edges, want.axes[0].edges)
    np.testing.assert_array_equal(got.values(), want.values())
    assert got.values().dtype == want.values().dtype


def test_grid_counts_are_boost_histogram_fills() -> None:
    # Counted in one pass by bincount, they are the histogram boost-histogram fills value by
    # value, bin for bin; merged, the sum of two growing axes, whatever the ranges' overlap.
    x = _awkward_values(3)
    m = Moments.of(x)
    _assert_same_histogram(m.histogram, _filled(x))
    assert (m.count, m.neginf, m.posinf, m.nan) == (x.size - 3, 1, 1, 1)
    assert m.value_histogram().values().sum() == m.count
    parts = [np.sort(x[np.isfinite(x)])[:1500], x[:2000], np.array([np.nan]), x[-900:]]
    merged = Moments.of(parts[0])
    want = _filled(parts[0])
    for part in parts[1:]:
        merged = merged.merge(Moments.of(part))
        if np.isfinite(part).any():
            want = want + _filled(part)
    _assert_same_histogram(merged.histogram, want)
    # An empty side: the other's range, not stretched to the empty histogram's bin at 0.
    far = Moments.of(np.array([1e100, 2e100]))
    empty = Moments.of(np.array([np.nan]))
    for m2 in (far.merge(empty), empty.merge(far)):
        _assert_same_histogram(m2.histogram, _filled(np.array([1e100, 2e100])))
    np.testing.assert_array_equal(empty.histogram.axes[0].edges, [0.0, 1.0])


def test_moments_survive_their_arrays() -> None:
    m = reduce(Moments.merge, [Moments.of(p) for p in np.array_split(_awkward_values(4), 5)])
    back = Moments.from_sparse(*m.to_arrays().values())
    assert (back.first_bin, back.count, back.total) == (m.first_bin, m.count, m.total)
    np.testing.assert_array_equal(back.bin_counts, m.bin_counts)
    assert [back.mean, back.m2, back.minimum, back.maximum] == [m.mean, m.m2, m.minimum, m.maximum]
    bins, counts = m.sparse()
    assert (
        counts.min() > 0
        and bins[0] == m.first_bin
        and bins[-1] == m.first_bin + m.bin_counts.size - 1
    )
    empty = Moments.from_sparse(*Moments.of(np.array([-np.inf])).to_arrays().values())
    assert empty.total == 1 and empty.neginf == 1 and empty.bin_counts.tolist() == [0]


def _median_ranks(n: int, level: float) -> tuple[int, int]:
    """The 0-based ranks of the distribution-free median interval, by direct search: the
    largest lo with P(Binomial(n, 1/2) <= lo) <= (1 - level) / 2, hi = n - 1 - lo."""
    cdf, lo = Fraction(0), -1
    for j in range(n):
        cdf += Fraction(comb(n, j), 2**n)
        if cdf > Fraction(1 - level) / 2:
            break
        lo = j
    return lo, n - 1 - lo


def test_order_statistic_bounds_hold_the_value() -> None:
    # Values on, beside and between the bin edges over the whole float64 range: the bounds
    # of the k-th order statistic (its bin's outer edges, clipped to min and max) hold it.
    x = _awkward_values(5)
    m = Moments.of(x)
    srt = np.sort(x)
    ks = np.unique(np.concatenate([np.arange(0, x.size, 11), [0, 1, x.size - 2, x.size - 1]]))
    for k in ks:
        lo, hi = m.order_statistic_bounds(int(k))
        if np.isnan(srt[k]):
            assert math.isnan(lo) and math.isnan(hi)
        else:
            assert lo <= srt[k] <= hi, (k, lo, srt[k], hi)
            assert lo <= m.order_statistic(int(k)) <= hi


def test_median_interval_holds_the_order_statistics_where_bins_round() -> None:
    # 600 values in the upper part of one bin and 400 five bins above: the median and the
    # upper end of its interval (rank 531 of 1000 at 95%) fall in the first bin, where the
    # bin's midpoint lies below the values. The interval was [midpoint, midpoint], the point
    # on its edge and the true upper order statistic outside it.
    k = 17000  # bin of values near sinh(66.4)
    rng = np.random.default_rng(1)
    t = np.concatenate([k + rng.uniform(0.6, 0.99, 600), k + 5 + rng.uniform(0, 1, 400)])
    x = np.sinh(t * BIN_WIDTH)
    got = Moments.of(x).distribution()
    srt = np.sort(x)
    lo, hi = _median_ranks(x.size, 0.95)
    assert srt[lo] < srt[hi] < math.sinh((k + 1) * BIN_WIDTH)  # one bin holds both
    assert got["median_lo"] <= srt[lo] and srt[hi] <= got["median_hi"]
    assert got["median_lo"] <= got["median"] <= got["median_hi"]
    assert got["median_hi"] > got["median"]  # the point is not on the upper edge


@pytest.mark.parametrize("level", [0.5, 0.95, 0.999])
def test_median_intervals_follow_the_level(level: float) -> None:
    # summary(level=...) gave the 95% median interval whatever the level. Per-sample
    # records give the exact order statistics; the merged summary's interval must contain
    # them (its ends widened to their bins), the per-sample summary must be them.
    res = run(
        Spec(width=8, depth=2, activation="tanh", samples=2000, seed=0),
        progress=False,
        workers=1,
        records=True,
    )
    merged = res.summary(level=level)
    lo, hi = _median_ranks(2000, level)
    data = res.data
    values = {k: data[k] for k in ("log_smax", "log_smin", "log_cond", "frobenius2")}
    values["active_fraction"] = (data["active_counts"] / 8).mean(axis=1)
    rounding_mattered = False
    for key, x in values.items():
        srt = np.sort(x)
        exact = distribution_summary(x, level)
        assert (exact["median_lo"], exact["median_hi"]) == (srt[lo], srt[hi]), key
        got = merged[key]  # type: ignore[literal-required]
        assert got["median_lo"] <= srt[lo] and srt[hi] <= got["median_hi"], key
        assert got["median_lo"] <= got["median"] <= got["median_hi"], key
        m = res.merged.reals[key]
        rounding_mattered |= m.order_statistic(lo) > srt[lo] or m.order_statistic(hi) < srt[hi]
    assert rounding_mattered  # bin midpoints alone would have left some of them outside
    # integer statistics: exact counts, so the exact order statistics themselves
    ranks = np.sort(data["rank"] / 8)
    assert (merged["rank_fraction"]["median_lo"], merged["rank_fraction"]["median_hi"]) == (
        ranks[lo],
        ranks[hi],
    )


def test_too_few_samples_for_the_level_give_an_unbounded_interval() -> None:
    # Five samples cover their median with probability 1 - 2^-4 < 0.95 at best: no pair of
    # order statistics is a 95% interval.
    x = np.arange(5.0)
    assert (distribution_summary(x)["median_lo"], distribution_summary(x)["median_hi"]) == (
        -math.inf,
        math.inf,
    )
    assert (
        distribution_summary(x, 0.9)["median_lo"],
        distribution_summary(x, 0.9)["median_hi"],
    ) == (0.0, 4.0)
    got = Moments.of(x).distribution(0.95)
    assert (got["median_lo"], got["median_hi"]) == (-math.inf, math.inf)
