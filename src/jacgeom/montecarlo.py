"""Monte Carlo of rank collapse: how often, and by how much, activations make the Jacobian
of a random network lose rank and conditioning.

An experiment is a plain, serialisable :class:`Spec`. :func:`run` splits its samples into
chunks of ``chunk_size``; chunk i draws from two SFC64 generators seeded by
``SeedSequence(seed, spawn_key=(i,))`` and ``(i, 1)`` (the second only for weights that the
layer ranks alone need), so results depend only on (spec, seed, chunk size) (and the sampler
version, ``_SAMPLER``), never on the executor, the number of workers or the order in which
chunks finish. (Rows of relu layers are placed by a numba kernel, or by its numpy twin where
numba is not installed: the two agree to rounding, not bit for bit.) Chunks run locally on
a thread pool (the kernels release the GIL) or on any ``concurrent.futures.Executor``, such
as a ``dask.distributed`` client's ``get_executor()``. With ``out=DIR`` every finished chunk
is written atomically and a rerun resumes; a directory written by another sampler version is
refused.

Recorded per sample (arrays of :attr:`Result.data`):

=================  =========  ================================================================
key                shape      meaning
=================  =========  ================================================================
active_counts      (N, L)     units with phi'(z) != 0 in each layer
layer_ranks        (N, L)     rank of each layer's Jacobian (numpy.linalg.matrix_rank rule)
rank               (N,)       rank of the end-to-end Jacobian
log_smax, log_smin (N,)       log of its largest and smallest singular value (-inf if 0)
log_cond           (N,)       log_smax - log_smin (inf when singular)
frobenius2         (N,)       squared Frobenius norm
log_volume         (N,)       sum of log singular values when n_L >= n_0 (-inf if rank < n_0),
                              NaN when n_L < n_0
=================  =========  ================================================================

``Spec(layer_ranks=False)`` leaves out ``layer_ranks``, ``Spec(spectra=False)`` the five keys
from log_smax to log_volume.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _backends, theory
from .activations import Activation
from .activations import activation as _lookup
from .network import Network, _derivatives, init_std, random_orthogonal

__all__ = ["Result", "Spec", "run", "sweep", "sweep_table"]

_INPUTS = ("gaussian", "sphere", "manifold")
_MANIFOLDS = ("linear", "curved")
_LAYERS = ("activation", "kernel")
_KERNELS = ("rbf", "laplacian", "polynomial")
RETRIES = 2
_FORMAT = 1
# The statistics that Spec.spectra=False leaves out.
_SPECTRA = ("log_smax", "log_smin", "log_cond", "frobenius2", "log_volume")
# Version of the way a chunk turns its seed into samples (generator, order of the draws,
# block size). Checkpoint directories record it: chunks drawn another way are never mixed.
_SAMPLER = 3


@dataclasses.dataclass(frozen=True)
class Spec:
    """One Monte Carlo experiment.

    Parameters
    ----------
    widths : tuple of int, optional
        [n_0, ..., n_L]. Alternatively give ``width`` and ``depth``
        (widths = [width] * (depth + 1)).
    width, depth : int, optional
    activation : str or tuple of str, default "relu"
        One activation, or one per layer.
    init : {"he", "xavier", "lecun", "orthogonal", "gaussian"}, default "he"
    sigma_w : float, optional
        Gain for "gaussian" and "orthogonal".
    sigma_b : float, default 0.0
        Biases iid N(0, sigma_b^2).
    residual : bool, default False
    norm : {None, "layer"}, default None
    inputs : {"gaussian", "sphere", "manifold"}, default "gaussian"
        x ~ N(0, I); uniform on the unit sphere; or on a random ``manifold_dim``-dimensional
        manifold through the origin region: "linear" (a random subspace, Gaussian coordinates)
        or "curved" (the image of Gaussian coordinates under a fixed random smooth map, a
        sine embedding), fixed for the whole experiment.
    manifold_dim : int, default 2
    manifold : {"linear", "curved"}, default "curved"
    fresh_weights : bool, default True
        Every sample draws its own network (the model of THEORY.md's closed forms); False
        shares one network drawn from the seed.
    layer : {"activation", "kernel"}, default "activation"
        "kernel" replaces every layer by a kernel layer h -> A k(h) of the same widths
        (jacgeom.KernelLayer, the seed's alternative): ``centers`` Gaussian centers
        N(0, I) and coefficients N(0, 1 / centers); activation, init, sigma_w and sigma_b
        are then not used. A sweep over layer=["activation", "kernel"] puts the two side
        by side.
    kernel : {"rbf", "laplacian", "polynomial"}, default "rbf"
    centers : int, optional
        Centers per kernel layer (default n_{l-1}, the layer's input width).
    gamma : float, optional
        Kernel scale (default 1 / n_{l-1}); polynomial kernels are (x . c + 1)^3.
    layer_ranks : bool, default True
        Record the rank of each layer's Jacobian (``layer_ranks`` of the data). False leaves
        them out: with them go their certificates and the weights that only they need
        (those of columns that meet a dead unit of the layer below, then not drawn at all),
        about 40% of the time of a deep relu run with fresh weights. Every other statistic
        is the same either way: those weights come from a stream of their own.
    spectra : bool, default True
        Record the singular-value statistics of the end-to-end Jacobian (log_smax, log_smin,
        log_cond, frobenius2, log_volume). False records the ranks and active counts only,
        the job of a rank-collapse study; the ranks are the same either way. On the cpp
        backend this saves the largest singular value of every sample whose rank a
        certificate settles (about 30% of a one-layer relu run); the other backends take a
        full SVD for the rank anyway.
    samples : int, default 10000
    seed : int, default 0
    chunk_size : int, default 2000
    """

    widths: tuple[int, ...] | None = None
    width: int | None = None
    depth: int | None = None
    activation: str | tuple[str, ...] = "relu"
    init: str = "he"
    sigma_w: float | None = None
    sigma_b: float = 0.0
    residual: bool = False
    norm: str | None = None
    inputs: str = "gaussian"
    manifold_dim: int = 2
    manifold: str = "curved"
    fresh_weights: bool = True
    layer: str = "activation"
    kernel: str = "rbf"
    centers: int | None = None
    gamma: float | None = None
    layer_ranks: bool = True
    spectra: bool = True
    samples: int = 10000
    seed: int = 0
    chunk_size: int = 2000

    def __post_init__(self) -> None:
        # Normalised to explicit widths, so equal experiments compare (and serialise) equal.
        if self.widths is None and self.width is not None and self.depth is not None:
            object.__setattr__(self, "widths", (int(self.width),) * (int(self.depth) + 1))
            object.__setattr__(self, "width", None)
            object.__setattr__(self, "depth", None)
        if self.widths is not None:
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if isinstance(self.activation, list):
            object.__setattr__(self, "activation", tuple(self.activation))
        for name in ("layer_ranks", "spectra"):  # numpy bools become bools (JSON)
            if isinstance(getattr(self, name), np.bool_):
                object.__setattr__(self, name, bool(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field that is not valid (TypeError for a
        layer_ranks or spectra that is not a bool)."""
        w = self.resolved_widths()
        if len(w) < 2 or min(w) < 1:
            raise ValueError(f"widths must hold at least two positive integers, got {list(w)}")
        acts = (self.activation,) if isinstance(self.activation, str) else self.activation
        for a in acts:
            _lookup(a)
        if not isinstance(self.activation, str) and len(acts) != len(w) - 1:
            raise ValueError(f"activation has {len(acts)} entries for {len(w) - 1} layers")
        if self.init not in ("he", "xavier", "lecun", "orthogonal", "gaussian"):
            raise ValueError(
                f"unknown init {self.init!r}; valid choices: "
                "he, xavier, lecun, orthogonal, gaussian"
            )
        if self.layer not in _LAYERS:
            raise ValueError(f"unknown layer {self.layer!r}; valid choices: {', '.join(_LAYERS)}")
        if self.kernel not in _KERNELS:
            raise ValueError(
                f"unknown kernel {self.kernel!r}; valid choices: {', '.join(_KERNELS)}"
            )
        if self.centers is not None and self.centers < 1:
            raise ValueError(f"centers must be >= 1, got {self.centers}")
        if self.gamma is not None and not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma}")
        if self.layer == "kernel" and self.norm is not None:
            raise ValueError("kernel layers have no pre-activations to normalise: use norm=None")
        if self.residual and len(set(w)) != 1:
            raise ValueError(f"residual networks need equal widths, got {list(w)}")
        if self.norm not in (None, "layer"):
            raise ValueError(f"unknown norm {self.norm!r}; valid choices: None, 'layer'")
        if self.inputs not in _INPUTS:
            raise ValueError(f"unknown inputs {self.inputs!r}; valid choices: {', '.join(_INPUTS)}")
        if self.manifold not in _MANIFOLDS:
            raise ValueError(f"unknown manifold {self.manifold!r}; valid choices: linear, curved")
        if self.inputs == "manifold" and not 1 <= self.manifold_dim <= w[0]:
            raise ValueError(f"manifold_dim must be in [1, {w[0]}], got {self.manifold_dim}")
        for name in ("layer_ranks", "spectra"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.samples < 1 or self.chunk_size < 1:
            raise ValueError("samples and chunk_size must be >= 1")
        if not (math.isfinite(self.sigma_b) and self.sigma_b >= 0):
            raise ValueError(f"sigma_b must be a finite number >= 0, got {self.sigma_b}")
        if self.sigma_w is not None and not (math.isfinite(self.sigma_w) and self.sigma_w >= 0):
            raise ValueError(f"sigma_w must be a finite number >= 0, got {self.sigma_w}")

    def resolved_widths(self) -> tuple[int, ...]:
        if self.widths is not None:
            return self.widths
        if self.width is None or self.depth is None:
            raise ValueError("give widths, or width and depth")
        return (int(self.width),) * (int(self.depth) + 1)

    @property
    def n_chunks(self) -> int:
        return -(-self.samples // self.chunk_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.resolved_widths())
        d["width"] = d["depth"] = None
        if isinstance(self.activation, tuple):
            d["activation"] = list(self.activation)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(
                f"unknown spec field {unknown[0]!r}; valid fields: {', '.join(sorted(fields))}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed; ``width`` / ``depth`` rebuild uniform widths."""
        d = self.to_dict()
        if "width" in changes or "depth" in changes:
            w = self.resolved_widths()
            width = changes.pop("width", w[0])
            depth = changes.pop("depth", len(w) - 1)
            d["widths"] = [int(width)] * (int(depth) + 1)
        d.update(changes)
        return Spec.from_dict(d)


# ------------------------------------------------------------------------------ one chunk


def _chunk_rng(spec: Spec, index: int, stream: int = 0) -> np.random.Generator:
    """Generator of chunk ``index``: stream 0 draws everything but the weights that only
    the layer ranks need, which stream 1 draws (so that leaving those ranks out changes
    nothing else)."""
    # SFC64 rather than numpy's default PCG64: the normals are the largest single cost of a
    # chunk and SFC64 draws them about 20% faster here (7.6 vs 9.4 ns); it passes PractRand
    # and has no weak seeds when seeded through SeedSequence, which spawns the chunks.
    key = (index,) if stream == 0 else (index, stream)
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(spec.seed, spawn_key=key)))


def _draw_inputs(spec: Spec, rng: np.random.Generator, n: int) -> NDArray[Any]:
    n0 = spec.resolved_widths()[0]
    if spec.inputs == "gaussian":
        return rng.standard_normal((n, n0))
    if spec.inputs == "sphere":
        x = rng.standard_normal((n, n0))
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    # The manifold is fixed for the experiment: drawn from the seed alone.
    mrng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2**31, 1)))
    k = spec.manifold_dim
    basis = np.linalg.qr(mrng.standard_normal((n0, k)))[0]  # (n0, k) orthonormal
    t = rng.standard_normal((n, k))
    if spec.manifold == "linear":
        return t @ basis.T
    freq = mrng.standard_normal((k, n0))
    phase = mrng.uniform(0, 2 * np.pi, n0)
    return t @ basis.T + 0.5 * np.sin(t @ freq + phase)


