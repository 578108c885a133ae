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
        ({"widths": (3, 3), "samples": 0}, "samples and chunk_size must be >= 1"),
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
