"""Figures (matplotlib, the optional extra ``jacgeom[plot]``). Each function returns a
matplotlib Figure; the data it draws is attached as ``fig.jacgeom_data`` so tests can check
what is plotted without looking at pixels.

Two ranks appear throughout (as in the rest of jacgeom): the **exact rank**, the number of
singular values of J that are non-zero in exact arithmetic (lost only through structure:
relu's dead units, layer normalisation's null direction, narrow layers), and the **float64
rank**, numpy.linalg.matrix_rank's rule (sigma_i > max(m, n) eps sigma_1) applied to J's
exact singular values. Both come from the library's stable spectrum (the Monte Carlo and
:class:`jacgeom.Network`), never from a formed product. Monte Carlo estimates are drawn
with 95% intervals and their sample counts; every log is base 10 and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import theory
from .typing import ActivationName

# One colour and marker per activation on every figure, so curves can be told apart even
# where they coincide.
_STYLE = {
    "relu": ("C0", "o"),
    "leaky_relu": ("C1", "s"),
    "tanh": ("C2", "D"),
    "gelu": ("C3", "^"),
    "identity": ("C4", "v"),
    "sigmoid": ("C5", "P"),
    "silu": ("C6", "X"),
    "softplus": ("C7", "*"),
    "elu": ("C8", "h"),
    "gelu_tanh": ("C9", "<"),
}
_EXTRA_MARKERS = ">pd8H"
_EPS64 = float(np.finfo(np.float64).eps)
_LN10 = math.log(10.0)
EXACT_LABEL = "exact rank"
FLOAT64_LABEL = "float64 rank (numpy's rule on exact singular values)"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('figures need matplotlib: pip install "jacgeom[plot]"') from exc
    return plt


FIGURE_FORMATS = ("png", "pdf", "svg")


def _check_figure_path(flag: str, path: str) -> None:
    """ValueError, one line naming ``flag``, where a figure cannot be written to ``path``:
    a name not ending in one of FIGURE_FORMATS, a missing or read-only directory, or no
    matplotlib. Called before any work, so that a run does not end on it."""
    import os
    from pathlib import Path

    target = Path(path)
    if target.suffix.lstrip(".").lower() not in FIGURE_FORMATS:
        raise ValueError(f"{flag} {path}: give a file name ending in .png, .pdf or .svg")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: directory {str(parent)!r} is not writable")
    try:
        _pyplot()
    except ImportError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def _style(label: str, index: int) -> tuple[str, str]:
    """(colour, marker) of a curve: fixed for the built-in activations."""
    if label in _STYLE:
        return _STYLE[label]
    return f"C{index % 10}", _EXTRA_MARKERS[index % len(_EXTRA_MARKERS)]


def _offset(x: Any, k: int, count: int, log: bool, step: float = 0.045) -> Any:
    """x shifted for the k-th of ``count`` curves (a fraction of a decade on log axes), so
    that curves with equal values stay visible side by side."""
    shift = step * (k - (count - 1) / 2)
    x = np.asarray(x, dtype=float)
    return x * 10.0**shift if log else x + 4 * shift


def _mean_interval(x: Any) -> tuple[float, float, float]:
    """Mean of x and its 95% interval, mean +- 1.96 standard errors."""
    x = np.asarray(x, dtype=float)
    m = float(x.mean())
    half = 1.96 * float(x.std(ddof=1)) / math.sqrt(x.size) if x.size > 1 else 0.0
    return m, m - half, m + half


def _numpy_rule_log10_threshold(size: int) -> float:
    """log10 of the condition number above which numpy.linalg.matrix_rank's rule drops the
    smallest singular value of an m x n matrix, size = max(m, n): it keeps
    sigma_min > max(m, n) eps sigma_max, so the threshold is log10(1 / (max(m, n) eps))
    (14.15 for size 32)."""
    return -math.log10(size * _EPS64)


def _draw_log10_cond(
    ax: Any, x: Any, median: Any, lo: Any, hi: Any, color: str, marker: str, label: str | None
) -> bool:
    """Median log10 condition number with its 95% interval; finite values as points,
    infinite medians as a marker at the top edge (returned True when there is one), an
    infinite upper end as a dotted line up to the edge. Nothing infinite is drawn as a
    value."""
    from matplotlib.transforms import blended_transform_factory

    x, median, lo, hi = (np.asarray(a, dtype=float) for a in (x, median, lo, hi))
    finite = np.isfinite(median)
    infinite = np.isposinf(median)  # nan: not recorded, not drawn
    if finite.any():
        top = np.where(np.isfinite(hi), hi, median)
        ax.errorbar(
            x[finite],
            median[finite],
            yerr=[median[finite] - lo[finite], (top - median)[finite]],
            color=color,
            marker=marker,
            capsize=3,
            ms=6,
            mfc="white",
            label=label,
        )
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    for xi, mi, hi_i in zip(x, median, hi, strict=True):
        if np.isfinite(mi) and not np.isfinite(hi_i):
            ax.annotate(
                "",
                xy=(xi, 0.99),
                xycoords=edge,
                xytext=(xi, mi),
                textcoords="data",
                arrowprops={"arrowstyle": "-", "ls": ":", "color": color},
            )
    if infinite.any():
        ax.plot(
            x[infinite],
            np.full(infinite.sum(), 0.97),
            transform=edge,
            ls="none",
            marker=marker,
            color=color,
            ms=8,
            clip_on=False,
            label=None if finite.any() else label,
        )
        return True
    return False


INFINITE_NOTE = (
    "markers on the top edge: median infinite\n(exact rank < n in over half the samples)"
)


def _label(point: dict[str, Any], result: Any) -> str:
    spec = result.spec
    if spec.layer == "kernel":
        return f"kernel ({spec.kernel})"
    act = point.get("activation", spec.activation)
    return act if isinstance(act, str) else "-".join(act)


def _monte_carlo_rows(
    results: Sequence[tuple[dict[str, Any], Any]],
) -> dict[str, dict[str, list[tuple[float, Any]]]]:
    """Sort the points into rows: "width" (depth 1, uniform widths), "depth" (uniform width
    at the most common width of the deeper points) and "point" (everything else, one
    category each); per row, label -> [(x, result)] sorted by x."""
    rows: dict[str, dict[str, list[tuple[float, Any]]]] = {"width": {}, "depth": {}, "point": {}}
    uniform = [len(set(r.spec.resolved_widths())) == 1 for _, r in results]
    deep_widths = [
        r.spec.resolved_widths()[0]
        for (_, r), u in zip(results, uniform, strict=True)
        if u and len(r.spec.resolved_widths()) > 2
    ]
    at = max(set(deep_widths), key=deep_widths.count) if deep_widths else None
    others = 0
    for (point, res), u in zip(results, uniform, strict=True):
        w = res.spec.resolved_widths()
        label = _label(point, res)
        placed = False
        if u and len(w) == 2:
            rows["width"].setdefault(label, []).append((float(w[0]), res))
            placed = True
        if u and w[0] == at:
            rows["depth"].setdefault(label, []).append((float(len(w) - 1), res))
            placed = True
        if not placed:
            rows["point"].setdefault(label, []).append((float(others), res))
            others += 1
    for row in rows.values():
        for label in row:
            row[label].sort(key=lambda t: t[0])
    # A row with a single x for every label says nothing the other row does not.
    if rows["width"] and rows["depth"]:
        if {x for pts in rows["width"].values() for x, _ in pts} <= {float(at or 0)}:
            del rows["width"]
    return {k: v for k, v in rows.items() if v}


def _monte_carlo_series(points: list[tuple[float, Any]]) -> dict[str, Any]:
    """What monte_carlo_figure draws for one curve: x, samples, P(exact rank < n) with its
    interval and closed form (nan where none applies), P(float64 rank < n) with its
    interval, the median log10 condition number with its 95% interval (inf where infinite,
    nan where not recorded) and its closed form, n = min(n_0, n_L) (the full rank) and
    n_max = max(n_0, n_L) (the size in numpy's rank rule) per point."""
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "x samples n n_max p_exact p_exact_lo p_exact_hi p_exact_theory p_float64 p_float64_lo "
            "p_float64_hi log10_cond_median log10_cond_lo log10_cond_hi log10_cond_theory"
        ).split()
    }
    for x, res in points:
        s = res.summary()
        th = s["theory"]
        w = res.spec.resolved_widths()
        out["x"].append(x)
        out["samples"].append(res.samples)
        out["n"].append(min(w[0], w[-1]))
        out["n_max"].append(max(w[0], w[-1]))
        pe = s.get("p_exact_rank_deficient", {"p": math.nan, "lo": math.nan, "hi": math.nan})
        for key, p in (("p_exact", pe), ("p_float64", s["p_rank_deficient"])):
            out[key].append(p["p"])
            out[key + "_lo"].append(p["lo"])
            out[key + "_hi"].append(p["hi"])
        out["p_exact_theory"].append(th.get("p_exact_rank_deficient", math.nan))
        lc = s.get("log_cond")
        for key, q in (("median", "median"), ("lo", "median_lo"), ("hi", "median_hi")):
            out["log10_cond_" + key].append(math.nan if lc is None else lc[q] / _LN10)
        out["log10_cond_theory"].append(th.get("log10_cond", math.nan))
    return {k: np.array(v) for k, v in out.items()}


