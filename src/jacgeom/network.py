"""End-to-end Jacobians of deep networks: J(x) = A_L ... A_1 with A_l the layer Jacobians.

A layer is h -> phi(W h + b), optionally with layer normalisation of z before phi
(norm="layer") and a residual connection h -> h + phi(...) (residual=True), so
A_l = [I +] D_l [J_N(z_l)] W_l; or a kernel layer h -> [h +] A k(h)
(jacgeom.KernelLayer), whose Jacobian A grad k(h) is dense and per sample. The compiled
backends compute, chunk by chunk of samples:

- dense layers: one BLAS gemm per layer for all samples of the chunk (the weights are
  shared), in whichever order is cheaper: from the input side (cost sum_l n_l n_{l-1} n_0
  per sample) or from the output side (n_L sum_l n_l n_{l-1});
- plain layers (backend "cpp"): per sample in C++, rows of W_l scaled by phi' as they are
  gathered, and only the active sub-blocks W_l[S_l, S_{l-1}] when phi' vanishes (about a
  quarter of the dense flops for relu); the numba backend uses the dense path;
- reductions (singular values, ranks, norms, log-determinants) stream over chunks whose
  size follows ``memory_budget`` (bytes; peak extra memory is O(chunk x max width^2));
- log singular values and log|det| propagate a graded orthonormal frame (QR with rows
  sorted by size and column pivoting, Loh et al.'s stratification) and never overflow, at
  any depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _backends, _dispatch, _frame, _products, _results, _validation
from .activations import Activation
from .activations import activation as _lookup
from .kernel_layer import KernelLayer
from .reference import graded as _ref_graded
from .reference import network as _ref
from .typing import ActivationName, BackendName

__all__ = ["Network"]

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]
# One activation for every layer, or one per layer (None at a kernel layer's place).
Activations = ActivationName | Activation | Sequence[ActivationName | Activation | None]
DenseActivations = ActivationName | Activation | Sequence[ActivationName | Activation]

DEFAULT_MEMORY_BUDGET = 256 * 2**20
# Network.jacobian at one input runs the C-level API's per-sample code (bit for bit its
# results) up to this width: there its scalar loops beat the batched path's fixed costs;
# wider, the batched path's tiled products win (measurements in docs/benchmarks.md).
ONE_INPUT_MAX_WIDTH = 32
# |phi'| of every built-in activation is at most 1.13 (gelu's 1.1290 is the largest;
# softplus' is at most 1 whatever its beta), except leaky_relu's and elu's alpha.
_DERIVATIVE_BOUND = 1.13
_INITS = ("he", "xavier", "lecun", "orthogonal", "gaussian")


class Network:
    """A feed-forward network of pointwise-activation layers, and its Jacobian geometry.

    Parameters
    ----------
    weights : sequence of (n_l, n_{l-1}) array_like or KernelLayer
        W_1, ..., W_L; shapes must chain. A :class:`jacgeom.KernelLayer` (shape ``output_dim`` x
        ``input_dim``) in place of W_l makes layer l the kernel layer
        h -> A k(h): no bias, no activation, every unit live (its active count is n_l and
        its "pre-activation" is its output), so activation and kernel layers mix in one
        network.
    biases : sequence of (n_l,) array_like, optional
        b_1, ..., b_L (zeros when omitted); None at the place of a kernel layer.
    activation : str, Activation, or a sequence of them (one per layer), default "relu"
        Not used by kernel layers (a per-layer list may hold None there).
    residual : bool or sequence of bool, default False
        Layers h -> h + phi(W h + b) (h -> h + A k(h) for kernel layers): True for every
        layer, or one flag per layer (a residual MLP with plain input and output layers is
        ``[False, True, ..., True, False]``). A residual layer must be square.
    norm : {None, "layer"} or a sequence of them (one per layer), default None
        Layer normalisation of z before phi: N(z) = (z - mean(z)) / sqrt(var(z) + norm_eps)
        (the biased variance, as torch.nn.LayerNorm), then gamma_l * N(z) + beta_l where
        ``norm_weights`` / ``norm_biases`` are given; on every layer, or on the layers whose
        entry is "layer" (an MLP whose hidden layers are normalised and whose output layer
        is not: ``["layer", "layer", None]``). Not on kernel layers.
    norm_eps : float, default 1e-5
    norm_weights, norm_biases : sequence of (n_l,) array_like, optional
        The normalisation's affine parameters gamma_l and beta_l (torch.nn.LayerNorm's
        ``weight`` and ``bias``), one per layer, None at layers without normalisation.
        Omitted (or None at a normalised layer): gamma = 1, beta = 0. A unit with
        gamma_i = 0 has a zero row in its layer's Jacobian D diag(gamma) J_N W, so it
        removes rank exactly, as a dead relu unit does.
    memory_budget : int, optional
        Bytes of temporary memory a reduction may use (default 256 MiB); the chunk of
        samples processed at once is chosen from it.
    check_finite : bool, default True

    Notes
    -----
    The network computes in one dtype, float64 unless every weight, bias and
    normalisation parameter is float32 (``Network.dtype``). Its parameters are copied and
    rounded to it when it is built, and inputs X are rounded to it at every call: a
    float32 network given float64 X computes at the float32 X (unlike the layer functions,
    which compute in float64 where any input is float64). Finite X beyond float32's
    largest value is a ValueError (the cast would make it infinite); values below its
    smallest subnormal round to zero, as in any float32 computation.

    Examples
    --------
    >>> import numpy as np, jacgeom
    >>> net = jacgeom.Network.random([4, 8, 8, 3], activation="tanh", seed=0)
    >>> X = np.random.default_rng(1).standard_normal((5, 4))
    >>> net.jacobian(X).shape
    (5, 3, 4)
    >>> net.rank(X).tolist()
    [3, 3, 3, 3, 3]
    """

    def __init__(
        self,
        weights: Sequence[ArrayLike],
        biases: Sequence[ArrayLike] | None = None,
        activation: Activations = "relu",
        residual: bool | Sequence[bool] = False,
        norm: str | None | Sequence[str | None] = None,
        norm_eps: float = 1e-5,
        memory_budget: int | None = None,
        check_finite: bool = True,
        norm_weights: Sequence[ArrayLike | None] | None = None,
        norm_biases: Sequence[ArrayLike | None] | None = None,
    ) -> None:
        if isinstance(weights, np.ndarray) or not isinstance(weights, Sequence) or not weights:
            raise TypeError("weights must be a non-empty list of 2-D arrays, one per layer")
        kernel = [isinstance(W, KernelLayer) for W in weights]
        Ws: list[Any] = [
            W if k else _validation.as_float_array(W, f"weights[{i}]")
            for i, (W, k) in enumerate(zip(weights, kernel, strict=True))
        ]
        shapes = []
        for i, W in enumerate(Ws):
            if kernel[i]:
                shapes.append((W.output_dim, W.input_dim))
            else:
                _validation.check_ndim(
                    W, f"weights[{i}]", (2,), "a 2-D matrix of shape (n_l, n_{l-1})"
                )
                shapes.append(W.shape)
            if i and shapes[i][1] != shapes[i - 1][0]:
                raise ValueError(
                    f"weights[{i}] has shape {shapes[i]} but weights[{i - 1}] has "
                    f"{shapes[i - 1][0]} rows; expected weights[{i}] of shape "
                    f"(n_{i + 1}, {shapes[i - 1][0]})"
                )
        residual_layers = _validation.residual_flags(residual, len(shapes))
        for i, shape in enumerate(shapes):
            if residual_layers[i] and shape[0] != shape[1]:
                raise ValueError(
                    f"residual layers need square weights; weights[{i}] has shape {shape}"
                    + ("" if isinstance(residual, (bool, np.bool_)) else f" (residual[{i}])")
                )
        norm_layers = _validation.norm_flags(norm, len(shapes))
        for i, k in enumerate(kernel):
            if k and norm_layers[i]:
                raise ValueError(
                    f"norm={norm!r} normalises layer {i}'s pre-activations, which a kernel "
                    "layer does not have; give None for kernel layers"
                )
        if not (np.isfinite(_validation.real("norm_eps", norm_eps)) and norm_eps > 0):
            raise ValueError(f"norm_eps must be a finite number > 0, got {norm_eps!r}")
        L = len(Ws)
        if biases is None:
            bs: list[Any] = [
                None if k else np.zeros(W.shape[0], W.dtype)
                for W, k in zip(Ws, kernel, strict=True)
            ]
        else:
            if (
                not isinstance(biases, Sequence)
                or isinstance(biases, np.ndarray)
                or len(biases) != L
            ):
                raise ValueError(f"biases must be a list of {L} vectors (one per layer) or None")
            bs = []
            for i, b in enumerate(biases):
                if kernel[i]:
                    if b is not None:
                        raise ValueError(f"biases[{i}] must be None: layer {i} is a kernel layer")
                    bs.append(None)
                    continue
                bs.append(_validation.as_float_array(b, f"biases[{i}]"))
                if bs[i].shape != (shapes[i][0],):
                    raise ValueError(
                        f"biases[{i}] has shape {bs[i].shape} but weights[{i}] has "
                        f"{shapes[i][0]} rows; expected biases[{i}] of shape ({shapes[i][0]},)"
                    )
        if isinstance(activation, (str, Activation)):
            acts = [_lookup(activation)] * L
        else:
            if isinstance(activation, np.ndarray) or not isinstance(activation, Sequence):
                raise TypeError("activation must be a name, an Activation or a list of them")
            if len(activation) != L:
                raise ValueError(
                    f"activation has {len(activation)} entries for {L} layers; give one or {L}"
                )
            acts = [
                _lookup(cast("str | Activation", "identity" if a is None and kernel[i] else a))
                for i, a in enumerate(activation)
            ]
        affine = {
            name: _affine_parameters(given, name, norm_layers, [shape[0] for shape in shapes])
            for name, given in (("norm_weights", norm_weights), ("norm_biases", norm_biases))
        }
        dtype = _validation.common_dtype(
            *[W.centers if k else W for W, k in zip(Ws, kernel, strict=True)],
            *[b for b in bs if b is not None],
            *[v for vs in affine.values() if vs is not None for v in vs if v is not None],
        )
        for i, act in enumerate(acts):
            # phi' uses the parameter rounded to the network's dtype, as the layer API does
            _validation.activation_parameter(act, dtype, f"the network's dtype (layer {i})")
        _validation.check_finite_arrays(
            check_finite,
            **{f"weights[{i}]": W for i, W in enumerate(Ws) if not kernel[i]},
            **{f"biases[{i}]": b for i, b in enumerate(bs) if b is not None},
            **{
                f"{name}[{i}]": v
                for name, vs in affine.items()
                if vs is not None
                for i, v in enumerate(vs)
                if v is not None
            },
        )
        # Kernel layers hold their KernelLayer (in the network's dtype) in place of W, and a
        # zero bias that nothing reads, so that every list keeps one entry per layer.
        self.weights: list[Any] = [
            W._frozen(dtype) if k else _frozen(W, dtype) for W, k in zip(Ws, kernel, strict=True)
        ]
        self.biases: list[FloatArray] = [
            _frozen(np.zeros(shapes[i][0]) if b is None else b, dtype) for i, b in enumerate(bs)
        ]
        # The active-sub-block chain drops the columns of dead units, so it would turn a
        # 0 * inf of a non-finite weight (check_finite=False) into 0 where the dense product
        # and the reference give NaN: it runs on finite weights only (frozen, checked once).
        self._may_overflow: bool | None = None  # see _product_may_overflow
        self._finite_weights = all(
            bool(np.isfinite(W).all()) for W, k in zip(self.weights, kernel, strict=True) if not k
        )
        self._finite_biases = all(bool(np.isfinite(b).all()) for b in self.biases)
        self.activations: list[Activation] = acts
        self.kernel_layers: list[bool] = kernel
        # One flag per layer; ``residual`` is the bool where every layer agrees.
        self.residual_layers: tuple[bool, ...] = residual_layers
        self.residual: bool | tuple[bool, ...] = _validation.one_if_uniform(residual_layers)
        # One flag per layer; ``norm`` is "layer" or None where every layer agrees.
        self.norm_layers: tuple[bool, ...] = norm_layers
        self.norm: str | None | tuple[str | None, ...] = _validation.one_if_uniform(
            ["layer" if f else None for f in norm_layers]
        )
        self.norm_eps = float(norm_eps)
        # gamma_l and beta_l of an affine layer normalisation (gamma = 1, beta = 0 where
        # one is given without the other), None at layers without normalisation; the
        # lists are None where no affine parameters are given.
        self.norm_weights: list[FloatArray | None] | None = None
        self.norm_biases: list[FloatArray | None] | None = None
        if affine["norm_weights"] is not None or affine["norm_biases"] is not None:
            given_g = affine["norm_weights"] or [None] * len(shapes)
            given_b = affine["norm_biases"] or [None] * len(shapes)
            self.norm_weights = [
                _frozen(np.ones(shape[0]) if g is None else g, dtype) if f else None
                for g, f, shape in zip(given_g, norm_layers, shapes, strict=True)
            ]
            self.norm_biases = [
                _frozen(np.zeros(shape[0]) if b is None else b, dtype) if f else None
                for b, f, shape in zip(given_b, norm_layers, shapes, strict=True)
            ]
        self.widths: list[int] = [shapes[0][1]] + [shape[0] for shape in shapes]
        self.dtype: np.dtype[Any] = dtype
        self.memory_budget = (
            DEFAULT_MEMORY_BUDGET
            if memory_budget is None
            else _validation.integer("memory_budget", memory_budget)
        )
        if self.memory_budget <= 0:
            raise ValueError(f"memory_budget must be > 0 bytes, got {memory_budget!r}")

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.weights)

    def __repr__(self) -> str:
        acts = sorted(
            {
                "kernel" if k else a.name
                for a, k in zip(self.activations, self.kernel_layers, strict=True)
            }
        )
        return (
            f"Network(widths={self.widths}, activation={'/'.join(acts)}, residual={self.residual}, "
            f"norm={self.norm!r}{' (affine)' if self.norm_weights is not None else ''}, "
            f"dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def random(
        cls,
        widths: Sequence[int],
        activation: Activations = "relu",
        init: str = "he",
        sigma_w: float | None = None,
        sigma_b: float = 0.0,
        residual: bool | Sequence[bool] = False,
        norm: str | None | Sequence[str | None] = None,
        seed: int | np.random.SeedSequence | np.random.Generator | None = None,
        dtype: Any = np.float64,
        spectral_norm: float | None = None,
    ) -> Network:
        """A network with random weights.

        Parameters
        ----------
        widths : sequence of int
            [n_0, n_1, ..., n_L], at least two entries, all >= 1.
        activation : str, Activation or sequence, default "relu"
        init : {"he", "xavier", "lecun", "orthogonal", "gaussian"}, default "he"
            Entry variance 2 / fan_in (he), 2 / (fan_in + fan_out) (xavier), 1 / fan_in
            (lecun), sigma_w^2 / fan_in (gaussian); "orthogonal" draws a Haar-random matrix
            with orthonormal rows or columns, scaled by sigma_w (default 1).
        sigma_w : float, optional
            Gain for "gaussian" (default 1) and "orthogonal" (default 1).
        sigma_b : float, default 0.0
            Biases are iid N(0, sigma_b^2).
        residual, norm : as in :class:`Network`
        seed : int, SeedSequence or Generator, optional
        dtype : float32 or float64, default float64
        spectral_norm : float, optional
            Rescale every W so that its largest singular value is at most this bound.

        Returns
        -------
        Network

        Examples
        --------
        >>> import jacgeom
        >>> net = jacgeom.Network.random([3, 5, 2], init="orthogonal", seed=0, spectral_norm=0.5)
        >>> [float(round(np.linalg.norm(W, 2), 6)) for W in net.weights]
        [0.5, 0.5]
        """
        try:
            if isinstance(widths, (str, bytes)):
                raise TypeError
            given = list(widths)
        except TypeError:
            raise TypeError(
                f"widths must be a sequence of ints, got {type(widths).__name__}"
            ) from None
        widths = [_validation.integer(f"widths[{i}]", w) for i, w in enumerate(given)]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must hold at least two positive integers, got {widths}")
        if init not in _INITS:
            raise ValueError(f"unknown init {init!r}; valid choices: {', '.join(_INITS)}")
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        # _validation.real first: a string, None, bool or array would otherwise reach numpy
        # (an unnamed ufunc error, or True read as 1).
        if sigma_w is not None:
            sigma_w = _validation.real("sigma_w", sigma_w)
            if not (math.isfinite(sigma_w) and sigma_w >= 0):
                raise ValueError(f"sigma_w must be a finite number >= 0, got {sigma_w!r}")
        if sigma_w and init in ("gaussian", "orthogonal"):
            # Weights beyond the dtype's normal range would be drawn as zeros or infinities
            # (a network of zero weights is not one of tiny weights); 64 standard deviations
            # leave no Gaussian draw above the largest finite value.
            fans = widths[:-1] if init == "gaussian" else widths
            lo = sigma_w / math.sqrt(max(fans))
            hi = sigma_w / math.sqrt(min(fans)) if init == "gaussian" else sigma_w
            info = np.finfo(dt)
            if lo < float(info.tiny) or 64 * hi > float(info.max):
                raise ValueError(
                    f"sigma_w={sigma_w!r} gives weights of scale {lo:.3g} to {hi:.3g}, beyond "
                    f"the normal range of {dt} ({float(info.tiny):.3g} to "
                    f"{float(info.max) / 64:.3g})"
                )
        sigma_b = _validation.real("sigma_b", sigma_b)
        if not (math.isfinite(sigma_b) and sigma_b >= 0):
            raise ValueError(f"sigma_b must be a finite number >= 0, got {sigma_b!r}")
        if spectral_norm is not None:
            spectral_norm = _validation.real("spectral_norm", spectral_norm)
            if not (math.isfinite(spectral_norm) and spectral_norm > 0):
                raise ValueError(
                    f"spectral_norm must be a finite number > 0, got {spectral_norm!r}"
                )
        # The per-layer settings before any weight is drawn (the constructor checks them again).
        _validation.residual_flags(residual, len(widths) - 1)
        _validation.norm_flags(norm, len(widths) - 1)
        seed = _validation.seed(seed)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        weights, biases = [], []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            if init == "orthogonal":
                W = random_orthogonal(rng, (), fan_out, fan_in, sigma_w)
            else:
                W = rng.standard_normal((fan_out, fan_in)) * init_std(
                    init, sigma_w, fan_in, fan_out
                )
            if spectral_norm is not None:
                top = np.linalg.norm(W, 2)
                if top > spectral_norm:
                    W = W * (spectral_norm / top)
            weights.append(W.astype(dt))
            biases.append((rng.standard_normal(fan_out) * sigma_b).astype(dt))
        return cls(weights, biases, activation=activation, residual=residual, norm=norm)

    # ------------------------------------------------------------------ forward pass

    def _inputs(self, X: Any, check_finite: bool) -> tuple[FloatArray, bool]:
        Xf = _validation.as_float_array(X, "X")
        n0 = self.widths[0]
        X2, squeeze = _validation.rows(Xf, "X", n0, f"the network takes {n0} inputs")
        _validation.check_finite_arrays(check_finite, X=X2)
        return _validation.to_kernel_in_range(X2, self.dtype, "X", "network"), squeeze

    def _layers(self, X: FloatArray, backend: str) -> Iterator[tuple[FloatArray, FloatArray, Any]]:
        """Per layer: (z, d, state) for the chunk X; state = a _frame.NormState for a layer
        normalisation, the layer Jacobians (Bc, n_l, n_{l-1}) for a kernel layer, or None."""
        h = X
        for l in range(self.depth):
            W, b, act = self.weights[l], self.biases[l], self.activations[l]
            if self.kernel_layers[l]:
                # state: the layer's Jacobians (Bc, n_l, n_{l-1}); every unit live.
                out, J = W._forward_jacobian(h)
                h = h + out if self.residual_layers[l] else out
                yield out, np.ones_like(out), J
                continue
            with np.errstate(over="ignore", invalid="ignore"):  # decided below, not warned
                z = h @ W.T
                z += b  # in place: one fresh (B_c, n_l) array per layer, not two
            if not np.isfinite(z).all():
                self._check_preactivations(h, z, l)
            state = None
            arg = z
            if self.norm_layers[l]:
                state = self._normalised(l, z)
                arg = state.arg
            d = _dispatch.derivatives(arg, act, backend)
            if state is not None and state.gamma is not None:
                d = d * state.gamma  # the layer's row scales: D diag(gamma) J_N W
            with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: IEEE, unwarned
                a = _dispatch.activation_values(arg, act, backend)
            h = h + a if self.residual_layers[l] else a
            yield z, d, state

    def forward(self, X: ArrayLike, check_finite: bool = True) -> FloatArray:
        """Network outputs.

        Parameters
        ----------
        X : (B, n_0) or (n_0,) array_like

        Returns
        -------
        (B, n_L) or (n_L,) ndarray

        Raises
        ------
        FloatingPointError
            Where finite inputs, weights and biases give pre-activations beyond the float
            range, as :meth:`preactivations` and :meth:`jacobian` do.
        """
        Xk, squeeze = self._inputs(X, check_finite)
        h = self._forward(Xk, "auto")
        return h[0] if squeeze else h

    def _forward(self, X: FloatArray, backend: str) -> FloatArray:
        """Outputs (B, n_L) for validated inputs (B, n_0), phi as ``backend`` evaluates it
        (``_dispatch.activation_values``): the forward pass of that backend's products."""
        h = X
        for l in range(self.depth):
            if self.kernel_layers[l]:
                out = self.weights[l]._forward(h)
                h = h + out if self.residual_layers[l] else out
                continue
            with np.errstate(over="ignore", invalid="ignore"):  # decided below, not warned
                z = h @ self.weights[l].T + self.biases[l]
            if not np.isfinite(z).all():
                self._check_preactivations(h, z, l, lost="no output exists")
            if self.norm_layers[l]:
                z = self._normalised(l, z).arg
            with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: IEEE, unwarned
                a = _dispatch.activation_values(z, self.activations[l], backend)
            h = h + a if self.residual_layers[l] else a
        return h

    def _normalised(self, l: int, z: FloatArray) -> _frame.NormState:
        """Layer l's normalisation of z (B, n_l): sigma, N(z), and the argument of phi,
        gamma_l N(z) + beta_l (N(z) itself without affine parameters)."""
        sigma, u = _ref.layer_norm(z, self.norm_eps)
        gamma = None if self.norm_weights is None else self.norm_weights[l]
        beta = None if self.norm_biases is None else self.norm_biases[l]
        if gamma is None or beta is None:
            return _frame.NormState(sigma, u, self.norm_eps)
        return _frame.NormState(sigma, u, self.norm_eps, u * gamma + beta, gamma)

    def preactivations(self, X: ArrayLike, check_finite: bool = True) -> list[FloatArray]:
        """z_l = W_l h_{l-1} + b_l of every layer (before normalisation); for a kernel layer
        its output A k(h_{l-1}).

        Returns
        -------
        list of L arrays (B, n_l) (or (n_l,) for a 1-D X)
        """
        Xk, squeeze = self._inputs(X, check_finite)
        zs = [z for z, _, _ in self._layers(Xk, "auto")]  # forward's phi
        return [z[0] for z in zs] if squeeze else zs

    # ------------------------------------------------------------------ Jacobian products

    def _chunks(self, n: int, per_sample_bytes: int) -> Iterator[slice]:
        chunk = max(1, self.memory_budget // max(1, per_sample_bytes))
        for start in range(0, n, chunk):
            yield slice(start, min(n, start + chunk))
        if n == 0:
            yield slice(0, 0)

    def _jacobian_bytes(self) -> int:
        wmax = max(self.widths)
        return 4 * wmax * max(self.widths[0], self.widths[-1]) * self.dtype.itemsize

    def _jacobians(self, X: FloatArray, backend: str) -> Iterator[tuple[slice, FloatArray]]:
        for sl in self._chunks(X.shape[0], self._jacobian_bytes()):
            yield sl, _products.jacobian_chunk(self, X[sl], backend)

    # ------------------------------------------------------------------ public reductions

    def jacobian(
        self,
        X: ArrayLike,
        backend: BackendName = "auto",
        check_finite: bool = True,
        out: FloatArray | None = None,
    ) -> FloatArray:
        """End-to-end Jacobians J(x) = A_L ... A_1.

        Parameters
        ----------
        X : (B, n_0) or (n_0,) array_like
        backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        check_finite : bool, default True
        out : (B, n_L, n_0) or (n_L, n_0) ndarray, optional
            Write the result here (C-contiguous, the network's dtype, not overlapping X)
            and return it. Without it, a result of 16 MiB or more is written into memory
            kept from an earlier result that nothing refers to any more (a fresh array costs
            the operating system's zeroing of every page; :func:`jacgeom.set_result_cache`
            bounds what is kept), so its ``base`` is the kept buffer.

        Returns
        -------
        J : (B, n_L, n_0) or (n_L, n_0) ndarray

        Raises
        ------
        FloatingPointError
            Where finite inputs and weights give an entry of J beyond the float range (its
            spectrum may still be in range: :meth:`log_singular_values` never forms J).

        Notes
        -----
        At one input on the cpp backend, a plain network of built-in activations up to 32
        units wide, whose weights keep every partial product within the float range, runs
        the C-level API's code (jacgeom.cython_kernels' ``dnetwork_jacobian``), so the two
        agree bit for bit; batches are multiplied in another order and agree with it to
        rounding.

        Examples
        --------
        >>> import numpy as np, jacgeom
        >>> net = jacgeom.Network.random([3, 5, 2], activation="tanh", seed=0)
        >>> X = np.random.default_rng(0).standard_normal((4, 3))
        >>> J = np.empty((4, 2, 3))
        >>> net.jacobian(X, out=J) is J
        True
        >>> bool(np.allclose(J, net.jacobian(X, backend="numpy")))
        True
        """
        be = _backends.resolve(backend)
        Xk, squeeze = self._inputs(X, check_finite)
        shape = (Xk.shape[0], self.widths[-1], self.widths[0])
        if out is not None:
            _validation.output_array(out, shape[1:] if squeeze else shape, self.dtype, (X, Xk))
        if be == "numpy":
            J = _ref.jacobian(self, Xk)
            self._check_formed(Xk, J)
            if out is None:
                return J[0] if squeeze else J
            out[...] = J[0] if squeeze else J
            return out
        target = _results.empty(shape, self.dtype) if out is None else out.reshape(shape)
        if be == "cpp" and shape[0] == 1 and self._one_input_kernel(Xk[0], target[0]):
            return out if out is not None else (target[0] if squeeze else target)
        check = self._product_may_overflow()
        for sl in self._chunks(Xk.shape[0], self._jacobian_bytes()):
            chunk = _products.jacobian_chunk(self, Xk[sl], be, target[sl])
            if check:
                self._check_formed(Xk[sl], chunk, lambda Xb: _ref.jacobian(self, Xb))
        if out is not None:
            return out
        return target[0] if squeeze else target

    def singular_values(
        self, X: ArrayLike, backend: BackendName = "auto", check_finite: bool = True
    ) -> FloatArray:
        """Singular values of each end-to-end Jacobian, descending.

        Returns
        -------
        (B, min(n_L, n_0)) or (min(n_L, n_0),) ndarray
        """
        be = _backends.resolve(backend)
        Xk, squeeze = self._inputs(X, check_finite)
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, as an error
            if be == "numpy":
                out = _ref.singular_values(self, Xk)
            else:
                shape = (Xk.shape[0], min(self.widths[0], self.widths[-1]))
                out = np.empty(shape, dtype=self.dtype)
                for sl in self._chunks(Xk.shape[0], self._jacobian_bytes()):
                    out[sl] = _products.singular_values_chunk(self, Xk[sl], be)
        self._check_formed(Xk, out, lambda Xb: _ref.singular_values(self, Xb))
        return out[0] if squeeze else out

    def _check_preactivations(
        self, h: FloatArray, z: FloatArray, l: int, lost: str = "no Jacobian exists"
    ) -> None:
        """A FloatingPointError where a sample's finite layer input, with finite weights and
        biases, gave layer l pre-activations beyond the float range (an overflowing sum is
        not the limit of anything: BLAS's order decides between NaN and either infinity);
        as the reference decides it, sample by sample."""
        overflowed = ~np.isfinite(z).all(axis=1) & np.isfinite(h).all(axis=1)
        if self._finite_weights and self._finite_biases and overflowed.any():
            raise FloatingPointError(
                f"the pre-activations of layer {l} are not finite for finite inputs (the "
                f"forward pass overflows the float range); {lost} in floating point"
            )

    def _one_input_kernel(self, x: FloatArray, J: FloatArray) -> bool:
        """J at one input by the C-level API's network_jacobian (capi.hpp): the same code,
        so jacgeom.cython_kernels' [ds]network_jacobian and Network.jacobian agree bit for
        bit at one input, with no numpy call per layer. Plain layers of built-in activations
        at most ONE_INPUT_MAX_WIDTH wide, finite weights and input, and no partial product
        that could leave the float range (the two paths may multiply in different orders,
        and where an order matters for overflow the batched path's outcome is the Python
        API's); False (J to be computed by the batched path, which raises what the Python
        API raises) otherwise or where a pre-activation or an entry of J is not finite."""
        if (
            max(self.widths) > ONE_INPUT_MAX_WIDTH
            or any(self.norm_layers)
            or any(self.residual_layers)
            or any(self.kernel_layers)
            or not self._finite_weights
            or any(act.is_custom for act in self.activations)
            or not np.isfinite(x).all()
            or self._product_may_overflow()
        ):
            return False
        status = _dispatch.call(
            "network_jacobian_one", "cpp", self.weights, self.biases, self.activations, x, J
        )
        return bool(status == 0)

    def _product_may_overflow(self) -> bool:
        """Whether an entry of J, or of any partial product on the way to it, can leave the
        float range at finite inputs, decided once per network: for plain layers of built-in
        activations each entry of a product of consecutive layers i..j is at most
        prod_(l=i..j) b_l, b_l = max|phi_l'| max_i sum_j |W_l,ij| (_DERIVATIVE_BOUND, or
        leaky_relu's and elu's alpha), so the largest such product over all ranges bounds every
        order of multiplication; a normalised, residual, kernel or custom layer is not
        bounded this way. Where it cannot, the pass over J that checks it (the largest array
        of the call) is skipped."""
        if self._may_overflow is None:
            if any(self.norm_layers) or any(self.residual_layers) or any(self.kernel_layers):
                self._may_overflow = True
            elif any(act.is_custom for act in self.activations):
                self._may_overflow = True
            else:
                # The largest product over contiguous ranges, in logs (Kadane's scan).
                best = current = -math.inf
                for W, act in zip(self.weights, self.activations, strict=True):
                    rows = float(np.max(np.sum(np.abs(W), axis=1), initial=0.0))
                    bound = _DERIVATIVE_BOUND
                    if act.name in ("leaky_relu", "elu"):  # alpha is phi' on the left
                        bound = max(bound, abs(act.parameter))
                    with np.errstate(divide="ignore"):
                        log_b = math.log(bound) + float(np.log(rows))
                    current = log_b + max(current, 0.0)
                    best = max(best, current)
                limit = math.log(float(np.finfo(self.dtype).max) / 2)
                self._may_overflow = not best < limit
        return self._may_overflow

    def _check_formed(
        self,
        X: FloatArray,
        result: FloatArray,
        redo: Callable[[FloatArray], FloatArray] | None = None,
    ) -> None:
        """A FloatingPointError where finite inputs and weights gave a formed product (or a
        quantity of it) beyond the float range; non-finite inputs follow IEEE arithmetic.

        The order of multiplication decides whether a partial product overflows: one gemm
        for all samples forms W_l P before the rows are scaled by phi', so a phi' that
        underflows to 0 meets an infinity (NaN), where the numpy reference's D_l W_l first
        gives the finite answer. ``redo`` computes the samples concerned in that order
        (written into ``result``); only what is still not finite is an error."""
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(result)) or np.all(
                np.isfinite(result)
            ):  # the sum first: one pass
                return
        # Non-finite biases (check_finite=False) follow IEEE arithmetic, as inputs do.
        if self._finite_weights and self._finite_biases and np.all(np.isfinite(X)):
            if redo is not None:
                bad = ~np.all(np.isfinite(result.reshape(result.shape[0], -1)), axis=1)
                i = np.flatnonzero(bad)
                with np.errstate(over="ignore", invalid="ignore"):
                    again = redo(X[i])
                if np.all(np.isfinite(again)):
                    result[i] = again
                    return
            # The formed product left the float range (its spectrum need not have).
            raise FloatingPointError(
                "the end-to-end Jacobian, or a partial product on the way to it, overflows "
                "the working precision for finite inputs; Network.log_singular_values gives "
                "its spectrum without forming it"
            )

    def rank(
        self,
        X: ArrayLike,
        tol: float | None = None,
        rtol: float | None = None,
        backend: BackendName = "auto",
        check_finite: bool = True,
    ) -> IntArray:
        """Numerical rank of each end-to-end Jacobian: numpy.linalg.matrix_rank's rule
        applied to J's exact singular values.

        Parameters
        ----------
        X : (B, n_0) or (n_0,) array_like
        tol, rtol : float, optional
            As in numpy.linalg.matrix_rank: sigma_i > tol, or sigma_i > rtol * sigma_1;
            default rtol = max(n_L, n_0) * eps of the network's dtype.
        backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        check_finite : bool, default True

        Returns
        -------
        (B,) int64 ndarray, or an int64 scalar for a 1-D X

        Notes
        -----
        **Numerical rank** is what numpy.linalg.matrix_rank would report if it could form J
        exactly: the count of singular values above the tolerance, taken from
        :meth:`log_singular_values` (accurate to a small multiple of L n eps relative,
        at any depth), not from a formed float product, whose small singular values are
        rounding noise. It drops when the condition number passes 1 / rtol, which deep
        smooth networks reach without losing any exact rank; see :meth:`exact_rank`.

        Examples
        --------
        >>> import numpy as np, jacgeom
        >>> net = jacgeom.Network.random([32] * 17, activation="tanh", seed=0)
        >>> x = np.random.default_rng(0).standard_normal(32)
        >>> int(net.exact_rank(x)), bool(net.rank(x) < 32)
        (32, True)
        """
        tol, rtol = _validation.tolerances(tol, rtol)
        logs = self.log_singular_values(X, backend=backend, check_finite=check_finite)
        return _numerical_rank(np.atleast_2d(logs), tol, rtol, self._rank_shape(), self.dtype)[
            0 if np.ndim(logs) == 1 else slice(None)
        ]

    def _rank_shape(self) -> tuple[int, int]:
        return (self.widths[-1], self.widths[0])

    def exact_rank(
        self, X: ArrayLike, backend: BackendName = "auto", check_finite: bool = True
    ) -> IntArray:
        """Exact rank of each end-to-end Jacobian.

        Parameters
        ----------
        X : (B, n_0) or (n_0,) array_like
        backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        check_finite : bool, default True

        Returns
        -------
        (B,) int64 ndarray, or an int64 scalar for a 1-D X

        Notes
        -----
        **Exact rank** is the number of singular values of J that are non-zero in exact
        arithmetic, given the weights and inputs. It drops only through structure: units
        whose phi' is zero mathematically (relu's dead half-line, a custom activation's
        exact zeros; not a saturated tanh, whose phi' underflows but is never 0), a layer
        normalisation's null direction, a layer narrower than the rank so far, weights of
        lower rank. It is computed on the stable frame, layer by layer, where those come out
        as exact zeros and nothing else does; a layer's weights on the range so far are
        taken as singular where numpy.linalg.matrix_rank's tolerance says so, raised where
        earlier rows were graded (leaky_relu's slope, saturated units) to 64 eps times the
        ratio of their scales, at most 1e-11 (the theory page's "how it is decided").
        Residual and kernel layers are decided the same way, on their Jacobians formed in
        float64 (I + D W, with J_N where normalised; a kernel layer's A grad k, plus I where
        residual), each row at unit size: a singular I + D W (W = -I at the identity, where
        I + W = 0) loses rank, as does a plain kernel layer with fewer centres than units;
        I + D W = 2^-52 I does not.
        For strictly monotone activations and Gaussian weights it is full with
        probability 1 at every depth; the numerical rank (:meth:`rank`) is not.

        Examples
        --------
        >>> import numpy as np, jacgeom
        >>> net = jacgeom.Network.random([8, 8, 8], activation="relu", seed=1)
        >>> X = np.random.default_rng(2).standard_normal((3, 8))
        >>> bool(np.all(net.exact_rank(X) <= net.active_counts(X).min(axis=1)))
        True
        """
        return self._frame_reduction(
            X,
            backend,
            check_finite,
            _ref.exact_rank,
            (),
            np.int64,
            lambda g, V, ranks: ranks[:, -1],
        )

    def layer_exact_ranks(
        self, X: ArrayLike, backend: BackendName = "auto", check_finite: bool = True
    ) -> IntArray:
        """Exact rank of the partial product A_l ... A_1 after each layer l (see
        :meth:`exact_rank`).

        Returns
        -------
        (B, L) int64 ndarray (or (L,) for a 1-D X); non-increasing along each row.
        """
        return self._frame_reduction(
            X,
            backend,
            check_finite,
            _ref.layer_exact_ranks,
            (self.depth,),
            np.int64,
            lambda g, V, ranks: ranks,
        )

    def layer_ranks(
        self,
        X: ArrayLike,
        tol: float | None = None,
        rtol: float | None = None,
        backend: BackendName = "auto",
        check_finite: bool = True,
    ) -> IntArray:
        """Numerical rank (see :meth:`rank`) of the partial product A_l ... A_1 after each
        layer l, from its exact singular values.

        Returns
        -------
        (B, L) int64 ndarray (or (L,) for a 1-D X)
        """
        tol, rtol = _validation.tolerances(tol, rtol)
        be = _backends.resolve(backend)
        Xk, squeeze = self._inputs(X, check_finite)
        out = np.empty((Xk.shape[0], self.depth), dtype=np.int64)
        for l in range(self.depth):
            sub = self._prefix(l + 1)
            logs = sub.log_singular_values(Xk, backend=be, check_finite=False)
            shape = (sub.widths[-1], sub.widths[0])
            out[:, l] = _numerical_rank(logs, tol, rtol, shape, self.dtype)
        return out[0] if squeeze else out

    def _prefix(self, depth: int) -> Network:
        """The network of the first ``depth`` layers (shares the weights)."""
        if depth == self.depth:
            return self
        biases: list[Any] = [
            None if k else b for b, k in zip(self.biases, self.kernel_layers, strict=True)
        ]
        return Network(
            self.weights[:depth],
            biases[:depth],
            activation=self.activations[:depth],
            residual=self.residual_layers[:depth],
            norm=["layer" if f else None for f in self.norm_layers[:depth]],
            norm_eps=self.norm_eps,
            memory_budget=self.memory_budget,
            check_finite=False,
            norm_weights=None if self.norm_weights is None else self.norm_weights[:depth],
            norm_biases=None if self.norm_biases is None else self.norm_biases[:depth],
        )

    def active_counts(
        self, X: ArrayLike, backend: BackendName = "auto", check_finite: bool = True
    ) -> IntArray:
        """Number of live units in each layer: units whose row of the layer Jacobian is not
        zero in exact arithmetic, phi'(z) not zero (:meth:`Activation.derivative_is_zero`:
        a tanh or gelu unit whose phi' underflows to 0.0 is live, as :meth:`exact_rank`
        counts it) and gamma != 0 under an affine layer normalisation.

        Returns
        -------
        (B, L) int64 ndarray (or (L,) for a 1-D X)
        """
        be = _backends.resolve(backend)
        Xk, squeeze = self._inputs(X, check_finite)
        if be == "numpy":
            out = _ref.active_counts(self, Xk)
        else:
            out = (
                np.stack(
                    [
                        self._live_counts(l, z, state)
                        for l, (z, _, state) in enumerate(self._layers(Xk, be))
                    ],
                    axis=1,
                ).astype(np.int64)
                if Xk.shape[0]
                else np.zeros((0, self.depth), dtype=np.int64)
            )
        return out[0] if squeeze else out

    def _live_counts(self, l: int, z: FloatArray, state: Any) -> IntArray:
        """Live units of layer l per sample, from _layers' (z, state) (see active_counts)."""
        if self.kernel_layers[l]:
            return np.full(z.shape[0], z.shape[1], dtype=np.int64)
        arg = z if state is None else state.arg
        live = ~self.activations[l].derivative_is_zero(arg)
        if state is not None and state.gamma is not None:
            live &= state.gamma != 0
        return np.count_nonzero(live, axis=1)

    def frobenius_norm(
        self, X: ArrayLike, backend: BackendName = "auto", check_finite: bool = True
    ) -> FloatArray:
        """Frobenius norm ||J(x)||_F of each end-to-end Jacobian.

        Returns
        -------
        (B,) ndarray (a scalar array for a 1-D X)
        """
        be = _backends.resolve(backend)
        Xk, squeeze = self._inputs(X, check_finite)
        if be == "numpy":
            out = _ref.frobenius_norm(self, Xk)
        else:
            out = np.empty(Xk.shape[0], dtype=self.dtype)
            for sl, J in self._jacobians(Xk, be):
                out[sl] = _ref.frobenius_norms(J)
        self._check_formed(Xk, out, lambda Xb: _ref.frobenius_norm(self, Xb))
        return out[0] if squeeze else out

    def log_singular_values(
        self, X: ArrayLike, backend: BackendName = "auto", check_finite: bool = True
    ) -> FloatArray:
        """log (natural) of the singular values of each end-to-end Jacobian, descending,
        accurate at any depth.

        Parameters
        ----------
        X : (B, n_0) or (n_0,) array_like
        backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        check_finite : bool, default True

        Returns
        -------
        (B, min(n_L, n_0)) or (min(n_L, n_0),) ndarray
            Finite for the first :meth:`exact_rank` values, -inf beyond (exact zeros).

        Notes
        -----
        The product is never formed. A graded frame J = U diag(e^g) V is propagated
        (computed in float64 whatever the network's dtype): at layer l, A = A_l U, its
        rows sorted by their size in A diag(e^g) and its columns pivoted on their scaled
        norms (row-wise backward stable, so row-graded layers keep relative accuracy),
        A = Q R,
        g <- log|R_ii| + g, V <- (R_ij / |R_ii|) e^(g_j - g_i) V, U <- Q; rows of A_l are
        scaled by e^(log|phi'| - c) with c joining g, so saturated units (phi' below the
        floating-point range) still count. The singular values of diag(e^g) V then come
        from one-sided Jacobi on log-scaled columns, which keeps high relative accuracy
        on such graded matrices: each value to a small multiple of L n eps relative,
        however small next to the largest (checked against 80-digit arithmetic). The sum
        of the logs is log|det J| when J is square.
        The cpp backend runs the numba kernel for the Jacobi step.

        Examples
        --------
        >>> import numpy as np, jacgeom
        >>> net = jacgeom.Network.random([16] * 17, activation="tanh", seed=0)
        >>> logs = net.log_singular_values(np.ones(16))
        >>> bool(np.isfinite(logs).all()), bool((logs[0] - logs[-1]) / np.log(10) > 16)
        (True, True)
        """
        p = min(self.widths[0], self.widths[-1])

        def logs(g: FloatArray, V: FloatArray, ranks: IntArray) -> FloatArray:
            # The frame is trimmed to the largest live rank: beyond it, exact zeros (-inf).
            # The cpp backend runs numba's kernel (the table has no C++ one).
            out = np.full((g.shape[0], p), -np.inf)
            s = _dispatch.call("graded_log_singular_values", backend, g, V)
            q = min(p, s.shape[1])
            out[:, :q] = s[:, :q]
            return out

        return self._frame_reduction(
            X, backend, check_finite, _ref.log_singular_values, (p,), self.dtype, logs
        )

    def log_abs_det(
        self, X: ArrayLike, backend: BackendName = "auto", check_finite: bool = True
    ) -> FloatArray:
        """log|det J(x)| (natural log) for a square end-to-end Jacobian (n_L = n_0), stable
        at any depth.

        Returns
        -------
        (B,) ndarray (a scalar array for a 1-D X); -inf where the exact rank is below n_0.

        Raises
        ------
        ValueError
            If n_L != n_0.
        """
        if self.widths[0] != self.widths[-1]:
            raise ValueError(
                f"log_abs_det needs a square end-to-end Jacobian; this network maps "
                f"{self.widths[0]} inputs to {self.widths[-1]} outputs"
            )
        n0 = self.widths[0]

        def log_abs_det(g: FloatArray, V: FloatArray, ranks: IntArray) -> FloatArray:
            with np.errstate(invalid="ignore"):
                total = np.sum(g, axis=1)
            return np.where(ranks[:, -1] == n0, total, -np.inf)

        return self._frame_reduction(
            X, backend, check_finite, _ref.log_abs_det, (), self.dtype, log_abs_det
        )

    def _frame_bytes(self) -> int:
        return 8 * max(self.widths) * self.widths[0] * 8

    def _frame_reduction(
        self,
        X: ArrayLike,
        backend: str,
        check_finite: bool,
        reference: Callable[[Network, FloatArray], Any],
        per_sample: tuple[int, ...],
        dtype: Any,
        reduce: Callable[[FloatArray, FloatArray, IntArray], NDArray[Any]],
    ) -> Any:
        """A reduction of the stable frame (jacgeom._frame), the one loop of exact_rank,
        layer_exact_ranks, log_singular_values and log_abs_det.

        The numpy backend runs ``reference(self, X)`` (one small QR per sample, BLAS pinned to
        one thread). The compiled backends build the frame g (B_c, k), V (B_c, k, n_0) and the
        exact ranks (B_c, L) chunk by chunk and write ``reduce(g, V, ranks)``, of shape
        (B_c, *per_sample), into an output of ``dtype``. A 1-D X gives one sample's result.
        """
        be = _backends.resolve(backend)
        Xk, squeeze = self._inputs(X, check_finite)
        if be == "numpy":
            with _backends.single_threaded_blas():
                out = reference(self, Xk)
        else:
            out = np.empty((Xk.shape[0], *per_sample), dtype=dtype)
            for sl in self._chunks(Xk.shape[0], self._frame_bytes()):
                out[sl] = reduce(*_frame.stable_frame(self, Xk[sl], be))
        return out[0] if squeeze else out

    # ------------------------------------------------------------------ trained models
    # Thin entry points; the work is in jacgeom.interop and jacgeom.report,
    # imported here lazily (neither imports this module at run time).

    @classmethod
    def from_torch(cls, module: Any, dtype: Any = None) -> Network:
        """A Network with the weights of a trained torch module.

        Parameters
        ----------
        module : torch.nn.Module or torch.jit.ScriptModule
            A ``torch.nn.Sequential`` (nested ones flattened) of Linear, ReLU,
            LeakyReLU, Tanh, Sigmoid, GELU (both approximations), SiLU, Softplus, ELU,
            Identity, Dropout and LayerNorm (between a Linear and its activation, gamma = 1
            and beta = 0), or a module whose forward chains them, residual blocks
            ``x + act(linear(x))`` included (read with torch.fx).
        dtype : float32 or float64, optional
            Default: the module's (float16 / bfloat16 become float32).

        Returns
        -------
        Network
            Layer l is a Linear with the activation after it (identity where none follows).
            Weights are copied once, detached; the module is not modified.

        Raises
        ------
        jacgeom.interop.UnsupportedModuleError (a TypeError)
            Naming the module that a Network cannot represent, and what is supported;
            where the module's state would change its map (a forward hook or pre-hook, a
            spectral_norm parametrization in training mode), the error is also a
            ValueError.
        TypeError
            Where ``module`` is not a ``torch.nn.Module``.

        Notes
        -----
        See :func:`jacgeom.interop.spec_from_torch` for the exact rules (Softplus's
        threshold, LeakyReLU's slope, LayerNorm's affine parameters).

        Examples
        --------
        >>> import torch, jacgeom  # doctest: +SKIP
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
        ...                           torch.nn.Linear(8, 2))  # doctest: +SKIP
        >>> jacgeom.Network.from_torch(mlp).widths  # doctest: +SKIP
        [4, 8, 2]
        """
        from .interop import spec_from_torch

        return cls(**spec_from_torch(module).network_kwargs(dtype))

    @classmethod
    def from_jax(
        cls,
        params: Any,
        activation: DenseActivations = "relu",
        output_activation: ActivationName | Activation = "identity",
        residual: bool | Sequence[bool] = False,
        dtype: Any = None,
    ) -> Network:
        """A Network from an MLP's parameter pytree (JAX, Flax ``nn.Dense`` layers, numpy).

        Parameters
        ----------
        params : pytree
            A sequence of ``(W, b)`` pairs with W (n_l, n_{l-1}); a sequence of mappings
            with ``"kernel"`` (n_{l-1}, n_l) and ``"bias"`` (Flax) or ``"W"``/``"weight"``
            and ``"b"``/``"bias"``; or Flax's ``{"params": {"Dense_0": ..., ...}}``. See
            :func:`jacgeom.interop.spec_from_jax`.
        activation : str, Activation or sequence, default "relu"
            The hidden layers' activation, or one per layer.
        output_activation : str or Activation, default "identity"
            The last layer's, when ``activation`` is one name.
        residual : bool or sequence of bool, default False
            Every layer residual, or one flag per layer.
        dtype : float32 or float64, optional

        Returns
        -------
        Network

        Examples
        --------
        >>> import numpy as np, jacgeom
        >>> rng = np.random.default_rng(0)
        >>> params = [{"kernel": rng.standard_normal((3, 5)), "bias": np.zeros(5)},
        ...           {"kernel": rng.standard_normal((5, 2)), "bias": np.zeros(2)}]
        >>> net = jacgeom.Network.from_jax(params, activation="tanh")
        >>> net.widths, [a.name for a in net.activations]
        ([3, 5, 2], ['tanh', 'identity'])
        """
        from .interop import spec_from_jax

        spec = spec_from_jax(params, activation, output_activation, residual)
        return cls(**spec.network_kwargs(dtype))

    def layer_jacobians(
        self,
        X: ArrayLike,
        lazy: bool = False,
        backend: BackendName = "auto",
        as_input: bool = False,
    ) -> Any:
        """Each layer's own Jacobian A_l at its inputs h_{l-1}.

        Parameters
        ----------
        X : (B, n_0) or (n_0,) array_like
            numpy, torch (``requires_grad`` tensors are detached: their values are read)
            or JAX arrays.
        lazy : bool, default False
            Return a generator that computes one layer at a time (memory: one layer's
            (B, n_l, n_{l-1}) array at a time) instead of a list.
        backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        as_input : bool, default False
            Return torch tensors / JAX arrays (through DLPack) when X is one.

        Returns
        -------
        list (or generator) of L arrays (B, n_l, n_{l-1}) (or (n_l, n_{l-1}) for a 1-D X),
        in the network's dtype. Their product A_L ... A_1 is :meth:`jacobian`.

        Examples
        --------
        >>> import numpy as np, jacgeom
        >>> net = jacgeom.Network.random([3, 5, 2], activation="tanh", seed=0)
        >>> X = np.random.default_rng(1).standard_normal((4, 3))
        >>> [J.shape for J in net.layer_jacobians(X)]
        [(4, 5, 3), (4, 2, 5)]
        """
        from .report import layer_jacobians

        return layer_jacobians(self, X, lazy=lazy, backend=backend, as_input=as_input)

    def layer_report(
        self,
        X: ArrayLike,
        saturation_tol: float = 1e-2,
        backend: BackendName = "auto",
        names: list[str] | None = None,
    ) -> Any:
        """Per-layer geometry over a probe batch: dead and saturated units, exact and
        float64 numerical rank, log-volume, log condition number, homeomorphism verdict.

        Parameters
        ----------
        X : (B, n_0) array_like
            numpy, torch (detached) or JAX arrays.
        saturation_tol : float, default 1e-2
            A unit is saturated at a sample when 0 < |phi'(z)| < saturation_tol.
        backend : {"auto", "cpp", "numba", "numpy"}, default "auto"
        names : list of L str, optional
            Labels for the layers (e.g. the torch modules they came from).

        Returns
        -------
        jacgeom.report.LayerReport
            ``.layers`` holds a :class:`jacgeom.report.LayerGeometry` per layer;
            ``.table()`` prints them, ``.as_dict()`` / ``.to_json()`` serialise them.

        Notes
        -----
        Layer l is examined alone, as a one-layer Network at its inputs h_{l-1}. Ranks,
        log-volumes (natural log of the product of singular values) and log condition
        numbers (natural log) come from :meth:`log_singular_values` in float64: the exact
        rank is the count of its finite values (:meth:`exact_rank`), the numerical rank
        applies numpy.linalg.matrix_rank's rule to them. Unit fractions use the network's
        own dtype.

        Examples
        --------
        >>> import numpy as np, jacgeom
        >>> net = jacgeom.Network.random([6, 6, 6], activation="relu", seed=0)
        >>> rep = net.layer_report(np.random.default_rng(1).standard_normal((50, 6)))
        >>> [g.verdict for g in rep.layers]
        ['rank lost', 'rank lost']
        >>> rep.layers[0].exact_rank.max <= 6
        True
        """
        from .report import layer_report

        return layer_report(self, X, saturation_tol=saturation_tol, backend=backend, names=names)


