"""Sweeps: one run per point of a grid over Spec fields, and their markdown table."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .result import Result
from .runner import run
from .spec import Spec

__all__ = ["point_label", "sweep", "sweep_table"]


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
    names = list(grid)
    out = run_kwargs.pop("out", None)
    results = []
    for values in itertools.product(*(list(grid[k]) for k in names)):
        point = dict(zip(names, values, strict=True))
        spec = base.replace(**point)
        sub = (
            None
            if out is None
            else Path(out) / "_".join(f"{k}={point_label(v)}" for k, v in point.items())
        )
        results.append((point, run(spec, out=sub, **run_kwargs)))
    return results


def point_label(v: Any) -> str:
    """A grid value as text: sequences joined by "-"."""
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
        cells = [point_label(point[k]) for k in names] + [
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