def monte_carlo_figure(results: Sequence[tuple[dict[str, Any], Any]]) -> Any:
    """Rank and conditioning from a Monte Carlo run or sweep (``jacgeom mc --plot``).

    One row of three panels per way the points vary: against width at depth 1, against
    depth at the sweep's width, or one category per point when neither applies. Panels:

    1. P(exact rank < n), n = min(n_0, n_L), with exact Clopper-Pearson 95% intervals and
       the closed form where one applies (relu's binomial law; 0 for the other
       activations), dashed;
    2. P(float64 rank < n), numpy's rule on J's exact singular values, same intervals;
    3. median log10 condition number with a distribution-free 95% interval for the
       median, the Lyapunov limit of linear networks (x) and numpy's float64-rank
       threshold log10(1 / (max(n_0, n_L) eps)) (dotted: J is n_L x n_0, and
       numpy.linalg.matrix_rank drops singular values at or below max(n_0, n_L) eps
       sigma_max); an infinite median (exact rank < n in over half the
       samples) is a marker on the top edge, never a value.

    Curves are offset slightly along x, each with its own marker, so coinciding values
    (several activations at 0) stay visible.

    Parameters
    ----------
    results : sequence of (point, Result)
        As ``jacgeom mc`` and :func:`jacgeom.montecarlo.sweep` produce.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[row][label]`` the arrays drawn (keys of
    :func:`_monte_carlo_series`), row in {"width", "depth", "point"}.
    """
    from matplotlib.lines import Line2D

    plt = _pyplot()
    rows = _monte_carlo_rows(results)
    labels = list(dict.fromkeys(_label(p, r) for p, r in results))  # in the sweep's order
    fig, axes = plt.subplots(
        len(rows), 3, figsize=(15.5, 4.1 * len(rows) + 1.2), squeeze=False, layout="constrained"
    )
    data: dict[str, dict[str, dict[str, Any]]] = {}
    handles: dict[str, Any] = {}
    drawn: set[str] = set()  # which reference lines appear, for the legend
    for ax_row, (row, curves) in zip(axes, rows.items(), strict=True):
        data[row] = {}
        log_x = row != "point"
        any_infinite = recorded = False
        for k, label in enumerate(labels):
            if label not in curves:
                continue
            color, marker = _style(label, k)
            d = _monte_carlo_series(curves[label])
            data[row][label] = d
            x = _offset(d["x"], k, len(labels), log_x)
            for ax, key in ((ax_row[0], "p_exact"), (ax_row[1], "p_float64")):
                handles[label] = ax.errorbar(
                    x,
                    d[key],
                    yerr=[d[key] - d[key + "_lo"], d[key + "_hi"] - d[key]],
                    color=color,
                    marker=marker,
                    mfc="white",
                    capsize=3,
                    label=label,
                )
            has = np.isfinite(d["p_exact_theory"])
            if has.any():  # a tick per point, so that a single point shows its closed form
                drawn.add("closed form")
                # A wide, thick tick drawn over the measured marker: at a single point the
                # dashed line has no length, and the tick is all there is to see.
                ax_row[0].plot(
                    x[has],
                    d["p_exact_theory"][has],
                    "--",
                    marker="_",
                    ms=28,
                    mew=2.5,
                    color=color,
                    lw=1,
                    zorder=4,
                )
            if not np.isnan(d["log10_cond_median"]).all():
                recorded = True
                any_infinite |= _draw_log10_cond(
                    ax_row[2],
                    x,
                    d["log10_cond_median"],
                    d["log10_cond_lo"],
                    d["log10_cond_hi"],
                    color,
                    marker,
                    label,
                )
            lyap = np.isfinite(d["log10_cond_theory"])
            if lyap.any():
                drawn.add("lyapunov")
                ax_row[2].plot(x[lyap], d["log10_cond_theory"][lyap], "kx", ms=9, mew=2, zorder=5)
        xs = np.unique(np.concatenate([d["x"] for d in data[row].values()]))
        ns = {
            float(x): int(n)
            for d in data[row].values()
            for x, n in zip(d["x"], d["n"], strict=True)
        }
        sizes = {  # the size in numpy's rank rule, max(n_0, n_L), per x
            float(x): int(n)
            for d in data[row].values()
            for x, n in zip(d["x"], d["n_max"], strict=True)
        }
        xlabel = {
            "width": "width n (depth 1)",
            "depth": f"depth L (width {next(iter(ns.values()))})",
            "point": "experiment (widths n_0 x ... x n_L)",
        }[row]
        for ax in ax_row:
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if row == "point":
                placed = sorted(
                    ((x, r) for pts in curves.values() for x, r in pts), key=lambda t: t[0]
                )
                names = ["x".join(map(str, r.spec.resolved_widths())) for _, r in placed]
                ax.set_xticks(np.arange(len(names)), names, rotation=20, fontsize=8)
            else:
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs, [f"{int(v)}" for v in xs])
                ax.minorticks_off()
            ax.margins(x=0.08)
        ax_row[0].set(ylim=(-0.05, 1.05), ylabel=f"P({EXACT_LABEL} < n)")
        ax_row[1].set(ylim=(-0.05, 1.05), ylabel="P(float64 rank < n)")
        ax_row[0].set_title("P(exact rank < n): structural rank loss")
        ax_row[1].set_title("P(float64 rank < n): numpy's rule on exact singular values")
        if recorded:
            drawn.add("threshold")
            order = sorted(sizes.items())
            if len({n for _, n in order}) == 1:
                ax_row[2].axhline(_numpy_rule_log10_threshold(order[0][1]), color="grey", ls=":")
            else:
                ax_row[2].plot(
                    [x for x, _ in order],
                    [_numpy_rule_log10_threshold(n) for _, n in order],
                    ":",
                    color="grey",
                )
            ax_row[2].set(
                ylabel="median log10 condition number",
                title="median log10 cond (finite wherever exact rank = n)",
            )
            ax_row[2].set_ylim(bottom=0, top=max(1.08 * ax_row[2].get_ylim()[1], 20.0))
            if any_infinite:
                ax_row[2].text(
                    0.02, 0.88, INFINITE_NOTE, transform=ax_row[2].transAxes, fontsize=7, va="top"
                )
        else:
            ax_row[2].text(
                0.5,
                0.5,
                "condition numbers not recorded\n(Spec(spectra=False), --no-spectra)",
                ha="center",
                va="center",
                transform=ax_row[2].transAxes,
            )
            ax_row[2].set(
                title="log10 condition number", ylabel="median log10 condition number", yticks=[]
            )
    references = {
        "closed form": Line2D(
            [],
            [],
            color="k",
            ls="--",
            marker="_",
            ms=14,
            mew=2.5,
            label="closed form of P(exact rank < n)",
        ),
        "threshold": Line2D(
            [],
            [],
            color="grey",
            ls=":",
            label="log10(1/(max(n_0, n_L) eps)): numpy's float64-rank threshold",
        ),
        "lyapunov": Line2D(
            [], [], color="k", marker="x", ls="none", mew=2, label="Lyapunov limit (identity)"
        ),
    }
    extra = [h for k, h in references.items() if k in drawn]
    fig.legend(
        handles=[handles[k] for k in labels if k in handles] + extra,
        loc="outside lower center",
        ncols=min(8, len(handles) + len(extra)),
        fontsize=9,
    )
    counts = sorted({r.samples for _, r in results})
    n_text = (
        f"{counts[0]} samples per point"
        if len(counts) == 1
        else f"{counts[0]}-{counts[-1]} samples per point"
    )
    fig.suptitle(
        f"Monte Carlo: rank and conditioning of the end-to-end Jacobian, n = min(n_0, n_L); "
        f"{n_text}; bars: 95% intervals; curves offset along x so equal values stay visible",
        fontsize=10,
    )
    fig.jacgeom_data = data
    return fig


