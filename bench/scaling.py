"""How cost grows: each kernel timed at 4 sizes along B, the width and the depth.

For every kernel of the registry (workloads.KERNELS) a base workload is grown along one axis at
a time (the others fixed); at each point the implementation is timed (warm-up, then the
median of at least ``rounds`` calls, more while they add up to under 0.3 s) and checked
against the reference like any benchmark. The exponent p of cost ~ size^p is fitted by
least squares on log-log, and beside it the exponent of the kernel's work model (flops or
bytes, fitted the same way at the same points): a measured exponent above the model's says
the kernel falls off as it grows (cache, memory), one below it that fixed costs (thread
wake-up, Python, allocation) still weigh at the small sizes.

    python bench/report.py --scaling --plot scaling.png      # about 2-4 minutes on 2 cores
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import harness
import numpy as np
from layer import layer_workload
from network import network_workload
from rank import mask_workload
from registry import Workload, unavailable
from workloads import KERNELS

# (B, width, depth) of each axis's points. Widths and B are chosen so that the smallest
# point still takes milliseconds: below that, thread wake-up, not the kernel, is timed.
AXES: dict[str, dict[str, tuple[int, ...]]] = {
    "layer": {"B": (256, 512, 1024, 2048), "width": (32, 64, 128, 256)},
    "rank": {"B": (512, 1024, 2048, 4096), "width": (32, 64, 128, 256)},
    "network": {
        "B": (64, 128, 256, 512),
        "width": (32, 64, 128, 256),
        "depth": (2, 4, 8, 16),
    },
}


MIN_SECONDS = 0.3
MAX_ROUNDS = 25


def base_workloads() -> dict[str, Workload]:
    """The point every axis grows from, per kernel."""
    layer = layer_workload(
        "scaling-layer-gelu",
        B=512,
        m=128,
        n=128,
        dtype="float64",
        activation="gelu",
        seed=20240701,
        kernels=(),
        rounds=3,
    )
    mask = mask_workload("scaling-mask", B=1024, m=128, n=128, seed=20240702, rounds=3)
    net = network_workload(
        "scaling-net-tanh",
        B=128,
        depth=8,
        width=64,
        dtype="float64",
        activation="tanh",
        seed=20240703,
        kernels=(),
        rounds=3,
    )
    by_family = {"layer": layer, "rank": mask, "network": net}
    return {name: by_family[k.family] for name, k in KERNELS.items() if k.family in by_family}


def grow(base: Workload, axis: str, size: int) -> Workload:
    if axis == "B":
        changes: dict[str, Any] = {"B": size}
    elif axis == "width":
        changes = {"m": size, "n": size}
    else:
        changes = {"depth": size}
    w = replace(base, name=f"{base.name}-{axis}{size}", slice_samples=None, **changes)
    if base.what:  # the description follows the sizes
        if base.depth > 1 or axis == "depth":
            what = f"L={w.depth}, widths {w.m}, B={w.B}"
        else:
            what = f"W {w.m}×{w.n} Gaussian, B={w.B:,} Bernoulli(1/2) masks"
        w = replace(w, what=what)
    return w


def fit_exponent(sizes: Sequence[float], costs: Sequence[float]) -> float:
    """Slope of log(cost) against log(size), least squares."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(costs, float))
    return float(np.polyfit(x, y, 1)[0])


@dataclass
class Series:
    kernel: str
    implementation: str
    axis: str
    base: Workload
    sizes: list[int]
    medians: list[float]
    work: list[float]
    loads: list[float | None]

    @property
    def exponent(self) -> float:
        return fit_exponent(self.sizes, self.medians)

    @property
    def work_exponent(self) -> float | None:
        if any(w <= 0 for w in self.work):
            return None
        return fit_exponent(self.sizes, self.work)


def _measure_point(
    w: Workload, kernel: Any, impl: Any, rounds: int, min_seconds: float = MIN_SECONDS
) -> tuple[float, float | None]:
    """Median of at least ``rounds`` calls, more (up to MAX_ROUNDS) until they add up to
    ``min_seconds``: millisecond points need many calls for a stable median. Checked."""
    case = harness.prepare_case(w, kernel, impl)
    t0 = time.perf_counter()
    case.call()
    once = time.perf_counter() - t0
    repeats = min(MAX_ROUNDS, max(rounds, math.ceil(min_seconds / max(once, 1e-6))))
    times, result, load = harness.time_case(case, repeats)
    harness.check_case(case, result)
    return statistics.median(times), load


