"""Flags computed from the runs' own files: the cap, the gain over the last window and
undertrained; the learning-rate edge against the noise; both through ``pdetransfer aggregate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from study_helpers import aggregate_argv, fake_results, rich_config, write_study

from pdetransfer.cli import main
from pdetransfer.errors import UserError
from pdetransfer.study.aggregation import read_csv, summarize
from pdetransfer.study.config import Study
from pdetransfer.study.flags import edge_position, gain_window, last_window_gain, stop_flags
from pdetransfer.study.statistics import Spread, t_quantile


def _run_files(tmp_path: Path, checks: list[tuple[int, float]], **train) -> tuple[dict, Path]:
    log = tmp_path / "log.csv"
    rows = [f"{step},1,0.001,1.0,{val},0.1" for step, val in checks]
    log.write_text("\n".join(["step,epoch,lr,train_loss,val_rel_l2,seconds", *rows]) + "\n")
    return {"status": "completed", "val_every": 100, **train}, log


def test_a_capped_run_is_undertrained_only_when_it_still_gained_more_than_tolerance(
    tmp_path: Path,
) -> None:
    vals = [5, 4, 3, 2, 1.5, 1.2, 1.1, 1.05, 1.02, 1.0]
    checks = list(zip(range(100, 1100, 100), vals, strict=True))
    capped, log = _run_files(
        tmp_path, checks, stop_reason="cap", steps=1000, max_steps=1000, patience=200
    )
    # Best up to step 800: 1.05; at the end: 1.0 -> a 4.8% gain over the last 200 steps.
    flags = stop_flags(capped, log, tolerance=0.01)
    assert flags["hit_cap"] and flags["undertrained"]
    assert flags["last_window_gain"] == pytest.approx(0.05 / 1.05)
    assert not stop_flags(capped, log, tolerance=0.05)["undertrained"]  # within tolerance
    plateau = {**capped, "stop_reason": "plateau"}
    assert stop_flags(plateau, log, 0.01) == {**flags, "hit_cap": False, "undertrained": False}
    diverged = {**capped, "status": "diverged", "stop_reason": "diverged"}
    assert not stop_flags(diverged, log, 0.01)["hit_cap"]
    assert math.isnan(stop_flags(diverged, log, 0.01)["last_window_gain"])


def test_the_window_is_the_patience_else_a_tenth_of_the_cap() -> None:
    assert gain_window({"patience": 200, "max_steps": 1000}) == 200
    assert gain_window({"patience": None, "max_steps": 1000, "val_every": 20}) == 100
    assert gain_window({"patience": None, "max_steps": 40, "val_every": 8}) == 8
    checks = [(100, 2.0), (200, 1.0)]
    assert last_window_gain(checks, steps=200, window=100) == pytest.approx(0.5)
    # No check before the window: measured from the first one.
    assert last_window_gain(checks, steps=200, window=500) == pytest.approx(0.5)
    assert last_window_gain([(100, 2.0), (200, 3.0)], steps=200, window=100) == 0.0
    assert math.isnan(last_window_gain([(100, math.nan)], steps=100, window=10))


def test_a_missing_or_foreign_log_is_named(tmp_path: Path) -> None:
    train = {"status": "completed", "stop_reason": "cap", "steps": 10, "max_steps": 10}
    with pytest.raises(UserError, match=r"log\.csv does not exist"):
        stop_flags(train, tmp_path / "log.csv", 0.01)
    (tmp_path / "log.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="is not a training log"):
        stop_flags(train, tmp_path / "log.csv", 0.01)


def test_an_edge_rate_is_decisive_only_beyond_the_noise_of_the_difference() -> None:
    grid = [1e-4, 1e-3, 1e-2]
    spread = Spread(variance=0.01, df=6)  # s = 0.1 in log validation error
    noise = t_quantile(6) * 0.1 * math.sqrt(1 / 2 + 1 / 2)  # 2 seeds at each rate
    edge = [0.10, 0.10]

    def neighbour(log_gap: float) -> list[float]:
        return [0.10 * math.exp(log_gap)] * 2

    val = {1e-4: edge, 1e-3: neighbour(1.01 * noise)}
    assert edge_position(grid, 1e-4, val, spread) == "min"
    val = {1e-4: edge, 1e-3: neighbour(0.99 * noise)}
    assert edge_position(grid, 1e-4, val, spread) == "tie_min"
    val = {1e-2: edge, 1e-3: neighbour(0.5 * noise)}
    assert edge_position(grid, 1e-2, val, spread) == "tie_max"
    assert edge_position(grid, 1e-3, val, spread) == "no"
    assert edge_position([1e-3], 1e-3, val, spread) == "unbracketed"
    # A neighbour that diverged at every seed, or no noise estimate: the edge is decisive.
    assert edge_position(grid, 1e-4, {1e-4: edge}, spread) == "min"
    val = {1e-4: edge, 1e-3: neighbour(0.01)}
    assert edge_position(grid, 1e-4, val, Spread(math.nan, 0)) == "min"


def test_summary_pools_the_noise_over_the_curve() -> None:
    """Two cells of one curve: at N=8 the smallest rate wins by a hair, at N=16 by a lot; the
    seeds' spread (pooled over both cells and every rate) tells the tie from the edge."""
    rows = []
    for n, gap in ((8, 1.01), (16, 2.0)):
        for lr, factor in ((0.001, 1.0), (0.003, gap), (0.01, gap * 1.5)):
            for seed, wiggle in ((0, 0.95), (1, 1.05)):
                val = 0.1 * factor * wiggle
                rows.append(
                    {"mode": "scratch", "pretrain": "", "size": "xs", "downstream": "d", "n": n}
                    | {"lr": lr, "seed": seed, "parameters": 1, "val_rel_l2": val}
                    | {"test_rel_l2_mean": val, "train_seconds": 1.0, "status": "completed"}
                )
    summary = summarize(pd.DataFrame(rows)).set_index("n")
    assert summary.loc[8, "lr_at_edge"] == "tie_min"
    assert summary.loc[16, "lr_at_edge"] == "min"


