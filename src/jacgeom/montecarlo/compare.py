"""Kernel layers beside activation layers: the same Monte Carlo run with each."""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from .runner import run
from .spec import Spec

__all__ = ["compare_with_activation_network"]


def compare_with_activation_network(
    widths: list[int],
    activation: str = "relu",
    kernel: str = "rbf",
    samples: int = 1000,
    centers: int | None = None,
    seed: int = 0,
    **spec_fields: Any,
) -> dict[str, dict[str, NDArray[Any]]]:
    """Side by side: a kernel network and an activation network of the same widths, each
    drawn fresh for every sample, at Gaussian inputs: the Monte Carlo of
    jacgeom.montecarlo with layer="kernel" and layer="activation".

    Layer l of the kernel network has ``centers`` (default n_{l-1}) Gaussian centers,
    coefficients N(0, 1 / centers) and scale gamma = 1 / n_{l-1}; the activation network is
    He-initialised.

    Parameters
    ----------
    widths : list of int
        [n_0, ..., n_L].
    activation, kernel : str
    samples, centers, seed : int
    **spec_fields
        Any other field of jacgeom.montecarlo.Spec that both kinds of layers use
        (residual, inputs, fresh_weights, ...); not layer, activation, kernel, centers.

    Returns
    -------
    {"kernel": data, "activation": data}, each the per-sample arrays of
    jacgeom.montecarlo.Result.data ("rank", "log_cond", "log_volume", ... of shape
    (samples,) or (samples, L))

    Examples
    --------
    >>> from jacgeom.montecarlo import compare_with_activation_network
    >>> out = compare_with_activation_network([4, 4], samples=200)
    >>> int(out["kernel"]["rank"].min()), bool(out["activation"]["rank"].mean() < 4)
    (4, True)
    """
    common = {"widths": tuple(widths), "samples": samples, "seed": seed, **spec_fields}
    # Each network gets only its own fields: Spec refuses kernel fields on activation
    # layers and activation fields on kernel layers.
    specs = {
        "kernel": Spec(layer="kernel", kernel=kernel, centers=centers, **common),
        "activation": Spec(layer="activation", activation=activation, **common),
    }
    return {layer: run(spec, progress=False, records=True).data for layer, spec in specs.items()}
