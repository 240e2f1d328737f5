"""The Snakemake workflow through the real ``snakemake`` command: DAGs, lint, config errors.

Every test runs snakemake in a temporary working directory (``--directory``), so nothing is
written into the repository's results/. Expected job counts are computed here from the
config's lists, independently of pdetransfer.study.config, which the workflow uses.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from study_helpers import fake_results, load_config
from workflow_helpers import ROOT, job_counts, snakemake

from pdetransfer.study.aggregation import read_csv
from pdetransfer.study.config import Study

MODES = ["finetune", "scratch", "zeroshot"]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())


def expected_jobs(cfg: dict, pack: bool = True) -> Counter:
    """Job counts per rule implied by a config's lists (written independently of the code).

    With ``pack`` a fine-tune or scratch job trains a whole cell (all learning rates x seeds)
    and another evaluates it, else each job is one run (the rule names are the same); zero-shot
    runs are evaluated one by one either way.
    """
    sweep = cfg.get("sweep", {})
    ns, lrs, seeds = sweep["n"], sweep["lr"], sweep.get("seeds", [0])
    modes = sweep.get("modes", MODES)
    gallery_n = cfg.get("report", {}).get("gallery", {}).get("n") or min(ns)
    gallery_of: dict[str, str] = {}  # downstream dataset -> first experiment using it
    for name, exp in cfg["experiments"].items():
        for ds in exp["downstream"]:
            gallery_of.setdefault(ds, name)
    pretrains, finetunes, scratches, zeroshots, predicts = set(), set(), set(), set(), set()
    files: set[tuple[str, str]] = set()
    dataset_stats: set[str] = set()
    for name, exp in cfg["experiments"].items():
        sizes = exp.get("sizes", list(cfg["sizes"]))
        members = cfg["pretrain"][exp["pretrain"]]
        if {"finetune", "zeroshot"} & set(modes):
            files |= {(ds, split) for ds in members for split in ("train", "val")}
            if len(members) == 1:
                dataset_stats.add(members[0])
        for size in sizes:
            if {"finetune", "zeroshot"} & set(modes):
                pretrains.add((exp["pretrain"], size))
            for ds in exp["downstream"]:
                files.add((ds, "test"))
                if "zeroshot" in modes:
                    zeroshots.add((exp["pretrain"], size, ds))
                    if size == sizes[-1] and gallery_of[ds] == name:
                        predicts.add(("zeroshot", exp["pretrain"], size, ds))
                for n in ns:
                    for lr in lrs:
                        for seed in seeds:
                            gallery = (
                                gallery_of[ds] == name
                                and size == sizes[-1]
                                and n == gallery_n
                                and seed == seeds[0]
                            )
                            if "finetune" in modes:
                                finetunes.add((exp["pretrain"], size, ds, n, lr, seed))
                                if gallery:
                                    predicts.add(("finetune", exp["pretrain"], size, ds, n, lr))
                            if "scratch" in modes:
                                scratches.add((size, ds, n, lr, seed))
                                if gallery:
                                    predicts.add(("scratch", size, ds, n, lr))
                if {"finetune", "scratch"} & set(modes):
                    files |= {(ds, "train"), (ds, "val")}
                if "scratch" in modes:
                    dataset_stats.add(ds)
    # every dataset gets a card, which shows the stats of its train split where it has one
    cards = {ds for ds, _ in files}
    dataset_stats |= {ds for ds, split in files if split == "train"}
    exps = cfg["experiments"].values()
    mixed = {e["pretrain"] for e in exps if len(cfg["pretrain"][e["pretrain"]]) > 1}
    per_downstream = sum(len(e["downstream"]) for e in exps)
    finetune_cells = {run[:4] for run in finetunes}  # (pretrain, size, downstream, n)
    scratch_cells = {run[:3] for run in scratches}  # (size, downstream, n)
    counts = Counter(
        generate=len(files),
        check=len(files),
        dataset_stats=len(dataset_stats),
        card=len(cards),
        mixed_stats=len(mixed),
        pretrain=len(pretrains),
        finetune=len(finetune_cells) if pack else len(finetunes),
        scratch=len(scratch_cells) if pack else len(scratches),
        evaluate_finetune=len(finetune_cells) if pack else len(finetunes),
        evaluate_scratch=len(scratch_cells) if pack else len(scratches),
        evaluate_zeroshot=len(zeroshots),
        predict=len(predicts),
        study=1,
        aggregate=1,
        plot_error_vs_n=per_downstream,
        plot_gallery=len(gallery_of),
        plot_error_vs_size=sum(len(e.get("sizes", cfg["sizes"])) > 1 for e in exps),
        plot_ood=sum(
            len(e["downstream"]) > 1 and len(cfg["pretrain"][e["pretrain"]]) == 1 for e in exps
        ),
        plot_mixed=sum(len(cfg["pretrain"][e["pretrain"]]) > 1 for e in exps),
        all=1,
    )
    if sweep.get("refine", {}).get("enabled"):  # every trained cell's first refinement round
        counts.update(refine_finetune=len(finetune_cells), refine_scratch=len(scratch_cells))
    return +counts  # drop zero entries, as snakemake's table does


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("name", ["config", "reproduce", "paper", "test", "architectures"])
def test_dry_run_job_counts_match_the_config(name: str, pack: bool, tmp_path: Path) -> None:
    result = snakemake(
        tmp_path, "-n", "--quiet", "rules", "--configfile", str(ROOT / "config" / f"{name}.yaml"),
        "--config", f"sweep={{pack: {str(pack).lower()}}}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr) == expected_jobs(load(name), pack)


def test_the_train_rules_pass_each_size_its_architecture(tmp_path: Path) -> None:
    config = str(ROOT / "config" / "architectures.yaml")
    result = snakemake(tmp_path, "-n", "-p", "--configfile", config)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if " -- train " in line]
    for size, flags in (
        ("fno_xs", "--model xs --architecture fno"),
        ("unet_8_3", "--model 8,3 --architecture unet"),
    ):
        mine = [c for c in commands if f"/{size}" in c]
        assert mine and all(flags in c for c in mine), (size, mine[:1])


def test_lint_is_clean(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "--lint", "--configfile", str(ROOT / "config" / "test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def _break(cfg: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


ADVDIFF_32 = {"system": "advdiff", "grid": 32, "train": 32, "val": 8, "test": 8}

# (edits to config/test.yaml, the key the message must name); one kind of mistake each.
BROKEN = {
    "unknown key": ({"sweep.bogus": 1}, "sweep"),
    "not an integer": ({"sweep.n": [4, "8x"]}, "sweep.n[1]"),
    "below a minimum": ({"training.downstream.epochs": 0}, "training.downstream.epochs"),
    "batch size 0": ({"training.pretrain.batch_size": 0}, "training.pretrain.batch_size"),
    "negative lr": ({"sweep.lr": [-1e-3]}, "sweep.lr[0]"),
    "empty lr list": ({"sweep.lr": []}, "sweep.lr"),
    "unknown dataset": (
        {"experiments.shifts.downstream": ["poisson_5_10", "nope"]},
        "experiments.shifts.downstream",
    ),
    "unknown pre-training": ({"experiments.mixed.pretrain": "nope"}, "experiments.mixed.pretrain"),
    "unknown size in experiment": (
        {"experiments.mixed.sizes": ["huge"]},
        "experiments.mixed.sizes",
    ),
    "unknown preset": ({"sizes.tiny": "huge"}, "sizes.tiny"),
    "zero modes": ({"sizes.tiny": "0,4"}, "sizes.tiny"),
    "modes beyond the grid": ({"sizes.tiny": "12,4"}, "sizes.tiny"),
    "unknown architecture": ({"sizes.tiny": "vit:2,4"}, "sizes.tiny"),
    "a preset for the U-Net": ({"sizes.tiny": "unet:xs"}, "sizes.tiny"),
    "U-Net deeper than the grid": ({"sizes.tiny": "unet:4,5"}, "sizes.tiny"),
    "empty pre-training entry": ({"pretrain.mixed": []}, "pretrain.mixed"),
    "N above the train set": ({"sweep.n": [4, 64]}, "sweep.n"),
    "decreasing range": ({"datasets.poisson_5_10.range": [10, 5]}, "datasets.poisson_5_10.range"),
    "negative eigenvalue": ({"datasets.poisson_1_5.range": [-5, 10]}, "datasets.poisson_1_5.range"),
    "fractional omega": (
        {"datasets.helmholtz_1_10.range": [1.5, 10]},
        "datasets.helmholtz_1_10.range",
    ),
    "omega 0": ({"datasets.helmholtz_1_10.range": [0, 10]}, "datasets.helmholtz_1_10.range"),
    "Psi above the maximum": (
        {"datasets.poisson_5_10": {**ADVDIFF_32, "range": [1, 2000]}, "sweep.modes": ["scratch"]},
        "datasets.poisson_5_10.range",
    ),
    "Psi out of reach on the grid": (
        {"datasets.poisson_5_10": {**ADVDIFF_32, "range": [1, 100]}, "sweep.modes": ["scratch"]},
        "datasets.poisson_5_10.range",
    ),
    "mixed physics on two grids": ({"datasets.helmholtz_1_10.grid": 32}, "pretrain.mixed"),
    "downstream off the pre-training grid": (
        {"datasets.poisson_5_10.grid": 32},
        "experiments.mixed.downstream",
    ),
    "batch smaller than the GPUs": ({"resources.train.gpu": 8}, "resources.train.gpu"),
    "report N not swept": ({"report.size_n": [16]}, "report.size_n"),
}


@pytest.mark.parametrize(("edits", "key"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_config_stops_before_any_job(edits: dict, key: str, tmp_path: Path) -> None:
    cfg = load("test")
    for path, value in edits.items():
        _break(cfg, path, value)
    configfile = tmp_path / "broken.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    workdir = tmp_path / "wd"
    result = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"invalid config: config key '{key}': " in output, output[-2000:]
    assert "Building DAG" not in output
    assert not (workdir / "results").exists()


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """``1e-3`` (a string to YAML 1.1) in a configfile, and any number in a nested --config
    value (which Snakemake leaves a string), reach the jobs as numbers."""
    text = (ROOT / "config" / "test.yaml").read_text().replace("lr: [0.001]", "lr: [1e-3, 5E-4]")
    assert "lr: [1e-3, 5E-4]" in text
    configfile = tmp_path / "exponent.yaml"
    configfile.write_text(text)
    result = snakemake(tmp_path / "wd", "-n", "--configfile", str(configfile))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/n4/lr0.001/s0/model.pt" in result.stdout
    assert "/n4/lr0.0005/s0/model.pt" in result.stdout
    result = snakemake(
        tmp_path / "wd",
        "-n",
        "--configfile",
        str(configfile),
        "--config",
        "sweep={n: [4], lr: [2e-3]}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/n4/lr0.002/s0/model.pt" in result.stdout
    assert "lr0.001/" not in result.stdout


def test_configfile_replaces_the_default_study(tmp_path: Path) -> None:
    """--configfile gives exactly that study: the default study's datasets do not leak in."""
    result = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "test.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "advdiff" not in result.stdout


