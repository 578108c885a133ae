"""Geometry during training, for PyTorch models: :class:`GeometryMonitor`.

torch itself is not imported here (the monitor reads the model through
:func:`jacgeom.interop.spec_from_torch`, which imports it when called), and every import
of this module is absolute, so ``jacgeom.torch`` never stands in for the real ``torch``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, TypedDict

import numpy as np
from numpy.typing import NDArray

from jacgeom import _backends, _validation
from jacgeom.interop import spec_from_torch, to_numpy
from jacgeom.network import Network
from jacgeom.report import DEFAULT_SATURATION_TOL, LayerReport, layer_report
from jacgeom.typing import BackendName

__all__ = ["GeometryMonitor", "MonitorRow"]


class MonitorRow(TypedDict):
    """One layer at one recorded step: medians over the whole probe batch, logs natural.

    Every probe sample counts in the medians: a sample whose exact rank is lost has
    log_volume -inf and log_condition +inf, so these medians are infinite where more than
    half the samples lost exact rank (``rank_lost_samples`` says how many did).
    """

    step: int
    layer: int
    activation: str
    dead_fraction: float
    inactive_fraction: float
    saturated_fraction: float
    exact_rank: float
    numerical_rank: float
    full_rank: int
    rank_lost_samples: int
    log_volume: float
    log_condition: float


class GeometryMonitor:
    """Record :meth:`jacgeom.Network.layer_report` of a torch model on a probe batch while
    it trains.

    Parameters
    ----------
    model : torch.nn.Module
        Anything :meth:`jacgeom.Network.from_torch` reads. Its weights are read (detached)
        at each recorded step; the model and its gradients are not touched, and the monitor
        registers no hooks on it. A model with forward hooks or pre-hooks (the old-style
        ``torch.nn.utils.weight_norm`` among them) is refused at the record, as
        ``from_torch`` refuses it; ``torch.nn.utils.parametrizations.weight_norm`` is read.
    probe_X : (B, n_0) array_like or torch.Tensor
        A fixed probe batch.
    every : int, default 100
        :meth:`step` records when its step number is a multiple of ``every``; a Python or
        numpy integer >= 1.
    saturation_tol : float, default 1e-2
        A finite number >= 0, as :func:`jacgeom.layer_report` takes it.
    backend : {"auto", "cpp", "numba", "numpy"}, default "auto"

    Raises
    ------
    TypeError
        When ``every`` is not an integer (bool included) or ``saturation_tol`` not a real
        number.
    ValueError
        When ``every`` < 1 or ``saturation_tol`` is negative, NaN or infinite.

    Attributes
    ----------
    reports : list of (int, LayerReport)
        The recorded steps and their reports.

    Examples
    --------
    >>> import torch, jacgeom.torch  # doctest: +SKIP
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                             torch.nn.Linear(8, 2))  # doctest: +SKIP
    >>> monitor = jacgeom.torch.GeometryMonitor(model, torch.randn(64, 4), every=10)
    ... # doctest: +SKIP
    >>> for step in range(30):  # doctest: +SKIP
    ...     ...  # loss.backward(); optimizer.step()
    ...     monitor.step(step)
    >>> [row["exact_rank"] for row in monitor.table() if row["layer"] == 0]  # doctest: +SKIP
    [3.0, 3.0, 3.0]
    """

    def __init__(
        self,
        model: Any,
        probe_X: Any,
        every: int = 100,
        saturation_tol: float = DEFAULT_SATURATION_TOL,
        backend: BackendName = "auto",
    ) -> None:
        # Checked here, not at the first record: a bad setting must not surface mid-training.
        every = _validation.integer("every", every)
        if every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every}")
        tol = _validation.real("saturation_tol", saturation_tol)
        if not (math.isfinite(tol) and tol >= 0):
            shown = _validation.shown(saturation_tol)
            raise ValueError(f"saturation_tol must be a finite number >= 0, got {shown}")
        self.model = model
        # Copied once: the probe batch must not change under the monitor.
        self.probe_X: NDArray[Any] = np.array(to_numpy(probe_X), copy=True)
        self.every = every
        self.saturation_tol = tol
        _backends.resolve(backend)  # an unknown name is refused here, not mid-training
        self.backend = backend
        self.reports: list[tuple[int, LayerReport]] = []
        self._calls = 0

    def step(self, step: int | None = None) -> LayerReport | None:
        """Call once per training step; records (and returns the report) every
        ``every`` steps, counting from 0. ``step`` defaults to the number of calls so far."""
        s = self._calls if step is None else _validation.integer("step", step)
        self._calls += 1
        if s % self.every:
            return None
        return self.record(s)

    def record(self, step: int) -> LayerReport:
        """Record the report now, under the given step number."""
        step = _validation.integer("step", step)
        if self.reports:
            # The first record warned of an approximate conversion (if any): not every step.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "approximate conversion", UserWarning)
                spec = spec_from_torch(self.model)
        else:
            spec = spec_from_torch(self.model)
        net = Network(**spec.network_kwargs())
        X = self.probe_X.astype(net.dtype, copy=False)
        rep = layer_report(
            net,
            X,
            saturation_tol=self.saturation_tol,
            backend=self.backend,
            names=spec.names,
            notes=spec.notes,
        )
        self.reports.append((step, rep))
        return rep

    def table(self) -> list[MonitorRow]:
        """One row per (recorded step, layer): medians over the whole probe batch
        (:class:`MonitorRow`; infinite where more than half the samples lost exact rank)."""
        rows: list[MonitorRow] = []
        for step, rep in self.reports:
            for g in rep.layers:
                rows.append(
                    MonitorRow(
                        step=step,
                        layer=g.layer,
                        activation=g.activation,
                        dead_fraction=g.dead_fraction,
                        inactive_fraction=g.inactive_fraction,
                        saturated_fraction=g.saturated_fraction,
                        exact_rank=g.exact_rank.median,
                        numerical_rank=g.numerical_rank.median,
                        full_rank=g.full_rank,
                        rank_lost_samples=g.rank_lost_samples,
                        log_volume=g.log_volume.median,
                        log_condition=g.log_condition.median,
                    )
                )
        return rows

    def series(self, quantity: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(steps (S,), values (S, L)) of one column of :meth:`table`, for plotting.

        Values of log_volume and log_condition are -inf and +inf where more than half the
        probe samples lost exact rank: matplotlib leaves such points out of a line, so mark
        them (for instance at the axis edge) rather than let them vanish."""
        if quantity not in MonitorRow.__annotations__ or quantity in ("step", "layer"):
            raise ValueError(
                f"unknown quantity {quantity!r}; valid choices: "
                + ", ".join(k for k in MonitorRow.__annotations__ if k not in ("step", "layer"))
            )
        if quantity == "activation":
            raise ValueError("activation is a label, not a series")
        steps = np.array([s for s, _ in self.reports], dtype=np.int64)
        values = np.array(
            [[float(_value(g, quantity)) for g in rep.layers] for _, rep in self.reports],
            dtype=np.float64,
        ).reshape(len(self.reports), -1)
        return steps, values


def _value(g: Any, quantity: str) -> float:
    value = getattr(g, quantity)
    return float(value.median) if hasattr(value, "median") else float(value)
