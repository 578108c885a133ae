"""One place for the dtype, shape and finiteness checks of every public function.

Policy (the same for every kernel):

- float32 and float64 stay as they are; integer and bool become float64; float16 becomes
  float32; complex, object, string and other dtypes raise TypeError naming the argument.
- Several float arguments are computed in their common type (float32 with float64 gives
  float64).
- Shapes are checked before any kernel runs; messages name the argument, the shape given and
  the shape expected.
- ``check_finite=True`` rejects NaN and Inf with ValueError.
- Kernels receive C-contiguous arrays of the exact dtype; a copy is made only when the input
  is not already one, so inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating[Any]]


def to_numpy(x: Any) -> Any:
    """A numpy view (or copy) of an array from any library (jacgeom.interop.to_numpy).

    A torch tensor is detached from its graph, copied to the CPU if it is elsewhere,
    widened to float32 from float16 / bfloat16 (which numpy lacks), and its lazy negative
    and conjugate bits resolved: DLPack does not carry them, so a view would read -W as W.
    """
    if type(x).__module__.startswith("torch"):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype.is_floating_point and t.element_size() < 4:
            t = t.float()
        t = t.resolve_conj().resolve_neg()
        try:
            return np.from_dlpack(t)
        except (TypeError, ValueError, RuntimeError, BufferError):
            return t.numpy()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__") and not isinstance(x, np.generic):
        try:
            return np.from_dlpack(x)
        except (TypeError, ValueError, RuntimeError, BufferError):
            pass
    return np.asarray(x)


def as_float_array(value: Any, name: str) -> FloatArray:
    """Convert ``value`` to a float32 or float64 ndarray following the dtype policy."""
    if isinstance(value, np.ma.MaskedArray):
        # Its masked entries hold arbitrary data that every kernel would read.
        raise TypeError(
            f"{name} is a masked array; pass {name}.filled(value) or the values you mean"
        )
    if isinstance(value, np.ndarray):
        arr = value
    elif hasattr(value, "__dlpack__") and not isinstance(value, np.generic):
        # PyTorch tensors, JAX arrays and other DLPack producers: a view, not a copy, where
        # the producer allows (to_numpy).
        try:
            arr = np.asarray(to_numpy(value))
        except (TypeError, ValueError, RuntimeError, BufferError) as exc:
            raise TypeError(
                f"{name} must be a real numeric array, could not convert: {exc}"
            ) from exc
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(
                f"{name} must be a real numeric array, could not convert: {exc}"
            ) from exc
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize < 4:
            return arr.astype(np.float32)
        if arr.dtype.itemsize > 8:
            raise TypeError(f"{name} has dtype {arr.dtype}; expected float32 or float64")
        return arr
    if kind in "biu":
        return arr.astype(np.float64)
    raise TypeError(
        f"{name} has dtype {arr.dtype}; expected a real floating, integer or bool array"
    )


def common_dtype(*arrays: FloatArray | None) -> np.dtype[Any]:
    """The floating dtype all arguments are computed in."""
    return np.result_type(*[a.dtype for a in arrays if a is not None])


def to_kernel(arr: FloatArray, dtype: np.dtype[Any]) -> FloatArray:
    """C-contiguous, aligned, native byte order, exact dtype; copies only when needed
    (the compiled kernels load whole elements: a misaligned one is undefined behaviour)."""
    out = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("="))
    return out if out.flags.aligned else out.copy()


def to_kernel_in_range(arr: FloatArray, dtype: np.dtype[Any], name: str, owner: str) -> FloatArray:
    """:func:`to_kernel` of ``arr`` into the narrower ``dtype`` of ``owner`` (a network or
    layer), refusing finite values beyond that dtype's range: the cast would make them
    infinite, and every result after it silently wrong (zeros) or blamed on
    check_finite=False. Checked whatever check_finite says: the caller passed finite
    values, so no NaN or Inf they chose to allow is at stake."""
    if arr.dtype.itemsize <= dtype.itemsize:
        return to_kernel(arr, dtype)
    with np.errstate(over="ignore"):  # the overflow is reported below, by name
        out = to_kernel(arr, dtype)
    overflowed = ~np.isfinite(out) & np.isfinite(arr)
    if overflowed.any():
        big = float(np.abs(arr[overflowed]).max())
        raise ValueError(
            f"{name} holds finite values beyond the range of the {owner}'s dtype {dtype} "
            f"(largest magnitude {big:.6g}, {dtype} holds at most "
            f"{float(np.finfo(dtype).max):.6g}); scale {name} or use a float64 {owner}"
        )
    return out


def check_finite_arrays(check: bool, **arrays: FloatArray | None) -> None:
    if not flag("check_finite", check):  # None or "no" would switch the check off
        return
    for name, arr in arrays.items():
        if arr is not None and arr.size and not np.isfinite(arr).all():
            raise ValueError(
                f"{name} contains NaN or Inf; pass check_finite=False to compute anyway"
            )


def all_finite(*arrays: FloatArray | None) -> bool:
    """Whether every array given holds only finite values (None counts as finite)."""
    return all(a is None or bool(np.isfinite(a).all()) for a in arrays)


def check_ndim(arr: FloatArray, name: str, allowed: tuple[int, ...], expected: str) -> None:
    if arr.ndim not in allowed:
        raise ValueError(
            f"{name} has {arr.ndim} dimension(s) (shape {arr.shape}); expected {expected}"
        )


def rows(arr: Any, name: str, width: int, reason: str) -> tuple[Any, bool]:
    """A 1-D row of length ``width`` or a (B, width) batch of rows, as (B, width).

    Returns the 2-D array and whether the input was 1-D. ``reason`` completes the message
    "{name} has shape S but {reason}; expected {name} of shape (width,) / (B, width)".
    """
    check_ndim(
        arr, name, (1, 2), f"a 1-D array of shape ({width},) or a batch of shape (B, {width})"
    )
    squeeze = arr.ndim == 1
    arr2 = arr[None, :] if squeeze else arr
    if arr2.shape[1] != width:
        want = f"({width},)" if squeeze else f"(B, {width})"
        raise ValueError(
            f"{name} has shape {arr.shape} but {reason}; expected {name} of shape {want}"
        )
    return arr2, squeeze


def layer_inputs(
    W: Any, X: Any, b: Any, check_finite: bool
) -> tuple[FloatArray, FloatArray, FloatArray | None, bool]:
    """Validate (W, X, b) of a single layer.

    Returns
    -------
    W : (m, n) C-contiguous
    X : (B, n) C-contiguous (a 1-D X becomes one row)
    b : (m,) C-contiguous or None
    squeeze : bool
        True when X was 1-D, so results drop the batch axis.
    """
    Wf = as_float_array(W, "W")
    Xf = as_float_array(X, "X")
    bf = None if b is None else as_float_array(b, "b")
    check_ndim(Wf, "W", (2,), "a 2-D weight matrix of shape (m, n)")
    m, n = Wf.shape
    X2, squeeze = rows(Xf, "X", n, f"W has {n} columns")
    if bf is not None and bf.shape != (m,):
        raise ValueError(f"b has shape {bf.shape} but W has {m} rows; expected b of shape ({m},)")
    dtype = common_dtype(Wf, X2, bf)
    check_finite_arrays(check_finite, W=Wf, X=X2, b=bf)
    return (
        to_kernel(Wf, dtype),
        to_kernel(X2, dtype),
        None if bf is None else to_kernel(bf, dtype),
        squeeze,
    )


def tolerances(tol: Any, rtol: Any) -> tuple[float | None, float | None]:
    """Validate the rank tolerances (numpy.linalg.matrix_rank's meaning)."""
    if tol is not None and rtol is not None:
        raise ValueError("tol and rtol cannot both be given; pass one of them")
    out: list[float | None] = []
    for name, value in (("tol", tol), ("rtol", rtol)):
        if value is None:
            out.append(None)
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise TypeError(f"{name} must be a real scalar or None, got {type(value).__name__}")
        try:
            v = float(value)
        except OverflowError:  # an int beyond the float range, such as 10**400
            v = math.inf
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        out.append(v)
    return out[0], out[1]


def mask_array(mask: Any, m: int) -> tuple[NDArray[np.bool_], bool]:
    """Validate a row mask for a W with m rows: bool, or integers holding only 0 and 1.

    Returns the (B, m) bool mask and whether the input was 1-D.
    """
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iu":
            raise TypeError(
                f"mask has dtype {arr.dtype}; expected bool (or integers holding only 0 and 1)"
            )
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError("mask holds integers other than 0 and 1; expected a 0/1 or bool mask")
        arr = arr.astype(bool)
    return rows(arr, "mask", m, f"W has {m} rows")


def weight_matrix(W: Any, check_finite: bool) -> FloatArray:
    """Validate a lone 2-D weight matrix W (m, n) and return it ready for a kernel."""
    Wf = as_float_array(W, "W")
    check_ndim(Wf, "W", (2,), "a 2-D weight matrix of shape (m, n)")
    check_finite_arrays(check_finite, W=Wf)
    return to_kernel(Wf, Wf.dtype)


def output_array(
    out: Any, shape: tuple[int, ...], dtype: np.dtype[Any], inputs: tuple[Any, ...]
) -> None:
    """Check a caller-provided output array: exact shape and dtype, C-contiguous, writeable,
    sharing no memory with the inputs."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}; expected {dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}; expected {shape}")
    if not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        raise ValueError("out must be C-contiguous, aligned and writeable")
    for a in inputs:
        if a is not None and np.shares_memory(out, a):
            raise ValueError("out shares memory with an input")


def per_layer(
    value: Any,
    L: int,
    name: str,
    is_one: Callable[[Any], bool],
    what: str,
    entry_error: type[Exception] = TypeError,
) -> tuple[Any, ...]:
    """A per-layer setting checked: one value for every layer (``is_one``), or a sequence of
    L of them; the L values. ``what`` describes one value in the errors."""
    if is_one(value):
        return (value,) * L
    if isinstance(value, (str, bytes, np.ndarray)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be {what} or a sequence of {L} of them (one per layer), "
            f"got {type(value).__name__}"
        )
    if len(value) != L:
        raise ValueError(f"{name} has {len(value)} entries for {L} layers; give one or {L}")
    for i, v in enumerate(value):
        if not is_one(v):
            raise entry_error(f"{name}[{i}] must be {what}, got {v!r}")
    return tuple(value)


def one_if_uniform(values: Sequence[Any]) -> Any:
    """A per-layer setting as Network and NetworkSpec report it: the one value where every
    layer has it, else the tuple of values."""
    out = tuple(values)
    return out[0] if len(set(out)) == 1 else out


def residual_flags(residual: Any, L: int) -> tuple[bool, ...]:
    """``residual`` checked: one bool for every layer, or a sequence of L bools."""

    def is_bool(v: Any) -> bool:
        return isinstance(v, (bool, np.bool_))

    return tuple(bool(r) for r in per_layer(residual, L, "residual", is_bool, "a bool"))


def norm_flags(norm: Any, L: int) -> tuple[bool, ...]:
    """``norm`` checked: None or "layer" for every layer, or a sequence of L of them; True
    where a layer is normalised."""
    if isinstance(norm, str) and norm != "layer":
        raise ValueError(f"unknown norm {norm!r}; valid choices: None, 'layer'")

    def is_norm(v: Any) -> bool:
        return v is None or (isinstance(v, str) and v == "layer")

    flags = per_layer(norm, L, "norm", is_norm, "None or 'layer'", ValueError)
    return tuple(v == "layer" for v in flags)


def integer(name: str, value: Any) -> int:
    """An int or numpy integer as int; TypeError naming ``name`` for anything else (4.7 is
    refused, not truncated; "3" is text; True is not a count)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise TypeError(f"{name} must be an int, got {type(value).__name__} {shown(value)}")


def activation_parameter(act: Any, dtype: np.dtype[Any], owner: str) -> None:
    """ValueError where ``act``'s parameter (alpha, beta) rounded to ``dtype``, as phi' uses
    it, is not a normal number of that dtype: infinite (alpha = 1e39 in float32 makes phi'
    infinite at finite inputs) or subnormal or zero where the parameter is not (beta =
    1e-46 becomes 0 and softplus NaN; alpha = 1.2e-44 becomes 1.26e-44, a 5% change no
    log-space computation of the unrounded value would agree with). ``owner`` names the
    dtype's source in the message."""
    with np.errstate(over="ignore", under="ignore"):
        rounded = dtype.type(act.parameter)
    if not np.isfinite(rounded):
        raise ValueError(
            f"the parameter of activation {act.name!r} ({act.parameter!r}) overflows "
            f"{dtype}, {owner}; use float64 or a smaller parameter"
        )
    if act.parameter != 0 and abs(float(rounded)) < float(np.finfo(dtype).tiny):
        raise ValueError(
            f"the parameter of activation {act.name!r} ({act.parameter!r}) underflows "
            f"{dtype}, {owner} (below its smallest normal number "
            f"{float(np.finfo(dtype).tiny):.3g}); use float64 or a larger parameter"
        )


def flag(name: str, value: Any) -> bool:
    """A bool (Python or numpy) as bool; TypeError naming ``name`` (1, 1.0 and "no" are not
    flags)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {shown(value)}")


def real(name: str, value: Any) -> float:
    """An int or float (Python or numpy, not bool) as float; TypeError naming ``name``."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    ):
        try:
            return float(value)
        except OverflowError:  # an int beyond the float range, such as 10**400
            raise ValueError(f"{name} must be finite, got {shown(value)}") from None
    raise TypeError(f"{name} must be a real number, got {type(value).__name__} {shown(value)}")


def shown(value: Any) -> str:
    """A value as an error message shows it: strings quoted (so "100" reads as text),
    numbers as printed (np.float64(3.0) as 3.0), at most 80 characters."""
    return repr(value) if isinstance(value, (str, bytes)) else str(value)[:80]


def seed(value: Any) -> Any:
    """A seed for numpy.random.default_rng: None, an int >= 0 or a sequence of them, a
    SeedSequence, BitGenerator or Generator; TypeError or ValueError naming ``seed``."""
    kinds = (np.random.SeedSequence, np.random.BitGenerator, np.random.Generator)
    if value is None or isinstance(value, kinds):
        return value
    if not isinstance(value, (list, tuple, np.ndarray)):
        if integer("seed", value) < 0:
            raise ValueError(f"seed must be >= 0, got {value}")
        return int(value)
    items = value.ravel().tolist() if isinstance(value, np.ndarray) else list(value)
    entries = [integer(f"seed[{i}]", v) for i, v in enumerate(items)]
    if min(entries, default=0) < 0:
        raise ValueError(f"seed must be >= 0 (every entry), got {shown(value)}")
    return entries
