"""The study's tables: every run, the best learning rate per cell, and data efficiency.

- ``runs.csv``: one row per run of the study (identity, test metrics, validation error,
  parameters, times), read from each run directory's ``metrics.json`` and ``train.json``.
- ``summary.csv``: per (mode, pre-training, size, downstream dataset, N) the learning rate
  with the lowest **validation** error averaged over seeds (never the test error: choosing on
  test would flatter every curve), with mean and standard deviation over seeds at that rate.
- ``data_efficiency.csv``: for each target test error, the N at which fine-tuning and scratch
  first reach it, interpolated linearly in log N - log error between the sweep's N values,
  and their ratio (the paper's "~128x fewer examples"). When a curve is already below the
  target at the smallest N, or never reaches it, the N is a bound, and the ratio says so.

Runs are enumerated from the study (the resolved config), not by scanning directories, so
stale runs of an earlier config never leak into the tables.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError
from pdetransfer.study.config import Run, Study

IDENTITY = ["mode", "pretrain", "size", "downstream", "n", "lr", "seed"]
METRIC_KEYS = [
    "rel_l2_mean",
    "rel_l2_median",
    "rel_l2_std",
    "nrmse",
    "max_abs_error",
    "rel_l2_band_low",
    "rel_l2_band_mid",
    "rel_l2_band_high",
]
CELL = ["mode", "pretrain", "size", "downstream", "n"]


def load_study(path: str | Path) -> Study:
    """The study recorded in ``study.json`` (written by ``pdetransfer study``)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"study file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise UserError(f"study file {path} is not valid JSON ({err.msg})") from None
    if not isinstance(record, dict) or "config" not in record:
        raise UserError(f"study file {path} has no 'config' (write it with `pdetransfer study`)")
    return Study(record["config"])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run the workflow before aggregating") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg})") from None


def run_row(study: Study, run: Run, results: Path) -> dict[str, Any]:
    """One row of runs.csv: a run's identity, its test metrics and its training summary."""
    directory = results / run.directory
    metrics = _read_json(directory / "metrics.json")
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise UserError(f"{directory / 'metrics.json'} lacks {', '.join(missing)}")
    checkpoint = metrics.get("checkpoint", {})
    row: dict[str, Any] = {
        "mode": run.mode,
        "pretrain": run.pretrain or "",
        "size": run.size,
        "downstream": run.downstream,
        "n": run.n if run.n is not None else 0,
        "lr": float(run.lr) if run.lr is not None else math.nan,
        "seed": run.seed if run.seed is not None else study.config["training"]["pretrain"]["seed"],
        "system": study.datasets[run.downstream]["system"],
        "model": checkpoint.get("model", study.sizes[run.size]),
        "parameters": checkpoint.get("parameters"),
        **{f"test_{k}": metrics[k] for k in METRIC_KEYS},
        "n_test": metrics.get("n_samples"),
        "eval_seconds": metrics.get("seconds"),
    }
    if run.trains:
        summary = _read_json(directory / "train.json")
        row.update(
            val_rel_l2=summary.get("best_val_rel_l2"),
            best_epoch=summary.get("best_epoch"),
            epochs_run=summary.get("epochs_run"),
            steps=summary.get("steps"),
            train_seconds=summary.get("train_seconds"),
        )
    else:
        row.update(
            val_rel_l2=math.nan,
            best_epoch=math.nan,
            epochs_run=0,
            steps=0,
            train_seconds=0.0,
        )
    row["run_dir"] = run.directory
    return row


