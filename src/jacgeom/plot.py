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
        shallow = sorted(((p["width"], r) for p, r in rows if p.get("depth") == 1 and "width" in p), key=lambda t: t[0])
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
        deep = sorted(((p["depth"], r) for p, r in rows if "depth" in p and p.get("width") == at), key=lambda t: t[0])
        if deep:
            d = np.array([x for x, _ in deep])
            frac = [r.data["rank"] / min(r.spec.resolved_widths()[0], r.spec.resolved_widths()[-1]) for _, r in deep]
            mean = np.array([f.mean() for f in frac])
            lo = np.array([np.quantile(f, 0.05) for f in frac])
            hi = np.array([np.quantile(f, 0.95) for f in frac])
            line = axes[1].plot(d, mean, marker="o", label=act)[0]
            axes[1].fill_between(d, lo, hi, alpha=0.15, color=line.get_color())
            data["depth"][act] = (d, mean)
            spread = np.array([np.median(r.data["log_cond"]) for _, r in deep])
            axes[2].plot(d, spread / np.log(10), marker="o", label=act)
            data["spread"][act] = (d, spread)
    if data["width"]:
        n = np.arange(1, max(max(w) for w, _ in data["width"].values()) + 1)
        axes[0].plot(n, [theory.p_any_zeroed(int(k)) for k in n], "k--", lw=1, label="1 - 2^-n (relu)")
    axes[0].set(xscale="log", xlabel="width n (depth 1)", ylabel="P(rank-deficient)", title="Rank loss of one layer")
    axes[1].set(xlabel="depth", ylabel="end-to-end rank / width", title="Rank through depth", ylim=(0, 1.05))
    axes[2].set(xlabel="depth", ylabel="median log10(s_max / s_min)", title="Spread of singular values")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.jacgeom_data = data
    return fig
