"""``pdetransfer track``: every run of a study, exported into an MLflow tracking store.

The export runs once after the study, in one process (``snakemake track``). Training jobs
never write to the store: many SLURM jobs writing one SQLite file at once is a known failure,
and the run directories already hold everything the store shows. Each run of the study
(pre-training included) becomes one MLflow run:

- **params**: its identity (mode, pre-training entry, size, downstream dataset, N, learning
  rate, seed, system, model, parameter count) and its recipe from ``train.json``;
- **metrics**: the learning curve of ``log.csv`` (``train_loss``, ``val_rel_l2`` and ``lr``
  at each validation check, with the optimiser step as MLflow's step), and the final numbers
  (test metrics, ``best_val_rel_l2``, steps, seconds);
- **tags**: ``status``, ``stop_reason``, ``still_improving``, ``cell`` (the cell it belongs
  to, e.g. ``finetune/poisson_1_5/xs/poisson_5_10/n8``) and the run directory.

A run is found again by its directory (tag ``pdetransfer.run``) and a digest of everything
exported for it (tag ``pdetransfer.digest``, set last, so a run cut short by a crash has
none): a second export of unchanged runs writes nothing, and a run whose files changed
(retrained, re-evaluated) replaces its MLflow run, so the store holds one MLflow run per run.
MLflow is an optional dependency (``pip install -e '.[track]'``), imported only here.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pdetransfer import __version__
from pdetransfer.atomic import write_json
from pdetransfer.errors import UserError
from pdetransfer.layout import Run
from pdetransfer.study.aggregation import load_study
from pdetransfer.study.collection import METRIC_KEYS, read_json, read_run
from pdetransfer.study.config import Study

#: The default store, relative to the results root (config key tracking.uri overrides it).
STORE = Path("tracking") / "mlflow.db"
ARTIFACTS = Path("tracking") / "artifacts"
KEY_TAG = "pdetransfer.run"
DIGEST_TAG = "pdetransfer.digest"
#: train.json entries that describe how a run was trained (its recipe), logged as params.
RECIPE = (
    "n_train",
    "epochs",
    "batch_size",
    "min_steps",
    "max_steps",
    "patience",
    "val_every",
    "loss",
    "init",
    "packed",
    "pack_size",
    "world_size",
    "bf16",
    "pdetransfer_version",
    "torch_version",
)
#: log.csv columns logged as a curve against the optimiser step.
CURVE = ("train_loss", "val_rel_l2", "lr")
#: MLflow's limit on metrics per log_batch request.
BATCH = 1000


@dataclass(frozen=True)
class RunRecord:
    """Everything one run exports, and the digest that says whether it changed."""

    key: str
    params: dict[str, str]
    tags: dict[str, str]
    final: dict[str, float]
    curve: list[tuple[int, str, float]] = field(default_factory=list)  # (step, metric, value)

    @property
    def digest(self) -> str:
        content = [self.key, self.params, self.tags, self.final, self.curve]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _number(value: Any) -> float | None:
    """A finite number, or None (MLflow rejects what JSON cannot hold in tables)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_curve(path: Path) -> list[tuple[int, str, float]]:
    """The learning curve of a run's ``log.csv`` as (step, metric, value); none if absent."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error) as err:
        raise UserError(f"{path} is not a readable log ({err})") from None
    curve = []
    for row in rows:
        step = _number(row.get("step"))
        if step is None:
            raise UserError(f"{path} has a row without a step: {row}")
        for name in CURVE:
            value = _number(row.get(name))
            if value is not None:
                curve.append((int(step), name, value))
    return curve


def run_record(study: Study, run: Run, results: Path) -> RunRecord:
    """The export of one downstream run (fine-tune, scratch or zero-shot)."""
    row, _ = read_run(study, run, results)
    directory = results / run.directory
    summary = (
        read_json(directory / "train.json", "run the study before tracking it")
        if run.trains
        else {}
    )
    identity = ("mode", "pretrain", "size", "downstream", "n", "lr", "seed", "system", "model")
    params = {key: _text(row[key]) for key in identity if _text(row[key]) not in ("", "nan")}
    params["parameters"] = _text(row["parameters"])
    params |= {key: _text(summary[key]) for key in RECIPE if summary.get(key) is not None}
    cell = "/".join(str(p) for p in (run.mode, run.pretrain, run.size, run.downstream) if p)
    if run.n is not None:
        cell += f"/n{run.n}"
    tags = {
        "cell": cell,
        "status": row["status"],
        "stop_reason": row["stop_reason"] or "",
        "still_improving": str(bool(row["still_improving"])).lower(),
        "device": row["device"],
        "run_dir": run.directory,
    }
    # the best validation error under its own name: val_rel_l2 is the curve
    finals = {f"test_{k}": f"test_{k}" for k in METRIC_KEYS} | {"best_val_rel_l2": "val_rel_l2"}
    finals |= {k: k for k in ("n_test", "steps", "best_step", "train_seconds", "eval_seconds")}
    final = {k: v for k, src in finals.items() if (v := _number(row.get(src))) is not None}
    return RunRecord(run.directory, params, tags, final, read_curve(directory / "log.csv"))


def pretrain_record(study: Study, entry: str, size: str, results: Path) -> RunRecord:
    """The export of one pre-training run (no test metrics: it is evaluated downstream)."""
    key = f"pretrain/{entry}/{size}"
    directory = results / key
    summary = read_json(directory / "train.json", "run the study before tracking it")
    params = {
        "mode": "pretrain",
        "pretrain": entry,
        "size": size,
        "datasets": ",".join(study.pretrain[entry]),
        "model": _text(summary.get("model", study.sizes[size])),
        "parameters": _text(summary.get("parameters")),
        "lr": _text(summary.get("lr")),
        "seed": _text(summary.get("seed")),
    }
    params |= {k: _text(summary[k]) for k in RECIPE if summary.get(k) is not None}
    tags = {
        "cell": key,
        "status": str(summary.get("status", "completed")),
        "stop_reason": _text(summary.get("stop_reason")),
        "still_improving": str(bool(summary.get("still_improving"))).lower(),
        "device": _text(summary.get("device")),
        "run_dir": key,
    }
    names = ("best_val_rel_l2", "steps", "best_step", "train_seconds")
    final = {k: v for k in names if (v := _number(summary.get(k))) is not None}
    return RunRecord(key, params, tags, final, read_curve(directory / "log.csv"))


def study_records(study: Study, results: str | Path) -> Iterator[RunRecord]:
    """Every run of the study: pre-training first, then the downstream runs in study order."""
    results = Path(results)
    for entry, size in study.pretrain_jobs():
        yield pretrain_record(study, entry, size, results)
    for run in study.runs():
        yield run_record(study, run, results)


def default_uri(results: str | Path) -> str:
    """The SQLite store under the results root (relative paths stay relative to the cwd)."""
    return f"sqlite:///{Path(results) / STORE}"


@dataclass
class ExportCounts:
    """What an export did: runs new to the store, replaced (their files changed), kept."""

    created: int = 0
    replaced: int = 0
    unchanged: int = 0


def _mlflow() -> Any:
    """The MLflow client module, or a UserError saying how to install it."""
    try:
        import mlflow.entities
        import mlflow.exceptions
        import mlflow.tracking
    except ImportError:
        raise UserError(
            "pdetransfer track needs MLflow: pip install -e '.[track]' in this environment"
        ) from None
    return mlflow


def _existing_runs(client: Any, experiment_id: str) -> dict[str, list[Any]]:
    """The experiment's active runs by their pdetransfer key."""
    found: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            key = run.data.tags.get(KEY_TAG)
            if key is not None:
                found.setdefault(key, []).append(run)
        token = page.token
        if not token:
            return found


