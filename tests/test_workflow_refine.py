"""Cells that refine themselves (sweep.refine) through the Snakemake CLI, on the smallest study
that shows it: one dataset, the scratch mode only, one N, one seed, the tiny model.

A grid too low (1e-5, 1e-4) climbs one rate per round until its best rate is interior; a rate
whose runs stopped at their cap still improving is rerun at twice the cap (here unpacked, one
job per run), and the rerun replaces them in the tables; a grid whose edges are at the
refinement bounds adds nothing; turning refinement on for a finished study reruns none of its
grid's jobs; a finished refined study reruns nothing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import snakemake

pytestmark = pytest.mark.slow

TABLES = "results/tables/runs.csv"
CELL = Path("results/runs/scratch/tiny/poisson_5_10/n16")
GRID_RULES = ("generate", "check", "dataset_stats", "scratch", "evaluate_scratch")


def _study(
    workdir: Path,
    lr: list[float],
    refine: dict,
    sweep: dict | None = None,
    recipe: dict | None = None,
    **report: object,
) -> str:
    recipe = recipe or {"patience": 20, "max_steps": 200}
    config = {
        "data_seed": 0,
        "datasets": {
            "poisson_5_10": {
                "system": "poisson",
                "range": [5, 10],
                "grid": 16,
                "train": 16,
                "val": 8,
                "test": 8,
            }
        },
        "sizes": {"tiny": "2,4"},
        "pretrain": {"poisson_5_10": ["poisson_5_10"]},
        "experiments": {"one": {"pretrain": "poisson_5_10", "downstream": ["poisson_5_10"]}},
        "sweep": {
            "n": [16],
            "lr": lr,
            "seeds": [0],
            "modes": ["scratch"],
            "refine": refine,
            **(sweep or {}),
        },
        "training": {"downstream": {"epochs": 1, "batch_size": 8, **recipe}},
        "report": {"targets": [0.9], **report},
    }
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def _run(workdir: Path, config: str) -> Counter:
    """Run the study's tables; the jobs that ran, by rule (those checkpoints added included,
    which the job stats printed before the run cannot know)."""
    result = snakemake(workdir, TABLES, "--cores", "2", "--configfile", config)
    assert result.returncode == 0, result.stderr[-5000:]
    return Counter(
        re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", result.stdout + result.stderr, re.M)
    )


def _decisions(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / CELL).glob("refine/round*.json"))]


def test_a_grid_too_low_climbs_to_an_interior_rate(tmp_path: Path) -> None:
    config = _study(tmp_path, [1e-5, 1e-4], {"enabled": True, "rounds": 3})
    counts = _run(tmp_path, config)
    runs = pd.read_csv(tmp_path / TABLES)
    summary = pd.read_csv(tmp_path / "results" / "tables" / "summary.csv")
    (cell,) = summary.itertuples()
    rounds = int(runs["round"].max())
    assert rounds >= 1 and cell.refine_rounds == rounds
    # one packed job per round (the grid's, then one rate each round), one decision per round
    assert counts["scratch"] == 1 and counts["scratch_added"] == rounds
    assert counts["refine_scratch"] == len(_decisions(tmp_path))
    for decision in _decisions(tmp_path)[:rounds]:
        (added,) = decision["add"]
        assert added["why"] == "edge_max" and added["seeds"] == [0] and added["cap"] == 200
    # each round added the next rate up, at the grid's ratio, at the grid's cap
    added = runs[runs["round"] > 0].sort_values("round")
    assert added["lr"].tolist() == pytest.approx([10.0 ** (k - 4) for k in range(1, rounds + 1)])
    assert added["run_dir"].str.contains("/cap200/").all() and (added["max_steps"] == 200).all()
    assert not runs["superseded"].any()
    # the choice is over every rate, and it ended inside them: no edge flag
    assert cell.n_lrs == 2 + rounds and cell.lr_at_edge == "no"
    assert 1e-4 < cell.best_lr < runs["lr"].max()
    # a finished refined study has nothing left to do
    dry = snakemake(tmp_path, TABLES, "-n", "--configfile", config)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    # an added run is an ordinary target: once its decision exists, a dry-run shows its job
    # (here as if the study had stopped before evaluating the last added run)
    lost = tmp_path / "results" / added["run_dir"].iloc[-1] / "metrics.json"
    lost.unlink()
    (tmp_path / TABLES).unlink()
    dry = snakemake(tmp_path, TABLES, "-n", "--configfile", config)
    assert dry.returncode == 0
    assert re.search(r"^(local)?rule evaluate_scratch_added:$", dry.stdout, re.M)
    assert str(lost.relative_to(tmp_path)) in dry.stdout


def test_turning_refinement_on_reruns_no_grid_job_and_a_study_in_bounds_adds_nothing(
    tmp_path: Path,
) -> None:
    # its edges are the refinement bounds, and no run counts as undertrained
    grid, bounds = [0.01, 0.1], {"lr_bounds": [0.01, 0.1]}
    plain = _study(tmp_path, grid, {"enabled": False, **bounds}, undertrained_tolerance=1.0)
    before = _run(tmp_path, plain)
    assert before["scratch"] == 1 and "refine_scratch" not in before
    refined = _study(tmp_path, grid, {"enabled": True, **bounds}, undertrained_tolerance=1.0)
    after = _run(tmp_path, refined)
    assert not set(GRID_RULES) & set(after), after  # the grid's jobs did not rerun
    assert after["refine_scratch"] == 1 and "scratch_added" not in after
    (decision,) = _decisions(tmp_path)
    assert decision["add"] == [] and decision["round"] == 1
    assert "beyond sweep.refine.lr_bounds" in decision["reason"]
    runs = pd.read_csv(tmp_path / TABLES)
    assert len(runs) == 2 and (runs["round"] == 0).all()
    dry = snakemake(tmp_path, TABLES, "-n", "--configfile", refined)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr


def test_an_undertrained_rate_is_rerun_at_twice_its_cap_one_job_per_run(tmp_path: Path) -> None:
    # one rate (nothing to extend), capped at 20 steps while still gaining over its patience
    config = _study(
        tmp_path,
        [0.01],
        {"enabled": True, "rounds": 1},
        sweep={"seeds": [0, 1], "pack": False},
        recipe={"patience": 10, "max_steps": 20},
    )
    counts = _run(tmp_path, config)
    assert counts["scratch"] == counts["scratch_added"] == counts["evaluate_scratch_added"] == 2
    (decision,) = _decisions(tmp_path)
    assert decision["add"] == [{"lr": "0.01", "cap": 40, "seeds": [0, 1], "why": "undertrained"}]
    runs = pd.read_csv(tmp_path / TABLES).sort_values(["round", "seed"])
    assert runs["round"].tolist() == [0, 0, 1, 1] and runs["max_steps"].tolist() == [20, 20, 40, 40]
    assert runs["superseded"].tolist() == [True, True, False, False]
    assert runs["run_dir"].iloc[2].endswith("n16/lr0.01/cap40/s0")
    (cell,) = pd.read_csv(tmp_path / "results" / "tables" / "summary.csv").itertuples()
    rerun = runs[runs["round"] == 1]
    assert cell.refine_rounds == 1 and cell.n_seeds == 2 and cell.lr_at_edge == "unbracketed"
    assert cell.val_rel_l2_mean == pytest.approx(rerun["val_rel_l2"].mean(), rel=1e-5)
