"""The activation registry shared by every backend.

Each built-in activation has a numerically stable numpy implementation of phi and phi'
(numpy, and scipy.special.erfc for gelu; never the compiled code, so the reference
implementation can use it), an integer
code that the Numba and C++ kernels switch on, and three documented properties:

``strictly_monotone``
    phi is strictly increasing on the whole real line, so with W of full column rank the
    layer x -> phi(W x + b) is injective.
``smooth``
    phi is continuously differentiable (C1).
``derivative_can_vanish``
    phi'(z) = 0 for some finite z, so a row of D_phi W can be deleted exactly.

Derivative conventions (they decide exact ranks): relu'(0) = 0 and leaky_relu'(0) = alpha,
i.e. the derivative at the kink is that of the left half-line.

The derivatives are finite and free of overflow warnings for every finite input: large
arguments are handled through exp(-|z|), which underflows to 0 harmlessly, never through
exp(|z|) or z**2 unclipped.
"""

from __future__ import annotations

import dis
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.special
from numpy.typing import NDArray

__all__ = ["Activation", "activation", "activation_names"]

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_C = math.sqrt(2.0 / math.pi)
_GELU_TANH_A = 0.044715
# Beyond |z| = 40 the Gaussian density is below 1e-347 (0 in float64), and beyond |z| = 30
# the tanh-approximated gelu is exactly 0 or 1 in float64: clipping there changes nothing
# but keeps z**2 and z**3 from overflowing.
_GELU_CLIP = 40.0
_SILU_CLIP = 1000.0
_GELU_TANH_CLIP = 30.0

# Integer codes shared with csrc/include/jacgeom/activations.hpp and jacgeom._numba.
CODES: dict[str, int] = {
    "identity": 0,
    "relu": 1,
    "leaky_relu": 2,
    "sigmoid": 3,
    "tanh": 4,
    "gelu": 5,
    "gelu_tanh": 6,
    "softplus": 7,
    "elu": 8,
    "silu": 9,
}
CUSTOM_CODE = -1

FloatArray = NDArray[np.floating[Any]]


def _exp_neg_abs(z: FloatArray) -> FloatArray:
    return np.exp(-np.abs(z))


def _sigmoid(z: FloatArray) -> FloatArray:
    e = _exp_neg_abs(z)
    one = np.ones_like(e)
    return np.where(z >= 0, one / (one + e), e / (one + e))


def _sigmoid_derivative(z: FloatArray) -> FloatArray:
    # s(1 - s) = e / (1 + e)^2 with e = exp(-|z|): symmetric and never overflows.
    e = _exp_neg_abs(z)
    return e / ((1 + e) * (1 + e))


def _erfc(x: FloatArray) -> FloatArray:
    # numpy has no erfc; scipy's (Cephes) is vectorised and accurate to a few ulp in both
    # precisions. scipy is a dependency for its LAPACK anyway.
    return np.asarray(scipy.special.erfc(x), dtype=x.dtype)


def _std_normal_cdf(z: FloatArray) -> FloatArray:
    return 0.5 * _erfc(-z * z.dtype.type(_SQRT_HALF))


def _d_identity(z: FloatArray, p: float) -> FloatArray:
    return np.ones_like(z)


def _f_identity(z: FloatArray, p: float) -> FloatArray:
    return z.copy()


def _d_relu(z: FloatArray, p: float) -> FloatArray:
    return (z > 0).astype(z.dtype)


def _f_relu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z, z.dtype.type(0))


def _d_leaky_relu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z.dtype.type(1), z.dtype.type(p))


def _f_leaky_relu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z, z * z.dtype.type(p))


def _d_sigmoid(z: FloatArray, p: float) -> FloatArray:
    return _sigmoid_derivative(z)


def _f_sigmoid(z: FloatArray, p: float) -> FloatArray:
    return _sigmoid(z)


def _d_tanh(z: FloatArray, p: float) -> FloatArray:
    # 1 - tanh(z)^2 = sech(z)^2 = 4 e / (1 + e)^2 with e = exp(-2|z|): no cancellation.
    # exp(-|z|)^2 rather than exp(-2|z|): 2|z| overflows at the top of the float range.
    e = _exp_neg_abs(z)
    e = e * e
    return 4 * e / ((1 + e) * (1 + e))