def monotonicity(name: str) -> str:
    """Monotonicity of a registered activation: "strictly increasing", "monotone, not
    strictly" (phi' >= 0 with zeros on an interval: relu) or "not monotone" (phi' < 0
    somewhere: gelu, silu), from the registry's ``strictly_monotone`` and phi' on [-40, 40].

    Examples
    --------
    >>> monotonicity("relu"), monotonicity("gelu"), monotonicity("tanh")
    ('monotone, not strictly', 'not monotone', 'strictly increasing')
    """
    from .activations import activation

    act = activation(name)
    if act.strictly_monotone:
        return "strictly increasing"
    dphi = act.derivative(np.linspace(-40.0, 40.0, 16001))
    return "monotone, not strictly" if np.all(dphi >= 0) else "not monotone"


def activations_figure() -> Any:
    """phi (solid) and phi' (dashed) of every built-in activation on [-4, 4], titled with its
    monotonicity (:func:`monotonicity`) and smoothness; the zeros of phi' of the
    non-monotone ones (gelu, gelu_tanh, silu) marked.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[name] = (z, phi, dphi, zeros)`` and
    ``jacgeom_data["titles"][name]`` the panel titles.
    """
    from .activations import activation, activation_names
    from .homeomorphism import derivative_zeros

    plt = _pyplot()
    names = activation_names()
    cols = 5
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows + 0.5), squeeze=False)
    z = np.linspace(-4, 4, 801)
    data: dict[str, Any] = {"titles": {}}
    for ax, name in zip(axes.flat, names, strict=False):
        act = activation(name)
        phi, dphi = act.phi(z), act.derivative(z)
        zeros = derivative_zeros(act) if act.derivative_can_vanish else np.array([])
        ax.plot(z, phi, label="phi(z)")
        ax.plot(z, dphi, "--", label="phi'(z)")
        ax.axhline(0, color="grey", lw=0.5)
        for z0 in zeros:
            ax.plot([z0], [0.0], "rx", ms=8, mew=2)
            ax.annotate(
                f"phi'=0 at z={z0:.4f}",
                (z0, 0.0),
                textcoords="offset points",
                xytext=(-40, -16),
                fontsize=7,
                color="r",
            )
        title = f"{name}: {monotonicity(name)}" + (", C1" if act.smooth else "")
        ax.set_title(title, fontsize=9)
        ax.set(ylim=(-1.5, 3), xlabel="pre-activation z", ylabel="phi(z), phi'(z)")
        ax.grid(alpha=0.3)
        data["titles"][name] = title
        data[name] = (z, phi, dphi, zeros)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Activations phi (solid) and their derivatives phi' (dashed); x: zeros of phi' "
        "(where a unit folds the space); C1: continuously differentiable",
        fontsize=10,
    )
    fig.tight_layout()
    fig.jacgeom_data = data
    return fig