def test_partial_target_is_one_job_that_depends_on_no_run(tmp_path: Path) -> None:
    """`snakemake partial` schedules itself only, in a fresh directory and every time after."""
    result = snakemake(
        tmp_path, "-n", "partial", "--configfile", str(ROOT / "config" / "test.yaml")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr) == Counter(partial=1)


@pytest.mark.slow
def test_partial_target_tables_a_half_finished_study(tmp_path: Path) -> None:
    """With every scratch run missing, `snakemake partial` writes the tables of the rest and
    lists the scratch runs, trains nothing and leaves the full study's files alone."""
    configfile = ROOT / "config" / "test.yaml"
    study = Study(load_config("test"))
    fake_results(tmp_path / "results", study, skip=lambda run: run.mode == "scratch")
    for _ in range(2):  # the rule has no output, so asking again runs it again
        result = snakemake(tmp_path, "--cores", "1", "partial", "--configfile", str(configfile))
        assert result.returncode == 0, result.stderr[-3000:]
        assert job_counts(result.stdout + result.stderr) == Counter(partial=1)
    tables = tmp_path / "results" / "partial" / "tables"
    missing = read_csv(tables / "missing.csv")
    scratch_runs = [r for r in study.runs() if r.mode == "scratch"]
    assert set(missing["mode"]) == {"scratch"} and missing["n_missing"].sum() == len(scratch_runs)
    summary = read_csv(tables / "summary.csv")
    assert set(summary["mode"]) == {"finetune", "zeroshot"}
    assert not (tmp_path / "results" / "study.json").exists()
    assert not (tmp_path / "results" / "tables").exists()
    log = (tmp_path / "results" / "logs" / "partial.log").read_text()
    finished = len(study.runs()) - len(scratch_runs)
    assert f"{finished} of {len(study.runs())} runs finished" in log
