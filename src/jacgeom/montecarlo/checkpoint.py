"""Checkpoint directories that cannot mix: one run at a time, chunks that prove what they hold.

A directory written by :func:`jacgeom.montecarlo.run` with ``out=DIR`` holds

- ``spec.json``: the spec and the sampler version (:data:`sampling.SAMPLER`) of the last run;
- ``chunk-NNNNNN.npz``: chunk NNNNNN's mergeable summary (the arrays of
  :meth:`Summary.to_arrays`: a few kilobytes whatever the chunk's size) and a ``meta``
  entry (JSON) with the spec's :func:`spec_hash`, the chunk's index, its sample count and a
  SHA-256 checksum of its arrays (:func:`arrays_checksum`);
- ``records/chunk-NNNNNN.parquet``: with ``records=True``, the chunk's per-sample
  statistics (module ``records``);
- ``.lock``: the lock of the run that holds the directory (its pid inside, for messages).

A chunk file is merged only if its meta matches what this spec expects of that chunk: the
hash (every field but ``samples``, and the sampler version), the index in the file's name,
the sample count, the arrays' names and shapes (a summary of this spec whose counts add up
to the sample count), and the checksum of the arrays as read.
Anything else (a chunk of another seed left after ``spec.json`` was deleted, a file renamed
over another, an array truncated or edited, a key missing, a file that is not an .npz) is
recomputed with a :class:`CheckpointWarning` naming the file. Because ``samples`` is not in
the hash, a run with more (or fewer) samples and everything else equal reuses the chunks it
shares with the runs before it; only a last chunk whose sample count differs (shorter, or
longer when the run shrank) is recomputed, silently: it was valid for its run.

The lock is an advisory ``fcntl.flock`` on ``.lock``: the kernel releases it when its holder
exits, killed or not, so a lock left by a dead process is taken over without any staleness
rule, and two runs started at the same instant cannot both hold it. Temporary files
(``*.tmp``) are written only by the lock's holder, so any found on taking the lock were left
by a dead writer and are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .result import atomic_savez
from .sampling import SAMPLER
from .spec import Spec

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid-file lock below
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CHUNK_FORMAT",
    "CheckpointWarning",
    "arrays_checksum",
    "chunk_path",
    "directory_lock",
    "load_chunk",
    "prepare_directory",
    "save_chunk",
    "spec_hash",
]

# Version of a chunk file's layout (its meta and arrays); part of every chunk's meta.
# 3: a chunk holds its mergeable summary, not its per-sample arrays; 4: with log_gain.
CHUNK_FORMAT = 4

T = TypeVar("T")


class CheckpointWarning(UserWarning):
    """A chunk file of a checkpoint directory was not merged (it is recomputed)."""


def spec_hash(spec: Spec) -> str:
    """SHA-256 (hex) of everything that decides a chunk's samples and what it records: every
    field of the spec but ``samples``, the sampler version and the chunk format."""
    d = spec.to_dict()
    del d["samples"]
    d["sampler"] = SAMPLER
    d["chunk_format"] = CHUNK_FORMAT
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def chunk_path(out: Path, index: int) -> Path:
    """The checkpoint file of chunk ``index`` in the directory ``out``."""
    return out / f"chunk-{index:06d}.npz"


def arrays_checksum(arrays: Mapping[str, NDArray[Any]]) -> str:
    """SHA-256 (hex) of the arrays' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_chunk(
    out: Path, spec: Spec, index: int, samples: int, arrays: Mapping[str, NDArray[Any]]
) -> None:
    """Write chunk ``index`` (``samples`` samples) atomically with its meta."""
    meta = {
        "format": CHUNK_FORMAT,
        "spec_hash": spec_hash(spec),
        "index": index,
        "samples": samples,
        "checksum": arrays_checksum(arrays),
    }
    atomic_savez(chunk_path(out, index), meta=np.array(json.dumps(meta)), **arrays)


