"""Per-chunk statistics of the Monte Carlo: what is recorded for every sample, and how.

:func:`chunk_statistics` is a pure function of (spec, chunk index): it draws the chunk's
samples in blocks (:func:`block_size`) and, for each block, walks the layers once, then
summarises the end-to-end Jacobians J (n, n_L, n_0). Three walks, one per kind of network:

- plain layers (no residual connection, no normalisation): J = D_L W_L ... D_1 W_1, relu
  layers drawn by the conditional sampler (sampling.conditional_layers); every rank is
  bounded by the fewest active units, which the compiled summary uses;
- residual and / or layer-normalised layers: each layer's dense Jacobian, then their product;
- kernel layers (kernel_layers.kernel_chain).

Recorded per sample: the keys of :data:`RECORDED`, in that order, whose shapes and meanings
the table of jacgeom.montecarlo's docstring gives. ``Spec(layer_ranks=False)`` leaves out
``layer_numerical_ranks`` and ``layer_exact_ranks``, ``Spec(spectra=False)`` the keys of
:data:`SPECTRA`. A new statistic: its key in RECORDED and the table, its value computed in
the walks and stored by :func:`record`.

Two ranks: ``exact_rank`` (singular values non-zero in exact arithmetic: lost only through
structure) and ``rank`` (numerical: numpy.linalg.matrix_rank's rule on J's exact singular
values). Both, and log_smax, log_smin, log_cond, log_volume, come from the stable frame of
jacgeom._frame (never from a formed product), so they are right at any depth: log_cond is
finite whenever the exact rank is full. ``layer_numerical_ranks`` is the numerical
(float64) rank of each layer's own Jacobian, ``layer_exact_ranks`` the exact rank of the
partial product after each layer. Kernel-layer networks (spec.layer == "kernel") go
through the same frame, on their formed layer Jacobians (A grad k(h), well scaled). Logs
are natural.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from .. import _backends, _dispatch, _frame
from .._validation import integer
from ..activations import Activation
from ..activations import activation as _lookup
from ..reference.montecarlo import numerical_rank
from ..reference.network import layer_norm
from .kernel_layers import kernel_chain
from .sampling import (
    Scratch,
    block_weights,
    chunk_rng,
    conditional_layers,
    draw_biases,
    draw_first_layer,
    draw_inputs,
    draw_layer_given_input,
    gain_directions,
    input_norms,
    weight_std,
)
from .spec import Spec, layer_activations

__all__ = [
    "RECORDED",
    "SPECTRA",
    "block_size",
    "chunk_blocks",
    "chunk_statistics",
    "record",
    "recorded_shapes",
]

RECORDED = (
    "active_counts",
    "layer_numerical_ranks",
    "layer_exact_ranks",
    "rank",
    "exact_rank",
    "log_smax",
    "log_smin",
    "log_cond",
    "frobenius2",
    "log_volume",
    "log_gain",
)
# The statistics that Spec.spectra=False leaves out.
SPECTRA = ("log_smax", "log_smin", "log_cond", "frobenius2", "log_volume", "log_gain")
# A chunk's samples go through the layers in blocks of about this many bytes of per-sample
# matrices: the block's arrays stay in the last-level cache between the passes over them, and
# the allocator reuses their memory instead of taking fresh pages from the system (which it
# zeroes: a fifth of the time of a depth-10 chunk at 1000 samples per block).
_BLOCK_BYTES = 16 << 20
# Layer normalisation's epsilon under the square root (the variance's floor).
_LAYER_NORM_EPS = 1e-5

# (everything else, the weights only layer ranks need, the input gain's direction)
Streams = tuple[np.random.Generator, np.random.Generator, np.random.Generator]
Statistics = dict[str, NDArray[Any]]


def chunk_statistics(spec: Spec, index: int, backend: str = "auto") -> Statistics:
    """Statistics of the samples of chunk ``index`` (a pure function of spec and index).

    Parameters
    ----------
    spec : Spec
    index : int
        0 <= index < spec.n_chunks (a Python or numpy int; TypeError for a float or bool,
        ValueError out of range, both naming ``index``).
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        The backends draw the same samples and agree on every rank; the singular-value
        statistics agree to rounding.

    Returns
    -------
    dict of str to ndarray
        Per-sample arrays of the chunk's samples, keys as in the module docstring.

    Examples
    --------
    >>> from jacgeom.montecarlo import Spec, chunk_statistics
    >>> d = chunk_statistics(Spec(widths=(3, 3), samples=10, chunk_size=4), 2)
    >>> list(d), d["rank"].shape, d["active_counts"].shape
    (['active_counts', 'layer_numerical_ranks', 'layer_exact_ranks', 'rank', 'exact_rank', \
'log_smax', 'log_smin', 'log_cond', 'frobenius2', 'log_volume', 'log_gain'], (2,), (2, 1))
    """
    parts = list(chunk_blocks(spec, index, backend))
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def chunk_blocks(spec: Spec, index: int, backend: str = "auto") -> Iterator[Statistics]:
    """The statistics of chunk ``index`` block by block (:func:`block_size` samples each, the
    last fewer): what :func:`chunk_statistics` concatenates, and what a run summarises
    without ever holding a whole chunk's per-sample arrays."""
    # Checked here, not in the generator: at the call, before any block is asked for.
    index = _chunk_index(spec, index)
    return _blocks(spec, index, _backends.resolve(backend))