def run(
    implementations: Sequence[str] = ("cpp",),
    kernels: Sequence[str] | None = None,
    rounds: int = 3,
    progress: Any = sys.stderr,
) -> list[Series]:
    bases = base_workloads()
    out = []
    for name, base in bases.items():
        if kernels and name not in kernels:
            continue
        kernel = KERNELS[name]
        for impl in kernel.implementations:
            if impl.name not in implementations:
                continue
            reason = unavailable(impl)
            if reason:
                print(f"skip {name} {impl.name}: {reason}", file=progress)
                continue
            for axis, sizes in AXES[kernel.family].items():
                t0 = time.perf_counter()
                series = Series(name, impl.name, axis, base, [], [], [], [])
                for size in sizes:
                    w = grow(base, axis, size)
                    median, load = _measure_point(w, kernel, impl, rounds)
                    series.sizes.append(size)
                    series.medians.append(median)
                    series.work.append(kernel.work(w).amount)
                    series.loads.append(load)
                out.append(series)
                print(
                    f"scaling {name} {impl.name} along {axis}: exponent {series.exponent:.2f} "
                    f"({time.perf_counter() - t0:.1f} s wall)",
                    file=progress,
                    flush=True,
                )
    return out


def _base_text(base: Workload) -> str:
    return base.describe()


def markdown(series: Sequence[Series]) -> str:
    out = [
        "| kernel | implementation | axis | sizes | median s at each size | fitted exponent | "
        "work-model exponent | others' load (max) |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for s in series:
        loads = [x for x in s.loads if x is not None]
        we = s.work_exponent
        out.append(
            f"| {s.kernel} | {s.implementation} | {s.axis} | {', '.join(map(str, s.sizes))} | "
            f"{', '.join(harness._seconds(t) for t in s.medians)} | {s.exponent:.2f} | "
            f"{'—' if we is None else f'{we:.2f}'} | "
            f"{harness._load(max(loads) if loads else None)} |"
        )
    bases = harness._unique(s.base for s in series)
    out += ["", "Base points (each axis grows one size of these, the others fixed):"]
    for b in bases:
        kernels = sorted({s.kernel for s in series if s.base is b})
        out.append(f"- {', '.join(kernels)}: {_base_text(b)}")
    out.append(
        "- width: m = n (a layer, the masked W) or every n_l (a network); the exponent is "
        "the slope of log(median time) against log(size), least squares over the points; "
        "the work-model exponent is the same fit of the kernel's floor work (flops or "
        "bytes) at the same points."
    )
    return "\n".join(out)


def as_records(series: Sequence[Series]) -> list[dict[str, Any]]:
    return [
        {
            "kernel": s.kernel,
            "implementation": s.implementation,
            "axis": s.axis,
            "base": s.base.describe(),
            "sizes": s.sizes,
            "median_s": s.medians,
            "work": s.work,
            "exponent": s.exponent,
            "work_exponent": s.work_exponent,
            "others_load_cores": s.loads,
        }
        for s in series
    ]


AXIS_LABELS = {
    "B": "B, samples (or masks) per call",
    "width": "width n (m = n, or every n_l)",
    "depth": "depth L, layers",
}
MARKERS = "osD^vP<X>"
EXPONENT_NOTE = (
    "p: the fitted exponent of median time ~ size^p (least squares on log-log); "
    "p = 1 is linear, p = 3 the cubic flops of a dense width-n kernel"
)


def figure(series: Sequence[Series], title: str = "") -> Any:
    """One log-log panel per axis (B, width, depth): each series' median time per call
    against size, its fitted exponent p in the legend (explained under the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    axes_names = [a for a in ("B", "width", "depth") if any(s.axis == a for s in series)]
    fig, axs = plt.subplots(1, len(axes_names), figsize=(5.2 * len(axes_names), 4.9), squeeze=False)
    for ax, axis in zip(axs[0], axes_names, strict=True):
        for k, s in enumerate(s for s in series if s.axis == axis):
            label = f"{s.kernel} ({s.implementation}): p = {s.exponent:.2f}"
            # Open markers of different shapes and sizes: series that coincide (several
            # kernels share the same work) stay visible as nested markers.
            ax.loglog(
                s.sizes,
                s.medians,
                marker=MARKERS[k % len(MARKERS)],
                markersize=9 - 2 * (k % 3),
                fillstyle="none",
                linestyle=("-", "--", ":")[k % 3],
                label=label,
            )
        ax.set_xlabel(AXIS_LABELS[axis])
        ax.set_ylabel("median time per call (s)")
        ax.set_title(f"cost along {axis}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
        sizes = sorted({x for s in series if s.axis == axis for x in s.sizes})
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(x) for x in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        # 1, 2 and 5 times each power of ten: a panel spanning one decade still gets
        # several labelled ticks.
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
    fig.suptitle(f"{title}\n{EXPONENT_NOTE}" if title else EXPONENT_NOTE, fontsize=9)
    fig.tight_layout()
    return fig


def plot(series: Sequence[Series], path: Any, title: str = "") -> None:
    """Write :func:`figure` to ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(series, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
