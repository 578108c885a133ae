"""Result: summaries with their intervals and closed forms, storage (.npz, dict)."""

from __future__ import annotations

import math
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import numpy as np
import pytest

import jacgeom
from jacgeom import theory
from jacgeom.montecarlo import Result, Spec, run
from jacgeom.montecarlo.result import NoRecordsError, distribution_summary
from jacgeom.montecarlo.summaries import Summary

from .helpers import LEVEL, assert_same


def _theory(spec: Spec) -> dict[str, float]:
    return Result(spec, Summary(0, {}, {})).theory()


def test_result_save_load_and_dict(tmp_path: Path) -> None:
    spec = Spec(width=4, depth=2, samples=50, seed=1, activation=("relu", "tanh"))
    res = run(spec, progress=False, records=True)
    res.save(tmp_path / "r.npz")
    back = Result.load(tmp_path / "r.npz")
    assert back.spec == res.spec and back.has_records
    assert_same(res, back)
    assert back.summary() == res.summary()
    d = res.to_dict()
    assert d["format"] == 2
    assert d["spec"]["activation"] == ["relu", "tanh"] and len(d["data"]["rank"]) == 50
    assert Spec.from_dict(d["spec"]) == res.spec
    assert d["data"]["rank"] == res.data["rank"].tolist()
    assert d["summary"]["samples"] == 50
    # Without records: the summary only, saved and loaded the same.
    lean = run(spec, progress=False)
    lean.save(tmp_path / "s.npz")
    again = Result.load(tmp_path / "s.npz")
    assert not again.has_records and again.summary() == res.summary()
    assert "data" not in lean.to_dict()


def test_per_sample_questions_need_records() -> None:
    spec = Spec(widths=(4, 4), samples=30, seed=1)
    res = run(spec, progress=False)
    with pytest.raises(NoRecordsError, match=r"kept only its summary.*records=True"):
        res.data  # noqa: B018
    with pytest.raises(NoRecordsError, match="records=True"):
        res.probability(lambda d: d["rank"] < 2)
    kept = run(spec, progress=False, records=True)
    got = kept.probability(lambda d: d["layer_exact_ranks"][:, 0] < 4)
    assert got == kept.summary()["p_exact_rank_deficient"]


def test_old_layer_ranks_key_is_a_deprecated_alias() -> None:
    res = run(Spec(widths=(4, 4), samples=20, seed=1), progress=False, records=True)
    with pytest.warns(DeprecationWarning, match="'layer_numerical_ranks'"):
        old = res.data["layer_ranks"]
    np.testing.assert_array_equal(old, res.data["layer_numerical_ranks"])


def test_ranks_only_summary() -> None:
    # One relu layer of width 6 with fresh Gaussian weights: rank-deficient exactly when a
    # unit is dead (rank = active count almost surely), with probability 1 - 2**-6.
    res = run(
        Spec(widths=(6, 6), samples=4000, seed=2, spectra=False), progress=False, records=True
    )
    s = res.summary(level=LEVEL)
    assert "log_cond" not in s and "log_smax" not in s
    p = s["p_rank_deficient"]
    dead = int(np.count_nonzero(res.data["active_counts"][:, 0] < 6))
    assert p["count"] == dead and p["p"] == dead / 4000
    assert p["lo"] <= 1 - 2.0**-6 <= p["hi"]
    assert s["p_any_zeroed"]["count"] == dead
    assert s["theory"]["p_exact_rank_deficient"] == pytest.approx(1 - 2.0**-6)


def test_probability_interval() -> None:
    res = run(Spec(widths=(3, 3), samples=10), progress=False, records=True)
    event = np.zeros(10, dtype=bool)
    event[:3] = True
    p = res.probability(event, level=0.9)
    lo, hi = theory.clopper_pearson(3, 10, 0.9)
    assert p == {"p": 0.3, "lo": lo, "hi": hi, "count": 3}
    assert res.probability(lambda d: d["rank"] < 4)["count"] == 10  # a (3, 3) layer: rank <= 3