def collect_runs(study: Study, results: str | Path) -> pd.DataFrame:
    """runs.csv as a frame: every run of the study, in the study's order."""
    results = Path(results)
    return pd.DataFrame([run_row(study, run, results) for run in study.runs()])


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: best learning rate per cell by mean validation error over seeds."""
    rows: list[dict[str, Any]] = []
    for key, cell in runs.groupby(CELL, sort=False, dropna=False):
        base = dict(zip(CELL, key, strict=True))
        base["parameters"] = cell["parameters"].iloc[0]
        if base["mode"] == "zeroshot":
            chosen, best_lr, n_lrs = cell, math.nan, 0
        else:
            val_by_lr = cell.groupby("lr", sort=False)["val_rel_l2"].mean()
            best_lr = float(val_by_lr.idxmin())
            chosen, n_lrs = cell[cell["lr"] == best_lr], len(val_by_lr)
        rows.append(
            {
                **base,
                "best_lr": best_lr,
                "n_lrs": n_lrs,
                "n_seeds": len(chosen),
                "val_rel_l2_mean": chosen["val_rel_l2"].mean(),
                "val_rel_l2_std": chosen["val_rel_l2"].std(ddof=1),
                "test_rel_l2_mean": chosen["test_rel_l2_mean"].mean(),
                "test_rel_l2_std": chosen["test_rel_l2_mean"].std(ddof=1),
                "train_seconds_mean": chosen["train_seconds"].mean(),
            }
        )
    return pd.DataFrame(rows)


def summary_rows(summary: pd.DataFrame, **match: Any) -> pd.DataFrame:
    """Rows of the summary matching every ``column=value``, sorted by N (one curve)."""
    mask = np.ones(len(summary), dtype=bool)
    for column, value in match.items():
        mask &= (summary[column] == value).to_numpy()
    return summary[mask].sort_values("n")


def n_to_reach(ns: Sequence[float], errors: Sequence[float], target: float) -> tuple[float, str]:
    """Smallest N at which a curve reaches ``target``: (N, qualifier).

    Qualifier ``"="``: interpolated (linear in log N - log error between the two sweep points
    around the first crossing); ``"<="``: already reached at the smallest N; ``">"``: never
    reached, N is the largest evaluated. Points are sorted by N; NaN errors are skipped.
    """
    points = sorted((n, e) for n, e in zip(ns, errors, strict=True) if np.isfinite(e) and e > 0)
    if not points:
        return math.nan, ""
    for i, (n, e) in enumerate(points):
        if e <= target:
            if i == 0:
                return float(n), "<="
            n0, e0 = points[i - 1]
            frac = (math.log(target) - math.log(e0)) / (math.log(e) - math.log(e0))
            return float(math.exp(math.log(n0) + frac * (math.log(n) - math.log(n0)))), "="
    return float(points[-1][0]), ">"


# What N_scratch / N_finetune is known to be, given what each N is known to be.
_RATIO_BOUND = {
    ("=", "="): "=",
    ("=", "<="): ">=",
    ("=", ">"): "<",
    ("<=", "="): "<=",
    ("<=", ">"): "<",
    (">", "="): ">",
    (">", "<="): ">",
}


def data_efficiency(summary: pd.DataFrame, targets: Sequence[float]) -> pd.DataFrame:
    """data_efficiency.csv: N needed by fine-tuning and scratch per target error, and ratio."""
    rows: list[dict[str, Any]] = []
    finetune = summary[summary["mode"] == "finetune"]
    scratch = summary[summary["mode"] == "scratch"]
    for (pretrain, size, downstream), ft in finetune.groupby(
        ["pretrain", "size", "downstream"], sort=False
    ):
        sc = scratch[(scratch["size"] == size) & (scratch["downstream"] == downstream)]
        if sc.empty:
            continue
        for target in targets:
            n_ft, q_ft = n_to_reach(ft["n"], ft["test_rel_l2_mean"], target)
            n_sc, q_sc = n_to_reach(sc["n"], sc["test_rel_l2_mean"], target)
            bound = _RATIO_BOUND.get((q_sc, q_ft), "")
            ratio = n_sc / n_ft if bound else math.nan
            rows.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "target_rel_l2": target,
                    "n_finetune": n_ft,
                    "finetune_bound": q_ft,
                    "n_scratch": n_sc,
                    "scratch_bound": q_sc,
                    "ratio": ratio,
                    "ratio_bound": bound,
                }
            )
    columns = [
        "pretrain",
        "size",
        "downstream",
        "target_rel_l2",
        "n_finetune",
        "finetune_bound",
        "n_scratch",
        "scratch_bound",
        "ratio",
        "ratio_bound",
    ]
    return pd.DataFrame(rows, columns=columns)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table atomically, its last column the package version (provenance)."""
    with atomic_path(path) as tmp:
        frame.assign(pdetransfer_version=__version__).to_csv(tmp, index=False, float_format="%.6g")


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_csv` (scratch rows keep an empty ``pretrain``)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"table {path} does not exist") from None
    except pd.errors.ParserError as err:
        raise UserError(f"table {path} is not a readable CSV ({err})") from None
    if "pretrain" in frame:
        frame["pretrain"] = frame["pretrain"].fillna("").astype(str)
    return frame


def aggregate_command(args: argparse.Namespace) -> int:
    """``pdetransfer aggregate``: write runs.csv, summary.csv and data_efficiency.csv."""
    study = load_study(args.study)
    runs = collect_runs(study, args.results)
    summary = summarize(runs)
    efficiency = data_efficiency(summary, study.config["report"]["targets"])
    write_csv(runs, args.runs_csv)
    write_csv(summary, args.summary_csv)
    write_csv(efficiency, args.efficiency_csv)
    print(f"{len(runs)} runs, {len(summary)} summary cells, {len(efficiency)} efficiency rows")
    return 0