def _blocks(spec: Spec, index: int, backend: str) -> Iterator[Statistics]:
    """The blocks of a checked chunk index on a resolved backend."""
    start = index * spec.chunk_size
    n = min(spec.chunk_size, spec.samples - start)
    streams = (chunk_rng(spec, index), chunk_rng(spec, index, 1), chunk_rng(spec, index, 2))
    block, scratch = block_size(spec), Scratch()
    for s in range(0, n, block):
        yield block_statistics(spec, streams, min(block, n - s), backend, scratch)


def _chunk_index(spec: Spec, index: Any) -> int:
    """``index`` checked: an int (not bool, not float) in [0, spec.n_chunks). A negative
    index would not count from the end: chunk -1 would draw from SeedSequence(seed,
    spawn_key=(-1,)), samples of no chunk of the run."""
    if not isinstance(spec, Spec):
        raise TypeError(f"spec must be a jacgeom.montecarlo.Spec, got {type(spec).__name__}")
    index = integer("index", index)
    if not 0 <= index < spec.n_chunks:
        raise ValueError(
            f"index must be in [0, {spec.n_chunks}), the chunks of this spec, got {index}"
        )
    return index


def recorded_shapes(spec: Spec, n: int) -> dict[str, tuple[int, ...]]:
    """The keys :func:`chunk_statistics` returns for ``spec`` (in the order of RECORDED) and
    their shapes for a chunk of n samples: (n, L) per layer, (n,) per sample."""
    L = len(spec.resolved_widths()) - 1
    per_layer = ("active_counts", "layer_numerical_ranks", "layer_exact_ranks")
    left_out = (() if spec.layer_ranks else ("layer_numerical_ranks", "layer_exact_ranks")) + (
        () if spec.spectra else SPECTRA
    )
    return {k: (n, L) if k in per_layer else (n,) for k in RECORDED if k not in left_out}