@pytest.mark.parametrize(
    ("event", "match"),
    [
        # an (N, L) array was counted over N L trials
        (lambda d: d["active_counts"] < 3, r"event returned an array of shape \(10, 2\)"),
        (np.ones((10, 2), dtype=bool), r"event is an array of shape \(10, 2\); expected .*\(10,\)"),
        # length 7 gave p = 1.0 over 7 samples of a run of 10
        (np.ones(7, dtype=bool), r"event is an array of shape \(7,\)"),
        (np.zeros(0, dtype=bool), r"event is an array of shape \(0,\)"),
        (np.ones((), dtype=bool), r"event is an array of shape \(\)"),
        # integers were cast to bool silently
        (np.arange(10), r"event is an array of dtype int64; expected one bool per sample"),
        (lambda d: d["rank"], r"event returned an array of dtype int64"),
        ([0.5] * 10, r"event is an array of dtype float64"),
        ([[True], [False, True]], r"event is not an array of bools"),
    ],
)
def test_probability_needs_one_bool_per_sample(event: object, match: str) -> None:
    res = run(Spec(widths=(3, 3, 3), samples=10, seed=2), progress=False, records=True)
    with pytest.raises(ValueError, match=match):
        res.probability(event)  # type: ignore[arg-type]
    # a list of bools is an array of them
    assert res.probability([True] * 4 + [False] * 6)["p"] == 0.4  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "error", "match"),
    [
        (1.5, ValueError, r"level must be a confidence level strictly between 0 and 1, got 1.5"),
        (float("nan"), ValueError, r"strictly between 0 and 1, got nan"),
        (-0.5, ValueError, r"strictly between 0 and 1, got -0.5"),
        ("0.9", TypeError, r"level must be a real number, got str '0.9'"),
    ],
)
def test_level_is_checked_before_any_work(level: object, error: type, match: str) -> None:
    # 1.5 and NaN gave NaN bounds, -0.5 an interval excluding its own estimate, "0.9" a
    # bare TypeError from inside the interval
    res = run(Spec(widths=(3, 3), samples=20), progress=False, records=True)
    asked: list[int] = []

    def event(d: dict[str, np.ndarray]) -> np.ndarray:
        asked.append(1)
        return d["exact_rank"] < 3

    with pytest.raises(error, match=match):
        res.probability(event, level=level)  # type: ignore[arg-type]
    assert not asked  # the event is not computed for a level that has no interval
    with pytest.raises(error, match=match):
        res.summary(level=level)  # type: ignore[arg-type]
    # a numpy float is a level; the interval is clopper_pearson's at that level
    k = int(np.count_nonzero(res.data["exact_rank"] < 3))
    lo, hi = theory.clopper_pearson(k, 20, 0.8)
    got = res.summary(level=np.float64(0.8))["p_exact_rank_deficient"]
    assert (got["lo"], got["hi"], got["count"]) == (lo, hi, k)


def test_theory_only_where_it_holds() -> None:
    # Smooth activations: full exact rank with probability 1, unless a narrow layer or a
    # layer normalisation (n_l - 1) caps it; nothing is claimed for the float64 rank.
    assert _theory(Spec(widths=(4, 4), activation="tanh")) == {"p_exact_rank_deficient": 0.0}
    assert _theory(Spec(widths=(4, 3, 4), activation="tanh")) == {"p_exact_rank_deficient": 1.0}
    assert _theory(Spec(widths=(4, 4), activation="gelu", norm="layer")) == {
        "p_exact_rank_deficient": 1.0
    }
    # relu's binomial laws need fresh weights and no residual connection.
    assert _theory(Spec(widths=(4, 4), residual=True)) == {}
    one = _theory(Spec(widths=(4, 4)))
    law = theory.he_relu_log_gain((4, 4))
    assert one == {
        "active_fraction": 0.5,
        "p_exact_rank_deficient": pytest.approx(1 - 2.0**-4),
        "p_any_zeroed": pytest.approx(theory.p_any_zeroed(4)),
        "mean_log_gain": pytest.approx(law["mean"]),
        "std_log_gain": pytest.approx(np.sqrt(law["var"])),
        "p_gain_zero": pytest.approx(2.0**-4),
    }
    # The log gain's law needs a weight variance c / fan-in and the spectra recorded.
    assert "mean_log_gain" not in _theory(Spec(widths=(4, 4), init="xavier"))
    assert "mean_log_gain" not in _theory(Spec(widths=(4, 4), spectra=False))
    lecun = _theory(Spec(widths=(4, 4), init="lecun"))
    assert lecun["mean_log_gain"] == pytest.approx(theory.he_relu_log_gain((4, 4), 1.0)["mean"])
    # Linear networks: the Lyapunov limit of the log condition number.
    assert "log10_cond" not in _theory(Spec(widths=(8,) * 4, activation="identity"))
    lin = _theory(Spec(widths=(8,) * 5, activation="identity"))
    assert lin["log10_cond"] == pytest.approx(theory.linear_log_cond(8, 4) / np.log(10))
    # ... of Gaussian products: orthogonal ones have condition number 1 at every depth.
    orth = _theory(Spec(widths=(8,) * 17, activation="identity", init="orthogonal"))
    assert orth == {"p_exact_rank_deficient": 0.0}


