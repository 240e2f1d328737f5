"""mixed_comparison.csv: a mixed-physics pre-training against the single-system one.

Mixed physics asks whether one model pre-trained on several systems starts each of them as well
as a model pre-trained on that system alone. Two curves whose intervals overlap do not answer
it (their ratio can still be decisive); the ratio does. Per mixed experiment, model size,
downstream dataset, single-system pre-training fine-tuned on the same dataset
(:meth:`~pdetransfer.study.config.Study.compare_pretrain`), mode that starts from a pre-trained
checkpoint, and N: the mixture's mean error over the single-system one's, with the 95%
interval of the mode tables (:mod:`pdetransfer.study.modes_table`: test samples resampled in
pairs, each curve's between-seed spread pooled over N, a t quantile), and the same for
medians. Above 1 the mixture costs accuracy, below 1 it helps; an interval containing 1 is no
evidence either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.modes import MODES, Mode
from pdetransfer.study.collection import Cell
from pdetransfer.study.config import Study
from pdetransfer.study.statistics import (
    MEAN,
    MEDIAN,
    NO_INTERVAL,
    Bootstrap,
    RunErrors,
    percentile_interval,
)

MIXED_COLUMNS = [
    "experiment",
    "pretrain",
    "single_pretrain",
    "size",
    "downstream",
    "mode",
    "n",
    "test_rel_l2_mean",
    "single_rel_l2_mean",
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "test_rel_l2_median",
    "single_rel_l2_median",
    "ratio_median",
    "ratio_median_lo",
    "ratio_median_hi",
    "interval_method",
    "seed_df",
    "bootstrap_replicates",
    "bootstrap_seed",
]


def mixed_comparison(
    study: Study,
    summary: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
) -> pd.DataFrame:
    """mixed_comparison.csv (see the module docstring): one row per N where both sources
    have a usable cell of the mode."""
    ok = summary[(summary["status"] == "ok") & summary["test_rel_l2_mean"].gt(0)]
    rows: list[dict[str, Any]] = []
    for experiment in study.mixed_experiments():
        mixture = study.experiments[experiment]["pretrain"]
        for size in study.experiment_sizes(experiment):
            for downstream in study.experiments[experiment]["downstream"]:
                for single in study.compare_pretrain(experiment, downstream):
                    for mode in (m for m in MODES.values() if m.needs_pretrained):
                        joined = _joined(ok, mode, mixture, single, size, downstream)
                        if joined.empty:
                            continue
                        key = (experiment, size, downstream, single, mode.name)
                        rows += _rows(key, mode, joined, chosen, bootstrap)
    return pd.DataFrame(rows, columns=MIXED_COLUMNS)


def _joined(
    ok: pd.DataFrame, mode: Mode, mixture: str, single: str, size: str, downstream: str
) -> pd.DataFrame:
    """The mode's cells from both sources, joined on N (``_single`` columns), N ascending."""
    at = ok[(ok["mode"] == mode.name) & (ok["size"] == size) & (ok["downstream"] == downstream)]
    ours, theirs = at[at["pretrain"] == mixture], at[at["pretrain"] == single]
    return ours.merge(theirs, on="n", suffixes=("", "_single")).sort_values("n")


def _rows(
    key: tuple[str, str, str, str, str],
    mode: Mode,
    joined: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap | None,
) -> list[dict[str, Any]]:
    """The table's rows for one comparison: point ratios from the summary, intervals from
    the chosen runs' replicates (NaN where a cell lacks runs or intervals)."""
    experiment, _, _, single, _ = key
    ours = [list(chosen.get(_cell(r, r.pretrain), [])) for r in joined.itertuples()]
    theirs = [list(chosen.get(_cell(r, single), [])) for r in joined.itertuples()]
    nan = pd.Series(math.nan, index=joined.index)
    medians = (
        joined.get("test_rel_l2_median", nan).to_numpy(dtype=float),
        joined.get("test_rel_l2_median_single", nan).to_numpy(dtype=float),
    )
    means = joined["test_rel_l2_mean"].to_numpy(), joined["test_rel_l2_mean_single"].to_numpy()
    mean_lo, mean_hi, method, seed_df = _interval(ours, theirs, bootstrap, (*key, MEAN))
    median_lo, median_hi, _, _ = _interval(ours, theirs, bootstrap, (*key, MEDIAN))
    known = method != NO_INTERVAL
    rows = []
    for j, r in enumerate(joined.itertuples()):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio, ratio_median = means[0][j] / means[1][j], medians[0][j] / medians[1][j]
        rows.append(
            {
                "experiment": experiment,
                "pretrain": r.pretrain,
                "single_pretrain": single,
                "size": r.size,
                "downstream": r.downstream,
                "mode": mode.name,
                "n": int(r.n),
                "test_rel_l2_mean": means[0][j],
                "single_rel_l2_mean": means[1][j],
                "ratio": ratio,
                "ratio_lo": mean_lo[j],
                "ratio_hi": mean_hi[j],
                "test_rel_l2_median": medians[0][j],
                "single_rel_l2_median": medians[1][j],
                "ratio_median": ratio_median,
                "ratio_median_lo": median_lo[j],
                "ratio_median_hi": median_hi[j],
                "interval_method": method,
                "seed_df": seed_df,
                "bootstrap_replicates": bootstrap.replicates if known and bootstrap else math.nan,
                "bootstrap_seed": bootstrap.seed if known and bootstrap else math.nan,
            }
        )
    return rows


def _cell(r: Any, pretrain: str) -> Cell:
    return (r.mode, pretrain, r.size, r.downstream, int(r.n))


def _interval(
    ours: list[list[RunErrors]],
    theirs: list[list[RunErrors]],
    bootstrap: Bootstrap | None,
    key: tuple[str, ...],
) -> tuple[list[float], list[float], str, int]:
    """Per N, the 95% interval of the ratio of the two curves' statistic (``key``'s last
    item), its method and the seed degrees of freedom; NaN and :data:`NO_INTERVAL` where it
    cannot be drawn. Each comparison and statistic draws from a stream of its own
    (:meth:`~pdetransfer.study.statistics.Bootstrap.stream`)."""
    none = [math.nan] * len(ours)
    if bootstrap is None or not all(ours) or not all(theirs):
        return none, none, NO_INTERVAL, 0
    reps = bootstrap.stream(*key).curves([ours, theirs], statistic=key[-1])
    if reps.method == NO_INTERVAL:
        return none, none, NO_INTERVAL, 0
    a, b = reps.curves
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = [percentile_interval(column) for column in (a / b).T]
    lo, hi = (list(side) for side in zip(*bounds, strict=True))
    return lo, hi, reps.method, reps.seed_df
