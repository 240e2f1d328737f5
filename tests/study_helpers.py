"""Fake studies for the table, statistics and publishing tests: run directories shaped like the
engine's (metrics.json, train.json, predictions.h5) with known errors, and no training."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import yaml
from snakemake.utils import validate

from pdetransfer.cli import main
from pdetransfer.data.datasets import FORMAT_VERSION
from pdetransfer.data.systems import file_system
from pdetransfer.engine.training.run_files import LOG_COLUMNS
from pdetransfer.layout import DATASET_FILE, Run
from pdetransfer.study.config import Study

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
BASE_ERROR = {"finetune": 0.1, "scratch": 0.5, "zeroshot": 0.8, "head": 0.3, "lora": 0.105}
TABLE_FLAGS = {
    "runs": "--runs-csv",
    "summary": "--summary-csv",
    "data_efficiency": "--efficiency-csv",
    "scaling_fits": "--fits-csv",
}


def load_config(name: str = "test") -> dict:
    """A config file with the schema's defaults filled, as the workflow sees it."""
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    validate(config, str(SCHEMA))
    return config


def rich_config() -> dict:
    """The test config with a sweep worth aggregating: 4 N, 3 learning rates, 2 seeds and a
    third model size in the ``shifts`` experiment (fits against model size)."""
    config = copy.deepcopy(load_config("test"))
    config["sizes"]["small"] = "2,6"
    config["sweep"].update(n=[4, 8, 16, 32], lr=[0.001, 0.003, 0.01], seeds=[0, 1])
    return config


def never(run: Run) -> bool:
    return False


def true_error(run: Run) -> float:
    """The fake runs' error without noise: a power law in N, lower when fine-tuning."""
    return BASE_ERROR[run.mode] * (run.n or 1) ** -0.3


def fake_results(
    root: Path,
    study: Study,
    *,
    samples: int = 8,
    noise: float = 0.0,
    lr_factor: Callable[[Run], float] = lambda run: 1.0,
    diverged: Callable[[Run], bool] = never,
    undertrained: Callable[[Run], bool] = never,
    skip: Callable[[Run], bool] = never,
) -> None:
    """Write every run of ``study`` under ``root`` (except ``skip``-ped ones).

    A run's per-sample errors are ``true_error * lr_factor`` times (1 + ``noise`` x a standard
    normal, clipped positive); its validation error is the noise-free value, so the learning
    rate with the smallest ``lr_factor`` is chosen. A ``diverged`` run writes what the engine
    writes for one: status ``diverged``, null test metrics and a deceptively small validation
    error (the last one before the divergence), which the selection must ignore. An
    ``undertrained`` run stops at its cap with its validation error still falling (9% over its
    last patience of 2 steps); the others stop on their plateau.
    """
    rng = np.random.default_rng(0)
    for run in study.runs():
        if skip(run):
            continue
        err = true_error(run) * (lr_factor(run) if run.trains else 1.0)
        per_sample = np.clip(err * (1 + noise * rng.standard_normal(samples)), err / 100, None)
        bad = run.trains and diverged(run)
        stop = "diverged" if bad else ("cap" if undertrained(run) else "plateau")
        write_run(root / run.directory, run, per_sample, err, stop=stop)
        d = root / run.directory
        with h5py.File(d / "predictions.h5", "w") as h5:
            u = rng.standard_normal((2, 16, 16)).astype(np.float32)
            h5["f"] = rng.standard_normal((2, 16, 16)).astype(np.float32)
            h5["u"] = u
            h5["u_pred"] = u + err * rng.standard_normal(u.shape).astype(np.float32)