def _f_tanh(z: FloatArray, p: float) -> FloatArray:
    return np.tanh(z)


def _d_gelu(z: FloatArray, p: float) -> FloatArray:
    # (zc exp(-zc^2 / 2)) / sqrt(2 pi) in this order, as the compiled backends: at z ~ -38.6
    # exp(-zc^2 / 2) is subnormal, and dividing it by sqrt(2 pi) first rounded phi' to 0
    # where they kept -8e-323 (one rounding rule for phi' on every backend).
    zc = np.clip(z, -_GELU_CLIP, _GELU_CLIP)
    return _std_normal_cdf(z) + zc * np.exp(-0.5 * zc * zc) * z.dtype.type(_INV_SQRT_2PI)


def _f_gelu(z: FloatArray, p: float) -> FloatArray:
    return z * _std_normal_cdf(z)


def _gelu_tanh_u(z: FloatArray) -> tuple[FloatArray, FloatArray]:
    zc = np.clip(z, -_GELU_TANH_CLIP, _GELU_TANH_CLIP)
    return zc, z.dtype.type(_GELU_TANH_C) * (zc + z.dtype.type(_GELU_TANH_A) * zc * zc * zc)


def _d_gelu_tanh(z: FloatArray, p: float) -> FloatArray:
    # phi = z * s(2u); phi' = s(2u) + z * 2 s(2u) s(-2u) * u'(z), written with the stable
    # sigmoid and its derivative so that neither 1 + tanh(u) nor z**3 loses anything.
    zc, u = _gelu_tanh_u(z)
    du = z.dtype.type(_GELU_TANH_C) * (1 + z.dtype.type(3 * _GELU_TANH_A) * zc * zc)
    return _sigmoid(2 * u) + zc * 2 * _sigmoid_derivative(2 * u) * du


def _f_gelu_tanh(z: FloatArray, p: float) -> FloatArray:
    _, u = _gelu_tanh_u(z)
    return z * _sigmoid(2 * u)


def _d_softplus(z: FloatArray, p: float) -> FloatArray:
    # beta * z may overflow to +-inf; the stable sigmoid maps +-inf to 1 and 0 without warnings.
    with np.errstate(over="ignore"):
        bz = z * z.dtype.type(p)
    return _sigmoid(bz)


def _f_softplus(z: FloatArray, p: float) -> FloatArray:
    with np.errstate(over="ignore"):
        bz = z * z.dtype.type(p)
    return (np.maximum(bz, 0) + np.log1p(_exp_neg_abs(bz))) / z.dtype.type(p)


def _d_elu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z.dtype.type(1), z.dtype.type(p) * np.exp(np.minimum(z, 0)))


def _f_elu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z, z.dtype.type(p) * np.expm1(np.minimum(z, 0)))


def _d_silu(z: FloatArray, p: float) -> FloatArray:
    # s(z) (1 + z (1 - s(z))) = s(z) + z s(z)(1 - s(z)), the last factor as e / (1 + e)^2.
    # z clipped in the product at +-1000, where e / (1 + e)^2 is 0 in float64 already: the
    # limits at +-inf are 1 and 0, not inf * 0 = nan.
    zc = np.clip(z, -_SILU_CLIP, _SILU_CLIP)
    return _sigmoid(z) + zc * _sigmoid_derivative(z)


def _f_silu(z: FloatArray, p: float) -> FloatArray:
    return z * _sigmoid(z)


# log|phi'(z)|: finite wherever phi'(z) is not zero mathematically, even where phi'(z)
# underflows to 0 (tanh beyond |z| ~ 373 in float64, ~ 45 in float32; sigmoid, softplus, elu,
# gelu, silu likewise). The stable network spectra scale rows by exp(log|phi'| - max log|phi'|)
# so that a saturated unit still counts.


def _log_sigmoid(x: FloatArray) -> FloatArray:
    # log s(x) = min(x, 0) - log1p(exp(-|x|)): no overflow for any x.
    return np.minimum(x, 0) - np.log1p(_exp_neg_abs(x))


def _l_identity(z: FloatArray, p: float) -> FloatArray:
    return np.zeros_like(z)


