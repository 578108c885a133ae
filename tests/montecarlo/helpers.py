"""Helpers shared by the Monte Carlo tests."""

from __future__ import annotations

import numpy as np

from jacgeom.montecarlo import Result

# Fixed seeds; intervals from the sample count at this level, not hand-picked tolerances.
LEVEL = 1 - 1e-4


def assert_same(a: Result, b: Result) -> None:
    """The two results hold the same keys and bit-identical arrays."""
    assert a.data.keys() == b.data.keys()
    for k in a.data:
        np.testing.assert_array_equal(a.data[k], b.data[k], err_msg=k)
