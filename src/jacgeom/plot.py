"""Figures (matplotlib, the optional extra ``jacgeom[plot]``). Each function returns a
matplotlib Figure; the data it draws is attached as ``fig.jacgeom_data`` so tests can check
what is plotted without looking at pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import theory


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError('figures need matplotlib: pip install "jacgeom[plot]"') from exc
    return plt


def monte_carlo_figure(results: Sequence[tuple[dict[str, Any], Any]]) -> Any:
    """Three panels from a Monte Carlo sweep.

    1. P(rank-deficient) against width at depth 1, with Clopper-Pearson intervals and the
       closed form 1 - 2^-n;
    2. end-to-end rank / width against depth (mean and 5-95% band), per activation;
    3. the spread log s_max - log s_min (median) against depth, per activation.

    Parameters
    ----------
    results : sequence of (point, Result)
        Points carry "activation", "width" and "depth" (as ``jacgeom mc`` produces).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    data: dict[str, Any] = {"width": {}, "depth": {}, "spread": {}}
    acts = sorted({str(p.get("activation")) for p, _ in results})
    for act in acts:
        rows = [(p, r) for p, r in results if str(p.get("activation")) == act]
        shallow = sorted(
            ((p["width"], r) for p, r in rows if p.get("depth") == 1 and "width" in p),
            key=lambda t: t[0],
        )
        if shallow:
            w = np.array([x for x, _ in shallow])
            summ = [r.summary()["p_rank_deficient"] for _, r in shallow]
            p = np.array([s["p"] for s in summ])
            err = np.array([[s["p"] - s["lo"] for s in summ], [s["hi"] - s["p"] for s in summ]])
            axes[0].errorbar(w, p, yerr=err, marker="o", capsize=3, label=act)
            data["width"][act] = (w, p)
        # depth curves at the most common width
        widths = [p.get("width") for p, _ in rows if "depth" in p]
        at = max(set(widths), key=widths.count) if widths else None
        deep = sorted(
            ((p["depth"], r) for p, r in rows if "depth" in p and p.get("width") == at),
            key=lambda t: t[0],
        )
        if deep:
            d = np.array([x for x, _ in deep])
            frac = [
                r.data["rank"] / min(r.spec.resolved_widths()[0], r.spec.resolved_widths()[-1])
                for _, r in deep
            ]
            mean = np.array([f.mean() for f in frac])
            lo = np.array([np.quantile(f, 0.05) for f in frac])
            hi = np.array([np.quantile(f, 0.95) for f in frac])
            line = axes[1].plot(d, mean, marker="o", label=act)[0]
            axes[1].fill_between(d, lo, hi, alpha=0.15, color=line.get_color())
            data["depth"][act] = (d, mean)
            if all("log_cond" in r.data for _, r in deep):  # not with spectra=False
                spread = np.array([np.median(r.data["log_cond"]) for _, r in deep])
                axes[2].plot(d, spread / np.log(10), marker="o", label=act)
                data["spread"][act] = (d, spread)
    if not data["spread"] and any("log_cond" not in r.data for _, r in results):
        axes[2].text(
            0.5, 0.5, "not recorded\n(spectra=False)", ha="center", transform=axes[2].transAxes
        )
    if data["width"]:
        n = np.arange(1, max(max(w) for w, _ in data["width"].values()) + 1)
        axes[0].plot(
            n, [theory.p_any_zeroed(int(k)) for k in n], "k--", lw=1, label="1 - 2^-n (relu)"
        )
    axes[0].set(
        xscale="log",
        xlabel="width n (depth 1)",
        ylabel="P(rank-deficient)",
        title="Rank loss of one layer",
    )
    axes[1].set(
        xlabel="depth", ylabel="end-to-end rank / width", title="Rank through depth", ylim=(0, 1.05)
    )
    axes[2].set(
        xlabel="depth", ylabel="median log10(s_max / s_min)", title="Spread of singular values"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.jacgeom_data = data
    return fig


def activations_figure() -> Any:
    """phi (solid) and phi' (dashed) of every built-in activation; the zeros of phi' of the
    non-monotone ones (gelu, gelu_tanh, silu) marked.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[name] = (z, phi, dphi, zeros)``
    """
    from .activations import activation, activation_names
    from .homeomorphism import derivative_zeros

    plt = _pyplot()
    names = activation_names()
    cols = 5
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(3.2 * cols, 5.6), sharex=True)
    z = np.linspace(-4, 4, 801)
    data = {}
    for ax, name in zip(axes.flat, names, strict=False):
        act = activation(name)
        phi, dphi = act.phi(z), act.derivative(z)
        zeros = derivative_zeros(act) if act.derivative_can_vanish else np.array([])
        ax.plot(z, phi, label="phi")
        ax.plot(z, dphi, "--", label="phi'")
        ax.axhline(0, color="grey", lw=0.5)
        for z0 in zeros:
            ax.plot([z0], [0.0], "rx", ms=8, mew=2)
            ax.annotate(
                f"phi'=0 at {z0:.4f}",
                (z0, 0.0),
                textcoords="offset points",
                xytext=(4, 8),
                fontsize=7,
                color="r",
            )
        flags = ("monotone" if act.strictly_monotone else "NOT monotone") + (
            ", C1" if act.smooth else ""
        )
        ax.set_title(f"{name} ({flags})", fontsize=9)
        ax.set_ylim(-1.5, 3)
        data[name] = (z, phi, dphi, zeros)
    axes.flat[0].legend(fontsize=8)
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
    fig, axes = plt.subplots(1, len(activations) + 1, figsize=(3.2 * (len(activations) + 1), 3.4))
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
    for ax in axes:
        ax.set_aspect("equal")
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
    points with Clopper-Pearson intervals over the closed form 1 - 2^-n.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data = {"n", "p", "lo", "hi", "theory"}``
    """
    from .montecarlo import Spec, run

    plt = _pyplot()
    rows = []
    for n in widths:
        s = run(
            Spec(widths=(int(n), int(n)), samples=samples, seed=seed), progress=False
        ).summary()["p_any_zeroed"]
        rows.append((n, s["p"], s["lo"], s["hi"]))
    n_arr, p, lo, hi = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    fine = np.linspace(1, max(widths), 200)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(fine, 1 - 2.0**-fine, "k--", lw=1, label="1 - 2^-n")
    ax.errorbar(
        n_arr,
        p,
        yerr=[p - lo, hi - p],
        fmt="o",
        capsize=3,
        label=f"Monte Carlo ({samples} samples)",
    )
    ax.set(
        xlabel="width n",
        ylabel="P(some coordinate zeroed)",
        title="Dead coordinates of a relu layer",
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.jacgeom_data = {"n": n_arr, "p": p, "lo": lo, "hi": hi, "theory": 1 - 2.0**-n_arr}
    return fig


def rank_depth_figure(
    width: int = 16, depths: Any = (1, 2, 4, 8, 16), samples: int = 1000, seed: int = 0
) -> Any:
    """End-to-end rank / width against depth for relu, leaky_relu, tanh and gelu; plain,
    residual, and with layer normalisation (one panel each).

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[(variant, activation)] = (depths, mean)``
    """
    from .montecarlo import Spec, run

    plt = _pyplot()
    variants: dict[str, dict[str, Any]] = {
        "plain": {},
        "residual": {"residual": True},
        "layer norm": {"norm": "layer"},
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    data = {}
    for ax, (label, kw) in zip(axes, variants.items(), strict=True):
        for act in ("relu", "leaky_relu", "tanh", "gelu"):
            means = [
                float(
                    np.mean(
                        run(
                            Spec(
                                width=width,
                                depth=int(d),
                                activation=act,
                                samples=samples,
                                seed=seed,
                                **kw,
                            ),
                            progress=False,
                        ).data["rank"]
                    )
                )
                / width
                for d in depths
            ]
            ax.plot(depths, means, marker="o", label=act)
            data[(label, act)] = (np.array(depths), np.array(means))
        ax.set(title=f"{label} (width {width})", xlabel="depth", xscale="log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean end-to-end rank / width")
    axes[0].legend()
    fig.tight_layout()
    fig.jacgeom_data = data
    return fig


def metric_distortion_figure(
    m: int = 6,
    seed: int = 0,
    activations: tuple[str, ...] = ("relu", "leaky_relu", "tanh", "gelu", "sigmoid"),
) -> Any:
    """Eigenvalues of the pullback metric W^T D^2 W along the unit circle (left) and over a
    grid (right, the smaller eigenvalue), for a random layer R^2 -> R^m, per activation.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[name] = (theta, eigenvalues (T, 2))``
    """
    from .layer import pullback_metric

    plt = _pyplot()
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, 2))
    b = 0.3 * rng.standard_normal(m)
    theta = np.linspace(0, 2 * np.pi, 721)
    circle = np.stack([np.cos(theta), np.sin(theta)], 1)
    t = np.linspace(-2, 2, 121)
    gx, gy = np.meshgrid(t, t)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    fig, axes = plt.subplots(
        2, len(activations), figsize=(3.4 * len(activations), 6.6), layout="constrained"
    )
    data = {}
    for j, name in enumerate(activations):
        ev = np.linalg.eigvalsh(pullback_metric(W, circle, b, activation=name))
        axes[0, j].plot(theta, np.maximum(ev[:, 1], 1e-12), label="larger")
        axes[0, j].plot(theta, np.maximum(ev[:, 0], 1e-12), label="smaller")
        axes[0, j].set(
            title=f"{name}: eigenvalues on the circle",
            xlabel="angle",
            yscale="log",
            ylim=(1e-13, 1e2),
        )
        low = np.linalg.eigvalsh(pullback_metric(W, grid, b, activation=name))[:, 0].reshape(
            gx.shape
        )
        im = axes[1, j].pcolormesh(
            gx, gy, np.log10(np.maximum(low, 1e-12)), shading="auto", vmin=-6, vmax=1
        )
        axes[1, j].plot(circle[:, 0], circle[:, 1], "w", lw=0.8)
        axes[1, j].set(title="log10 smaller eig.", aspect="equal")
        data[name] = (theta, ev)
    axes[0, 0].legend(fontsize=8)
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8)
    fig.jacgeom_data = data
    return fig


def write_figures(out: str, gif: bool = False, samples: int = 2000) -> list[str]:
    """Write every figure as a PNG into ``out`` (and the warp GIF when asked); returns paths."""
    import os

    plt = _pyplot()
    os.makedirs(out, exist_ok=True)
    figures = {
        "activations": activations_figure(),
        "warp": warp_figure(),
        "dead_coordinates": dead_coordinate_figure(samples=samples),
        "rank_depth": rank_depth_figure(samples=max(200, samples // 4)),
        "metric_distortion": metric_distortion_figure(),
        "kernel_comparison": kernel_comparison_figure(samples=max(100, samples // 10)),
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
    sweep over Spec.layer and Spec.activation): distributions of end-to-end rank / width,
    log10 condition number and log-volume.

    Returns
    -------
    matplotlib.figure.Figure, with ``jacgeom_data[name] = per-sample statistics``
    """
    from .montecarlo import Spec, sweep

    plt = _pyplot()
    widths = list(widths)
    base = Spec(widths=tuple(widths), samples=samples, seed=seed)
    runs = sweep(base, {"activation": ["relu", "tanh"]}, progress=False)
    runs += sweep(base, {"layer": ["kernel"]}, progress=False)
    data = {
        ("kernel (rbf)" if point.get("layer") == "kernel" else point["activation"]): res.data
        for point, res in runs
    }
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    width = min(widths[0], widths[-1])
    for i, (name, st) in enumerate(data.items()):
        style = {"alpha": 0.5, "color": f"C{i}"}  # one colour per network on every panel
        axes[0].hist(st["rank"] / width, bins=np.linspace(0, 1.05, 22), label=name, **style)
        finite = st["log_cond"][np.isfinite(st["log_cond"])] / np.log(10)
        if finite.size:
            axes[1].hist(finite, bins=30, label=f"{name} ({finite.size} full rank)", **style)
        vol = st["log_volume"][np.isfinite(st["log_volume"])]
        if vol.size:
            axes[2].hist(vol, bins=30, label=f"{name} ({vol.size} finite)", **style)
    axes[0].set(xlabel="end-to-end rank / width", ylabel="samples", title=f"widths {widths}")
    axes[1].set(xlabel="log10 condition number (full-rank samples)", title="Conditioning")
    axes[2].set(xlabel="log-volume (sum of log singular values)", title="Volume")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.jacgeom_data = data
    return fig
