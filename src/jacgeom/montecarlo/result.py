"""The result of a Monte Carlo run: per-sample arrays, their summary with intervals, the
closed forms that apply, and storage (.npz, JSON-ready dicts)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import theory
from .spec import Spec, layer_activations
from .statistics import SPECTRA

__all__ = ["RESULT_FORMAT", "Result", "atomic_savez", "distribution_summary"]

# Version of Result.to_dict's layout.
RESULT_FORMAT = 1


@dataclasses.dataclass
class Result:
    """Per-sample statistics of one experiment, and their summary.

    Attributes
    ----------
    spec : Spec
    data : dict of str to ndarray
        Per-sample arrays (keys and meanings: the table of jacgeom.montecarlo's docstring),
        samples in chunk order.
    """

    spec: Spec
    data: dict[str, NDArray[Any]]

    @property
    def samples(self) -> int:
        """Number of samples N."""
        return int(self.data["rank"].shape[0])

    def probability(self, event: NDArray[np.bool_], level: float = 0.95) -> dict[str, float]:
        """P(event) over the samples, event (N,) bool: the estimate p, the exact
        Clopper-Pearson interval [lo, hi] at ``level`` and the count of samples."""
        k = int(np.count_nonzero(event))
        lo, hi = theory.clopper_pearson(k, event.size, level)
        return {"p": k / event.size if event.size else float("nan"), "lo": lo, "hi": hi, "count": k}

    def theory(self) -> dict[str, float]:
        """The closed forms that apply to this spec (may be empty): keys as in
        :meth:`summary`.

        - Exact rank, any activation of jacgeom's registry but relu, Gaussian weights (fresh
          or shared, any init but orthogonal, which is full rank too), no kernel layers:
          full with probability 1, except where a layer is narrower than min(n_0, n_L) or
          a layer normalisation (n_l - 1 per layer) caps it: P(exact rank < n) is then 1.
          phi' vanishes nowhere (gelu and silu only at one irrational point).
        - relu with fresh zero-mean Gaussian weights per sample and symmetric biases, no
          residual connections or normalisation: P(exact rank < n) =
          1 - prod_l P(Binomial(n_l, 1/2) >= n), the active fraction 1/2, and for one layer
          P(any unit zeroed) = 1 - 2^-n_1.
        - Linear networks (identity), square widths d, Gaussian weights: log cond ->
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
        if "relu" not in acts:
            cap = min(w) if s.norm is None else min(w[0], *(x - 1 for x in w[1:]))
            if s.residual:
                cap = min(w)
            out["p_exact_rank_deficient"] = 0.0 if cap >= p else 1.0
            linear = set(acts) == {"identity"} and s.norm is None and not s.residual
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
            out["active_fraction"] = 0.5
            out["p_exact_rank_deficient"] = 1.0 - theory.p_rank_at_least(w, p)
            if len(w) == 2:
                out["p_any_zeroed"] = theory.p_any_zeroed(w[1])
        return out

    def summary(self, level: float = 0.95) -> dict[str, Any]:
        """Means, standard deviations and quantiles of every statistic; probabilities with
        exact Clopper-Pearson intervals; the closed forms beside them where known.

        ``p_exact_rank_deficient``: P(exact rank < n), n = min(n_0, n_L);
        ``p_rank_deficient``: P(numerical rank < n), the float64 rank of numpy's rule on
        J's exact singular values; ``mean_exact_rank`` and ``rank_fraction`` (numerical
        rank / n). Logs are natural.
        """
        w = self.spec.resolved_widths()
        p = min(w[0], w[-1])
        out: dict[str, Any] = {"samples": self.samples, "widths": list(w)}
        if "exact_rank" in self.data:
            out["p_exact_rank_deficient"] = self.probability(self.data["exact_rank"] < p, level)
            out["mean_exact_rank"] = distribution_summary(self.data["exact_rank"])
        out["p_rank_deficient"] = self.probability(self.data["rank"] < p, level)
        out["p_any_zeroed"] = self.probability(
            np.any(self.data["active_counts"] < np.array(w[1:]), axis=1), level
        )
        frac = self.data["active_counts"] / np.array(w[1:])
        out["active_fraction"] = distribution_summary(frac.mean(axis=1))
        out["rank_fraction"] = distribution_summary(self.data["rank"] / p)
        for key in SPECTRA:
            if key in self.data:
                out[key] = distribution_summary(self.data[key])
        out["theory"] = self.theory()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "spec": self.spec.to_dict(),
            "data": {k: v.tolist() for k, v in self.data.items()},
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to an .npz file (spec as JSON inside)."""
        arrays = {f"data_{k}": v for k, v in self.data.items()}
        atomic_savez(Path(path), spec=np.array(json.dumps(self.spec.to_dict())), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        with np.load(Path(path), allow_pickle=False) as f:
            spec = Spec.from_dict(json.loads(str(f["spec"])))
            data = {k[5:]: f[k] for k in f.files if k.startswith("data_")}
        return cls(spec, data)


def distribution_summary(x: NDArray[Any]) -> dict[str, float]:
    """Mean and standard deviation of the finite values of x, the fraction of them, the
    quantiles 5, 25, 50, 75 and 95% as order statistics, and a distribution-free 95%
    interval for the median (median_lo, median_hi)."""
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
    # Interval for the median from the binomial order statistics (distribution-free).
    half = 1.96 * math.sqrt(n) / 2
    lo_i, hi_i = max(0, int(math.floor(n / 2 - half))), min(n - 1, int(math.ceil(n / 2 + half)))
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size > 1 else float("nan"),
        "finite_fraction": float(finite.size / n) if n else float("nan"),
        "q05": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "q95": float(q[4]),
        "median_lo": float(srt[lo_i]) if n else float("nan"),
        "median_hi": float(srt[hi_i]) if n else float("nan"),
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