def _l_relu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z.dtype.type(0), z.dtype.type(-np.inf))


def _l_leaky_relu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z.dtype.type(0), z.dtype.type(math.log(p)))


def _l_sigmoid(z: FloatArray, p: float) -> FloatArray:
    # s'(z) = e / (1 + e)^2, e = exp(-|z|)
    return -np.abs(z) - 2 * np.log1p(_exp_neg_abs(z))


def _l_tanh(z: FloatArray, p: float) -> FloatArray:
    # 1 - tanh^2 = 4 e / (1 + e)^2, e = exp(-2|z|)
    e = _exp_neg_abs(z)
    return z.dtype.type(math.log(4.0)) - 2 * np.abs(z) - 2 * np.log1p(e * e)


def _l_softplus(z: FloatArray, p: float) -> FloatArray:
    with np.errstate(over="ignore"):
        bz = z * z.dtype.type(p)
    return _log_sigmoid(bz)


def _l_elu(z: FloatArray, p: float) -> FloatArray:
    return np.where(z > 0, z.dtype.type(0), z.dtype.type(math.log(p)) + np.minimum(z, 0))


# Built-ins whose phi' is negative on the left tail (where it underflows to -0 or 0).
_NEGATIVE_LEFT_TAIL = frozenset({"gelu", "gelu_tanh", "silu"})


def _log_where_tiny(
    z: FloatArray, p: float, dphi: Callable[[FloatArray, float], FloatArray], tail: Any
) -> FloatArray:
    """log|phi'(z)| from phi' where it is a normal number, from ``tail`` (a closed form in
    log space for the left tail, where phi' underflows) elsewhere."""
    d = dphi(z, p)
    with np.errstate(divide="ignore"):
        out = np.log(np.abs(d))
    tiny = np.abs(d) < np.finfo(z.dtype).tiny * 2**20
    if np.any(tiny):
        out[tiny] = tail(z[tiny].astype(np.float64)).astype(z.dtype)
    return out


def _gelu_tail(z: FloatArray) -> FloatArray:
    # phi'(z) = pdf(z) (Phi(z) / pdf(z) + z), Phi / pdf = sqrt(pi / 2) erfcx(-z / sqrt(2)).
    z = np.maximum(z, -1e150)
    mills = math.sqrt(math.pi / 2) * scipy.special.erfcx(-z * _SQRT_HALF)
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi) + np.log(np.abs(mills + z))


def _gelu_tanh_tail(z: FloatArray) -> FloatArray:
    # phi'(z) = s(2u) (1 + 2 z s(-2u) u'(z)), u = c (z + a z^3).
    z = np.clip(z, -1e100, 1e100)
    u = _GELU_TANH_C * (z + _GELU_TANH_A * z * z * z)
    du = _GELU_TANH_C * (1 + 3 * _GELU_TANH_A * z * z)
    return _log_sigmoid(2 * u) + np.log(np.abs(1 + 2 * z * np.exp(_log_sigmoid(-2 * u)) * du))


def _silu_tail(z: FloatArray) -> FloatArray:
    # phi'(z) = s(z) (1 + z s(-z))
    return _log_sigmoid(z) + np.log(np.abs(1 + z * np.exp(_log_sigmoid(-z))))


def _l_gelu(z: FloatArray, p: float) -> FloatArray:
    return _log_where_tiny(z, p, _d_gelu, _gelu_tail)


def _l_gelu_tanh(z: FloatArray, p: float) -> FloatArray:
    return _log_where_tiny(z, p, _d_gelu_tanh, _gelu_tanh_tail)


def _l_silu(z: FloatArray, p: float) -> FloatArray:
    return _log_where_tiny(z, p, _d_silu, _silu_tail)


@dataclass(frozen=True)
class _Spec:
    phi: Callable[[FloatArray, float], FloatArray]
    dphi: Callable[[FloatArray, float], FloatArray]
    strictly_monotone: bool
    smooth: bool
    derivative_can_vanish: bool
    log_dphi: Callable[[FloatArray, float], FloatArray]
    parameter: str | None = None
    default: float = 0.0