def _rotation(angle: float) -> Any:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def warp_data(
    angle: float, activation_name: str, lines: int = 9, points: int = 201
) -> dict[str, Any]:
    """A grid of lines in [-1.5, 1.5]^2 and the unit circle, before and after
    x -> phi(R(angle) x), and the mask of grid points where some unit is dead (phi' = 0)."""
    from .activations import activation

    act = activation(activation_name)
    W = _rotation(angle)
    t = np.linspace(-1.5, 1.5, points)
    ticks = np.linspace(-1.5, 1.5, lines)
    curves = [np.stack([np.full_like(t, c), t], 1) for c in ticks] + [
        np.stack([t, np.full_like(t, c)], 1) for c in ticks
    ]
    theta = np.linspace(0, 2 * np.pi, 4 * points)
    curves.append(np.stack([np.cos(theta), np.sin(theta)], 1))
    mapped = [act.phi(c @ W.T) for c in curves]
    gx, gy = np.meshgrid(t, t)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    folded = np.any(act.derivative(pts @ W.T) == 0, axis=1).reshape(gx.shape)
    return {"curves": curves, "mapped": mapped, "folded": folded, "grid": (gx, gy), "W": W}


def warp_figure(
    angle: float = np.pi / 6,
    activations: tuple[str, ...] = ("relu", "leaky_relu", "tanh", "gelu", "silu"),
) -> Any:
    """The plane warped by phi(W x), W a rotation: input space, then one panel per
    activation; in the input panel the region where relu deletes a coordinate is shaded.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[name] = warp_data(angle, name)``
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(activations) + 1, figsize=(3.2 * (len(activations) + 1), 4.0))
    data = {name: warp_data(angle, name) for name in activations}
    first = data[activations[0]]
    gx, gy = first["grid"]
    relu_fold = warp_data(angle, "relu")["folded"]
    axes[0].contourf(gx, gy, relu_fold.astype(float), levels=[0.5, 1.5], colors=["#f4c7c3"])
    for c in first["curves"][:-1]:
        axes[0].plot(c[:, 0], c[:, 1], color="#4477aa", lw=0.6)
    axes[0].plot(first["curves"][-1][:, 0], first["curves"][-1][:, 1], color="#cc3311", lw=1.5)
    axes[0].set_title(
        f"input (relu folds shaded)\nW = rotation {np.degrees(angle):.0f} deg", fontsize=9
    )
    for ax, name in zip(axes[1:], activations, strict=True):
        for c in data[name]["mapped"][:-1]:
            ax.plot(c[:, 0], c[:, 1], color="#4477aa", lw=0.6)
        circ = data[name]["mapped"][-1]
        ax.plot(circ[:, 0], circ[:, 1], color="#cc3311", lw=1.5)
        ax.set_title(f"phi(W x), {name}", fontsize=9)
        ax.set(xlabel="phi(W x)_1", ylabel="phi(W x)_2")
    axes[0].set(xlabel="x_1", ylabel="x_2")
    for ax in axes:
        ax.set_aspect("equal")
    fig.suptitle(
        "The plane warped by one layer x -> phi(W x): a grid (blue) and the unit circle (red), "
        "before (left) and after",
        fontsize=10,
    )
    fig.tight_layout()
    fig.jacgeom_data = data
    return fig


def warp_animation(path: str, angles: Any = None, activation_name: str = "relu") -> list[float]:
    """An animated GIF (pillow) of the warp as the rotation angle sweeps; returns the angles."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    plt = _pyplot()
    angles = list(np.linspace(0, np.pi / 2, 24) if angles is None else angles)
    fig, ax = plt.subplots(figsize=(4, 4))

    def draw(a: float) -> None:
        ax.clear()
        d = warp_data(a, activation_name)
        for c in d["mapped"][:-1]:
            ax.plot(c[:, 0], c[:, 1], color="#4477aa", lw=0.6)
        ax.plot(d["mapped"][-1][:, 0], d["mapped"][-1][:, 1], color="#cc3311", lw=1.5)
        ax.set(
            xlim=(-1.6, 1.6),
            ylim=(-1.6, 1.6),
            title=f"{activation_name}, rotation {np.degrees(a):.0f} deg",
        )
        ax.set_aspect("equal")

    FuncAnimation(fig, draw, frames=angles).save(path, writer=PillowWriter(fps=6))
    plt.close(fig)
    return angles