def _input_norms(spec: Spec, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """|x| of n inputs, drawn from its own law where that is known: all a first layer of
    fresh iid Gaussian weights needs of x (see _block_statistics)."""
    if spec.inputs == "gaussian":
        return np.sqrt(rng.chisquare(spec.resolved_widths()[0], n))
    if spec.inputs == "sphere":
        return np.ones(n)
    return np.linalg.norm(_draw_inputs(spec, rng, n), axis=1)


def _init_std(spec: Spec, fan_in: int, fan_out: int) -> float:
    """Standard deviation of the iid Gaussian weights of one layer ("orthogonal" excluded)."""
    return init_std(spec.init, spec.sigma_w, fan_in, fan_out)


def _draw_biases(spec: Spec, rng: np.random.Generator, n: int, fan_out: int) -> NDArray[Any]:
    if spec.sigma_b:
        return rng.standard_normal((n, fan_out)) * spec.sigma_b
    return np.zeros((n, fan_out))


def _draw_weights(
    spec: Spec, rng: np.random.Generator, n: int, skip: Sequence[bool] = ()
) -> tuple[list[Any], list[Any]]:
    """Weights (n, n_l, n_(l-1)) and biases (n, n_l) of every layer; None where skip[l]."""
    w = spec.resolved_widths()
    Ws: list[Any] = []
    bs: list[Any] = []
    for l, (fan_in, fan_out) in enumerate(zip(w[:-1], w[1:], strict=True)):
        if l < len(skip) and skip[l]:
            Ws.append(None)
            bs.append(None)
            continue
        if spec.init == "orthogonal":
            W = random_orthogonal(rng, (n,), fan_out, fan_in, spec.sigma_w)
        else:
            W = rng.standard_normal((n, fan_out, fan_in))
            W *= _init_std(spec, fan_in, fan_out)
        Ws.append(W)
        bs.append(_draw_biases(spec, rng, n, fan_out))
    return Ws, bs


# Activations whose phi' is zero on a half-line: a dead unit's row of W is never needed
# beyond its pre-activation, so the conditional sampler below skips drawing it.
_DEAD_HALF_LINE = frozenset({"relu"})


def _preactivations(
    rng: np.random.Generator,
    norms: NDArray[np.float64],
    std: float,
    b: NDArray[np.float64],
    act: Activation,
    backend: str,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """u, z = std |h| u + b and phi'(z) (N, fan_out) of iid N(0, std^2) rows applied to inputs
    of norms |h| (N,): the pre-activations are independent N(b_i, std^2 |h|^2)."""
    u = rng.standard_normal(b.shape)
    z = (std * norms)[:, None] * u + b
    return u, z, _derivatives(z, act, backend)


def _draw_first_layer(
    rng: np.random.Generator,
    norms: NDArray[np.float64],
    fan_in: int,
    std: float,
    b: NDArray[np.float64],
    act: Activation,
    backend: str,
    scratch: _Scratch | None = None,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """A first layer of fresh iid N(0, std^2) weights, in the frame where x = |x| e_1.

    Rotating the input space by Q with Q x = |x| e_1 changes no recorded statistic: the
    active sets stay, the first layer's Jacobian becomes D_1 W_1 Q and the end-to-end one
    J Q (same singular values), the later layers' are untouched; and W_1 Q has the law of
    W_1 (iid Gaussian, independent of x). In that frame (norms: |x| per sample, as
    _input_norms draws it) a row is std (u_i, g_i) with u_i and g_i (n_0 - 1) iid N(0, 1),
    and z_i = std |x| u_i + b_i: the live rows are drawn, the dead ones never are. A live
    row takes n_0 normals of which the first is replaced by its u_i (cheaper than a copy
    into place). With ``scratch``, P lives in its buffer (valid until the next call).

    Returns
    -------
    P : (k, fan_in), the live rows of D W_1 / std in row-major order of (sample, unit)
    z, d : (N, fan_out), pre-activations and phi'(z), fan_out from b (N, fan_out)
    """
    u, z, d = _preactivations(rng, norms, std, b, act, backend)
    live = d != 0
    shape = (int(np.count_nonzero(live)), fan_in)
    if scratch is None:
        P = rng.standard_normal(shape)
    else:
        P = rng.standard_normal(out=scratch.take("P", shape, live.size * fan_in))
    P[:, 0] = u[live]  # the draw's first column is not used: one normal per row
    return P, z, d


def _draw_layer_given_input(
    rng: np.random.Generator,
    h: NDArray[np.float64],
    fan_out: int,
    std: float,
    b: NDArray[np.float64],
    act: Activation,
    backend: str,
    scratch: _Scratch | None = None,
    key: Any = None,
    cols: NDArray[np.bool_] | None = None,
    rest: np.random.Generator | None = None,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """One fresh iid N(0, std^2) layer applied to h, drawing only the weights that matter.

    Given h (N, n), the pre-activations z_i = w_i . h + b_i of iid Gaussian rows are
    independent N(b_i, std^2 |h|^2): they are drawn directly, as std |h| u_i + b_i. Only the
    rows with phi'(z_i) != 0 enter the Jacobian D W, and they are drawn from their law given
    z_i, which is exact (see _place_live_rows); for relu that is about half the rows. Of
    each row, the columns in ``cols`` come from rng (default: every column) and the others
    from ``rest``, or are zero when ``rest`` is None: the caller never reads them. With
    ``scratch``, W and the normals live in its buffers under ``key`` (valid until the next
    call with that key).

    Returns
    -------
    W : (N, fan_out, n), the rows of dead units zero
    z : (N, fan_out)
    d : (N, fan_out), phi'(z)
    """
    N, n = h.shape
    nonzero = h != 0
    # columns that meet h must come from rng: the conditioning acts on them
    cols = np.ones_like(nonzero) if cols is None else cols | nonzero
    u, z, d = _preactivations(rng, np.sqrt(np.einsum("ij,ij->i", h, h)), std, b, act, backend)
    live = d != 0
    rows = np.count_nonzero(live, axis=1)
    n_cols = np.count_nonzero(cols, axis=1)
    # a row has |cols| - 1 free normals there (the pivot's is u), |cols| when h = 0
    g_count = int(rows @ (n_cols - nonzero.any(axis=1)))
    W_shape = (N, fan_out, n)
    if scratch is None:
        G, W = rng.standard_normal(g_count), np.empty(W_shape)
    else:
        G = rng.standard_normal(out=scratch.take(("G", key), (g_count,), math.prod(W_shape)))
        W = scratch.take(("W", key), W_shape)
    B = np.empty(0)
    if rest is not None:
        b_count = int(rows @ (n - n_cols))
        B = rest.standard_normal(
            out=scratch.take(("B", key), (b_count,), math.prod(W_shape))
            if scratch is not None
            else np.empty(b_count)
        )
    if _backends.numba_kernels is not None:
        _backends.numba_kernels.place_live_rows(
            np.ascontiguousarray(h), cols, u, live, G, B, rest is not None, std, W
        )
    else:
        _place_live_rows(h, cols, u, live, G, B, rest is not None, std, W)
    return W, z, d


def _place_live_rows(
    h: NDArray[Any],
    cols: NDArray[np.bool_],
    u: NDArray[Any],
    live: NDArray[np.bool_],
    G: NDArray[Any],
    B: NDArray[Any],
    fill_rest: bool,
    std: float,
    W: NDArray[Any],
) -> None:
    """W[s, i] for the live units (s, i) from their law given w . h[s] = std |h[s]| u[s, i];
    zero rows for the dead units. numpy twin of jacgeom._numba.place_live_rows.

    The law: with h^ = h / |h| and H the Householder reflection that maps e_j0 to -sign(h_j0)
    h^ (j0 the first column where h is non-zero; H is the identity off the support of h),
    w = std H y with y_j0 = -sign(h_j0) u and every other y_j iid N(0, 1) is N(0, std^2 I)
    given w . h^ = std u. The y_j of the columns in ``cols`` (other than j0) are the next
    entries of G, those of the other columns the next entries of B (zero when not
    ``fill_rest``), row by row (rows in row-major order of (s, i)), columns ascending.

    Parameters
    ----------
    h : (N, n) the layer's input; its non-zero columns must be in ``cols``
    cols : (N, n) bool
    u, live : (N, m)
    G, B : 1-D, as many normals as the live rows take
    W : (N, m, n), written
    """
    N, n = h.shape
    W[~live] = 0.0
    owner = np.nonzero(live)[0]  # the sample of each live row, in row-major order
    nonzero = h != 0
    has_pivot = nonzero.any(axis=1)
    j0 = np.argmax(nonzero, axis=1)
    pivot = np.zeros((N, n), dtype=bool)
    pivot[has_pivot, j0[has_pivot]] = True
    norm = np.sqrt(np.einsum("ij,ij->i", h, h))
    hhat = h / np.where(norm > 0, norm, 1.0)[:, None]
    sgn = np.where(hhat[np.arange(N), j0] > 0, 1.0, -1.0) * has_pivot
    v = pivot + sgn[:, None] * hhat  # zero off the support of h
    Y = np.zeros((owner.size, n))
    Y[(cols & ~pivot)[owner]] = G
    if fill_rest:
        Y[~cols[owner]] = B
    Y[pivot[owner]] = -(sgn[:, None] * u)[live][has_pivot[owner]]
    V = v[owner]
    coef = 2.0 * np.einsum("ij,ij->i", V, Y) / np.maximum(np.einsum("ij,ij->i", V, V), 1.0)
    W[live] = std * (Y - coef[:, None] * V)


class _Scratch:
    """Buffers that the blocks of one chunk reuse: each block's large per-layer arrays would
    otherwise be fresh memory that the system zeroes page by page (a fifth of a depth-10
    chunk's time), since the allocator hands blocks of this size back to it when freed."""

    def __init__(self) -> None:
        self._buffers: dict[Any, NDArray[np.float64]] = {}

    def take(self, key: Any, shape: tuple[int, ...], capacity: int = 0) -> NDArray[np.float64]:
        """An uninitialised float64 array of this shape; ``capacity`` elements reserved."""
        size = math.prod(shape)
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            buf = self._buffers[key] = np.empty(max(size, capacity))
        return buf[:size].reshape(shape)


def _shared_network(spec: Spec) -> Network:
    seed = np.random.SeedSequence(spec.seed, spawn_key=(2**31, 0))
    return Network.random(
        list(spec.resolved_widths()),
        activation=_activations(spec),
        init=spec.init,
        sigma_w=spec.sigma_w,
        sigma_b=spec.sigma_b,
        residual=spec.residual,
        norm=spec.norm,
        seed=np.random.default_rng(seed),
    )


def _activations(spec: Spec) -> list[str]:
    L = len(spec.resolved_widths()) - 1
    return [spec.activation] * L if isinstance(spec.activation, str) else list(spec.activation)


def _count(s: NDArray[np.float64], shape: tuple[int, int]) -> NDArray[np.int64]:
    if s.shape[1] == 0:
        return np.zeros(s.shape[0], dtype=np.int64)
    tol = s[:, :1] * max(shape) * np.finfo(s.dtype).eps
    return np.count_nonzero(s > tol, axis=1).astype(np.int64)


def _singular_values(A: NDArray[Any], backend: str) -> NDArray[Any]:
    A = np.ascontiguousarray(A)
    if backend == "numpy":
        return np.linalg.svd(A, compute_uv=False)
    kernels = _backends.core if backend == "cpp" else _backends.numba_kernels
    assert kernels is not None
    with _backends.single_threaded_blas():
        return kernels.batched_singular_values(A)


def chunk_statistics(spec: Spec, index: int, backend: str = "auto") -> dict[str, NDArray[Any]]:
    """Statistics of the samples of chunk ``index`` (a pure function of spec and index).

    Returns
    -------
    dict of per-sample arrays, keys as in the module docstring
    """
    be = _backends.resolve(backend)
    start = index * spec.chunk_size
    n = min(spec.chunk_size, spec.samples - start)
    if n <= 0:
        raise ValueError(f"chunk {index} is outside the {spec.n_chunks} chunks of this spec")
    rngs = (_chunk_rng(spec, index), _chunk_rng(spec, index, 1))
    block, scratch = _block_size(spec), _Scratch()
    parts = [
        _block_statistics(spec, rngs, min(block, n - s), be, scratch) for s in range(0, n, block)
    ]
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# A chunk's samples go through the layers in blocks of about this many bytes of per-sample
# matrices: the block's arrays stay in the last-level cache between the passes over them, and
# the allocator reuses their memory instead of taking fresh pages from the system (which it
# zeroes: a fifth of the time of a depth-10 chunk at 1000 samples per block).
_BLOCK_BYTES = 16 << 20


def _block_size(spec: Spec) -> int:
    """Samples per block: a function of the widths alone, so the random stream a chunk
    consumes, and hence every result, does not depend on anything else."""
    w = spec.resolved_widths()
    per_sample = 8 * (sum(a * b for a, b in zip(w[:-1], w[1:], strict=True)) + w[0] * w[-1])
    if spec.layer == "kernel":
        per_sample *= 3  # centers, coefficients and feature gradients per layer
    return max(1, _BLOCK_BYTES // per_sample)


def _block_statistics(
    spec: Spec,
    rngs: tuple[np.random.Generator, np.random.Generator],
    n: int,
    be: str,
    scratch: _Scratch,
) -> dict[str, NDArray[Any]]:
    """Statistics of the next n samples drawn from the chunk's two streams (one block)."""
    rng, rest_rng = rngs
    widths = spec.resolved_widths()
    L, n0, nL = len(widths) - 1, widths[0], widths[-1]
    if spec.layer == "kernel":
        X = _draw_inputs(spec, rng, n)
        return _spectral_statistics(*_kernel_chain(spec, rng, X, be), be, None, spec.spectra)
    acts = [_lookup(a) for a in _activations(spec)]
    plain = not spec.residual and spec.norm is None
    # Plain layers of iid Gaussian weights with a dead half-line are drawn layer by layer,
    # given their input (_draw_layer_given_input); the others all at once, up front.
    conditional = [
        spec.fresh_weights and plain and spec.init != "orthogonal" and a in _DEAD_HALF_LINE
        for a in _activations(spec)
    ]
    # A conditional first layer needs |x| only (_draw_first_layer).
    X = _input_norms(spec, rng, n) if conditional[0] else _draw_inputs(spec, rng, n)
    if spec.fresh_weights:
        Ws, bs = _draw_weights(spec, rng, n, skip=conditional)
    else:
        net = _shared_network(spec)
        Ws = [np.broadcast_to(W, (n,) + W.shape) for W in net.weights]
        bs = [np.broadcast_to(b, (n,) + b.shape) for b in net.biases]
    # The kernels take one shared (m, n) W, or one per sample (n, m, n) without copies.
    kernel_Ws = [W if spec.fresh_weights else W[0] for W in Ws]
    active = np.empty((n, L), dtype=np.int64)
    layer_ranks = np.empty((n, L), dtype=np.int64) if spec.layer_ranks else None
    Ds: list[NDArray[Any]] = []
    layer_jacobians: list[NDArray[Any]] = []
    # One plain layer with n_1 <= n_0: its Jacobian is the end-to-end one, and both ranks use
    # the same tolerance (sigma_max * n_0 * eps), so it is computed once.
    end_to_end_is_layer = plain and L == 1 and nL <= n0
    # One conditional layer on the cpp backend: its live rows go to the spectral summary as
    # they are drawn, packed, never placed into a (n, n_1, n_0) array.
    packed = None
    h = X
    for l in range(L):
        if conditional[l]:
            b = _draw_biases(spec, rng, n, widths[l + 1])
            std = _init_std(spec, widths[l], widths[l + 1])
            if l == 0:
                P, arg, d = _draw_first_layer(rng, h, n0, std, b, acts[0], be, scratch)
                if end_to_end_is_layer and be == "cpp":
                    W = None  # packed below, with the counts
                else:
                    W = scratch.take(("W", 0), (n, widths[1], n0))
                    W.fill(0.0)
                    W[d != 0] = std * P
            else:
                # Columns of units dead in the layer below meet zeros of D in J: only this
                # layer's rank needs them, and they come from a stream of their own.
                rest = rest_rng if spec.layer_ranks else None
                W, arg, d = _draw_layer_given_input(
                    rng, h, widths[l + 1], std, b, acts[l], be, scratch, l, Ds[-1] != 0, rest
                )
            Ws[l] = kernel_Ws[l] = W
        else:
            W = Ws[l]
            z = np.matmul(W, h[:, :, None])[:, :, 0] + bs[l]
            arg = z
            if spec.norm == "layer":
                mu = z.mean(axis=1, keepdims=True)
                sigma = np.sqrt(np.mean((z - mu) ** 2, axis=1) + 1e-5)
                arg = (z - mu) / sigma[:, None]
            d = _derivatives(np.ascontiguousarray(arg), acts[l], be)
        active[:, l] = np.count_nonzero(d, axis=1)
        if conditional[l] and W is None:
            packed = (P, np.ascontiguousarray(active[:, l]), std)
        if l + 1 < L:  # the last layer's output is not needed
            a = acts[l].phi(arg)
            h = h + a if spec.residual else a
        if plain:
            Ds.append(np.ascontiguousarray(d))
            if layer_ranks is None or end_to_end_is_layer:
                pass  # not recorded, or filled from the end-to-end rank below
            elif be == "cpp":
                assert _backends.core is not None
                with _backends.single_threaded_blas():
                    layer_ranks[:, l] = _backends.core.masked_rank(
                        np.ascontiguousarray(kernel_Ws[l]), Ds[-1], None, 0, 0.0, False
                    )[0]
            else:
                A = d[:, :, None] * W
                layer_ranks[:, l] = _rank_of_rows(A, d, be)
        else:
            assert W is not None
            m = W.shape[1]
            A = W
            if spec.norm == "layer":
                JN = (np.eye(m) - 1.0 / m - arg[:, :, None] * arg[:, None, :] / m) / sigma[
                    :, None, None
                ]
                A = JN @ W
            A = d[:, :, None] * A
            if spec.residual:
                A = A + np.eye(m)
            layer_jacobians.append(A)
            if layer_ranks is not None:
                layer_ranks[:, l] = _count(_singular_values(A, be), A.shape[1:])
    if packed is not None:
        J = None
    elif L == 1 and conditional[0] and _activations(spec)[0] == "relu":
        # The conditional sampler's W is D W already: relu' = 1 on live rows, dead rows zero.
        J = Ws[0]
    elif plain and be == "cpp":
        assert _backends.core is not None
        with _backends.single_threaded_blas():
            J = _backends.core.chain_active(
                [np.ascontiguousarray(W) for W in kernel_Ws], Ds, nL < n0
            )
    else:
        mats = (
            [d[:, :, None] * W for d, W in zip(Ds, Ws, strict=True)] if plain else layer_jacobians
        )
        J = mats[0]
        for A in mats[1:]:
            J = A @ J
    # Plain layers: rank(J) <= min(n_0, fewest active units of any layer), exactly.
    bound = np.minimum(active.min(axis=1), n0) if plain and L else None
    out = _spectral_statistics(J, active, layer_ranks, be, bound, spec.spectra, packed, (nL, n0))
    if layer_ranks is not None and end_to_end_is_layer:
        layer_ranks[:, 0] = out["rank"]
    return out


def _spectral_statistics(
    J: NDArray[Any] | None,
    active: NDArray[np.int64],
    layer_ranks: NDArray[np.int64] | None,
    be: str,
    rank_bound: NDArray[np.int64] | None = None,
    spectra: bool = True,
    packed: tuple[NDArray[Any], NDArray[np.int64], float] | None = None,
    shape: tuple[int, int] | None = None,
) -> dict[str, NDArray[Any]]:
    """The recorded statistics from the end-to-end Jacobians J (n, n_L, n_0); layer_ranks
    None leaves that key out, spectra False the singular-value statistics. On the cpp
    backend J may instead be given by its non-zero rows: packed = (rows, counts, scale), J
    None, shape = (n_L, n_0) (see jacgeom._core.spectral_summary_rows).

    Rows of J that are exactly zero (dead units of the last layer) make as many singular
    values exactly zero; every backend reports them as zeros, not as an SVD's rounding.
    rank_bound (n,): an upper bound of each rank, when the caller knows one."""
    n = active.shape[0]
    nL, n0 = J.shape[1:] if J is not None else shape  # type: ignore[misc]
    p = min(nL, n0)
    if be == "cpp":
        assert _backends.core is not None
        with _backends.single_threaded_blas():
            if packed is not None:
                rows, counts, scale = packed
                summary = _backends.core.spectral_summary_rows(
                    rows, counts, nL, scale, rank_bound, spectra
                )
            else:
                summary = _backends.core.spectral_summary(
                    np.ascontiguousarray(J), rank_bound, spectra
                )
        rank, log_smax, log_smin, frobenius2, log_volume = summary
    else:
        assert J is not None
        s = _singular_values(J, be)
        live_rows = np.count_nonzero(np.any(J != 0, axis=2), axis=1)
        s[np.arange(p)[None, :] >= live_rows[:, None]] = 0.0
        with np.errstate(divide="ignore"):
            logs = np.log(s)
        rank = _count(s, (nL, n0))
        log_smax = logs[:, 0] if p else np.full(n, -np.inf)
        log_smin = logs[:, -1] if p else np.full(n, -np.inf)
        frobenius2 = np.sum(s * s, axis=1)
        if nL >= n0:
            log_volume = np.where(rank == n0, logs.sum(axis=1), -np.inf)
        else:
            log_volume = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        log_cond = np.where(rank == p, log_smax - log_smin, np.inf)
    out = {
        "active_counts": active,
        "layer_ranks": layer_ranks,
        "rank": rank,
        "log_smax": log_smax,
        "log_smin": log_smin,
        "log_cond": log_cond,
        "frobenius2": frobenius2,
        "log_volume": log_volume,
    }
    if layer_ranks is None:
        del out["layer_ranks"]
    if not spectra:
        for key in _SPECTRA:
            del out[key]
    return out


def _kernel_chain(
    spec: Spec, rng: np.random.Generator, X: NDArray[Any], be: str
) -> tuple[NDArray[Any], NDArray[np.int64], NDArray[np.int64] | None]:
    """End-to-end Jacobians (n, n_L, n_0), active counts and layer ranks (n, L; None unless
    spec.layer_ranks) of a chain of kernel layers h -> [h +] A k(h), fresh for every sample
    or shared (from the seed)."""
    widths = spec.resolved_widths()
    n, L = X.shape[0], len(widths) - 1
    if spec.fresh_weights:
        draw, count = rng, n
    else:
        draw, count = (
            np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2**31, 2))),
            1,
        )
    active = np.tile(np.asarray(widths[1:], dtype=np.int64), (n, 1))
    layer_ranks = np.empty((n, L), dtype=np.int64) if spec.layer_ranks else None
    h, J = X, None
    for l, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        p = spec.centers or fan_in
        C = draw.standard_normal((count, p, fan_in))
        A = draw.standard_normal((count, fan_out, p)) / math.sqrt(p)
        k, G = _kernel_features(
            spec.kernel, 1.0 / fan_in if spec.gamma is None else spec.gamma, h, C
        )
        out = np.einsum("bip,bp->bi", A, k)
        Jl = np.matmul(A, G)  # (n, fan_out, fan_in)
        if spec.residual:
            out = out + h
            Jl = Jl + np.eye(fan_in)
        if layer_ranks is not None:
            layer_ranks[:, l] = _count(_singular_values(Jl, be), (fan_out, fan_in))
        J = Jl if J is None else np.matmul(Jl, J)
        h = out
    assert J is not None
    return J, active, layer_ranks


def _kernel_features(
    kernel: str, gamma: float, h: NDArray[Any], C: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """k_j(h) (n, p) and its gradients in h (n, p, n_in), per sample, for C (n or 1, p, n_in):
    the formulas of jacgeom.KernelLayer, batched over samples that each have their centers."""
    diff = h[:, None, :] - C
    if kernel == "rbf":
        k = np.exp(-gamma * np.einsum("bpi,bpi->bp", diff, diff))
        return k, -2 * gamma * k[:, :, None] * diff
    if kernel == "laplacian":
        k = np.exp(-gamma * np.abs(diff).sum(axis=2))
        return k, -gamma * k[:, :, None] * np.sign(diff)
    base = np.einsum("bpi,bi->bp", np.broadcast_to(C, diff.shape), h) + 1.0
    return base**3, 3 * (base**2)[:, :, None] * C


def _rank_of_rows(A: NDArray[Any], d: NDArray[Any], backend: str) -> NDArray[np.int64]:
    """matrix_rank of the non-zero rows of each A[b] (k_b rows decide the tolerance)."""
    s = _singular_values(A, backend)
    k = np.count_nonzero(d, axis=1)
    tol = s[:, :1] * np.maximum(k, A.shape[2])[:, None] * np.finfo(s.dtype).eps
    return np.count_nonzero(s > tol, axis=1).astype(np.int64)


def _chunk_task(spec_dict: dict[str, Any], index: int) -> tuple[int, dict[str, NDArray[Any]]]:
    # Module-level and taking plain data, so process pools and dask workers can run it.
    return index, chunk_statistics(Spec.from_dict(spec_dict), index)


# ------------------------------------------------------------------------------ results


@dataclasses.dataclass
class Result:
    """Per-sample statistics of one experiment, and their summary.

    Attributes
    ----------
    spec : Spec
    data : dict of str to ndarray
        Per-sample arrays (see the module docstring), samples in chunk order.
    """

    spec: Spec
    data: dict[str, NDArray[Any]]

    @property
    def samples(self) -> int:
        return int(self.data["rank"].shape[0])

    def probability(self, event: NDArray[np.bool_], level: float = 0.95) -> dict[str, float]:
        k = int(np.count_nonzero(event))
        lo, hi = theory.clopper_pearson(k, event.size, level)
        return {"p": k / event.size if event.size else float("nan"), "lo": lo, "hi": hi, "count": k}

    def theory(self) -> dict[str, float]:
        """Closed forms of THEORY.md section 5 that apply to this spec (may be empty).

        They hold for relu with fresh zero-mean Gaussian weights per sample and symmetric
        (zero-mean) biases, without residual connections or normalisation.
        """
        s = self.spec
        w = s.resolved_widths()
        acts = _activations(s)
        if not (
            s.fresh_weights
            and s.layer == "activation"
            and set(acts) == {"relu"}
            and not s.residual
            and s.norm is None
            and s.init in ("he", "xavier", "lecun", "gaussian")
        ):
            return {}
        r = min(w[0], w[-1])
        out = {"active_fraction": 0.5, "p_rank_deficient": 1.0 - theory.p_rank_at_least(w, r)}
        if len(w) == 2:
            out["p_any_zeroed"] = theory.p_any_zeroed(w[1])
        return out

    def summary(self, level: float = 0.95) -> dict[str, Any]:
        """Means, standard deviations and quantiles of every statistic; probabilities with
        exact Clopper-Pearson intervals; the closed forms beside them where known."""
        w = self.spec.resolved_widths()
        p = min(w[0], w[-1])
        out: dict[str, Any] = {"samples": self.samples, "widths": list(w)}
        out["p_rank_deficient"] = self.probability(self.data["rank"] < p, level)
        out["p_any_zeroed"] = self.probability(
            np.any(self.data["active_counts"] < np.array(w[1:]), axis=1), level
        )
        frac = self.data["active_counts"] / np.array(w[1:])
        out["active_fraction"] = _stats(frac.mean(axis=1))
        out["rank_fraction"] = _stats(self.data["rank"] / p)
        for key in _SPECTRA:
            if key in self.data:
                out[key] = _stats(self.data[key])
        out["theory"] = self.theory()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "spec": self.spec.to_dict(),
            "data": {k: v.tolist() for k, v in self.data.items()},
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to an .npz file (spec as JSON inside)."""
        arrays = {f"data_{k}": v for k, v in self.data.items()}
        _atomic_savez(Path(path), spec=np.array(json.dumps(self.spec.to_dict())), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        with np.load(Path(path), allow_pickle=False) as f:
            spec = Spec.from_dict(json.loads(str(f["spec"])))
            data = {k[5:]: f[k] for k in f.files if k.startswith("data_")}
        return cls(spec, data)


def _stats(x: NDArray[Any]) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    # Quantiles as order statistics (inverted CDF): defined for infinite values too.
    n = x.size
    srt = np.sort(x)
    q = (
        [
            srt[min(n - 1, int(math.ceil(f * n)) - 1 if f * n >= 1 else 0)]
            for f in (0.05, 0.25, 0.5, 0.75, 0.95)
        ]
        if n
        else [np.nan] * 5
    )
    # Interval for the median from the binomial order statistics (distribution-free).
    half = 1.96 * math.sqrt(n) / 2
    lo_i, hi_i = max(0, int(math.floor(n / 2 - half))), min(n - 1, int(math.ceil(n / 2 + half)))
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size > 1 else float("nan"),
        "finite_fraction": float(finite.size / n) if n else float("nan"),
        "q05": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "q95": float(q[4]),
        "median_lo": float(srt[lo_i]) if n else float("nan"),
        "median_hi": float(srt[hi_i]) if n else float("nan"),
    }


# ------------------------------------------------------------------------------ running


def _atomic_savez(path: Path, **arrays: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _chunk_path(out: Path, index: int) -> Path:
    return out / f"chunk-{index:06d}.npz"


def _prepare_out(out: Path, spec: Spec) -> dict[int, dict[str, NDArray[Any]]]:
    """Create or check the checkpoint directory; return the chunks already finished."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"out directory {str(out)!r} is not writable: {exc}") from exc
    spec_file = out / "spec.json"
    mine = {**spec.to_dict(), "sampler": _SAMPLER}
    if spec_file.exists():
        theirs = json.loads(spec_file.read_text())
        if theirs != mine:
            diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
            k = "sampler" if "sampler" in diff else diff[0]  # another sampler says it all
            raise ValueError(
                f"out directory {str(out)!r} holds results of a different spec ({k}: "
                f"{theirs.get(k)!r} there, {mine.get(k)!r} here); use another directory"
            )
    else:
        tmp = spec_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(mine, indent=1))
        os.replace(tmp, spec_file)
    done: dict[int, dict[str, NDArray[Any]]] = {}
    for i in range(spec.n_chunks):
        path = _chunk_path(out, i)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as f:
                    done[i] = {k: f[k] for k in f.files}
            except Exception:  # noqa: BLE001 - a damaged chunk is recomputed
                path.unlink(missing_ok=True)
    return done


def run(
    spec: Spec,
    executor: cf.Executor | None = None,
    progress: bool | str = True,
    out: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    retries: int = RETRIES,
) -> Result:
    """Run a Monte Carlo experiment.

    Parameters
    ----------
    spec : Spec
    executor : concurrent.futures.Executor, optional
        Where chunks run. Default: a local thread pool of ``workers`` threads (all cores).
        For several machines, a dask.distributed ``Client(...).get_executor()``.
    progress : bool or "always", default True
        A tqdm bar on stderr (samples per second, time left) when stderr is a terminal;
        "always" shows it anyway, False never.
    out : path, optional
        Checkpoint directory: spec.json and one atomically written file per finished
        chunk. Rerunning the same spec resumes; a different spec is refused.
    workers : int, optional
        Threads of the default local pool (default: all cores). With more than one, the
        compiled kernels run single-threaded inside each chunk for the duration of the run
        (jacgeom.set_num_threads is restored afterwards).
    retries : int, default 2
        A chunk that raises is resubmitted this many times before the run stops with an
        error naming the chunk (finished chunks stay on disk).

    Returns
    -------
    Result

    Examples
    --------
    >>> from jacgeom.montecarlo import Spec, run
    >>> res = run(Spec(widths=(10, 10), samples=4000, seed=1), progress=False)
    >>> s = res.summary()
    >>> p, theory = s["p_rank_deficient"], s["theory"]["p_rank_deficient"]
    >>> p["lo"] <= theory <= p["hi"]
    True
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"spec must be a jacgeom.montecarlo.Spec, got {type(spec).__name__}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    out_dir = Path(out) if out is not None else None
    results: dict[int, dict[str, NDArray[Any]]] = _prepare_out(out_dir, spec) if out_dir else {}
    todo = [i for i in range(spec.n_chunks) if i not in results]
    bar = _progress_bar(spec, progress, sum(_chunk_len(spec, i) for i in results))
    own = executor is None
    n_workers = workers or os.cpu_count() or 1
    pool = executor or cf.ThreadPoolExecutor(max_workers=n_workers)
    # With several local chunk workers the parallelism is across chunks: each kernel runs on
    # one thread for the duration, so the cores are not oversubscribed (restored after).
    threads_before = _backends.get_num_threads()
    if own and n_workers > 1:
        _backends.set_num_threads(1)
    spec_dict = spec.to_dict()
    attempts = dict.fromkeys(todo, 0)
    try:
        pending = {pool.submit(_chunk_task, spec_dict, i): i for i in todo}
        while pending:
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                i = pending.pop(fut)
                try:
                    _, stats = fut.result()
                except Exception as exc:  # noqa: BLE001 - retried, then reported with the chunk
                    attempts[i] += 1
                    if attempts[i] > retries:
                        # Chunks not started are cancelled; running ones finish and are kept.
                        for other in list(pending):
                            if other.cancel():
                                pending.pop(other)
                        for other, j in pending.items():
                            try:
                                _, done_stats = other.result()
                            except Exception:  # noqa: BLE001, S112 - the first failure is reported
                                continue
                            if out_dir is not None:
                                _atomic_savez(_chunk_path(out_dir, j), **done_stats)
                        raise RuntimeError(
                            f"chunk {i} (samples {i * spec.chunk_size} to "
                            f"{i * spec.chunk_size + _chunk_len(spec, i) - 1}) failed "
                            f"{attempts[i]} times; last error: {type(exc).__name__}: {exc}"
                        ) from exc
                    pending[pool.submit(_chunk_task, spec_dict, i)] = i
                    continue
                if out_dir is not None:
                    _atomic_savez(_chunk_path(out_dir, i), **stats)
                results[i] = stats
                if bar is not None:
                    bar.update(_chunk_len(spec, i))
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
            _backends.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
    keys = results[0].keys()
    data = {k: np.concatenate([results[i][k] for i in range(spec.n_chunks)]) for k in keys}
    return Result(spec, data)


def _chunk_len(spec: Spec, i: int) -> int:
    return min(spec.chunk_size, spec.samples - i * spec.chunk_size)


def _progress_bar(spec: Spec, progress: bool | str, initial: int) -> Any:
    if progress is False or (progress != "always" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(
        total=spec.samples,
        initial=initial,
        unit="samples",
        unit_scale=True,
        file=sys.stderr,
        leave=False,
    )


def sweep(
    base: Spec, grid: dict[str, Iterable[Any]], **run_kwargs: Any
) -> list[tuple[dict[str, Any], Result]]:
    """Run ``base`` at every point of a grid over spec fields (the Cartesian product).

    Parameters
    ----------
    base : Spec
    grid : dict of field name to values
        For example {"width": [8, 32], "depth": [1, 4], "activation": ["relu", "tanh"]}.
    **run_kwargs
        Passed to :func:`run` (executor, progress, workers); ``out`` becomes one
        sub-directory per point.

    Returns
    -------
    list of (point, Result), in grid order
    """
    import itertools

    names = list(grid)
    out = run_kwargs.pop("out", None)
    results = []
    for values in itertools.product(*(list(grid[k]) for k in names)):
        point = dict(zip(names, values, strict=True))
        spec = base.replace(**point)
        sub = (
            None
            if out is None
            else Path(out) / "_".join(f"{k}={_label(v)}" for k, v in point.items())
        )
        results.append((point, run(spec, out=sub, **run_kwargs)))
    return results


def _label(v: Any) -> str:
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def sweep_table(results: Sequence[tuple[dict[str, Any], Result]]) -> str:
    """One markdown table for a sweep: P(rank-deficient), rank / width, median condition."""
    if not results:
        return ""
    names = list(results[0][0])
    head = names + [
        "samples",
        "P(rank-deficient) [95% CI]",
        "theory",
        "mean rank / width [95% CI]",
        "median log10 cond [95% CI]",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point, res in results:
        s = res.summary()
        pr = s["p_rank_deficient"]
        th = s["theory"].get("p_rank_deficient")
        rf = s["rank_fraction"]
        half = 1.96 * rf["std"] / math.sqrt(res.samples) if res.samples > 1 else float("nan")
        lc = s.get("log_cond")
        l10 = 1 / math.log(10)
        cells = [_label(point[k]) for k in names] + [
            str(res.samples),
            f"{pr['p']:.4f} [{pr['lo']:.4f}, {pr['hi']:.4f}]",
            "" if th is None else f"{th:.4f}",
            f"{rf['mean']:.3f} [{rf['mean'] - half:.3f}, {rf['mean'] + half:.3f}]",
            "not recorded"
            if lc is None
            else f"{lc['median'] * l10:.2f} [{lc['median_lo'] * l10:.2f}, "
            f"{lc['median_hi'] * l10:.2f}]",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
