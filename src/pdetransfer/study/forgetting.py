"""forgetting.csv: what training on the downstream set does to what the pre-trained model knew.

A mean error can fall while most samples get worse: a few samples the pre-trained model got
badly wrong improve a lot, and the typical one, which it already predicted well, is lost. So
every trained cell of a mode that starts from a pre-trained checkpoint (full fine-tuning,
``head``, ``lora``) is compared **sample by sample** with the zero-shot run of the same
pre-training, size and downstream dataset (every run of a dataset is evaluated on the same
test samples, in the same order):

- ``fraction_worse``: the share of test samples whose error is larger than zero-shot's on
  that sample;
- ``median_ratio``: the median over samples of error / zero-shot error (below 1: the typical
  sample gained, above 1: it was forgotten).

Each is the mean over the cell's seeds at its chosen learning rate, with a 95% interval by the
method of the cell means (:mod:`pdetransfer.study.statistics`): the test samples resampled (one
draw, shared by every cell of the table), the between-seed spread pooled over the mode's curve
across N with a t quantile. The ratio's spread is taken on the log scale (seed effects on an
error ratio are multiplicative), the share's on the share itself (it may be 0, and a seed moves
it by an amount, not a factor), its interval clipped to [0, 1]. Comparing the modes row by row
answers whether ``head`` or ``lora`` keep what full fine-tuning forgets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.modes import MODES
from pdetransfer.study.collection import CURVE, Cell
from pdetransfer.study.statistics import (
    MEDIAN,
    NO_INTERVAL,
    SAMPLES_ONLY,
    SEEDS_AND_SAMPLES,
    Bootstrap,
    RunErrors,
    percentile_interval,
    pooled_spread,
)

FORGETTING_COLUMNS = [
    "pretrain",
    "size",
    "downstream",
    "n",
    "mode",
    "trainable_parameters",
    "n_seeds",
    "test_samples",
    "zeroshot_rel_l2_median",
    "test_rel_l2_median",
    "fraction_worse",
    "fraction_worse_lo",
    "fraction_worse_hi",
    "median_ratio",
    "median_ratio_lo",
    "median_ratio_hi",
    "interval_method",
    "seed_df",
    "bootstrap_replicates",
    "bootstrap_seed",
]


def sample_ratios(run: RunErrors, reference: np.ndarray) -> np.ndarray:
    """A run's error over the reference's, sample by sample (inf where the reference is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(run.per_sample, dtype=float) / reference


def forgetting(
    summary: pd.DataFrame, chosen: Mapping[Cell, Sequence[RunErrors]], bootstrap: Bootstrap
) -> pd.DataFrame:
    """forgetting.csv (see the module docstring): one row per trained cell with a zero-shot
    reference whose runs and reference all have per-sample errors."""
    zero_shot = [m.name for m in MODES.values() if not m.trains]
    fine_tuned = [m.name for m in MODES.values() if m.trains and m.needs_pretrained]
    ok = summary[summary["status"] == "ok"]
    rows: list[dict[str, Any]] = []
    for (mode, pretrain, size, downstream), curve in ok[ok["mode"].isin(fine_tuned)].groupby(
        CURVE, sort=False
    ):
        references = [chosen.get((z, pretrain, size, downstream, 0), []) for z in zero_shot]
        reference = next((r[0].per_sample for r in references if r), None)
        if reference is None:
            continue
        cells = []
        for r in curve.sort_values("n").itertuples():
            runs = chosen.get((mode, pretrain, size, downstream, int(r.n)), [])
            if runs and all(_paired(run, reference) for run in runs):
                cells.append((r, runs))
        if not cells:
            continue
        ratios = [[sample_ratios(run, reference) for run in runs] for _, runs in cells]
        fraction = _fraction_worse(ratios, bootstrap)
        median = _median_ratio(ratios, bootstrap)
        for j, (r, runs) in enumerate(cells):
            rows.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "n": int(r.n),
                    "mode": mode,
                    "trainable_parameters": r.trainable_parameters,
                    "n_seeds": len(runs),
                    "test_samples": len(reference),
                    "zeroshot_rel_l2_median": float(np.median(reference)),
                    "test_rel_l2_median": float(np.mean([np.median(x.per_sample) for x in runs])),
                    "fraction_worse": float(np.mean([np.mean(x > 1) for x in ratios[j]])),
                    "fraction_worse_lo": fraction[0][j][0],
                    "fraction_worse_hi": fraction[0][j][1],
                    "median_ratio": float(np.mean([np.median(x) for x in ratios[j]])),
                    "median_ratio_lo": median[0][j][0],
                    "median_ratio_hi": median[0][j][1],
                    "interval_method": median[1],
                    "seed_df": median[2],
                    "bootstrap_replicates": bootstrap.replicates,
                    "bootstrap_seed": bootstrap.seed,
                }
            )
    return pd.DataFrame(rows, columns=FORGETTING_COLUMNS)


def _paired(run: RunErrors, reference: np.ndarray) -> bool:
    """Whether a run's per-sample errors are of the reference's test set."""
    return run.per_sample is not None and len(run.per_sample) == len(reference)


Intervals = tuple[list[tuple[float, float]], str, int]


def _fraction_worse(ratios: list[list[np.ndarray]], bootstrap: Bootstrap) -> Intervals:
    """Per cell of a curve, the interval of the seed-mean share of samples that got worse:
    test samples resampled, then an additive seed shift of the share's pooled spread."""
    worse = [np.stack([x > 1 for x in runs], axis=1).astype(float) for runs in ratios]
    weights = bootstrap.sample_weights(len(worse[0]))
    base = np.stack([(weights @ w).mean(axis=1) for w in worse], axis=1)
    spread = pooled_spread([w.mean(axis=0) for w in worse], log=False)
    seeds = np.array([w.shape[1] for w in worse], dtype=float)
    reps = np.clip(base + bootstrap.seed_shifts(spread, seeds, per_point=True), 0.0, 1.0)
    method = SEEDS_AND_SAMPLES if spread.df else SAMPLES_ONLY
    return [percentile_interval(column) for column in reps.T], method, spread.df


def _median_ratio(ratios: list[list[np.ndarray]], bootstrap: Bootstrap) -> Intervals:
    """Per cell of a curve, the interval of the seed-mean median ratio (the medians' method
    of :class:`~pdetransfer.study.statistics.Bootstrap`)."""
    curve = [[RunErrors(math.nan, x, float(np.median(x))) for x in runs] for runs in ratios]
    reps = bootstrap.curves([curve], per_point=True, statistic=MEDIAN)
    if reps.method == NO_INTERVAL:
        return [(math.nan, math.nan)] * len(curve), NO_INTERVAL, 0
    return [percentile_interval(c) for c in reps.curves[0].T], reps.method, reps.seed_df
