"""Sweeps: one run per point of a grid over Spec fields, and their markdown table."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .result import DistributionSummary, ProbabilitySummary, Result
from .runner import run_many
from .spec import Spec

__all__ = ["point_label", "run_directory_name", "sweep", "sweep_table"]


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
        Passed to :func:`run` (executor, progress, workers, records, max_in_flight);
        ``out`` becomes one sub-directory per point.

    Returns
    -------
    list of (point, Result), in grid order

    Notes
    -----
    The chunks of all points go to one executor in turn (:func:`runner.run_many`), so a
    pool or cluster stays busy from one point to the next; each point's result is the one
    ``run`` gives it alone.
    """
    names = list(grid)
    out = run_kwargs.pop("out", None)
    points, specs, outs = [], [], []
    for values in itertools.product(*(list(grid[k]) for k in names)):
        point = dict(zip(names, values, strict=True))
        points.append(point)
        specs.append(base.replace(**point))
        outs.append(
            None
            if out is None
            else Path(out) / "_".join(f"{k}={point_label(v)}" for k, v in point.items())
        )
    return list(zip(points, run_many(specs, outs, **run_kwargs), strict=True))


def point_label(v: Any) -> str:
    """A grid value as text: sequences joined by "-"."""
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def run_directory_name(point: dict[str, Any], spec: Spec) -> str:
    """A checkpoint sub-directory name for one run of a grid: the point's fields, then every
    other field that changes the samples or what they record, where it differs from Spec's
    default, and the seed always (``samples`` is left out: a run with more samples extends
    the same directory). Two runs of different samples never share a name.

    Examples
    --------
    >>> run_directory_name({"width": 4, "depth": 1}, Spec(widths=(4, 4), seed=3, sigma_b=0.5))
    'width=4_depth=1_sigma_b=0.5_seed=3'
    """
    parts = [f"{k}={point_label(v)}" for k, v in point.items()]
    default = Spec(widths=spec.resolved_widths()).to_dict()
    covered = set(point) | ({"widths"} if {"width", "depth", "widths"} & set(point) else set())
    for k, v in spec.to_dict().items():
        if k in covered or k in ("samples", "width", "depth"):
            continue
        if k == "seed" or v != default[k]:
            parts.append(f"{k}={point_label(v)}")
    return "_".join(parts)


def sweep_table(results: Sequence[tuple[dict[str, Any], Result]]) -> str:
    """One markdown table for a sweep, n = min(n_0, n_L): P(exact rank < n) with its closed
    form, P(float64 rank < n) (numpy's rule on J's exact singular values), the mean float64
    rank / n, and the median log10 condition number with its closed form where one is known
    ("inf" only where the smallest singular value is exactly zero). Intervals are 95%."""
    if not results:
        return ""
    names = list(results[0][0])
    head = names + [
        "samples",
        "P(exact rank < n) [95% CI]",
        "theory",
        "P(float64 rank < n) [95% CI]",
        "float64 rank / n [95% CI]",
        "median log10 cond [95% CI]",
        "theory",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point, res in results:
        s = res.summary()
        th = s["theory"]
        rf = s["rank_fraction"]
        half = 1.96 * rf["std"] / math.sqrt(res.samples) if res.samples > 1 else float("nan")
        lc = s.get("log_cond")
        cells = [point_label(point[k]) for k in names] + [
            str(res.samples),
            _probability(s.get("p_exact_rank_deficient")),
            _number(th.get("p_exact_rank_deficient"), 4),
            _probability(s["p_rank_deficient"]),
            f"{rf['mean']:.3f} [{rf['mean'] - half:.3f}, {rf['mean'] + half:.3f}]",
            "not recorded" if lc is None else _log10_cell(lc),
            _number(th.get("log10_cond"), 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _probability(p: ProbabilitySummary | None) -> str:
    return "" if p is None else f"{p['p']:.4f} [{p['lo']:.4f}, {p['hi']:.4f}]"


def _number(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _log10_cell(lc: DistributionSummary) -> str:
    def one(v: float) -> str:
        return "inf" if v == math.inf else f"{v / math.log(10):.2f}"

    return f"{one(lc['median'])} [{one(lc['median_lo'])}, {one(lc['median_hi'])}]"
