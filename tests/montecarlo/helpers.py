"""Helpers shared by the Monte Carlo tests."""

from __future__ import annotations

import numpy as np

from jacgeom.montecarlo import Result
from jacgeom.montecarlo.checkpoint import arrays_checksum

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
