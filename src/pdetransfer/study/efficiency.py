"""data_efficiency.csv: the N fine-tuning and scratch need to reach target errors, and ratio.

For each target test error, the N at which fine-tuning and scratch first reach it,
interpolated linearly in log N - log error between the sweep's N values, and their ratio
N_scratch / N_finetune (the paper's "~128x fewer examples"). When a curve is already below the
target at the smallest N, or never reaches it, the N is a bound, and the ratio says so.

Every N and ratio has a 95% interval (``*_lo``/``*_hi``, see
:mod:`pdetransfer.study.statistics`): 0 as a lower end means "below the smallest N of the
sweep", ``inf`` as an upper end "beyond the largest". ``interval_method`` says what entered it,
``seed_df`` the seed degrees of freedom of the weaker curve (0: one seed, no seed variation in
the interval); ``bootstrap_replicates`` and ``bootstrap_seed`` reproduce it. Next to each N,
``*_sweep_lo``/``*_sweep_hi`` are what the sweep points alone say if the curve is monotone
(the two points around the crossing), and ``ratio_sweep_lo``/``_hi`` the ratios they allow:
the interpolated value is a reading between them, not a measurement.

``flags`` lists, per mode, what qualifies a number, from the cells it was read from (every
sweep point up to the first one at or past the crossing; all of them when the target is never
reached): see :data:`pdetransfer.study.flags.EFFICIENCY_FLAGS`. A row is a ``headline`` when
no flag blocks it and its ratio is a number with an interval; ``not_headline_because`` says
why any other row is not one, and headline rows come first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.study.flags import curve_flags, not_headline_because
from pdetransfer.study.statistics import (
    NO_INTERVAL,
    Bootstrap,
    RunErrors,
    n_to_reach,
    n_to_reach_replicates,
    percentile_interval,
    sweep_bounds,
)

Cell = tuple[str, str, str, str, int]  # (mode, pretrain, size, downstream, n)

COLUMNS = [
    "pretrain",
    "size",
    "downstream",
    "target_rel_l2",
    "headline",
    "n_finetune",
    "finetune_bound",
    "n_finetune_lo",
    "n_finetune_hi",
    "n_finetune_sweep_lo",
    "n_finetune_sweep_hi",
    "n_scratch",
    "scratch_bound",
    "n_scratch_lo",
    "n_scratch_hi",
    "n_scratch_sweep_lo",
    "n_scratch_sweep_hi",
    "ratio",
    "ratio_bound",
    "ratio_lo",
    "ratio_hi",
    "ratio_sweep_lo",
    "ratio_sweep_hi",
    "interval_method",
    "seed_df",
    "bootstrap_replicates",
    "bootstrap_seed",
    "flags",
    "not_headline_because",
]

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


def _usable(curve: pd.DataFrame) -> pd.DataFrame:
    """Points a curve is read from: a finite positive error (all-diverged cells drop out)."""
    return curve[curve["test_rel_l2_mean"].gt(0)].sort_values("n")


def _intervals(
    curves: Sequence[pd.DataFrame],
    chosen: Mapping[Cell, Sequence[RunErrors]],
    targets: Sequence[float],
    bootstrap: Bootstrap | None,
) -> tuple[dict[float, list[tuple[float, float]]], str, int]:
    """Per target: the (lo, hi) of N for each curve and of their ratio; the interval method
    and seed degrees of freedom (``none``, with empty intervals, when a point lacks its runs
    or nothing varies)."""
    unknown = {t: [(math.nan, math.nan)] * 3 for t in targets}, NO_INTERVAL, 0
    usable = [_usable(c) for c in curves]
    runs = [
        [list(chosen.get((r.mode, r.pretrain, r.size, r.downstream, int(r.n)), [])) for r in c]
        for c in (u.itertuples() for u in usable)
    ]
    if bootstrap is None or any(c.empty for c in usable) or not all(map(all, runs)):
        return unknown
    reps = bootstrap.curves(runs)
    if reps.method == NO_INTERVAL:
        return unknown
    out = {}
    for target in targets:
        ft, sc = (
            n_to_reach_replicates(u["n"], r, target)
            for u, r in zip(usable, reps.curves, strict=True)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = sc / ft
        out[target] = [percentile_interval(v) for v in (ft, sc, ratio)]
    return out, reps.method, reps.seed_df


def _sweep(curve: pd.DataFrame, target: float) -> tuple[float, float]:
    usable = _usable(curve)
    return sweep_bounds(usable["n"], usable["test_rel_l2_mean"], target)


def data_efficiency(
    summary: pd.DataFrame,
    targets: Sequence[float],
    chosen: Mapping[Cell, Sequence[RunErrors]] | None = None,
    bootstrap: Bootstrap | None = None,
) -> pd.DataFrame:
    """data_efficiency.csv from the summary and, for the intervals, the chosen runs' errors
    and a bootstrap (without them the interval columns are empty)."""
    rows: list[dict[str, Any]] = []
    chosen = chosen or {}
    finetune = summary[summary["mode"] == "finetune"]
    scratch = summary[summary["mode"] == "scratch"]
    for (pretrain, size, downstream), ft in finetune.groupby(
        ["pretrain", "size", "downstream"], sort=False
    ):
        sc = scratch[(scratch["size"] == size) & (scratch["downstream"] == downstream)]
        if sc.empty:
            continue
        intervals, method, seed_df = _intervals([ft, sc], chosen, targets, bootstrap)
        unknown = method == NO_INTERVAL
        for target in targets:
            n_ft, q_ft = n_to_reach(ft["n"], ft["test_rel_l2_mean"], target)
            n_sc, q_sc = n_to_reach(sc["n"], sc["test_rel_l2_mean"], target)
            bound = _RATIO_BOUND.get((q_sc, q_ft), "")
            ratio = n_sc / n_ft if bound else math.nan
            (ft_lo, ft_hi), (sc_lo, sc_hi), (r_lo, r_hi) = intervals[target]
            (ft_sweep_lo, ft_sweep_hi), (sc_sweep_lo, sc_sweep_hi) = (
                _sweep(ft, target),
                _sweep(sc, target),
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio_sweep = np.divide([sc_sweep_lo, sc_sweep_hi], [ft_sweep_hi, ft_sweep_lo])
            flags = curve_flags(ft, "finetune", n_ft, q_ft, target)
            flags += curve_flags(sc, "scratch", n_sc, q_sc, target)
            why = not_headline_because(flags, bound, (r_lo, r_hi))
            rows.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "target_rel_l2": target,
                    "headline": not why,
                    "n_finetune": n_ft,
                    "finetune_bound": q_ft,
                    "n_finetune_lo": ft_lo,
                    "n_finetune_hi": ft_hi,
                    "n_finetune_sweep_lo": ft_sweep_lo,
                    "n_finetune_sweep_hi": ft_sweep_hi,
                    "n_scratch": n_sc,
                    "scratch_bound": q_sc,
                    "n_scratch_lo": sc_lo,
                    "n_scratch_hi": sc_hi,
                    "n_scratch_sweep_lo": sc_sweep_lo,
                    "n_scratch_sweep_hi": sc_sweep_hi,
                    "ratio": ratio,
                    "ratio_bound": bound,
                    "ratio_lo": r_lo,
                    "ratio_hi": r_hi,
                    "ratio_sweep_lo": float(ratio_sweep[0]),
                    "ratio_sweep_hi": float(ratio_sweep[1]),
                    "interval_method": method,
                    "seed_df": seed_df,
                    "bootstrap_replicates": math.nan if unknown else bootstrap.replicates,
                    "bootstrap_seed": math.nan if unknown else bootstrap.seed,
                    "flags": ";".join(flags),
                    "not_headline_because": "; ".join(why),
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values("headline", ascending=False, kind="stable", ignore_index=True)
