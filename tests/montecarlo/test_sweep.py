"""Sweeps over Spec fields and their table."""

from __future__ import annotations

from pathlib import Path

from jacgeom.montecarlo import Spec, sweep, sweep_table


def test_sweep_and_table(tmp_path: Path) -> None:
    out = sweep(
        Spec(width=4, depth=1, samples=200),
        {"width": [4, 8], "activation": ["relu", "tanh"]},
        progress=False,
        out=tmp_path,
    )
    assert [p for p, _ in out] == [
        {"width": 4, "activation": "relu"},
        {"width": 4, "activation": "tanh"},
        {"width": 8, "activation": "relu"},
        {"width": 8, "activation": "tanh"},
    ]
    assert [r.spec.widths for _, r in out] == [(4, 4), (4, 4), (8, 8), (8, 8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "width=4_activation=relu",
        "width=4_activation=tanh",
        "width=8_activation=relu",
        "width=8_activation=tanh",
    ]
    table = sweep_table(out)
    assert table.count("\n") == 5 and "0.9375" in table  # theory: 1 - 2**-4
    assert sweep_table([]) == ""


def test_kernel_and_activation_side_by_side() -> None:
    base = Spec(widths=(6, 6, 6), samples=600, chunk_size=300, seed=1)
    results = sweep(base, {"layer": ["activation", "kernel"]}, progress=False)
    act, ker = (r.summary() for _, r in results)
    # relu loses rank almost surely at width 6; rbf kernel layers keep it.
    assert act["p_rank_deficient"]["p"] > 0.9
    assert ker["p_rank_deficient"]["p"] < 0.05
    assert results[1][1].theory() == {}
    table = sweep_table(results)
    assert "| kernel |" in table and "| activation |" in table


def test_table_of_a_ranks_only_run() -> None:
    res = sweep(Spec(widths=(6, 6), samples=100, spectra=False), {"width": [6]}, progress=False)
    assert "not recorded" in sweep_table(res)