def init_std(init: str, sigma_w: float | None, fan_in: int, fan_out: int) -> float:
    """Standard deviation of iid Gaussian weights under ``init`` (not "orthogonal")."""
    var = {
        "he": 2.0 / fan_in,
        "xavier": 2.0 / (fan_in + fan_out),
        "lecun": 1.0 / fan_in,
    }
    if init == "gaussian":
        # sigma_w / sqrt(fan_in), not sqrt(sigma_w**2 / fan_in): the square under- or
        # overflows for sigma_w beyond 1e+-154 where the standard deviation itself does not
        return (1.0 if sigma_w is None else sigma_w) / math.sqrt(fan_in)
    return math.sqrt(var[init])


def random_orthogonal(
    rng: np.random.Generator,
    batch: tuple[int, ...],
    fan_out: int,
    fan_in: int,
    sigma_w: float | None,
) -> FloatArray:
    """Haar-random (*batch, fan_out, fan_in) matrices with orthonormal rows or columns,
    scaled by sigma_w (default 1)."""
    big, small = max(fan_in, fan_out), min(fan_in, fan_out)
    q, r = np.linalg.qr(rng.standard_normal((*batch, big, small)))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]  # Haar measure
    W = q if fan_out >= fan_in else np.swapaxes(q, -1, -2)
    return np.ascontiguousarray(W) * (1.0 if sigma_w is None else sigma_w)


