"""Running a Monte Carlo: chunks on an executor, retries, checkpoints, progress.

Each chunk returns its mergeable summary (module ``summaries``; per-sample arrays only
with ``records=True``); the driver keeps at most ``max_in_flight`` chunks submitted and
not finished, and merges each spec's chunks in chunk order as they arrive (a chunk that
finishes before an earlier one waits for it, as its summary). Results depend only
on (spec, seed, chunk size) and the sampler version
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
import inspect
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import _backends, _validation
from .checkpoint import directory_lock, load_chunk, prepare_directory, save_chunk, spec_hash
from .records import records_match, remove_records_beyond, write_records
from .result import Result
from .spec import Spec, bytes_per_sample, memory_limit
from .statistics import chunk_blocks
from .summaries import Summary, summarise

__all__ = ["REORDER_WINDOWS", "RETRIES", "chunk_task", "run", "run_many"]

# Times a failing chunk is resubmitted before the run stops.
RETRIES = 2

# Chunks finished ahead of an earlier, unfinished one (held as summaries, kilobytes each:
# records that run keeps in memory are kept in any case) may number this many times
# max_in_flight before submitting waits for the earlier one. Counted in the window, one
# slow chunk would idle every other worker as soon as the window had finished around it;
# several windows let workers several times faster than the slowest keep going.
REORDER_WINDOWS = 8

# run's progress: True, False, "always", or a callable of (chunks done, chunks in all).
Progress = bool | str | Callable[[int, int], object]


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


def check_run_arguments(
    spec: Any,
    executor: Any,
    progress: Any,
    out: Any,
    workers: Any,
    retries: Any,
    records: Any = False,
    max_in_flight: Any = None,
) -> None:
    """TypeError / ValueError naming the first argument of :func:`run` that is not valid."""
    if not isinstance(spec, Spec):
        raise TypeError(f"spec must be a jacgeom.montecarlo.Spec, got {type(spec).__name__}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (for dask, "
            f"Client.get_executor(pure=False)) or None, got {type(executor).__name__}"
        )
    for name, value in (("workers", workers), ("max_in_flight", max_in_flight)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
    if workers is not None and executor is not None:
        raise ValueError(
            "workers sizes the default local pool; with an executor, size the executor"
        )
    if not (isinstance(progress, bool) or progress == "always" or callable(progress)):
        raise ValueError(f"progress must be True, False, 'always' or a callable, got {progress!r}")
    if callable(progress) and not isinstance(progress, bool):
        try:
            signature = inspect.signature(progress)
        except (TypeError, ValueError):  # builtins without one: called as they are
            signature = None
        if signature is not None:
            try:
                signature.bind(0, 0)
            except TypeError:
                raise ValueError(
                    f"progress must be callable as progress(done, total), got {progress!r} "
                    f"with signature {signature}"
                ) from None
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path or None, got {type(out).__name__}")
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)):
        raise TypeError(f"retries must be an int, got {type(retries).__name__}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    _validation.flag("records", records)
    if records and out is not None:
        from .records import _pyarrow

        _pyarrow()  # ImportError naming the extra, before any work
    if records and out is None:
        # Records kept in this process: they must fit in it.
        need, limit = spec.samples * bytes_per_sample(spec), memory_limit()
        if need > limit:
            raise ValueError(
                f"records=True keeps {spec.samples} samples' statistics in memory, about "
                f"{need / 2**30:.3g} GiB ({bytes_per_sample(spec)} bytes each), more than "
                f"the memory limit of {limit / 2**30:.3g} GiB (this machine's memory); "
                "write them to disk with out=DIR, or run without records (the summary "
                "does not grow with the samples)"
            )


def run(
    spec: Spec,
    executor: cf.Executor | None = None,
    progress: Progress = True,
    out: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    retries: int = RETRIES,
    records: bool = False,
    max_in_flight: int | None = None,
) -> Result:
    """Run a Monte Carlo experiment.

    Each chunk returns its mergeable summary (exact counts, streaming moments, histograms:
    module ``summaries``), merged in chunk order as chunks arrive, so memory and disk do
    not grow with the number of samples, and the result depends only on (spec, seed,
    chunk size, sampler version), never on the executor or the number of workers.

    Parameters
    ----------
    spec : Spec
    executor : concurrent.futures.Executor, optional
        Where chunks run. Default: a local thread pool of ``workers`` threads (all cores).
        For several machines, a dask.distributed ``Client(...).get_executor(pure=False)``.
    progress : bool, "always" or callable, default True
        A tqdm bar on stderr (samples per second, time left) when stderr is a terminal;
        "always" shows it anyway, False never. A callable is called instead, with (chunks
        done, chunks in all), each time a chunk is computed or loaded (a log can print
        its own lines from it).
    out : path, optional
        Checkpoint directory: spec.json and one atomically written file per finished
        chunk (its summary: kilobytes), each carrying its spec's hash, index, sample count
        and checksum (jacgeom.montecarlo.checkpoint). Rerunning the same spec resumes, with
        more or fewer samples too (the chunks in common are reused); a chunk file that
        does not match is recomputed with a CheckpointWarning naming it; a different spec
        is refused, and so is a directory another run holds (RuntimeError naming its pid).
    workers : int, optional
        Threads of the default local pool, >= 1 (default: all cores); not with
        ``executor``. With more than one, the compiled kernels run single-threaded inside
        each chunk for the duration of the run (jacgeom.set_num_threads is restored when the
        last of any overlapping runs ends).
    retries : int, default 2
        A chunk that raises is resubmitted this many times before the run stops with an
        error naming the chunk (finished chunks stay on disk).
    records : bool, default False
        Also keep every per-sample statistic (:attr:`Result.data`,
        :meth:`Result.probability` of any event): with ``out``, as a Parquet dataset
        under ``out/records/``, one file per chunk (module ``records``; needs pyarrow);
        without, in memory (refused if it cannot fit). A run without records leaves an
        ``out/records/`` of an earlier run as it was (its files carry that run's spec).
    max_in_flight : int, optional
        Chunks submitted and not yet finished, at most (default: twice the workers: the
        local pool's, or the dask cluster's threads; 16 for other executors). Chunks that
        finish before an earlier one wait for it, as their summaries (kilobytes each), at
        most ``jacgeom.montecarlo.runner.REORDER_WINDOWS`` (8) times as many, so a slow
        chunk (on a busy or slower worker) does not hold up the other workers. Together
        they bound the memory of the run whatever the number of chunks.

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
    return run_many([spec], [out], executor, progress, workers, retries, records, max_in_flight)[0]


def run_many(
    specs: Sequence[Spec],
    outs: Sequence[str | os.PathLike[str] | None],
    executor: cf.Executor | None = None,
    progress: Progress = True,
    workers: int | None = None,
    retries: int = RETRIES,
    records: bool = False,
    max_in_flight: int | None = None,
) -> list[Result]:
    """:func:`run` of several specs (``outs[k]`` the directory of ``specs[k]``) on one
    executor: the chunks of all of them are submitted in turn, so a pool or cluster stays
    busy from one spec to the next; each result is what ``run`` gives alone."""
    for spec, out in zip(specs, outs, strict=True):
        check_run_arguments(spec, executor, progress, out, workers, retries, records, max_in_flight)
    dirs = [Path(out) if out is not None else None for out in outs]
    named = [d.resolve() for d in dirs if d is not None]
    if len(set(named)) != len(named):
        raise ValueError("two specs of one run_many share an out directory")
    n_workers = int(workers or os.cpu_count() or 1)
    with contextlib.ExitStack() as stack:
        states = []
        for spec, out_dir in zip(specs, dirs, strict=True):
            if out_dir is not None:
                stack.enter_context(directory_lock(out_dir))
                prepare_directory(out_dir, spec)
                if records:
                    remove_records_beyond(out_dir, spec.n_chunks)
            states.append(_PointState(spec, out_dir, bool(records)))
        if executor is None and n_workers > 1:
            # With several local chunk workers the parallelism is across chunks: each
            # kernel runs on one thread, so the cores are not oversubscribed.
            stack.enter_context(single_threaded_kernels())
        window = max_in_flight or _default_window(executor, n_workers)
        run_chunks(states, executor, progress, n_workers, retries, window)
    return [state.result() for state in states]


def _default_window(executor: cf.Executor | None, n_workers: int) -> int:
    if executor is None:
        return 2 * n_workers
    client = getattr(executor, "_client", None)  # dask.distributed's ClientExecutor
    try:
        threads = sum(client.nthreads().values()) if client is not None else 0
    except Exception:  # noqa: BLE001 - any failure: the generic default
        threads = 0
    return 2 * threads if threads else 16


class _PointState:
    """One spec of a run: its directory, the summary merged so far (chunks 0 .. next - 1)
    and its records."""

    def __init__(self, spec: Spec, out: Path | None, records: bool) -> None:
        self.spec, self.out, self.records = spec, out, records
        self.hash = spec_hash(spec)
        self.next = 0
        self.merged: Summary | None = None
        self.record_parts: list[dict[str, NDArray[Any]]] = []

    def load(self, i: int) -> Summary | None:
        """Chunk i's summary from the directory, if it is there and proves it is that chunk
        (and, with records, its records file is there too)."""
        if self.out is None:
            return None
        n = chunk_len(self.spec, i)
        if self.records and not records_match(self.out, self.hash, i, n):
            return None
        return load_chunk(self.out, self.spec, i, n, lambda a: _parse(self.spec, a, n))

    def keep(self, i: int, arrays: dict[str, NDArray[Any]], recs: Any) -> Summary:
        """Checkpoint a computed chunk (summary, then records) and return its summary."""
        n = chunk_len(self.spec, i)
        summary = _parse(self.spec, arrays, n)
        if self.out is not None:
            if self.records:
                write_records(self.out, self.spec, self.hash, i, recs)
            save_chunk(self.out, self.spec, i, n, arrays)
        return summary

    def merge(self, summary: Summary, recs: Any) -> None:
        self.merged = summary if self.merged is None else self.merged.merge(summary)
        if self.records and self.out is None:
            self.record_parts.append(recs)
        self.next += 1

    def result(self) -> Result:
        assert self.merged is not None and self.next == self.spec.n_chunks
        if not self.records:
            return Result(self.spec, self.merged)
        if self.out is not None:
            return Result(self.spec, self.merged, records_dir=self.out)
        parts = self.record_parts
        data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return Result(self.spec, self.merged, records=data)


def _parse(spec: Spec, arrays: dict[str, NDArray[Any]], n: int) -> Summary:
    summary = Summary.from_arrays(spec, arrays)
    if summary.samples != n:
        raise ValueError(f"it summarises {summary.samples} samples, the chunk has {n}")
    return summary


def run_chunks(
    states: list[_PointState],
    executor: cf.Executor | None,
    progress: Progress,
    n_workers: int,
    retries: int,
    window: int,
) -> None:
    """Bring every state's summary to its last chunk: chunks taken in order (points one
    after the other), each loaded from its directory or submitted, at most ``window`` of
    them submitted and not finished, and at most ``REORDER_WINDOWS * window`` finished
    ahead of an earlier one; each point's chunks merged in chunk order as they arrive."""
    # No deadlock when the second bound stops submission: the earliest unmerged chunk of a
    # point with chunks waiting was taken before them, is not waiting itself, so is pending.
    jobs = [(p, i) for p, st in enumerate(states) for i in range(st.spec.n_chunks)]
    bar = progress_bar(sum(st.spec.samples for st in states), progress, len(jobs))
    own = executor is None
    pool = executor or cf.ThreadPoolExecutor(max_workers=n_workers)
    spec_dicts = [st.spec.to_dict() for st in states]
    attempts: dict[tuple[int, int], int] = {}
    pending: dict[cf.Future[Any], tuple[int, int]] = {}
    ready: dict[tuple[int, int], tuple[Summary, Any]] = {}
    next_job = 0

    def submit(job: tuple[int, int]) -> None:
        p, i = job
        if own:  # the local pool: threads pinned by run (several workers) or not (one)
            future = pool.submit(chunk_task, spec_dicts[p], i, states[p].records)
        else:
            future = pool.submit(chunk_task, spec_dicts[p], i, states[p].records, True)
        pending[future] = job

    def arrived(job: tuple[int, int], summary: Summary, recs: Any) -> None:
        ready[job] = (summary, recs)
        if bar is not None:
            bar.update(summary.samples)
        st = states[job[0]]
        while (job[0], st.next) in ready:
            st.merge(*ready.pop((job[0], st.next)))

    try:
        while next_job < len(jobs) or pending:
            while (
                next_job < len(jobs)
                and len(pending) < window
                and len(ready) < REORDER_WINDOWS * window
            ):
                job = jobs[next_job]
                next_job += 1
                loaded = states[job[0]].load(job[1])
                if loaded is not None:
                    arrived(job, loaded, None)
                else:
                    submit(job)
            if not pending:
                continue
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                job = pending.pop(fut)
                try:
                    _, arrays, recs = fut.result()
                except Exception as exc:  # noqa: BLE001 - retried, then reported with the chunk
                    attempts[job] = attempts.get(job, 0) + 1
                    if attempts[job] > retries:
                        _stop(states, pending, job, attempts[job], exc)
                    submit(job)
                    continue
                st = states[job[0]]
                arrived(job, st.keep(job[1], arrays, recs), None if st.out else recs)
    finally:
        if own:
            # The running chunks are waited for on their futures and the threads joined
            # only once idle: a KeyboardInterrupt (a second Ctrl-C) inside Thread.join marks
            # a worker that is still running as finished (CPython 3.11 and 3.12,
            # python/cpython#90882), and the interpreter then exits under it, aborting when
            # the worker comes back from a compiled kernel. Interrupted on the futures, the
            # workers stay counted and the interpreter waits for them at exit.
            # A future that shutdown cancels stays CANCELLED (never notified), which cf.wait
            # would wait for forever: only the others are waited for.
            pool.shutdown(wait=False, cancel_futures=True)
            cf.wait([f for f in pending if not f.cancelled()])
            pool.shutdown(wait=True)
        if bar is not None:
            bar.close()


def _stop(
    states: list[_PointState],
    pending: dict[cf.Future[Any], tuple[int, int]],
    job: tuple[int, int],
    attempts: int,
    exc: BaseException,
) -> None:
    """Chunks not started are cancelled; running ones finish and are checkpointed; then the
    RuntimeError naming the chunk that failed."""
    for other in list(pending):
        if other.cancel():
            pending.pop(other)
    for other, (p, j) in pending.items():
        try:
            _, arrays, recs = other.result()
        except Exception:  # noqa: BLE001, S112 - the first failure is reported
            continue
        states[p].keep(j, arrays, recs)
    spec, i = states[job[0]].spec, job[1]
    raise RuntimeError(
        f"chunk {i} (samples {i * spec.chunk_size} to "
        f"{i * spec.chunk_size + chunk_len(spec, i) - 1}) failed "
        f"{attempts} times; last error: {type(exc).__name__}: {exc}"
    ) from exc


def chunk_len(spec: Spec, i: int) -> int:
    """Samples in chunk i (chunk_size, or fewer for the last chunk)."""
    return min(spec.chunk_size, spec.samples - i * spec.chunk_size)


class _ChunkCallback:
    """The bar's interface (update, close) over a callable progress: it is called with
    (chunks done, chunks in all) as each chunk arrives."""

    def __init__(self, call: Callable[[int, int], object], chunks: int) -> None:
        self.call, self.chunks, self.done = call, chunks, 0

    def update(self, samples: int) -> None:
        self.done += 1
        self.call(self.done, self.chunks)

    def close(self) -> None:
        pass


def progress_bar(total: int, progress: Progress, chunks: int = 0) -> Any:
    """A tqdm bar on stderr, a callable's adapter, or None (see run's ``progress``)."""
    if callable(progress):
        return _ChunkCallback(progress, chunks)
    if progress is False or (progress != "always" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="samples", unit_scale=True, file=sys.stderr, leave=False)


# Samples summarised at once inside a chunk: bounds a chunk's memory (blocks are gathered
# up to this many samples, then summarised) while keeping the per-summary overhead small.
SUMMARY_SAMPLES = 1 << 16


def chunk_task(
    spec_dict: dict[str, Any], index: int, records: bool = False, one_thread: bool = False
) -> tuple[int, dict[str, NDArray[Any]], dict[str, NDArray[Any]] | None]:
    """(index, summary arrays, per-sample arrays or None) of chunk ``index`` of a spec given
    as Spec.to_dict(): what run submits. The summary is of groups of blocks of about
    SUMMARY_SAMPLES samples merged in order, so a chunk holds no more than one group's
    per-sample arrays unless ``records`` asks for all of them."""
    # Module-level and taking plain data, so process pools and dask workers can run it.
    # ``one_thread`` (run sets it for an executor it was given): the parallelism is across
    # chunks, so the chunk's kernels and BLAS run on one thread, also inside a dask worker
    # process, whose threads are the parallel units; otherwise process workers each start a
    # thread per core and compete for the cores (docs/benchmarks.md, "Dask process workers").
    if not one_thread:
        return _chunk_task(spec_dict, index, records)
    with single_threaded_kernels(), _backends.single_threaded_blas():
        return _chunk_task(spec_dict, index, records)


def _chunk_task(
    spec_dict: dict[str, Any], index: int, records: bool
) -> tuple[int, dict[str, NDArray[Any]], dict[str, NDArray[Any]] | None]:
    spec = Spec.from_dict(spec_dict)
    merged: Summary | None = None
    group: list[dict[str, NDArray[Any]]] = []
    kept: list[dict[str, NDArray[Any]]] = []
    blocks = chunk_blocks(spec, index)
    for block in itertools.chain(blocks, [None]):
        if block is not None:
            group.append(block)
            if records:
                kept.append(block)
        rows = sum(int(b["rank"].shape[0]) for b in group)
        if group and (block is None or rows >= SUMMARY_SAMPLES):
            stats = group[0] if len(group) == 1 else _concatenate(group)
            part = summarise(spec, stats)
            merged = part if merged is None else merged.merge(part)
            group = []
    assert merged is not None
    return index, merged.to_arrays(), _concatenate(kept) if records else None


def _concatenate(parts: list[dict[str, NDArray[Any]]]) -> dict[str, NDArray[Any]]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
