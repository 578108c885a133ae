"""How a chunk turns its seed into samples: inputs, weights and biases, and the conditional
sampler that draws only the weights a relu layer's Jacobian needs.

Chunk i draws from SFC64 generators seeded by ``SeedSequence(seed, spawn_key=(i,))``,
``(i, 1)`` and ``(i, 2)`` (:func:`chunk_rng`); the second only for weights that the layer
ranks alone need, the third only for the direction of the input gain (:func:`input_norms`).
What is fixed for the whole experiment (a shared network, the input manifold, shared kernel
layers) is drawn from ``SeedSequence(seed, spawn_key=(2**31, k))``. :data:`SAMPLER` versions
all of this: checkpoint directories record it, so chunks drawn another way are never mixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from .. import _dispatch
from ..activations import Activation
from ..network import Network, init_std, random_orthogonal
from ..typing import ActivationName
from .spec import Spec, layer_activations

__all__ = [
    "DEAD_HALF_LINE",
    "SAMPLER",
    "Scratch",
    "block_weights",
    "chunk_rng",
    "conditional_layers",
    "draw_biases",
    "draw_first_layer",
    "draw_inputs",
    "draw_layer_given_input",
    "draw_weights",
    "gain_directions",
    "input_norms",
    "shared_network",
    "weight_std",
]

# Version of the way a chunk turns its seed into samples (generator, order of the draws,
# block size, the statistics recorded). Checkpoint directories record it: chunks drawn or
# summarised another way are never mixed. 5: exact ranks decided with the rank floor of a
# graded frame (jacgeom.reference.graded.graded_rank_floor). 6: gelu's phi and phi' and
# tanh's phi' on the cpp backend evaluated in C++ (glibc's four-lane erfc and exp where
# present), so float statistics of those activations move by rounding. 7: log_gain of a
# conditionally drawn first layer measured along e_1 (gain_directions), not along x / |x|;
# its direction drawn from a third stream, so nothing else moves. 8: active_counts by
# Activation.derivative_is_zero, not phi' != 0 (units whose phi' underflows count as
# active, and their columns are drawn as live ones); layer_numerical_ranks with numpy's
# tolerance max(m, n) eps of the whole layer Jacobian, not max(live rows, n) eps; rows of
# inputs whose squared norm leaves float64's normal range drawn after exact rescaling.
SAMPLER = 8
# spawn_key of the draws fixed for the whole experiment (never a chunk index)
SHARED_NETWORK_KEY = (2**31, 0)
MANIFOLD_KEY = (2**31, 1)
SHARED_KERNEL_LAYERS_KEY = (2**31, 2)


def chunk_rng(spec: Spec, index: int, stream: int = 0) -> np.random.Generator:
    """Generator of chunk ``index``: stream 0 draws everything but the weights that only
    the layer ranks need, which stream 1 draws (so that leaving those ranks out changes
    nothing else), and the direction of the input gain, which stream 2 draws."""
    # SFC64 rather than numpy's default PCG64: the normals are the largest single cost of a
    # chunk and SFC64 draws them faster (docs/benchmarks.md, "Measurements behind design
    # choices"); it passes PractRand and has no weak seeds when seeded through SeedSequence,
    # which spawns the chunks.
    key = (index,) if stream == 0 else (index, stream)
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(spec.seed, spawn_key=key)))


def draw_inputs(spec: Spec, rng: np.random.Generator, n: int) -> NDArray[Any]:
    """n inputs x (n, n_0) of the law ``spec.inputs`` names (see Spec)."""
    n0 = spec.resolved_widths()[0]
    if spec.inputs == "gaussian":
        return rng.standard_normal((n, n0))
    if spec.inputs == "sphere":
        x = rng.standard_normal((n, n0))
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    # The manifold is fixed for the experiment: drawn from the seed alone.
    mrng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=MANIFOLD_KEY))
    k = spec.manifold_dim
    basis = np.linalg.qr(mrng.standard_normal((n0, k)))[0]  # (n0, k) orthonormal
    t = rng.standard_normal((n, k))
    if spec.manifold == "linear":
        return t @ basis.T
    freq = mrng.standard_normal((k, n0))
    phase = mrng.uniform(0, 2 * np.pi, n0)
    return t @ basis.T + 0.5 * np.sin(t @ freq + phase)


def input_norms(
    spec: Spec, rng: np.random.Generator, n: int, gain: np.random.Generator | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """|x| of n inputs, drawn from its own law where that is known: all a first layer of
    fresh iid Gaussian weights needs of x (see draw_first_layer); and, with ``gain``,
    c = x_1 / |x| (else None), which places e_1 in that layer's frame (gain_directions).

    For Gaussian and spherical inputs x / |x| is uniform on the sphere and independent of
    |x|, so c is drawn from ``gain`` alone (a normal over the root of its square plus a
    chi-square with n_0 - 1 degrees): the other draws do not change with it."""
    n0 = spec.resolved_widths()[0]
    if spec.inputs in ("gaussian", "sphere"):
        norms = np.sqrt(rng.chisquare(n0, n)) if spec.inputs == "gaussian" else np.ones(n)
        if gain is None:
            return norms, None
        g = gain.standard_normal(n)
        length = np.sqrt(g * g + (gain.chisquare(n0 - 1, n) if n0 > 1 else 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return norms, np.where(length > 0, g / length, 1.0)
    x = draw_inputs(spec, rng, n)
    norms = np.linalg.norm(x, axis=1)
    if gain is None:
        return norms, None
    with np.errstate(invalid="ignore", divide="ignore"):
        return norms, np.where(norms > 0, x[:, 0] / norms, 1.0)


def gain_directions(cosines: NDArray[np.float64], n0: int) -> NDArray[np.float64]:
    """Q e_1 (n, n_0) in the frame of draw_first_layer, where Q x = |x| e_1: its first
    coordinate is (Q e_1) . (Q x / |x|) = x_1 / |x| = c, and Q, free up to a rotation that
    fixes e_1 (which keeps every law of that frame), takes the rest of e_1 to e_2."""
    v = np.zeros((cosines.shape[0], n0))
    v[:, 0] = cosines
    if n0 > 1:
        v[:, 1] = np.sqrt(np.maximum(0.0, 1.0 - cosines * cosines))
    return v


def weight_std(spec: Spec, fan_in: int, fan_out: int) -> float:
    """Standard deviation of the iid Gaussian weights of one layer ("orthogonal" excluded)."""
    return init_std(spec.init, spec.sigma_w, fan_in, fan_out)


def draw_biases(spec: Spec, rng: np.random.Generator, n: int, fan_out: int) -> NDArray[Any]:
    """Biases (n, fan_out) iid N(0, sigma_b^2); zeros, drawing nothing, when sigma_b = 0."""
    if spec.sigma_b:
        return rng.standard_normal((n, fan_out)) * spec.sigma_b
    return np.zeros((n, fan_out))


def draw_weights(
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
            W *= weight_std(spec, fan_in, fan_out)
        Ws.append(W)
        bs.append(draw_biases(spec, rng, n, fan_out))
    return Ws, bs


# Activations whose phi' is zero on a half-line: a dead unit's row of W is never needed
# beyond its pre-activation, so the conditional sampler below skips drawing it.
DEAD_HALF_LINE = frozenset({"relu"})


def conditional_layers(spec: Spec) -> list[bool]:
    """Which layers the conditional sampler draws (layer by layer, given their input, only
    the rows of live units: draw_first_layer, draw_layer_given_input): plain layers (no
    residual connection, no normalisation) of fresh iid Gaussian weights whose activation
    has a dead half-line. The other layers' weights are drawn whole, up front."""
    plain = not spec.residual and spec.norm is None
    return [
        spec.fresh_weights and plain and spec.init != "orthogonal" and a in DEAD_HALF_LINE
        for a in layer_activations(spec)
    ]