_REGISTRY: dict[str, _Spec] = {
    "identity": _Spec(_f_identity, _d_identity, True, True, False, _l_identity),
    "relu": _Spec(_f_relu, _d_relu, False, False, True, _l_relu),
    "leaky_relu": _Spec(
        _f_leaky_relu, _d_leaky_relu, True, False, False, _l_leaky_relu, "alpha", 0.01
    ),
    "sigmoid": _Spec(_f_sigmoid, _d_sigmoid, True, True, False, _l_sigmoid),
    "tanh": _Spec(_f_tanh, _d_tanh, True, True, False, _l_tanh),
    "gelu": _Spec(_f_gelu, _d_gelu, False, True, True, _l_gelu),
    "gelu_tanh": _Spec(_f_gelu_tanh, _d_gelu_tanh, False, True, True, _l_gelu_tanh),
    "softplus": _Spec(_f_softplus, _d_softplus, True, True, False, _l_softplus, "beta", 1.0),
    "elu": _Spec(_f_elu, _d_elu, True, False, False, _l_elu, "alpha", 1.0),
    "silu": _Spec(_f_silu, _d_silu, False, True, True, _l_silu),
}


def activation_names() -> list[str]:
    """Names of the built-in activations, in registry order."""
    return list(_REGISTRY)


