"""Kernel layers, the seed's alternative to pointwise activations: F(x) = A k(x) with
k_j(x) = K(x, c_j) for centers c_1, ..., c_p.

The Jacobian is J(x) = A grad k(x), grad k(x) the (p, n) matrix of the gradients of
K(., c_j) at x: a dense smooth map instead of a row mask, so no row of a weight matrix is ever
deleted exactly; rank is lost only where grad k(x) degenerates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _backends, _dispatch, _validation
from .typing import BackendName, IntArray

__all__ = ["KernelLayer"]

FloatArray = NDArray[np.floating[Any]]
_KERNELS = ("rbf", "laplacian", "polynomial")
# How many times the direct formula's rounding error the gemm form of |x - c|^2 may have
# before a pair is summed from its differences: 64 gives up at most 6 bits of the exponent
# gamma |x - c|^2 (relative 1e-12 at n = 64) and leaves clustered data, whose pairs lose a
# few bits, to the gemm.
_REDO_FACTOR = 64.0


class KernelLayer:
    """F(x) = A k(x), k_j(x) = K(x, c_j).

    Parameters
    ----------
    centers : (p, n) array_like
        The centers c_j.
    coefficients : (m, p) array_like
        A; row i holds the coefficients alpha_i of output i.
    kernel : {"rbf", "laplacian", "polynomial"} or (K, grad_K), default "rbf"
        rbf: exp(-gamma |x - c|^2); laplacian: exp(-gamma |x - c|_1); polynomial:
        (x . c + coef0)^degree. A custom positive-definite kernel is a pair of callables
        K(X (B, n), C (p, n)) -> (B, p) and grad_K(X, C) -> (B, p, n), the gradients in x.
    gamma : float, default 1.0
    degree : int, default 3
    coef0 : float, default 1.0

    Examples
    --------
    >>> import numpy as np
    >>> layer = KernelLayer(np.eye(2), np.array([[1.0, -1.0]]), gamma=0.5)
    >>> layer.jacobian([[0.0, 0.0]]).round(6).tolist()
    [[[0.606531, -0.606531]]]
    """

    def __init__(
        self,
        centers: ArrayLike,
        coefficients: ArrayLike,
        kernel: str | tuple[Callable[..., Any], Callable[..., Any]] = "rbf",
        gamma: float = 1.0,
        degree: int = 3,
        coef0: float = 1.0,
    ) -> None:
        C = _validation.as_float_array(centers, "centers")
        A = _validation.as_float_array(coefficients, "coefficients")
        _validation.check_ndim(C, "centers", (2,), "a 2-D array of shape (p, n)")
        _validation.check_ndim(A, "coefficients", (2,), "a 2-D array of shape (m, p)")
        if A.shape[1] != C.shape[0]:
            raise ValueError(
                f"coefficients has shape {A.shape} but there are {C.shape[0]} centers; "
                f"expected coefficients of shape (m, {C.shape[0]})"
            )
        _validation.check_finite_arrays(True, centers=C, coefficients=A)
        if isinstance(kernel, str):
            if kernel not in _KERNELS:
                raise ValueError(f"unknown kernel {kernel!r}; valid choices: {', '.join(_KERNELS)}")
        elif not (isinstance(kernel, tuple) and len(kernel) == 2 and all(map(callable, kernel))):
            raise TypeError("kernel must be a name or a pair of callables (K, grad_K)")
        for name, value in (("gamma", gamma), ("coef0", coef0)):
            if not np.isfinite(_validation.real(name, value)):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
        if isinstance(degree, (bool, np.bool_)) or not isinstance(degree, (int, np.integer)):
            raise TypeError(f"degree must be an int, got {type(degree).__name__}")
        if degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree!r}")
        dtype = _validation.common_dtype(C, A)
        self.centers = np.array(C, dtype=dtype)
        self.coefficients = np.array(A, dtype=dtype)
        self.kernel = kernel
        self.gamma, self.degree, self.coef0 = float(gamma), int(degree), float(coef0)
        self.dtype = dtype

    @property
    def input_dim(self) -> int:
        return int(self.centers.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.coefficients.shape[0])

    def _inputs(self, X: Any) -> tuple[FloatArray, bool]:
        Xf = _validation.as_float_array(X, "X")
        n = self.input_dim
        X2, squeeze = _validation.rows(Xf, "X", n, f"the centers have {n} coordinates")
        _validation.check_finite_arrays(True, X=X2)
        return _validation.to_kernel_in_range(X2, self.dtype, "X", "layer"), squeeze

    def features(self, X: ArrayLike) -> FloatArray:
        """k(x) for every sample, (B, p)."""
        Xk, squeeze = self._inputs(X)
        out = self._k(Xk)
        return out[0] if squeeze else out

    def _k(self, X: FloatArray) -> FloatArray:
        """k(x) (B, p) of rows X in the layer's dtype; a non-finite value from finite X is a
        FloatingPointError (overflow of a polynomial kernel, a custom K's NaN)."""
        C = self.centers
        if not isinstance(self.kernel, str):
            k = _kernel_output(self.kernel[0](X, C), "K", (X.shape[0], C.shape[0]), self.dtype)
        elif self.kernel == "rbf":
            k = np.exp(-self.gamma * self._squared_distances(X))
        elif self.kernel == "laplacian":
            with np.errstate(over="ignore"):  # |x - c| beyond the float range: k = 0
                k = np.exp(-self.gamma * np.abs(X[:, None, :] - C[None]).sum(-1))
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                k = (X @ C.T + self.coef0) ** self.degree
        _check_finite_output(k, X, "kernel values k(x)")
        return k

    def _squared_distances(self, X: FloatArray) -> FloatArray:
        """|x - c_j|^2 (B, p): by one gemm, |x|^2 - 2 x.c + |c|^2 with the origin moved to
        the centres' mean, and from the differences where that is not accurate enough.

        The expansion's rounding error is about (n + 2) eps (|x|^2 + |c|^2) against the
        difference's (n + 2) eps |x - c|^2: where |x|^2 + |c|^2 exceeds _REDO_FACTOR
        max(|x - c|^2, 1 / gamma) (points near centres far from the origin: a timestamp
        feature with a 10-second width lost everything, exp(-gamma d^2) 0.077 for 0.88), or
        where it overflows (inf - inf is NaN), the pair is summed from its differences
        instead. So gamma |x - c|^2, the exponent, is within _REDO_FACTOR (n + 2) eps
        max(gamma |x - c|^2, 1) of its value."""
        X0, C0 = X, self.centers
        with np.errstate(over="ignore", invalid="ignore"):
            mean = C0.mean(axis=0) if C0.shape[0] else np.zeros(C0.shape[1], C0.dtype)
            if np.all(np.isfinite(mean)):
                X, C = X0 - mean, C0 - mean
            else:
                X, C = X0, C0
            x2, c2 = np.sum(X * X, 1), np.sum(C * C, 1)
            d2 = x2[:, None] - 2 * X @ C.T + c2[None, :]
            # Rows whose every pair is within the bound need no pass over (B, p) at all.
            floor = 1.0 / self.gamma
            unsure = np.flatnonzero(~(x2 + c2.max(initial=0.0) <= _REDO_FACTOR * floor))
            sub = d2[unsure]
            size = x2[unsure, None] + c2[None, :]
            redo = ~np.isfinite(sub) | (size > _REDO_FACTOR * np.maximum(sub, floor))
        rows, cols = np.nonzero(redo)
        rows = unsure[rows]
        step = max(1, (1 << 22) // max(1, C0.shape[1]))  # about 32 MB of differences a time
        for start in range(0, rows.size, step):
            r, c = rows[start : start + step], cols[start : start + step]
            with np.errstate(over="ignore"):
                diff = X0[r] - C0[c]  # unshifted: a shift may overflow where this does not
                d2[r, c] = np.einsum("ij,ij->i", diff, diff)  # +inf where it overflows
        return np.maximum(d2, 0)

    def _grad_k(self, X: FloatArray, k: FloatArray | None = None) -> FloatArray:
        """(B, p, n): gradient in x of K(x, c_j); k = self._k(X) when already computed."""
        C = self.centers
        if not isinstance(self.kernel, str):
            shape = (X.shape[0], C.shape[0], C.shape[1])
            grad = _kernel_output(self.kernel[1](X, C), "grad_K", shape, self.dtype)
            _check_finite_output(grad, X, "kernel gradients grad_K(x)")
            return grad
        k = self._k(X) if k is None else k
        with np.errstate(over="ignore", invalid="ignore"):
            diff = X[:, None, :] - C[None]
            if self.kernel == "rbf":
                # k = 0 where |x - c| is huge: the gradient is 0 there, not 0 * inf
                grad = np.where(k[:, :, None] == 0, 0, -2 * self.gamma * k[:, :, None] * diff)
            elif self.kernel == "laplacian":
                grad = -self.gamma * k[:, :, None] * np.sign(diff)
            else:
                base = (X @ C.T + self.coef0) ** (self.degree - 1)
                grad = self.degree * base[:, :, None] * C[None]
        grad = grad.astype(self.dtype, copy=False)
        _check_finite_output(grad, X, "kernel gradients grad k(x)")
        return grad

    def _astype(self, dtype: np.dtype[Any]) -> KernelLayer:
        """The same layer computing in ``dtype``."""
        if dtype == self.dtype:
            return self
        return self._frozen(dtype)

    def _frozen(self, dtype: np.dtype[Any]) -> KernelLayer:
        """A copy computing in ``dtype`` whose arrays are read-only: a Network's layers do
        not change when the caller later writes into the arrays it built them from."""
        layer = KernelLayer(
            self.centers.astype(dtype),
            self.coefficients.astype(dtype),
            self.kernel,
            self.gamma,
            self.degree,
            self.coef0,
        )
        layer.centers.setflags(write=False)
        layer.coefficients.setflags(write=False)
        return layer

    def _forward(self, X: FloatArray) -> FloatArray:
        """F(x) (B, m) of validated rows X in the layer's dtype."""
        with np.errstate(over="ignore", invalid="ignore"):
            F = self._k(X) @ self.coefficients.T
        _check_finite_output(F, X, "output A k(x)")
        return F

    def _forward_jacobian(self, X: FloatArray) -> tuple[FloatArray, FloatArray]:
        """F(x) (B, m) and J(x) (B, m, n) of validated rows X in the layer's dtype."""
        k = self._k(X)
        with np.errstate(over="ignore", invalid="ignore"):
            F = k @ self.coefficients.T
            J = np.matmul(self.coefficients, self._grad_k(X, k))
        _check_finite_output(F, X, "output A k(x)")
        _check_finite_output(J, X, "Jacobian A grad k(x)")
        return F, J

    def forward(self, X: ArrayLike) -> FloatArray:
        """F(x) = A k(x), (B, m)."""
        Xk, squeeze = self._inputs(X)
        out = self._forward(Xk)
        return out[0] if squeeze else out

    def _jacobian(self, X: FloatArray) -> FloatArray:
        with np.errstate(over="ignore", invalid="ignore"):
            J = np.matmul(self.coefficients, self._grad_k(X))
        _check_finite_output(J, X, "Jacobian A grad k(x)")
        return J

    def jacobian(self, X: ArrayLike) -> FloatArray:
        """J(x) = A grad k(x), (B, m, n).

        Raises
        ------
        FloatingPointError
            Where a value overflows (a polynomial kernel at large x) or a custom kernel
            returns NaN or Inf: no Jacobian exists in floating point.
        """
        Xk, squeeze = self._inputs(X)
        out = self._jacobian(Xk)
        return out[0] if squeeze else out

    def pullback_metric(self, X: ArrayLike) -> FloatArray:
        """J^T J, (B, n, n)."""
        J = self.jacobian(X)
        return np.swapaxes(J, -1, -2) @ J

    def singular_values(self, X: ArrayLike, backend: BackendName = "auto") -> FloatArray:
        """Singular values of J(x), descending, (B, min(m, n))."""
        be = _backends.resolve(backend)
        Xk, squeeze = self._inputs(X)
        s = _dispatch.batched_singular_values(self._jacobian(Xk), be)
        return s[0] if squeeze else s

    def rank(self, X: ArrayLike, tol: float | None = None, rtol: float | None = None) -> IntArray:
        """numpy.linalg.matrix_rank of J(x) for every sample, (B,) int64."""
        tol, rtol = _validation.tolerances(tol, rtol)
        s = np.atleast_2d(self.singular_values(X))
        shape = (self.output_dim, self.input_dim)
        out = _dispatch.matrix_rank_count(s, shape, _dispatch.Tolerance(tol, rtol))
        return out[0] if np.ndim(X) == 1 else out

    def rkhs_norms(self) -> FloatArray:
        """||F_i||_H = sqrt(alpha_i^T K alpha_i) of each output, (m,), K the centers' Gram."""
        G = self._k(self.centers)
        q = np.einsum("ip,pq,iq->i", self.coefficients, G, self.coefficients)
        return np.sqrt(np.maximum(q, 0))


def _kernel_output(
    value: Any, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> FloatArray:
    """A custom kernel's result as a real array of the expected shape, in the layer's dtype:
    TypeError for complex or non-numeric values, ValueError naming the shape otherwise (a
    (B,) K was broadcast into wrong features; complex values lost their imaginary part)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"the custom kernel's {name} returned dtype {arr.dtype}; expected real numbers"
        )
    if arr.shape != shape:
        raise ValueError(f"the custom kernel's {name} returned shape {arr.shape}; expected {shape}")
    return np.asarray(arr, dtype=dtype)


def _check_finite_output(value: FloatArray, X: FloatArray, what: str) -> None:
    # From finite inputs a NaN or Inf is an overflow or a custom kernel's fault, and no
    # spectrum or rank would be right; from non-finite inputs (a network run with
    # check_finite=False) the values propagate.
    if not np.isfinite(value).all() and np.isfinite(X).all():
        raise FloatingPointError(
            f"the kernel layer's {what} holds NaN or Inf at finite inputs (an overflow, or a "
            "custom kernel's NaN or Inf); no Jacobian, spectrum or rank exists"
        )
