"""compute.csv: what a study's jobs cost, per stage, from Snakemake's benchmark files.

Every job of the workflow writes a benchmark file (``results/benchmarks/...``, a ``s`` column
of wall-clock seconds, one row per attempt measured). A study's jobs are the ones its config
builds: its datasets, its pre-trainings and the cells of its runs (a packed cell's one job or
each run's own), found by path, so that the jobs of another study in the same results root are
not counted; jobs it shares with one count for both.

Per stage (data generation and checks, pre-training, each mode's training, evaluation, gallery
predictions): ``jobs`` (benchmark files), ``job_seconds`` (their ``s`` summed: jobs ran in
parallel, so the sum exceeds the elapsed time), and ``start``/``end``/``span_seconds``, the
wall-clock span from the first job's start to the last one's end. Benchmark files carry no
timestamp, so a job's end is its file's modification time (Snakemake writes it as the job
ends) and its start that minus its seconds; a job rerun later moves its stage's span with it.
The row ``all`` covers every job of the study.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pdetransfer.errors import UserError
from pdetransfer.layout import RUNS, cell_template
from pdetransfer.modes import MODES
from pdetransfer.study.config import Study

COLUMNS = ["stage", "jobs", "job_seconds", "start", "end", "span_seconds"]
DATA, PRETRAIN, EVALUATE, PREDICT, ALL = "data", "pretrain", "evaluate", "predict", "all"
#: Stages in the order of the table (then any other, by name).
STAGES = (DATA, PRETRAIN, *(m.name for m in MODES.values() if m.trains), EVALUATE, PREDICT)


def stage(relative: str) -> str:
    """The stage of a benchmark file from its path below the benchmark folder."""
    parts = relative.split("/")
    stem = parts[-1].removesuffix(".tsv")
    if parts[0] == DATA or (parts[0] == PRETRAIN and stem == "stats"):
        return DATA  # generation, checks, import and statistics (a mixed set's too)
    if parts[0] == PRETRAIN:
        return PRETRAIN
    if parts[0] == RUNS and len(parts) > 2:
        return parts[1] if stem == "train" else stem
    return stem


def study_benchmarks(study: Study, benchmarks: Path) -> list[Path]:
    """The benchmark files of the study's own jobs (those that exist) below ``benchmarks``,
    refinement's added runs included."""
    folders = {f"{DATA}/{name}" for name in study.used_datasets()}
    files = {f"{PRETRAIN}/{p}/{size}.tsv" for p, size in study.pretrain_jobs()}
    files |= {f"{PRETRAIN}/{p}/stats.tsv" for p in study.used_pretrain_entries()}
    for run in study.runs():
        folders.add(run.directory)
        folders.add(
            cell_template(run.spec).format(
                pretrain=run.pretrain, size=run.size, downstream=run.downstream, n=run.n
            )
        )
    # Below a cell folder at any depth: refinement's added runs live in <cell>/lr<lr>/cap<cap>/.
    prefixes = tuple(f"{folder}/" for folder in folders)
    found = []
    for path in sorted(benchmarks.glob("**/*.tsv")):
        relative = path.relative_to(benchmarks).as_posix()
        if relative in files or relative.startswith(prefixes):
            found.append(path)
    return found


def _seconds(path: Path) -> float:
    try:
        return float(pd.read_csv(path, sep="\t")["s"].sum())
    except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError, ValueError):
        raise UserError(f"benchmark file {path} is not a Snakemake benchmark") from None


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def compute_table(benchmarks: Path, files: Iterable[Path]) -> pd.DataFrame:
    """compute.csv from benchmark files below ``benchmarks`` (see the module docstring)."""
    jobs = []
    for path in files:
        seconds = _seconds(path)
        end = path.stat().st_mtime
        jobs.append((stage(path.relative_to(benchmarks).as_posix()), seconds, end - seconds, end))
    frame = pd.DataFrame(jobs, columns=["stage", "seconds", "start", "end"])
    order = [s for s in STAGES if s in set(frame["stage"])]
    order += sorted(set(frame["stage"]) - set(STAGES))
    rows = [_row(name, frame[frame["stage"] == name]) for name in order]
    rows.append(_row(ALL, frame))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(name: str, jobs: pd.DataFrame) -> dict[str, object]:
    if jobs.empty:
        return {"stage": name, "jobs": 0, "job_seconds": 0.0, "start": "", "end": "",
                "span_seconds": math.nan}  # fmt: skip
    start, end = float(jobs["start"].min()), float(jobs["end"].max())
    return {
        "stage": name,
        "jobs": len(jobs),
        "job_seconds": float(jobs["seconds"].sum()),
        "start": _stamp(start),
        "end": _stamp(end),
        "span_seconds": end - start,
    }
