"""data_efficiency.csv: the N a mode and its baseline need to reach target errors, and ratio.

Each mode with a ``baseline`` in the mode table (:mod:`pdetransfer.modes`) is compared with
it: fine-tuning with scratch. For each target test error, the N at which the mode and its
baseline first reach it, interpolated linearly in log N - log error between the sweep's N
values, and their ratio N_baseline / N_mode (for fine-tuning the paper's "~128x fewer
examples", N_scratch / N_finetune). Columns are named after the pair: ``n_<mode>``,
``<mode>_bound``, ``n_<mode>_lo``/``_hi``, then the baseline's. (A second comparison would
fill only its own pair's columns; the table would then need a column naming the pair, left
out while there is one so that the table keeps its shape.) When a curve is already below
the target at the smallest N, or never reaches it, the N is a bound, and the ratio says so.

Every N and ratio has a 95% bootstrap interval (``*_lo``/``*_hi``, see
:mod:`pdetransfer.study.statistics`): 0 as a lower end means "below the smallest N of the
sweep", ``inf`` as an upper end "beyond the largest". ``interval_from`` says what was resampled
(``samples`` alone with one seed); ``bootstrap_replicates`` and ``bootstrap_seed`` reproduce it.

``flags`` lists what makes a number unfit for a headline, per mode, from the cells it was read
from (every sweep point up to the first one at or past the crossing; all of them when the
target is never reached): ``lr_at_edge:MODE`` (a chosen rate at the grid's edge),
``unbracketed:MODE`` (a single rate), ``undertrained:MODE`` (a chosen run stopped still
improving), ``diverged:MODE`` (a cell that diverged at every rate, skipped by the curve) and
``coarse:MODE`` (the crossing lies between sweep points more than 2x apart, so the
interpolation itself is rough). An empty ``flags`` is the only kind of row a headline may use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.modes import Mode, comparisons
from pdetransfer.study.statistics import (
    COARSE_SPACING,
    Bootstrap,
    RunErrors,
    crossing_spacing,
    n_to_reach,
    n_to_reach_replicates,
    percentile_interval,
)

Cell = tuple[str, str, str, str, int]  # (mode, pretrain, size, downstream, n)

IDENTITY = ["pretrain", "size", "downstream", "target_rel_l2"]
TRAILER = ["interval_from", "bootstrap_replicates", "bootstrap_seed", "flags"]


def curve_columns(mode: Mode) -> list[str]:
    """The columns of one side of a comparison: its N, bound and interval."""
    return [f"n_{mode.name}", f"{mode.name}_bound", f"n_{mode.name}_lo", f"n_{mode.name}_hi"]


def columns() -> list[str]:
    """data_efficiency.csv's columns: every comparison's, in the mode table's order."""
    pairs = [
        c for mode, base in comparisons() for c in (*curve_columns(mode), *curve_columns(base))
    ]
    ratio = ["ratio", "ratio_bound", "ratio_lo", "ratio_hi"]
    return [*IDENTITY, *_unique(pairs), *ratio, *TRAILER]


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


def curve_flags(curve: pd.DataFrame, mode: str, n: float, bound: str, target: float) -> list[str]:
    """Flags of the cells an N was read from (see the module docstring)."""
    if bound in ("=", "<="):
        read = curve[curve["n"] <= curve.loc[curve["n"] >= n, "n"].min()]
    else:
        read = curve
    flags = []
    edge = read.get("lr_at_edge", pd.Series(dtype=str))
    if edge.isin(["min", "max"]).any():
        flags.append(f"lr_at_edge:{mode}")
    if edge.eq("unbracketed").any():
        flags.append(f"unbracketed:{mode}")
    if read.get("undertrained", pd.Series(dtype=bool)).fillna(False).astype(bool).any():
        flags.append(f"undertrained:{mode}")
    if read.get("status", pd.Series(dtype=str)).eq("diverged").any():
        flags.append(f"diverged:{mode}")
    usable = _usable(curve)
    spacing = crossing_spacing(usable["n"], usable["test_rel_l2_mean"], target)
    if bound == "=" and spacing > COARSE_SPACING:
        flags.append(f"coarse:{mode}")
    return flags


