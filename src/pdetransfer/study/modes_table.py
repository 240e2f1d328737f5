"""Every mode against full fine-tuning (``mode_comparison.csv``, ``mode_threshold.csv``), and
every mode that fine-tunes the pre-trained model against scratch (``mode_crossover.csv``).

Full fine-tuning is the mode that starts from the pre-trained model and trains every weight
(:func:`pdetransfer.modes.full_finetune`); every other mode of the study is compared with it
on the same pre-training, size, downstream dataset and N (a mode that does not train, whose
error does not depend on N, at every N of the reference).

- ``mode_comparison.csv``: per (pretrain, size, downstream, N, mode) the mode's test error, its
  ratio to full fine-tuning's, and 95% intervals of both (``interval_method``, ``seed_df``: see
  :mod:`pdetransfer.study.statistics`). Both points are
  resampled jointly (one test-sample draw shared by the two, seeds per point,
  :mod:`pdetransfer.study.statistics`), so a hard test sample is not charged to one side only.
- ``mode_threshold.csv``: per (pretrain, size, downstream, mode) the smallest sweep N from
  which the mode *stays* within :data:`WITHIN` of full fine-tuning (ratio at most 1.1 at that
  N and every larger one). The threshold is a sweep point, not interpolated: whether a mode
  stays within 10% between two sweep points is not observed. ``bound`` is ``=`` (a sweep
  point), ``<=`` (within from the smallest N on: the threshold may lie below the sweep) or
  ``>`` (not within at the largest N: no threshold in the sweep, ``n_within`` empty, and the
  ``note`` says so). Its interval is the percentile interval of the threshold recomputed on
  every bootstrap replicate of the two curves (0 for "below the sweep", inf for "none").
  ``trainable_parameters``: what the mode trains.
- ``mode_crossover.csv``: per (pretrain, size, downstream) and mode that trains from the
  pre-trained model, the N from which scratch catches up with it, interval-aware: see
  :func:`crossover_table`.

``mode_comparison.csv`` also gives both sides' **median** errors (the mean over seeds of each
run's median over the test samples) and their ratio ``ratio_median`` with an interval
(``median_interval_method``), drawn from a bootstrap of its own (same seed), so a reader sees
whether the typical sample agrees with the mean. The threshold is the mean's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.modes import MODES, Mode, full_finetune
from pdetransfer.study.collection import Cell
from pdetransfer.study.statistics import (
    MEAN,
    MEDIAN,
    NO_INTERVAL,
    Bootstrap,
    RunErrors,
    percentile_interval,
)

#: A mode is "within" full fine-tuning where its error is at most this times the reference's.
WITHIN = 1.1

IDENTITY = ["pretrain", "size", "downstream"]
TRAILER = ["interval_method", "seed_df", "bootstrap_replicates", "bootstrap_seed"]
COMPARISON_COLUMNS = [
    *IDENTITY,
    "n",
    "mode",
    "trainable_parameters",
    "test_rel_l2_mean",
    "test_rel_l2_lo",
    "test_rel_l2_hi",
    "reference_rel_l2_mean",
    "ratio",
    "ratio_lo",
    "ratio_hi",
    *TRAILER,
    "test_rel_l2_median",
    "test_rel_l2_median_lo",
    "test_rel_l2_median_hi",
    "reference_rel_l2_median",
    "ratio_median",
    "ratio_median_lo",
    "ratio_median_hi",
    "median_interval_method",
]
THRESHOLD_COLUMNS = [
    *IDENTITY,
    "mode",
    "within",
    "n_within",
    "bound",
    "n_within_lo",
    "n_within_hi",
    "note",
    *TRAILER,
    "trainable_parameters",
]
CROSSOVER_COLUMNS = [
    *IDENTITY,
    "mode",
    "trainable_parameters",
    "baseline",
    "n_crossover",
    "crossover_bound",
    "n_crossover_sweep_lo",
    "n_crossover_sweep_hi",
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "note",
    *TRAILER,
]


def _key(row: Any) -> Cell:
    return (row.mode, row.pretrain, row.size, row.downstream, int(row.n))


def _pairs(
    summary: pd.DataFrame, reference: Mode, others: Sequence[Mode]
) -> list[tuple[tuple[str, str, str], Mode, pd.DataFrame]]:
    """Per (pretrain, size, downstream) of the reference and each of ``others`` in the study:
    the reference's usable rows joined with the mode's on N (``n`` plus ``_ref`` columns)."""
    ok = summary[(summary["status"] == "ok") & summary["test_rel_l2_mean"].gt(0)]
    out = []
    ref_rows = ok[ok["mode"] == reference.name]
    for (pretrain, size, downstream), ref in ref_rows.groupby(IDENTITY, sort=False):
        for mode in others:
            rows = ok[
                (ok["mode"] == mode.name) & (ok["size"] == size) & (ok["downstream"] == downstream)
            ]
            rows = rows[rows["pretrain"] == (pretrain if mode.needs_pretrained else "")]
            if rows.empty:
                continue
            if not mode.trains:  # one cell, the same at every N
                rows = pd.concat([rows] * len(ref), ignore_index=True).assign(n=ref["n"].values)
            joined = rows.merge(ref, on="n", suffixes=("", "_ref")).sort_values("n")
            if not joined.empty:
                out.append(((pretrain, size, downstream), mode, joined))
    return out


def _replicates(
    joined: pd.DataFrame,
    mode: Mode,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
    reference: Mode,
    statistic: str = MEAN,
) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Bootstrap replicates (replicates x N) of the mode's and the reference's curves of
    ``statistic``, the interval method and the seed degrees of freedom
    (:class:`~pdetransfer.study.statistics.Bootstrap`)."""
    ours, theirs = [], []
    for r in joined.itertuples():
        n = int(r.n) if mode.trains else 0
        ours.append(list(chosen.get((mode.name, r.pretrain, r.size, r.downstream, n), [])))
        theirs.append(list(chosen.get((reference.name, r.pretrain_ref, r.size, r.downstream,
                                       int(r.n)), [])))  # fmt: skip
    if bootstrap is None or not all(ours) or not all(theirs):
        return np.empty((0, len(joined))), np.empty((0, len(joined))), NO_INTERVAL, 0
    reps = bootstrap.curves([ours, theirs], statistic=statistic)
    if reps.method == NO_INTERVAL:
        return np.empty((0, len(joined))), np.empty((0, len(joined))), NO_INTERVAL, 0
    a, b = reps.curves
    return a, b, reps.method, reps.seed_df


