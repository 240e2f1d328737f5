"""The test study (config/test.yaml) run for real through ``snakemake``: every rule, tables,
plots and report; then the behaviour users rely on: nothing left to do, a partial rerun of
one target, new sweep values adding only their own jobs, plots redrawn without retraining.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    ROOT,
    held_training_env,
    job_counts,
    snakemake,
    snakemake_argv,
    wait_for_hold,
)

from pdetransfer.engine.models.normalization import CHANNELS
from pdetransfer.engine.models.registry import parse_model

CONFIG = str(ROOT / "config" / "test.yaml")
RUN = "results/runs/finetune/poisson_1_5/tiny/poisson_5_10/n4/lr0.001/s0"
TRAINING_RULES = {"generate", "dataset_stats", "mixed_stats", "pretrain", "finetune", "scratch"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    result = snakemake(workdir, "--cores", "2", "--configfile", CONFIG)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_tables_and_plots_exist(study_dir: Path) -> None:
    results = study_dir / "results"
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert set(runs["mode"]) == {"finetune", "scratch", "zeroshot"}
    assert len(runs) == 23
    assert runs["test_rel_l2_mean"].between(0, 100).all()
    assert runs.loc[runs["mode"] != "zeroshot", "val_rel_l2"].notna().all()
    summary = pd.read_csv(results / "tables" / "summary.csv")
    assert len(summary) == 23  # one lr and one seed: every run is its own cell
    efficiency = pd.read_csv(results / "tables" / "data_efficiency.csv")
    assert len(efficiency) == 5 * 2
    # One seed: test samples alone, flagged; no row is a headline, and each says why.
    assert set(efficiency["interval_method"]) == {"sample_bootstrap"}
    assert (efficiency["seed_df"] == 0).all() and not efficiency["headline"].any()
    assert efficiency["not_headline_because"].str.contains("one_seed:finetune").all()
    trained = runs[runs["mode"] != "zeroshot"]
    assert trained["hit_cap"].all()  # a fixed budget of 2 epochs: every run reaches its end
    assert trained["last_window_gain"].notna().all()
    assert (runs["status"] == "completed").all()
    fits = pd.read_csv(results / "tables" / "scaling_fits.csv")
    assert len(fits) == 5 * 2 and fits["note"].str.startswith("too few points (2)").all()
    mixed = pd.read_csv(results / "tables" / "mixed_comparison.csv")  # fine-tune at 2 N, zero-shot
    assert sorted(zip(mixed["mode"], mixed["n"], strict=True)) == [
        ("finetune", 4), ("finetune", 8), ("zeroshot", 0),
    ]  # fmt: skip
    assert set(mixed["single_pretrain"]) == {"poisson_1_5"} and mixed["ratio"].gt(0).all()
    plots = sorted(
        p.relative_to(results / "plots").as_posix() for p in results.glob("plots/**/*.png")
    )
    assert plots == [
        "error_vs_n/mixed/poisson_5_10.png",
        "error_vs_n/shifts/helmholtz_1_10.png",
        "error_vs_n/shifts/poisson_5_10.png",
        "error_vs_size/shifts.png",
        "gallery/helmholtz_1_10.png",
        "gallery/poisson_5_10.png",
        "mixed/mixed.png",
        "ood/shifts.png",
    ]
    for png in results.glob("plots/**/*.png"):
        assert png.with_suffix(".svg").stat().st_size > 1000
    # the engine's resume state is not an output, and the run keeps it beside the model
    assert (study_dir / RUN / "model.pt").exists()
    # a card per dataset, from its files, stats and check reports
    cards = sorted(p.parent.name for p in results.glob("data/*/card.md"))
    assert cards == ["helmholtz_1_10", "poisson_1_5", "poisson_5_10"]
    card = (results / "data" / "helmholtz_1_10" / "card.md").read_text()
    assert "helmholtz: omega in [1, 10] on a 16 x 16 periodic grid" in card
    assert "| train | 32 | " in card and card.count(" | passed |") == 3
    assert "## Normalisation statistics" in card and "omega=" in card


def test_second_invocation_has_nothing_to_do(study_dir: Path) -> None:
    result = snakemake(study_dir, "-n", "--configfile", CONFIG)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_has_every_plot(study_dir: Path) -> None:
    report = study_dir / "results" / "report.html"
    result = snakemake(study_dir, "--report", str(report), "--configfile", CONFIG)
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    for name in ("error_vs_n", "error_vs_size", "ood", "mixed", "gallery", "data_efficiency"):
        assert name in html
    assert "Datasets" in html and "card.html" in html


def test_track_exports_every_run_of_the_study(study_dir: Path) -> None:
    """`snakemake track`: every run (23, and 3 pre-trainings) in the MLflow store, once."""
    pytest.importorskip("mlflow")
    result = snakemake(study_dir, "track", "--cores", "1", "--configfile", CONFIG)
    assert result.returncode == 0, result.stderr[-3000:]
    export = json.loads((study_dir / "results" / "tracking" / "export.json").read_text())
    assert (export["runs"], export["created"], export["unchanged"]) == (26, 26, 0)
    assert (study_dir / "results" / "tracking" / "mlflow.db").is_file()


def _dry_run(study_dir: Path, *args: str, config: str = CONFIG) -> dict:
    result = snakemake(study_dir, "-n", *args, "--configfile", config)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(job_counts(result.stdout + result.stderr))


def _edited_config(study_dir: Path, name: str, **sections: dict) -> str:
    """The test config with some sections updated (as a user edits it), written beside."""
    config = yaml.safe_load(Path(CONFIG).read_text())
    for key, values in sections.items():
        config[key] = {**config.get(key, {}), **values}
    path = study_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_new_sweep_values_add_only_their_jobs(study_dir: Path) -> None:
    plots = {
        "plot_error_vs_n": 3,
        "plot_gallery": 2,
        "plot_error_vs_size": 1,
        "plot_ood": 1,
        "plot_mixed": 1,
    }
    tables = {"study": 1, "aggregate": 1, "all": 1}
    # N=16: 5 fine-tuning cells (pretrain, size, downstream) and 4 scratch cells, each
    # trained by one job and evaluated by another
    config = _edited_config(study_dir, "more_n", sweep={"n": [4, 8, 16]})
    assert _dry_run(study_dir, config=config) == {
        "finetune": 5,
        "scratch": 4,
        "evaluate_finetune": 5,
        "evaluate_scratch": 4,
        **tables,
        **plots,
    }
    # a second learning rate, packed: every cell's job again (its finished member re-emitted
    # from final.pt, the new one trained), so every cell is evaluated again (one job each) and
    # every gallery prediction redone; zero-shot runs are not touched
    config = _edited_config(study_dir, "more_lr", sweep={"lr": [0.001, 0.01]})
    assert _dry_run(study_dir, config=config) == {
        "finetune": 10,
        "scratch": 8,
        "evaluate_finetune": 10,
        "evaluate_scratch": 8,
        "predict": 8,
        **tables,
        **plots,
    }


def test_redrawing_a_plot_retrains_nothing(study_dir: Path) -> None:
    assert _dry_run(study_dir, "--forcerun", "plot_ood") == {"plot_ood": 1, "all": 1}


def test_partial_rerun_of_one_run(study_dir: Path) -> None:
    run = study_dir / RUN
    others = {p: p.stat().st_mtime_ns for p in study_dir.glob("results/**/model.pt")}
    for name in ("model.pt", "train.json", "metrics.json", "state.pt"):
        (run / name).unlink(missing_ok=True)
    result = snakemake(study_dir, f"{RUN}/metrics.json", "--cores", "2", "--configfile", CONFIG)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts == {"finetune": 1, "evaluate_finetune": 1}
    for path, mtime in others.items():
        if path.parent != run:
            assert path.stat().st_mtime_ns == mtime, path
    # the whole study now only needs its tables and summary plots refreshed
    counts = _dry_run(study_dir)
    assert not TRAINING_RULES & set(counts)
    assert counts["aggregate"] == 1


def test_killed_training_resumes_with_rerun_incomplete(study_dir: Path) -> None:
    """A training job killed half-way (SIGKILL to the whole workflow, as when a node dies)
    keeps its state.pt; `--rerun-incomplete` picks the job up and training resumes there."""
    config = _edited_config(
        study_dir,
        "long_runs",
        sweep={"n": [4, 8, 16]},
        training={"downstream": {"epochs": 200, "batch_size": 4}},
    )
    run = study_dir / "results/runs/scratch/tiny/poisson_5_10/n16/lr0.001/s0"
    target = f"{run.relative_to(study_dir)}/model.pt"
    args = [*snakemake_argv(study_dir), target, "--cores", "1", "--configfile", config]
    marker = study_dir / "held"
    proc = subprocess.Popen(
        args,
        env=held_training_env(study_dir / "site", run, marker),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_hold(marker, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run / "state.pt").exists() and not (run / "model.pt").exists()

    assert snakemake(study_dir, "--unlock", "--configfile", CONFIG).returncode == 0
    result = snakemake(
        study_dir, target, "--cores", "1", "--rerun-incomplete", "--configfile", config
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads((run / "train.json").read_text())["steps"]
    cell = run.parent.parent.relative_to(study_dir / "results")  # one log per packed cell
    log = study_dir / "results/logs" / cell / "train.log"
    remaining = [int(m) for m in re.findall(r"train: \d+/(\d+)", log.read_text())]
    assert steps == 4 * 200 and remaining and max(remaining) < steps, log.read_text()[-2000:]
    assert re.search(r"resumed from step \d+ of 800, saved at ", log.read_text())


def test_a_unet_study_runs_through_snakemake(tmp_path: Path) -> None:
    """A size that names another architecture: pre-trained, fine-tuned and tabled as one."""
    config = yaml.safe_load(Path(CONFIG).read_text())
    config["datasets"] = {k: config["datasets"][k] for k in ("poisson_1_5", "poisson_5_10")}
    config["sizes"] = {"unet": "unet:4,2"}
    config["pretrain"] = {"poisson_1_5": ["poisson_1_5"]}
    config["experiments"] = {"shifts": {"pretrain": "poisson_1_5", "downstream": ["poisson_5_10"]}}
    config["sweep"] = {**config["sweep"], "n": [4], "modes": ["finetune", "zeroshot"]}
    path = tmp_path / "unet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(tmp_path / "wd", "--cores", "2", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-5000:]
    runs = pd.read_csv(tmp_path / "wd/results/tables/runs.csv")
    assert sorted(runs["mode"]) == ["finetune", "zeroshot"]
    assert set(runs["architecture"]) == {"unet"} and set(runs["parameters"]) == {
        parse_model("4,2", len(CHANNELS), "unet").parameters
    }
