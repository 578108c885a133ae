"""Helpers shared by the Monte Carlo tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from jacgeom import theory
from jacgeom.montecarlo import Result
from jacgeom.montecarlo.checkpoint import arrays_checksum
from jacgeom.montecarlo.result import distribution_summary
from jacgeom.montecarlo.statistics import SPECTRA

# Fixed seeds; intervals from the sample count at this level, not hand-picked tolerances.
LEVEL = 1 - 1e-4


def assert_same(a: Result, b: Result) -> None:
    """The two results hold bit-identical summaries (every count, moment and histogram bin)
    and, where both kept records, the same keys and bit-identical per-sample arrays."""
    assert a.samples == b.samples
    assert arrays_checksum(a.merged.to_arrays()) == arrays_checksum(b.merged.to_arrays())
    if a.has_records and b.has_records:
        da, db = a.data, b.data
        assert da.keys() == db.keys()
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def per_sample_summary(res: Result, level: float = 0.95) -> dict[str, Any]:
    """Result.summary computed from the per-sample records (what it was before summaries):
    the independent check of the merged summary."""
    data, spec = res.data, res.spec
    w = spec.resolved_widths()
    p = min(w[0], w[-1])

    def probability(event: NDArray[np.bool_]) -> dict[str, float]:
        k = int(np.count_nonzero(event))
        lo, hi = theory.clopper_pearson(k, event.size, level)
        return {"p": k / event.size, "lo": lo, "hi": hi, "count": k}

    out: dict[str, Any] = {"samples": int(data["rank"].shape[0]), "widths": list(w)}
    out["p_exact_rank_deficient"] = probability(data["exact_rank"] < p)
    out["mean_exact_rank"] = distribution_summary(data["exact_rank"])
    out["p_rank_deficient"] = probability(data["rank"] < p)
    out["p_any_zeroed"] = probability(np.any(data["active_counts"] < np.array(w[1:]), axis=1))
    frac = data["active_counts"] / np.array(w[1:])
    out["active_fraction"] = distribution_summary(frac.mean(axis=1))
    out["rank_fraction"] = distribution_summary(data["rank"] / p)
    for key in SPECTRA:
        if key in data:
            out[key] = distribution_summary(data[key])
    return out
