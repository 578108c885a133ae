"""phi and phi' of the forward pass: jacgeom._dispatch.activation_values on every backend
against the numpy reference, and gelu's four-lane path (csrc/include/jacgeom/vecmath.hpp)
against its scalar formula: one value per element, whatever its neighbours."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import scipy.special

import jacgeom
from jacgeom import _dispatch
from jacgeom._backends import core

BACKENDS = jacgeom.backends()
DTYPES = [np.float32, np.float64]
PARAMS = {"leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 0.7}, "softplus": {"beta": 2.5}}


def _awkward(dtype: Any) -> np.ndarray:
    """Every regime of gelu's formulas: both sides of the four-lane bound (|z| = 30), the
    subnormal tail of phi and phi' (z < -37.5), zeros, tiny and huge values, NaN and
    infinities, in a length that is not a multiple of four."""
    finfo = np.finfo(dtype)
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, finfo.tiny, -finfo.tiny, finfo.max, -finfo.max]
    edges = [30.0, -30.0, np.nextafter(30.0, 40.0), np.nextafter(-30.0, -40.0), -0.7518, -38.6]
    grid = np.concatenate([np.linspace(-45, 45, 4001), -np.logspace(-6, 2, 401)])
    z = np.concatenate([special, edges, grid, np.random.default_rng(5).standard_normal(333) * 4])
    return z.astype(dtype)


@pytest.fixture
def four_threads() -> Any:
    """jacgeom.set_num_threads(4) for the test: the threaded paths run on any machine."""
    before = jacgeom.get_num_threads()
    jacgeom.set_num_threads(4)
    yield
    jacgeom.set_num_threads(before)


@pytest.mark.usefixtures("four_threads")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", jacgeom.activation_names())
def test_activation_values_are_act_phi(name: str, dtype: Any) -> None:
    # Every backend gives act.phi(z) bit for bit, except gelu on cpp (the next test), on an
    # array large enough that gelu's scipy erfc is split over the four threads.
    act = jacgeom.activation(name, **PARAMS.get(name, {}))
    z = np.resize(_awkward(dtype), (256, 1031))  # 2^18 elements: four chunks of 2^16
    with np.errstate(all="ignore"):
        expected = act.phi(z)
        for be in BACKENDS:
            if name == "gelu" and be == "cpp":
                continue
            got = _dispatch.activation_values(z, act, be)
            assert got.dtype == dtype and got.shape == z.shape
            assert got.tobytes() == expected.tobytes(), be


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpp_gelu_is_float64_rounded_once(dtype: Any) -> None:
    # gelu on cpp: z Phi(z) in double, rounded once. Against the numpy reference in float64:
    # float32 within an ulp of its rounding; float64 within the formula's own conditioning
    # (erfc(-z / sqrt 2) amplifies the rounding of z / sqrt 2 by z^2: 1e-12 relative at
    # z = -36, where scipy's and libm's erfc part by 2e3 ulps, both that far from the exact
    # value) and scipy's early underflow (0 below z = -37.5, where libm's erfc still gives
    # subnormals): atol = the smallest normal number. NaN and the infinities as numpy's.
    if "cpp" not in BACKENDS:
        pytest.skip("the C++ backend did not load")
    act = jacgeom.activation("gelu")
    z = _awkward(dtype)
    with np.errstate(all="ignore"):
        expected = act.phi(z.astype(np.float64))
        got = _dispatch.activation_values(z, act, "cpp")
    assert got.dtype == dtype and got.shape == z.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite], expected[~finite].astype(dtype))
    tiny = np.finfo(dtype).tiny
    if dtype == np.float32:
        ref = expected[finite].astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(got[finite], ref, rtol=2.0**-23, atol=tiny)
    else:
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=tiny)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", jacgeom.activation_names())
def test_activation_values_keep_shape_and_input(name: str, dtype: Any) -> None:
    act = jacgeom.activation(name, **PARAMS.get(name, {}))
    rng = np.random.default_rng(3)
    for shape in [(0,), (1,), (3,), (5, 7), (2, 3, 5), (70000,)]:
        z = (rng.standard_normal(shape) * 3).astype(dtype)
        view = np.asfortranarray(z) if z.ndim > 1 else z[::-1]  # not C-contiguous
        before = view.copy()
        for be in BACKENDS:
            got = _dispatch.activation_values(view, act, be)
            assert got.shape == view.shape and got.dtype == dtype
            np.testing.assert_array_equal(view, before)
            # the values of the same z laid out C-contiguous (checked by the tests above)
            flat = _dispatch.activation_values(np.ascontiguousarray(view).reshape(-1), act, be)
            assert np.ascontiguousarray(got).tobytes() == flat.tobytes(), (be, shape)


@pytest.mark.usefixtures("four_threads")
@pytest.mark.parametrize("dtype", DTYPES)
def test_threaded_numpy_gelu_is_act_phi_bit_for_bit(dtype: Any) -> None:
    # The numpy twin splits gelu's scipy erfc over threads above 2^15 elements per thread;
    # chunks of scalar elementwise code give the values of one call, the caller's numpy
    # error state holds in every chunk (the -inf, whose phi is -inf * 0, is in the last of
    # four), and an error raised in a chunk reaches the caller.
    act = jacgeom.activation("gelu")
    z = (np.random.default_rng(1).standard_normal((1024, 129)) * 5).astype(dtype)
    z[7, 3], z[1000, 100], z[512, 0] = np.nan, -np.inf, np.inf
    with np.errstate(invalid="ignore"):
        got = _dispatch.activation_values(z, act, "numpy")
        expected = act.phi(z)
    assert got.tobytes() == expected.tobytes()
    with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
        _dispatch.activation_values(z, act, "numpy")
    seen: list[str] = []
    with np.errstate(invalid="call", call=lambda kind, flag: seen.append(kind)):
        _dispatch.activation_values(z, act, "numpy")
    assert seen == ["invalid value"]
    fortran = np.asfortranarray(z)
    with np.errstate(invalid="ignore"):
        kept = _dispatch.activation_values(fortran, act, "numpy")
        expected_f = act.phi(fortran)
    assert kept.flags.f_contiguous and kept.tobytes("A") == expected_f.tobytes("A")


needs_cpp = pytest.mark.skipif(core is None, reason="the C++ backend did not load")


def _libmvec_expected() -> bool:
    """glibc 2.35 or later on x86-64 Linux with every feature of x86-64-v3 (what the
    extension asks of the CPU: AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, XSAVE), no
    opt-out."""
    libc, version = platform.libc_ver()
    if sys.platform != "linux" or platform.machine() != "x86_64" or libc != "glibc":
        return False
    if tuple(int(p) for p in version.split(".")[:2]) < (2, 35):
        return False
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    v3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    return v3 <= set(flags) and os.environ.get("JACGEOM_VECTOR_MATH") != "0"


@needs_cpp
def test_four_lane_path_is_taken_where_glibc_has_it() -> None:
    # Otherwise every test of the four-lane path below compares the scalar path with itself.
    assert core is not None
    assert core.vector_math() == _libmvec_expected()


def _one_at_a_time(fn: Any, z: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(z[i : i + 1]) for i in range(z.size)])


@needs_cpp
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("name", "kernel"), [("gelu", "values"), ("gelu", "derivatives"), ("tanh", "derivatives")]
)
def test_four_lane_value_never_depends_on_neighbours(name: str, kernel: str, dtype: Any) -> None:
    # A lane's value is a function of its own z: the same alone, in a run at every offset
    # modulo four (lanes of a group shift), beside NaN, infinities and z beyond the lane
    # bound (the scalar formula's lanes).
    assert core is not None
    code = jacgeom.activation(name).code
    rng = np.random.default_rng(11)
    z = (rng.standard_normal(64) * 10).astype(dtype)
    z[[3, 9, 17, 30]] = [np.nan, np.inf, -np.inf, -35.0]

    def fn(x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(getattr(core, kernel)(np.ascontiguousarray(x), code, 0.0))

    alone = _one_at_a_time(fn, z)
    for offset in range(4):
        shifted = fn(np.concatenate([np.full(offset, 0.5, dtype=dtype), z]))[offset:]
        assert shifted.tobytes() == alone.tobytes(), offset
    if kernel == "derivatives":
        # the fused layer kernel evaluates phi' in blocks of 64 rows within each thread's rows:
        # 4 x 64 + 37 rows over four threads cross block and thread boundaries anywhere
        zz = np.resize(z, 4 * 64 + 37)
        before = jacgeom.get_num_threads()
        jacgeom.set_num_threads(4)
        try:
            fused = jacgeom.layer_jacobian(
                np.eye(1, dtype=dtype),
                zz[:, None],
                activation=name,
                backend="cpp",
                check_finite=False,
            )[:, 0, 0]
        finally:
            jacgeom.set_num_threads(before)
        assert fused.tobytes() == _one_at_a_time(fn, zz).tobytes()


_SCALAR_SCRIPT = """
import json, sys
import numpy as np
from jacgeom._backends import core
z = np.array(json.loads(sys.argv[1]))
gelu, tanh = int(sys.argv[2]), int(sys.argv[3])
d = core.derivatives
print(json.dumps([core.vector_math(), core.values(z, gelu, 0.0).tolist(),
                  d(z, gelu, 0.0).tolist(), d(z, tanh, 0.0).tolist()]))