def test_aggregate_reads_the_flags_from_the_run_files_with_the_config_tolerance(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = rich_config()
    study = Study(config)
    results = tmp_path / "results"
    fake_results(results, study, undertrained=lambda run: run.mode == "scratch" and run.n == 4)
    for tolerance, undertrained in ((0.01, True), (0.1, False)):
        config["report"]["undertrained_tolerance"] = tolerance
        study_file = write_study(config, tmp_path / f"study{tolerance}.json")
        tables = tmp_path / f"tables{tolerance}"
        assert main(aggregate_argv(study_file, results, tables)) == 0
        runs = read_csv(tables / "runs.csv")
        capped = runs[(runs["mode"] == "scratch") & (runs["n"] == 4)]
        others = runs[(runs["mode"] != "zeroshot") & ~runs.index.isin(capped.index)]
        assert capped["hit_cap"].all() and not others["hit_cap"].any()
        assert capped["last_window_gain"].round(4).eq(round(0.1 / 1.1, 4)).all()
        assert others["last_window_gain"].eq(0).all()
        assert capped["undertrained"].eq(undertrained).all() and not others["undertrained"].any()
        summary = read_csv(tables / "summary.csv")
        cells = summary[(summary["mode"] == "scratch") & (summary["n"] == 4)]
        assert (cells["n_hit_cap"] == 2).all() and cells["undertrained"].eq(undertrained).all()
        out = capsys.readouterr().out
        assert ("trained cells undertrained" in out) == undertrained
    recorded = json.loads((tmp_path / "study0.1.json").read_text())["config"]["report"]
    assert recorded["undertrained_tolerance"] == 0.1
