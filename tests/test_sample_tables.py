"""Medians next to means, error per bin of the physical parameter, forgetting: known inputs,
known outputs (no training, no files but a test set's parameter)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from study_helpers import write_test_file

from pdetransfer.errors import UserError
from pdetransfer.study.aggregation import chosen_errors, point_intervals, summarize
from pdetransfer.study.bins import Parameter, dataset_parameters, error_bins, read_parameter
from pdetransfer.study.forgetting import forgetting
from pdetransfer.study.modes_table import mode_tables
from pdetransfer.study.statistics import (
    MEDIAN,
    SEEDS_AND_SAMPLES,
    SEEDS_ONLY,
    Bootstrap,
    RunErrors,
    resampled_medians,
)

#: 38 typical samples at 0.1 and two extreme ones at 10: the mean is 0.595, the median 0.1.
EXTREME = np.array([0.1] * 38 + [10.0, 10.0])


def _runs(cells: dict[tuple[str, int], list[np.ndarray]]) -> tuple[pd.DataFrame, dict]:
    """runs.csv rows (one lr, one seed per array) and their per-sample errors, of the cells
    ``(mode, N) -> per-sample errors per seed`` on one pre-training, size and dataset."""
    rows, samples = [], {}
    for (mode, n), seeds in cells.items():
        for seed, errors in enumerate(seeds):
            run_dir = f"{mode}/{n}/{seed}"
            samples[run_dir] = errors
            rows.append(
                {"mode": mode, "pretrain": "" if mode == "scratch" else "p", "size": "xs"}
                | {"downstream": "d", "n": n, "lr": 0.001, "seed": seed, "status": "completed"}
                | {"val_rel_l2": 1.0, "test_rel_l2_mean": errors.mean()}
                | {"test_rel_l2_median": float(np.median(errors)), "parameters": 100}
                | {"train_seconds": 1.0, "hit_cap": False, "undertrained": False}
                | {"run_dir": run_dir, "trainable_parameters": 100 if mode != "head" else 10}
            )
    return pd.DataFrame(rows), samples


def test_resampled_medians_are_the_medians_of_the_resamples() -> None:
    rng = np.random.default_rng(0)
    for length in (1, 2, 7, 10):
        values = rng.lognormal(size=length)
        counts = Bootstrap(50, length).sample_counts(length)
        expected = [np.median(np.repeat(values, row)) for row in counts]
        assert np.allclose(resampled_medians(counts, values), expected)


def test_two_extreme_samples_move_the_mean_and_not_the_median() -> None:
    runs, samples = _runs({("finetune", 8): [EXTREME, 1.1 * EXTREME]})
    summary = summarize(runs)
    chosen = chosen_errors(runs, summary, samples)
    (row,) = point_intervals(summary, chosen, Bootstrap(1000, 0)).to_dict("records")
    assert row["test_rel_l2_mean"] == pytest.approx(0.595 * 1.05)
    assert row["test_rel_l2_median"] == pytest.approx(0.1 * 1.05)
    assert row["median_interval_method"] == SEEDS_AND_SAMPLES
    assert row["test_rel_l2_median_lo"] <= 0.105 <= row["test_rel_l2_median_hi"] < 0.5
    assert row["test_rel_l2_lo"] <= 0.595 * 1.05 <= row["test_rel_l2_hi"]


def test_median_interval_follows_the_seeds_spread_of_the_medians() -> None:
    """Seeds that differ only in their extreme samples leave the medians' spread at zero."""
    other = EXTREME.copy()
    other[-2:] = 30.0
    runs, samples = _runs({("finetune", 8): [EXTREME, other], ("finetune", 16): [EXTREME, other]})
    summary = summarize(runs)
    cells = point_intervals(summary, chosen_errors(runs, summary, samples), Bootstrap(500, 0))
    assert (cells["test_rel_l2_median_hi"] - cells["test_rel_l2_median_lo"]).max() < 0.01
    assert (cells["test_rel_l2_hi"] - cells["test_rel_l2_lo"]).min() > 1


def test_mode_comparison_gives_the_median_ratio_where_the_mean_one_disagrees() -> None:
    typical = np.full(40, 0.2)
    runs, samples = _runs(
        {("finetune", 8): [EXTREME, EXTREME], ("head", 8): [typical, 1.01 * typical]}
    )
    summary = summarize(runs)
    summary = point_intervals(summary, chosen_errors(runs, summary, samples), Bootstrap(200, 0))
    comparison, _ = mode_tables(summary, chosen_errors(runs, summary, samples), Bootstrap(200, 0))
    (row,) = comparison.to_dict("records")
    assert row["mode"] == "head" and row["ratio"] < 0.5  # head beats fine-tuning on the mean
    assert row["ratio_median"] == pytest.approx(2.01)  # and loses on the typical sample
    assert row["ratio_median_lo"] <= row["ratio_median"] <= row["ratio_median_hi"]
    assert row["reference_rel_l2_median"] == pytest.approx(0.1)
    assert row["median_interval_method"] == SEEDS_AND_SAMPLES


