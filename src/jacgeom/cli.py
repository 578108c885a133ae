"""Command line: ``jacgeom mc`` (the Monte Carlo of rank collapse), ``jacgeom figures``,
``jacgeom demo``, ``jacgeom bench`` and ``jacgeom analyze`` (module ``analyze``).

Errors are one line on stderr and exit code 2; every value is checked before any work
starts. An interrupted ``jacgeom mc`` (Ctrl-C) exits with code 130 and says how many
checkpointed chunks a rerun will reuse.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from . import _json, _startup, theory
from ._backends import backends
from .activations import activation_names
from .layer import layer_derivatives, layer_singular_values
from .typing import BackendName

if TYPE_CHECKING:
    from .montecarlo import Result, Spec

# Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = _startup.EXIT_INTERRUPTED

# When stderr is not a terminal (a log file) there is no bar: a point says how many of its
# chunks are done at most this often, so a long point shows it is alive without a line per
# chunk.
PROGRESS_LINE_SECONDS = 10.0


def demo(samples: int = 4000, seed: int = 0, backend: BackendName = "auto") -> str:
    """Rank collapse of one random relu layer against the closed form of docs/theory.md.

    Every sample draws a fresh W with iid N(0, 1/n) entries and a Gaussian input x; then
    the pre-activations are independent and symmetric, the rank of D W is min(|S|, n) almost
    surely with |S| ~ Binomial(m, 1/2), so P(rank < n) = P(Bin(m, 1/2) < n) (1 - 2^-n when
    m = n). (With one W shared by all samples the law is that of W's hyperplane arrangement,
    not the binomial.) The rank measured is the float64 rank (numpy.linalg.matrix_rank's
    rule on the layer's singular values); for one layer with Gaussian weights it equals the
    exact rank almost surely. Returns the table as markdown.
    """
    rng = np.random.default_rng(seed)
    lines = [
        f"relu layer, fresh W ~ N(0, 1/n) per sample, x ~ N(0, I), {samples} samples per row, "
        "backend "
        f"{backend if backend != 'auto' else backends()[0]}",
        "",
        "| m | n | P(float64 rank < n) measured | 95% interval | theory | mean active fraction |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    for m, n in [(4, 4), (10, 10), (32, 32), (12, 6), (20, 10), (40, 32)]:
        deficient = 0
        active = 0.0
        for _ in range(samples):
            W = rng.standard_normal((m, n)) / math.sqrt(n)
            x = rng.standard_normal(n)
            s = layer_singular_values(W, x, backend=backend)
            deficient += int(np.sum(s > s[0] * max(m, n) * np.finfo(s.dtype).eps) < n)
            active += float(layer_derivatives(W, x, backend=backend).mean())
        p = deficient / samples
        active /= samples
        half = 1.96 * math.sqrt(max(p * (1 - p), 1.0 / samples) / samples)
        lines.append(
            f"| {m} | {n} | {p:.5f} | [{max(0.0, p - half):.5f}, {min(1.0, p + half):.5f}] "
            f"| {theory.binomial_cdf_below(m, n):.5f} | {active:.4f} |"
        )
    lines.append(
        "\ntheory: P(Binomial(m, 1/2) < n), relu's rank law for fresh Gaussian weights "
        "(docs/theory.md); intervals: normal approximation, 95%"
    )
    return "\n".join(lines)


DEFAULT_ACTIVATIONS = ["relu", "leaky_relu", "tanh", "gelu", "identity"]
DEFAULT_WIDTHS = (8, 16, 32, 64, 128)
DEFAULT_DEPTHS = (4, 16)
# Samples of one experiment and of each point of the default sweep (a quarter of it at
# width 128, whose samples cost about 16 times those of width 32).
SINGLE_SAMPLES = 20000
SWEEP_SAMPLES = 4000
# One experiment's width and depth when only one of them (or neither) is given.
SINGLE_WIDTH = 32
SINGLE_DEPTH = 1


def _default_sweep(samples: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(point, spec fields) of the default story: width at depth 1, then depth at width 32."""
    points: list[dict[str, Any]] = []
    for act in DEFAULT_ACTIVATIONS:
        for width in DEFAULT_WIDTHS:
            points.append({"activation": act, "width": width, "depth": 1})
        for depth in DEFAULT_DEPTHS:
            points.append({"activation": act, "width": 32, "depth": depth})
    return [
        (p, {**p, "samples": samples if p["width"] < 128 else max(1, samples // 4)}) for p in points
    ]


class UsageError(ValueError):
    """A command line that cannot run: reported as one line, exit code 2, before any work."""


def _single_experiment(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k) is not None for k in ("widths", "width", "depth", "activation", "layer")
    )


def _check_flags(args: argparse.Namespace) -> None:
    """UsageError for flags that contradict each other or that the run would ignore."""

    def given(*names: str) -> list[str]:
        return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False)]

    if args.widths is not None and given("width", "depth"):
        raise UsageError(
            f"--widths gives every width: drop {' and '.join(given('width', 'depth'))}"
        )
    if args.layer == "kernel":
        ignored = given("activation", "init", "sigma_w", "sigma_b")
        if ignored:
            raise UsageError(
                f"{', '.join(ignored)}: not used by kernel layers (--layer kernel draws "
                "h -> A k(h)); remove it"
            )
    else:
        ignored = given("kernel", "centers", "gamma")
        if ignored:
            raise UsageError(
                f"{', '.join(ignored)}: only for kernel layers; add --layer kernel or remove it"
            )
    if args.sigma_w is not None and (args.init or "he") not in ("gaussian", "orthogonal"):
        raise UsageError(
            f"--sigma-w is the gain of --init gaussian or orthogonal; --init {args.init or 'he'} "
            "fixes the weights' scale itself"
        )
    if args.inputs != "manifold" and given("manifold_dim", "manifold"):
        raise UsageError(
            f"{', '.join(given('manifold_dim', 'manifold'))}: only with --inputs manifold"
        )
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the checkpoint directory to resume from")
    if args.records and not args.out:
        raise UsageError(
            "--records writes every sample's statistics as Parquet files under --out DIR; "
            "give --out DIR"
        )
    if args.resume and not Path(args.out).is_dir():
        raise UsageError(f"--resume: no checkpoint directory {args.out!r} to resume from")
    if args.scheduler is None and args.timeout is not None:
        raise UsageError("--timeout is the time to reach --scheduler; give --scheduler or drop it")
    if args.scheduler is not None and args.workers is not None:
        raise UsageError(
            "--workers sizes the local thread pool; with --scheduler, size the cluster"
        )


def _check_outputs(args: argparse.Namespace) -> None:
    """UsageError where --plot or --out cannot be written, or matplotlib is missing: checked
    before the run, not after it."""
    if args.plot:
        from .plot import _check_figure_path

        try:
            _check_figure_path("--plot", args.plot)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.records:
        from .montecarlo.records import _pyarrow

        try:
            _pyarrow()
        except ImportError as exc:
            raise UsageError(f"--records: {exc}") from None
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {args.out}: not writable ({exc.strerror})") from None
        if not os.access(out, os.W_OK):
            raise UsageError(f"--out {args.out}: not writable")


def _plan(args: argparse.Namespace) -> list[tuple[dict[str, Any], Spec]]:
    """Every (point, Spec) the command will run, each Spec built (and so validated) now."""
    from .montecarlo import Spec

    base: dict[str, Any] = {
        k: v
        for k, v in {
            "init": args.init,
            "sigma_w": args.sigma_w,
            "sigma_b": args.sigma_b,
            "residual": args.residual,
            "norm": args.norm,
            "inputs": args.inputs,
            "manifold_dim": args.manifold_dim,
            "manifold": args.manifold,
            "fresh_weights": False if args.shared_weights else None,
            "layer": args.layer,
            "kernel": args.kernel,
            "centers": args.centers,
            "gamma": args.gamma,
            "seed": args.seed,
            "chunk_size": args.chunk_size,
            "layer_ranks": False if args.no_layer_ranks else None,
            "spectra": False if args.no_spectra else None,
        }.items()
        if v is not None
    }
    if _single_experiment(args):
        point: dict[str, Any] = {}
        if args.widths:
            point["widths"] = tuple(args.widths)
        else:
            point["width"] = args.width or SINGLE_WIDTH
            point["depth"] = args.depth or SINGLE_DEPTH
        if args.layer == "kernel":
            point["layer"] = "kernel"
            point["kernel"] = args.kernel or "rbf"
        else:
            acts = args.activation or ["relu"]
            point["activation"] = acts[0] if len(acts) == 1 else tuple(acts)
        plan = [(point, {**point, "samples": args.samples or SINGLE_SAMPLES})]
    else:
        plan = _default_sweep(args.samples or SWEEP_SAMPLES)
    return [(point, Spec(**{**base, **fields})) for point, fields in plan]


def _describe(point: dict[str, Any]) -> str:
    """'tanh, width 32, depth 4' for a progress line."""
    from .montecarlo.sweep import point_label

    return ", ".join(
        point_label(v) if k in ("activation", "layer", "kernel") else f"{k} {point_label(v)}"
        for k, v in point.items()
    )


def _chunk_files(out: Path | None, spec: Spec) -> dict[int, tuple[int, int]]:
    """(inode, mtime) of the checkpoint file of every chunk of ``spec`` present in ``out``."""
    from .montecarlo.checkpoint import chunk_path

    found: dict[int, tuple[int, int]] = {}
    if out is None or not out.is_dir():
        return found
    for i in range(spec.n_chunks):
        try:
            st = chunk_path(out, i).stat()
        except OSError:
            continue
        found[i] = (st.st_ino, st.st_mtime_ns)
    return found


def _chunk_samples(spec: Spec, i: int) -> int:
    return min(spec.chunk_size, spec.samples - i * spec.chunk_size)


@dataclasses.dataclass
class _Accounting:
    """What a run computed and what it read back from its checkpoint directory."""

    samples: int = 0
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0

    def add(self, other: _Accounting) -> None:
        self.samples += other.samples
        self.computed += other.computed
        self.reused += other.reused
        self.seconds += other.seconds


def _theory_notes(results: Sequence[tuple[dict[str, Any], Result]]) -> list[str]:
    """One line per closed form shown in the table's theory columns, naming the runs (by
    activation) it was shown for, and the runs for which none applies."""
    from .montecarlo.spec import layer_activations

    notes: dict[str, list[str]] = {}

    def note(text: str, who: str) -> None:
        names = notes.setdefault(text, [])
        if who not in names:
            names.append(who)

    for _, res in results:
        spec = res.spec
        th = res.theory()
        acts = layer_activations(spec)
        who = (
            f"kernel layers ({spec.kernel})"
            if spec.layer == "kernel"
            else "-".join(dict.fromkeys(acts))
        )
        if "active_fraction" in th:
            note(
                "P(exact rank < n) = 1 - prod_l P(Binomial(n_l, 1/2) >= n): relu's binomial law "
                "for fresh Gaussian weights and symmetric biases",
                who,
            )
        elif th.get("p_exact_rank_deficient") == 0.0:
            note(
                "P(exact rank < n) = 0: phi' vanishes nowhere (gelu and silu only at one "
                "point), so Gaussian weights keep the exact rank full",
                who,
            )
        elif th.get("p_exact_rank_deficient") == 1.0:
            note(
                "P(exact rank < n) = 1: a narrower layer or layer normalisation (n_l - 1) "
                "caps the rank below n",
                who,
            )
        if "log10_cond" in th:
            note(
                "median log10 cond -> L (mu_1 - mu_d) / ln 10: the Lyapunov limit of products "
                "of Gaussian matrices, a large-depth growth rate (shown from depth 4; at finite "
                "depth the median lies above it by O(1))",
                who,
            )
        if not th:
            note("no closed form applies: the theory columns are empty", who)
    return [f"  {', '.join(who)}: {text}" for text, who in notes.items()]


def _gain_lines(results: Sequence[tuple[dict[str, Any], Result]]) -> list[str]:
    """Per run where the exact finite-width law of relu's log gain applies: the measured
    mean with its 95% interval beside the law's mean, and P(J e_1 = 0) beside its value."""
    lines = []
    for _, res in results:
        th = res.theory()
        if "mean_log_gain" not in th:
            continue
        s = res.summary()
        g = s["log_gain"]
        finite = g["finite_fraction"] * s["samples"]
        half = 1.96 * g["std"] / math.sqrt(finite) if finite > 1 else math.inf
        widths = "-".join(str(w) for w in res.spec.resolved_widths())
        zero = s["p_gain_zero"]
        lines.append(
            f"  relu, widths {widths}: mean {g['mean']:.4f} [{g['mean'] - half:.4f}, "
            f"{g['mean'] + half:.4f}], exact law {th['mean_log_gain']:.4f} (std "
            f"{th['std_log_gain']:.3f}); P(J e_1 = 0) {zero['p']:.4f} [{zero['lo']:.4f}, "
            f"{zero['hi']:.4f}], law {th['p_gain_zero']:.4f}"
        )
    return lines


def _table_legend() -> str:
    """What the columns of ``jacgeom mc``'s table are, and its intervals at the level that
    :func:`jacgeom.montecarlo.sweep_table` summarises each run with (Result.summary's
    default)."""
    import inspect

    from .montecarlo import Result
    from .montecarlo.summaries import BIN_WIDTH

    level = float(inspect.signature(Result.summary).parameters["level"].default)
    return (
        "n = min(n_0, n_L). Exact rank: singular values non-zero in exact arithmetic (lost "
        "only through structure, such as relu's dead units). float64 rank: "
        "numpy.linalg.matrix_rank's rule on the exact singular values (s_i counted where "
        "above max(n_0, n_L) eps s_max). log10 cond = log10(s_max / s_min), finite wherever "
        "the exact rank is full, inf where s_min is exactly 0. Intervals at level "
        f"{level:.0%}: exact Clopper-Pearson for probabilities; mean +- 1.96 standard errors "
        "for float64 rank / n; for the median log10 cond, the distribution-free interval "
        "between two order statistics, each end widened outward to the edge of its bin in "
        f"the run's summary histogram (bins 1/{round(1 / BIN_WIDTH)} wide on the asinh "
        "scale), so that it holds the exact order statistics' interval; inf ends where the "
        "samples are too few for the level."
    )


def _mc(args: argparse.Namespace) -> int:
    from .montecarlo import run, sweep_table
    from .montecarlo.sampling import SAMPLER
    from .montecarlo.sweep import run_directory_name

    _check_flags(args)
    plan = _plan(args)
    _check_outputs(args)
    executor = None
    client = None
    if args.scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise UsageError(
                '--scheduler needs dask.distributed: pip install "jacgeom[dask]"'
            ) from None
        timeout = 10.0 if args.timeout is None else args.timeout
        try:
            if args.scheduler.endswith(".json"):
                client = Client(scheduler_file=args.scheduler, timeout=timeout)
            else:
                client = Client(args.scheduler, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - reported as one line
            raise UsageError(
                f"cannot reach scheduler {args.scheduler}: {type(exc).__name__}: {exc}"
            ) from None
        executor = client.get_executor(pure=False)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    results: list[tuple[dict[str, Any], Result]] = []
    runs: list[_Accounting] = []
    outs: list[Path | None] = []
    total = _Accounting()
    k = 0

    def interrupted_line() -> str:
        """What a Ctrl-C at point k says: the chunks on disk now, and how to resume."""
        saved = [(i, s) for o, (_, s) in zip(outs, plan, strict=False) for i in _chunk_files(o, s)]
        where = (
            f"{_count(len(saved), 'chunk')} "
            f"({_count(sum(_chunk_samples(s, i) for i, s in saved), 'sample')}) saved "
            f"under {args.out}; rerun the same command to resume"
            if args.out
            else "nothing saved (without --out DIR nothing is checkpointed; give --out DIR "
            "and a rerun resumes)"
        )
        return f"jacgeom: interrupted at point {k}/{len(plan)}: {where}"

    # A second Ctrl-C while the first one waits for the running chunks exits at once with
    # this line (jacgeom._startup).
    _startup.on_second_interrupt(interrupted_line)
    try:
        for k, (point, spec) in enumerate(plan, 1):
            out = None if not args.out else Path(args.out) / run_directory_name(point, spec)
            outs.append(out)
            before = _chunk_files(out, spec)
            say(f"point {k}/{len(plan)}: {_describe(point)}, {spec.samples} samples")
            start = time.perf_counter()
            progress: Any = not args.quiet
            if progress and not sys.stderr.isatty():
                progress = _ChunkLines(f"point {k}/{len(plan)}")
            res = run(
                spec,
                executor=executor,
                progress=progress,
                out=out,
                workers=args.workers,
                records=args.records,
            )
            after = _chunk_files(out, spec)
            reused = sum(
                _chunk_samples(spec, i) for i, stamp in before.items() if after.get(i) == stamp
            )
            acc = _Accounting(spec.samples, spec.samples - reused, reused)
            acc.seconds = time.perf_counter() - start
            total.add(acc)
            runs.append(acc)
            results.append((point, res))
            if reused:
                say(f"point {k}/{len(plan)}: {reused} of {spec.samples} samples reused from {out}")
            if args.records and out is not None:
                say(f"point {k}/{len(plan)}: per-sample records in {out / 'records'}")
    except KeyboardInterrupt:
        _say_interrupted(interrupted_line())
        return EXIT_INTERRUPTED
    finally:
        if client is not None:
            client.close()
    notes = _theory_notes(results)
    if args.json:
        from . import __version__

        records = [
            {
                "jacgeom": __version__,
                "sampler": SAMPLER,
                "log_base": "e",
                "logs": (
                    "natural logarithms: log_smax, log_smin, log_cond and log_volume of "
                    "summary (the table's log10 cond is log_cond / ln 10)"
                ),
                "non_finite": (
                    'infinite values are the strings "inf" and "-inf"; null is a value that '
                    "is undefined (such as the mean of a statistic with no finite sample)"
                ),
                "point": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
                "spec": r.spec.to_dict(),
                "summary": r.summary(),
                "theory_notes": [n.strip() for n in _theory_notes([(p, r)])],
                "run": {
                    "samples": acc.samples,
                    "computed": acc.computed,
                    "reused": acc.reused,
                    "seconds": round(acc.seconds, 3),
                    "out": None if o is None else str(o),
                    "records": str(o / "records") if o is not None and args.records else None,
                },
            }
            for (p, r), acc, o in zip(results, runs, outs, strict=True)
        ]
        json.dump(_json.strict(records), sys.stdout, indent=1, allow_nan=False)
        print()
    else:
        print(sweep_table(results))
        print(f"\n{textwrap.fill(_table_legend(), 88)}\n\nTheory columns (docs/theory.md):")
        print("\n".join(notes))
        gains = _gain_lines(results)
        if gains:
            print("\nGain of one input direction, log ||J e_1||^2 (natural log; given J e_1 != 0):")
            print("\n".join(gains))
        print(f"\n{_work_line(total, args.out)}")
    if args.plot:
        from .plot import monte_carlo_figure

        monte_carlo_figure(results).savefig(args.plot, dpi=120)
        say(f"figure written to {args.plot}")
    return 0


def _say_interrupted(line: str) -> None:
    """The one line of an interrupted command (no other follows: Ctrl-C is ignored from
    here to the exit)."""
    _startup.exiting()
    print(f"\n{line}", file=sys.stderr, flush=True)


def _count(n: int, noun: str) -> str:
    """'1 chunk', '2 chunks'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class _ChunkLines:
    """Progress for a log: 'point k/N: c/C chunks' on stderr, at most every
    PROGRESS_LINE_SECONDS, never after the last chunk (the next point's line or the table
    follows at once)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last = time.monotonic()

    def __call__(self, done: int, chunks: int) -> None:
        now = time.monotonic()
        if done < chunks and now - self.last >= PROGRESS_LINE_SECONDS:
            print(f"{self.prefix}: {done}/{chunks} chunks", file=sys.stderr, flush=True)
            self.last = now


def _work_line(total: _Accounting, out: str | None) -> str:
    """'N samples: C computed in T s (R samples/s), U reused from DIR'."""
    if total.computed == 0:
        return f"{total.samples} samples, all reused from the checkpoints in {out}: none computed"
    rate = total.computed / total.seconds if total.seconds > 0 else math.inf
    line = (
        f"{total.samples} samples: {total.computed} computed in {total.seconds:.1f} s "
        f"({rate:,.0f} samples/s)"
    )
    if total.reused:
        line += f", {total.reused} reused from the checkpoints in {out}"
    return line


def _bench(rest: list[str]) -> int:
    """Run bench/report.py of the checkout in the current directory (or JACGEOM_BENCH_DIR):
    the suite is part of the source tree, not of the installed package."""
    import runpy

    where = Path(os.environ.get("JACGEOM_BENCH_DIR", "bench"))
    report = where / "report.py"
    if not report.is_file():
        raise ValueError(
            f"no benchmark suite at {str(report)!r}: run `jacgeom bench` from a jacgeom source "
            "checkout, or set JACGEOM_BENCH_DIR to its bench/ directory"
        )
    sys.path.insert(0, str(where.resolve()))
    saved = sys.argv
    sys.argv = [str(report), *rest]
    try:
        runpy.run_path(str(report), run_name="__main__")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            # sys.exit("message"): Python would print it; the report's errors are one line
            print(f"jacgeom bench: error: {exc.code}", file=sys.stderr)
            return 2
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'jacgeom mc: error: ... (see jacgeom mc --help)'."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, low: float, strict: bool) -> Any:
    """An argparse type: a number of ``kind`` above ``low`` (at least ``low`` unless strict)."""
    word = "integer" if kind is int else "number"
    bound = f"> {low:g}" if strict else f">= {low:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an {word} {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = word  # argparse names the type in some messages
    return parse


_positive_int = _number(int, 1, strict=False)
_non_negative_int = _number(int, 0, strict=False)
_positive_float = _number(float, 0.0, strict=True)
_non_negative_float = _number(float, 0.0, strict=False)

MC_DESCRIPTION = "\n\n".join(
    textwrap.fill(paragraph, 88)
    for paragraph in (
        "The Monte Carlo of rank collapse: draw random networks and inputs, and measure how "
        "often and how far the end-to-end Jacobian J loses rank and conditioning, beside the "
        "closed forms.",
        f"Without network flags: the default sweep of {len(DEFAULT_ACTIVATIONS) * 7} points, "
        f"each of the activations {', '.join(DEFAULT_ACTIVATIONS)} at depth 1 and widths "
        f"{', '.join(map(str, DEFAULT_WIDTHS))}, then at width 32 and depths "
        f"{', '.join(map(str, DEFAULT_DEPTHS))}; {SWEEP_SAMPLES} samples per point (a quarter "
        "of it at width 128). With --widths, --width, --depth, --activation or --layer: one "
        f"experiment of {SINGLE_SAMPLES} samples.",
        "Output: a Markdown table with P(exact rank < n) and P(float64 rank < n) and their "
        "95% intervals, the mean float64 rank / n and the median log10 condition number, each "
        "beside its closed form where one applies, n = min(n_0, n_L); then one line per "
        "closed form shown, and the samples computed and reused. Progress goes to stderr: a "
        "line per point ('point 20/35: tanh, width 32, depth 4') and, on a terminal, a bar "
        "for the current point; in a log file, a line such as 'point 1/1: 4/10 chunks' "
        f"at most every {PROGRESS_LINE_SECONDS:g} s instead of the bar.",
    )
)

MC_EPILOG = """\
examples:
  jacgeom mc                                          the default sweep (1 to 3 minutes on 2 cores)
  jacgeom mc --width 32 --depth 8 --activation tanh   one experiment, 20000 samples
  jacgeom mc --widths 16 32 16 --activation relu tanh one activation per layer
  jacgeom mc --layer kernel --kernel rbf --width 8    kernel layers instead of activations
  jacgeom mc --out runs/ --json > mc.json             checkpoint (Ctrl-C, rerun to resume)
  jacgeom mc --width 16 --out runs/ --records         also per-sample Parquet records

Ctrl-C stops a run with exit code 130 once the chunks running have finished; with --out,
the chunks finished so far are saved and the same command resumes from them. A second
Ctrl-C stops at once, without the chunks still running. Errors are one line on stderr,
exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from .montecarlo import Spec

    spec_default = {f.name: f.default for f in dataclasses.fields(Spec)}
    parser = _Parser(
        prog="jacgeom",
        description="What pointwise activations do to the geometry of neural networks: "
        "Jacobians, ranks and conditioning, measured against closed forms.",
        epilog="Run 'jacgeom COMMAND --help' for a command's options. Documentation: the "
        "README and docs/ of the source repository.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    mc = sub.add_parser(
        "mc",
        help="the Monte Carlo of rank collapse (default: a 35-point sweep that tells the story)",
        description=MC_DESCRIPTION,
        epilog=MC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    net = mc.add_argument_group("the network (any of these makes one experiment)")
    net.add_argument(
        "--widths",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help="every width n_0 n_1 ... n_L (at least two); not with --width or --depth "
        "(default: --width at every layer, --depth layers)",
    )
    net.add_argument(
        "--width",
        type=_positive_int,
        metavar="N",
        help=f"the width of every layer, input included (default {SINGLE_WIDTH})",
    )
    net.add_argument(
        "--depth",
        type=_positive_int,
        metavar="L",
        help=f"the number of layers L (default {SINGLE_DEPTH})",
    )
    net.add_argument(
        "--activation",
        nargs="+",
        choices=activation_names(),
        metavar="NAME",
        help="one activation for every layer, or one per layer; one of "
        f"{', '.join(activation_names())} (default {spec_default['activation']})",
    )
    net.add_argument(
        "--layer",
        choices=["activation", "kernel"],
        help="'activation': h -> phi(W h + b); 'kernel': every layer a kernel layer "
        f"h -> A k(h) of the same widths (default {spec_default['layer']})",
    )
    draw = mc.add_argument_group("how networks and inputs are drawn")
    draw.add_argument(
        "--init",
        choices=["he", "xavier", "lecun", "orthogonal", "gaussian"],
        help=f"weight initialisation (default {spec_default['init']})",
    )
    draw.add_argument(
        "--sigma-w",
        type=_non_negative_float,
        metavar="S",
        help="weight gain of --init gaussian (std S / sqrt(fan_in)) or orthogonal (default 1)",
    )
    draw.add_argument(
        "--sigma-b",
        type=_non_negative_float,
        metavar="S",
        help=f"biases iid N(0, S^2) (default {spec_default['sigma_b']:g}: no biases)",
    )
    draw.add_argument(
        "--residual",
        action="store_true",
        default=None,
        help="residual layers h + phi(W h + b) (equal widths; default off)",
    )
    draw.add_argument(
        "--norm",
        choices=["layer"],
        help="layer normalisation of the pre-activations (default none)",
    )
    draw.add_argument(
        "--shared-weights",
        action="store_true",
        help="one network for all samples (default: every sample draws its own, the model "
        "of the closed forms)",
    )
    draw.add_argument(
        "--inputs",
        choices=["gaussian", "sphere", "manifold"],
        help="x ~ N(0, I), uniform on the unit sphere, or on a random manifold "
        f"(default {spec_default['inputs']})",
    )
    draw.add_argument(
        "--manifold-dim",
        type=_positive_int,
        metavar="K",
        help=f"dimension of the input manifold, with --inputs manifold "
        f"(default {spec_default['manifold_dim']})",
    )
    draw.add_argument(
        "--manifold",
        choices=["linear", "curved"],
        help="a random subspace or a curved sine embedding, with --inputs manifold "
        f"(default {spec_default['manifold']})",
    )
    draw.add_argument(
        "--kernel",
        choices=["rbf", "laplacian", "polynomial"],
        help=f"the kernel k of --layer kernel (default {spec_default['kernel']})",
    )
    draw.add_argument(
        "--centers",
        type=_positive_int,
        metavar="C",
        help="centres per kernel layer (default: the layer's input width)",
    )
    draw.add_argument(
        "--gamma",
        type=_positive_float,
        metavar="G",
        help="kernel scale of --layer kernel (default 1 / the layer's input width)",
    )
    rec = mc.add_argument_group("what is recorded, how many samples")
    rec.add_argument(
        "--samples",
        type=_positive_int,
        metavar="N",
        help=f"samples per experiment (default {SINGLE_SAMPLES} for one experiment, "
        f"{SWEEP_SAMPLES} per point of the sweep)",
    )
    rec.add_argument(
        "--seed",
        type=_non_negative_int,
        metavar="S",
        help=f"seed of every random draw; results depend only on it, the spec and the chunk "
        f"size (default {spec_default['seed']})",
    )
    rec.add_argument(
        "--chunk-size",
        type=_positive_int,
        metavar="N",
        help=f"samples per chunk, the unit of work and of checkpoints "
        f"(default {spec_default['chunk_size']})",
    )
    rec.add_argument(
        "--no-layer-ranks",
        action="store_true",
        help="leave out each layer's rank (deep relu runs then draw about half the normals; "
        "default: each layer's rank is recorded)",
    )
    rec.add_argument(
        "--no-spectra",
        action="store_true",
        help="ranks and active counts only: no singular-value statistics (no log10 cond; "
        "default: singular-value statistics are recorded)",
    )
    where = mc.add_argument_group("where it runs")
    where.add_argument(
        "--out",
        metavar="DIR",
        help="checkpoint directory, one sub-directory per experiment; rerunning the same "
        "command resumes (default: no checkpoints)",
    )
    where.add_argument(
        "--records",
        action="store_true",
        help="with --out: also write every sample's statistics as Parquet files, one table "
        "per experiment under its sub-directory's records/ (needs pyarrow: jacgeom[records])",
    )
    where.add_argument(
        "--resume",
        action="store_true",
        help="insist on resuming: refuse to start if --out DIR does not exist (a rerun with "
        "--out resumes anyway)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the chunks on a Dask cluster: tcp://HOST:PORT or a scheduler file .json "
        "(needs jacgeom[dask])",
    )
    where.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds to reach --scheduler (default 10)",
    )
    where.add_argument(
        "--workers",
        type=_positive_int,
        metavar="K",
        help="local threads, one chunk each (default: all cores)",
    )
    show = mc.add_argument_group("output")
    show.add_argument(
        "--json",
        action="store_true",
        help="strict JSON on stdout instead of the table: per experiment the full spec, "
        "summary, versions and the log base",
    )
    show.add_argument(
        "--plot",
        metavar="FILE",
        help="also write the figure to FILE (.png, .pdf or .svg; needs matplotlib)",
    )
    show.add_argument("--quiet", action="store_true", help="no progress lines or bars on stderr")
    figs = sub.add_parser(
        "figures",
        help="write the figures of the story as PNG files (needs matplotlib)",
        description="Write the figures of the story as PNG files: activations.png, warp.png, "
        "dead_coordinates.png, rank_depth.png (exact rank, float64 rank and log10 condition "
        "number against depth), metric_distortion.png, kernel_comparison.png.",
    )
    figs.add_argument("--out", required=True, help="directory for the PNG files (created)")
    figs.add_argument("--gif", action="store_true", help="also the warp animation (pillow)")
    figs.add_argument(
        "--samples",
        type=_positive_int,
        default=2000,
        help="Monte Carlo samples per point of dead_coordinates.png; rank_depth.png takes a "
        "quarter of it per point, kernel_comparison.png a tenth (at least 50 each; "
        "default 2000)",
    )
    bench = sub.add_parser(
        "bench",
        help="run the benchmark report of a source checkout (bench/report.py); "
        "arguments after 'bench' are passed to it",
        add_help=False,
    )
    bench.add_argument("rest", nargs="*")
    demo_p = sub.add_parser(
        "demo",
        help="seconds: the rank of a random relu layer against its closed form",
        description="Rank collapse of single random relu layers (fresh weights per sample) "
        "against the binomial closed form P(Binomial(m, 1/2) < n).",
    )
    demo_p.add_argument(
        "--samples", type=_positive_int, default=4000, help="samples per row (default 4000)"
    )
    demo_p.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default 0)")
    demo_p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "cpp", "numba", "numpy"],
        help="kernel backend (default auto)",
    )
    from . import analyze

    analyze.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 2 for errors, 130 for Ctrl-C)."""
    try:
        status = _main(argv)
        # The output is out: a Ctrl-C while the interpreter shuts down changes nothing.
        _startup.exiting()
        return status
    except KeyboardInterrupt:
        _say_interrupted("jacgeom: interrupted")
        return EXIT_INTERRUPTED
    except ImportError as exc:
        # Ctrl-C inside a compiled module's initialisation arrives as this ImportError.
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            _say_interrupted("jacgeom: interrupted")
            return EXIT_INTERRUPTED
        raise


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after "bench" belongs to the report's own parser (--help included).
        _startup.release()
        try:
            return _bench(argv[1:])
        except ValueError as exc:
            print(f"jacgeom: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    # The work starts: from here the first Ctrl-C is a KeyboardInterrupt, caught where a
    # command has something to save or say, and a second one exits at once (until now
    # jacgeom._startup's handler exited at once on the first).
    _startup.working()
    try:
        if args.command == "mc":
            return _mc(args)
        if args.command == "analyze":
            from . import analyze

            return analyze.main(args)
        if args.command == "figures":
            from .plot import _pyplot, write_figures

            try:
                _pyplot()
            except ImportError as exc:  # before any work, as one line
                raise ValueError(str(exc)) from None

            for path in write_figures(args.out, gif=args.gif, samples=args.samples):
                print(path)
            return 0
        start = time.perf_counter()
        print(demo(args.samples, args.seed, args.backend))
        print(f"({time.perf_counter() - start:.2f} s)")
        return 0
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        prefix = f"jacgeom {args.command}: error: "
        print(f"{prefix}{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
