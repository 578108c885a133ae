"""Spec: normalisation, serialisation, replace, and the message of every invalid field."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from jacgeom.montecarlo import Spec


def test_width_and_depth_become_widths() -> None:
    spec = Spec(width=4, depth=2, activation=["relu", "tanh"])  # type: ignore[arg-type]
    assert spec.widths == (4, 4, 4) and spec.width is None and spec.depth is None
    assert spec.activation == ("relu", "tanh")
    assert spec == Spec(widths=(4, 4, 4), activation=("relu", "tanh"))
    assert spec.replace(depth=3, activation="relu").widths == (4, 4, 4, 4)
    assert spec.replace(width=6, activation="gelu").widths == (6, 6, 6)


def test_dict_round_trip_through_json() -> None:
    spec = Spec(widths=(3, 5, 2), activation=("relu", "tanh"), sigma_b=0.5, seed=7)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["widths"] == [3, 5, 2] and d["activation"] == ["relu", "tanh"]
    assert Spec.from_dict(d) == spec


def test_numpy_bools_become_bools() -> None:
    spec = Spec(widths=(4, 4), layer_ranks=np.bool_(False), spectra=np.bool_(True))
    assert spec.layer_ranks is False and spec.spectra is True
    json.dumps(spec.to_dict())  # serialisable
    with pytest.raises(TypeError, match="layer_ranks must be a bool, got str"):
        Spec(widths=(4, 4), layer_ranks="no")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n_chunks", "samples", "chunk_size"), [(1, 1, 1), (1, 5, 5), (2, 6, 5), (3, 11, 5)]
)
def test_n_chunks(n_chunks: int, samples: int, chunk_size: int) -> None:
    assert Spec(widths=(2, 2), samples=samples, chunk_size=chunk_size).n_chunks == n_chunks


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"widths": (3,)}, "widths must hold at least two"),
        ({"widths": (3, 0)}, "widths must hold at least two positive"),
        ({"width": 3}, "give widths, or width and depth"),
        ({"widths": (3, 3), "activation": "swish"}, "unknown activation 'swish'"),
        ({"widths": (3, 4), "residual": True}, "residual networks need equal widths"),
        ({"widths": (3, 3), "inputs": "cube"}, "unknown inputs 'cube'"),
        ({"widths": (3, 3), "manifold": "torus"}, "unknown manifold 'torus'"),
        (
            {"widths": (3, 3), "inputs": "manifold", "manifold_dim": 5},
            r"manifold_dim must be in \[1, 3\]",
        ),
        ({"widths": (3, 3), "samples": 0}, "samples must be >= 1, got 0"),
        ({"widths": (3, 3), "chunk_size": -2}, "chunk_size must be >= 1, got -2"),
        ({"widths": (3, 3), "seed": -1}, "seed must be a non-negative int, got -1"),
        ({"width": 3, "depth": 0}, r"widths must hold at least two positive integers, got \[3\]"),
        (
            {"widths": (3, 3), "samples": 10**12, "chunk_size": 10**12},
            r"chunk_size=1000000000000 needs about .* GiB per chunk .* more than the memory "
            r"limit of .* GiB",
        ),
        ({"widths": (3, 3), "init": "kaiming"}, "unknown init 'kaiming'"),
        ({"widths": (3, 3), "norm": "batch"}, "unknown norm 'batch'"),
        ({"widths": (3, 3), "sigma_b": -1.0}, "sigma_b must be a finite number >= 0"),
        ({"widths": (3, 3), "sigma_w": float("nan")}, "sigma_w must be a finite number >= 0"),
        (
            {"widths": (3, 3), "activation": ("relu", "tanh")},
            "activation has 2 entries for 1 layers",
        ),
        ({"widths": (4, 4), "layer": "spline"}, "unknown layer 'spline'"),
        ({"widths": (4, 4), "layer": "kernel", "kernel": "sigmoid"}, "unknown kernel 'sigmoid'"),
        ({"widths": (4, 4), "layer": "kernel", "norm": "layer"}, "use norm=None"),
        ({"widths": (4, 4), "layer": "kernel", "centers": 0}, "centers must be >= 1"),
        (
            {"widths": (4, 4), "layer": "kernel", "gamma": -1.0},
            "gamma must be a finite number > 0",
        ),
    ],
)
def test_bad_specs(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Spec(**kw)


def test_unknown_field() -> None:
    with pytest.raises(ValueError, match="unknown spec field 'colour'; valid fields: "):
        Spec.from_dict({"widths": [3, 3], "colour": 1})


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"residual": "no"}, "residual must be a bool, got str"),
        ({"fresh_weights": 0}, "fresh_weights must be a bool, got int"),
        ({"spectra": None}, "spectra must be a bool, got NoneType"),
        ({"seed": 1.5}, "seed must be an int, got float 1.5"),
        ({"seed": "x"}, "seed must be an int, got str 'x'"),
        ({"seed": True}, "seed must be an int, got bool True"),
        ({"samples": 10.0}, "samples must be an int, got float 10.0"),
        ({"chunk_size": "100"}, "chunk_size must be an int, got str '100'"),
        ({"widths": (4.7, 3)}, r"widths\[0\] must be an int, got float 4.7"),
        ({"widths": (3, np.float64(3))}, r"widths\[1\] must be an int, got float64 3.0"),
        ({"widths": 3}, "widths must be a sequence of ints, got int"),
        ({"widths": None, "width": 4, "depth": 2.0}, "depth must be an int, got float 2.0"),
        ({"manifold_dim": 1.0}, "manifold_dim must be an int, got float"),
        ({"layer": "kernel", "centers": 2.5}, "centers must be an int, got float 2.5"),
        ({"sigma_b": "0.1"}, "sigma_b must be a real number, got str '0.1'"),
        ({"sigma_w": True}, "sigma_w must be a real number, got bool True"),
        ({"activation": 3}, "activation must be a str or a sequence of str, got int"),
        ({"activation": ("relu", None)}, "activation entries must be str, got NoneType"),
        ({"init": None}, "init must be a str, got NoneType"),
        ({"norm": 1}, "norm must be None or a str, got int"),
    ],
)
def test_bad_field_types(kw: dict[str, Any], match: str) -> None:
    # Each of these used to pass Spec: truncated (4.7 -> 4), truthy ("no" -> a residual
    # network) or failing only inside every chunk (a float seed).
    with pytest.raises(TypeError, match=match):
        Spec(**{"widths": (3, 3), **kw})


def test_numpy_integers_become_ints() -> None:
    spec = Spec(widths=(np.int32(3), np.int64(4)), seed=np.uint8(5), samples=np.int64(7), sigma_b=1)
    assert spec.widths == (3, 4) and spec.seed == 5 and spec.samples == 7
    assert all(type(v) is int for v in (*spec.widths, spec.seed, spec.samples))
    assert type(spec.sigma_b) is float
    json.dumps(spec.to_dict())  # serialisable
    with pytest.raises(TypeError, match=r"widths\[0\] must be an int, got float 2.5"):
        spec.replace(width=2.5)


def test_chunk_bytes_counts_the_recorded_arrays() -> None:
    from jacgeom.montecarlo.spec import bytes_per_sample
    from jacgeom.montecarlo.statistics import chunk_statistics

    for kw in ({}, {"layer_ranks": False}, {"spectra": False}, {"residual": True}):
        spec = Spec(widths=(3, 3, 3), samples=5, chunk_size=5, **kw)
        stats = chunk_statistics(spec, 0)
        assert bytes_per_sample(spec) * 5 == sum(a.nbytes for a in stats.values()), kw


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"width": 8, "depth": 3}, r"widths gives every width: drop width and depth"),
        ({"width": 8}, r"widths gives every width: drop width, or give widths=None"),
        ({"depth": 3}, r"widths gives every width: drop depth"),
        ({"init": "he", "sigma_w": 5.0}, r"sigma_w is the gain of init='gaussian' or 'orth"),
        ({"init": "lecun", "sigma_w": 0.0}, r"init='lecun' fixes the weights' scale"),
        ({"centers": 3, "gamma": 0.5}, r"centers, gamma: only for kernel layers"),
        ({"kernel": "laplacian"}, r"kernel: only for kernel layers"),
        ({"manifold_dim": 3, "manifold": "linear"}, r"manifold_dim, manifold: only with inputs="),
        (
            {"inputs": "sphere", "manifold": "linear"},
            r"manifold: only with inputs='manifold' \(inp",
        ),
        (
            {"layer": "kernel", "kernel": "polynomial", "gamma": 7.0},
            r"gamma: not used by the polynomial kernel",
        ),
        (
            {"layer": "kernel", "activation": "tanh", "sigma_b": 0.5},
            r"activation, sigma_b: not used by kernel layers",
        ),
        ({"layer": "kernel", "init": "gaussian", "sigma_w": 2.0}, r"init, sigma_w: not used by"),
    ],
)
def test_fields_the_experiment_would_ignore_are_refused(kw: dict[str, Any], match: str) -> None:
    # Each was accepted and ignored (the command line refuses the same flags); widths with
    # width and depth compared unequal to widths alone but had its spec_hash.
    with pytest.raises(ValueError, match=match):
        Spec(**{"widths": (4, 4), **kw})


def test_fields_in_use_are_accepted() -> None:
    assert Spec(widths=(4, 4), init="gaussian", sigma_w=2.0).sigma_w == 2.0
    assert Spec(widths=(4, 4), init="orthogonal", sigma_w=0.5).sigma_w == 0.5
    assert (
        Spec(widths=(4, 4), inputs="manifold", manifold_dim=3, manifold="linear").manifold_dim == 3
    )
    assert (
        Spec(widths=(4, 4), layer="kernel", kernel="laplacian", centers=2, gamma=0.5).centers == 2
    )
    assert Spec(widths=(4, 4), layer="kernel", kernel="polynomial", centers=2).gamma is None
    # switching the layer kind keeps a spec valid where only shared fields were given
    assert Spec(widths=(4, 4), sigma_b=0.0).replace(layer="kernel").layer == "kernel"
    with pytest.raises(ValueError, match=r"sigma_b: not used by kernel layers"):
        Spec(widths=(4, 4), sigma_b=0.5).replace(layer="kernel")
