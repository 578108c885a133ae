"""masked_rank (family "rank", issue 3): rank(W[mask_b]) for many masks against one W."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from baselines import one_blas_thread
from checks import compare_ranks
from registry import NAIVE, VECTORISED, Implementation, Kernel, Prepare, SampleBatch, Work, Workload

import jacgeom
from jacgeom import reference

MASK_KERNELS = ("masked_rank",)


@dataclass(frozen=True)
class MaskInputs(SampleBatch):
    """W (m, n) and masks (B, m) bool."""

    _samples: ClassVar[str] = "masks"
    W: np.ndarray
    masks: np.ndarray

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.W.dtype


def mask_inputs(w: Workload) -> MaskInputs:
    """W Gaussian (m, n); B Bernoulli(1/2) masks of its rows."""
    rng = np.random.default_rng(np.random.SeedSequence(w.seed))
    W = rng.standard_normal((w.m, w.n)).astype(w.dtype)
    masks = rng.random((w.B, w.m)) < 0.5
    return MaskInputs(W, masks)


def naive_masked_rank(inp: MaskInputs) -> Callable[[], np.ndarray]:
    W, masks = inp.W, inp.masks
    return one_blas_thread(
        lambda: np.array([np.linalg.matrix_rank(W[m]) for m in masks], dtype=np.int64)
    )


def stacked_masked_rank(inp: MaskInputs) -> Callable[[], np.ndarray]:
    """matrix_rank of the stacked (B, m, n) array with the masked rows zeroed."""
    W, masks = inp.W, inp.masks
    return one_blas_thread(lambda: np.linalg.matrix_rank(W * masks[:, :, None]))


def masked_rank_backend(backend: str) -> Prepare:
    def prepare(inp: MaskInputs) -> Callable[[], np.ndarray]:
        return lambda: jacgeom.masked_rank(inp.W, inp.masks, backend=backend)

    return prepare


def work_masked_rank(w: Workload) -> Work:
    k = w.inputs().masks.sum(axis=1).astype(np.float64)
    q = np.minimum(k, w.n)
    return Work(
        float(np.sum(q**3 / 3 + np.where(k > w.n, k * w.n * w.n, 0.0))),
        "flops",
        "Σ_b (q_b³/3 + [k_b > n]·k_b·n²) flops, k_b = kept rows, q_b = min(k_b, n): a "
        "Cholesky of the q_b × q_b Gram matrix (gathered from a precomputed W Wᵀ when "
        "k_b ≤ n, a syrk of the kept rows otherwise) / gemm rate; deduplicating masks can "
        "beat it (16 rows have at most 65,536 distinct masks)",
    )


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel(
            name="masked_rank",
            family="rank",
            implementations=(
                Implementation(NAIVE, naive_masked_rank, slow=True),
                Implementation(
                    VECTORISED,
                    stacked_masked_rank,
                    slow=True,
                    note="np.linalg.matrix_rank(W * mask[:, :, None]); its tolerance "
                    "uses max(m, n), not the kept rows",
                ),
                *(
                    Implementation(be, masked_rank_backend(be), backend=be)
                    for be in ("cpp", "numba")
                ),
            ),
            reference=lambda inp: reference.masked_rank(inp.W, inp.masks),
            compare=compare_ranks,
            work=work_masked_rank,
            result_shape=lambda B, m, n: (B,),
        ),
    )
}


def mask_workload(
    name: str,
    B: int,
    m: int,
    n: int,
    seed: int,
    rounds: int,
    slice_samples: int | None = None,
    dtype: str = "float64",
) -> Workload:
    """masked_rank on B Bernoulli(1/2) masks of a Gaussian m × n W."""
    return Workload(
        name,
        B=B,
        m=m,
        n=n,
        dtype=dtype,
        activation="",
        seed=seed,
        kernels=MASK_KERNELS,
        rounds=rounds,
        slice_samples=slice_samples,
        check_samples=32,
        generate=mask_inputs,
        what=f"W {m}×{n} Gaussian, B={B:,} Bernoulli(1/2) masks",
    )