def dead_coordinate_figure(
    widths: Any = (1, 2, 3, 4, 6, 8, 12, 16), samples: int = 4000, seed: int = 0
) -> Any:
    """P(at least one zeroed coordinate) of one relu layer against width n: Monte Carlo
    points with Clopper-Pearson intervals over the closed form 1 - 2^-n. Every sample draws
    its own He-initialised W, iid N(0, 2/n) (the Monte Carlo's default); the law does not
    depend on the scale, only on the signs of the pre-activations.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data = {"n", "p", "lo", "hi", "theory",
    "init"}``
    """
    from .montecarlo import Spec, run
    from .network import init_std

    plt = _pyplot()
    rows = []
    init = "he"
    for n in widths:
        spec = Spec(widths=(int(n), int(n)), samples=samples, seed=seed, init=init)
        s = run(spec, progress=False).summary()["p_any_zeroed"]
        rows.append((n, s["p"], s["lo"], s["hi"]))
    n_arr, p, lo, hi = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    # The entries' law as the Monte Carlo draws them (variance init_std^2, c / n for he).
    c = init_std(init, None, 1, 1) ** 2
    law = f"{init} init: iid N(0, {c:g}/n)"
    fine = np.linspace(1, max(widths), 200)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(fine, 1 - 2.0**-fine, "k--", lw=1, label="closed form 1 - 2^-n")
    ax.errorbar(
        n_arr,
        p,
        yerr=[p - lo, hi - p],
        fmt="o",
        capsize=3,
        label=f"Monte Carlo, {samples} samples per n (95% Clopper-Pearson)",
    )
    ax.set(
        xlabel="width n",
        ylabel="P(some coordinate zeroed)",
        title=f"Dead coordinates of one relu layer (W fresh per sample, {law})",
        xticks=n_arr,
    )
    ax.title.set_fontsize(10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.jacgeom_data = {
        "n": n_arr,
        "p": p,
        "lo": lo,
        "hi": hi,
        "theory": 1 - 2.0**-n_arr,
        "init": init,
    }
    return fig


def rank_depth_data(
    width: int,
    depths: Sequence[int],
    activation: str,
    samples: int,
    seed: int = 0,
    **spec_fields: Any,
) -> dict[str, Any]:
    """The Monte Carlo behind one curve of :func:`rank_depth_figure`: for each depth, the
    mean exact rank / width and mean float64 rank / width with 95% intervals (mean +- 1.96
    standard errors), P(exact rank < width) with its Clopper-Pearson interval and closed
    form (nan where none), the median log10 condition number with its 95% interval (inf
    where infinite) and the Lyapunov limit (nan where none), the sample count, and the
    closed-form mean exact rank / width of relu networks, sum_r prod_l P(Bin(n_l, 1/2) >= r)
    / n (nan for other networks)."""
    from .montecarlo import Spec, run

    keys = (
        "depth samples exact exact_lo exact_hi float64 float64_lo float64_hi p_exact p_exact_lo "
        "p_exact_hi p_exact_theory exact_theory log10_cond_median log10_cond_lo log10_cond_hi "
        "log10_cond_theory"
    ).split()
    out: dict[str, list[float]] = {k: [] for k in keys}
    for depth in depths:
        spec = Spec(
            width=width,
            depth=int(depth),
            activation=activation,
            samples=samples,
            seed=seed,
            layer_ranks=False,
            **spec_fields,
        )
        res = run(spec, progress=False, records=True)
        s = res.summary()
        th = s["theory"]
        out["depth"].append(int(depth))
        out["samples"].append(res.samples)
        for key, ranks in (("exact", res.data["exact_rank"]), ("float64", res.data["rank"])):
            m, lo, hi = _mean_interval(ranks / width)
            out[key].append(m)
            out[key + "_lo"].append(lo)
            out[key + "_hi"].append(hi)
        p = s["p_exact_rank_deficient"]
        out["p_exact"].append(p["p"])
        out["p_exact_lo"].append(p["lo"])
        out["p_exact_hi"].append(p["hi"])
        out["p_exact_theory"].append(th.get("p_exact_rank_deficient", math.nan))
        relu_law = "active_fraction" in th  # relu's binomial laws apply to this spec
        widths = spec.resolved_widths()
        out["exact_theory"].append(
            sum(theory.p_rank_at_least(widths, r) for r in range(1, width + 1)) / width
            if relu_law
            else math.nan
        )
        lc = s["log_cond"]
        out["log10_cond_median"].append(lc["median"] / _LN10)
        out["log10_cond_lo"].append(lc["median_lo"] / _LN10)
        out["log10_cond_hi"].append(lc["median_hi"] / _LN10)
        out["log10_cond_theory"].append(th.get("log10_cond", math.nan))
    return {k: np.array(v) for k, v in out.items()}


RANK_DEPTH_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "gelu", "identity")


