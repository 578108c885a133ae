"""Records: per-sample statistics as a Parquet dataset, one file per chunk, read as one
table with the spec in its metadata; runs without them keep only the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jacgeom.montecarlo import Spec, run
from jacgeom.montecarlo.checkpoint import spec_hash
from jacgeom.montecarlo.result import RecordsReplacedError
from jacgeom.montecarlo.sampling import SAMPLER

from .helpers import assert_same

pa_dataset = pytest.importorskip("pyarrow.dataset")


def test_records_are_one_parquet_table_with_the_spec(tmp_path: Path) -> None:
    spec = Spec(width=5, depth=2, samples=500, chunk_size=200, seed=3)
    res = run(spec, progress=False, out=tmp_path, records=True)
    files = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert files == [f"chunk-{i:06d}.parquet" for i in range(3)]
    table = pa_dataset.dataset(tmp_path / "records").to_table()
    assert table.num_rows == 500
    meta = table.schema.metadata
    assert json.loads(meta[b"jacgeom.spec"]) == {**spec.to_dict(), "sampler": SAMPLER}
    assert meta[b"jacgeom.spec_hash"].decode() == spec_hash(spec)
    np.testing.assert_array_equal(np.sort(table.column("sample").to_numpy()), np.arange(500))
    memory = run(spec, progress=False, records=True).data
    assert set(table.column_names) == {"sample", *memory}
    order = np.argsort(table.column("sample").to_numpy())
    for key, want in memory.items():
        column = table.column(key).combine_chunks()
        got = column.flatten().to_numpy().reshape(500, -1) if want.ndim == 2 else column
        np.testing.assert_array_equal(np.asarray(got)[order], want, err_msg=key)
    # Result.data reads the dataset back, in sample order.
    for key, want in memory.items():
        np.testing.assert_array_equal(res.data[key], want, err_msg=key)


def test_records_resume_and_extend(tmp_path: Path) -> None:
    spec = Spec(widths=(4, 4), samples=300, chunk_size=100, seed=2)
    run(spec, progress=False, out=tmp_path)  # no records: chunks only
    assert not (tmp_path / "records").exists()
    # Asked later, the records are written (chunks recomputed for them), then reused.
    with_records = run(spec, progress=False, out=tmp_path, records=True)
    assert len(list((tmp_path / "records").glob("*.parquet"))) == 3
    assert_same(with_records, run(spec, progress=False, records=True))
    fewer = spec.replace(samples=150)
    short = run(fewer, progress=False, out=tmp_path, records=True)
    # The records of chunks beyond the run are removed: the directory is this run's table.
    assert pa_dataset.dataset(tmp_path / "records").to_table().num_rows == 150
    assert_same(short, run(fewer, progress=False, records=True))


def test_records_do_not_change_the_summary() -> None:
    spec = Spec(width=4, depth=3, samples=400, chunk_size=90, seed=1, activation="tanh")
    assert_same(run(spec, progress=False), run(spec, progress=False, records=True))


def test_a_result_reads_only_its_own_records(tmp_path: Path) -> None:
    # Result.data read DIR when asked: after a resume to 45 samples the 25-sample result
    # showed 30 rows (chunk 2 rewritten with 10, whose first 5 are other samples than its
    # 5) and probability() counted them; after a 12-sample run, a bare FileNotFoundError
    spec = Spec(widths=(4, 4, 4), samples=25, chunk_size=10, seed=3)
    r25 = run(spec, progress=False, out=tmp_path, records=True)
    mem25 = run(spec, progress=False, records=True).data
    r45 = run(spec.replace(samples=45), progress=False, out=tmp_path, records=True)
    with pytest.raises(
        RecordsReplacedError,
        match=r"the records of this result \(25 samples\) in .* were replaced by a later run"
        r".*chunk-000002\.parquet, its chunk 2 of 5 samples, now holds 10 rows written by a "
        r"run of 45 samples",
    ):
        r25.data  # noqa: B018
    with pytest.raises(RecordsReplacedError):
        r25.probability(lambda d: d["rank"] < 4)
    assert r25.summary()["samples"] == 25  # the summary is the result's own, in memory
    assert_same(r45, run(spec.replace(samples=45), progress=False, records=True))
    run(spec.replace(samples=12), progress=False, out=tmp_path, records=True)
    with pytest.raises(RecordsReplacedError, match=r"chunk-000001\.parquet.*now holds 2 rows"):
        r45.data  # noqa: B018
    # Rerunning the spec writes its chunks again: the earlier result reads its own samples.
    run(spec, progress=False, out=tmp_path, records=True)
    for key, want in mem25.items():
        np.testing.assert_array_equal(r25.data[key], want, err_msg=key)


def test_a_result_survives_runs_that_keep_its_chunks(tmp_path: Path) -> None:
    # 20 samples in chunks of 10 end on a chunk boundary: a 30-sample run adds chunk 2 and
    # leaves chunks 0 and 1 as they were, so the 20-sample result still reads exactly its
    # 20 samples (not 30)
    spec = Spec(widths=(4, 4), samples=20, chunk_size=10, seed=5)
    r20 = run(spec, progress=False, out=tmp_path, records=True)
    run(spec.replace(samples=30), progress=False, out=tmp_path, records=True)
    mem = run(spec, progress=False, records=True)
    for key, want in mem.data.items():
        np.testing.assert_array_equal(r20.data[key], want, err_msg=key)
    assert r20.probability(lambda d: d["rank"] < 4) == mem.probability(lambda d: d["rank"] < 4)


def test_a_missing_records_file_is_named(tmp_path: Path) -> None:
    spec = Spec(widths=(3, 3), samples=20, chunk_size=10, seed=1)
    res = run(spec, progress=False, out=tmp_path, records=True)
    (tmp_path / "records" / "chunk-000001.parquet").unlink()
    with pytest.raises(RecordsReplacedError, match=r"chunk-000001\.parquet, .* is gone"):
        res.data  # noqa: B018
