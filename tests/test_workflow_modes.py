"""Every mode of the table through the Snakemake CLI: a reduced test study (config/test.yaml
with one experiment, one size and every mode) trained, tabulated and plotted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, snakemake

from pdetransfer.modes import MODES, full_finetune
from pdetransfer.study.statistics import SAMPLES_ONLY

pytestmark = pytest.mark.slow


def test_a_study_with_every_mode(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["datasets"] = {k: config["datasets"][k] for k in ("poisson_1_5", "poisson_5_10")}
    config["pretrain"] = {"poisson_1_5": ["poisson_1_5"]}
    config["experiments"] = {
        "shifts": {"pretrain": "poisson_1_5", "downstream": ["poisson_5_10"], "sizes": ["tiny"]}
    }
    config["sweep"].update(modes=list(MODES), lora_rank=2)
    path = tmp_path / "modes.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(tmp_path, "--cores", "2", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-5000:]

    tables = tmp_path / "results" / "tables"
    runs = pd.read_csv(tables / "runs.csv")
    assert sorted(set(runs["mode"])) == sorted(MODES)
    trainable = runs.groupby("mode")["trainable_parameters"].first()
    parameters = int(runs["parameters"].iloc[0])
    assert trainable["finetune"] == trainable["scratch"] == parameters
    assert trainable["zeroshot"] == 0
    assert 0 < trainable["head"] < parameters and 0 < trainable["lora"] < parameters
    summary = pd.read_csv(tables / "summary.csv")
    assert "trainable_parameters" in summary and summary["trainable_parameters"].notna().all()

    comparison = pd.read_csv(tables / "mode_comparison.csv")
    others = [m for m in MODES if m != full_finetune().name]
    assert sorted(set(comparison["mode"])) == sorted(others)
    assert len(comparison) == len(others) * len(config["sweep"]["n"])
    assert comparison["ratio"].gt(0).all() and (comparison["interval_method"] == SAMPLES_ONLY).all()
    assert (comparison["ratio_lo"] <= comparison["ratio_hi"]).all()
    thresholds = pd.read_csv(tables / "mode_threshold.csv", keep_default_na=False)
    assert sorted(thresholds["mode"]) == sorted(others)
    assert set(thresholds["bound"]) <= {"=", "<=", ">"}
    assert all((row.bound == ">") == (row.note != "") for row in thresholds.itertuples()
               if row.bound != "<=")  # fmt: skip
    crossovers = pd.read_csv(tables / "mode_crossover.csv", keep_default_na=False)
    assert sorted(crossovers["mode"]) == ["finetune", "head", "lora"]
    assert (crossovers["trainable_parameters"] == trainable[crossovers["mode"]].values).all()
    assert set(crossovers["crossover_bound"]) <= {"=", "<=", ">"}
    assert (tmp_path / "results" / "plots" / "error_vs_n" / "shifts" / "poisson_5_10.png").exists()

    # Medians, error per bin of Poisson's e (its test set's 8 samples in 4 bins) and every
    # fine-tuning mode against zero-shot, sample by sample.
    assert summary["test_rel_l2_median"].gt(0).all()
    assert comparison["ratio_median"].gt(0).all()
    bins = pd.read_csv(tables / "error_bins.csv")
    assert len(bins) == 4 * len(summary) and set(bins["param_name"]) == {"e"}
    assert (bins.groupby(["mode", "n"])["samples"].sum() == 8).all()
    assert (bins["param_lo"].min(), bins["param_hi"].max()) == (5, 10)
    forgetting = pd.read_csv(tables / "forgetting.csv")
    tuned = sorted(m.name for m in MODES.values() if m.trains and m.needs_pretrained)
    assert sorted(set(forgetting["mode"])) == tuned
    assert len(forgetting) == len(tuned) * len(config["sweep"]["n"])
    assert (
        forgetting["fraction_worse"].between(0, 1).all() and forgetting["median_ratio"].gt(0).all()
    )

    lora = next((tmp_path / "results" / "runs" / "lora").glob("**/model.pt"))
    info = subprocess.run(
        ["pdetransfer", "info", str(lora)], capture_output=True, text=True, check=True
    )
    assert "lora rank 2" in info.stdout