def export(
    records: list[RunRecord], uri: str, experiment: str, artifacts: Path | None = None
) -> tuple[str, ExportCounts]:
    """Write the records into the store; return the experiment id and what was done."""
    mlflow = _mlflow()
    from mlflow.entities import Metric, Param, RunTag

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = artifacts.resolve().as_uri() if artifacts is not None else None
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
        if found.lifecycle_stage == "deleted":  # deleted in the UI: bring it back
            client.restore_experiment(experiment_id)
    existing = _existing_runs(client, experiment_id)
    counts = ExportCounts()
    for record in records:
        digest = record.digest
        old = existing.get(record.key, [])
        if len(old) == 1 and old[0].data.tags.get(DIGEST_TAG) == digest:
            counts.unchanged += 1
            continue
        for run in old:
            client.delete_run(run.info.run_id)
        if old:
            counts.replaced += 1
        else:
            counts.created += 1
        run = client.create_run(experiment_id, run_name=record.key.removeprefix("runs/"))
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in record.params.items()]
        tags = [RunTag(KEY_TAG, record.key), *(RunTag(k, v) for k, v in record.tags.items())]
        metrics = [Metric(k, v, now, 0) for k, v in record.final.items()]
        metrics += [Metric(name, value, now, step) for step, name, value in record.curve]
        client.log_batch(run_id, params=params, tags=tags)
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + BATCH])
        client.set_terminated(run_id, status="FINISHED")
        client.set_tag(run_id, DIGEST_TAG, digest)
    return experiment_id, counts


def _tracking_config(study: Study) -> Mapping[str, Any]:
    """The study's tracking section (absent from study files written before it existed)."""
    return study.config.get("tracking") or {}


def track_command(args: argparse.Namespace) -> int:
    """``pdetransfer track``: export every run of a finished study into MLflow."""
    study = load_study(args.study)
    config = _tracking_config(study)
    uri = args.uri or config.get("uri") or default_uri(args.results)
    experiment = args.experiment or config.get("experiment") or "pdetransfer"
    _mlflow()  # fail on a missing MLflow before reading hundreds of runs
    records = list(study_records(study, args.results))
    local = uri == default_uri(args.results)
    artifacts = Path(args.results) / ARTIFACTS if local else None
    try:
        experiment_id, counts = export(records, uri, experiment, artifacts)
    except _mlflow().exceptions.MlflowException as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot write to the MLflow store {uri}: {message}") from None
    summary = {
        "uri": uri,
        "experiment": experiment,
        "experiment_id": experiment_id,
        "runs": len(records),
        "created": counts.created,
        "replaced": counts.replaced,
        "unchanged": counts.unchanged,
        "mlflow_version": _mlflow().__version__,
        "pdetransfer_version": __version__,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.out:
        write_json(args.out, summary)
    print(
        f"tracked {len(records)} runs in {uri} (experiment {experiment!r}): "
        f"{counts.created} new, {counts.replaced} updated, {counts.unchanged} unchanged"
    )
    if local:
        print(f"browse them with: mlflow ui --backend-store-uri {uri}")
    return 0
