"""The result of a Monte Carlo run: the merged summary of its chunks (counts, moments,
histograms), its statistics with intervals, the closed forms that apply, the per-sample
records when the run kept them, and storage (.npz, JSON-ready dicts)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

import numpy as np
from numpy.typing import NDArray

from .. import theory
from .records import RecordsReplacedError, read_records
from .spec import Spec, bytes_per_sample, layer_activations, memory_limit
from .summaries import Summary

__all__ = [
    "RESULT_FORMAT",
    "NoRecordsError",
    "RecordsReplacedError",
    "Result",
    "atomic_savez",
    "distribution_summary",
]


class ProbabilitySummary(TypedDict):
    """An estimated probability: ``count`` of the samples, ``p`` with its Clopper-Pearson
    interval [``lo``, ``hi``]."""

    p: float
    lo: float
    hi: float
    count: int


class DistributionSummary(TypedDict):
    """A statistic's distribution over the samples (mean and std of the finite values;
    quantiles; an interval [median_lo, median_hi] for the median at the summary's level)."""

    mean: float
    std: float
    finite_fraction: float
    q05: float
    q25: float
    median: float
    q75: float
    q95: float
    median_lo: float
    median_hi: float


class RunSummary(TypedDict):
    """What :meth:`Result.summary` returns; the spectral keys only for runs with spectra."""

    samples: int
    widths: list[int]
    bin_width: float
    p_exact_rank_deficient: ProbabilitySummary
    p_rank_deficient: ProbabilitySummary
    p_any_zeroed: ProbabilitySummary
    mean_exact_rank: DistributionSummary
    rank_fraction: DistributionSummary
    active_fraction: DistributionSummary
    log_smax: NotRequired[DistributionSummary]
    log_smin: NotRequired[DistributionSummary]
    log_cond: NotRequired[DistributionSummary]
    frobenius2: NotRequired[DistributionSummary]
    log_volume: NotRequired[DistributionSummary]
    log_gain: NotRequired[DistributionSummary]
    p_gain_zero: NotRequired[ProbabilitySummary]
    theory: dict[str, float]


# Version of Result.to_dict's and Result.save's layout (2: the summary, records optional).
RESULT_FORMAT = 2

# Old per-sample keys still readable from Result.data, with a DeprecationWarning.
_DEPRECATED_KEYS = {"layer_ranks": "layer_numerical_ranks"}


class NoRecordsError(ValueError):
    """A per-sample question asked of a result that kept only its summary."""


