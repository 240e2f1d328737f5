"""The study's tables: every run, the best learning rate per cell, data efficiency, fits.

- ``runs.csv``: one row per run of the study (identity, status, test metrics, validation error,
  parameters and how many of them the run's mode trained, how training stopped, times):
  see :mod:`pdetransfer.study.collection`.
- ``summary.csv``: per cell (mode, pre-training, size, downstream dataset, N) the learning rate
  with the lowest **validation** error averaged over seeds (never the test error: choosing on
  test would flatter every curve), with mean and standard deviation over seeds at that rate.
  The choice is over every rate of the cell, the grid's and those refinement added
  (``sweep.refine``); a rate's longer-cap rerun supersedes its shorter-cap runs for the choice
  and every table (:mod:`pdetransfer.study.refinement`); ``refine_rounds`` counts the rounds
  that added runs to the cell.
  Diverged runs take no part in the choice; a learning rate whose seeds partly diverged is
  chosen only if every learning rate had a diverged seed (it is unreliable, and its surviving
  seeds would flatter it). A cell whose every run diverged has ``status = diverged`` and no
  error. Diagnostics per cell:

  ``lr_at_edge``
      ``min`` or ``max`` when the chosen rate is the smallest or largest of the cell's grid
      and beats its neighbour by more than the noise (the optimum may lie outside the grid),
      ``tie_min``/``tie_max`` when it does not, ``no`` when it is bracketed, ``unbracketed``
      when the grid has a single rate (nothing is known about the optimum). A rate that
      diverged brackets from above: the grid counts every rate tried, diverged ones included.
      The rule is in :mod:`pdetransfer.study.flags`.
  ``undertrained``
      True when any run of the chosen rate is ``undertrained`` (it hit its cap still gaining
      more than ``report.undertrained_tolerance``, see :mod:`pdetransfer.study.flags`);
      ``n_hit_cap`` and ``n_undertrained`` count the chosen runs that hit the cap and that
      were undertrained.
  ``test_rel_l2_lo`` / ``test_rel_l2_hi``
      95% interval of the cell's mean test error over its seeds and test samples
      (:mod:`pdetransfer.study.statistics`; ``interval_method``, ``seed_df``), the band of the
      error-vs-N plots. ``one_seed``: the cell has one seed, so its own seed-to-seed spread is
      not observed (its interval borrows its curve's, or has none).
  ``test_rel_l2_median`` / ``_median_lo`` / ``_median_hi``
      The mean over seeds of each chosen run's median test error over the test samples, with
      its 95% interval (``median_interval_method``): what the typical test sample sees, which a
      few extreme samples cannot carry (:mod:`pdetransfer.study.statistics`).
- ``data_efficiency.csv``: see :mod:`pdetransfer.study.efficiency`; ``scaling_fits.csv``: see
  :mod:`pdetransfer.study.fits`; ``mode_comparison.csv`` and ``mode_threshold.csv`` (every mode
  against full fine-tuning) and ``mode_crossover.csv`` (every mode that fine-tunes against
  scratch): see :mod:`pdetransfer.study.modes_table`; ``size_gain.csv``: see
  :mod:`pdetransfer.study.sizes`; ``compute.csv``: see :mod:`pdetransfer.study.compute`;
  ``error_bins.csv`` (error per bin of the physical parameter): see :mod:`pdetransfer.study.bins`;
  ``forgetting.csv`` (fine-tuned against zero-shot, sample by sample): see
  :mod:`pdetransfer.study.forgetting`; ``mixed_comparison.csv`` (a mixed-physics pre-training
  over the single-system one): see :mod:`pdetransfer.study.mixed_table`.

Runs are enumerated from the study (the resolved config), not by scanning directories, so
stale runs of an earlier config never leak into the tables. ``aggregate`` is strict: every run
must have finished. ``aggregate --partial`` builds the same tables from the runs finished so
far (a run counts once its ``metrics.json`` and, if it trains, ``train.json`` exist) and lists
per cell what is missing, for looking at a study while it runs or after jobs failed for good.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError
from pdetransfer.layout import BENCHMARKS_DIR, Run
from pdetransfer.modes import TRAINING, Mode
from pdetransfer.study.bins import dataset_parameters, error_bins
from pdetransfer.study.collection import CELL, CURVE, Cell, collect_runs
from pdetransfer.study.compute import compute_table, study_benchmarks
from pdetransfer.study.config import Study
from pdetransfer.study.efficiency import data_efficiency
from pdetransfer.study.fits import scaling_fits
from pdetransfer.study.flags import edge_position
from pdetransfer.study.forgetting import forgetting
from pdetransfer.study.mixed_table import mixed_comparison
from pdetransfer.study.modes_table import crossover_table, mode_tables
from pdetransfer.study.refinement import choose_lr
from pdetransfer.study.sizes import size_gain
from pdetransfer.study.statistics import (
    MEAN,
    MEDIAN,
    NO_INTERVAL,
    Bootstrap,
    RunErrors,
    Spread,
    percentile_interval,
    pooled_spread,
)

SUMMARY_COLUMNS = [
    *CELL,
    "parameters",
    "trainable_parameters",
    "status",
    "best_lr",
    "n_lrs",
    "refine_rounds",
    "n_seeds",
    "n_diverged",
    "lr_at_edge",
    "undertrained",
    "n_hit_cap",
    "n_undertrained",
    "one_seed",
    "val_rel_l2_mean",
    "val_rel_l2_std",
    "test_rel_l2_mean",
    "test_rel_l2_std",
    "train_seconds_mean",
    "test_rel_l2_median",
]
#: Text columns of the tables whose empty cells must stay empty strings when read back.
#: Incomplete cells ``aggregate --partial`` prints (all of them are in missing.csv).
MISSING_LINES = 40
TEXT_COLUMNS = (
    "pretrain",
    "size",
    "lr_at_edge",
    "flags",
    "interval_from",
    "interval_method",
    "not_headline_because",
    "note",
    "stop_reason",
)


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


def _current(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the tables use: those no longer-cap rerun of their rate superseded
    (:func:`pdetransfer.study.refinement.superseded`)."""
    if "superseded" not in runs:  # runs.csv written before refinement
        return runs
    return runs[~runs["superseded"].fillna(False).astype(bool)]


