"""Running a Monte Carlo: chunks on an executor, retries, checkpoints, progress.

Results depend only on (spec, seed, chunk size) and the sampler version
(sampling.SAMPLER), never on the executor, the number of workers or the order in which
chunks finish. Chunks run locally on a thread pool (the kernels release the GIL) or on any
``concurrent.futures.Executor``, such as a ``dask.distributed`` client's ``get_executor()``.
With ``out=DIR`` every finished chunk is written atomically with the proof of what it holds
and a rerun resumes (module ``checkpoint``: one run per directory, chunks that do not match
recomputed, a directory of another spec or sampler version refused).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import _backends
from .checkpoint import directory_lock, load_chunk, prepare_directory, save_chunk
from .result import Result
from .spec import Spec, bytes_per_sample, memory_limit
from .statistics import chunk_statistics, recorded_shapes

__all__ = ["RETRIES", "chunk_task", "run"]

# Times a failing chunk is resubmitted before the run stops.
RETRIES = 2


# Runs with their own thread pool of several workers make the compiled kernels
# single-threaded while they last. Runs may overlap (threads of one process): the first to
# start saves the thread count, the last to finish restores it.
_threads_lock = threading.Lock()
_single_threaded_runs = 0
_threads_saved = 1


@contextlib.contextmanager
def single_threaded_kernels() -> Iterator[None]:
    """jacgeom.set_num_threads(1) for the duration; the count before the first of any
    overlapping such blocks is restored when the last one ends."""
    global _single_threaded_runs, _threads_saved
    with _threads_lock:
        if _single_threaded_runs == 0:
            _threads_saved = _backends.get_num_threads()
            _backends.set_num_threads(1)
        _single_threaded_runs += 1
    try:
        yield
    finally:
        with _threads_lock:
            _single_threaded_runs -= 1
            if _single_threaded_runs == 0:
                _backends.set_num_threads(_threads_saved)


def load_finished(out: Path, spec: Spec) -> dict[int, dict[str, NDArray[Any]]]:
    """The chunks of ``spec`` already in ``out`` that prove they are its chunks."""
    done: dict[int, dict[str, NDArray[Any]]] = {}
    for i in range(spec.n_chunks):
        n = chunk_len(spec, i)
        arrays = load_chunk(out, spec, i, n, recorded_shapes(spec, n))
        if arrays is not None:
            done[i] = arrays
    return done


def check_run_arguments(
    spec: Any, executor: Any, progress: Any, out: Any, workers: Any, retries: Any
) -> None:
    """TypeError / ValueError naming the first argument of :func:`run` that is not valid."""
    if not isinstance(spec, Spec):
        raise TypeError(f"spec must be a jacgeom.montecarlo.Spec, got {type(spec).__name__}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (for dask, "
            f"Client.get_executor(pure=False)) or None, got {type(executor).__name__}"
        )
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)):
            raise TypeError(f"workers must be an int or None, got {type(workers).__name__}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if executor is not None:
            raise ValueError(
                "workers sizes the default local pool; with an executor, size the executor"
            )
    if not (isinstance(progress, bool) or progress == "always"):
        raise ValueError(f"progress must be True, False or 'always', got {progress!r}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path or None, got {type(out).__name__}")
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)):
        raise TypeError(f"retries must be an int, got {type(retries).__name__}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    # The run returns every per-sample statistic: they must fit in this process.
    need, limit = spec.samples * bytes_per_sample(spec), memory_limit()
    if need > limit:
        raise ValueError(
            f"samples={spec.samples} keeps about {need / 2**30:.3g} GiB of per-sample "
            f"statistics ({bytes_per_sample(spec)} bytes each), more than the memory limit "
            f"of {limit / 2**30:.3g} GiB (this machine's memory); use fewer samples"
        )


def run(
    spec: Spec,
    executor: cf.Executor | None = None,
    progress: bool | str = True,
    out: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    retries: int = RETRIES,
) -> Result:
    """Run a Monte Carlo experiment.

    Parameters
    ----------
    spec : Spec
    executor : concurrent.futures.Executor, optional
        Where chunks run. Default: a local thread pool of ``workers`` threads (all cores).
        For several machines, a dask.distributed ``Client(...).get_executor()``.
    progress : bool or "always", default True
        A tqdm bar on stderr (samples per second, time left) when stderr is a terminal;
        "always" shows it anyway, False never.
    out : path, optional
        Checkpoint directory: spec.json and one atomically written file per finished
        chunk, each carrying its spec's hash, index, sample count and checksum
        (jacgeom.montecarlo.checkpoint). Rerunning the same spec resumes, with more or fewer
        samples too (the chunks in common are reused); a chunk file that does not match is
        recomputed with a CheckpointWarning naming it; a different spec is refused, and so
        is a directory another run holds (RuntimeError naming its pid).
    workers : int, optional
        Threads of the default local pool, >= 1 (default: all cores); not with
        ``executor``. With more than one, the compiled kernels run single-threaded inside
        each chunk for the duration of the run (jacgeom.set_num_threads is restored when the
        last of any overlapping runs ends).
    retries : int, default 2
        A chunk that raises is resubmitted this many times before the run stops with an
        error naming the chunk (finished chunks stay on disk).

    Returns
    -------
    Result

    Examples
    --------
    >>> from jacgeom.montecarlo import Spec, run
    >>> res = run(Spec(widths=(10, 10), samples=4000, seed=1), progress=False)
    >>> s = res.summary()
    >>> p, theory = s["p_exact_rank_deficient"], s["theory"]["p_exact_rank_deficient"]
    >>> p["lo"] <= theory <= p["hi"]
    True
    """
    check_run_arguments(spec, executor, progress, out, workers, retries)
    out_dir = Path(out) if out is not None else None
    with contextlib.ExitStack() as stack:
        results: dict[int, dict[str, NDArray[Any]]] = {}
        if out_dir is not None:
            stack.enter_context(directory_lock(out_dir))
            prepare_directory(out_dir, spec)
            results = load_finished(out_dir, spec)
        n_workers = int(workers or os.cpu_count() or 1)
        if executor is None and n_workers > 1:
            # With several local chunk workers the parallelism is across chunks: each
            # kernel runs on one thread, so the cores are not oversubscribed.
            stack.enter_context(single_threaded_kernels())
        run_chunks(spec, executor, progress, out_dir, n_workers, retries, results)
    keys = results[0].keys()
    data = {k: np.concatenate([results[i][k] for i in range(spec.n_chunks)]) for k in keys}
    return Result(spec, data)


def run_chunks(
    spec: Spec,
    executor: cf.Executor | None,
    progress: bool | str,
    out_dir: Path | None,
    n_workers: int,
    retries: int,
    results: dict[int, dict[str, NDArray[Any]]],
) -> None:
    """Compute the chunks not in ``results`` into it (and into ``out_dir``)."""
    todo = [i for i in range(spec.n_chunks) if i not in results]
    bar = progress_bar(spec, progress, sum(chunk_len(spec, i) for i in results))
    own = executor is None
    pool = executor or cf.ThreadPoolExecutor(max_workers=n_workers)
    spec_dict = spec.to_dict()
    attempts = dict.fromkeys(todo, 0)

    def keep(i: int, stats: dict[str, NDArray[Any]]) -> None:
        if out_dir is not None:
            save_chunk(out_dir, spec, i, chunk_len(spec, i), stats)
        results[i] = stats

    try:
        pending = {pool.submit(chunk_task, spec_dict, i): i for i in todo}
        while pending:
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                i = pending.pop(fut)
                try:
                    _, stats = fut.result()
                except Exception as exc:  # noqa: BLE001 - retried, then reported with the chunk
                    attempts[i] += 1
                    if attempts[i] > retries:
                        # Chunks not started are cancelled; running ones finish and are kept.
                        for other in list(pending):
                            if other.cancel():
                                pending.pop(other)
                        for other, j in pending.items():
                            try:
                                _, done_stats = other.result()
                            except Exception:  # noqa: BLE001, S112 - the first failure is reported
                                continue
                            keep(j, done_stats)
                        raise RuntimeError(
                            f"chunk {i} (samples {i * spec.chunk_size} to "
                            f"{i * spec.chunk_size + chunk_len(spec, i) - 1}) failed "
                            f"{attempts[i]} times; last error: {type(exc).__name__}: {exc}"
                        ) from exc
                    pending[pool.submit(chunk_task, spec_dict, i)] = i
                    continue
                keep(i, stats)
                if bar is not None:
                    bar.update(chunk_len(spec, i))
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def chunk_len(spec: Spec, i: int) -> int:
    """Samples in chunk i (chunk_size, or fewer for the last chunk)."""
    return min(spec.chunk_size, spec.samples - i * spec.chunk_size)


def progress_bar(spec: Spec, progress: bool | str, initial: int) -> Any:
    """A tqdm bar on stderr, or None (see run's ``progress``)."""
    if progress is False or (progress != "always" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(
        total=spec.samples,
        initial=initial,
        unit="samples",
        unit_scale=True,
        file=sys.stderr,
        leave=False,
    )


def chunk_task(spec_dict: dict[str, Any], index: int) -> tuple[int, dict[str, NDArray[Any]]]:
    """(index, chunk_statistics) of a spec given as Spec.to_dict(): what run submits."""
    # Module-level and taking plain data, so process pools and dask workers can run it.
    return index, chunk_statistics(Spec.from_dict(spec_dict), index)