def _streams(
    bootstrap: Bootstrap | None, key: tuple[str, ...]
) -> tuple[Bootstrap | None, Bootstrap | None]:
    """One comparison's bootstraps of means and of medians (:meth:`Bootstrap.stream`), so
    mode_comparison.csv and mode_crossover.csv print the same interval for the same ratio."""
    if bootstrap is None:
        return None, None
    return bootstrap.stream(*key, MEAN), bootstrap.stream(*key, MEDIAN)


def _median_columns(
    joined: pd.DataFrame,
    mode: Mode,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
    reference: Mode,
) -> dict[str, list[Any]]:
    """Per row of ``joined``: both sides' median errors, their ratio and its interval, and the
    median interval method (NaN medians where the summary has none)."""
    nan = pd.Series(math.nan, index=joined.index)
    ours = joined.get("test_rel_l2_median", nan).to_numpy(dtype=float)
    ref = joined.get("test_rel_l2_median_ref", nan).to_numpy(dtype=float)
    a, b, method, _ = _replicates(joined, mode, chosen, bootstrap, reference, MEDIAN)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio, rep_ratio = ours / ref, a / b
    out: dict[str, list[Any]] = {name: [] for name in COMPARISON_COLUMNS[-8:]}
    for j in range(len(joined)):
        known = method != NO_INTERVAL
        err = percentile_interval(a[:, j]) if known else (math.nan, math.nan)
        rat = percentile_interval(rep_ratio[:, j]) if known else (math.nan, math.nan)
        values = [ours[j], *err, ref[j], ratio[j], *rat, method]
        for name, value in zip(out, values, strict=True):
            out[name].append(value)
    return out


