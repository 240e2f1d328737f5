"""Refinement's decisions (pdetransfer.study.refinement) on fabricated cells, its paths, its
config and its tables: what a round adds, where added runs live, how they enter summary.csv."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdetransfer import layout
from pdetransfer.errors import UserError
from pdetransfer.layout import Jobs, Run, parse_run
from pdetransfer.modes import MODES
from pdetransfer.study.aggregation import summarize
from pdetransfer.study.collection import CELL
from pdetransfer.study.config import Study
from pdetransfer.study.refinement import (
    Addition,
    added_runs,
    decide,
    decision_path,
    refinement_rounds,
    superseded,
)
from pdetransfer.study.validation import ConfigError

BOUNDS = (1e-6, 1.0)


def _cell(errors: dict[float, list[float]], cap: int = 1000, **columns: object) -> pd.DataFrame:
    """A cell's runs: each rate's validation errors, one per seed."""
    rows = [
        {"lr": lr, "seed": seed, "status": "completed", "val_rel_l2": err, "max_steps": cap}
        for lr, errs in errors.items()
        for seed, err in enumerate(errs)
    ]
    frame = pd.DataFrame(rows)
    frame["undertrained"] = False
    for column, value in columns.items():
        frame[column] = value
    return frame


def test_a_decisive_edge_adds_the_next_rate_at_the_grids_ratio_for_every_seed() -> None:
    up, why = decide(_cell({1e-5: [0.9, 0.91], 1e-4: [0.5, 0.51]}), 1, 2, BOUNDS)
    assert up == Addition("0.001", 1000, (0, 1), "edge_max") and "add lr 0.001" in why
    down, _ = decide(_cell({3e-3: [0.2, 0.21], 3e-2: [0.5, 0.52], 3e-1: [0.9, 0.9]}), 1, 2, BOUNDS)
    assert down == Addition("0.0003", 1000, (0, 1), "edge_min")


def test_a_tie_at_the_edge_adds_nothing() -> None:
    # the edge wins by less than the seeds' own spread
    added, why = decide(_cell({1e-4: [0.5, 0.9], 1e-3: [0.55, 0.95]}), 1, 2, BOUNDS)
    assert added is None and "tie_min" in why


def test_no_rate_is_added_beyond_the_bounds() -> None:
    added, why = decide(_cell({0.1: [0.9, 0.91], 1.0: [0.5, 0.51]}), 1, 2, BOUNDS)
    assert added is None and "lr 10 beyond sweep.refine.lr_bounds" in why


def test_undertrained_chosen_runs_are_rerun_at_twice_the_cap() -> None:
    cell = _cell({1e-4: [0.9, 0.91], 1e-3: [0.5, 0.51], 1e-2: [0.8, 0.82]}, cap=500)
    cell["undertrained"] = cell["lr"] == 1e-3
    added, why = decide(cell, 1, 2, BOUNDS)
    assert added == Addition("0.001", 1000, (0, 1), "undertrained") and "rerun at cap 1000" in why
    # the rerun supersedes the shorter runs of its rate: it is the rate's measurement now
    rerun = _cell({1e-3: [0.45, 0.46]}, cap=1000)
    both = pd.concat([cell, rerun], ignore_index=True)
    assert superseded(both).tolist() == [False] * 2 + [True] * 2 + [False] * 4
    again, why = decide(both, 2, 2, BOUNDS)
    assert again is None and "nothing to add" in why
    # an undertrained edge that cannot move beyond the bounds is rerun instead
    edge = _cell({0.1: [0.9, 0.91], 1.0: [0.5, 0.51]}, undertrained=True)
    assert decide(edge, 1, 2, BOUNDS)[0] == Addition("1", 2000, (0, 1), "undertrained")


def test_nothing_is_added_once_the_rounds_are_exhausted_or_every_run_diverged() -> None:
    cell = _cell({1e-5: [0.9, 0.91], 1e-4: [0.5, 0.51]})
    added, why = decide(cell, 3, 2, BOUNDS)
    assert added is None and "rounds exhausted" in why
    cell["status"] = "diverged"
    assert decide(cell, 1, 2, BOUNDS) == (None, "every run diverged")


def test_rounds_are_read_until_one_adds_nothing(tmp_path: Path) -> None:
    cell = Run("scratch", "xs", "poisson_5_10", n=16)
    decisions = {
        1: [{"lr": "0.001", "cap": 100, "seeds": [0, 1], "why": "edge_max"}],
        2: [],
        3: [{"lr": "0.01", "cap": 100, "seeds": [0, 1], "why": "edge_max"}],
    }
    for k, add in decisions.items():
        path = tmp_path / decision_path(cell, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"add": add}))
    added, files = refinement_rounds(cell, 3, lambda k: tmp_path / decision_path(cell, k))
    assert [(run.directory, k) for run, k in added] == [
        ("runs/scratch/xs/poisson_5_10/n16/lr0.001/cap100/s0", 1),
        ("runs/scratch/xs/poisson_5_10/n16/lr0.001/cap100/s1", 1),
    ]
    assert len(files) == 2 and files[1].endswith("n16/refine/round2.json")


def test_added_runs_have_their_own_paths_that_parse_back() -> None:
    run = Run("finetune", "xs", "helmholtz_1_10", pretrain="p", n=16, lr="0.01", seed=1, cap=2000)
    assert run.directory == "runs/finetune/p/xs/helmholtz_1_10/n16/lr0.01/cap2000/s1"
    assert parse_run(run.directory) == run
    assert run.cell_directory == "runs/finetune/p/xs/helmholtz_1_10/n16"
    assert layout.decision_template(MODES["scratch"]) == (
        "runs/scratch/{size}/{downstream}/n{n}/refine/round{round}.json"
    )
    added = Jobs("results", True, layout.added_members([0, 1]), added=True)
    cell = "results/runs/scratch/{size}/{downstream}/n{n}"
    assert added.files(MODES["scratch"], "model.pt") == [
        f"{cell}/lr{{lr}}/cap{{cap}}/s{seed}/model.pt" for seed in (0, 1)
    ]
    assert added.log(MODES["scratch"], "logs", "train.log") == (
        "results/logs/runs/scratch/{size}/{downstream}/n{n}/lr{lr}/cap{cap}/train.log"
    )
    single = Jobs("results", False, layout.added_members([0, 1]), added=True)
    assert single.files(MODES["scratch"], "x") == [f"{cell}/lr{{lr}}/cap{{cap}}/s{{seed}}/x"]


def _runs(rows: list[tuple[float, int, float, int, int]]) -> pd.DataFrame:
    """runs.csv rows of one scratch cell: (lr, seed, validation error, cap, round)."""
    frame = pd.DataFrame(
        [
            {
                "mode": "scratch",
                "pretrain": "",
                "size": "xs",
                "downstream": "d",
                "n": 16,
                "lr": lr,
                "seed": seed,
                "status": "completed",
                "parameters": 10,
                "val_rel_l2": val,
                "test_rel_l2_mean": val,
                "train_seconds": 1.0,
                "max_steps": cap,
                "round": round_,
                "hit_cap": False,
                "undertrained": False,
            }
            for lr, seed, val, cap, round_ in rows
        ]
    )
    frame["superseded"] = superseded(frame, CELL)
    return frame


def test_summary_chooses_over_every_rate_and_a_rerun_supersedes_its_rate() -> None:
    runs = _runs(
        [
            (1e-4, 0, 0.50, 100, 0),
            (1e-4, 1, 0.52, 100, 0),
            (1e-3, 0, 0.40, 100, 0),
            (1e-3, 1, 0.41, 100, 0),
            (1e-2, 0, 0.45, 100, 1),  # the next rate beyond the grid's edge
            (1e-2, 1, 0.46, 100, 1),
            (1e-4, 0, 0.30, 200, 2),  # a longer rerun of 1e-4 that beats every other rate
            (1e-4, 1, 0.31, 200, 2),
        ]
    )
    assert runs["superseded"].tolist() == [True, True] + [False] * 6
    (row,) = summarize(runs).itertuples()
    assert row.best_lr == 1e-4 and row.n_lrs == 3 and row.refine_rounds == 2
    assert row.val_rel_l2_mean == pytest.approx(0.305) and row.n_seeds == 2
    assert row.lr_at_edge in ("min", "tie_min")
    # without refinement's columns (runs.csv of older studies) nothing is superseded
    old = runs.drop(columns=["superseded", "round"]).iloc[:4]
    (row,) = summarize(old).itertuples()
    assert row.best_lr == 1e-3 and row.refine_rounds == 0 and not math.isnan(row.val_rel_l2_mean)


def _config(**refine: object) -> dict:
    return {
        "data_seed": 0,
        "datasets": {"d": {"system": "poisson", "range": [5, 10], "grid": 16, "train": 16}},
        "sizes": {"xs": "xs"},
        "pretrain": {"d": ["d"]},
        "experiments": {"e": {"pretrain": "d", "downstream": ["d"]}},
        "sweep": {
            "n": [8],
            "lr": [1e-3, 1e-2],
            "seeds": [0],
            "modes": ["scratch"],
            "refine": refine,
        },
        "training": {"downstream": {"batch_size": 4}},
        "report": {"gallery": {}},
        "resources": {"train": {"gpu": 0}, "pretrain": {"gpu": 0}},
    }


def test_refinement_config_is_checked_naming_its_key() -> None:
    assert Study(_config(enabled=False, rounds=2, lr_bounds=[1e-6, 1.0])).refine is None
    study = Study(_config(enabled=True, rounds=2, lr_bounds=[1e-6, 1.0]))
    assert study.refine is not None and [c.cell_directory for c in study.trained_cells()] == [
        "runs/scratch/xs/d/n8"
    ]
    with pytest.raises(ConfigError, match=r"'sweep.refine.lr_bounds': \[1, 0.1\] is not"):
        Study(_config(enabled=True, rounds=2, lr_bounds=[1.0, 0.1]))
    with pytest.raises(ConfigError, match=r"'sweep.refine.lr_bounds': sweep.lr 0.01 lies outside"):
        Study(_config(enabled=True, rounds=2, lr_bounds=[1e-6, 1e-3]))


def test_aggregate_needs_every_decision_unless_partial(tmp_path: Path) -> None:
    study = Study(_config(enabled=True, rounds=2, lr_bounds=[1e-6, 1.0]))
    with pytest.raises(
        UserError, match=r"round1\.json does not exist: run the workflow's refinement"
    ):
        added_runs(study, tmp_path)
    assert added_runs(study, tmp_path, partial=True) == []
    assert added_runs(Study(_config(enabled=False)), tmp_path) == []


def test_the_refine_command_reads_a_cells_files_and_writes_its_decision(tmp_path: Path) -> None:
    results = tmp_path / "results"
    trains = []
    for lr, val in (("1e-05", 0.9), ("0.0001", 0.5)):
        run = results / f"runs/scratch/xs/d/n16/lr{lr}/s0"
        run.mkdir(parents=True)
        train = {"status": "completed", "stop_reason": "plateau", "steps": 80, "max_steps": 100}
        (run / "train.json").write_text(json.dumps({**train, "best_val_rel_l2": val}))
        checks = "\n".join(f"{s},{val + 0.01 * (80 - s) / 80}" for s in np.arange(0, 81, 20))
        (run / "log.csv").write_text(f"step,val_rel_l2\n{checks}\n")
        trains.append(str(run / "train.json"))
    out = results / "runs/scratch/xs/d/n16/refine/round1.json"
    argv = ["--results", str(results), "--train", *trains, "--round", "1", "--rounds", "2"]
    argv += ["--lr-bounds", "1e-6", "1", "--tolerance", "0.01", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "pdetransfer", "refine", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    decision = json.loads(out.read_text())
    assert decision["add"] == [{"lr": "0.001", "cap": 100, "seeds": [0], "why": "edge_max"}]
    assert decision["cell"] == "runs/scratch/xs/d/n16" and decision["pdetransfer_version"]
    assert [r["lr"] for r in decision["rates"]] == ["1e-05", "0.0001"]