def _intervals(
    curves: Sequence[pd.DataFrame],
    chosen: Mapping[Cell, Sequence[RunErrors]],
    targets: Sequence[float],
    bootstrap: Bootstrap | None,
) -> tuple[dict[float, list[tuple[float, float]]], str]:
    """Per target: the (lo, hi) of N for each curve and of their ratio; what was resampled
    (``none``, with empty intervals, when a point lacks its runs or nothing varies)."""
    unknown = {t: [(math.nan, math.nan)] * 3 for t in targets}, "none"
    usable = [_usable(c) for c in curves]
    runs = [
        [list(chosen.get((r.mode, r.pretrain, r.size, r.downstream, int(r.n)), [])) for r in c]
        for c in (u.itertuples() for u in usable)
    ]
    if bootstrap is None or any(c.empty for c in usable) or not all(map(all, runs)):
        return unknown
    reps, source = bootstrap.curves(runs)
    if source == "none":
        return unknown
    out = {}
    for target in targets:
        ours, base = (
            n_to_reach_replicates(u["n"], r, target) for u, r in zip(usable, reps, strict=True)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = base / ours
        out[target] = [percentile_interval(v) for v in (ours, base, ratio)]
    return out, source


def data_efficiency(
    summary: pd.DataFrame,
    targets: Sequence[float],
    chosen: Mapping[Cell, Sequence[RunErrors]] | None = None,
    bootstrap: Bootstrap | None = None,
) -> pd.DataFrame:
    """data_efficiency.csv from the summary and, for the intervals, the chosen runs' errors
    and a bootstrap (without them the interval columns are empty)."""
    rows = [
        row
        for mode, base in comparisons()
        for row in compare(summary, mode, base, targets, chosen or {}, bootstrap)
    ]
    return pd.DataFrame(rows, columns=columns())


def compare(
    summary: pd.DataFrame,
    mode: Mode,
    base: Mode,
    targets: Sequence[float],
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
) -> list[dict[str, Any]]:
    """The rows of one mode against its baseline: per cell (pre-training, size, downstream)
    of the mode, the baseline's curve on the same size and dataset (and pre-training, unless
    the baseline's runs are shared), per target."""
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
        intervals, source = _intervals([curve, other], chosen, targets, bootstrap)
        unknown = source == "none"
        for target in targets:
            n_ours, q_ours = n_to_reach(curve["n"], curve["test_rel_l2_mean"], target)
            n_base, q_base = n_to_reach(other["n"], other["test_rel_l2_mean"], target)
            bound = _RATIO_BOUND.get((q_base, q_ours), "")
            ratio = n_base / n_ours if bound else math.nan
            (ours_lo, ours_hi), (base_lo, base_hi), (r_lo, r_hi) = intervals[target]
            flags = curve_flags(curve, mode.name, n_ours, q_ours, target)
            flags += curve_flags(other, base.name, n_base, q_base, target)
            sides = (
                (mode, (n_ours, q_ours, ours_lo, ours_hi)),
                (base, (n_base, q_base, base_lo, base_hi)),
            )
            rows.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "target_rel_l2": target,
                    **{
                        column: value
                        for side, values in sides
                        for column, value in zip(curve_columns(side), values, strict=True)
                    },
                    "ratio": ratio,
                    "ratio_bound": bound,
                    "ratio_lo": r_lo,
                    "ratio_hi": r_hi,
                    "interval_from": source,
                    "bootstrap_replicates": math.nan if unknown else bootstrap.replicates,
                    "bootstrap_seed": math.nan if unknown else bootstrap.seed,
                    "flags": ";".join(flags),
                }
            )
    return rows


def _unique(items: Sequence[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))