def _threshold(ns: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Per row of ``ratios`` (replicates x N, N ascending): the smallest N from which every
    ratio is within :data:`WITHIN`; 0 where that holds from the smallest N, inf for none."""
    inside = ratios <= WITHIN
    # Suffix "all": within from column j to the end.
    stays = np.flip(np.cumprod(np.flip(inside, axis=1), axis=1), axis=1).astype(bool)
    out = np.full(len(ratios), math.inf)
    some = stays.any(axis=1)
    first = stays.argmax(axis=1)
    out[some] = np.asarray(ns, dtype=float)[first[some]]
    out[some & (first == 0)] = 0.0
    return out


def _trailer(method: str, seed_df: int, bootstrap: Bootstrap | None) -> dict[str, Any]:
    """The interval provenance columns of a row (empty replicates and seed without one)."""
    unknown = method == NO_INTERVAL or bootstrap is None
    return {
        "interval_method": method,
        "seed_df": seed_df,
        "bootstrap_replicates": math.nan if unknown else bootstrap.replicates,  # type: ignore[union-attr]
        "bootstrap_seed": math.nan if unknown else bootstrap.seed,  # type: ignore[union-attr]
    }


def crossover(ns: Sequence[float], decisive: Sequence[bool]) -> tuple[float, str, float, float]:
    """The N (ascending ``ns``) from which the mode no longer wins decisively: the smallest N
    with no decisive win at it or at any larger N, as (N, bound, sweep_lo, sweep_hi). Bound
    ``=`` puts the crossing in (sweep_lo, sweep_hi]; ``<=`` (``sweep_lo`` 0) says the mode wins
    at no N of the sweep; ``>`` with no N that it wins at the largest. A win at a larger N
    outweighs a smaller N without one, where every mode may be equally poor: scratch has not
    caught up with a mode that still beats it later."""
    wins = [j for j, won in enumerate(decisive) if won]
    if wins and wins[-1] == len(ns) - 1:
        return math.nan, ">", float(ns[-1]), math.inf
    if not wins:
        return float(ns[0]), "<=", 0.0, float(ns[0])
    last = wins[-1]
    return float(ns[last + 1]), "=", float(ns[last]), float(ns[last + 1])


def crossover_table(
    summary: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
) -> pd.DataFrame:
    """mode_crossover.csv: per mode that starts from the pre-trained model and trains, per
    (pretrain, size, downstream), the smallest sweep N from which scratch's error is no longer
    decisively above the mode's, there and at every larger N: the 95% interval of scratch /
    mode contains 1 or lies below it (the point ratio where there is no interval). The
    crossing lies between the last N where the mode wins decisively and the next
    (``n_crossover_sweep_lo``/``_hi``); it is a sweep point, not interpolated.
    ``crossover_bound`` ``<=`` says the mode wins decisively at no N, ``>`` that it wins at the
    largest N (no crossover); the note names smaller N where scratch was level too."""
    scratch = MODES[full_finetune().baseline or ""]
    rows = []
    for reference in (m for m in MODES.values() if m.trains and m.needs_pretrained):
        for (pretrain, size, downstream), _, joined in _pairs(summary, reference, [scratch]):
            key = (pretrain, size, downstream, scratch.name, reference.name)
            means, _ = _streams(bootstrap, key)
            a, b, method, seed_df = _replicates(joined, scratch, chosen, means, reference)
            ratio = (joined["test_rel_l2_mean"] / joined["test_rel_l2_mean_ref"]).to_numpy()
            if method == NO_INTERVAL:
                lo = hi = np.full(len(ratio), math.nan)
                decisive = ratio > 1
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    bounds = [percentile_interval(col) for col in (a / b).T]
                lo, hi = (np.array(side) for side in zip(*bounds, strict=True))
                decisive = lo > 1
            ns = joined["n"].to_numpy()
            n_cross, bound, sweep_lo, sweep_hi = crossover(ns, decisive)
            at = int(np.flatnonzero(ns == n_cross)[0]) if bound != ">" else len(ns) - 1
            note = {
                "<=": "scratch is level or better from the smallest N of the sweep",
                ">": f"none within the sweep: the mode wins decisively up to N = {int(ns[-1])}",
            }.get(bound, "")
            level = [str(int(n)) for n, won in zip(ns[:at], decisive[:at], strict=True) if not won]
            if level:  # below a later decisive win of the mode
                also = f"scratch is also level at N = {', '.join(level)}, below a later win"
                note = f"{note}; {also}" if note else also
            rows.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "mode": reference.name,
                    "trainable_parameters": joined["trainable_parameters_ref"].iloc[0],
                    "baseline": scratch.name,
                    "n_crossover": n_cross,
                    "crossover_bound": bound,
                    "n_crossover_sweep_lo": sweep_lo,
                    "n_crossover_sweep_hi": sweep_hi,
                    "ratio": ratio[at],
                    "ratio_lo": lo[at],
                    "ratio_hi": hi[at],
                    "note": note,
                    **_trailer(method, seed_df, bootstrap),
                }
            )
    return pd.DataFrame(rows, columns=CROSSOVER_COLUMNS)


def mode_tables(
    summary: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """mode_comparison.csv and mode_threshold.csv (see the module docstring)."""
    comparison, thresholds = [], []
    reference = full_finetune()
    others = [mode for mode in MODES.values() if mode is not reference]
    for (pretrain, size, downstream), mode, joined in _pairs(summary, reference, others):
        key = (pretrain, size, downstream, mode.name, reference.name)
        means, medians = _streams(bootstrap, key)
        a, b, method, seed_df = _replicates(joined, mode, chosen, means, reference)
        median_columns = _median_columns(joined, mode, chosen, medians, reference)
        unknown = method == NO_INTERVAL
        trailer = _trailer(method, seed_df, bootstrap)
        with np.errstate(divide="ignore", invalid="ignore"):
            rep_ratio = a / b
        ratios = (joined["test_rel_l2_mean"] / joined["test_rel_l2_mean_ref"]).to_numpy()
        for j, r in enumerate(joined.itertuples()):
            err_lo, err_hi = (math.nan, math.nan) if unknown else percentile_interval(a[:, j])
            rat_lo, rat_hi = (
                (math.nan, math.nan) if unknown else percentile_interval(rep_ratio[:, j])
            )
            comparison.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "n": int(r.n),
                    "mode": mode.name,
                    "trainable_parameters": r.trainable_parameters,
                    "test_rel_l2_mean": r.test_rel_l2_mean,
                    "test_rel_l2_lo": err_lo,
                    "test_rel_l2_hi": err_hi,
                    "reference_rel_l2_mean": r.test_rel_l2_mean_ref,
                    "ratio": ratios[j],
                    "ratio_lo": rat_lo,
                    "ratio_hi": rat_hi,
                    **trailer,
                    **{column: values[j] for column, values in median_columns.items()},
                }
            )
        ns = joined["n"].to_numpy()
        (point,) = _threshold(ns, ratios[None, :])
        lo, hi = (math.nan, math.nan) if unknown else percentile_interval(_threshold(ns, rep_ratio))
        if math.isinf(point):
            n_within, bound = math.nan, ">"
            note = (
                f"not within {WITHIN - 1:.0%} of full fine-tuning at the largest N "
                f"({int(ns[-1])}, ratio {ratios[-1]:.3g})"
            )
        elif point == 0:
            n_within, bound, note = float(ns[0]), "<=", "within from the smallest N of the sweep"
        else:
            n_within, bound, note = point, "=", ""
        thresholds.append(
            {
                "pretrain": pretrain,
                "size": size,
                "downstream": downstream,
                "mode": mode.name,
                "trainable_parameters": joined["trainable_parameters"].iloc[0],
                "within": WITHIN,
                "n_within": n_within,
                "bound": bound,
                "n_within_lo": lo,
                "n_within_hi": hi,
                "note": note,
                **trailer,
            }
        )
    return (
        pd.DataFrame(comparison, columns=COMPARISON_COLUMNS),
        pd.DataFrame(thresholds, columns=THRESHOLD_COLUMNS),
    )
