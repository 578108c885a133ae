"""Shared fixtures: the backends present, dtypes, tolerances, seeded data."""

from __future__ import annotations

import faulthandler
import os

import numpy as np
import pytest
from hypothesis import settings

import jacgeom

faulthandler.enable()

# The same examples on every run (CI included), so that a red run reproduces and a green
# one stays green; HYPOTHESIS_PROFILE=explore draws fresh examples (with the slow fuzz
# run's JACGEOM_FUZZ_EXAMPLES for volume).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The single-layer public functions that take (W, X, b, activation=..., backend=...): the
# bad-input catalogue and the fuzz test both run over this one list.
LAYER_FUNCTIONS = [
    jacgeom.preactivations,
    jacgeom.layer_derivatives,
    jacgeom.layer_jacobian,
    jacgeom.pullback_metric,
    jacgeom.layer_singular_values,
    jacgeom.log_volume,
    jacgeom.jacobian_rank,
]

# JACGEOM_TEST_BACKENDS=cpp (a comma-separated list) limits the backend fixtures to those
# backends: tests/test_sanitizers.py runs its subset so against the instrumented C++ build,
# whose numba and numpy cases would not touch the extension.
_ONLY = os.environ.get("JACGEOM_TEST_BACKENDS")
BACKENDS = [b for b in jacgeom.backends() if not _ONLY or b in _ONLY.split(",")]
COMPILED = [b for b in BACKENDS if b != "numpy"]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=COMPILED)
def compiled_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> type:
    return request.param  # type: ignore[no-any-return]


def rtol_for(dtype: type) -> float:
    """Relative tolerance for comparing a backend with the reference in ``dtype``."""
    return 2e-4 if np.dtype(dtype) == np.float32 else 1e-10


def assert_close(
    actual: np.ndarray, expected: np.ndarray, dtype: type, scale: float | None = None
) -> None:
    """Elementwise agreement up to rounding, scaled by the magnitude of ``expected``."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    if not finite.any():
        return
    if scale is None:
        scale = float(np.max(np.abs(expected[finite]), initial=0.0)) or 1.0
    np.testing.assert_allclose(
        actual[finite], expected[finite], rtol=0, atol=rtol_for(dtype) * scale
    )
