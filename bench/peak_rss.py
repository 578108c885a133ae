"""Peak memory of a Monte Carlo run against its sample count (issue 18).

Runs a 16 x 16 relu layer at each sample count in a fresh process (so nothing else this
process did counts) with a checkpoint directory, and prints its peak RSS, time, throughput,
the directory's size and P(exact rank deficient) beside its closed form:

    python bench/peak_rss.py 1e6 1e7 --chunk-size 250000
"""

from __future__ import annotations

from typing import Any

_RSS_CHILD = """
import json, os, resource, sys, tempfile, time
from pathlib import Path
from jacgeom.montecarlo import Spec, run
samples, chunk, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def peak_mb():
    # VmHWM: this address space's high-water mark (ru_maxrss survives exec, so a child of a
    # big process would report its parent's peak).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


spec = Spec(widths=(16, 16), samples=samples, chunk_size=chunk, seed=1)
with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    res = run(spec, progress=False, out=out, workers=workers)
    elapsed = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
s = res.summary()
print(json.dumps({
    "samples": samples, "chunk_size": chunk, "workers": workers, "seconds": elapsed,
    "samples_per_s": samples / elapsed,
    "peak_rss_mb": peak_mb(),
    "directory_mb": size / 2**20,
    "p_exact_rank_deficient": s["p_exact_rank_deficient"],
    "theory": s["theory"].get("p_exact_rank_deficient"),
}))
"""


def peak_rss(samples: int, chunk_size: int = 250_000, workers: int = 2) -> dict[str, Any]:
    """Peak RSS, time and checkpoint directory size of a run of a 16 x 16 relu layer with
    ``samples`` samples, in a fresh process (so nothing else this process did counts)."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(samples), str(chunk_size), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="+", type=float, help="sample counts, e.g. 1e6 1e7")
    parser.add_argument("--chunk-size", type=int, default=250_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for n in args.samples:
        print(peak_rss(int(n), min(args.chunk_size, int(n)), args.workers), flush=True)
