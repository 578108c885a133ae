"""The Monte Carlo experiment: :class:`Spec`, a plain, serialisable description of what is
drawn (widths, activations, initialisation, inputs, layer kind) and what is recorded."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from .._validation import flag, integer, real
from ..activations import activation as _lookup

__all__ = [
    "Spec",
    "bytes_per_sample",
    "chunk_bytes",
    "layer_activations",
    "memory_limit",
]

INPUTS = ("gaussian", "sphere", "manifold")
MANIFOLDS = ("linear", "curved")
LAYERS = ("activation", "kernel")
KERNELS = ("rbf", "laplacian", "polynomial")
INITS = ("he", "xavier", "lecun", "orthogonal", "gaussian")
_BOOLS = ("residual", "fresh_weights", "layer_ranks", "spectra")
# What a chunk holds beside its per-sample arrays: the blocks its samples go through the
# layers in (statistics._BLOCK_BYTES of matrices, a few such arrays alive at once).
_CHUNK_OVERHEAD = 256 << 20


@dataclasses.dataclass(frozen=True)
class Spec:
    """One Monte Carlo experiment.

    Parameters
    ----------
    widths : tuple of int, optional
        [n_0, ..., n_L]. Alternatively give ``width`` and ``depth``
        (widths = [width] * (depth + 1)), never both.
    width, depth : int, optional
    activation : str or tuple of str, default "relu"
        One activation, or one per layer.
    init : {"he", "xavier", "lecun", "orthogonal", "gaussian"}, default "he"
    sigma_w : float, optional
        Gain for "gaussian" (weight std sigma_w / sqrt(fan-in)) and "orthogonal"; the
        other inits fix the scale themselves and refuse it.
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
        Only with inputs="manifold" (other values are refused otherwise).
    fresh_weights : bool, default True
        Every sample draws its own network (the model of the closed forms in docs/theory.md,
        "Closed forms for relu rank collapse"); False shares one network drawn from the seed.
    layer : {"activation", "kernel"}, default "activation"
        "kernel" replaces every layer by a kernel layer h -> A k(h) of the same widths
        (jacgeom.KernelLayer, the seed's alternative): ``centers`` Gaussian centers
        N(0, I) and coefficients N(0, 1 / centers); activation, init, sigma_w and sigma_b
        are then not used and must keep their defaults (and kernel, centers and gamma keep
        theirs with activation layers). A sweep over layer=["activation", "kernel"] puts
        the two side by side.
    kernel : {"rbf", "laplacian", "polynomial"}, default "rbf"
    centers : int, optional
        Centers per kernel layer (default n_{l-1}, the layer's input width).
    gamma : float, optional
        Kernel scale (default 1 / n_{l-1}); polynomial kernels are (x . c + 1)^3 and
        refuse it.
    layer_ranks : bool, default True
        Record each layer's ranks (``layer_numerical_ranks``: the float64 rank of the
        layer's own Jacobian; ``layer_exact_ranks``: the exact rank of the partial product
        after it). False leaves
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
        # Types first, so every later comparison is between numbers of the right kind (a
        # float width is refused, never truncated; a numpy integer becomes an int, for JSON).
        self._normalise_types()
        if self.widths is not None and (self.width is not None or self.depth is not None):
            # Which one wins would be a guess; the two differ in equality but not in hash.
            given = " and ".join(k for k in ("width", "depth") if getattr(self, k) is not None)
            raise ValueError(f"widths gives every width: drop {given}, or give widths=None")
        # Normalised to explicit widths, so equal experiments compare (and serialise) equal.
        if self.widths is None and self.width is not None and self.depth is not None:
            object.__setattr__(self, "widths", (self.width,) * (self.depth + 1))
            object.__setattr__(self, "width", None)
            object.__setattr__(self, "depth", None)
        self.validate()

    def _normalise_types(self) -> None:
        """Check every field's type (TypeError naming the field) and store plain Python
        values: numpy integers as int, numpy bools as bool, sequences as tuples."""
        for name in _BOOLS:
            object.__setattr__(self, name, flag(name, getattr(self, name)))
        for name in ("samples", "seed", "chunk_size", "manifold_dim"):
            object.__setattr__(self, name, integer(name, getattr(self, name)))
        for name in ("width", "depth", "centers"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, integer(name, getattr(self, name)))
        if self.widths is not None:
            if isinstance(self.widths, (str, bytes)) or not hasattr(self.widths, "__iter__"):
                raise TypeError(
                    f"widths must be a sequence of ints, got {type(self.widths).__name__}"
                )
            widths = tuple(integer(f"widths[{i}]", w) for i, w in enumerate(self.widths))
            object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "sigma_b", real("sigma_b", self.sigma_b))
        for name in ("sigma_w", "gamma"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, real(name, getattr(self, name)))
        if isinstance(self.activation, (list, tuple)):
            object.__setattr__(self, "activation", tuple(self.activation))
            for a in self.activation:
                if not isinstance(a, str):
                    raise TypeError(f"activation entries must be str, got {type(a).__name__}")
        elif not isinstance(self.activation, str):
            raise TypeError(
                f"activation must be a str or a sequence of str, got "
                f"{type(self.activation).__name__}"
            )
        for name in ("init", "inputs", "manifold", "layer", "kernel"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {type(getattr(self, name)).__name__}")
        if self.norm is not None and not isinstance(self.norm, str):
            raise TypeError(f"norm must be None or a str, got {type(self.norm).__name__}")

    def validate(self) -> None:
        """Raise ValueError naming the first field that is not valid.

        Types are checked when the Spec is built (TypeError naming the field: bools are
        bools, counts and seeds ints, scales real numbers); this checks ranges and
        combinations (fields the experiment would ignore are refused, as the command line
        refuses their flags), including that one chunk's arrays fit in memory
        (:func:`chunk_bytes` against :func:`memory_limit`).
        """
        w = self.resolved_widths()
        if len(w) < 2 or min(w) < 1:
            raise ValueError(f"widths must hold at least two positive integers, got {list(w)}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed}")
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
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not (math.isfinite(self.sigma_b) and self.sigma_b >= 0):
            raise ValueError(f"sigma_b must be a finite number >= 0, got {self.sigma_b}")
        if self.sigma_w is not None and not (math.isfinite(self.sigma_w) and self.sigma_w >= 0):
            raise ValueError(f"sigma_w must be a finite number >= 0, got {self.sigma_w}")
        self._validate_used_fields()
        need, limit = chunk_bytes(self), memory_limit()
        if need > limit:
            raise ValueError(
                f"chunk_size={self.chunk_size} needs about {_gib(need)} per chunk "
                f"({bytes_per_sample(self)} bytes per sample, twice while a chunk is "
                f"assembled), more than the memory limit of {_gib(limit)} (this machine's "
                f"memory); use a smaller chunk_size"
            )

    def _validate_used_fields(self) -> None:
        """ValueError naming the fields that this experiment would not use (the command
        line refuses the same flags): a field given but ignored makes two specs of the same
        experiment compare unequal, and tells the reader of a spec something false."""
        unused = _unused_fields(dataclasses.asdict(self))
        if unused:
            raise ValueError(unused[0][1])

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
    def from_dict(cls, d: dict[str, Any], saved: bool = False) -> Spec:
        """The spec of :meth:`to_dict`'s fields; ValueError naming an unknown field.

        ``saved=True`` reads a spec that an earlier version wrote, which accepted fields
        the experiment did not use (sigma_w with he init, say): they are set back to their
        defaults, which describes the same experiment."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(
                f"unknown spec field {unknown[0]!r}; valid fields: {', '.join(sorted(fields))}"
            )
        if saved:
            defaults = {f.name: f.default for f in dataclasses.fields(cls)}
            d = dict(d)
            for names, _ in _unused_fields({**defaults, **d}):
                d.update({k: defaults[k] for k in names})
        return cls(**d)

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed; ``width`` / ``depth`` rebuild uniform widths."""
        d = self.to_dict()
        if "width" in changes or "depth" in changes:
            w = self.resolved_widths()
            width = changes.pop("width", w[0])
            depth = changes.pop("depth", len(w) - 1)
            # Spec checks the types: a float width is refused there, not truncated here.
            if isinstance(depth, (int, np.integer)) and not isinstance(depth, bool):
                d["widths"] = [width] * (int(depth) + 1)
            else:
                d["widths"], d["width"], d["depth"] = None, width, depth
        d.update(changes)
        return Spec.from_dict(d)


def _unused_fields(values: dict[str, Any]) -> list[tuple[list[str], str]]:
    """The fields of a spec's ``values`` that its experiment would not use, each group with
    the message that refuses it."""
    defaults = {f.name: f.default for f in dataclasses.fields(Spec)}

    def changed(*names: str) -> list[str]:
        return [k for k in names if values[k] != defaults[k]]

    out: list[tuple[list[str], str]] = []
    if values["layer"] == "kernel":
        ignored = changed("activation", "init", "sigma_w", "sigma_b")
        if ignored:
            out.append(
                (
                    ignored,
                    f"{', '.join(ignored)}: not used by kernel layers (layer='kernel' draws "
                    "h -> A k(h)); leave them at their defaults",
                )
            )
        if values["kernel"] == "polynomial" and values["gamma"] is not None:
            out.append(
                (
                    ["gamma"],
                    "gamma: not used by the polynomial kernel (x . c + 1)^3; give gamma=None",
                )
            )
    else:
        ignored = changed("kernel", "centers", "gamma")
        if ignored:
            out.append(
                (
                    ignored,
                    f"{', '.join(ignored)}: only for kernel layers; give layer='kernel' or "
                    "leave them at their defaults",
                )
            )
    if values["sigma_w"] is not None and values["init"] not in ("gaussian", "orthogonal"):
        out.append(
            (
                ["sigma_w"],
                f"sigma_w is the gain of init='gaussian' or 'orthogonal'; init="
                f"{values['init']!r} fixes the weights' scale itself: give sigma_w=None",
            )
        )
    if values["inputs"] != "manifold":
        ignored = changed("manifold_dim", "manifold")
        if ignored:
            out.append(
                (
                    ignored,
                    f"{', '.join(ignored)}: only with inputs='manifold' (inputs="
                    f"{values['inputs']!r}); leave them at their defaults",
                )
            )
    return out


def layer_activations(spec: Spec) -> list[str]:
    """The activation name of each of the L layers."""
    L = len(spec.resolved_widths()) - 1
    return [spec.activation] * L if isinstance(spec.activation, str) else list(spec.activation)


def bytes_per_sample(spec: Spec) -> int:
    """Bytes of the per-sample arrays one sample records (int64 and float64 entries):
    active counts, and with ``layer_ranks`` the two layer ranks, per layer; the two ranks;
    with ``spectra`` the six statistics of the spectrum and gain (statistics.SPECTRA)."""
    L = len(spec.resolved_widths()) - 1
    entries = L * (3 if spec.layer_ranks else 1) + 2 + (6 if spec.spectra else 0)
    return 8 * entries


def chunk_bytes(spec: Spec) -> int:
    """Estimated peak bytes of one chunk: its per-sample arrays twice (the blocks' arrays and
    their concatenation are alive together) and the working set of its blocks."""
    return 2 * min(spec.chunk_size, spec.samples) * bytes_per_sample(spec) + _CHUNK_OVERHEAD


def memory_limit() -> int:
    """The memory a chunk may use: this machine's physical memory (os.sysconf), or 2**40
    bytes where the platform does not tell."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 1 << 40


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"