def test_distribution_summary() -> None:
    x = np.random.default_rng(0).standard_normal(1001)
    x[:10] = np.inf
    s = distribution_summary(x)
    finite = x[np.isfinite(x)]
    assert s["mean"] == pytest.approx(finite.mean()) and s["std"] == pytest.approx(finite.std())
    assert s["finite_fraction"] == pytest.approx(991 / 1001)
    for key, q in (("q05", 0.05), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q95", 0.95)):
        assert s[key] == np.quantile(x, q, method="inverted_cdf"), key
    assert s["median_lo"] <= s["median"] <= s["median_hi"]
    empty = distribution_summary(np.zeros(0))
    assert all(math.isnan(v) for v in empty.values())


@pytest.mark.parametrize("widths", [(6, 8, 5, 7, 4), (16, 16)])
def test_log_gain_follows_the_finite_width_law(widths: tuple[int, ...]) -> None:
    # log ||J e_1||^2 of He relu networks against its exact law (theory.he_relu_log_gain):
    # the mean within five standard errors, P(J e_1 = 0) inside a widened interval. (16, 16)
    # is one relu layer, which the conditional sampler leaves packed.
    res = run(Spec(widths=widths, samples=8000, chunk_size=4000, seed=3), progress=False)
    s = res.summary()
    law, measured = s["theory"], s["log_gain"]
    finite = measured["finite_fraction"] * s["samples"]
    assert abs(measured["mean"] - law["mean_log_gain"]) <= 5 * law["std_log_gain"] / np.sqrt(finite)
    assert measured["std"] == pytest.approx(law["std_log_gain"], rel=0.05)
    zero = s["p_gain_zero"]
    assert zero["count"] == s["samples"] - finite
    se = np.sqrt(law["p_gain_zero"] * (1 - law["p_gain_zero"]) / s["samples"]) + 1e-4
    assert abs(zero["p"] - law["p_gain_zero"]) <= 5 * se


def _direct_log_gains(
    widths: tuple[int, ...], activations: tuple[str, ...], sigma_b: float, n: int, seed: int
) -> np.ndarray:
    """log ||J e_1||^2 of n networks drawn whole, as the spec describes them (He weights,
    N(0, sigma_b^2) biases, Gaussian x), with the Jacobian formed by numpy: the finite ones."""
    from jacgeom import activation

    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, widths[0]))
    J = np.broadcast_to(np.eye(widths[0]), (n, widths[0], widths[0]))
    for name, fan_in, fan_out in zip(activations, widths[:-1], widths[1:], strict=True):
        W = rng.standard_normal((n, fan_out, fan_in)) * np.sqrt(2.0 / fan_in)
        z = np.einsum("nij,nj->ni", W, h) + rng.standard_normal((n, fan_out)) * sigma_b
        act = activation(name)
        h, J = act.phi(z), act.derivative(z)[:, :, None] * (W @ J)
    with np.errstate(divide="ignore"):
        g = np.log(np.sum(J[:, :, 0] ** 2, axis=1))
    return g[np.isfinite(g)]


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
@pytest.mark.parametrize(
    ("widths", "activations", "sigma_b"),
    [
        ((4, 4, 4), ("relu", "tanh"), 0.0),  # a smooth layer after the conditional one
        ((5, 3), ("relu",), 0.5),  # one relu layer with biases (left packed on cpp)
        ((3, 4, 2), ("leaky_relu", "sigmoid"), 0.3),  # leaky_relu: not drawn conditionally
    ],
)
def test_log_gain_against_networks_drawn_whole(
    backend: str, widths: tuple[int, ...], activations: tuple[str, ...], sigma_b: float
) -> None:
    # The conditional sampler draws the first layer in the frame where x = |x| e_1, where e_1
    # itself is x / |x|: the gain must be measured along the input's e_1 all the same
    # (relu -> tanh was e^0.5 off in mean). Against whole networks with the Jacobian formed,
    # mean within five combined standard errors and standard deviation within 6%.
    from jacgeom.montecarlo import chunk_statistics

    if backend not in jacgeom.backends():
        pytest.skip(f"the {backend} backend is not available here")
    n = 12000
    spec = Spec(
        widths=widths, activation=activations, sigma_b=sigma_b, samples=n, chunk_size=n, seed=5
    )
    g = chunk_statistics(spec, 0, backend=backend)["log_gain"]
    g = g[np.isfinite(g)]
    want = _direct_log_gains(widths, activations, sigma_b, n, seed=6)
    se = np.hypot(g.std() / np.sqrt(g.size), want.std() / np.sqrt(want.size))
    assert abs(g.mean() - want.mean()) <= 5 * se, (g.mean(), want.mean(), se)
    assert g.std() == pytest.approx(want.std(), rel=0.06)
    assert g.size == pytest.approx(want.size, rel=0.03)