def test_error_bins_of_known_errors() -> None:
    parameter = Parameter("e", 0.0, 4.0, np.array([0.5, 1.0, 1.5, 2.5, 3.0, 4.0]))
    first = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 60.0])
    runs, samples = _runs({("finetune", 8): [first, 2 * first]})
    summary = summarize(runs)
    chosen = chosen_errors(runs, summary, samples)
    table = error_bins(summary, chosen, {"d": parameter}, 2, Bootstrap(200, 0))
    low, high = table.to_dict("records")
    assert (low["bin"], low["param_lo"], low["param_hi"], low["samples"]) == (0, 0.0, 2.0, 3)
    assert (high["bin"], high["param_lo"], high["param_hi"], high["samples"]) == (1, 2.0, 4.0, 3)
    assert (low["test_rel_l2_mean"], low["test_rel_l2_median"]) == (3.0, 3.0)
    assert (high["test_rel_l2_mean"], high["test_rel_l2_median"]) == (45.0, 30.0)
    assert low["interval_method"] == low["median_interval_method"] == SEEDS_AND_SAMPLES
    for row in (low, high):
        assert row["test_rel_l2_median_lo"] <= row["test_rel_l2_median"]
        assert row["test_rel_l2_median"] <= row["test_rel_l2_median_hi"]
    with pytest.raises(UserError, match="rerun their evaluation"):
        short = Parameter("e", 0.0, 4.0, parameter.values[:5])
        error_bins(summary, chosen, {"d": short}, 2, Bootstrap(10, 0))


def test_a_dataset_without_a_parameter_has_no_bins_and_says_so(tmp_path: Path) -> None:
    write_test_file(tmp_path / "data/ext/test.h5", "external", [0.0, 0.0], np.zeros(6))
    write_test_file(tmp_path / "data/d/test.h5", "poisson", [5.0, 10.0], np.linspace(5, 10, 6))
    assert read_parameter(tmp_path / "data/ext/test.h5") is None
    parameters, notes = dataset_parameters(["d", "ext", "d"], tmp_path)
    assert list(parameters) == ["d"] and parameters["d"].name == "e"
    assert notes == [
        "error_bins: ext has no physical parameter (its test samples all carry the same value,"
        " as an imported file without one stores): no rows"
    ]
    with pytest.raises(UserError, match="does not exist"):
        dataset_parameters(["missing"], tmp_path)


def test_forgetting_counts_samples_worse_than_zero_shot() -> None:
    reference = np.ones(4)
    full = [np.array([0.5, 2.0, 2.0, 0.5]), np.array([0.5, 0.5, 2.0, 4.0])]
    runs, samples = _runs(
        {
            ("zeroshot", 0): [reference],
            ("finetune", 8): full,
            ("head", 8): [np.full(4, 0.9), np.full(4, 0.89)],
        }
    )
    runs.loc[runs["mode"] == "zeroshot", ["lr", "seed"]] = math.nan
    summary = summarize(runs)
    table = forgetting(summary, chosen_errors(runs, summary, samples), Bootstrap(500, 0))
    rows = {r["mode"]: r for r in table.to_dict("records")}
    assert set(rows) == {"finetune", "head"}
    assert rows["finetune"]["fraction_worse"] == 0.5
    assert rows["finetune"]["median_ratio"] == pytest.approx(1.25)
    assert rows["head"]["fraction_worse"] == 0.0
    assert rows["head"]["median_ratio"] == pytest.approx(0.895)
    for row in rows.values():
        assert 0 <= row["fraction_worse_lo"] <= row["fraction_worse"] <= row["fraction_worse_hi"]
        assert row["fraction_worse_hi"] <= 1
        assert row["median_ratio_lo"] <= row["median_ratio"] <= row["median_ratio_hi"]
        assert row["zeroshot_rel_l2_median"] == 1.0 and row["test_samples"] == 4
    assert rows["head"]["median_ratio_hi"] < 1  # head keeps what the pre-trained model knew


def test_median_of_runs_without_per_sample_errors_is_their_recorded_median() -> None:
    runs = [RunErrors(2.0, None, 0.1), RunErrors(2.2, None, 0.11)]
    reps = Bootstrap(50, 0).curves([[runs]], statistic=MEDIAN)
    assert reps.method == SEEDS_ONLY
    assert np.isclose(np.median(reps.curves[0]), 0.105, rtol=0.05)