def block_size(spec: Spec) -> int:
    """Samples per block: a function of the widths alone, so the random stream a chunk
    consumes, and hence every result, does not depend on anything else."""
    w = spec.resolved_widths()
    per_sample = 8 * (sum(a * b for a, b in zip(w[:-1], w[1:], strict=True)) + w[0] * w[-1])
    if spec.layer == "kernel":
        per_sample *= 3  # centers, coefficients and feature gradients per layer
    return max(1, _BLOCK_BYTES // per_sample)


def block_statistics(
    spec: Spec, streams: Streams, n: int, backend: str, scratch: Scratch
) -> Statistics:
    """Statistics of the next n samples drawn from the chunk's streams (one block)."""
    if spec.layer == "kernel":
        X = draw_inputs(spec, streams[0], n)
        Js, active, layer_ranks = kernel_chain(spec, streams[0], X, backend)
        # Formed Jacobians, well scaled: the frame decides each layer's rank on them (a
        # layer with fewer centres than units loses rank) and keeps the spectrum exact.
        frame_layers = [_frame.FrameLayer(None, None, None, dense=Jl) for Jl in Js]
        widths = spec.resolved_widths()
        summary, exact_layers = stable_statistics(
            widths[0], n, frame_layers, (widths[-1], widths[0]), backend
        )
        return record(active, layer_ranks, exact_layers, summary, spec.spectra)
    if spec.residual or spec.norm is not None:
        return _dense_block_statistics(spec, streams[0], n, backend)
    return _plain_block_statistics(spec, streams, n, backend, scratch)


def record(
    active: NDArray[np.int64],
    layer_ranks: NDArray[np.int64] | None,
    layer_exact_ranks: NDArray[np.int64] | None,
    summary: _frame.StableSummary,
    spectra: bool,
) -> Statistics:
    """The recorded arrays of a block, keys in the order of RECORDED: its active counts,
    layer ranks (None: not recorded) and the summary of its end-to-end Jacobians
    (spectra False: the ranks only)."""
    out: Statistics = {"active_counts": active}
    if layer_ranks is not None:
        out["layer_numerical_ranks"] = layer_ranks
        if layer_exact_ranks is not None:
            out["layer_exact_ranks"] = layer_exact_ranks
    out["rank"] = summary.rank
    out["exact_rank"] = summary.exact_rank
    if spectra:
        out.update(
            log_smax=summary.log_smax,
            log_smin=summary.log_smin,
            log_cond=summary.log_cond,
            frobenius2=summary.frobenius2,
            log_volume=summary.log_volume,
        )
        assert summary.log_gain is not None
        out["log_gain"] = summary.log_gain
    return out


def stable_statistics(
    n0: int,
    n: int,
    layers: list[_frame.FrameLayer],
    shape: tuple[int, int],
    backend: str,
    gain_direction: NDArray[np.float64] | None = None,
) -> tuple[_frame.StableSummary, NDArray[np.int64]]:
    """The stable summary of a block's chain of layers, and its exact rank after each layer;
    the gain along ``gain_direction`` (n, n0) of the layers' input frame (default e_1)."""
    g, V, exact = _frame.chain_frame(n0, n, layers, backend)
    logs = _dispatch.call("graded_log_singular_values", backend, g, V)
    p = min(shape)
    if logs.shape[1] < p:
        logs = np.concatenate([logs, np.full((n, p - logs.shape[1]), -np.inf)], axis=1)
    summary = _frame.stable_summary(logs[:, :p], exact[:, -1], shape, np.finfo(np.float64).eps)
    return summary._replace(log_gain=_frame.log_gain(g, V, gain_direction)), exact


# ---------------------------------------------------------------------- plain layers


class _DrawnLayer(NamedTuple):
    """One layer of a block as the conditional sampler drew it."""

    weights: NDArray[Any] | None  # (n, m, k), dead rows zero; None when left packed
    preactivations: NDArray[Any]  # (n, m), z
    derivatives: NDArray[Any]  # (n, m), phi'(z)
    packed_rows: NDArray[Any] | None  # (live rows, k): the live rows of D W / std, unplaced
    std: float


def _draw_conditional_layer(
    spec: Spec,
    l: int,
    h: NDArray[Any],
    streams: Streams,
    live_below: NDArray[np.bool_] | None,
    act: Activation,
    backend: str,
    scratch: Scratch,
    pack: bool,
) -> _DrawnLayer:
    """Layer l drawn given its input h (the first layer: given |x|, h (n,)); ``pack`` leaves
    the first layer's live rows packed instead of placing them into an (n, n_1, n_0) W."""
    rng, rest_rng = streams[:2]
    widths = spec.resolved_widths()
    n, fan_in, fan_out = h.shape[0], widths[l], widths[l + 1]
    b = draw_biases(spec, rng, n, fan_out)
    std = weight_std(spec, fan_in, fan_out)
    if l == 0:
        P, z, d = draw_first_layer(rng, h, fan_in, std, b, act, backend, scratch)
        if pack:
            return _DrawnLayer(None, z, d, P, std)
        W = scratch.take(("W", 0), (n, fan_out, fan_in))
        W.fill(0.0)
        W[d != 0] = std * P
        return _DrawnLayer(W, z, d, None, std)
    # Columns of units dead in the layer below meet zeros of D in J: only this layer's
    # rank needs them, and they come from a stream of their own.
    rest = rest_rng if spec.layer_ranks else None
    W, z, d = draw_layer_given_input(
        rng, h, fan_out, std, b, act, backend, scratch, l, live_below, rest
    )
    return _DrawnLayer(W, z, d, None, std)


def _plain_block_statistics(
    spec: Spec, streams: Streams, n: int, backend: str, scratch: Scratch
) -> Statistics:
    """A block of plain layers h -> phi(W h + b): J = D_L W_L ... D_1 W_1."""
    rng = streams[0]
    widths = spec.resolved_widths()
    L, n0, nL = len(widths) - 1, widths[0], widths[-1]
    names = layer_activations(spec)
    acts = [_lookup(a) for a in names]
    conditional = conditional_layers(spec)
    # One layer with n_1 <= n_0: its Jacobian is the end-to-end one, and both ranks use the
    # same tolerance (sigma_max * n_0 * eps), so it is computed once.
    end_to_end_is_layer = L == 1 and nL <= n0
    # On the cpp backend such a layer, when the conditional sampler draws it, hands its live
    # rows to the spectral summary as they are drawn, packed, never placed into (n, n_1, n_0).
    pack = end_to_end_is_layer and backend == "cpp"
    # A conditional first layer needs |x| only (draw_first_layer), and the gain is measured
    # along e_1's place in its frame.
    direction = None
    h: NDArray[Any]
    if conditional[0]:
        h, cosines = input_norms(spec, rng, n, streams[2] if spec.spectra else None)
        direction = None if cosines is None else gain_directions(cosines, n0)
    else:
        h = draw_inputs(spec, rng, n)
    Ws, bs = block_weights(spec, rng, n, skip=conditional)
    # The compiled kernels take one shared (m, k) W, or one per sample (n, m, k) without copies.
    kernel_Ws = [W if spec.fresh_weights else W[0] for W in Ws]
    active = np.empty((n, L), dtype=np.int64)
    layer_ranks = np.empty((n, L), dtype=np.int64) if spec.layer_ranks else None
    Ds: list[NDArray[Any]] = []
    live: list[NDArray[np.bool_]] = [np.empty((0, 0), dtype=bool)] * L
    frame_layers: list[_frame.FrameLayer] = []
    packed: _DrawnLayer | None = None
    for l in range(L):
        if conditional[l]:
            # The columns of every unit the exact rank keeps must be drawn, those of units
            # whose phi' underflowed to 0.0 included (gelu far on its left tail, where its
            # output is 0.0 too, so the conditioning on h alone would not draw them).
            live_below = live[l - 1] if l else None
            drawn = _draw_conditional_layer(
                spec, l, h, streams, live_below, acts[l], backend, scratch, pack
            )
            W, z, d = drawn.weights, drawn.preactivations, drawn.derivatives
            Ws[l] = kernel_Ws[l] = W
            if drawn.packed_rows is not None:
                packed = drawn
        else:
            W = Ws[l]
            z = _affine(W, h, bs[l])
            d = _dispatch.derivatives(np.ascontiguousarray(z), acts[l], backend)
        live[l] = live_units(z, acts[l])
        active[:, l] = np.count_nonzero(live[l], axis=1)
        frame_layers.append(_frame.FrameLayer(kernel_Ws[l], z, acts[l]))
        if l + 1 < L:  # the last layer's output is not needed
            h = _dispatch.activation_values(z, acts[l], backend)
        Ds.append(np.ascontiguousarray(d))
        if layer_ranks is not None and not end_to_end_is_layer:
            assert W is not None
            layer_ranks[:, l] = _masked_layer_rank(kernel_Ws[l], W, Ds[-1], backend)
    if packed is not None:
        # One relu layer left packed: its rank is exact (phi' is 0 or 1) and the compiled
        # summary of its live rows is the stable one (no product).
        assert packed.packed_rows is not None
        # the rows drawn: those of the units with phi' != 0 (relu: the same as the active)
        counts = np.count_nonzero(packed.derivatives, axis=1).astype(np.int64)
        bound = np.minimum(active.min(axis=1), n0)
        rank, log_smax, log_smin, frobenius2, log_volume = _dispatch.call(
            "spectral_summary_rows",
            backend,
            packed.packed_rows,
            counts,
            nL,
            packed.std,
            bound,
            spec.spectra,
        )
        with np.errstate(invalid="ignore"):
            log_cond = np.where(rank == min(nL, n0), log_smax - log_smin, np.inf)
        # The volume of a map onto fewer dimensions is 0, as the stable summary has it.
        log_volume = log_volume if nL >= n0 else np.full_like(log_volume, -np.inf)
        # ||J e_1||^2: the sample's live rows times e_1's place in their frame, times std^2.
        owner = np.repeat(np.arange(n), counts)
        rows = packed.packed_rows
        along = rows[:, 0] * direction[owner, 0] if direction is not None else rows[:, 0]
        if direction is not None and n0 > 1:
            along += rows[:, 1] * direction[owner, 1]
        gain = np.bincount(owner, weights=along**2, minlength=n)
        with np.errstate(divide="ignore"):
            log_gain = np.log(gain) + 2.0 * np.log(packed.std)
        summary = _frame.StableSummary(
            rank, rank, log_smax, log_smin, log_cond, frobenius2, log_volume, log_gain
        )
        exact = rank[:, None]
    else:
        summary, exact = stable_statistics(n0, n, frame_layers, (nL, n0), backend, direction)
    if layer_ranks is not None and end_to_end_is_layer:
        layer_ranks[:, 0] = summary.rank
    return record(active, layer_ranks, exact, summary, spec.spectra)


def live_units(arg: NDArray[Any], act: Activation) -> NDArray[np.bool_]:
    """(n, m) the units that count as active: phi'(arg) not zero mathematically
    (:meth:`jacgeom.Activation.derivative_is_zero`), the decision by which the exact rank
    keeps or removes a unit's row, on every backend. Not ``phi'(arg) != 0``: a saturated
    tanh or gelu unit's phi' underflows to 0.0 in float64 while its row stays in the exact
    rank, and counting it inactive would contradict the rank (more live directions than
    active units)."""
    return ~np.asarray(act.derivative_is_zero(arg), dtype=bool)


def _affine(W: NDArray[Any], h: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    """z = W h + b per sample: W (n, m, k), h (n, k), b (n, m)."""
    return np.matmul(W, h[:, :, None])[:, :, 0] + b


def _masked_layer_rank(
    kernel_W: NDArray[Any], W: NDArray[Any], d: NDArray[Any], backend: str
) -> NDArray[np.int64]:
    """Numerical rank of each plain layer Jacobian diag(d) W (n, m, k): numpy's
    matrix_rank of the (m, k) matrix, tolerance sigma_max max(m, k) eps, whatever number of
    its rows d leaves non-zero (the zero rows change no singular value, only the count
    numpy's rule multiplies eps by)."""
    m, k = W.shape[1:]
    rtol = max(m, k) * float(np.finfo(np.float64).eps)
    if backend == "cpp":
        # An explicit rtol: the kernel's default would be max(kept rows, k) eps.
        ranks, _ = _dispatch.call(
            "masked_rank",
            backend,
            np.ascontiguousarray(kernel_W),
            d,
            _dispatch.Tolerance(rtol=rtol),
            False,
            False,
        )
        return ranks
    s = _dispatch.batched_singular_values(d[:, :, None] * W, backend)
    return numerical_rank(s, (m, k))


# ------------------------------------------------------- residual and normalised layers


def _dense_block_statistics(
    spec: Spec, rng: np.random.Generator, n: int, backend: str
) -> Statistics:
    """A block of layers h -> [h +] phi(N(W h + b)), N a layer normalisation or the identity:
    each layer's Jacobian formed densely, then their product."""
    widths = spec.resolved_widths()
    L = len(widths) - 1
    acts = [_lookup(a) for a in layer_activations(spec)]
    h = draw_inputs(spec, rng, n)
    Ws, bs = block_weights(spec, rng, n)
    active = np.empty((n, L), dtype=np.int64)
    layer_ranks = np.empty((n, L), dtype=np.int64) if spec.layer_ranks else None
    frame_layers: list[_frame.FrameLayer] = []
    for l in range(L):
        W = Ws[l]
        z = _affine(W, h, bs[l])
        arg, sigma = _layer_norm(z) if spec.norm == "layer" else (z, None)
        d = _dispatch.derivatives(np.ascontiguousarray(arg), acts[l], backend)
        active[:, l] = np.count_nonzero(live_units(arg, acts[l]), axis=1)
        if l + 1 < L:  # the last layer's output is not needed
            a = _dispatch.activation_values(arg, acts[l], backend)
            h = h + a if spec.residual else a
        norm = _frame.NormState(sigma, arg, _LAYER_NORM_EPS) if sigma is not None else None
        frame_layers.append(_frame.FrameLayer(W, arg, acts[l], norm, spec.residual, d))
        if layer_ranks is not None:
            A = _dense_layer_jacobian(W, arg, sigma, d, spec.residual)
            layer_ranks[:, l] = numerical_rank(
                _dispatch.batched_singular_values(A, backend), A.shape[1:]
            )
    summary, exact = stable_statistics(widths[0], n, frame_layers, (widths[-1], widths[0]), backend)
    return record(active, layer_ranks, exact, summary, spec.spectra)


def _layer_norm(z: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """(z - mean) / sigma per sample, sigma = sqrt(variance + eps), and sigma (n,)."""
    sigma, u = layer_norm(z, _LAYER_NORM_EPS)
    return u, sigma


def _dense_layer_jacobian(
    W: NDArray[Any],
    arg: NDArray[Any],
    sigma: NDArray[Any] | None,
    d: NDArray[Any],
    residual: bool,
) -> NDArray[Any]:
    """[I +] diag(d) N' W (n, m, k), N' the Jacobian of the layer normalisation at z
    ((I - 1/m - y y^T / m) / sigma, y = arg the normalised z) or the identity (sigma None)."""
    m = W.shape[1]
    A = W
    if sigma is not None:
        JN = (np.eye(m) - 1.0 / m - arg[:, :, None] * arg[:, None, :] / m) / sigma[:, None, None]
        A = JN @ W
    A = d[:, :, None] * A
    if residual:
        A = A + np.eye(m)
    return A