def test_packed_layer_gain_equals_the_frame_gain_sample_by_sample() -> None:
    # One relu layer on cpp is summarised from its packed rows (its own gain code), on
    # numpy through the stable frame: the same samples, so the same gains to rounding.
    from jacgeom.montecarlo import chunk_statistics

    if "cpp" not in jacgeom.backends():
        pytest.skip("the cpp backend is not available here")
    spec = Spec(widths=(5, 3), sigma_b=0.5, samples=3000, chunk_size=3000, seed=8)
    packed = chunk_statistics(spec, 0, backend="cpp")["log_gain"]
    frame = chunk_statistics(spec, 0, backend="numpy")["log_gain"]
    np.testing.assert_array_equal(np.isneginf(packed), np.isneginf(frame))
    finite = np.isfinite(frame)
    np.testing.assert_allclose(packed[finite], frame[finite], rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("activation", "init"), [("relu", "gaussian"), ("tanh", "gaussian"), ("relu", "orthogonal")]
)
def test_theory_of_zero_weights(activation: str, init: str) -> None:
    # sigma_w = 0 is a legitimate zero network: J = 0, so rank 0 and J e_1 = 0 surely; relu's
    # laws (active fraction 1/2, binomial rank law, log-gain law) do not hold, and
    # summary() used to crash passing scale2 = 0 to he_relu_log_gain (review 2, item 4).
    spec = Spec(
        widths=(3, 4), activation=activation, init=init, sigma_w=0.0, samples=50, chunk_size=50
    )
    res = run(spec, workers=1, progress=False)
    summary = res.summary()
    assert summary["theory"] == {"p_exact_rank_deficient": 1.0, "p_gain_zero": 1.0}
    assert summary["p_exact_rank_deficient"]["p"] == 1.0
    assert summary["p_gain_zero"]["p"] == 1.0
    assert _theory(dataclasses_replace(spec, spectra=False)) == {"p_exact_rank_deficient": 1.0}
    # With residual connections J = I + ..., nothing is claimed.
    assert _theory(Spec(widths=(4, 4), init=init, sigma_w=0.0, residual=True)) == {}


@pytest.mark.parametrize(
    ("widths", "sigma_b"), [((2,) * 17, 0.0), ((3, 1, 4, 1, 5), 0.0), ((2,) * 17, 1.0)]
)
def test_relu_active_fraction_with_and_without_biases(
    widths: tuple[int, ...], sigma_b: float
) -> None:
    # With zero biases a layer whose units are all dead (probability 2^-n_l) feeds h = 0 to
    # the next, whose z = 0 is dead too: E = 0.5 * (1/L) sum_l prod_(j<l) (1 - 2^-n_j),
    # 0.1237 at width 2 and depth 16, where theory() said 0.5. The product is written out
    # here from the widths; the measured mean must fall within five standard errors.
    spec = Spec(
        widths=widths, sigma_b=sigma_b, samples=20000, spectra=False, layer_ranks=False, seed=0
    )
    s = run(spec, progress=False, workers=1).summary()
    L = len(widths) - 1
    alive = np.concatenate([[1.0], np.cumprod([1 - 0.5**n for n in widths[1:-1]])])
    want = 0.5 if sigma_b else 0.5 * alive.sum() / L
    assert s["theory"]["active_fraction"] == pytest.approx(want, rel=1e-12)
    measured = s["active_fraction"]
    assert abs(measured["mean"] - want) <= 5 * measured["std"] / np.sqrt(s["samples"])
    if widths == (2,) * 17 and not sigma_b:
        assert want == pytest.approx(0.12374717553, rel=1e-9)


def test_theory_of_a_wide_layer_does_not_overflow() -> None:
    # widths (2, 1024) crashed summary() and theory() (2.0**1024 overflows): the tails
    # are 1025 / 2^1024 (rank < 2) and 2^-1024 (J e_1 = 0), within float64's range.
    res = run(Spec(widths=(2, 1024), samples=16, seed=0), progress=False, workers=1)
    th = res.summary()["theory"]
    assert th["p_exact_rank_deficient"] == pytest.approx(1025 / 2**1024, rel=1e-10)
    assert th["p_gain_zero"] == pytest.approx(2.0**-1024, rel=1e-10)
    assert th["p_any_zeroed"] == 1.0 and th["active_fraction"] == 0.5