def load_chunk(
    out: Path, spec: Spec, index: int, samples: int, parse: Callable[[dict[str, NDArray[Any]]], T]
) -> T | None:
    """``parse(arrays)`` of chunk ``index`` if its file proves it holds exactly what ``spec``
    expects there, else None (a CheckpointWarning naming the file says why, unless there is
    no file or its sample count is that of another run of the same spec: a shorter last
    chunk of a smaller run, or a chunk of at most ``spec.chunk_size`` samples of a larger
    run where this run's last chunk is shorter).

    ``parse`` turns the file's arrays into what the run merges, raising ValueError (its
    message the reason) if they are not that.
    """
    path = chunk_path(out, index)
    if not path.exists():
        return None
    try:
        # The file opened here, not by np.load: np.load leaks its handle when the file is
        # not a valid .npz (a truncated chunk: ResourceWarning: unclosed file).
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is redone
        _reject(path, f"it cannot be read as a chunk ({type(exc).__name__}: {exc})")
        return None
    if meta.get("format") != CHUNK_FORMAT:
        why = f"its format is {meta.get('format')!r}, this version writes {CHUNK_FORMAT}"
    elif meta.get("spec_hash") != spec_hash(spec):
        why = "it was written for another spec (its spec hash differs)"
    elif meta.get("index") != index:
        why = f"it holds chunk {meta.get('index')!r}, not chunk {index}"
    elif meta.get("samples") != samples:
        theirs = meta.get("samples")
        if isinstance(theirs, int) and theirs < samples:
            return None  # the last chunk of a run with fewer samples: valid, but short
        if isinstance(theirs, int) and samples < theirs <= spec.chunk_size:
            # This run's last chunk is shorter than the file's chunk (a full chunk, or the
            # longer last chunk, of a run with more samples): valid for that run, redone.
            return None
        why = f"it holds {meta.get('samples')!r} samples, chunk {index} has {samples}"
    else:
        try:
            parsed = parse(arrays)
        except ValueError as exc:
            why = f"its arrays are not a summary of this chunk ({exc})"
        else:
            if meta.get("checksum") == arrays_checksum(arrays):
                return parsed
            why = "its arrays do not match their checksum (edited or damaged)"
    _reject(path, why)
    return None


def _reject(path: Path, why: str) -> None:
    warnings.warn(
        f"checkpoint {str(path)!r} is not merged and is recomputed: {why}",
        CheckpointWarning,
        stacklevel=4,
    )


@contextlib.contextmanager
def directory_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` for the duration: RuntimeError naming the holder's pid if another
    run (in this process or another) holds it. ValueError if ``out`` cannot be created or
    written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ValueError(f"out directory {str(out)!r} is not writable: {exc}") from exc
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RuntimeError(_in_use(out, fd)) from None
        else:  # pragma: no cover - no flock: a pid file, taken over when its pid is dead
            _pid_lock(out, fd)
        # The lock file is never removed: removing it would let a later run lock a new file
        # while a waiting one locks the removed one.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _in_use(out: Path, fd: int) -> str:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    return (
        f"out directory {str(out)!r} is in use by another run (process {holder}, lock file "
        f"{str(out / '.lock')!r}); one run at a time per directory"
    )


def _pid_lock(out: Path, fd: int) -> None:  # pragma: no cover - platforms without fcntl
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
    if holder.isdigit() and int(holder) != os.getpid():
        try:
            os.kill(int(holder), 0)
        except OSError:
            return  # a dead holder's lock: taken over
        raise RuntimeError(_in_use(out, fd))


def prepare_directory(out: Path, spec: Spec) -> None:
    """Check ``out`` (held by :func:`directory_lock`) against ``spec`` and record the spec.

    A spec.json of another spec (any field but ``samples``) or sampler is refused with a
    ValueError naming the first difference (the sampler first). Temporary files of dead
    writers are removed.
    """
    for tmp in out.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    spec_file = out / "spec.json"
    mine = {**spec.to_dict(), "sampler": SAMPLER}
    if spec_file.exists():
        try:
            theirs = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{str(spec_file)!r} cannot be read: {exc}") from exc
        if not isinstance(theirs, dict):
            raise ValueError(f"{str(spec_file)!r} does not hold a spec")
        diff = [
            k
            for k in sorted(set(mine) | set(theirs))
            if k != "samples" and mine.get(k) != theirs.get(k)
        ]
        if diff:
            k = "sampler" if "sampler" in diff else diff[0]  # another sampler says it all
            raise ValueError(
                f"out directory {str(out)!r} holds results of a different spec ({k}: "
                f"{theirs.get(k)!r} there, {mine.get(k)!r} here); use another directory"
            )
    # Written even when present: the samples may have changed (a run extended).
    atomic_write_text(spec_file, json.dumps(mine, indent=1))


def atomic_write_text(path: Path, text: str) -> None:
    """Write text through a uniquely named temporary file renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
