"""Every mode against full fine-tuning: ``mode_comparison.csv`` and ``mode_threshold.csv``.

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
from pdetransfer.study.statistics import (
    MEAN,
    MEDIAN,
    NO_INTERVAL,
    Bootstrap,
    RunErrors,
    percentile_interval,
)

Cell = tuple[str, str, str, str, int]  # (mode, pretrain, size, downstream, n)

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
]


def _key(row: Any) -> Cell:
    return (row.mode, row.pretrain, row.size, row.downstream, int(row.n))


def _pairs(summary: pd.DataFrame) -> list[tuple[tuple[str, str, str], Mode, pd.DataFrame]]:
    """Per (pretrain, size, downstream) of the reference and each other mode of the study: the
    reference's usable rows joined with the mode's on N (``n`` plus ``_ref`` columns)."""
    reference = full_finetune()
    ok = summary[(summary["status"] == "ok") & summary["test_rel_l2_mean"].gt(0)]
    out = []
    ref_rows = ok[ok["mode"] == reference.name]
    for (pretrain, size, downstream), ref in ref_rows.groupby(IDENTITY, sort=False):
        for mode in MODES.values():
            if mode is reference:
                continue
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
    statistic: str = MEAN,
) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Bootstrap replicates (replicates x N) of the mode's and the reference's curves of
    ``statistic``, the interval method and the seed degrees of freedom
    (:class:`~pdetransfer.study.statistics.Bootstrap`)."""
    reference = full_finetune()
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


def _median_columns(
    joined: pd.DataFrame,
    mode: Mode,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
) -> dict[str, list[Any]]:
    """Per row of ``joined``: both sides' median errors, their ratio and its interval, and the
    median interval method (NaN medians where the summary has none)."""
    nan = pd.Series(math.nan, index=joined.index)
    ours = joined.get("test_rel_l2_median", nan).to_numpy(dtype=float)
    ref = joined.get("test_rel_l2_median_ref", nan).to_numpy(dtype=float)
    a, b, method, _ = _replicates(joined, mode, chosen, bootstrap, MEDIAN)
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


def mode_tables(
    summary: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """mode_comparison.csv and mode_threshold.csv (see the module docstring)."""
    comparison, thresholds = [], []
    medians = None if bootstrap is None else Bootstrap(bootstrap.replicates, bootstrap.seed)
    for (pretrain, size, downstream), mode, joined in _pairs(summary):
        a, b, method, seed_df = _replicates(joined, mode, chosen, bootstrap)
        median_columns = _median_columns(joined, mode, chosen, medians)
        unknown = method == NO_INTERVAL
        trailer = {
            "interval_method": method,
            "seed_df": seed_df,
            "bootstrap_replicates": math.nan if unknown else bootstrap.replicates,  # type: ignore[union-attr]
            "bootstrap_seed": math.nan if unknown else bootstrap.seed,  # type: ignore[union-attr]
        }
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
