"""The workload tables: what ``--workloads quick`` and ``--workloads full`` run.

Each workload names the kernels it runs (from :data:`KERNELS`, every family's kernels); the
types are in registry.py, the kernels in their family's module (layer.py, rank.py,
network.py). The Monte Carlo family has its own experiments (throughput.EXPERIMENTS).
"""

from __future__ import annotations

import layer
import network
import rank
from layer import LAYER_KERNELS, WIDE_LAYER_KERNELS, layer_workload
from network import NETWORK_JACOBIAN_KERNELS, NETWORK_REDUCTION_KERNELS, network_workload
from rank import mask_workload
from registry import Implementation, Kernel, Workload

KERNELS: dict[str, Kernel] = {**layer.KERNELS, **rank.KERNELS, **network.KERNELS}


def _issue4_networks() -> tuple[Workload, ...]:
    """Issue 4's sizes: L = 16, widths 128; the Jacobian at B = 1024 in float64 and float32
    (tanh, relu, and gelu for issue 24), rank and singular values at B = 256 (float64). The
    naive loops time the first samples. The Jacobians take five rounds each."""
    jac = tuple(
        network_workload(
            f"net-{act}-L16-w128-B1024-{dtype}",
            B=1024,
            depth=16,
            width=128,
            dtype=dtype,
            activation=act,
            seed=20240641 + i,
            kernels=NETWORK_JACOBIAN_KERNELS,
            rounds=5,  # issue 24 asks medians of at least 5
            slice_samples=128,
        )
        for i, (act, dtype) in enumerate(
            [(a, d) for a in ("tanh", "relu") for d in ("float64", "float32")]
        )
    )
    # gelu's chains (issue 24), seeded apart so that the rows above keep their draws
    gelu = tuple(
        network_workload(
            f"net-gelu-L16-w128-B1024-{dtype}",
            B=1024,
            depth=16,
            width=128,
            dtype=dtype,
            activation="gelu",
            seed=20240661 + i,
            kernels=NETWORK_JACOBIAN_KERNELS,
            rounds=5,  # issue 24 asks medians of at least 5
            slice_samples=128,
        )
        for i, dtype in enumerate(("float64", "float32"))
    )
    red = tuple(
        network_workload(
            f"net-{act}-L16-w128-B256-float64",
            B=256,
            depth=16,
            width=128,
            dtype="float64",
            activation=act,
            seed=20240651 + i,
            kernels=NETWORK_REDUCTION_KERNELS,
            rounds=3,
            slice_samples=64,
        )
        for i, act in enumerate(("tanh", "relu"))
    )
    return jac + gelu + red


WORKLOADS: dict[str, tuple[Workload, ...]] = {
    # Small enough that the whole quick suite (timed, checked) runs in well under 3 minutes
    # on 2 cores; shapes cover float32, m > n, m < n and a smooth activation.
    "quick": (
        layer_workload(
            "quick-relu-512x64x64-float64",
            B=512,
            m=64,
            n=64,
            dtype="float64",
            activation="relu",
            seed=20240601,
            kernels=LAYER_KERNELS,
            rounds=5,
        ),
        layer_workload(
            "quick-gelu-512x96x64-float32",
            B=512,
            m=96,
            n=64,
            dtype="float32",
            activation="gelu",
            seed=20240602,
            kernels=LAYER_KERNELS,
            rounds=5,
        ),
        layer_workload(
            "quick-tanh-256x48x64-float64",
            B=256,
            m=48,
            n=64,
            dtype="float64",
            activation="tanh",
            seed=20240603,
            kernels=WIDE_LAYER_KERNELS,
            rounds=5,
        ),
        mask_workload("quick-mask-64x64-B512", B=512, m=64, n=64, seed=20240621, rounds=5),
        mask_workload(
            "quick-mask-16x16-B20000",
            B=20000,
            m=16,
            n=16,
            seed=20240622,
            rounds=5,
            slice_samples=2000,
        ),
        network_workload(
            "quick-net-relu-L4-w32-B128-float64",
            B=128,
            depth=4,
            width=32,
            dtype="float64",
            activation="relu",
            seed=20240631,
            kernels=NETWORK_JACOBIAN_KERNELS + NETWORK_REDUCTION_KERNELS,
            rounds=5,
        ),
        network_workload(
            "quick-net-tanh-L4-w32-B128-float32",
            B=128,
            depth=4,
            width=32,
            dtype="float32",
            activation="tanh",
            seed=20240632,
            kernels=NETWORK_JACOBIAN_KERNELS + NETWORK_REDUCTION_KERNELS,
            rounds=5,
        ),
    ),
    # Issue 2's sizes: B = 4096, m = n = 256, float64, relu and gelu. The naive loops and
    # numpy's batched SVD would take minutes each at this size; they time 256 samples.
    "full": (
        layer_workload(
            "relu-4096x256x256-float64",
            B=4096,
            m=256,
            n=256,
            dtype="float64",
            activation="relu",
            seed=20240611,
            kernels=LAYER_KERNELS,
            rounds=3,
            slice_samples=256,
        ),
        layer_workload(
            "gelu-4096x256x256-float64",
            B=4096,
            m=256,
            n=256,
            dtype="float64",
            activation="gelu",
            seed=20240612,
            kernels=LAYER_KERNELS,
            rounds=3,
            slice_samples=256,
        ),
        # Issue 3's sizes. The naive loop and the stacked matrix_rank time the first 64
        # (20,000 for 16 x 16) masks; the stacked (2,048, 512, 256) array alone is 2 GiB.
        mask_workload(
            "mask-256x256-B2048-float64",
            B=2048,
            m=256,
            n=256,
            seed=20240621,
            rounds=3,
            slice_samples=64,
        ),
        mask_workload(
            "mask-512x256-B2048-float64",
            B=2048,
            m=512,
            n=256,
            seed=20240622,
            rounds=3,
            slice_samples=64,
        ),
        mask_workload(
            "mask-16x16-B1000000-float64",
            B=1_000_000,
            m=16,
            n=16,
            seed=20240623,
            rounds=3,
            slice_samples=20000,
        ),
        *_issue4_networks(),
    ),
}


def cases(workload_set: str, family: str) -> list[tuple[Workload, Kernel, Implementation]]:
    """Every (workload, kernel, implementation) of a set whose kernel belongs to ``family``."""
    return [
        (w, KERNELS[name], impl)
        for w in WORKLOADS[workload_set]
        for name in w.kernels
        if KERNELS[name].family == family
        for impl in KERNELS[name].implementations
    ]
