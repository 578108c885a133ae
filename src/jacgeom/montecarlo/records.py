"""Per-sample records of a Monte Carlo run as a Parquet dataset (``run(..., records=True)``).

``DIR/records/chunk-NNNNNN.parquet`` holds chunk NNNNNN's samples, one row each: the
column ``sample`` (the sample's index in the run) and one column per recorded statistic
(the keys of :data:`statistics.RECORDED`; per-layer ones as fixed-size lists of L values).
Every file's schema metadata carries the spec (``jacgeom.spec``, JSON with the sampler
version), its hash (``jacgeom.spec_hash``, as the checkpoint's), the chunk index and sample
count, so the directory reads as one table anywhere Parquet is read::

    pyarrow.dataset.dataset("DIR/records").to_table()
    pandas.read_parquet("DIR/records")
    duckdb.sql("select avg(rank) from 'DIR/records/*.parquet'")

Needs pyarrow (``pip install "jacgeom[records]"``). Files are written atomically (a unique
temporary renamed into place) by the run holding the directory's lock; one that does not
match its chunk (another spec, index or sample count) is rewritten.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .sampling import SAMPLER
from .spec import Spec

__all__ = [
    "RecordsReplacedError",
    "read_records",
    "records_match",
    "records_path",
    "write_records",
]

_SPEC_KEY = b"jacgeom.spec"
_HASH_KEY = b"jacgeom.spec_hash"
_CHUNK_KEY = b"jacgeom.chunk"
_SAMPLES_KEY = b"jacgeom.samples"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError(
            'records need pyarrow: pip install "jacgeom[records]" (or run without records)'
        ) from exc
    return pyarrow


def records_path(out: Path, index: int) -> Path:
    """The Parquet file of chunk ``index``'s records in the run directory ``out``."""
    return out / "records" / f"chunk-{index:06d}.parquet"


def write_records(
    out: Path, spec: Spec, spec_hash: str, index: int, arrays: Mapping[str, NDArray[Any]]
) -> None:
    """Write chunk ``index``'s per-sample arrays to :func:`records_path` atomically."""
    pa = _pyarrow()
    n = int(arrays["rank"].shape[0])
    start = index * spec.chunk_size
    columns: dict[str, Any] = {"sample": pa.array(np.arange(start, start + n, dtype=np.int64))}
    for key, a in arrays.items():
        if a.ndim == 2:
            flat = pa.array(np.ascontiguousarray(a).ravel())
            columns[key] = pa.FixedSizeListArray.from_arrays(flat, a.shape[1])
        else:
            columns[key] = pa.array(a)
    metadata = {
        _SPEC_KEY: json.dumps({**spec.to_dict(), "sampler": SAMPLER}).encode(),
        _HASH_KEY: spec_hash.encode(),
        _CHUNK_KEY: str(index).encode(),
        _SAMPLES_KEY: str(n).encode(),
    }
    table = pa.table(columns).replace_schema_metadata(metadata)
    path = records_path(out, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pa.parquet.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def records_match(out: Path, spec_hash: str, index: int, samples: int) -> bool:
    """Whether chunk ``index``'s records file exists and says it holds ``samples`` samples of
    that chunk of the spec of ``spec_hash`` (its metadata; rows counted)."""
    path = records_path(out, index)
    if not path.exists():
        return False
    pa = _pyarrow()
    try:
        meta = pa.parquet.read_metadata(path)
        kv = meta.metadata or {}
    except Exception:  # noqa: BLE001 - unreadable: rewritten
        return False
    return (
        kv.get(_HASH_KEY) == spec_hash.encode()
        and kv.get(_CHUNK_KEY) == str(index).encode()
        and kv.get(_SAMPLES_KEY) == str(samples).encode()
        and meta.num_rows == samples
    )


def remove_records_beyond(out: Path, n_chunks: int) -> None:
    """Remove the records of chunks ``n_chunks`` and beyond (left by a run with more
    samples), so that the directory reads as this run's table."""
    for path in (out / "records").glob("chunk-*.parquet"):
        try:
            index = int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if index >= n_chunks:
            path.unlink(missing_ok=True)
    for tmp in (out / "records").glob("*.tmp"):
        tmp.unlink(missing_ok=True)


class RecordsReplacedError(RuntimeError):
    """The records a Result read from its run directory are no longer that run's: a later
    run into the same directory (more or fewer samples) rewrote or removed them."""


def read_records(out: Path, spec: Spec) -> dict[str, NDArray[Any]]:
    """The per-sample arrays of the run of ``spec`` in ``out`` (chunk order; keys as
    :attr:`Result.data`), read back from its Parquet dataset.

    Each file is checked, in the table read, to hold exactly this run's chunk: its spec
    (every field but ``samples``, and the sampler version: what decides a chunk's samples),
    its chunk index, sample count and ``sample`` column. A later run into ``out`` may have
    rewritten the last chunk with more samples (or other samples: a shorter chunk is not
    a prefix of a longer one), added chunks or removed them; RecordsReplacedError then,
    never another run's rows.
    """
    pa = _pyarrow()
    want_spec = _sample_defining(json.loads(json.dumps({**spec.to_dict(), "sampler": SAMPLER})))
    tables = []
    for i in range(spec.n_chunks):
        start = i * spec.chunk_size
        n = min(spec.chunk_size, spec.samples - start)
        path = records_path(out, i)
        try:
            # One read: the metadata checked below is that of the rows returned.
            table = pa.parquet.read_table(path)
        except FileNotFoundError:
            raise _replaced(out, spec, i, n, "is gone") from None
        kv = table.schema.metadata or {}
        try:
            theirs = json.loads(kv.get(_SPEC_KEY, b"null"))
        except ValueError:
            theirs = None
        if (
            not isinstance(theirs, dict)
            or _sample_defining(theirs) != want_spec
            or kv.get(_CHUNK_KEY) != str(i).encode()
            or kv.get(_SAMPLES_KEY) != str(n).encode()
            or table.num_rows != n
            or "sample" not in table.column_names
            or not np.array_equal(
                table.column("sample").to_numpy(), np.arange(start, start + n, dtype=np.int64)
            )
        ):
            total = theirs.get("samples") if isinstance(theirs, dict) else None
            what = f"now holds {table.num_rows} rows" + (
                f" written by a run of {total} samples" if total is not None else ""
            )
            raise _replaced(out, spec, i, n, what)
        tables.append(table.replace_schema_metadata(None))
    table = pa.concat_tables(tables)
    data: dict[str, NDArray[Any]] = {}
    for name in table.column_names:
        if name == "sample":
            continue
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            data[name] = column.flatten().to_numpy().reshape(-1, width)
        else:
            data[name] = column.to_numpy()
    return data


def _sample_defining(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """A records file's spec without ``samples``: chunk i's samples do not depend on it."""
    return {k: v for k, v in spec_dict.items() if k != "samples"}


def _replaced(out: Path, spec: Spec, index: int, n: int, what: str) -> RecordsReplacedError:
    return RecordsReplacedError(
        f"the records of this result ({spec.samples} samples) in {str(out / 'records')!r} "
        f"were replaced by a later run into {str(out)!r}: {records_path(out, index).name}, "
        f"its chunk {index} of {n} samples, {what}; run(spec, out=..., records=True) with "
        "this spec writes them again (reusing the checkpointed chunks it can)"
    )
