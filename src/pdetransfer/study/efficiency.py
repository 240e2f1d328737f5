"""data_efficiency.csv: the N fine-tuning and scratch need to reach target errors, and ratio.

For each target test error, the N at which fine-tuning and scratch first reach it,
interpolated linearly in log N - log error between the sweep's N values, and their ratio
N_scratch / N_finetune (the paper's "~128x fewer examples"). When a curve is already below the
target at the smallest N, or never reaches it, the N is a bound, and the ratio says so.

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

COLUMNS = [
    "pretrain",
    "size",
    "downstream",
    "target_rel_l2",
    "n_finetune",
    "finetune_bound",
    "n_finetune_lo",
    "n_finetune_hi",
    "n_scratch",
    "scratch_bound",
    "n_scratch_lo",
    "n_scratch_hi",
    "ratio",
    "ratio_bound",
    "ratio_lo",
    "ratio_hi",
    "interval_from",
    "bootstrap_replicates",
    "bootstrap_seed",
    "flags",
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
        ft, sc = (
            n_to_reach_replicates(u["n"], r, target) for u, r in zip(usable, reps, strict=True)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = sc / ft
        out[target] = [percentile_interval(v) for v in (ft, sc, ratio)]
    return out, source


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
        intervals, source = _intervals([ft, sc], chosen, targets, bootstrap)
        unknown = source == "none"
        for target in targets:
            n_ft, q_ft = n_to_reach(ft["n"], ft["test_rel_l2_mean"], target)
            n_sc, q_sc = n_to_reach(sc["n"], sc["test_rel_l2_mean"], target)
            bound = _RATIO_BOUND.get((q_sc, q_ft), "")
            ratio = n_sc / n_ft if bound else math.nan
            (ft_lo, ft_hi), (sc_lo, sc_hi), (r_lo, r_hi) = intervals[target]
            flags = curve_flags(ft, "finetune", n_ft, q_ft, target)
            flags += curve_flags(sc, "scratch", n_sc, q_sc, target)
            rows.append(
                {
                    "pretrain": pretrain,
                    "size": size,
                    "downstream": downstream,
                    "target_rel_l2": target,
                    "n_finetune": n_ft,
                    "finetune_bound": q_ft,
                    "n_finetune_lo": ft_lo,
                    "n_finetune_hi": ft_hi,
                    "n_scratch": n_sc,
                    "scratch_bound": q_sc,
                    "n_scratch_lo": sc_lo,
                    "n_scratch_hi": sc_hi,
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
    return pd.DataFrame(rows, columns=COLUMNS)