@pytest.mark.parametrize("sigma_w", [1e-200, 1e-100, 1e100, 1e200])
def test_theory_of_extreme_gaussian_gains(sigma_w: float) -> None:
    # sigma_w**2 underflowed to 0 at 1e-200 (no log-gain law) and overflowed at 1e200
    # (OverflowError). Scaling every weight by sigma_w scales J by sigma_w^L: the law of
    # log ||J e_1||^2 moves by 2 L log(sigma_w), its spread and P(J e_1 = 0) stay.
    widths = (4, 6, 5)
    unit = _theory(Spec(widths=widths, init="gaussian", sigma_w=1.0))
    th = _theory(Spec(widths=widths, init="gaussian", sigma_w=sigma_w))
    shift = 2 * (len(widths) - 1) * math.log(sigma_w)
    assert th["mean_log_gain"] == pytest.approx(unit["mean_log_gain"] + shift, rel=1e-12)
    assert th["std_log_gain"] == pytest.approx(unit["std_log_gain"], rel=1e-12)
    assert th["p_gain_zero"] == unit["p_gain_zero"]
    # he is gaussian with sigma_w^2 = 2
    he = _theory(Spec(widths=widths))
    root2 = _theory(Spec(widths=widths, init="gaussian", sigma_w=math.sqrt(2.0)))
    assert he["mean_log_gain"] == pytest.approx(root2["mean_log_gain"], rel=1e-12)


def test_log_gain_law_at_a_small_gain_matches_the_run() -> None:
    # The law's mean against a run at sigma_w = 1e-100 (weights of 1e-100, no underflow
    # in the network's arithmetic): within five standard errors of the measured mean.
    spec = Spec(widths=(4, 4, 4), init="gaussian", sigma_w=1e-100, samples=4000, seed=2)
    s = run(spec, progress=False, workers=1).summary()
    law, measured = s["theory"], s["log_gain"]
    finite = measured["finite_fraction"] * s["samples"]
    assert abs(measured["mean"] - law["mean_log_gain"]) <= 5 * law["std_log_gain"] / np.sqrt(finite)


def test_relu_laws_hold_through_dead_layers_without_biases() -> None:
    # Width 2, depth 6, zero biases: a layer dies with probability 1/4 and kills every
    # later one. The rank law (rank >= 1 needs every layer alive), the log-gain law and
    # P(J e_1 = 0) (1 - prod_l (1 - 2^-n_l), each layer alive given the one below) still
    # hold; the active fraction is the cascade's, far below 1/2.
    res = run(Spec(width=2, depth=6, samples=40000, seed=2), progress=False)
    s = res.summary(level=LEVEL)
    th = s["theory"]
    for key in ("p_exact_rank_deficient", "p_gain_zero"):
        assert s[key]["lo"] <= th[key] <= s[key]["hi"], key  # type: ignore[literal-required]
    assert th["p_gain_zero"] == pytest.approx(1 - 0.75**6, rel=1e-12)
    g = s["log_gain"]
    finite = g["finite_fraction"] * s["samples"]
    assert abs(g["mean"] - th["mean_log_gain"]) <= 5 * th["std_log_gain"] / np.sqrt(finite)
    a = s["active_fraction"]
    assert abs(a["mean"] - th["active_fraction"]) <= 5 * a["std"] / np.sqrt(s["samples"])
    assert th["active_fraction"] == pytest.approx(0.5 * (1 - 0.75**6) / 0.25 / 6, rel=1e-12)


@pytest.mark.parametrize(
    ("extra", "base"),
    [
        ({"sigma_w": 1.5}, {}),  # he init fixes the scale: sigma_w was accepted and unused
        ({"sigma_b": 0.5, "init": "xavier"}, {"layer": "kernel"}),
        ({"gamma": 2.0}, {}),
        ({"manifold_dim": 3}, {}),
    ],
)
def test_results_saved_with_unused_fields_still_load(
    tmp_path: Path, extra: dict[str, object], base: dict[str, object]
) -> None:
    # Earlier versions accepted fields the experiment did not use; Spec now refuses them,
    # but a result saved then describes the same experiment with them at their defaults.
    import json

    res = run(Spec(widths=(4, 4), samples=40, chunk_size=20, **base))  # type: ignore[arg-type]
    path = tmp_path / "res.npz"
    res.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    old = json.loads(str(arrays["spec"]))
    old.update(extra)
    with pytest.raises(ValueError, match="leave them at their defaults|give sigma_w=None"):
        Spec.from_dict(old)
    arrays["spec"] = np.array(json.dumps(old))
    np.savez(path, **arrays)
    loaded = Result.load(path)
    assert loaded.spec == res.spec
    assert loaded.summary() == res.summary()
