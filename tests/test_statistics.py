"""Bootstrap intervals and scaling fits on synthetic curves whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pdetransfer.study.efficiency import data_efficiency
from pdetransfer.study.fits import POWER, SATURATING, fit_curves, fit_row
from pdetransfer.study.statistics import (
    SAMPLES_ONLY,
    SEEDS_AND_SAMPLES,
    SEEDS_ONLY,
    Bootstrap,
    RunErrors,
    Spread,
    n_to_reach,
    n_to_reach_replicates,
    percentile_interval,
    pooled_spread,
    sweep_bounds,
    t_quantile,
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
    assert row["interval_method"] == SEEDS_AND_SAMPLES and row["bootstrap_seed"] == 3
    assert row["seed_df"] == 2 * len(NS) - len(NS)  # 2 seeds at each of the curve's points
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
        reps = Bootstrap(400, seed=trial).curves([point])
        lo, hi = percentile_interval(n_to_reach_replicates(NS, reps.curves[0], target))
        hits += lo <= truth <= hi
    assert reps.method == SAMPLES_ONLY and reps.seed_df == 0
    assert 0.89 <= hits / trials <= 0.99


def test_interval_method_says_what_entered() -> None:
    def method(curves) -> tuple[str, int]:
        reps = Bootstrap(10, 0).curves(curves)
        return reps.method, reps.seed_df

    a, b = RunErrors(0.1, np.ones(4)), RunErrors(0.2, np.full(4, 2.0))
    assert method([[[a, b]]]) == (SEEDS_AND_SAMPLES, 1)
    assert method([[[a]]]) == (SAMPLES_ONLY, 0)
    assert method([[[RunErrors(0.1), RunErrors(0.2)]]]) == (SEEDS_ONLY, 1)
    assert method([[[RunErrors(0.1)]]]) == ("none", 0)
    other_test_set = RunErrors(0.1, np.ones(5))
    assert method([[[a], [other_test_set]]]) == ("none", 0)
    # Two curves: one with seeds, one without; the weaker one's degrees of freedom are kept.
    assert method([[[a, b], [a, b]], [[a], [b]]]) == (SEEDS_AND_SAMPLES, 0)


def test_t_quantile_matches_the_tables() -> None:
    for df, t in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (30, 2.042)):
        assert t_quantile(df) == pytest.approx(t, abs=1e-3)
    assert t_quantile(10, level=0.9) == pytest.approx(1.812, abs=1e-3)


def test_pooled_spread_pools_log_deviations_within_groups() -> None:
    spread = pooled_spread([[1.0, math.e**2], [5.0], [3.0, 3.0, 3.0 * math.e**3]])
    # group 1: log deviations +-1 (SS 2, df 1); group 3: mean log 3 + 1 -> SS 1 + 1 + 4, df 2
    assert spread.df == 3 and spread.variance == pytest.approx((2 + 6) / 3)
    assert pooled_spread([[1.0], [2.0]]).df == 0


def test_seed_shifts_have_the_t_quantile_of_the_pooled_spread() -> None:
    """One point of k seeds: its shifts are t_df * s / sqrt(k), so the replicates' central
    95% is the t interval of a mean in log space."""
    boot = Bootstrap(200_000, seed=0)
    spread = Spread(variance=0.04, df=3)
    shifts = boot.seed_shifts(spread, np.array([2.0]), per_point=True)[:, 0]
    lo, hi = np.quantile(shifts, [0.025, 0.975])
    half = t_quantile(3) * math.sqrt(0.04 / 2)
    assert lo == pytest.approx(-half, rel=0.03) and hi == pytest.approx(half, rel=0.03)
    shared = boot.seed_shifts(spread, np.array([2.0, 2.0, 8.0]), per_point=False)
    assert np.allclose(shared[:, 0], shared[:, 1]) and np.allclose(shared[:, 0], 2 * shared[:, 2])
    assert not boot.seed_shifts(Spread(math.nan, 0), np.array([1.0]), per_point=True).any()


def test_sweep_bounds_are_the_points_around_the_crossing() -> None:
    ns, errors = [8, 32, 128], [0.3, 0.1, 0.05]
    assert sweep_bounds(ns, errors, 0.2) == (8, 32)
    assert sweep_bounds(ns, errors, 0.1) == (8, 32)  # reached at 32 exactly
    assert sweep_bounds(ns, errors, 0.5) == (0, 8)  # below the sweep
    assert sweep_bounds(ns, errors, 0.01) == (128, math.inf)  # beyond it
    assert all(math.isnan(v) for v in sweep_bounds(ns, [math.nan] * 3, 0.1))


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
    assert row["form"] == SATURATING and row["interval_method"] == SAMPLES_ONLY
    assert row["b_lo"] <= 0.4 <= row["b_hi"]
    assert row["b_lo"] < row["b"] < row["b_hi"]


def test_fit_row_with_too_few_points_says_why() -> None:
    row = fit_row([8, 16], [0.3, 0.2], [[RunErrors(0.3)], [RunErrors(0.2)]], Bootstrap(10, 0))
    assert "too few points (2)" in row["note"] and "b" not in row


def test_efficiency_rows_give_sweep_bounds_and_say_why_they_are_not_headlines() -> None:
    """Truth: N_scratch / N_finetune = 2. At the target, fine-tuning crosses at N = 24 (between
    16 and 32), scratch at N = 48 (between 32 and 64): the sweep alone says (1, 4]."""
    rng = np.random.default_rng(5)
    difficulty = rng.lognormal(0, 0.4, 32)
    difficulty /= difficulty.mean()
    scale = {"finetune": 0.5, "scratch": 0.5 * 2**0.5}
    runs = {
        mode: [
            [RunErrors(float(e.mean()), e) for e in (a * n**-0.5 * difficulty * f for f in seeds)]
            for n, seeds in ((n, rng.lognormal(0, 0.05, 3)) for n in NS)
        ]
        for mode, a in scale.items()
    }
    means = {mode: [np.mean([r.mean for r in point]) for point in p] for mode, p in runs.items()}
    summary = _summary(means).assign(n_seeds=3)
    target = 0.5 / 24**0.5
    row = data_efficiency(summary, [target], _chosen(runs), Bootstrap(500, 1)).iloc[0]
    assert (row["n_finetune_sweep_lo"], row["n_finetune_sweep_hi"]) == (16, 32)
    assert (row["n_scratch_sweep_lo"], row["n_scratch_sweep_hi"]) == (32, 64)
    assert (row["ratio_sweep_lo"], row["ratio_sweep_hi"]) == (1, 4)
    assert row["ratio_lo"] < 2 < row["ratio_hi"] < 4 and row["seed_df"] == 2 * len(NS)
    assert row["headline"] and row["flags"] == "" and row["not_headline_because"] == ""

    # A tie at the edge is reported and blocks nothing; an undertrained cell read blocks.
    tied = summary.assign(lr_at_edge="tie_min")
    row = data_efficiency(tied, [target], _chosen(runs), Bootstrap(500, 1)).iloc[0]
    assert row["flags"] == "lr_edge_tie:finetune;lr_edge_tie:scratch" and row["headline"]
    late = (summary["mode"] == "scratch") & (summary["n"] == 128)
    under = summary.assign(undertrained=late)
    low = 0.06  # fine-tuning reaches it between 64 and 128, scratch never (a bound)
    eff = data_efficiency(under, [low, target], _chosen(runs), Bootstrap(500, 1))
    # Headline rows first; the undertrained cell is read only for the low target.
    assert list(eff["target_rel_l2"]) == [target, low] and list(eff["headline"]) == [True, False]
    assert eff.iloc[1]["not_headline_because"] == "undertrained:scratch; ratio is a bound (>)"
    one_seed = summary.assign(n_seeds=np.where(summary["n"] == 8, 1, 3))
    eff = data_efficiency(one_seed, [low, target], _chosen(runs), Bootstrap(500, 1))
    assert not eff["headline"].any()
    assert eff.iloc[1]["not_headline_because"] == "one_seed:finetune; one_seed:scratch"