class _Records(dict[str, NDArray[Any]]):
    """Per-sample arrays; the old key ``layer_ranks`` reads ``layer_numerical_ranks``."""

    def __missing__(self, key: str) -> NDArray[Any]:
        new = _DEPRECATED_KEYS.get(key)
        if new is None or new not in self:
            raise KeyError(key)
        warnings.warn(
            f"the per-sample key {key!r} is now {new!r} (each layer's own float64 rank, "
            "beside layer_exact_ranks of the partial products)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self[new]


@dataclasses.dataclass
class Result:
    """One experiment: its merged summary and, when the run kept them, per-sample records.

    Attributes
    ----------
    spec : Spec
    merged : Summary
        The summary of every chunk, merged in chunk order (counts, streaming moments,
        histograms; jacgeom.montecarlo.summaries). Everything :meth:`summary`,
        :meth:`theory` and the figures report comes from it.
    records : dict of str to ndarray, optional
        Per-sample arrays kept in memory (``run(spec, records=True)`` without ``out``).
    records_dir : path, optional
        The run directory whose ``records/`` Parquet dataset holds them
        (``run(spec, out=DIR, records=True)``), read by :attr:`data` on demand: this
        result's own samples, checked file by file (RecordsReplacedError where a later run
        into DIR has since rewritten or removed them).
    """

    spec: Spec
    merged: Summary
    records: dict[str, NDArray[Any]] | None = None
    records_dir: Path | None = None

    @property
    def samples(self) -> int:
        """Number of samples N."""
        return self.merged.samples

    @property
    def has_records(self) -> bool:
        """Whether per-sample statistics were kept (:attr:`data` works)."""
        return self.records is not None or self.records_dir is not None

    @property
    def data(self) -> dict[str, NDArray[Any]]:
        """Per-sample arrays (keys and meanings: the table of jacgeom.montecarlo's
        docstring), samples in chunk order: only for runs with ``records=True``
        (NoRecordsError otherwise). Read from the Parquet dataset when the run wrote one.

        Raises
        ------
        NoRecordsError
            Where the run kept only its summary.
        RecordsReplacedError
            Where the run wrote its records to ``out=DIR`` and a later run into DIR (with
            more or fewer samples) has since rewritten or removed them: the rows there are
            no longer this result's samples, and are never returned as if they were.
        """
        if self.records is not None:
            return _Records(self.records)
        if self.records_dir is not None:
            need, limit = self.samples * bytes_per_sample(self.spec), memory_limit()
            if need > limit:
                raise MemoryError(
                    f"the records of {self.samples} samples take about {need / 2**30:.3g} GiB, "
                    f"more than this machine's {limit / 2**30:.3g} GiB; read "
                    f"{str(self.records_dir / 'records')!r} with pyarrow.dataset in batches"
                )
            return _Records(read_records(self.records_dir, self.spec))
        raise NoRecordsError(
            f"this result of {self.samples} samples kept only its summary (counts, moments, "
            "histograms); per-sample data needs run(spec, records=True) (with out=DIR: a "
            "Parquet dataset under DIR/records), or jacgeom mc --records"
        )

    def probability(
        self,
        event: NDArray[np.bool_] | Callable[[dict[str, NDArray[Any]]], NDArray[np.bool_]],
        level: float = 0.95,
    ) -> dict[str, float]:
        """P(event) over the samples: the estimate p, the exact Clopper-Pearson interval
        [lo, hi] at ``level`` and the count of samples.

        Parameters
        ----------
        event : (N,) bool array_like, or callable
            One bool per sample (N = :attr:`samples`), or a function of :attr:`data`
            returning one, e.g. ``lambda d: d["layer_exact_ranks"][:, 0] < 4``. A function
            needs per-sample records (NoRecordsError otherwise); probabilities the summary
            holds are in :meth:`summary`.
        level : float, default 0.95
            A real number strictly between 0 and 1.

        Returns
        -------
        dict
            ``p``, ``lo``, ``hi`` (floats) and ``count`` (the samples where ``event`` holds).

        Raises
        ------
        TypeError, ValueError
            Naming ``level`` where it is not a confidence level (checked before ``event``
            is computed).
        ValueError
            Naming ``event`` where it is not of dtype bool or not of shape (N,): an (N, L)
            array would be counted over N L trials, another length over samples that are not
            this run's, and integers would be cast to bool silently.
        """
        level = theory.confidence_level(level)  # before the event is computed
        given = event(self.data) if callable(event) else event
        what = "event returned" if callable(event) else "event is"
        try:
            arr = np.asarray(given)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} not an array of bools: {exc}") from None
        if arr.dtype != np.bool_:
            raise ValueError(
                f"{what} an array of dtype {arr.dtype}; expected one bool per sample, "
                f"dtype bool and shape ({self.samples},) (compare, e.g. d['rank'] < n)"
            )
        if arr.shape != (self.samples,):
            raise ValueError(
                f"{what} an array of shape {arr.shape}; expected one bool per sample of "
                f"this run, shape ({self.samples},)"
            )
        k = int(np.count_nonzero(arr))
        lo, hi = theory.clopper_pearson(k, arr.size, level)
        return {"p": k / arr.size, "lo": lo, "hi": hi, "count": k}

    def theory(self) -> dict[str, float]:
        """The closed forms that apply to this spec (may be empty), floats that
        :meth:`summary` shows under ``"theory"``.

        ``p_exact_rank_deficient``, ``p_any_zeroed`` and ``p_gain_zero`` predict the ``p`` of
        the summary's key of that name, ``active_fraction`` its ``mean``; ``mean_log_gain``
        and ``std_log_gain`` predict ``summary()["log_gain"]["mean"]`` and ``["std"]`` (the
        finite values: given J e_1 != 0); ``log10_cond`` the growth of ``log_cond`` in
        base 10.

        - Zero weights (init "gaussian" or "orthogonal" with ``sigma_w=0``), no residual
          connections: J = 0, so ``p_exact_rank_deficient`` = 1 and ``p_gain_zero`` = 1
          (with spectra); none of the laws below.

        - Exact rank, any activation of jacgeom's registry but relu, Gaussian weights (fresh
          or shared, any init but orthogonal, which is full rank too), no kernel layers:
          full with probability 1, except where a layer is narrower than min(n_0, n_L) or
          a layer normalisation (n_l - 1 per layer) caps it: P(exact rank < n) is then 1.
          phi' vanishes nowhere (gelu and silu only at one irrational point).
        - relu with fresh zero-mean Gaussian weights per sample, weight variance > 0 and
          symmetric biases, no residual connections or normalisation: P(exact rank < n) =
          1 - prod_l P(Binomial(n_l, 1/2) >= n); the mean over layers of the expected
          active fraction (jacgeom.theory.relu_mean_active_fraction): 1/2 with sigma_b > 0,
          and with sigma_b = 0 (1 / L) sum_l 1/2 prod_(j < l) (1 - 2^-n_j), since a layer
          with no active unit passes h = 0 on and every later unit then sits at z = 0,
          where relu' = 0; and for one layer P(any unit zeroed) = 1 - 2^-n_1. With weight
          variance c / fan-in (he: c = 2, lecun: 1, gaussian: sigma_w^2; computed from
          log sigma_w, never sigma_w^2, which leaves the float range), the exact
          finite-width law of log_gain =
          log ||J e_1||^2 (jacgeom.theory.he_relu_log_gain): its mean and standard
          deviation given J e_1 != 0 (``mean_log_gain``, ``std_log_gain``, beside the
          measured ``log_gain`` distribution) and ``p_gain_zero`` = P(J e_1 = 0).
        - Linear networks (identity), square widths d, Gaussian weights (any init but
          orthogonal, whose products have condition number 1): log cond ->
          L (mu_1 - mu_d), mu_i = (ln 2 + digamma((d - i + 1) / 2)) / 2 - ln(d) / 2 (the
          Lyapunov spectrum of Gaussian products; a large-depth limit, given from depth 4
          on), as log10_cond.
        """
        s = self.spec
        w = s.resolved_widths()
        acts = layer_activations(s)
        p = min(w[0], w[-1])
        out: dict[str, float] = {}
        if s.layer != "activation":
            return out
        if s.init in ("gaussian", "orthogonal") and s.sigma_w == 0:
            # Every weight is 0, so J = 0 without residual connections (each layer's
            # Jacobian has W_l as a factor): rank 0 and J e_1 = 0 surely. None of the laws
            # below holds (relu's active fraction, binomial rank law and log-gain law need
            # a weight variance > 0; smooth activations' full rank needs W_l of full rank).
            if not s.residual:
                out["p_exact_rank_deficient"] = 1.0
                if s.spectra:
                    out["p_gain_zero"] = 1.0
            return out
        if "relu" not in acts:
            cap = min(w) if s.norm is None else min(w[0], *(x - 1 for x in w[1:]))
            if s.residual:
                cap = min(w)
            out["p_exact_rank_deficient"] = 0.0 if cap >= p else 1.0
            linear = set(acts) == {"identity"} and s.norm is None and not s.residual
            # Gaussian products only: orthogonal layers multiply to condition number 1.
            linear = linear and s.init != "orthogonal"
            # A large-depth limit: shown from depth 4 on, where it is the growth it predicts.
            if linear and len(set(w)) == 1 and len(w) - 1 >= 4:
                out["log10_cond"] = theory.linear_log_cond(w[0], len(w) - 1) / math.log(10)
            return out
        if (
            s.fresh_weights
            and set(acts) == {"relu"}
            and not s.residual
            and s.norm is None
            and s.init in ("he", "xavier", "lecun", "gaussian")
        ):
            out["active_fraction"] = theory.relu_mean_active_fraction(w, s.sigma_b == 0)
            out["p_exact_rank_deficient"] = theory.p_rank_below(w, p)
            if len(w) == 2:
                out["p_any_zeroed"] = theory.p_any_zeroed(w[1])
            # log of the weight variance times the fan-in, never the variance itself:
            # sigma_w**2 underflows to 0 at sigma_w = 1e-200 and overflows at 1e200.
            log_scale2 = {"he": math.log(2.0), "lecun": 0.0}.get(s.init)
            if s.init == "gaussian":
                # sigma_w > 0 here: sigma_w = 0 returned above
                log_scale2 = 0.0 if s.sigma_w is None else 2.0 * math.log(s.sigma_w)
            if log_scale2 is not None and s.spectra:
                # The law's mean is linear in log(scale2), its variance free of it.
                law = theory.he_relu_log_gain(w, 1.0)
                out["mean_log_gain"] = law["mean"] + (len(w) - 1) * log_scale2
                out["std_log_gain"] = math.sqrt(law["var"])
                out["p_gain_zero"] = law["p_zero"]
        return out

    def summary(self, level: float = 0.95) -> RunSummary:
        """Means, standard deviations and quantiles of every statistic; probabilities with
        exact Clopper-Pearson intervals; the closed forms beside them where known. From the
        merged summary: probabilities and everything integer exact, means and standard
        deviations to rounding, quantiles good to ``bin_width`` (the histogram's bin on the
        asinh scale: a relative bin_width for |x| > 1). The median's interval
        [``median_lo``, ``median_hi``] is the distribution-free one at ``level``
        (jacgeom.theory.median_order_statistics; -inf and inf where the samples are too few
        for the level), its ends widened to the outer edges of their bins, so that it holds
        the interval of the exact order statistics and the median shown; for integer
        statistics (exact counts) it is that interval itself.

        Keys (logs natural; probabilities are dicts ``p``, ``lo``, ``hi``, ``count``;
        distributions are dicts ``mean``, ``std`` (of the finite values),
        ``finite_fraction``, ``q05``, ``q25``, ``median``, ``q75``, ``q95``, ``median_lo``,
        ``median_hi``):

        - ``samples``, ``widths``, ``bin_width``;
        - ``p_exact_rank_deficient``: P(exact rank < n), n = min(n_0, n_L);
        - ``p_rank_deficient``: P(numerical rank < n), the float64 rank of numpy's rule on
          J's exact singular values;
        - ``p_any_zeroed``: P(some unit of some layer is inactive);
        - ``mean_exact_rank`` and ``rank_fraction`` (numerical rank / n): distributions;
        - ``active_fraction``: distribution of the mean fraction of active units;
        - with ``spectra``: distributions ``log_smax``, ``log_smin``, ``log_cond``,
          ``frobenius2``, ``log_volume`` and ``log_gain`` = log ||J e_1||^2, the squared
          gain of the first input direction (-inf where J e_1 = 0, left out of its mean and
          std), and ``p_gain_zero`` = P(J e_1 = 0);
        - ``theory``: :meth:`theory`.

        ``level`` (default 0.95), the confidence level of the probabilities' and the
        medians' intervals, is a real number strictly between 0 and 1 (TypeError or
        ValueError naming it otherwise).
        """
        level = theory.confidence_level(level)
        out = self.merged.summary(self.spec, level)
        out["theory"] = self.theory()
        return cast(RunSummary, out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the spec, the summary, and the per-sample arrays if kept in memory."""
        out: dict[str, Any] = {
            "format": RESULT_FORMAT,
            "spec": self.spec.to_dict(),
            "summary": self.summary(),
        }
        if self.records is not None:
            out["data"] = {k: v.tolist() for k, v in self.records.items()}
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to an .npz file: the spec (JSON), the merged summary's arrays and the
        per-sample arrays if kept in memory."""
        arrays = {f"summary_{k}": v for k, v in self.merged.to_arrays().items()}
        if self.records is not None:
            arrays.update({f"data_{k}": v for k, v in self.records.items()})
        atomic_savez(Path(path), spec=np.array(json.dumps(self.spec.to_dict())), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        with np.load(Path(path), allow_pickle=False) as f:
            spec = Spec.from_dict(json.loads(str(f["spec"])), saved=True)
            summary = {k[8:]: f[k] for k in f.files if k.startswith("summary_")}
            data = {k[5:]: f[k] for k in f.files if k.startswith("data_")}
        return cls(spec, Summary.from_arrays(spec, summary), data or None)


def distribution_summary(x: NDArray[Any], level: float = 0.95) -> dict[str, float]:
    """Mean and standard deviation of the finite values of x, the fraction of them, the
    quantiles 5, 25, 50, 75 and 95% as order statistics, and a distribution-free interval
    for the median at ``level`` (median_lo, median_hi): the order statistics of
    :func:`jacgeom.theory.median_order_statistics` (-inf and inf where n is too small for
    the level)."""
    level = theory.confidence_level(level)
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    # Quantiles as order statistics (inverted CDF): defined for infinite values too.
    n = x.size
    srt = np.sort(x)
    q = (
        [
            srt[min(n - 1, int(math.ceil(f * n)) - 1 if f * n >= 1 else 0)]
            for f in (0.05, 0.25, 0.5, 0.75, 0.95)
        ]
        if n
        else [np.nan] * 5
    )
    nan = float("nan")
    median_lo = median_hi = nan
    if n:
        lo_i, hi_i = theory.median_order_statistics(n, level)
        median_lo = float(srt[lo_i]) if lo_i >= 0 else -math.inf
        median_hi = float(srt[hi_i]) if hi_i < n else math.inf
    return {
        "mean": float(finite.mean()) if finite.size else nan,
        "std": float(finite.std()) if finite.size > 1 else nan,
        "finite_fraction": float(finite.size / n) if n else nan,
        "q05": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "q95": float(q[4]),
        "median_lo": median_lo,
        "median_hi": median_hi,
    }


def atomic_savez(path: Path, **arrays: Any) -> None:
    """np.savez to ``path`` through a temporary file in the same directory, fsynced and
    renamed into place: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
