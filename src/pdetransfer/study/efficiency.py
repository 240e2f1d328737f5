"""data_efficiency.csv: the N a mode and its baseline need to reach target errors, and ratio.

Each mode with a ``baseline`` in the mode table (:mod:`pdetransfer.modes`) is compared with
it: fine-tuning with scratch. For each target test error, the N at which the mode and its
baseline first reach it, interpolated linearly in log N - log error between the sweep's N
values, and their ratio N_baseline / N_mode (for fine-tuning the paper's "~128x fewer
examples", N_scratch / N_finetune). Columns are named after the pair: ``n_<mode>``,
``<mode>_bound``, ``n_<mode>_lo``/``_hi``, ``n_<mode>_sweep_lo``/``_hi``, then the baseline's.
(A second comparison would fill only its own pair's columns; the table would then need a
column naming the pair, left out while there is one so that the table keeps its shape.) When
a curve is already below the target at the smallest N, or never reaches it, the N is a bound,
and the ratio says so.

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

The same reading on the cells' **median** errors (``test_rel_l2_median`` of summary.csv) fills
``n_<mode>_median``, ``<mode>_median_bound`` (and the baseline's), ``ratio_median``,
``ratio_median_bound`` and its interval ``ratio_median_lo``/``_hi`` (``median_interval_method``):
the N at which the typical test sample reaches the target. Where the two ratios disagree, a few
extreme samples carry the mean's. Headlines and flags are the mean's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.modes import Mode, comparisons
from pdetransfer.study.collection import Cell
from pdetransfer.study.flags import curve_flags, not_headline_because
from pdetransfer.study.statistics import (
    MEAN,
    MEDIAN,
    NO_INTERVAL,
    Bootstrap,
    RunErrors,
    n_to_reach,
    n_to_reach_replicates,
    percentile_interval,
    sweep_bounds,
)

IDENTITY = ["pretrain", "size", "downstream", "target_rel_l2", "headline"]
RATIO = ["ratio", "ratio_bound", "ratio_lo", "ratio_hi", "ratio_sweep_lo", "ratio_sweep_hi"]
TRAILER = [
    "interval_method",
    "seed_df",
    "bootstrap_replicates",
    "bootstrap_seed",
    "flags",
    "not_headline_because",
]
MEDIAN_RATIO = ["ratio_median", "ratio_median_bound", "ratio_median_lo", "ratio_median_hi"]


def curve_columns(mode: Mode) -> list[str]:
    """The columns of one side of a comparison: its N, bound, interval and sweep bounds."""
    n = f"n_{mode.name}"
    return [n, f"{mode.name}_bound", f"{n}_lo", f"{n}_hi", f"{n}_sweep_lo", f"{n}_sweep_hi"]


def median_columns(mode: Mode) -> list[str]:
    """One side's N and bound read from the median errors."""
    return [f"n_{mode.name}_median", f"{mode.name}_median_bound"]


def columns() -> list[str]:
    """data_efficiency.csv's columns: every comparison's, in the mode table's order; the
    median reading last."""
    pairs = [
        c for mode, base in comparisons() for c in (*curve_columns(mode), *curve_columns(base))
    ]
    medians = [
        c for mode, base in comparisons() for c in (*median_columns(mode), *median_columns(base))
    ]
    return [
        *IDENTITY,
        *_unique(pairs),
        *RATIO,
        *TRAILER,
        *_unique(medians),
        *MEDIAN_RATIO,
        "median_interval_method",
    ]