def write_run(d: Path, run: Run, per_sample: np.ndarray, val: float, stop: str) -> None:
    """A run directory as the engine leaves it: ``metrics.json`` with ``per_sample`` test
    errors, and for a trained run ``train.json`` and ``log.csv`` (4 steps, one check each,
    patience 2) ending in validation error ``val``. ``stop``: ``plateau`` (no gain over the
    last 2 steps), ``cap`` (9% gain over them) or ``diverged`` (null test metrics)."""
    d.mkdir(parents=True)
    bad = stop == "diverged"
    mean = None if bad else float(per_sample.mean())
    metrics = {
        "status": "diverged" if bad else "ok",
        "rel_l2_mean": mean,
        "rel_l2_median": mean,
        "rel_l2_std": None if bad else float(per_sample.std()),
        "nrmse": mean,
        "max_abs_error": mean,
        "rel_l2_band_low": mean,
        "rel_l2_band_mid": mean,
        "rel_l2_band_high": mean,
        "n_samples": len(per_sample),
        "seconds": 0.1,
        "checkpoint": {"model": run.size, "parameters": parameters(run.size)},
    }
    if not bad:
        metrics["rel_l2_per_sample"] = per_sample.tolist()
    (d / "metrics.json").write_text(json.dumps(metrics))
    if not run.trains:
        return
    checks = {"plateau": [1.2, 1.0, 1.0, 1.0], "cap": [1.2, 1.1, 1.05, 1.0]}.get(stop, [1.0])
    summary = {
        "status": "diverged" if bad else "completed",
        "stop_reason": stop,
        "still_improving": stop == "cap",
        "best_val_rel_l2": val / 1000 if bad else val,
        "best_step": 4 if stop == "cap" else 2,
        "best_epoch": 1,
        "epochs_run": 2,
        "steps": 4,
        "max_steps": 4,
        "val_every": 1,
        "patience": None if bad else 2,
        "loss": "sse",
        "device": "cpu",
        "train_seconds": 0.5,
    }
    (d / "train.json").write_text(json.dumps(summary))
    rows = [f"{i + 1},1,0.001,1.0,{val * c:.8g},0.1" for i, c in enumerate(checks)]
    (d / "log.csv").write_text("\n".join([",".join(LOG_COLUMNS), *rows]) + "\n")


def parameters(size: str) -> int:
    """Parameter counts of the fake sizes (growing with size, as the fits need)."""
    return {"tiny": 100, "small": 400, "xs": 1000, "s": 4000}[size]


def write_test_file(path: Path, system: str, param_range: list[float], param: np.ndarray) -> None:
    """A dataset file as the data stage writes it, holding only what the tables read: its
    samples' physical parameter ``param`` (fields and coefficients zero, grid 16)."""
    n, grid = len(param), 16
    spec = file_system(system)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["fields"] = np.zeros((n, 2, grid, grid), np.float32)
        h5["tensor"] = np.zeros((n, len(spec.tensor_names)), np.float32)
        h5["coefficients"] = np.zeros((n, 6), np.float32)
        h5["param"] = np.asarray(param, np.float64)
        h5["sparsity"] = np.zeros(n)
        h5.attrs.update(system=system, param_name=spec.param_name, param_range=param_range)
        h5.attrs.update(split="test", grid=grid, n_samples=n, base_seed=0, seed=0, kappa=1.0)
        h5.attrs["format_version"] = FORMAT_VERSION


def fake_test_files(root: Path, study: Study, samples: int = 8) -> None:
    """Every downstream dataset's test file under ``root``, its samples' parameter spread
    evenly over the dataset's range (both ends included)."""
    for name in {run.downstream for run in study.runs()}:
        spec = study.config["datasets"][name]
        param = np.linspace(*spec["range"], samples)
        path = root / DATASET_FILE.format(dataset=name, split="test")
        write_test_file(path, spec["system"], spec["range"], param)


def write_study(config: dict, path: Path) -> Path:
    """The study file ``pdetransfer study`` writes for ``config``."""
    assert main(["study", "--config-json", json.dumps(config), "--out", str(path)]) == 0
    return path