def rank_depth_figure(
    width: int = 16,
    depths: Any = (1, 2, 4, 8, 16),
    samples: int = 500,
    seed: int = 0,
    activations: tuple[str, ...] = RANK_DEPTH_ACTIVATIONS,
) -> Any:
    """Exact rank, float64 rank and conditioning against depth: plain networks, residual
    networks and networks with layer normalisation (columns), fresh He weights per sample.

    Rows: mean exact rank / width (relu's closed form dashed); mean float64 rank / width
    (numpy's rule on the exact singular values); median log10 condition number with the
    threshold log10(1 / (n eps)) above which numpy's rule drops the float64 rank (n x n
    Jacobians: max(m, n) = n = width). Bands and bars are 95%
    intervals; the sample count is in the title. The story: relu loses exact rank (dead
    units); leaky_relu, tanh, gelu and identity keep it and lose conditioning, which the
    float64 rank mistakes for rank loss; layer normalisation costs one dimension.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[(variant, activation)]`` the arrays of
    :func:`rank_depth_data`.
    """
    plt = _pyplot()
    variants: dict[str, dict[str, Any]] = {
        "plain": {},
        "residual": {"residual": True},
        "layer norm": {"norm": "layer"},
    }
    fig, axes = plt.subplots(3, 3, figsize=(15, 12), sharey="row", layout="constrained")
    data = {}
    for col, (variant, fields) in enumerate(variants.items()):
        any_infinite = False
        for k, act in enumerate(activations):
            d = rank_depth_data(width, depths, act, samples, seed, **fields)
            data[(variant, act)] = d
            color, marker = _style(act, k)
            x = _offset(d["depth"], k, len(activations), log=True)
            for row, key in ((0, "exact"), (1, "float64")):
                ax = axes[row, col]
                ax.plot(x, d[key], color=color, marker=marker, mfc="white", label=act)
                ax.fill_between(x, d[key + "_lo"], d[key + "_hi"], color=color, alpha=0.2)
            has = np.isfinite(d["exact_theory"])
            if has.any():
                # Black and on top: where the law holds it lies on the measured curve, and
                # drawn in the series' colour beneath it, it was invisible.
                axes[0, col].plot(x[has], d["exact_theory"][has], "--", color="k", lw=1.2, zorder=5)
            any_infinite |= _draw_log10_cond(
                axes[2, col],
                x,
                d["log10_cond_median"],
                d["log10_cond_lo"],
                d["log10_cond_hi"],
                color,
                marker,
                act,
            )
            lyap = np.isfinite(d["log10_cond_theory"])
            if lyap.any():
                axes[2, col].plot(
                    d["depth"][lyap], d["log10_cond_theory"][lyap], "kx", ms=9, mew=2, zorder=5
                )
        axes[2, col].axhline(_numpy_rule_log10_threshold(width), color="grey", ls=":")
        if any_infinite:
            axes[2, col].text(
                0.02, 0.9, INFINITE_NOTE, transform=axes[2, col].transAxes, fontsize=7, va="top"
            )
        cap = " (at most (n - 1) / n)" if fields.get("norm") else ""
        axes[0, col].set_title(f"{variant}: {EXACT_LABEL} / width{cap}", fontsize=10)
        axes[1, col].set_title(f"{variant}: float64 rank / width", fontsize=10)
        axes[2, col].set_title(f"{variant}: median log10 condition number", fontsize=10)
        for ax in axes[:, col]:
            ax.set_xlabel(f"depth L (width {width})")
    axes[0, 0].set_ylabel(f"mean {EXACT_LABEL} / width")
    axes[1, 0].set_ylabel("mean float64 rank / width\n(numpy's rule on exact singular values)")
    axes[2, 0].set_ylabel("median log10 condition number")
    for ax in axes[:2].flat:
        ax.set_ylim(-0.02, 1.05)
    ticks = [int(d) for d in depths]
    for ax in axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    extra = [
        Line2D([], [], color="k", ls="--", label="closed form (relu, mean exact rank)"),
        Line2D(
            [],
            [],
            color="grey",
            ls=":",
            label=f"log10(1/({width} eps)) = {_numpy_rule_log10_threshold(width):.1f}: "
            "numpy's float64-rank threshold",
        ),
        Line2D([], [], color="k", marker="x", ls="none", mew=2, label="Lyapunov limit (identity)"),
    ]
    handles = axes[0, 0].get_legend_handles_labels()[0] + extra
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9)
    fig.suptitle(
        f"Rank and conditioning through depth, width {width}, fresh He weights: {samples} "
        "samples per point; shaded bands and bars: 95% intervals; curves offset along x so "
        "equal values stay visible",
        fontsize=11,
    )
    fig.jacgeom_data = data
    return fig