"""


@needs_cpp
def test_four_lane_path_agrees_with_the_scalar_formula() -> None:
    # JACGEOM_VECTOR_MATH=0 turns the four-lane path off: libm's scalar erfc and exp. Both
    # paths give gelu, gelu' and tanh' within an ulp or two of each other (gelu' where
    # Phi(z) + z pdf(z) cancels, near its zero at z = -0.75 and on the left tail, within
    # ulps of its terms).
    assert core is not None
    gelu, tanh = jacgeom.activation("gelu"), jacgeom.activation("tanh").code
    z = np.concatenate(
        [np.linspace(-32, 32, 3201), np.linspace(-40, -37.5, 501), [-0.7518, 1e-300, -1e-300]]
    )
    env = dict(os.environ, JACGEOM_VECTOR_MATH="0")
    out = subprocess.run(
        [sys.executable, "-c", _SCALAR_SCRIPT, json.dumps(z.tolist()), str(gelu.code), str(tanh)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    vectorised, values, derivatives, tanh_derivatives = json.loads(out.stdout)
    assert vectorised is False
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(core.values(z, gelu.code, 0.0), values, rtol=4 * eps, atol=0)
    np.testing.assert_allclose(core.derivatives(z, tanh, 0.0), tanh_derivatives, rtol=4 * eps)
    # gelu' = Phi(z) + z pdf(z): within ulps of the larger term (the sum cancels on the left)
    terms = 0.5 * scipy.special.erfc(-z / np.sqrt(2)) + np.abs(z) * np.exp(-0.5 * z * z) / np.sqrt(
        2 * np.pi
    )
    difference = np.abs(core.derivatives(z, gelu.code, 0.0) - np.array(derivatives))
    assert np.all(difference <= 4 * eps * terms), np.max(difference / terms) / eps
    # beyond the lane bound both take the one compiled scalar formula: the same bits
    beyond = np.abs(z) > 30
    for got, scalar in [
        (core.values(z, gelu.code, 0.0), values),
        (core.derivatives(z, gelu.code, 0.0), derivatives),
        (core.derivatives(z, tanh, 0.0), tanh_derivatives),
    ]:
        assert got[beyond].tobytes() == np.array(scalar)[beyond].tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_preactivations_share_the_forward_pass(dtype: Any) -> None:
    # Network.forward, Network.preactivations and the Jacobian's forward pass (backend
    # "auto") evaluate phi by one rule: the last output is phi of the last pre-activation,
    # bit for bit, and every pre-activation is W h + b of the previous layer's phi.
    net = jacgeom.Network.random([6, 9, 7, 5], activation="gelu", dtype=dtype, seed=4)
    X = (np.random.default_rng(2).standard_normal((40, 6)) * 4).astype(dtype)
    zs = net.preactivations(X)
    act = net.activations[0]
    hs = [_dispatch.activation_values(z, act, "auto") for z in zs]
    assert net.forward(X).tobytes() == hs[-1].tobytes()
    for l in (1, 2):
        z = hs[l - 1] @ net.weights[l].T + net.biases[l]
        assert zs[l].tobytes() == z.tobytes()