def aggregate_argv(study_file: Path, results: Path, tables: Path, *extra: str) -> list[str]:
    """``pdetransfer aggregate`` writing every table under ``tables``."""
    argv = ["aggregate", "--study", str(study_file), "--results", str(results)]
    for name, flag in TABLE_FLAGS.items():
        argv += [flag, str(tables / f"{name}.csv")]
    return [*argv, "--bootstrap", "200", *extra]


# ---------------------------------------------------------------------------- coverage
#: Fabricated transfer curves of known truth: err = scale * N^-0.5, so N_scratch / N_finetune
#: = (scale_scratch / scale_finetune)^2 = 4 at every target.
TRUE_SCALE = {"finetune": 0.5, "scratch": 1.0}
TRUE_RATIO = 4.0
COVERAGE_NS = [8, 32, 128, 512]  # the reproduce study's sweep
#: Fine-tuning reaches it at N = 24, scratch at N = 96: both well inside the sweep, so that
#: an interval reaching past its ends says something about the method, not the sweep.
COVERAGE_TARGET = TRUE_SCALE["finetune"] / 24**0.5
#: Log-sd of the seed factor of a run and of the difficulty of a test sample.
SEED_LOG_SD, DIFFICULTY_LOG_SD = 0.15, 0.4
#: The median of a run's expected per-sample errors over its truth: the difficulty's median
#: (lognormal with mean 1), what a cell's median error estimates.
TRUE_MEDIAN_FACTOR = float(np.exp(-(DIFFICULTY_LOG_SD**2) / 2))


def coverage_config(seeds: int, downstream: int, test: int) -> dict:
    """A study of ``downstream`` independent transfer tasks (each its own test set of ``test``
    samples), one learning rate, ``seeds`` seeds over :data:`COVERAGE_NS`."""
    names = [f"d{i}" for i in range(downstream)]
    spec = {"system": "poisson", "range": [1, 5], "grid": 16, "train": 512, "val": 8}
    config = {
        "datasets": {name: {**spec, "test": test} for name in ["pre", *names]},
        "sizes": {"xs": "xs"},
        "pretrain": {"pre": ["pre"]},
        "experiments": {"transfer": {"pretrain": "pre", "downstream": names}},
        "sweep": {
            "n": COVERAGE_NS,
            "lr": [0.001],
            "seeds": list(range(seeds)),
            "modes": ["finetune", "scratch"],
        },
        "training": {"downstream": {"epochs": 2, "batch_size": 4}},
        "report": {"targets": [COVERAGE_TARGET]},
    }
    validate(config, str(SCHEMA))
    return config


def seeded_errors(
    study: Study,
    rng: np.random.Generator,
    seed_sd: float = SEED_LOG_SD,
    difficulty_sd: float = DIFFICULTY_LOG_SD,
) -> dict[Run, tuple[np.ndarray, float]]:
    """Per run, test errors per sample and a validation error of known truth, with the two
    sources of chance the intervals must cover: each run's errors times a lognormal seed factor
    (log-sd ``seed_sd``), each test sample's times a difficulty shared by every run of its
    dataset (log-sd ``difficulty_sd``); both factors have mean 1, so a cell's expected mean
    error is its truth. The validation error follows the run's seed factor."""
    difficulty = {
        name: rng.lognormal(-(difficulty_sd**2) / 2, difficulty_sd, spec["test"])
        for name, spec in study.config["datasets"].items()
    }
    errors = {}
    for run in study.runs():
        seed = rng.lognormal(-(seed_sd**2) / 2, seed_sd)
        truth = TRUE_SCALE[run.mode] * run.n**-0.5
        errors[run] = truth * seed * difficulty[run.downstream], truth * seed
    return errors


def seeded_results(root: Path, study: Study, rng: np.random.Generator) -> None:
    """The runs of :func:`seeded_errors` as run directories, every one stopped on its plateau."""
    for run, (per_sample, val) in seeded_errors(study, rng).items():
        write_run(root / run.directory, run, per_sample, val, stop="plateau")