def _affine_parameters(
    given: Sequence[ArrayLike | None] | None,
    name: str,
    norm_layers: tuple[bool, ...],
    widths: list[int],
) -> list[FloatArray | None] | None:
    """norm_weights or norm_biases checked: one (n_l,) float vector or None per layer,
    None at the layers without normalisation."""
    if given is None or (
        isinstance(given, Sequence) and len(given) and all(v is None for v in given)
    ):
        return None  # every entry None: no affine parameters
    if not any(norm_layers):
        raise ValueError(f"{name} are the layer normalisation's parameters: give norm='layer'")
    if (
        isinstance(given, np.ndarray)
        or not isinstance(given, Sequence)
        or len(given) != len(widths)
    ):
        raise ValueError(f"{name} must be a list of {len(widths)} vectors (one per layer)")
    out: list[FloatArray | None] = []
    for i, (v, m) in enumerate(zip(given, widths, strict=True)):
        if v is None:
            out.append(None)
            continue
        if not norm_layers[i]:
            raise ValueError(
                f"{name}[{i}] is given but layer {i} has no normalisation (norm[{i}] is "
                "None); give None there"
            )
        arr = _validation.as_float_array(v, f"{name}[{i}]")
        if arr.shape != (m,):
            raise ValueError(
                f"{name}[{i}] has shape {arr.shape}; expected ({m},), layer {i}'s width"
            )
        out.append(arr)
    return out


def _frozen(a: FloatArray, dtype: np.dtype[Any]) -> FloatArray:
    out = np.array(a, dtype=dtype, order="C", copy=True)
    out.setflags(write=False)
    return out


def _numerical_rank(
    logs: FloatArray,
    tol: float | None,
    rtol: float | None,
    shape: tuple[int, int],
    dtype: np.dtype[Any],
) -> IntArray:
    """numpy.linalg.matrix_rank's count from descending log singular values (B, p)."""
    eps = float(np.finfo(dtype).eps)
    return np.array(
        [_ref_graded.numerical_rank_from_logs(row, tol, rtol, shape, eps) for row in logs],
        dtype=np.int64,
    ).reshape(-1)
