"""Bootstrap intervals and scaling fits on synthetic curves whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pdetransfer.study.efficiency import data_efficiency
from pdetransfer.study.fits import POWER, SATURATING, fit_curves, fit_row
from pdetransfer.study.statistics import (
    Bootstrap,
    RunErrors,
    interval_source,
    n_to_reach,
    n_to_reach_replicates,
    percentile_interval,
)

NS = [8, 16, 32, 64, 128]


def power_law(n: float, scale: float = 1.0, exponent: float = 0.5) -> float:
    return scale * n**-exponent


def _summary(curves: dict[str, list[float]]) -> pd.DataFrame:
    """A summary with one bracketed, converged cell per (mode, N) of the given curves."""
    rows = [
        {
            "mode": mode,
            "pretrain": "p" if mode == "finetune" else "",
            "size": "xs",
            "downstream": "d",
            "n": n,
            "status": "ok",
            "lr_at_edge": "no",
            "undertrained": False,
            "test_rel_l2_mean": err,
        }
        for mode, errors in curves.items()
        for n, err in zip(NS, errors, strict=True)
    ]
    return pd.DataFrame(rows)


def _chosen(curves: dict[str, list[list[RunErrors]]]) -> dict:
    return {
        (mode, "p" if mode == "finetune" else "", "xs", "d", n): runs
        for mode, points in curves.items()
        for n, runs in zip(NS, points, strict=True)
    }


def test_replicated_n_to_reach_agrees_with_the_scalar_one() -> None:
    rng = np.random.default_rng(1)
    curves = np.exp(rng.uniform(-3, 0, size=(200, len(NS))))
    for target in (0.05, 0.2, 0.5):
        fast = n_to_reach_replicates(NS, curves, target)
        for row, value in zip(curves, fast, strict=True):
            n, bound = n_to_reach(NS, row, target)
            expected = {"=": n, "<=": 0.0, ">": math.inf}[bound]
            assert value == pytest.approx(expected)


def test_noise_free_power_law_gives_a_degenerate_interval_at_the_true_n() -> None:
    """Two identical seeds, every test sample with the curve's error: nothing to resample."""
    errors = {"finetune": [power_law(n, 0.1) for n in NS], "scratch": [power_law(n) for n in NS]}
    runs = {
        mode: [[RunErrors(e, np.full(16, e)), RunErrors(e, np.full(16, e))] for e in errs]
        for mode, errs in errors.items()
    }
    eff = data_efficiency(_summary(errors), [0.02, 0.1], _chosen(runs), Bootstrap(100, seed=3))
    row = eff.set_index("target_rel_l2").loc[0.1]  # scratch: N = 100; fine-tune: N = 1 (<= 8)
    assert row["n_scratch"] == pytest.approx(100)
    assert row["n_scratch_lo"] == pytest.approx(100) and row["n_scratch_hi"] == pytest.approx(100)
    assert row["n_finetune_lo"] == row["n_finetune_hi"] == 0  # below the sweep on every replicate
    assert row["interval_from"] == "seeds+samples" and row["bootstrap_seed"] == 3
    row = eff.set_index("target_rel_l2").loc[0.02]  # fine-tune: N = 25, scratch: beyond 128
    assert row["n_finetune_lo"] == pytest.approx(25) == row["n_finetune_hi"]
    assert math.isinf(row["n_scratch_hi"]) and math.isinf(row["ratio_lo"])
    assert row["flags"] == ""


def test_interval_covers_the_true_n_at_its_nominal_rate() -> None:
    """One seed, 64 noisy test samples per point: the 95% interval should contain the N at
    which the noise-free curve crosses the target in about 95% of repeated experiments."""
    truth, target = 40.0, power_law(40.0)
    rng = np.random.default_rng(7)
    trials, hits = 200, 0
    for trial in range(trials):
        point = []
        for n in NS:
            per_sample = power_law(n) * rng.gamma(4.0, 0.25, size=64)  # mean 1, sd 0.5
            point.append([RunErrors(float(per_sample.mean()), per_sample)])
        (reps,), source = Bootstrap(400, seed=trial).curves([point])
        lo, hi = percentile_interval(n_to_reach_replicates(NS, reps, target))
        hits += lo <= truth <= hi
    assert source == "samples"
    assert 0.89 <= hits / trials <= 0.99


def test_interval_source_says_what_was_resampled() -> None:
    with_samples = RunErrors(0.1, np.ones(4))
    assert interval_source([[[with_samples, with_samples]]]) == "seeds+samples"
    assert interval_source([[[with_samples]]]) == "samples"
    assert interval_source([[[RunErrors(0.1), RunErrors(0.2)]]]) == "seeds"
    assert interval_source([[[RunErrors(0.1)]]]) == "none"
    other_test_set = RunErrors(0.1, np.ones(5))
    assert interval_source([[[with_samples], [other_test_set]]]) == "none"


def test_percentile_interval_drops_few_undefined_replicates_only() -> None:
    values = np.concatenate([np.arange(1.0, 101.0), [np.nan]])
    lo, hi = percentile_interval(values)
    assert 2 <= lo <= 4 and 97 <= hi <= 99
    assert all(math.isnan(v) for v in percentile_interval(np.array([1.0, np.nan, np.nan])))


# ---------------------------------------------------------------------------- fits
def test_fit_recovers_a_known_saturating_power_law() -> None:
    n = np.array([8, 16, 32, 64, 128, 256, 512], dtype=float)
    fit = fit_curves(n, 2.0 * n**-0.6 + 0.01)
    assert fit["b"][0] == pytest.approx(0.6, abs=2e-3)
    assert fit["c"][0] == pytest.approx(0.01, rel=0.02)
    assert fit["a"][0] == pytest.approx(2.0, rel=0.01)
    assert fit["rms_log_residual"][0] < 1e-3
    pure = fit_curves(n[:3], 0.3 * n[:3] ** -0.25, POWER)
    assert pure["b"][0] == pytest.approx(0.25) and pure["c"][0] == 0


def test_fit_row_interval_contains_the_true_exponent_of_noisy_data() -> None:
    rng = np.random.default_rng(11)
    n = [8, 16, 32, 64, 128, 256]
    runs = [
        [RunErrors(float(e.mean()), e) for e in (0.5 * x**-0.4 * rng.gamma(8, 1 / 8, 32),)]
        for x in n
    ]
    means = [point[0].mean for point in runs]
    row = fit_row(n, means, runs, Bootstrap(300, seed=0))
    assert row["form"] == SATURATING and row["interval_from"] == "samples"
    assert row["b_lo"] <= 0.4 <= row["b_hi"]
    assert row["b_lo"] < row["b"] < row["b_hi"]


def test_fit_row_with_too_few_points_says_why() -> None:
    row = fit_row([8, 16], [0.3, 0.2], [[RunErrors(0.3)], [RunErrors(0.2)]], Bootstrap(10, 0))
    assert "too few points (2)" in row["note"] and "b" not in row
