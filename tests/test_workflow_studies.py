"""Several studies in one directory through the Snakemake CLI: the second reuses the first's
datasets, pre-training and runs and writes its own tables; one that defines a shared dataset
differently is refused before any job runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, job_counts, snakemake

pytestmark = pytest.mark.slow

STUDY_RULES = {"all", "study", "aggregate", "plot_error_vs_n", "plot_gallery"}


def _write(tmp_path: Path, config: dict) -> str:
    path = tmp_path / f"{config['study']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_two_studies_share_a_directory_and_a_conflict_is_refused(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["datasets"] = {k: config["datasets"][k] for k in ("poisson_1_5", "poisson_5_10")}
    config["pretrain"] = {"poisson_1_5": ["poisson_1_5"]}
    config["experiments"] = {
        "shifts": {"pretrain": "poisson_1_5", "downstream": ["poisson_5_10"], "sizes": ["tiny"]}
    }
    config["sweep"].update(n=[4], modes=["finetune", "scratch"])
    first = {"study": "first", **config}
    result = snakemake(tmp_path, "--cores", "2", "--configfile", _write(tmp_path, first))
    assert result.returncode == 0, result.stderr[-5000:]

    second = copy.deepcopy({**config, "study": "second"})
    second["report"]["targets"] = [0.7]  # its own tables, the same runs
    result = snakemake(tmp_path, "--cores", "2", "--configfile", _write(tmp_path, second))
    assert result.returncode == 0, result.stderr[-5000:]
    assert set(job_counts(result.stdout + result.stderr)) == STUDY_RULES
    results = tmp_path / "results"
    for name in ("first", "second"):
        own = results / "studies" / name
        assert (own / "study.json").is_file() and (own / "tables" / "summary.csv").is_file()
        assert (own / "plots" / "error_vs_n" / "shifts" / "poisson_5_10.png").is_file()
        assert (own / "logs" / "aggregate.log").is_file()
        for name in ("compute.csv", "mode_crossover.csv", "size_gain.csv"):
            assert (own / "tables" / name).is_file()
    assert not (results / "tables").exists() and not (results / "study.json").exists()
    compute = pd.read_csv(results / "studies" / "second" / "tables" / "compute.csv")
    assert {"data", "pretrain", "finetune", "scratch", "evaluate"} <= set(compute["stage"])
    efficiency = (results / "studies" / "second" / "tables" / "data_efficiency.csv").read_text()
    assert "0.7" in efficiency and "0.9" not in efficiency

    third = copy.deepcopy({**config, "study": "third"})
    third["datasets"]["poisson_5_10"]["train"] = 16
    result = snakemake(tmp_path, "-n", "--configfile", _write(tmp_path, third))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "config key" in line]
    assert len(lines) == 1, output[-3000:]
    assert "Building DAG" not in output
    assert "'datasets.poisson_5_10'" in lines[0]
    assert "study 'third'" in lines[0] and "study 'first'" in lines[0]