# What N_baseline / N_mode is known to be, given what each N is known to be: keyed by the
# (baseline, mode) bounds.
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
    statistic: str = MEAN,
) -> tuple[dict[float, list[tuple[float, float]]], str, int]:
    """Per target: the (lo, hi) of N for each curve and of their ratio (the baseline's N over
    the mode's), read from the cells' ``statistic``; the interval method and seed degrees of
    freedom (``none``, with empty intervals, when a point lacks its runs or nothing varies)."""
    unknown = {t: [(math.nan, math.nan)] * 3 for t in targets}, NO_INTERVAL, 0
    usable = [_usable(c) for c in curves]
    runs = [
        [list(chosen.get((r.mode, r.pretrain, r.size, r.downstream, int(r.n)), [])) for r in c]
        for c in (u.itertuples() for u in usable)
    ]
    if bootstrap is None or any(c.empty for c in usable) or not all(map(all, runs)):
        return unknown
    reps = bootstrap.curves(runs, statistic=statistic)
    if reps.method == NO_INTERVAL:
        return unknown
    out = {}
    for target in targets:
        ours, base = (
            n_to_reach_replicates(u["n"], r, target)
            for u, r in zip(usable, reps.curves, strict=True)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = base / ours
        out[target] = [percentile_interval(v) for v in (ours, base, ratio)]
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
    and a bootstrap (without them the interval columns are empty); headline rows first. The
    median reading draws from its own bootstrap of the same seed, so the means' intervals are
    those of a table without it."""
    medians = None if bootstrap is None else Bootstrap(bootstrap.replicates, bootstrap.seed)
    rows = [
        row
        for mode, base in comparisons()
        for row in compare(summary, mode, base, targets, chosen or {}, bootstrap, medians)
    ]
    table = pd.DataFrame(rows, columns=columns())
    return table.sort_values("headline", ascending=False, kind="stable", ignore_index=True)


def compare(
    summary: pd.DataFrame,
    mode: Mode,
    base: Mode,
    targets: Sequence[float],
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
    medians: Bootstrap | None = None,
) -> list[dict[str, Any]]:
    """The rows of one mode against its baseline: per cell (pre-training, size, downstream)
    of the mode, the baseline's curve on the same size and dataset (and pre-training, unless
    the baseline's runs are shared), per target; ``medians`` draws the median reading's
    intervals."""
    rows: list[dict[str, Any]] = []
    ours = summary[summary["mode"] == mode.name]
    theirs = summary[summary["mode"] == base.name]
    for (pretrain, size, downstream), curve in ours.groupby(
        ["pretrain", "size", "downstream"], sort=False
    ):
        other = theirs[(theirs["size"] == size) & (theirs["downstream"] == downstream)]
        if not base.shared:
            other = other[other["pretrain"] == pretrain]
        if other.empty:
            continue
        intervals, method, seed_df = _intervals([curve, other], chosen, targets, bootstrap)
        unknown = method == NO_INTERVAL
        m_intervals, m_method, _ = _intervals([curve, other], chosen, targets, medians, MEDIAN)
        for target in targets:
            n_ours, q_ours = n_to_reach(curve["n"], curve["test_rel_l2_mean"], target)
            n_base, q_base = n_to_reach(other["n"], other["test_rel_l2_mean"], target)
            bound = _RATIO_BOUND.get((q_base, q_ours), "")
            ratio = n_base / n_ours if bound else math.nan
            (ours_lo, ours_hi), (base_lo, base_hi), (r_lo, r_hi) = intervals[target]
            ours_sweep, base_sweep = _sweep(curve, target), _sweep(other, target)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio_sweep = np.divide(
                    [base_sweep[0], base_sweep[1]], [ours_sweep[1], ours_sweep[0]]
                )
            flags = curve_flags(curve, mode.name, n_ours, q_ours, target)
            flags += curve_flags(other, base.name, n_base, q_base, target)
            why = not_headline_because(flags, bound, (r_lo, r_hi))
            sides = (
                (mode, (n_ours, q_ours, ours_lo, ours_hi, *ours_sweep)),
                (base, (n_base, q_base, base_lo, base_hi, *base_sweep)),
            )
            rows.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "target_rel_l2": target,
                    "headline": not why,
                    **{
                        column: value
                        for side, values in sides
                        for column, value in zip(curve_columns(side), values, strict=True)
                    },
                    "ratio": ratio,
                    "ratio_bound": bound,
                    "ratio_lo": r_lo,
                    "ratio_hi": r_hi,
                    "ratio_sweep_lo": ratio_sweep[0],
                    "ratio_sweep_hi": ratio_sweep[1],
                    "interval_method": method,
                    "seed_df": seed_df,
                    "bootstrap_replicates": math.nan if unknown else bootstrap.replicates,
                    "bootstrap_seed": math.nan if unknown else bootstrap.seed,
                    "flags": ";".join(flags),
                    "not_headline_because": "; ".join(why),
                    **_median_reading(curve, other, mode, base, target, m_intervals[target]),
                    "median_interval_method": m_method,
                }
            )
    return rows


def _median_reading(
    curve: pd.DataFrame,
    other: pd.DataFrame,
    mode: Mode,
    base: Mode,
    target: float,
    intervals: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    """The N of each side and their ratio read from the cells' median errors (NaN where the
    summary has none), with the ratio's interval."""
    sides = []
    for side in (curve, other):
        usable = _usable(side)
        median = usable.get("test_rel_l2_median", pd.Series(math.nan, index=usable.index))
        sides.append(n_to_reach(usable["n"], median, target))
    (n_ours, q_ours), (n_base, q_base) = sides
    bound = _RATIO_BOUND.get((q_base, q_ours), "")
    return {
        f"n_{mode.name}_median": n_ours,
        f"{mode.name}_median_bound": q_ours,
        f"n_{base.name}_median": n_base,
        f"{base.name}_median_bound": q_base,
        "ratio_median": n_base / n_ours if bound else math.nan,
        "ratio_median_bound": bound,
        "ratio_median_lo": intervals[2][0],
        "ratio_median_hi": intervals[2][1],
    }


def _unique(items: Sequence[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))