def metric_distortion_data(
    m: int = 6,
    seed: int = 0,
    activation_name: ActivationName = "relu",
    points: int = 721,
    grid: int = 121,
) -> dict[str, Any]:
    """Eigenvalues of the pullback metric G(x) = W^T D(x)^2 W of one random layer R^2 -> R^m
    (W iid N(0, 1), b iid N(0, 0.09)) along the unit circle x = (cos t, sin t) and the
    smaller one over the grid [-2, 2]^2, with the points where an eigenvalue is exactly 0.

    G(x) has rank min(2, k(x)), k the number of units with phi'(z) != 0 (any two rows of a
    Gaussian W are independent, which is checked), so an eigenvalue is exactly zero where
    k < 2: decided from the active units, not from rounding.

    Returns
    -------
    dict with "theta" (T,), "eigenvalues" (T, 2) ascending, "exact_zero" (T, 2) bool,
    "grid" (gx, gy), "smaller" (G, G), "smaller_exact_zero" (G, G) bool, "W", "b"
    """
    from .layer import layer_derivatives, pullback_metric

    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, 2))
    b = 0.3 * rng.standard_normal(m)
    minors = W[:, None, 0] * W[None, :, 1] - W[:, None, 1] * W[None, :, 0]
    off = ~np.eye(m, dtype=bool)
    assert np.all(np.abs(minors[off]) > 1e-8), "two rows of W are parallel"
    theta = np.linspace(0, 2 * np.pi, points)
    circle = np.stack([np.cos(theta), np.sin(theta)], 1)
    t = np.linspace(-2, 2, grid)
    gx, gy = np.meshgrid(t, t)
    flat = np.stack([gx.ravel(), gy.ravel()], 1)

    def rank(X: Any) -> Any:
        active = np.count_nonzero(layer_derivatives(W, X, b, activation=activation_name), axis=1)
        return np.minimum(active, 2)

    ev = np.linalg.eigvalsh(pullback_metric(W, circle, b, activation=activation_name))
    r = rank(circle)
    zero = np.stack([r < 2, r < 1], 1)
    smaller = np.linalg.eigvalsh(pullback_metric(W, flat, b, activation=activation_name))[:, 0]
    return {
        "theta": theta,
        "eigenvalues": np.where(zero, 0.0, ev),
        "exact_zero": zero,
        "grid": (gx, gy),
        "smaller": np.where(rank(flat) < 2, 0.0, smaller).reshape(gx.shape),
        "smaller_exact_zero": (rank(flat) < 2).reshape(gx.shape),
        "W": W,
        "b": b,
    }


