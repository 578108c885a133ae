"""Every bad input of the single-layer kernels gets the documented error, on every backend.

The catalogue is a table: a new public function joins it by being added to FUNCTIONS.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import jacgeom

from .conftest import LAYER_FUNCTIONS

FUNCTIONS: list[Callable[..., Any]] = list(LAYER_FUNCTIONS)

W = np.ones((4, 3))
X = np.ones((5, 3))
b = np.zeros(4)

# (description, kwargs overriding W/X/b/extra, error type, match)
CATALOGUE: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("W 1-D", {"W": np.ones(3)}, ValueError, r"W has 1 dimension\(s\).*\(m, n\)"),
    ("W 3-D", {"W": np.ones((2, 4, 3))}, ValueError, r"W has 3 dimension\(s\)"),
    ("W 0-d", {"W": np.float64(1.0)}, ValueError, r"W has 0 dimension\(s\)"),
    ("X 3-D", {"X": np.ones((2, 5, 3))}, ValueError, r"X has 3 dimension\(s\).*\(B, 3\)"),
    ("X 0-d", {"X": 1.0}, ValueError, r"X has 0 dimension\(s\)"),
    (
        "X wrong width",
        {"X": np.ones((5, 4))},
        ValueError,
        r"X has shape \(5, 4\) but W has 3 columns; expected X of shape \(B, 3\)",
    ),
    (
        "x wrong length",
        {"X": np.ones(2)},
        ValueError,
        r"X has shape \(2,\).*expected X of shape \(3,\)",
    ),
    ("b wrong length", {"b": np.zeros(3)}, ValueError, r"b has shape \(3,\) but W has 4 rows"),
    ("b 2-D", {"b": np.zeros((4, 1))}, ValueError, r"b has shape \(4, 1\)"),
    ("complex W", {"W": np.ones((4, 3), dtype=complex)}, TypeError, r"W has dtype complex128"),
    ("object X", {"X": np.ones((5, 3), dtype=object)}, TypeError, r"X has dtype object"),
    ("string b", {"b": np.array(["a"] * 4)}, TypeError, r"b has dtype <U1"),
    ("ragged list", {"X": [[1.0, 2.0, 3.0], [1.0]]}, TypeError, r"X must be a real numeric array"),
    ("NaN W", {"W": np.full((4, 3), np.nan)}, ValueError, r"W contains NaN or Inf"),
    ("Inf X", {"X": np.full((5, 3), np.inf)}, ValueError, r"X contains NaN or Inf"),
    ("NaN b", {"b": np.array([0.0, np.nan, 0.0, 0.0])}, ValueError, r"b contains NaN or Inf"),
    ("unknown activation", {"activation": "swish"}, ValueError, r"unknown activation 'swish'"),
    ("activation type", {"activation": 3}, TypeError, r"activation must be a name"),
    ("unknown backend", {"backend": "cuda"}, ValueError, r"unknown backend 'cuda'; valid choices"),
    ("backend type", {"backend": None}, ValueError, r"unknown backend None"),
]


def call(fn: Callable[..., Any], default_backend: str, /, **over: Any) -> Any:
    kwargs: dict[str, Any] = {"backend": default_backend}
    args = {"W": W, "X": X, "b": b}
    for key, value in over.items():
        (args if key in args else kwargs)[key] = value
    return fn(args["W"], args["X"], args["b"], **kwargs)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("what", "over", "error", "match"), CATALOGUE, ids=[c[0] for c in CATALOGUE]
)
def test_bad_input(
    fn: Callable[..., Any],
    what: str,
    over: dict[str, Any],
    error: type[Exception],
    match: str,
    backend: str,
) -> None:
    with pytest.raises(error, match=match):
        call(fn, backend, **over)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_good_variants_accepted(fn: Callable[..., Any], backend: str) -> None:
    # Python lists, int and bool arrays, float16, Fortran order, read-only, zero-width and
    # zero-batch inputs all work.
    Wl = [[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1, 1, 1], [2, 0, 1]]
    call(fn, backend, W=Wl)
    call(fn, backend, X=np.ones((5, 3), dtype=np.int64))
    call(fn, backend, X=np.ones((5, 3), dtype=bool))
    half = call(fn, backend, W=W.astype(np.float16), X=X.astype(np.float16), b=None)
    assert half.dtype == (np.int64 if fn is jacgeom.jacobian_rank else np.float32)
    call(fn, backend, W=np.asfortranarray(W))
    ro = X.copy()
    ro.setflags(write=False)
    call(fn, backend, X=ro)
    assert call(fn, backend, X=np.ones((0, 3))).shape[0] == 0


def test_zero_width_dimensions(backend: str) -> None:
    W0 = np.ones((4, 0))
    X0 = np.ones((5, 0))
    assert jacgeom.layer_jacobian(W0, X0, backend=backend).shape == (5, 4, 0)
    assert jacgeom.pullback_metric(W0, X0, backend=backend).shape == (5, 0, 0)
    assert jacgeom.layer_singular_values(W0, X0, backend=backend).shape == (5, 0)
    np.testing.assert_array_equal(jacgeom.log_volume(W0, X0, backend=backend), np.zeros(5))
    Wm = np.ones((0, 3))
    assert jacgeom.layer_jacobian(Wm, X, backend=backend).shape == (5, 0, 3)
    np.testing.assert_array_equal(
        jacgeom.pullback_metric(Wm, X, backend=backend), np.zeros((5, 3, 3))
    )
    assert jacgeom.layer_singular_values(Wm, X, backend=backend).shape == (5, 0)


def test_log_volume_needs_tall_w(backend: str) -> None:
    with pytest.raises(ValueError, match=r"W has shape \(2, 3\); log_volume needs m >= n"):
        jacgeom.log_volume(np.ones((2, 3)), np.ones((4, 3)), backend=backend)


def test_check_finite_false_accepts_nan(backend: str) -> None:
    Xn = X.copy()
    Xn[0, 0] = np.nan
    out = jacgeom.layer_jacobian(W, Xn, activation="tanh", backend=backend, check_finite=False)
    assert np.isnan(out[0]).any() and np.isfinite(out[1:]).all()


def test_set_num_threads_validation() -> None:
    with pytest.raises(ValueError, match="n must be between 1 and 4096, got 0"):
        jacgeom.set_num_threads(0)
    with pytest.raises(ValueError, match="n must be between 1 and 4096, got 2147483648"):
        jacgeom.set_num_threads(2**31)  # was pybind11's TypeError
    with pytest.raises(TypeError, match="n must be an int"):
        jacgeom.set_num_threads(2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be an int, got bool"):
        jacgeom.set_num_threads(True)
    before = jacgeom.get_num_threads()
    try:
        jacgeom.set_num_threads(np.int64(1))  # a numpy integer is an int
        assert jacgeom.get_num_threads() == 1
    finally:
        jacgeom.set_num_threads(before)


def test_out_sharing_memory_with_the_bias_is_refused() -> None:
    # the bias was left out of the overlap check, and the result overwrote it
    buf = np.zeros((X.shape[0], W.shape[0], W.shape[1]))
    b = buf.reshape(-1)[: W.shape[0]]
    b[:] = 0.5
    with pytest.raises(ValueError, match="out shares memory with an input"):
        jacgeom.layer_jacobian(W, X, b, out=buf)
    assert np.all(b == 0.5)


def test_activation_with_params_and_object() -> None:
    with pytest.raises(ValueError, match="parameters cannot be given together"):
        jacgeom.activation(jacgeom.activation("relu"), alpha=1.0)


@pytest.mark.parametrize("value", [None, "no", 0, 1])
def test_check_finite_must_be_a_bool(value: object) -> None:
    # None and "no" used to switch the check off silently
    with pytest.raises(TypeError, match="check_finite must be a bool"):
        jacgeom.layer_jacobian(W, X, check_finite=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="check_finite must be a bool"):
        jacgeom.Network.random([W.shape[1], 3]).jacobian(X, check_finite=value)  # type: ignore[arg-type]


def test_homeomorphism_delta_named() -> None:
    with pytest.raises(TypeError, match="delta must be a real number, got str 'x'"):
        jacgeom.homeomorphism_report(W, "tanh", X, delta="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delta must be a finite number >= 0, got -1.0"):
        jacgeom.homeomorphism_report(W, "tanh", delta=-1.0)  # checked without X too


def test_masked_arrays_are_refused() -> None:
    # their masked entries were read as data (a masked NaN reported as an overflow)
    Wm = np.ma.masked_array(W, mask=np.zeros_like(W, dtype=bool))
    Wm[0, 0] = np.ma.masked
    with pytest.raises(TypeError, match=r"W is a masked array; pass W.filled\(value\)"):
        jacgeom.layer_jacobian(Wm, X)
    with pytest.raises(TypeError, match="X is a masked array"):
        jacgeom.Network.random([W.shape[1], 2]).jacobian(np.ma.masked_array(X))


def test_masked_array_mask_is_refused(backend: str) -> None:
    # a masked entry of the mask was read as data: here the masked False kept row 2 out
    mask = np.ma.masked_array([True, True, False, True], mask=[False, False, True, False])
    with pytest.raises(TypeError, match=r"mask is a masked array; pass mask.filled\(value\)"):
        jacgeom.masked_rank(W, mask, backend=backend)
    assert jacgeom.masked_rank(W, mask.filled(True), backend=backend) == 1  # W's rows agree


@pytest.mark.parametrize(
    ("name", "value", "error", "match"),
    [
        ("leaky_relu", "0.1", TypeError, r"alpha of 'leaky_relu' must be a real number, got str"),
        ("leaky_relu", True, TypeError, r"alpha of 'leaky_relu' must be a real number, got bool"),
        ("elu", None, TypeError, r"alpha of 'elu' must be a real number, got NoneType"),
        ("elu", np.array([1.0, 2.0]), TypeError, r"alpha of 'elu' must be a real number"),
        ("elu", np.array(1.0), TypeError, r"alpha of 'elu' must be a real number, got ndarray"),
        ("softplus", 10**400, ValueError, r"beta of 'softplus' must be finite"),
        ("softplus", float("inf"), ValueError, r"beta of 'softplus' must be finite"),
    ],
)
def test_activation_parameters_are_numbers(
    name: str, value: object, error: type[Exception], match: str
) -> None:
    # "0.1" and True were read by float(); None and arrays failed inside it, unnamed
    with pytest.raises(error, match=match):
        jacgeom.activation(name, **{"beta" if name == "softplus" else "alpha": value})


def test_activation_parameters_take_numpy_numbers() -> None:
    assert jacgeom.activation("leaky_relu", alpha=np.float32(0.25)).parameter == 0.25
    assert jacgeom.activation("elu", alpha=np.int64(2)).parameter == 2.0
    assert jacgeom.activation("softplus", beta=3).parameter == 3.0


def test_huge_tol_on_tiny_weights_is_quiet_and_exact(backend: str) -> None:
    # W ~ 1e-300 is rescaled by 2^996 inside; tol = 1e300 then overflowed with a
    # RuntimeWarning though the answer (rank 0: tol exceeds every singular value) was right
    Wt = np.random.default_rng(0).standard_normal((4, 3)) * 1e-300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jacgeom.masked_rank(Wt, [True, True, False, True], tol=1e300, backend=backend) == 0
        assert (
            jacgeom.jacobian_rank(Wt, np.ones(3), activation="tanh", tol=1e300, backend=backend)
            == 0
        )
        # and a tol below the singular values (about 1e-300) keeps them: numpy's rank
        want = np.linalg.matrix_rank(Wt[[0, 1, 3]], tol=1e-302)
        assert want == 3
        assert jacgeom.masked_rank(Wt, [True, True, False, True], tol=1e-302, backend=backend) == 3


# ---------------------------------------------------------------- arguments named, not cast


@pytest.mark.parametrize(
    "call",
    [
        lambda: jacgeom.masked_rank(np.eye(3), np.ones((2, 3), bool), tol=10**400),
        lambda: jacgeom.masked_rank(np.eye(3), np.ones((2, 3), bool), rtol=10**400),
        lambda: jacgeom.Network([np.eye(3)]).rank(np.ones(3), tol=10**400),
    ],
)
def test_tolerance_beyond_the_float_range_is_named(call: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=r"r?tol must be a finite number >= 0"):
        call()


@pytest.mark.parametrize("name", ["gamma", "coef0"])
def test_kernel_layer_parameters_beyond_the_float_range(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        jacgeom.KernelLayer(np.ones((2, 3)), np.ones((4, 2)), **{name: 10**400})


@pytest.mark.parametrize("flag", ["strictly_monotone", "smooth", "derivative_can_vanish"])
@pytest.mark.parametrize("value", ["no", "False", 1, 0.0, None])
def test_custom_activation_properties_are_bools(flag: str, value: object) -> None:
    # bool("no") is True: the caller's "no" used to become a vouched-for property
    with pytest.raises(TypeError, match=f"{flag} must be a bool"):
        jacgeom.Activation.custom(lambda z: z, lambda z: 1.0, **{flag: value})


def test_custom_activation_property_strings_do_not_make_a_layer_injective() -> None:
    with pytest.raises(TypeError, match="strictly_monotone must be a bool"):
        act = jacgeom.Activation.custom(lambda z: z**3, lambda z: 3 * z * z, strictly_monotone="no")
        jacgeom.homeomorphism_report(np.eye(2), act)


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"exact": 1.0}, "exact"),
        ({"exact": 1}, "exact"),
        ({"return_singular_values": 1}, "return_singular_values"),
    ],
)
def test_flags_are_bools_not_numbers(kw: dict[str, Any], name: str) -> None:
    W, X = np.eye(3), np.ones((2, 3))
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        jacgeom.jacobian_rank(W, X, **kw)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"grid": 2.5}, TypeError, "grid must be an int"),
        ({"grid": 1}, ValueError, "grid must be an integer >= 2"),
        ({"lo": float("nan")}, ValueError, "lo and hi must be finite"),
        ({"lo": 3.0, "hi": -3.0}, ValueError, "lo < hi"),
        ({"hi": "10"}, TypeError, "hi must be a real number"),
    ],
)
def test_derivative_zeros_arguments(kw: dict[str, Any], error: type, match: str) -> None:
    from jacgeom.homeomorphism import derivative_zeros

    with pytest.raises(error, match=match):
        derivative_zeros("gelu", **kw)


def test_homeomorphism_bias_without_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="b is given without X"):
        jacgeom.homeomorphism_report(np.eye(2), "tanh", b="garbage")


def test_network_activation_parameter_must_fit_its_dtype() -> None:
    # the layer functions refuse it; a float32 network returned -inf from forward
    leaky = jacgeom.activation("leaky_relu", alpha=1e39)
    with pytest.raises(ValueError, match="overflows float32, the network's dtype"):
        jacgeom.Network([np.eye(2, dtype=np.float32)], activation=leaky)
    net = jacgeom.Network([np.eye(2)], activation=leaky)  # float64 holds it
    np.testing.assert_array_equal(net.forward([-1.0, 1.0]), [-1e39, 1.0])


def test_network_kernel_layer_is_a_copy() -> None:
    rng = np.random.default_rng(0)
    kl = jacgeom.KernelLayer(rng.standard_normal((3, 2)), rng.standard_normal((4, 3)))
    net = jacgeom.Network([kl, rng.standard_normal((2, 4))], activation=[None, "tanh"])
    x = rng.standard_normal(2)
    before = net.jacobian(x)
    kl.coefficients[:] = 0.0
    kl.centers[:] = 0.0
    np.testing.assert_array_equal(net.jacobian(x), before)
    assert np.abs(before).max() > 0
    with pytest.raises(ValueError, match="read-only"):
        net.weights[0].coefficients[0, 0] = 1.0


@pytest.mark.parametrize("sigma_w", [1e-200, 1e-160, 1e160, 1e200])
def test_gaussian_init_of_extreme_scale(sigma_w: float) -> None:
    # sqrt(sigma_w**2 / n) under- or overflowed beyond 1e+-154: all-zero weights, or an
    # OverflowError
    net = jacgeom.Network.random([64, 64, 4], init="gaussian", sigma_w=sigma_w, seed=0)
    W = net.weights[0] / sigma_w  # np.std of W itself would under- or overflow
    assert np.std(W) * 8 == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize(
    ("sigma_w", "dtype", "init"),
    [
        (1e-320, np.float64, "gaussian"),
        (1e307, np.float64, "gaussian"),
        (1e-40, np.float32, "gaussian"),
        (1e38, np.float32, "gaussian"),
        (1e-40, np.float32, "orthogonal"),
    ],
)
def test_initial_weights_beyond_the_dtype_are_refused(
    sigma_w: float, dtype: type, init: str
) -> None:
    with pytest.raises(ValueError, match=r"sigma_w=.* beyond the normal range"):
        jacgeom.Network.random([4, 4, 4], init=init, sigma_w=sigma_w, dtype=dtype, seed=0)


def test_forward_overflow_is_an_error_as_in_the_jacobian() -> None:
    net = jacgeom.Network([np.full((2, 2), 1e200), np.full((2, 2), 1e200)], activation="relu")
    x = np.ones(2)
    for method in (net.forward, net.jacobian, net.preactivations):
        with pytest.raises(FloatingPointError, match="pre-activations of layer 1"):
            method(x)
    # infinite inputs the caller allowed follow IEEE, unwarned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = net.forward([np.inf, 1.0], check_finite=False)
    assert np.isposinf(out).all()


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
@pytest.mark.parametrize(
    ("dtype", "big", "small"), [(np.float32, 1e13, 1e-33), (np.float64, 1e300, 1e-30)]
)
def test_absolute_tol_counts_entries_far_below_the_largest(
    backend: str, dtype: type, big: float, small: float
) -> None:
    # Scaling W by a power of two into range flushed the small entry to zero: rank 1 where
    # numpy.linalg.matrix_rank, with the caller's absolute tol, counts 2.
    if backend not in jacgeom.backends():
        pytest.skip(f"{backend} backend not built")
    W = np.diag([big, small]).astype(dtype)
    for tol in (0.0, small / 2):
        assert np.linalg.matrix_rank(W, tol=tol) == 2
        assert jacgeom.masked_rank(W, np.ones(2, bool), tol=tol, backend=backend) == 2
        assert (
            jacgeom.jacobian_rank(W, np.zeros(2), activation="identity", tol=tol, backend=backend)
            == 2
        )
    assert jacgeom.masked_rank(W, np.ones(2, bool), tol=small * 2, backend=backend) == 1
    _, values = jacgeom.masked_rank(
        W, np.ones(2, bool), tol=0.0, backend=backend, return_singular_values=True
    )
    np.testing.assert_allclose(values, [big, small], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "params", "dtype"),
    [
        ("leaky_relu", {"alpha": 1.2e-44}, np.float32),  # stored as 1.26e-44: 5% off
        ("leaky_relu", {"alpha": 1e-46}, np.float32),  # stored as 0: every unit dead
        ("elu", {"alpha": 1e-40}, np.float32),
        ("softplus", {"beta": 1e-46}, np.float32),  # beta = 0: NaN outputs
        ("leaky_relu", {"alpha": 1e-320}, np.float64),
    ],
)
def test_activation_parameter_below_the_dtypes_normal_range(
    name: str, params: dict[str, float], dtype: type
) -> None:
    # The log-space methods used the parameter unrounded, jacobian the rounded one: 0.099
    # nats apart at alpha = 1.2e-44, exact rank 2 against 0 at alpha = 1e-46.
    act = jacgeom.activation(name, **params)
    W = np.eye(2, dtype=dtype)
    with pytest.raises(ValueError, match=f"underflows {np.dtype(dtype)}, the network's dtype"):
        jacgeom.Network([W, W], activation=act)
    with pytest.raises(ValueError, match=f"underflows {np.dtype(dtype)}, the dtype of W and X"):
        jacgeom.layer_jacobian(W, np.ones((1, 2), dtype=dtype), activation=act)


def test_activation_parameter_zero_and_normal_are_accepted() -> None:
    W = np.eye(2, dtype=np.float32)
    for alpha in (1.2e-38, 0.01):
        act = jacgeom.activation("leaky_relu", alpha=alpha)
        net = jacgeom.Network([W], activation=act)
        np.testing.assert_allclose(
            net.jacobian([-1.0, 1.0]), np.diag([np.float32(alpha), 1.0]), rtol=1e-6
        )