def block_weights(
    spec: Spec, rng: np.random.Generator, n: int, skip: Sequence[bool] = ()
) -> tuple[list[Any], list[Any]]:
    """Weights (n, n_l, n_(l-1)) and biases (n, n_l) of a block of n samples: drawn fresh
    (None where skip[l]), or read-only broadcast views of the network shared by every
    sample (spec.fresh_weights False)."""
    if spec.fresh_weights:
        return draw_weights(spec, rng, n, skip)
    net = shared_network(spec)
    Ws = [np.broadcast_to(W, (n,) + W.shape) for W in net.weights]
    bs = [np.broadcast_to(b, (n,) + b.shape) for b in net.biases]
    return Ws, bs


def draw_preactivations(
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
    return u, z, _dispatch.derivatives(z, act, backend)


def draw_first_layer(
    rng: np.random.Generator,
    norms: NDArray[np.float64],
    fan_in: int,
    std: float,
    b: NDArray[np.float64],
    act: Activation,
    backend: str,
    scratch: Scratch | None = None,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """A first layer of fresh iid N(0, std^2) weights, in the frame where x = |x| e_1.

    Rotating the input space by Q with Q x = |x| e_1 changes no recorded statistic but the
    gain of e_1: the active sets stay, the first layer's Jacobian becomes D_1 W_1 Q^T and
    the end-to-end one J Q^T (same singular values), the later layers' are untouched; and
    W_1 Q^T has the law of W_1 (iid Gaussian, independent of x). J e_1 is J Q^T (Q e_1):
    the gain is measured along Q e_1 (gain_directions), not along this frame's e_1, which
    is x / |x|. In that frame (norms: |x| per sample, as
    input_norms draws it) a row is std (u_i, g_i) with u_i and g_i (n_0 - 1) iid N(0, 1),
    and z_i = std |x| u_i + b_i: the live rows are drawn, the dead ones never are. A live
    row takes n_0 normals of which the first is replaced by its u_i (cheaper than a copy
    into place). With ``scratch``, P lives in its buffer (valid until the next call).

    Returns
    -------
    P : (k, fan_in), the live rows of D W_1 / std in row-major order of (sample, unit)
    z, d : (N, fan_out), pre-activations and phi'(z), fan_out from b (N, fan_out)
    """
    u, z, d = draw_preactivations(rng, norms, std, b, act, backend)
    live = d != 0
    shape = (int(np.count_nonzero(live)), fan_in)
    if scratch is None:
        P = rng.standard_normal(shape)
    else:
        P = rng.standard_normal(out=scratch.take("P", shape, live.size * fan_in))
    P[:, 0] = u[live]  # the draw's first column is not used: one normal per row
    return P, z, d


def draw_layer_given_input(
    rng: np.random.Generator,
    h: NDArray[np.float64],
    fan_out: int,
    std: float,
    b: NDArray[np.float64],
    act: Activation,
    backend: str,
    scratch: Scratch | None = None,
    key: Any = None,
    cols: NDArray[np.bool_] | None = None,
    rest: np.random.Generator | None = None,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """One fresh iid N(0, std^2) layer applied to h, drawing only the weights that matter.

    Given h (N, n), the pre-activations z_i = w_i . h + b_i of iid Gaussian rows are
    independent N(b_i, std^2 |h|^2): they are drawn directly, as std |h| u_i + b_i. Only the
    rows with phi'(z_i) != 0 enter the Jacobian D W, and they are drawn from their law given
    z_i, which is exact (see jacgeom.reference.montecarlo.place_live_rows); for relu that is
    about half the rows. Of each row, the columns in ``cols`` come from rng (default: every
    column) and the others from ``rest``, or are zero when ``rest`` is None: the caller never
    reads them. With ``scratch``, W and the normals live in its buffers under ``key`` (valid
    until the next call with that key).

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
    norms, h = _row_norms(h)
    u, z, d = draw_preactivations(rng, norms, std, b, act, backend)
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
    # numba's one pass without the GIL wherever numba is installed, whatever the backend.
    _dispatch.call(
        "place_live_rows",
        "numba",
        np.ascontiguousarray(h),
        cols,
        u,
        live,
        G,
        B,
        rest is not None,
        std,
        W,
    )
    return W, z, d


def _row_norms(h: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(|h| per row, h) with the rows whose squared norm leaves float64's normal range
    (a saturated gelu's outputs near 1e-200, whose squares underflow to 0) scaled by a power
    of two, exactly. The rows' law depends on h / |h| alone, and place_live_rows forms
    |h|^2 as the plain sum of squares: 0 there would divide by zero, and |h| = 0 would make
    every pre-activation its bias. Rows within the range are left as they are, bit for bit."""
    norm2 = np.einsum("ij,ij->i", h, h)
    tiny = np.finfo(np.float64).tiny
    with np.errstate(invalid="ignore"):
        outside = ~((norm2 >= tiny) & (norm2 <= np.finfo(np.float64).max)) & np.any(h != 0, axis=1)
    if not outside.any():
        return np.sqrt(norm2), h
    rows = h[outside]
    exponent = np.frexp(np.max(np.abs(rows), axis=1))[1]
    scaled = np.ldexp(rows, -exponent[:, None])
    h = h.copy()
    h[outside] = scaled
    norms = np.sqrt(norm2)
    norms[outside] = np.ldexp(np.sqrt(np.einsum("ij,ij->i", scaled, scaled)), exponent)
    return norms, h


class Scratch:
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


def shared_network(spec: Spec) -> Network:
    """The network every sample shares when spec.fresh_weights is False (from the seed)."""
    seed = np.random.SeedSequence(spec.seed, spawn_key=SHARED_NETWORK_KEY)
    return Network.random(
        list(spec.resolved_widths()),
        activation=cast("list[ActivationName]", layer_activations(spec)),
        init=spec.init,
        sigma_w=spec.sigma_w,
        sigma_b=spec.sigma_b,
        residual=spec.residual,
        norm=spec.norm,
        seed=np.random.default_rng(seed),
    )
