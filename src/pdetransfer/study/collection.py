"""runs.csv: one row per run of the study, read from each run directory's own files.

A run's identity comes from the study (the resolved config), its outcome from
``metrics.json`` (test errors, per test sample where recorded) and, for a trained run,
``train.json`` and ``log.csv`` (how it stopped, and whether it was undertrained: see
:mod:`pdetransfer.study.flags`). A run whose training diverged is a result, not a failure: its
``status`` is ``diverged`` and its test errors are empty (NaN). Runs written before
``train.json`` recorded a status count as ``completed``.

The runs refinement added to a cell (``sweep.refine``) follow the grid's, read from the cell's
decision files: ``round`` is 0 for the grid's runs and k for those round k added, ``max_steps``
is every run's step cap, and ``superseded`` marks the runs of a rate that also has runs at a
longer cap (:mod:`pdetransfer.study.refinement`: the tables use only the longest).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.errors import UserError
from pdetransfer.layout import Run
from pdetransfer.study.config import Study
from pdetransfer.study.flags import stop_flags
from pdetransfer.study.refinement import added_runs, superseded

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
#: A curve: the cells of one mode, pre-training, size and downstream dataset, over N.
CURVE = CELL[:-1]
#: A cell as a key: (mode, pretrain, size, downstream, n).
Cell = tuple[str, str, str, str, int]
RUN_COLUMNS = [
    *CELL,
    "lr",
    "seed",
    "status",
    "system",
    "model",
    "architecture",
    "parameters",
    "trainable_parameters",
    *(f"test_{k}" for k in METRIC_KEYS),
    "n_test",
    "eval_seconds",
    "val_rel_l2",
    "stop_reason",
    "still_improving",
    "hit_cap",
    "last_window_gain",
    "undertrained",
    "best_step",
    "best_epoch",
    "epochs_run",
    "steps",
    "max_steps",
    "round",
    "superseded",
    "loss",
    "train_seconds",
    "device",
    "run_dir",
]


def read_json(path: Path, missing: str = "run the workflow before aggregating") -> dict[str, Any]:
    """A run's JSON file; one sentence (ending in ``missing`` when it is absent) otherwise."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: {missing}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg})") from None


def _metric(value: Any) -> float:
    """A metric of metrics.json as a float (null, as diverged runs write it, is NaN)."""
    return math.nan if value is None else float(value)


def read_run(study: Study, run: Run, results: Path) -> tuple[dict[str, Any], np.ndarray | None]:
    """One row of runs.csv, and the run's per-sample test errors where metrics.json has them."""
    directory = results / run.directory
    tolerance = float(study.config["report"]["undertrained_tolerance"])
    metrics = read_json(directory / "metrics.json")
    summary = read_json(directory / "train.json") if run.trains else {}
    diverged = "diverged" in (metrics.get("status"), summary.get("status"))
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing and not diverged:
        raise UserError(f"{directory / 'metrics.json'} lacks {', '.join(missing)}")
    checkpoint = metrics.get("checkpoint") or {}
    row: dict[str, Any] = {
        "mode": run.mode,
        "pretrain": run.pretrain or "",
        "size": run.size,
        "downstream": run.downstream,
        "n": run.n if run.n is not None else 0,
        "lr": float(run.lr) if run.lr is not None else math.nan,
        "seed": run.seed if run.seed is not None else study.config["training"]["pretrain"]["seed"],
        "status": "diverged" if diverged else "completed",
        "system": study.datasets[run.downstream]["system"],
        "model": checkpoint.get("model", study.sizes[run.size]),
        "architecture": checkpoint.get("architecture"),
        "parameters": checkpoint.get("parameters", summary.get("parameters")),
        # train.json written before the rules trained every weight
        "trainable_parameters": summary.get("trainable_parameters", summary.get("parameters"))
        if run.trains
        else 0,
        **{f"test_{k}": math.nan if diverged else _metric(metrics[k]) for k in METRIC_KEYS},
        "n_test": metrics.get("n_samples"),
        "eval_seconds": metrics.get("seconds"),
    }
    if run.trains:
        row.update(
            val_rel_l2=_metric(summary.get("best_val_rel_l2")),
            stop_reason=summary.get("stop_reason") or ("diverged" if diverged else ""),
            still_improving=bool(summary.get("still_improving") or False),
            **stop_flags(summary, directory / "log.csv", tolerance),
            best_step=summary.get("best_step"),
            best_epoch=summary.get("best_epoch"),
            epochs_run=summary.get("epochs_run"),
            steps=summary.get("steps"),
            max_steps=summary.get("max_steps"),
            loss=summary.get("loss") or "",
            train_seconds=summary.get("train_seconds"),
        )
    else:
        row.update(
            val_rel_l2=math.nan,
            stop_reason="",
            still_improving=False,
            hit_cap=False,
            last_window_gain=math.nan,
            undertrained=False,
            best_step=math.nan,
            best_epoch=math.nan,
            epochs_run=0,
            steps=0,
            max_steps=0,
            loss="",
            train_seconds=0.0,
        )
    row["device"] = summary.get("device") or metrics.get("device") or ""
    row["run_dir"] = run.directory
    per_sample = metrics.get("rel_l2_per_sample")
    errors = None if diverged or per_sample is None else np.asarray(per_sample, dtype=float)
    return row, errors


def finished(run: Run, results: Path) -> bool:
    """Whether a run has written everything the tables read (its metrics, and training summary)."""
    directory = results / run.directory
    needed = ["metrics.json", "train.json"] if run.trains else ["metrics.json"]
    return all((directory / name).is_file() for name in needed)


def collect_runs(
    study: Study, results: str | Path, partial: bool = False
) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[Run]]:
    """runs.csv as a frame (the study's order), per-sample errors by run directory, and the
    runs not finished yet (always empty unless ``partial``: a strict collection stops at the
    first missing file)."""
    results = Path(results)
    rows, samples, missing = [], {}, []
    grid = [(run, 0) for run in study.runs()]
    for run, round_ in [*grid, *added_runs(study, results, partial)]:
        if partial and not finished(run, results):
            missing.append(run)
            continue
        row, errors = read_run(study, run, results)
        rows.append({**row, "round": round_})
        if errors is not None:
            samples[run.directory] = errors
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    frame["superseded"] = superseded(frame, CELL)
    return frame, samples, missing