@dataclass(frozen=True)
class Activation:
    """A pointwise activation phi with its derivative phi' and its geometric properties.

    Build one with :func:`activation` (built-ins) or :meth:`Activation.custom`.

    Attributes
    ----------
    name : str
        Registry name, or the name given to a custom activation.
    parameter : float
        The activation's one parameter (alpha of leaky_relu and elu, beta of softplus);
        0.0 when it has none.
    strictly_monotone, smooth, derivative_can_vanish : bool
        See the module docstring.
    code : int
        Integer code used by the compiled kernels; -1 for a custom activation.
    """

    name: str
    parameter: float
    strictly_monotone: bool
    smooth: bool
    derivative_can_vanish: bool
    code: int
    scalar_phi: Callable[[float], float] | None = field(default=None, repr=False, compare=False)
    scalar_dphi: Callable[[float], float] | None = field(default=None, repr=False, compare=False)

    @property
    def is_custom(self) -> bool:
        """True for an activation built from Python scalar functions."""
        return self.code == CUSTOM_CODE

    def phi(self, z: Any) -> FloatArray:
        """phi(z), elementwise.

        Parameters
        ----------
        z : (...) array_like of float

        Returns
        -------
        (...) ndarray, same floating dtype as z (float64 for integer input)
        """
        zz = _as_float(z)
        if self.is_custom:
            return _apply_scalar(self.scalar_phi, zz, "phi")
        return _REGISTRY[self.name].phi(zz, self.parameter)

    def derivative(self, z: Any) -> FloatArray:
        """phi'(z), elementwise, finite for every finite z.

        Parameters
        ----------
        z : (...) array_like of float

        Returns
        -------
        (...) ndarray, same floating dtype as z (float64 for integer input)

        Notes
        -----
        Evaluated in float64, with the parameter rounded to z's dtype, and rounded once to
        z's dtype, on every backend: in float32, tanh'(52) = 2.7e-45 is the subnormal
        2.8e-45, not 0.

        Examples
        --------
        >>> import numpy as np
        >>> float(activation("tanh").derivative(np.float32(52.0)))
        2.802596928649634e-45
        """
        zz = _as_float(z)
        if self.is_custom:
            return _apply_scalar(self.scalar_dphi, zz, "dphi")
        # One rounding rule on every backend (activations.hpp, jacgeom._numba): the
        # parameter rounded to z's dtype, phi' evaluated in float64 and rounded once.
        p = float(zz.dtype.type(self.parameter))
        d = _REGISTRY[self.name].dphi(zz.astype(np.float64), p)
        return d.astype(zz.dtype, copy=False)

    def log_abs_derivative(self, z: Any) -> FloatArray:
        """log|phi'(z)|, elementwise: finite wherever phi'(z) is not zero mathematically,
        even where phi'(z) itself underflows to 0; -inf only at exact zeros.

        Parameters
        ----------
        z : (...) array_like of float

        Returns
        -------
        (...) ndarray, same floating dtype as z (float64 for integer input)

        Notes
        -----
        Computed in closed form in log space, e.g. for tanh
        log(1 - tanh(z)^2) = log 4 - 2|z| - 2 log1p(exp(-2|z|)). A custom activation
        gives log|dphi(z)|, so its underflowed values read as exact zeros.

        Examples
        --------
        >>> import math
        >>> t = activation("tanh")
        >>> float(t.derivative(1000.0)), round(float(t.log_abs_derivative(1000.0)), 6)
        (0.0, -1998.613706)
        >>> round(math.log(4) - 2000, 6)
        -1998.613706
        """
        zz = _as_float(z)
        if self.is_custom:
            with np.errstate(divide="ignore"):
                return np.log(np.abs(self.derivative(zz)))
        return _REGISTRY[self.name].log_dphi(zz, self.parameter)

    def derivative_sign(self, z: Any) -> FloatArray:
        """sign(phi'(z)) in {-1, 0, 1}, elementwise, right where phi'(z) underflows too.

        gelu, gelu_tanh and silu have phi' < 0 on their left tail (phi' ~ z pdf(z) for
        gelu), so an underflowed 0 there is -1; every other built-in has phi' >= 0. The
        stable spectra scale rows by sign(phi') e^(log|phi'| - c).

        Parameters
        ----------
        z : (...) array_like of float

        Returns
        -------
        (...) ndarray of -1.0, 0.0, 1.0, same floating dtype as z

        Examples
        --------
        >>> activation("gelu").derivative_sign([-100.0, -0.5, 3.0]).tolist()
        [-1.0, 1.0, 1.0]
        """
        zz = _as_float(z)
        s = np.sign(self.derivative(zz))
        if not self.is_custom:
            underflow = (s == 0) & ~self.derivative_is_zero(zz)
            negative = self.name in _NEGATIVE_LEFT_TAIL
            s = np.where(underflow, np.where(negative & (zz < 0), -1, 1), s).astype(zz.dtype)
        return s

    def derivative_is_zero(self, z: Any) -> NDArray[np.bool_]:
        """Where phi'(z) = 0 mathematically (not merely below the floating-point range).

        These are the units whose rows of D_phi W are deleted exactly: relu's z <= 0; for a
        custom activation, where dphi(z) returns 0. Smooth built-ins (gelu, silu) vanish only
        at an irrational point, which no floating-point z equals.

        Parameters
        ----------
        z : (...) array_like of float

        Returns
        -------
        (...) bool ndarray

        Examples
        --------
        >>> activation("relu").derivative_is_zero([-1.0, 0.0, 2.0]).tolist()
        [True, True, False]
        >>> activation("tanh").derivative_is_zero([1e4]).tolist()
        [False]
        """
        zz = _as_float(z)
        if self.is_custom:
            return np.asarray(self.derivative(zz) == 0)
        if self.name == "relu":
            return np.asarray(zz <= 0)
        return np.zeros(zz.shape, dtype=bool)

    @classmethod
    def custom(
        cls,
        phi: Callable[[float], float],
        dphi: Callable[[float], float],
        *,
        name: str = "custom",
        strictly_monotone: bool = False,
        smooth: bool = False,
        derivative_can_vanish: bool = True,
    ) -> Activation:
        """An activation from two scalar Python functions.

        The properties default to the cautious answers (not monotone, not smooth, phi' may
        vanish). The compiled backends evaluate ``dphi`` compiled by numba where numba can
        compile it (at most 64 custom activations per process are compiled; later ones, and
        functions numba cannot compile, are called from Python as the numpy backend calls
        them), then run their own kernels on the result.

        What a custom activation may capture: ``phi`` and ``dphi`` are functions of z alone.
        The globals and closure variables that ``phi`` and ``dphi`` themselves read are copied
        when the Activation is created (a snapshot), so every backend and every later call
        sees the values of that moment: ``alpha = 5.0`` after ``Activation.custom(...,
        lambda z: alpha)`` changes nothing; build a new Activation to change a parameter.
        The snapshot is one level deep: a function they call reads its own globals when it
        runs, so keep parameters in ``phi`` and ``dphi`` (or their closures), not in helpers.
        Captured numpy arrays are copied too (once, for both functions), so mutating the
        original in place changes nothing, on any backend (and what the functions write into
        an array goes to the copy); other mutable objects are constants for the compiled
        backends (numba compiles their contents), so do not mutate them. Other callables
        (numba dispatchers, functools.partial, objects with ``__call__``) are used as
        given.

        Values: ``dphi`` must return a real number (int or float); None, complex or other
        values are a TypeError. phi' is evaluated in float64 and rounded once to the
        working dtype. A NaN or infinite phi' at finite inputs is a FloatingPointError in
        every function, never a rank.

        Parameters
        ----------
        phi, dphi : callable float -> float
            The activation and its derivative.
        name : str
            A label for reports.
        strictly_monotone, smooth, derivative_can_vanish : bool
            Properties the caller vouches for.

        Returns
        -------
        Activation

        Examples
        --------
        >>> import math
        >>> cube = Activation.custom(lambda z: z**3 / 3, lambda z: z * z, name="cube")
        >>> cube.derivative([2.0, -1.0]).tolist()
        [4.0, 1.0]
        """
        if not callable(phi) or not callable(dphi):
            raise TypeError("phi and dphi must be callables taking and returning a float")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        flags = {
            "strictly_monotone": strictly_monotone,
            "smooth": smooth,
            "derivative_can_vanish": derivative_can_vanish,
        }
        for flag, value in flags.items():
            # bool("no") is True: a property the caller vouches for must be a bool
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag} must be a bool, got {type(value).__name__} {value!r}")
        memo: dict[int, Any] = {}  # an array read by both functions is copied once
        return cls(
            name=name,
            parameter=0.0,
            strictly_monotone=bool(strictly_monotone),
            smooth=bool(smooth),
            derivative_can_vanish=bool(derivative_can_vanish),
            code=CUSTOM_CODE,
            scalar_phi=_snapshot(phi, memo),
            scalar_dphi=_snapshot(dphi, memo),
        )