def metric_distortion_figure(
    m: int = 6,
    seed: int = 0,
    activations: tuple[ActivationName, ...] = ("relu", "leaky_relu", "tanh", "gelu", "sigmoid"),
) -> Any:
    """Eigenvalues of the pullback metric W^T D^2 W along the unit circle (top, log10 axis)
    and the log10 of the smaller one over a grid (bottom), for one random layer R^2 -> R^m,
    per activation. Exact zeros (fewer than two active units: relu's dead region) are not
    drawn as small numbers: red ticks at the bottom edge on top, red cells below.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[name]`` from :func:`metric_distortion_data`
    """
    from matplotlib.transforms import blended_transform_factory

    plt = _pyplot()
    fig, axes = plt.subplots(
        2, len(activations), figsize=(3.5 * len(activations), 7.4), layout="constrained"
    )
    data = {name: metric_distortion_data(m, seed, name) for name in activations}
    finite_low = [
        np.log10(d["smaller"][~d["smaller_exact_zero"]]).min()
        for d in data.values()
        if (~d["smaller_exact_zero"]).any()
    ]
    vmin = math.floor(min(finite_low)) if finite_low else -6
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d62728")
    im = None
    for j, name in enumerate(activations):
        d = data[name]
        theta, ev, zero = d["theta"], d["eigenvalues"], d["exact_zero"]
        ax = axes[0, j]
        for i, (label, color) in enumerate((("smaller", "C1"), ("larger", "C0"))):
            ax.plot(theta, np.where(zero[:, i], np.nan, ev[:, i]), color=color, label=label)
        if zero.any():
            edge = blended_transform_factory(ax.transData, ax.transAxes)
            ax.plot(
                theta[zero[:, 0]],
                np.full(zero[:, 0].sum(), 0.015),
                "|",
                color="#d62728",
                transform=edge,
                ms=6,
                label="smaller = 0 exactly",
            )
        ax.set(
            title=f"{name}: eigenvalues on the circle",
            ylabel="eigenvalue (log10 axis)",
            xlabel="angle t of x = (cos t, sin t) (radians)",
            yscale="log",
            ylim=(10.0**vmin / 3, 1e2),
            xticks=np.arange(0, 7),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
        gx, gy = d["grid"]
        low = np.ma.masked_where(
            d["smaller_exact_zero"], np.log10(np.where(d["smaller_exact_zero"], 1.0, d["smaller"]))
        )
        im = axes[1, j].pcolormesh(gx, gy, low, shading="auto", vmin=vmin, vmax=1, cmap=cmap)
        axes[1, j].plot(np.cos(theta), np.sin(theta), "w", lw=0.8)
        axes[1, j].set(
            title=f"{name}: log10 smaller eigenvalue"
            + ("\n(red: exactly 0)" if d["smaller_exact_zero"].any() else ""),
            aspect="equal",
            xlabel="x1",
            ylabel="x2",
        )
    axes[0, 0].set_ylabel("eigenvalue of W^T D^2 W (log10 axis)")
    fig.colorbar(
        im, ax=axes[1, :].tolist(), shrink=0.8, label="log10 smaller eigenvalue (red: exactly 0)"
    )
    fig.suptitle(
        f"Pullback metric of one random layer R^2 -> R^{m} (W iid N(0, 1)): how each "
        "activation stretches and collapses directions; white circle: the unit circle of the "
        "top row",
        fontsize=10,
    )
    fig.jacgeom_data = data
    return fig


def write_figures(out: str, gif: bool = False, samples: int = 2000) -> list[str]:
    """Write every figure as a PNG into ``out`` (and the warp GIF when asked); returns paths.

    ``samples`` is the Monte Carlo sample count of the dead-coordinate figure; the rank
    against depth figure takes a quarter of it per point (at least 50), the kernel
    comparison a tenth (at least 50).
    """
    import os

    plt = _pyplot()
    os.makedirs(out, exist_ok=True)
    figures = {
        "activations": activations_figure(),
        "warp": warp_figure(),
        "dead_coordinates": dead_coordinate_figure(samples=samples),
        "rank_depth": rank_depth_figure(samples=max(50, samples // 4)),
        "metric_distortion": metric_distortion_figure(),
        "kernel_comparison": kernel_comparison_figure(samples=max(50, samples // 10)),
    }
    paths = []
    for name, fig in figures.items():
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    if gif:
        path = os.path.join(out, "warp.gif")
        warp_animation(path)
        paths.append(path)
    return paths


def kernel_comparison_figure(widths: Any = (8, 8, 8, 8), samples: int = 400, seed: int = 0) -> Any:
    """Kernel network against relu and tanh networks of the same widths (the Monte Carlo
    sweep over Spec.layer and Spec.activation): distributions of the exact rank and the
    float64 rank (counts per value), of the log10 condition number and of the log10 volume.
    Samples whose exact rank is below n have an infinite condition number and no volume:
    they are counted in the legend, not drawn.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[name] = per-sample statistics``
    """
    from matplotlib.patches import Patch

    from .montecarlo import Spec, sweep

    plt = _pyplot()
    widths = list(widths)
    base = Spec(widths=tuple(widths), samples=samples, seed=seed, layer_ranks=False)
    runs = sweep(base, {"activation": ["relu", "tanh"]}, progress=False, records=True)
    runs += sweep(base, {"layer": ["kernel"]}, progress=False, records=True)
    data = {
        ("kernel (rbf)" if point.get("layer") == "kernel" else point["activation"]): res.data
        for point, res in runs
    }
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2), layout="constrained")
    n = min(widths[0], widths[-1])
    values = np.arange(n + 1)
    bar = 0.8 / len(data)
    extra: dict[str, list[Any]] = {}  # legend entries of networks with nothing finite to draw
    for i, (name, st) in enumerate(data.items()):
        color = f"C{i}"  # one colour per network on every panel
        for ax, key in ((axes[0], "exact_rank"), (axes[1], "rank")):
            counts = np.bincount(st[key].astype(np.int64), minlength=n + 1)[: n + 1]
            ax.bar(values + (i - (len(data) - 1) / 2) * bar, counts, bar, color=color, label=name)
        for ax, key in ((axes[2], "log_cond"), (axes[3], "log_volume")):
            x = st[key] / _LN10
            finite = x[np.isfinite(x)]
            label = f"{name}: {finite.size} of {x.size} finite"
            if finite.size:
                ax.hist(finite, bins=30, alpha=0.5, color=color, label=label)
            else:
                extra.setdefault(key, []).append(Patch(color=color, alpha=0.5, label=label))
    axes[0].set(
        xlabel=f"{EXACT_LABEL} (n = {n})", ylabel="samples", title=f"Exact rank, widths {widths}"
    )
    axes[1].set(
        xlabel=f"float64 rank (n = {n})",
        ylabel="samples",
        title="float64 rank (numpy's rule on exact singular values)",
    )
    for ax in axes[:2]:
        ax.set_xticks(values)
    axes[2].set(
        xlabel="log10 condition number",
        ylabel="samples",
        title="Conditioning (infinite where exact rank < n: not drawn)",
    )
    axes[3].set(
        xlabel="log10 volume = sum of log10 singular values",
        ylabel="samples",
        title="Volume (defined where exact rank = n)",
    )
    for ax, key in zip(axes, ("exact_rank", "rank", "log_cond", "log_volume"), strict=True):
        handles = ax.get_legend_handles_labels()[0] + extra.get(key, [])
        ax.legend(handles=handles, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Kernel layers (rbf) beside relu and tanh layers of the same widths: {samples} "
        "samples each, fresh weights per sample",
        fontsize=10,
    )
    fig.jacgeom_data = data
    return fig
