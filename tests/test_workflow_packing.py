"""The test study trained packed (sweep.pack: one job per cell) and unpacked (one per run).

Both studies run with two learning rates, so every packed job trains a cell of two members as
one batched model. The tables must have the same structure (columns, runs, cells) and each
run's errors must agree: a packed member follows its separate run's trajectory up to float32
summation order (``tests/test_packing.py``), so errors are compared at 1% relative, far
inside the lr-to-lr and seed-to-seed spread the tables report. Then a seed is added to the
packed study: the cells rerun, and the members that had finished are re-emitted from their
``final.pt`` rather than trained again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, job_counts, snakemake

pytestmark = pytest.mark.slow

CONFIG = ROOT / "config" / "test.yaml"
LRS = [0.001, 0.003]


def _config(workdir: Path, **sweep: object) -> str:
    config = yaml.safe_load(CONFIG.read_text())
    config["sweep"] = {**config["sweep"], "lr": LRS, **sweep}
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out, counts = {}, {}
    for name, pack in (("packed", True), ("unpacked", False)):
        workdir = tmp_path_factory.mktemp(name)
        config = _config(workdir, pack=pack)
        result = snakemake(workdir, "--cores", "2", "--configfile", config)
        assert result.returncode == 0, result.stderr[-5000:]
        counts[name] = job_counts(result.stdout + result.stderr)
        out[name] = workdir
    # the same rules either way: one job per cell (of len(LRS) members), or one per run
    for rule in ("finetune", "scratch", "evaluate_finetune", "evaluate_scratch"):
        assert counts["unpacked"][rule] == len(LRS) * counts["packed"][rule] > 0, rule
    return out


def test_packed_and_unpacked_studies_give_the_same_tables(studies: dict[str, Path]) -> None:
    tables = {
        name: {
            table: pd.read_csv(workdir / "results" / "tables" / f"{table}.csv")
            for table in ("runs", "summary", "data_efficiency")
        }
        for name, workdir in studies.items()
    }
    for table in ("runs", "summary", "data_efficiency"):
        packed, unpacked = tables["packed"][table], tables["unpacked"][table]
        assert list(packed.columns) == list(unpacked.columns), table
        assert len(packed) == len(unpacked), table
    runs = tables["packed"]["runs"].merge(
        tables["unpacked"]["runs"], on="run_dir", suffixes=("_packed", "_unpacked")
    )
    assert len(runs) == len(tables["packed"]["runs"])
    assert (runs["status_packed"] == runs["status_unpacked"]).all()
    for metric in ("test_rel_l2_mean", "val_rel_l2"):
        a, b = runs[f"{metric}_packed"], runs[f"{metric}_unpacked"]
        both = a.notna() & b.notna()
        assert ((a[both] - b[both]).abs() <= 0.01 * b[both].abs()).all(), metric
    trained = [d for d in runs["run_dir"] if not d.startswith("runs/zeroshot")]
    for name, size in (("packed", len(LRS)), ("unpacked", 1)):
        for run_dir in trained:
            summary = json.loads((studies[name] / "results" / run_dir / "train.json").read_text())
            assert summary["pack_size"] == size and summary["packed"] == (size > 1)


def test_adding_a_seed_re_emits_finished_members(studies: dict[str, Path]) -> None:
    workdir = studies["packed"]
    run = workdir / "results/runs/scratch/tiny/poisson_5_10/n4/lr0.001/s0"
    before = json.loads((run / "train.json").read_text())
    config = _config(workdir, seeds=[0, 1])
    result = snakemake(workdir, "--cores", "2", "--configfile", config)
    assert result.returncode == 0, result.stderr[-5000:]
    assert json.loads((run / "train.json").read_text()) == before  # not trained again
    assert json.loads((run.parent / "s1" / "train.json").read_text())["seed"] == 1
    log = workdir / "results/logs/runs/scratch/tiny/poisson_5_10/n4/train.log"
    assert "re-emitted" in log.read_text()