def _val_spreads(runs: pd.DataFrame) -> dict[tuple[Any, ...], Spread]:
    """Per curve, the between-seed spread of log validation errors pooled over every rate of
    every cell (the noise the learning-rate edge rule compares with; runs without a rate or a
    validation error, as zero-shot evaluations, add nothing)."""
    done = runs[runs["status"] != "diverged"]
    return {
        tuple(key): pooled_spread(g["val_rel_l2"].tolist() for _, g in curve.groupby(["n", "lr"]))
        for key, curve in done.groupby(CURVE, sort=False, dropna=False)
    }


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: best learning rate per cell by mean validation error, with diagnostics."""
    runs = _current(runs).copy()
    if "test_rel_l2_median" not in runs:  # runs of a frame that records means only
        runs["test_rel_l2_median"] = math.nan
    if "status" not in runs:
        runs["status"] = "completed"
    for column in ("hit_cap", "undertrained"):
        if column not in runs:
            runs[column] = False
    spreads = _val_spreads(runs)
    if "trainable_parameters" not in runs:  # runs.csv written before the modes' rules
        runs["trainable_parameters"] = runs["parameters"].where(runs["mode"].isin(TRAINING), 0)
    rows: list[dict[str, Any]] = []
    for key, cell in runs.groupby(CELL, sort=False, dropna=False):
        base = dict(zip(CELL, key, strict=True))
        base["parameters"] = cell["parameters"].iloc[0]
        base["trainable_parameters"] = cell["trainable_parameters"].iloc[0]
        n_diverged = int((cell["status"] == "diverged").sum())
        done = cell[cell["status"] != "diverged"]
        if base["mode"] not in TRAINING:
            chosen, best_lr, n_lrs, edge = cell, math.nan, 0, ""
        else:
            grid = sorted(set(cell["lr"]))
            best_lr, n_lrs = choose_lr(cell), len(grid)
            chosen = done[done["lr"] == best_lr]
            val = {lr: g["val_rel_l2"].tolist() for lr, g in done.groupby("lr")}
            spread = spreads.get(tuple(key[:4]), Spread(math.nan, 0))
            edge = "" if math.isnan(best_lr) else edge_position(grid, best_lr, val, spread)
        undertrained = chosen["undertrained"].fillna(False).astype(bool)
        rows.append(
            {
                **base,
                "status": "diverged" if chosen.empty else "ok",
                "best_lr": best_lr,
                "n_lrs": n_lrs,
                "refine_rounds": int(cell["round"].fillna(0).max()) if "round" in cell else 0,
                "n_seeds": len(chosen),
                "n_diverged": n_diverged,
                "lr_at_edge": edge,
                "undertrained": bool(undertrained.any()),
                "n_hit_cap": int(chosen["hit_cap"].fillna(False).astype(bool).sum()),
                "n_undertrained": int(undertrained.sum()),
                "one_seed": len(chosen) == 1,
                "val_rel_l2_mean": chosen["val_rel_l2"].mean(),
                "val_rel_l2_std": chosen["val_rel_l2"].std(ddof=1),
                "test_rel_l2_mean": chosen["test_rel_l2_mean"].mean(),
                "test_rel_l2_std": chosen["test_rel_l2_mean"].std(ddof=1),
                "train_seconds_mean": chosen["train_seconds"].mean(),
                "test_rel_l2_median": chosen["test_rel_l2_median"].mean(),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summary_rows(summary: pd.DataFrame, **match: Any) -> pd.DataFrame:
    """Rows of the summary matching every ``column=value``, sorted by N (one curve)."""
    mask = np.ones(len(summary), dtype=bool)
    for column, value in match.items():
        mask &= (summary[column] == value).to_numpy()
    return summary[mask].sort_values("n")


def mode_rows(summary: pd.DataFrame, mode: Mode, pretrain: str, **match: Any) -> pd.DataFrame:
    """One curve of a mode: its rows from ``pretrain`` (if it starts from a pre-trained
    checkpoint; its runs are shared otherwise) matching ``column=value``, sorted by N."""
    source = pretrain if mode.needs_pretrained else ""
    return summary_rows(summary, mode=mode.name, pretrain=source, **match)


def chosen_errors(
    runs: pd.DataFrame, summary: pd.DataFrame, samples: Mapping[str, np.ndarray]
) -> dict[Cell, list[RunErrors]]:
    """Per cell, the test errors of the completed runs at the chosen learning rate (a mode
    that does not train: its one evaluation)."""
    done = _current(runs)
    done = done[done["status"] != "diverged"]
    by_cell = {tuple(key): group for key, group in done.groupby(CELL, sort=False)}
    out: dict[Cell, list[RunErrors]] = {}
    for row in summary[summary["status"] == "ok"].itertuples():
        key = (row.mode, row.pretrain, row.size, row.downstream, int(row.n))
        cell = by_cell.get(key)
        if cell is None:
            continue
        picked = cell if row.mode not in TRAINING else cell[cell["lr"] == row.best_lr]
        out[key] = [
            RunErrors(
                float(r.test_rel_l2_mean), samples.get(r.run_dir), float(r.test_rel_l2_median)
            )
            for r in picked.itertuples()
        ]
    return out


def point_intervals(
    summary: pd.DataFrame, chosen: Mapping[Cell, Sequence[RunErrors]], bootstrap: Bootstrap
) -> pd.DataFrame:
    """The summary with ``test_rel_l2_lo``/``_hi``: a 95% interval of each cell's mean test
    error (what the error-vs-N plots shade), its ``interval_method`` and ``seed_df``; then
    ``test_rel_l2_median_lo``/``_hi`` and ``median_interval_method`` for its median. The seed
    spread is pooled over the cell's curve (its mode, pre-training, size and downstream set
    across N), so the cells of one curve are bootstrapped together; every mean is drawn before
    any median, so the means' intervals do not depend on the medians'."""
    lo, hi, method, seed_df = _intervals_of(summary, chosen, bootstrap, MEAN)
    m_lo, m_hi, m_method, _ = _intervals_of(summary, chosen, bootstrap, MEDIAN)
    return summary.assign(
        test_rel_l2_lo=lo,
        test_rel_l2_hi=hi,
        interval_method=method,
        seed_df=seed_df.astype(int),
        test_rel_l2_median_lo=m_lo,
        test_rel_l2_median_hi=m_hi,
        median_interval_method=m_method,
    )


def _intervals_of(
    summary: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap,
    statistic: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per summary row: the interval of its ``statistic``, the method and seed df."""
    lo, hi = np.full(len(summary), math.nan), np.full(len(summary), math.nan)
    method, seed_df = np.full(len(summary), NO_INTERVAL, dtype=object), np.zeros(len(summary))
    rows = pd.RangeIndex(len(summary))
    for _, curve in summary.assign(row=rows).groupby(CURVE, sort=False, dropna=False):
        points = []
        for r in curve.itertuples():
            runs = chosen.get((r.mode, r.pretrain, r.size, r.downstream, int(r.n)))
            if runs:
                points.append((r.row, runs))
        if not points:
            continue
        reps = bootstrap.curves([[runs for _, runs in points]], True, statistic)
        if reps.method == NO_INTERVAL:
            continue
        for column, (row, _) in enumerate(points):
            lo[row], hi[row] = percentile_interval(reps.curves[0][:, column])
            method[row], seed_df[row] = reps.method, reps.seed_df
    return lo, hi, method, seed_df


