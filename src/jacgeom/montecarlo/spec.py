"""The Monte Carlo experiment: :class:`Spec`, a plain, serialisable description of what is
drawn (widths, activations, initialisation, inputs, layer kind) and what is recorded."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..activations import activation as _lookup

__all__ = ["Spec", "layer_activations"]

INPUTS = ("gaussian", "sphere", "manifold")
MANIFOLDS = ("linear", "curved")
LAYERS = ("activation", "kernel")
KERNELS = ("rbf", "laplacian", "polynomial")
INITS = ("he", "xavier", "lecun", "orthogonal", "gaussian")


@dataclasses.dataclass(frozen=True)
class Spec:
    """One Monte Carlo experiment.

    Parameters
    ----------
    widths : tuple of int, optional
        [n_0, ..., n_L]. Alternatively give ``width`` and ``depth``
        (widths = [width] * (depth + 1)).
    width, depth : int, optional
    activation : str or tuple of str, default "relu"
        One activation, or one per layer.
    init : {"he", "xavier", "lecun", "orthogonal", "gaussian"}, default "he"
    sigma_w : float, optional
        Gain for "gaussian" and "orthogonal".
    sigma_b : float, default 0.0
        Biases iid N(0, sigma_b^2).
    residual : bool, default False
    norm : {None, "layer"}, default None
    inputs : {"gaussian", "sphere", "manifold"}, default "gaussian"
        x ~ N(0, I); uniform on the unit sphere; or on a random ``manifold_dim``-dimensional
        manifold through the origin region: "linear" (a random subspace, Gaussian coordinates)
        or "curved" (the image of Gaussian coordinates under a fixed random smooth map, a
        sine embedding), fixed for the whole experiment.
    manifold_dim : int, default 2
    manifold : {"linear", "curved"}, default "curved"
    fresh_weights : bool, default True
        Every sample draws its own network (the model of THEORY.md's closed forms); False
        shares one network drawn from the seed.
    layer : {"activation", "kernel"}, default "activation"
        "kernel" replaces every layer by a kernel layer h -> A k(h) of the same widths
        (jacgeom.KernelLayer, the seed's alternative): ``centers`` Gaussian centers
        N(0, I) and coefficients N(0, 1 / centers); activation, init, sigma_w and sigma_b
        are then not used. A sweep over layer=["activation", "kernel"] puts the two side
        by side.
    kernel : {"rbf", "laplacian", "polynomial"}, default "rbf"
    centers : int, optional
        Centers per kernel layer (default n_{l-1}, the layer's input width).
    gamma : float, optional
        Kernel scale (default 1 / n_{l-1}); polynomial kernels are (x . c + 1)^3.
    layer_ranks : bool, default True
        Record the rank of each layer's Jacobian (``layer_ranks`` of the data). False leaves
        them out: with them go their certificates and the weights that only they need
        (those of columns that meet a dead unit of the layer below, then not drawn at all),
        about 40% of the time of a deep relu run with fresh weights. Every other statistic
        is the same either way: those weights come from a stream of their own.
    spectra : bool, default True
        Record the singular-value statistics of the end-to-end Jacobian (log_smax, log_smin,
        log_cond, frobenius2, log_volume). False records the ranks and active counts only,
        the job of a rank-collapse study; the ranks are the same either way. On the cpp
        backend this saves the largest singular value of every sample whose rank a
        certificate settles (about 30% of a one-layer relu run); the other backends take a
        full SVD for the rank anyway.
    samples : int, default 10000
    seed : int, default 0
    chunk_size : int, default 2000

    Examples
    --------
    >>> spec = Spec(width=4, depth=2, activation="tanh", samples=100)
    >>> spec.widths, spec.n_chunks
    ((4, 4, 4), 1)
    >>> spec.replace(depth=3).widths
    (4, 4, 4, 4)
    """

    widths: tuple[int, ...] | None = None
    width: int | None = None
    depth: int | None = None
    activation: str | tuple[str, ...] = "relu"
    init: str = "he"
    sigma_w: float | None = None
    sigma_b: float = 0.0
    residual: bool = False
    norm: str | None = None
    inputs: str = "gaussian"
    manifold_dim: int = 2
    manifold: str = "curved"
    fresh_weights: bool = True
    layer: str = "activation"
    kernel: str = "rbf"
    centers: int | None = None
    gamma: float | None = None
    layer_ranks: bool = True
    spectra: bool = True
    samples: int = 10000
    seed: int = 0
    chunk_size: int = 2000

    def __post_init__(self) -> None:
        # Normalised to explicit widths, so equal experiments compare (and serialise) equal.
        if self.widths is None and self.width is not None and self.depth is not None:
            object.__setattr__(self, "widths", (int(self.width),) * (int(self.depth) + 1))
            object.__setattr__(self, "width", None)
            object.__setattr__(self, "depth", None)
        if self.widths is not None:
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if isinstance(self.activation, list):
            object.__setattr__(self, "activation", tuple(self.activation))
        for name in ("layer_ranks", "spectra"):  # numpy bools become bools (JSON)
            if isinstance(getattr(self, name), np.bool_):
                object.__setattr__(self, name, bool(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field that is not valid (TypeError for a
        layer_ranks or spectra that is not a bool)."""
        w = self.resolved_widths()
        if len(w) < 2 or min(w) < 1:
            raise ValueError(f"widths must hold at least two positive integers, got {list(w)}")
        acts = (self.activation,) if isinstance(self.activation, str) else self.activation
        for a in acts:
            _lookup(a)
        if not isinstance(self.activation, str) and len(acts) != len(w) - 1:
            raise ValueError(f"activation has {len(acts)} entries for {len(w) - 1} layers")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid choices: {', '.join(INITS)}")
        if self.layer not in LAYERS:
            raise ValueError(f"unknown layer {self.layer!r}; valid choices: {', '.join(LAYERS)}")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; valid choices: {', '.join(KERNELS)}")
        if self.centers is not None and self.centers < 1:
            raise ValueError(f"centers must be >= 1, got {self.centers}")
        if self.gamma is not None and not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma}")
        if self.layer == "kernel" and self.norm is not None:
            raise ValueError("kernel layers have no pre-activations to normalise: use norm=None")
        if self.residual and len(set(w)) != 1:
            raise ValueError(f"residual networks need equal widths, got {list(w)}")
        if self.norm not in (None, "layer"):
            raise ValueError(f"unknown norm {self.norm!r}; valid choices: None, 'layer'")
        if self.inputs not in INPUTS:
            raise ValueError(f"unknown inputs {self.inputs!r}; valid choices: {', '.join(INPUTS)}")
        if self.manifold not in MANIFOLDS:
            raise ValueError(f"unknown manifold {self.manifold!r}; valid choices: linear, curved")
        if self.inputs == "manifold" and not 1 <= self.manifold_dim <= w[0]:
            raise ValueError(f"manifold_dim must be in [1, {w[0]}], got {self.manifold_dim}")
        for name in ("layer_ranks", "spectra"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.samples < 1 or self.chunk_size < 1:
            raise ValueError("samples and chunk_size must be >= 1")
        if not (math.isfinite(self.sigma_b) and self.sigma_b >= 0):
            raise ValueError(f"sigma_b must be a finite number >= 0, got {self.sigma_b}")
        if self.sigma_w is not None and not (math.isfinite(self.sigma_w) and self.sigma_w >= 0):
            raise ValueError(f"sigma_w must be a finite number >= 0, got {self.sigma_w}")

    def resolved_widths(self) -> tuple[int, ...]:
        """[n_0, ..., n_L] as a tuple."""
        if self.widths is not None:
            return self.widths
        if self.width is None or self.depth is None:
            raise ValueError("give widths, or width and depth")
        return (int(self.width),) * (int(self.depth) + 1)

    @property
    def n_chunks(self) -> int:
        """Chunks of ``chunk_size`` samples (the last one may be shorter)."""
        return -(-self.samples // self.chunk_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, widths explicit (the inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.resolved_widths())
        d["width"] = d["depth"] = None
        if isinstance(self.activation, tuple):
            d["activation"] = list(self.activation)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        """The spec of :meth:`to_dict`'s fields; ValueError naming an unknown field."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(
                f"unknown spec field {unknown[0]!r}; valid fields: {', '.join(sorted(fields))}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed; ``width`` / ``depth`` rebuild uniform widths."""
        d = self.to_dict()
        if "width" in changes or "depth" in changes:
            w = self.resolved_widths()
            width = changes.pop("width", w[0])
            depth = changes.pop("depth", len(w) - 1)
            d["widths"] = [int(width)] * (int(depth) + 1)
        d.update(changes)
        return Spec.from_dict(d)


def layer_activations(spec: Spec) -> list[str]:
    """The activation name of each of the L layers."""
    L = len(spec.resolved_widths()) - 1
    return [spec.activation] * L if isinstance(spec.activation, str) else list(spec.activation)
