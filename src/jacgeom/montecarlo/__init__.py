"""Monte Carlo of rank collapse: how often, and by how much, activations make the Jacobian
of a random network lose rank and conditioning.

An experiment is a plain, serialisable :class:`Spec`. :func:`run` splits its samples into
chunks of ``chunk_size``; chunk i draws from two SFC64 generators seeded by
``SeedSequence(seed, spawn_key=(i,))`` and ``(i, 1)`` (the second only for weights that the
layer ranks alone need) and returns its mergeable summary (exact counts of every integer
statistic, streaming moments and a boost-histogram of every real one: module
``summaries``), merged in chunk order as chunks arrive, so memory and disk do not grow with
the number of samples and results depend only on (spec, seed, chunk size) (and the sampler
version, ``sampling.SAMPLER``), never on the executor, the number of workers or the order in
which chunks finish. (Rows of relu layers are placed by a numba kernel, or by its numpy twin
where numba is not installed: the two agree to rounding, not bit for bit.) Chunks run
locally on a thread pool (the kernels release the GIL) or on any
``concurrent.futures.Executor``, such as a ``dask.distributed`` client's ``get_executor()``.
With ``out=DIR`` every finished chunk is written atomically, with its spec's hash, index,
sample count and checksum, and a rerun resumes (with more samples too); a chunk file that
does not match is recomputed, never merged, and a directory written by another spec or
sampler version, or held by another run, is refused (module ``checkpoint``).

Recorded per sample (computed by :func:`chunk_statistics`; summarised by every run, and
kept by ``run(spec, records=True)`` as :attr:`Result.data`, with ``out=DIR`` as a Parquet
dataset under ``DIR/records/``):

=====================  ======  ============================================================
key                    shape   meaning
=====================  ======  ============================================================
active_counts          (N, L)  units of each layer whose phi'(z) is not zero
                               mathematically (Activation.derivative_is_zero: relu's
                               z <= 0 is inactive, a saturated tanh whose phi'
                               underflows to 0.0 is not): the units the exact rank keeps
layer_numerical_ranks  (N, L)  numerical (float64) rank of each layer's own Jacobian
                               (numpy.linalg.matrix_rank rule: singular values above
                               sigma_max max(m, n) eps); formerly ``layer_ranks``, still
                               readable from Result.data with a DeprecationWarning
layer_exact_ranks      (N, L)  exact rank of the partial product A_l ... A_1 after each layer
rank                   (N,)    numerical (float64) rank of the end-to-end Jacobian: numpy's
                               rule applied to its exact singular values
exact_rank             (N,)    exact rank of the end-to-end Jacobian: singular values
                               non-zero in exact arithmetic (lost only through structure)
log_smax, log_smin     (N,)    natural log of its largest and smallest singular value, from
                               the stable spectrum (-inf only for an exact zero)
log_cond               (N,)    log_smax - log_smin: finite whenever the exact rank is full,
                               inf exactly when the smallest singular value is 0
frobenius2             (N,)    squared Frobenius norm
log_volume             (N,)    sum of natural-log singular values when n_L >= n_0 and the
                               exact rank is n_0, else -inf
log_gain               (N,)    natural log of ||J e_1||^2, the gain of the first input
                               direction (-inf where J e_1 = 0): He relu networks follow an
                               exact finite-width law (jacgeom.theory.he_relu_log_gain)
=====================  ======  ============================================================

``Spec(layer_ranks=False)`` leaves out ``layer_numerical_ranks`` and ``layer_exact_ranks``,
``Spec(spectra=False)`` the six keys from log_smax to log_gain. Everything comes from the
stable frame of :meth:`jacgeom.Network.log_singular_values`; for kernel networks
(``Spec(layer="kernel")``) the frame runs on their formed layer Jacobians A grad k(h),
each the product of an n_l x centers and a centers x n_(l-1) matrix: the exact rank is at
most min(n_0, ..., n_L, centers) (centers defaults to each layer's input width, and the
bound is then min(n_0, ..., n_L)). rbf and polynomial kernels reach the bound almost
surely; the laplacian kernel's gradients, built from sign(h - c), fall below it with
positive probability.

Modules: ``spec`` (Spec), ``sampling`` (how a chunk draws its inputs, weights and biases),
``statistics`` (what is recorded per sample, and how), ``kernel_layers`` (Spec(layer=
"kernel")), ``summaries`` (mergeable chunk summaries: exact counts, streaming moments,
histograms), ``result`` (Result: the merged summary, records when kept), ``runner`` (run:
executors, bounded chunks in flight, retries), ``checkpoint`` (chunk files, the directory
lock), ``records`` (Parquet records), ``sweep`` (grids of specs, all chunks on one
executor), ``compare`` (kernel beside activation layers).
"""

from .compare import compare_with_activation_network
from .result import NoRecordsError, Result
from .runner import RETRIES, run
from .spec import Spec
from .statistics import chunk_statistics
from .sweep import sweep, sweep_table

__all__ = [
    "RETRIES",
    "NoRecordsError",
    "Result",
    "Spec",
    "chunk_statistics",
    "compare_with_activation_network",
    "run",
    "sweep",
    "sweep_table",
]
