"""The stable frame of Network's compiled backends: J(x) = U diag(e^g) V for a chunk of
samples at once, with the exact rank after every layer.

The vectorised twin of jacgeom.reference.network.stable_frame (one sample at a time, which
decides each layer's rank with an SVD). Here the structure that makes exact zeros is
handled where it arises, so that every sample goes through the same batched QRs:

- every layer's rank is decided on its unscaled map on the frame's live directions
  (numpy.linalg.matrix_rank on unit rows, one batched SVD of values): where it is below
  what the layer's zero rows alone leave (a rank-deficient block of W on the live units,
  a rank-deficient W, a kernel layer with fewer centres than units, a singular I + D W),
  the frame is first restricted to the map's row space, so the lost directions leave
  exactly (g = -inf), as the reference does;
- units whose phi' is zero mathematically (jacgeom.Activation.derivative_is_zero) give
  exactly zero rows; the graded QR sorts rows by norm, so Householder leaves R_kk = 0
  exactly for them (no rounding noise) and the direction dies (g = -inf);
- a layer normalisation's null direction (the all-ones vector) is removed by a fixed
  orthonormal basis B_1 of its complement: D J_N W = (D B_1)(B_1^T J_N W), two steps;
- saturated units count: rows are scaled by e^(log|phi'| - c), c the largest log|phi'| of
  the layer, and c joins g, so phi' below the floating-point range does not delete a row;
  row scales further apart than e^-1200 are compressed and the excess given back to the
  directions those rows carry (jacgeom.reference.graded.split_log_scales).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import _backends, _dispatch
from .reference.graded import (
    DEPENDENT_GAP,
    GRADED_RANK_CAP,
    fold_dependent_rows,
    graded_qr_step_pivoted,
    graded_rank_floor,
    leading_rows_independent,
    log_spread,
    map_rank,
    rank_tolerance,
    scaled_norms,
    split_log_scales,
    unit_rows,
    unshift_log_scales,
)
from .reference.network import ones_complement

if TYPE_CHECKING:
    from .network import Network

F64 = NDArray[np.float64]


def graded_step(A: F64, g: F64, V: F64, backend: str) -> tuple[F64, F64, F64]:
    """Batched refactorisation A diag(e^g) V = Q diag(e^g') V' (A (B, m, k), g (B, k),
    V (B, k, n0)): jacgeom.reference.graded.graded_qr_step of every sample, by the
    dispatch table's ``graded_qr_step`` on ``backend``."""
    return _dispatch.call(
        "graded_qr_step",
        backend,
        np.ascontiguousarray(A, dtype=np.float64),
        np.ascontiguousarray(g, dtype=np.float64),
        np.ascontiguousarray(V, dtype=np.float64),
    )


def check_layer_values(arg: Any, log_d: Any, name: str, l: int) -> None:
    """A clear error, not a rank, where a layer's values are not finite."""
    if not np.all(np.isfinite(arg)):
        raise FloatingPointError(
            f"the pre-activations of layer {l} are not finite (non-finite inputs with "
            "check_finite=False, or weights that overflow); no spectrum or rank exists"
        )
    if np.any(np.isnan(log_d)) or np.any(np.isposinf(log_d)):
        raise FloatingPointError(
            f"phi' of activation {name!r} is NaN or infinite at layer {l} for finite "
            "pre-activations"
        )


def _trim(U: F64, g: F64, V: F64, keep: int) -> tuple[F64, F64, F64]:
    """Drop the frame's directions that are dead in every sample (lost exactly: they stay
    lost), live ones first; later QRs then cost the rank so far, not the width."""
    if keep >= g.shape[1]:
        return U, g, V
    order = np.argsort(~np.isfinite(g), axis=1, kind="stable")[:, :keep]
    return (
        np.take_along_axis(U, order[:, None, :], axis=2),
        np.take_along_axis(g, order, axis=1),
        np.take_along_axis(V, order[:, :, None], axis=1),
    )


def _live(U: F64, g: F64) -> F64:
    alive = np.isfinite(g)
    return U if alive.all() else U * alive[:, None, :]


# A layer's map cannot lose a direction where W has full column rank; that is taken as
# certain where the smallest singular value of W with unit rows is this many times above
# the largest rank tolerance map_rank can apply (its float64 rounding is eps-relative).
_CERTAIN_MARGIN = 1e3


def _injective(W: F64) -> bool:
    """Whether W (m, k), rows at unit norm, has full column rank beyond any doubt of the
    rank decision: then W U keeps every direction of any orthonormal U, and the per-sample
    decision (one SVD each) can be skipped."""
    m, k = W.shape
    if m < k or k == 0:
        return False
    Wu = unit_rows(W)[0]
    tol = max(GRADED_RANK_CAP, max(m, k) * np.finfo(np.float64).eps * np.sqrt(m))
    return bool(np.linalg.svd(Wu, compute_uv=False)[-1] > _CERTAIN_MARGIN * tol)


class FrameLayer(NamedTuple):
    """One layer of a chain for :func:`chain_frame`, for a batch of B samples.

    W : (m, k) shared or (B, m, k) per-sample weights (None for a dense layer);
    arg : (B, m) the argument of phi (z, or the normalised z);
    act : the layer's Activation; norm : the :class:`NormState` of a layer normalisation
    or None; residual : the layer is h -> h + phi(...); d : (B, m) phi'(arg) (read by
    residual layers only); dense : (B, m, k) the layer Jacobians of a kernel layer (with
    W None), residual included or not as ``residual`` says; drop : (B, m) bool, output
    units removed (set by :func:`chain_frame` where the next layer does not read them), or
    None.
    """

    W: Any
    arg: Any
    act: Any
    norm: Any = None
    residual: bool = False
    d: Any = None
    dense: Any = None
    drop: Any = None


def stable_frame(net: Network, X: Any, backend: str) -> tuple[F64, F64, NDArray[np.int64]]:
    """g (B, k), V (B, k, n_0) (float64) and the exact ranks (B, L) of a chunk X."""

    def layers() -> Any:
        for l, (z, d, state) in enumerate(net._layers(X, backend)):
            if net.kernel_layers[l]:
                yield FrameLayer(None, z, None, residual=net.residual_layers[l], dense=state)
                continue
            arg = state.arg if net.norm_layers[l] else z
            yield FrameLayer(
                net.weights[l],
                arg,
                net.activations[l],
                norm=state if net.norm_layers[l] else None,
                residual=net.residual_layers[l],
                d=d,
            )

    return chain_frame(X.shape[1], X.shape[0], layers(), backend)


def chain_frame(
    n0: int, B: int, layers: Any, backend: str = "numpy"
) -> tuple[F64, F64, NDArray[np.int64]]:
    """The stable frame of a chain of :class:`FrameLayer`: g (B, k), V (B, k, n_0) and the
    exact rank after every layer (B, L). ``backend`` runs the batched QR steps and the
    rank decisions' singular values (jacgeom._dispatch)."""
    # numpy's batched QR calls LAPACK once per sample: a threaded BLAS inside each small
    # call oversubscribes the cores (docs/benchmarks.md), so BLAS is pinned to one thread.
    if B == 0 or n0 == 0:
        L = 0
        for l, layer in enumerate(layers):  # no spectrum, but the values are still checked
            if layer.act is not None and layer.arg is not None:
                arg = np.asarray(layer.arg, dtype=np.float64)
                with np.errstate(all="ignore"):
                    log_d = layer.act.log_abs_derivative(arg)
                check_layer_values(
                    arg, log_d[~layer.act.derivative_is_zero(arg)], layer.act.name, l
                )
            L += 1
        return np.zeros((B, 0)), np.zeros((B, 0, n0)), np.zeros((B, L), dtype=np.int64)
    with _backends.single_threaded_blas():
        U = np.broadcast_to(np.eye(n0), (B, n0, n0)).copy()
        g = np.zeros((B, n0))
        V = np.broadcast_to(np.eye(n0), (B, n0, n0)).copy()
        ranks = []
        spread = np.zeros(B)  # the widest grading of rows so far (graded.graded_rank_floor)
        it = iter(layers)
        layer, l = next(it, None), 0
        while layer is not None:
            nxt = next(it, None)
            after = _apply(l, layer, U, g, V, spread, backend)
            if nxt is not None and nxt.residual and nxt.dense is None:
                nxt = nxt._replace(dense=_formed(l + 1, nxt, B))  # read twice, formed once
            live = np.count_nonzero(np.isfinite(after[1]), axis=1)
            ranks.append(live)  # the rank of the whole partial product
            if nxt is not None:
                after = _restrict_to_read(
                    l, layer, _read_units(nxt), (U, g, V, spread), after, backend
                )
            U, g, V, spread = after
            U, g, V = _trim(U, g, V, int(live.max(initial=0)))
            layer, l = nxt, l + 1
    out = np.stack(ranks, axis=1) if ranks else np.zeros((B, 0), dtype=np.int64)
    return g, V, out.astype(np.int64)


def _read_units(layer: FrameLayer) -> NDArray[np.bool_] | None:
    """(B, k) the units of the previous layer that ``layer``'s map reads, or None where it
    reads every one: a column of its map nonzero on a row it keeps; for a layer
    normalisation, a column of W that is not constant (J_N removes the ones vector
    exactly); for a residual layer, a nonzero column of I + D W (zero only where
    phi'_j W_jj = -1 exactly and the rest of the column is zero)."""
    if layer.residual:
        # I + M, M the layer's formed D J_N W, D W or kernel Jacobian (chain_frame forms
        # it once, before this)
        M = np.asarray(layer.dense)
        if not np.any(np.diagonal(M, axis1=-2, axis2=-1) == -1.0):
            return None
        read = np.any(M + np.eye(M.shape[-1]) != 0, axis=-2)
    elif layer.dense is not None:
        read = np.any(np.asarray(layer.dense) != 0, axis=1)
    else:
        W = np.asarray(layer.W)
        B = np.shape(layer.arg)[0]
        if layer.norm is not None:  # its first step sums every row of W
            varies = np.any(W != W[..., :1, :], axis=-2)
            read = np.broadcast_to(varies, (B, W.shape[-1]))
        else:
            nz = W != 0
            if nz.all():
                # every column is read wherever a row is kept; where none is, the map is
                # zero and the frame dies whatever it holds
                return None
            kept = ~np.asarray(layer.act.derivative_is_zero(layer.arg), dtype=bool)
            read = (kept.astype(np.float64)[:, None, :] @ nz.astype(np.float64))[:, 0, :] > 0
    return None if read.all() else read


def _restrict_to_read(
    l: int,
    layer: FrameLayer,
    read: NDArray[np.bool_] | None,
    before: tuple[F64, F64, F64, F64],
    after: tuple[F64, F64, F64, F64],
    backend: str,
) -> tuple[F64, F64, F64, F64]:
    """The frame after ``layer`` without the units that the next layer does not read
    (``read`` (B, m)), in the samples where such a unit carries part of the frame.
    ``after`` is the whole layer's frame (its rank is the partial product's), ``before``
    the frame the layer was applied to.

    Exact: the next map is zero on those units. It keeps the accuracy of a graded frame:
    the next layer mixes the frame's rows with rounding relative to the largest, so where
    the largest unit is not read, what the small units carry would be rounded against
    their couplings to it (eps e^(g_i - g_j) of their own size), and where the units'
    scales span more than the float range (graded.split_log_scales) the couplings
    underflow. The layer redone without those units is a frame of the rows that are read."""
    if read is None:
        return after
    U, g = after[0], after[1]
    need = np.any(np.any(_live(U, g) != 0, axis=2) & ~read, axis=1) & read.any(axis=1)
    if not need.any():
        return after
    i = np.flatnonzero(need)
    U0, g0, V0, spread0 = before
    redo = _apply(l, _take(layer, i, ~read[i]), U0[i], g0[i], V0[i], spread0[i], backend)
    # The redo's rank is decided with the whole layer's tolerance, and a row subset's
    # singular values are at most the whole map's, so it keeps at most as many directions;
    # where rounding at the threshold says otherwise, the sample keeps the whole frame.
    ok = np.count_nonzero(np.isfinite(redo[1]), axis=1) <= np.count_nonzero(
        np.isfinite(g[i]), axis=1
    )
    if not ok.any():
        return after
    i, redo = i[ok], tuple(x[ok] for x in redo)
    out = tuple(x.copy() for x in after)
    for x, y in zip(out, redo, strict=True):
        x[i] = y
    return out  # type: ignore[return-value]


def _take(layer: FrameLayer, i: NDArray[np.intp], drop: NDArray[np.bool_]) -> FrameLayer:
    """``layer`` at samples i, with the output units where ``drop`` (i.size, m) removed."""

    def rows(a: Any) -> Any:
        return None if a is None else np.asarray(a)[i]

    W = layer.W
    if W is not None and np.ndim(W) == 3:
        W = np.asarray(W)[i]
    norm = layer.norm
    if norm is not None:
        norm = norm._replace(
            sigma=rows(norm.sigma), u=rows(norm.u), affine_arg=rows(norm.affine_arg)
        )
    return layer._replace(
        W=W, arg=rows(layer.arg), norm=norm, d=rows(layer.d), dense=rows(layer.dense), drop=drop
    )


def _formed(l: int, layer: FrameLayer, B: int) -> F64:
    """D J_N W or D W (B, m, k), formed, of a residual layer (its identity not added)."""
    check_layer_values(layer.arg, layer.d, layer.act.name, l)
    M = np.broadcast_to(np.asarray(layer.W, dtype=np.float64), (B,) + layer.W.shape[-2:])
    if layer.norm is not None:
        M = _norm_jacobian(M, layer.norm)
    return np.asarray(layer.d, dtype=np.float64)[:, :, None] * M


def _apply(
    l: int, layer: FrameLayer, U: F64, g: F64, V: F64, spread: F64, backend: str
) -> tuple[F64, F64, F64, F64]:
    """The frame after one layer, and the widest grading of rows so far (B,), whose
    graded.graded_rank_floor is the least rank tolerance on the frame's basis."""
    Uz = _live(U, g)
    B = U.shape[0]
    live = np.count_nonzero(np.isfinite(g), axis=1)
    if layer.dense is not None or layer.residual:
        # Formed layer Jacobians (I + D J_N W, or a kernel layer's A grad k): well scaled,
        # so their rank is decided on them as they are, and a generic one keeps every
        # live direction up to the output width.
        if layer.dense is not None:
            M = np.asarray(layer.dense, dtype=np.float64)
        else:
            M = _formed(l, layer, B)
        if layer.residual:
            M = M + np.eye(M.shape[1])
        if not np.all(np.isfinite(M)):
            raise FloatingPointError(
                f"the Jacobian of layer {l} is not finite (non-finite inputs with "
                "check_finite=False, or weights that overflow); no spectrum or rank exists"
            )
        rows = np.full(B, M.shape[1])
        tol_rows = None
        if layer.drop is not None:  # the whole map's rows count in the tolerance
            tol_rows = np.count_nonzero(scaled_norms(M, axis=2) > 0, axis=1)
            M = np.where(layer.drop[:, :, None], 0.0, M)
            rows = rows - np.count_nonzero(layer.drop, axis=1)
        A = np.matmul(M, Uz)
        generic = np.minimum(live, rows)
        norms = scaled_norms(M, axis=2)
        floor = graded_rank_floor(spread)
        Zq, g, V, _ = _deflate(
            A, norms, generic, live, g, V, backend, floor=floor, tol_rows=tol_rows
        )
        if Zq is not None:
            A = np.matmul(A, Zq)
        with np.errstate(divide="ignore"):  # the rows' sizes grade this step
            spread = np.maximum(spread, log_spread(np.log(norms)))
        return (*graded_step(A, g, V, backend), spread)
    act, arg, state = layer.act, layer.arg, layer.norm
    zero = act.derivative_is_zero(arg)
    with np.errstate(all="ignore"):  # a non-finite arg is the error raised just below
        log_d = act.log_abs_derivative(np.asarray(arg, dtype=np.float64))
    check_layer_values(arg, log_d[~zero], act.name, l)
    sign = np.asarray(act.derivative_sign(arg), dtype=np.float64)
    if state is not None and state.gamma is not None:
        # gamma is a row scale like phi': its zeros remove rows exactly, its size joins log_d
        gamma = np.asarray(state.gamma, dtype=np.float64)
        zero = zero | (gamma == 0)
        with np.errstate(divide="ignore"):
            log_d = log_d + np.log(np.abs(gamma))
        sign = sign * np.sign(gamma)
    W = np.asarray(layer.W, dtype=np.float64)
    if state is not None:
        # J_N W = (B_1 H) diag(delta, 1, ..., 1) (H B_1^T W) / sigma: two steps, each with
        # its rank decided on its unscaled map; delta (1e-17 at weights of 1e6) is a row
        # scale like phi', so it never removes the u-direction.
        B1H, log_delta = _norm_factors(state, W.shape[-2])
        step = np.zeros(log_delta.shape[:1] + (B1H.shape[2],))
        step[:, :1] = log_delta[:, None]  # nothing at width 1 (J_N = 0)
        # H B_1^T W sums W's rows: where they cancel (a component along the ones vector),
        # each result row is judged against the size of its terms.
        Wu, log_rn = unit_rows(_on_support(W, _live(U, g)))
        top = np.max(log_rn, axis=-1, keepdims=True, initial=-np.inf)
        top = np.where(np.isfinite(top), top, 0.0)
        terms = np.exp(log_rn - top)
        with np.errstate(divide="ignore"):
            term_log_norms = np.log(np.abs(B1H.transpose(0, 2, 1)) @ terms[..., None])[..., 0]
        U, g, V, spread = _scaled_rows_step(
            np.matmul(B1H.transpose(0, 2, 1), terms[..., None] * Wu),
            np.zeros(step.shape, dtype=bool),
            step + top - np.log(np.asarray(state.sigma, dtype=np.float64))[:, None],
            np.ones(step.shape),
            U,
            g,
            V,
            spread,
            backend,
            term_log_norms,
        )
        W = B1H
    return _scaled_rows_step(W, zero, log_d, sign, U, g, V, spread, backend, drop=layer.drop)


def _on_support(W: F64, Uz: F64) -> F64:
    """W with its columns that meet zero rows of the frame's basis Uz (B, k, r) zeroed,
    (B, m, k) where any is: those entries take no part in the map, and must not change
    the size of its rows (a huge unused entry would make a used row look like noise) nor
    the rounding that follows."""
    support = np.any(Uz != 0, axis=2)
    return W if support.all() else W * support[:, None, :]


def _scaled_rows_step(
    W: F64,
    zero: NDArray[np.bool_],
    log_d: F64,
    sign: F64,
    U: F64,
    g: F64,
    V: F64,
    spread: F64,
    backend: str,
    term_log_norms: F64 | None = None,
    drop: NDArray[np.bool_] | None = None,
) -> tuple[F64, F64, F64, F64]:
    """The frame after the map diag(sign e^log_d) W (see :func:`_scaled_rows_step_once`),
    without the rows where ``drop`` (B, m) is true, whose rank is decided with the
    tolerance of the map with them (see :func:`_restrict_to_read`).

    Where the map loses directions (rank below the live ones) and the batched QR's static
    column order kept fewer than the decided rank (its first columns dependent on the live
    rows, as with sparse integer weights: the direction then sits off the diagonal of R and
    is dropped), those samples are redone with the frame first restricted to the map's
    row space, whose columns are independent."""
    floor = graded_rank_floor(spread)
    out_U, out_g, out_V, rank, live, step_spread = _scaled_rows_step_once(
        W, zero, log_d, sign, U, g, V, floor, backend, term_log_norms, None, drop
    )
    bad = (np.count_nonzero(np.isfinite(out_g), axis=1) < rank) & (rank < live)
    if bad.any():
        i = np.flatnonzero(bad)
        redo = _scaled_rows_step_once(
            W[i] if W.ndim == 3 else W,
            zero[i],
            log_d[i],
            sign[i],
            U[i],
            g[i],
            V[i],
            floor[i],
            backend,
            None if term_log_norms is None else term_log_norms[i],
            np.ones(i.size, dtype=bool),
            None if drop is None else drop[i],
        )
        out_U[i], out_g[i], out_V[i] = redo[0], redo[1], redo[2]  # fresh arrays: no copy
    return out_U, out_g, out_V, np.maximum(spread, step_spread)


def _scaled_rows_step_once(
    W: F64,
    zero: NDArray[np.bool_],
    log_d: F64,
    sign: F64,
    U: F64,
    g: F64,
    V: F64,
    floor: F64,
    backend: str,
    term_log_norms: F64 | None,
    force: NDArray[np.bool_] | None,
    drop: NDArray[np.bool_] | None = None,
) -> tuple[F64, F64, F64, NDArray[np.int64], NDArray[np.int64], F64]:
    """The frame after the map diag(sign e^log_d) W, W (m, k) shared or (B, m, k), with the
    rows where ``zero`` is true removed exactly.

    The rank is decided on the unscaled map (those rows removed, every other row of unit
    size): the scales are row factors, which never remove a direction. W's rows are taken
    at unit norm and their norms join log_d, so rows of subnormal or near-overflow entries
    keep their direction. A row's cancellation on the frame is judged against its own size,
    or where W was summed from larger terms (``term_log_norms`` (B, m), natural log),
    against theirs."""
    Uz = _live(U, g)
    B = U.shape[0]
    live = np.count_nonzero(np.isfinite(g), axis=1)
    m = W.shape[-2]
    # The rank the structure alone leaves counts zero weight rows as live: a zero row is
    # rank deficiency of W, which the frame deflates (the QR's static column order cannot
    # drop that direction itself).
    generic = np.minimum(live, np.count_nonzero(~(zero if drop is None else zero | drop), axis=1))
    Wu, log_rn = unit_rows(_on_support(W, Uz))
    log_rn = np.broadcast_to(log_rn, (B, m))
    zero = zero | ~np.isfinite(log_rn)
    tol_rows = None
    if drop is not None:
        # the rows kept with the dropped ones count in the tolerance: a row subset's
        # singular values are at most the whole map's, so no direction that the whole
        # layer's decision removes comes back
        tol_rows = np.count_nonzero(~zero, axis=1)
        zero = zero | drop
    log_d = np.where(zero, 0.0, log_d + np.where(zero, 0.0, log_rn))
    Y = np.matmul(Wu, Uz)
    if term_log_norms is None:
        row_norms = np.where(zero, 0.0, 1.0)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            row_norms = np.where(zero, 0.0, np.exp(term_log_norms - np.where(zero, 0.0, log_rn)))
    known = None
    r = int(live.max(initial=0))
    # one SVD of W (m k^2) replaces B of the map on the frame (m r^2 each) where it pays
    if term_log_norms is None and W.ndim == 2 and B > 1 and B * r * r >= W.shape[1] ** 2:
        # every row kept and W injective: the map keeps every live direction
        known = np.asarray(~zero.any(axis=1), dtype=bool)
        if known.any() and not _injective(W):
            known = None
    any_zero = bool(zero.any())
    Zq, g, V, rank = _deflate(
        np.where(zero[:, :, None], 0.0, Y) if any_zero else Y,
        row_norms,
        generic,
        live,
        g,
        V,
        backend,
        force,
        floor,
        known,
        tol_rows,
    )
    if Zq is not None:
        Y = np.matmul(Y, Zq)
    with np.errstate(invalid="ignore"):
        c = np.max(np.where(zero, -np.inf, log_d), axis=1, initial=-np.inf)
    c = np.where(np.isfinite(c), c, 0.0)
    with np.errstate(invalid="ignore"):
        g = g + c[:, None]
    rel = np.where(zero, -np.inf, log_d - c[:, None])
    step_spread = log_spread(rel)
    folds = _fold_dependent_rows(Y, row_norms, rel, step_spread, sign, rank, live, tol_rows)
    parts, shift = split_log_scales(np.where(zero, 0.0, rel))
    scale = np.where(zero, 0.0, sign * np.exp(parts[0]))
    Y *= scale[:, :, None]  # Y is this step's own array
    U, g, V = graded_step(Y, g, V, backend)
    for t in parts[1:]:
        U, g, V = graded_step(np.exp(t)[:, :, None] * U, g, V, backend)
    g = unshift_log_scales(U, g, shift)
    if folds is not None:
        f, Tk, rows, through = folds
        Uf = U[f]
        U[f] = Tk @ np.take_along_axis(Uf, rows[:, :, None], axis=1) + through[:, :, None] * Uf
    return U, g, V, rank, live, step_spread


def _fold_dependent_rows(
    Y: F64,
    row_norms: F64,
    t: F64,
    spread: F64,
    sign: F64,
    rank: NDArray[np.int64],
    live: NDArray[Any],
    tol_rows: Any,
) -> tuple[NDArray[np.intp], F64, NDArray[np.intp], NDArray[np.bool_]] | None:
    """The samples of a step diag(sign e^t) Y (Y (B, m, r), t (B, m) relative log row
    scales, -inf for rows removed; ``spread`` (B,) their log_spread) whose exactly
    dependent large rows come before smaller independent ones
    (jacgeom.reference.graded.fold_dependent_rows): Y is replaced in place by Yhat for
    those samples, and (samples, Tk, kept, through) returned, to give their
    frame's basis as Tk @ Q[kept] + through * Q. The tolerance is numpy's on
    :func:`_deflate`'s rows and live directions, without the graded floor: only rows equal
    to rounding are folded.

    Only samples with more kept rows than the rank and rows graded by more than
    DEPENDENT_GAP are checked, all at once (leading_rows_independent), and folded where a
    dependent row leads; None where no sample is folded."""
    kept = np.isfinite(t)
    need = (np.count_nonzero(kept, axis=1) > rank) & (spread > DEPENDENT_GAP)
    if not need.any():
        return None
    i = np.flatnonzero(need)
    counted = np.count_nonzero(row_norms > 0, axis=1) if tol_rows is None else tol_rows
    tol = rank_tolerance(np.asarray(counted)[i], np.asarray(live)[i])
    lead = leading_rows_independent(Y[i], row_norms[i], t[i], rank[i], tol)
    j = i[~lead]
    if j.size == 0:
        return None
    folded, Yhat, Tk, rows, through = fold_dependent_rows(
        Y[j], row_norms[j], t[j], sign[j], rank[j], tol[~lead]
    )
    if not folded.any():
        return None
    Y[j[folded]] = Yhat[folded]
    return j[folded], Tk[folded], rows[folded], through[folded]


def _deflate(
    X: F64,
    row_norms: F64,
    generic: NDArray[np.int64],
    live: NDArray[Any],
    g: F64,
    V: F64,
    backend: str,
    force: NDArray[np.bool_] | None = None,
    floor: Any = 0.0,
    known: NDArray[np.bool_] | None = None,
    tol_rows: Any = None,
) -> tuple[F64 | None, F64, F64, NDArray[np.int64]]:
    """Restrict the frame to the row space of the layer's map on its live directions,
    X (B, m, r), where X has lower rank than its zero rows explain.

    The rank is jacgeom.reference.graded.map_rank's (row_norms (B, m): the norms of the
    layer map's rows; a tiny but nonzero weight row stays, a row that cancels on the frame
    goes). Where it is below ``generic`` (B,), the rank the structure alone leaves (a
    rank-deficient block of W on the live units, a kernel layer with fewer centres than
    units), the frame U diag(e^g) V becomes (U Z_1) (Z_1^T diag(e^g) V), Z_1 the leading
    right singular vectors of X, and the lost directions leave exactly (g = -inf).
    ``force`` (B,) restricts those samples wherever the rank is below their live
    directions; ``floor`` is the least tolerance of the rank decision (map_rank's);
    ``known`` (B,) marks samples whose map is certainly injective (rank = live, no
    decision needed); ``tol_rows`` (B,) the rows the tolerance counts (default: X's
    nonzero rows). Returns
    (Zq, g, V, rank), Zq (B, r, r) to apply to the frame's basis (None
    when no sample is restricted) and rank (B,) the map's.
    """
    B, m, r = X.shape
    rank = np.asarray(live, dtype=np.int64).copy()
    # decided samples t and their row-normalised maps; the known ones keep rank = live,
    # so only decided samples can need the restriction below
    t = np.flatnonzero(np.ones(B, dtype=bool) if known is None else ~known)
    Xn_t = X[:0]
    if t.size:
        rank[t], Xn_t = map_rank(  # live directions (B,): the tolerance's r
            X[t],
            row_norms[t],
            np.asarray(live)[t],
            lambda A: _dispatch.batched_singular_values(A, backend),
            np.broadcast_to(floor, (B,))[t],
            None if tol_rows is None else tol_rows[t],
        )
    need = rank < generic
    if force is not None:
        need |= force & (rank < live)
    if not need.any():
        return None, g, V, rank
    Zq = np.broadcast_to(np.eye(r), (B, r, r)).copy()
    g, V = g.copy(), V.copy()
    Vh = np.linalg.svd(Xn_t[np.searchsorted(t, np.flatnonzero(need))])[2]
    # One sample at a time, with dynamic pivoting: Z_1^T's columns are often exactly
    # dependent (units with parallel rows), where the batched step's static order fails.
    for i, Zt, k in zip(np.flatnonzero(need), Vh, rank[need], strict=True):
        Zt[k:] = 0.0
        Q1, g[i], V[i] = graded_qr_step_pivoted(Zt, g[i], V[i])
        Zq[i] = Zt.T @ Q1
    return Zq, g, V, rank


class StableSummary(NamedTuple):
    """Per-sample statistics of the end-to-end Jacobians from their stable spectra."""

    exact_rank: NDArray[np.int64]
    rank: NDArray[np.int64]  # numerical: numpy's rule on the exact values
    log_smax: NDArray[Any]
    log_smin: NDArray[Any]  # -inf where the exact rank is below min(n_L, n_0)
    log_cond: NDArray[Any]  # +inf exactly where log_smin is -inf
    frobenius2: NDArray[Any]
    # sum of log sigma_i; -inf where the exact rank is below n_0 (n_L >= n_0)
    log_volume: NDArray[Any]
    # log ||J e_1||^2, the gain of one fixed input direction (None where not computed)
    log_gain: NDArray[Any] | None = None


def log_gain(g: F64, V: F64, direction: F64 | None = None) -> F64:
    """log ||J v||^2 (B,) of the frame J = U diag(e^g) V (U orthonormal columns), v a unit
    vector per sample (B, n0), default e_1, without forming J: a log-sum-exp of
    2 g_i + log (V v)_i^2; -inf where J v = 0."""
    Vv = V[:, :, 0] if direction is None else np.einsum("bij,bj->bi", V, direction)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = 2.0 * g + np.log(np.square(Vv))
    t = np.where(np.isnan(t), -np.inf, t)
    top = np.max(t, axis=1, initial=-np.inf)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(
            np.isfinite(top), safe + np.log(np.sum(np.exp(t - safe[:, None]), axis=1)), -np.inf
        )


def stable_summary(
    logs: F64, exact_rank: NDArray[np.int64], shape: tuple[int, int], eps: float
) -> StableSummary:
    """Summary of descending log singular values (B, p), p = min(shape); natural logs."""
    B, p = logs.shape
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        if p == 0:
            top = np.full(B, -np.inf)
            bottom = np.full(B, -np.inf)
        else:
            top, bottom = logs[:, 0], logs[:, -1]
        # Differences, not top + log(...): at |log sigma| ~ 1e160 the sum rounds to top.
        rank = np.count_nonzero(logs - top[:, None] > np.log(max(shape) * eps), axis=1).astype(
            np.int64
        )
        full = exact_rank == p
        log_cond = np.where(full, top - bottom, np.inf)
        frobenius2 = np.sum(np.exp(2 * logs), axis=1)
        n_L, n0 = shape
        volume = np.where(
            full & (n_L >= n0), np.sum(np.where(full[:, None], logs, 0.0), axis=1), -np.inf
        )
    return StableSummary(
        exact_rank, rank, top, np.where(full, bottom, -np.inf), log_cond, frobenius2, volume
    )


class NormState(NamedTuple):
    """A layer normalisation N(z) = (z - mean z) / sigma at a batch of B samples:
    sigma (B,) = sqrt(var z + eps), u (B, m) = N(z), eps the normalisation's constant;
    with affine parameters, ``affine_arg`` (B, m) = gamma u + beta, the argument of phi, and
    ``gamma`` (m,) (both None without: phi reads u, and gamma = 1)."""

    sigma: Any
    u: Any
    eps: float
    affine_arg: Any = None
    gamma: Any = None

    @property
    def arg(self) -> Any:
        """The argument of phi."""
        return self.u if self.affine_arg is None else self.affine_arg


def _norm_factors(state: NormState, m: int) -> tuple[F64, F64]:
    """J_N = (B_1 H) diag(delta, 1, ..., 1) (B_1 H)^T / sigma per sample: returns B_1 H
    (B, m, m - 1) and log delta (B,).

    B_1 is an orthonormal basis of the complement of the ones vector (u lies in it), H the
    reflector taking B_1^T u / |u| to e_1, and delta = 1 - |u|^2 / m = eps / sigma^2,
    computed as the latter: the former cancels to rounding noise once the variance is
    large, and J_N formed as I - 1 1^T / m - u u^T / m loses the u-direction the same way."""
    u = np.asarray(state.u, dtype=np.float64)
    B = u.shape[0]
    if m < 2:
        return np.zeros((B, m, 0)), np.zeros(B)
    B1 = ones_complement(m)
    w = u @ B1  # (B, m - 1)
    norm_w = scaled_norms(w, axis=1)
    v = w / np.where(norm_w > 0, norm_w, 1.0)[:, None]
    v[:, 0] += np.where(v[:, 0] >= 0, 1.0, -1.0)  # H maps w to -sign(w_0) |w| e_1
    vv = np.einsum("bi,bi->b", v, v)
    v = v / np.sqrt(np.where(vv > 0, vv, 1.0))[:, None]
    B1H = B1[None] - 2.0 * np.matmul(B1, v[:, :, None]) * v[:, None, :]
    sigma = np.asarray(state.sigma, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_delta = np.minimum(np.log(state.eps) - 2.0 * np.log(sigma), 0.0)
    return B1H, np.where(norm_w > 0, log_delta, 0.0)


def _norm_jacobian(Y: F64, state: NormState) -> F64:
    """J_N Y (B, m, r) for a batch, from :func:`_norm_factors`."""
    B1H, log_delta = _norm_factors(state, Y.shape[1])
    T = np.matmul(B1H.transpose(0, 2, 1), Y)
    T[:, :1, :] *= np.exp(log_delta)[:, None, None]
    out = np.matmul(B1H, T)
    out /= np.asarray(state.sigma, dtype=np.float64)[:, None, None]
    return out