def _cell_name(row: Any) -> str:
    n = f"n{row.n}" if row.mode in TRAINING else ""
    parts = [row.mode, row.pretrain, row.size, row.downstream, n]
    return "/".join(str(p) for p in parts if p != "")


def _some(frame: pd.DataFrame, limit: int = 3) -> str:
    names = [_cell_name(r) for r in frame.head(limit).itertuples()]
    return ", ".join(names) + (", ..." if len(frame) > limit else "")


def warnings(runs: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """One line per kind of problem the tables flag, with counts (empty when there is none)."""
    lines = []
    trained_runs = runs[runs["mode"].isin(TRAINING)]
    cells = summary[summary["mode"].isin(TRAINING)]
    total = f"of {len(cells)} trained cells"
    diverged = trained_runs[trained_runs["status"] == "diverged"]
    if len(diverged):
        lines.append(
            f"{len(diverged)} of {len(trained_runs)} trained runs diverged (status in runs.csv);"
            " the learning-rate choice skipped them"
        )
    dead = cells[cells["status"] == "diverged"]
    if len(dead):
        lines.append(
            f"{len(dead)} {total} diverged at every learning rate ({_some(dead)}): no error"
            " reported, plots and fits skip them"
        )
    edge = cells[cells["lr_at_edge"].isin(["min", "max"])]
    if len(edge):
        counts = edge["lr_at_edge"].value_counts()
        lines.append(
            f"{len(edge)} {total} chose a learning rate at the grid's edge "
            f"({counts.get('max', 0)} largest, {counts.get('min', 0)} smallest: {_some(edge)});"
            " the optimum may lie outside the grid"
        )
    ties = cells[cells["lr_at_edge"].isin(["tie_min", "tie_max"])]
    if len(ties):
        lines.append(
            f"{len(ties)} {total} chose an edge learning rate that ties with its neighbour"
            f" ({_some(ties)}): reported, not flagged"
        )
    single = cells[cells["lr_at_edge"] == "unbracketed"]
    if len(single):
        lines.append(f"{len(single)} {total} have a single learning rate: unbracketed")
    under = cells[cells["undertrained"]]
    if len(under):
        chosen_runs = int(cells["n_seeds"].sum())
        lines.append(
            f"{len(under)} {total} undertrained ({_some(under)}; {int(cells['n_undertrained'].sum())}"
            f" of {chosen_runs} chosen runs hit the cap still gaining more than the tolerance,"
            f" {int(cells['n_hit_cap'].sum())} hit the cap)"
        )
    return lines


def missing_table(missing: Sequence[Run]) -> pd.DataFrame:
    """missing.csv: per cell, the runs that have not finished (learning rate and seed)."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in missing:
        key = (run.mode, run.pretrain or "", run.size, run.downstream, run.n or 0)
        entry = rows.setdefault(key, {**dict(zip(CELL, key, strict=True)), "missing": []})
        member = run.directory.removeprefix(f"{run.cell_directory}/")  # lr../[cap../]s..
        entry["missing"].append(member if run.trains else run.spec.label)
    table = [
        {**entry, "n_missing": len(entry["missing"]), "missing": " ".join(entry["missing"])}
        for entry in rows.values()
    ]
    return pd.DataFrame(table, columns=[*CELL, "n_missing", "missing"])


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table atomically, its last column the package version (provenance)."""
    with atomic_path(path) as tmp:
        frame.assign(pdetransfer_version=__version__).to_csv(tmp, index=False, float_format="%.6g")


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_csv` (empty text cells stay empty strings)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"table {path} does not exist") from None
    except pd.errors.ParserError as err:
        raise UserError(f"table {path} is not a readable CSV ({err})") from None
    for column in TEXT_COLUMNS:
        if column in frame:
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna(), "").astype(str)
    return frame


def aggregate_command(args: argparse.Namespace) -> int:
    """``pdetransfer aggregate``: write the run, summary, data-efficiency and fit tables."""
    if args.partial != bool(args.missing_csv):
        raise UserError(
            "--partial and --missing-csv go together: a partial table lists what it lacks"
        )
    if args.bootstrap < 1:
        raise UserError(f"--bootstrap must be at least 1 replicate, got {args.bootstrap}")
    study = load_study(args.study)
    runs, samples, missing = collect_runs(study, args.results, partial=args.partial)
    summary = summarize(runs)
    chosen = chosen_errors(runs, summary, samples)
    # One bootstrap per table, each from the seed: a table's numbers do not depend on which
    # other tables were computed before it.
    replicates, seed = args.bootstrap, args.bootstrap_seed
    summary = point_intervals(summary, chosen, Bootstrap(replicates, seed))
    targets = study.config["report"]["targets"]
    efficiency = data_efficiency(summary, targets, chosen, Bootstrap(replicates, seed))
    fits = scaling_fits(study, summary, chosen, Bootstrap(replicates, seed))
    write_csv(runs, args.runs_csv)
    write_csv(summary, args.summary_csv)
    write_csv(efficiency, args.efficiency_csv)
    write_csv(fits, args.fits_csv)
    if args.modes_csv or args.thresholds_csv or args.size_csv:
        modes, thresholds = mode_tables(summary, chosen, Bootstrap(replicates, seed))
        if args.modes_csv:
            write_csv(modes, args.modes_csv)
        if args.thresholds_csv:
            write_csv(thresholds, args.thresholds_csv)
        if args.size_csv:
            write_csv(size_gain(study, summary, modes), args.size_csv)
    if args.crossover_csv:
        crossovers = crossover_table(summary, chosen, Bootstrap(replicates, seed))
        write_csv(crossovers, args.crossover_csv)
    if args.compute_csv:
        benchmarks = Path(args.results) / BENCHMARKS_DIR
        write_csv(compute_table(benchmarks, study_benchmarks(study, benchmarks)), args.compute_csv)
    if args.forgetting_csv:
        write_csv(forgetting(summary, chosen, Bootstrap(replicates, seed)), args.forgetting_csv)
    if args.mixed_csv:
        table = mixed_comparison(study, summary, chosen, Bootstrap(replicates, seed))
        write_csv(table, args.mixed_csv)
    if args.bins_csv:
        parameters, notes = dataset_parameters(summary["downstream"], args.results)
        bins = study.config["report"].get("bins")
        if bins is None:
            raise UserError(
                f"{args.study} has no report.bins (written before the key existed): rewrite it"
                " with `pdetransfer study`"
            )
        table = error_bins(summary, chosen, parameters, int(bins), Bootstrap(replicates, seed))
        write_csv(table, args.bins_csv)
        for line in notes:
            print(f"aggregate: {line}")
    print(
        f"{len(runs)} runs, {len(summary)} summary cells, {len(efficiency)} efficiency rows, "
        f"{len(fits)} fits"
    )
    for line in warnings(runs, summary):
        print(f"aggregate: {line}")
    if args.partial:
        table = missing_table(missing)
        write_csv(table, args.missing_csv)
        print(
            f"aggregate --partial: {len(runs)} of {len(runs) + len(missing)} runs finished; "
            f"{len(table)} cells incomplete (listed in {args.missing_csv})"
        )
        for row in table.head(MISSING_LINES).itertuples():
            print(f"  missing {_cell_name(row)}: {row.missing}")
        if len(table) > MISSING_LINES:
            print(f"  ... {len(table) - MISSING_LINES} more cells in {args.missing_csv}")
    return 0