def _frozen(value: Any, memo: dict[int, Any]) -> Any:
    """A copy of a numpy array, one per array in ``memo`` (numba compiles an array's
    contents, Python would read it live); any other value as it is."""
    if isinstance(value, np.ndarray):
        if id(value) not in memo:
            memo[id(value)] = (value, value.copy())  # the original kept: its id stays unique
        return memo[id(value)][1]
    return value


def _global_names(code: types.CodeType) -> set[str]:
    """The global names a code object loads, its nested code (comprehensions, inner
    lambdas) included; attribute names (the tanh of math.tanh) are not globals."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname == "LOAD_GLOBAL"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _snapshot(
    fn: Callable[[float], float], memo: dict[int, Any] | None = None
) -> Callable[[float], float]:
    """A copy of a plain Python function whose globals and closure cells hold the values
    of now (arrays copied, once per array in ``memo``): numba freezes them at its first
    compile while Python reads them live, so without the copy the backends would disagree
    once a captured variable changes."""
    if not isinstance(fn, types.FunctionType):
        return fn
    memo = {} if memo is None else memo
    closure = None
    if fn.__closure__ is not None:
        cells = []
        for cell in fn.__closure__:
            try:
                cells.append(types.CellType(_frozen(cell.cell_contents, memo)))
            except ValueError:  # an empty cell (a name assigned later): keep it
                cells.append(cell)
        closure = tuple(cells)
    namespace = dict(fn.__globals__)
    for name in _global_names(fn.__code__):
        if name in namespace:
            namespace[name] = _frozen(namespace[name], memo)
    copy = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, closure)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__doc__ = fn.__doc__
    return copy


def _as_float(z: Any) -> FloatArray:
    arr = np.asarray(z)
    if arr.dtype.kind == "f" and arr.dtype.itemsize >= 4:
        return arr
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64)
    raise TypeError(f"z must be a real floating or integer array, got dtype {arr.dtype}")


def _apply_scalar(fn: Callable[[float], float] | None, z: FloatArray, name: str) -> FloatArray:
    assert fn is not None

    def real(x: Any) -> float:
        # float(x) in float64, rounded once to z's dtype below (the one rounding rule).
        try:
            value = fn(float(x))
        except (ArithmeticError, ValueError) as exc:
            # What numba's compiled function gives as inf or NaN (a FloatingPointError
            # there): the same error on every backend.
            raise FloatingPointError(
                f"{name} of a custom activation failed at z = {float(x)!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
            raise TypeError(
                f"{name} of a custom activation returned {value!r} "
                f"({type(value).__name__}) at z = {float(x)!r}; expected a real number"
            )
        return float(value)

    out = np.frompyfunc(real, 1, 1)(z)
    return np.asarray(out, dtype=np.float64).astype(z.dtype, copy=False)


def activation(name: str | Activation, **params: float) -> Activation:
    """Look up a built-in activation.

    Parameters
    ----------
    name : str or Activation
        One of ``activation_names()``: identity, relu, leaky_relu (alpha=0.01), sigmoid, tanh,
        gelu (exact, with erf), gelu_tanh, softplus (beta=1), elu (alpha=1), silu. An
        Activation is returned unchanged (parameters are then not allowed).
    **params : float
        The activation's parameter by name: ``alpha`` for leaky_relu and elu, ``beta`` for
        softplus.

    Returns
    -------
    Activation

    Raises
    ------
    ValueError
        Unknown name, unknown parameter, or a parameter out of range (beta must be > 0,
        alpha finite; leaky_relu needs alpha > 0 to stay strictly monotone, alpha = 0 is relu).

    Notes
    -----
    Derivatives (the conventions of docs/user-guide/activations.md, "Built-in activations"):
    relu'(z) = [z > 0]; sigmoid' = s(1 - s); tanh' = 1 - tanh^2; softplus'(z) = s(beta z);
    elu'(z) = 1 if z > 0 else alpha e^z; gelu'(z) = Phi(z) + z pdf(z);
    silu'(z) = s(z)(1 + z(1 - s(z))). gelu and silu are not monotone: their derivatives cross
    zero near z = -0.75179 and z = -1.27846.

    Examples
    --------
    >>> act = activation("leaky_relu", alpha=0.1)
    >>> act.derivative([-2.0, 0.0, 3.0]).tolist()
    [0.1, 0.1, 1.0]
    >>> activation("gelu").strictly_monotone
    False
    """
    if isinstance(name, Activation):
        if params:
            raise ValueError("parameters cannot be given together with an Activation object")
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"activation must be a name (str) or an Activation, got {type(name).__name__}"
        )
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(
            f"unknown activation {name!r}; valid choices: {', '.join(activation_names())}"
        )
    allowed = [spec.parameter] if spec.parameter else []
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"activation {name!r} has no parameter {unknown[0]!r}; "
            f"valid parameters: {', '.join(allowed) if allowed else 'none'}"
        )
    value = (
        _parameter(name, spec.parameter, params.get(spec.parameter, spec.default))
        if spec.parameter
        else 0.0
    )
    if not math.isfinite(value):
        raise ValueError(f"{spec.parameter} of {name!r} must be finite, got {value}")
    if name == "softplus" and value <= 0:
        raise ValueError(f"beta of 'softplus' must be > 0, got {value}")
    if name == "leaky_relu" and value <= 0:
        raise ValueError(f"alpha of 'leaky_relu' must be > 0 (alpha = 0 is relu), got {value}")
    if name == "elu" and value <= 0:
        raise ValueError(f"alpha of 'elu' must be > 0, got {value}")
    return Activation(
        name=name,
        parameter=value,
        strictly_monotone=spec.strictly_monotone,
        smooth=spec.smooth or (name == "elu" and value == 1.0),
        derivative_can_vanish=spec.derivative_can_vanish,
        code=CODES[name],
    )


def _parameter(name: str, parameter: str, given: Any) -> float:
    """An activation's parameter as float: an int or float (Python or numpy), not bool, not
    text (float("0.1") would read it), not an array. (jacgeom._validation.real's rule; the
    registry imports nothing of jacgeom.)"""
    if isinstance(given, (bool, np.bool_)) or not isinstance(
        given, (int, float, np.integer, np.floating)
    ):
        shown = repr(given) if isinstance(given, (str, bytes)) else str(given)[:80]
        raise TypeError(
            f"{parameter} of {name!r} must be a real number, got {type(given).__name__} {shown}"
        )
    try:
        return float(given)
    except OverflowError:  # an int beyond the float range, such as 10**400
        raise ValueError(f"{parameter} of {name!r} must be finite, got {given}") from None
