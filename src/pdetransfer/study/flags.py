"""What qualifies the tables' numbers: how a run stopped, where a cell's learning rate sits, and
which data-efficiency rows may be headlines. Every flag is computed from the runs' own files.

**Runs** (runs.csv), from ``train.json`` and ``log.csv``:

``hit_cap``
    The run stopped because it reached its step horizon (``stop_reason`` ``cap`` under a
    plateau rule, ``budget`` without one). A fact, not a flag: under a schedule that decays to
    the cap, a capped run's best check is nearly always near its end.
``last_window_gain``
    How much its best validation error fell, relative, over its last ``P`` steps (``P`` = the
    plateau patience, else ``max(val_every, 10% of the cap)``, the engine's window):
    ``(best up to step steps - P - best at the end) / best up to step steps - P``. A run with
    no check that early is measured from its first check. Empty for a diverged run.
``undertrained``
    ``hit_cap`` and ``last_window_gain`` above the tolerance ``report.undertrained_tolerance``
    (fixed in the config before the study runs), or unknown (no finite check): the budget, not
    the data, decided its error.

**Cells** (summary.csv): ``lr_at_edge`` is ``min``/``max`` only when the chosen rate, an end of
the grid, beats its neighbour by more than the noise of that difference: the mean log
validation error of the neighbour's seeds minus the edge's exceeds ``t_df * s * sqrt(1/k_edge
+ 1/k_neighbour)``, where ``s^2`` is the between-seed variance of log validation errors pooled
over every rate of every cell of the curve, ``df`` its degrees of freedom and ``t_df`` the
two-sided 95% quantile (:func:`edge_position`). Otherwise the edge is a tie (``tie_min``,
``tie_max``): no evidence of an optimum beyond the grid. A neighbour with no completed seed,
or a curve with one seed everywhere (no noise estimate), leaves the edge decisive.

**Data-efficiency rows**: :data:`EFFICIENCY_FLAGS` lists the flags, per mode, and whether each
blocks a headline.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.errors import UserError
from pdetransfer.study.statistics import COARSE_SPACING, Spread, crossing_spacing, t_quantile

#: Flags of a data-efficiency row (``kind:MODE``) and whether each keeps it from a headline.
EFFICIENCY_FLAGS = {
    "lr_at_edge": True,  # a chosen rate at the grid's edge beats its neighbour decisively
    "unbracketed": True,  # a single rate: nothing is known about the optimum
    "undertrained": True,  # a chosen run stopped at its cap still gaining more than tolerance
    "diverged": True,  # a cell diverged at every rate (the curve skips it)
    "one_seed": True,  # a cell with one seed: its seed-to-seed spread is not observed
    "coarse": True,  # the crossing lies between sweep points more than 2x apart
    "lr_edge_tie": False,  # a chosen rate at the edge, tied with its neighbour
}
#: Stop reasons of a run that reached its step horizon.
CAP_REASONS = ("cap", "budget")


def gain_window(train: Mapping[str, Any]) -> int:
    """Steps ``P`` over which a capped run's gain is measured (see the module docstring)."""
    if train.get("patience"):
        return int(train["patience"])
    cap = int(train.get("max_steps") or train.get("steps") or 0)
    return max(int(train.get("val_every") or 1), math.ceil(0.1 * cap))


def read_checks(path: Path) -> list[tuple[int, float]]:
    """(step, validation error) of every check in a run's ``log.csv``."""
    try:
        with open(path, newline="") as handle:
            return [(int(row["step"]), float(row["val_rel_l2"])) for row in csv.DictReader(handle)]
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: a trained run's log is needed") from None
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} is not a training log (step and val_rel_l2 columns)") from None


def last_window_gain(checks: Sequence[tuple[int, float]], steps: int, window: int) -> float:
    """Relative drop of the best validation error over the last ``window`` of ``steps``."""
    finite = [(s, v) for s, v in checks if math.isfinite(v)]
    if not finite:
        return math.nan
    before = [v for s, v in finite if s <= steps - window] or [finite[0][1]]
    start, end = min(before), min(v for _, v in finite)
    return (start - end) / start if start > 0 else math.nan


def stop_flags(train: Mapping[str, Any], log: Path, tolerance: float) -> dict[str, Any]:
    """``hit_cap``, ``last_window_gain`` and ``undertrained`` of a trained run."""
    if train.get("status") == "diverged":
        return {"hit_cap": False, "last_window_gain": math.nan, "undertrained": False}
    hit_cap = train.get("stop_reason") in CAP_REASONS
    steps = int(train.get("steps") or 0)
    gain = last_window_gain(read_checks(log), steps, gain_window(train))
    undertrained = hit_cap and not gain <= tolerance  # an unknown gain is not a finished run
    return {"hit_cap": hit_cap, "last_window_gain": gain, "undertrained": undertrained}


def edge_position(
    grid: Sequence[float], best: float, val: Mapping[float, Sequence[float]], spread: Spread
) -> str:
    """``lr_at_edge`` of a cell: its rate grid (diverged rates included), the chosen rate, the
    validation errors of each rate's completed seeds, and the curve's pooled spread."""
    if len(grid) < 2:
        return "unbracketed"
    grid = sorted(grid)
    if best not in (grid[0], grid[-1]):
        return "no"
    side, neighbour = ("min", grid[1]) if best == grid[0] else ("max", grid[-2])
    edge = np.log([v for v in val.get(best, []) if v > 0])
    other = np.log([v for v in val.get(neighbour, []) if v > 0])
    if len(other) == 0 or len(edge) == 0 or spread.df == 0:
        return side
    noise = t_quantile(spread.df) * math.sqrt(spread.variance * (1 / len(edge) + 1 / len(other)))
    return side if other.mean() - edge.mean() > noise else f"tie_{side}"


def curve_flags(curve: pd.DataFrame, mode: str, n: float, bound: str, target: float) -> list[str]:
    """Flags of the cells an N was read from (see :data:`EFFICIENCY_FLAGS`)."""
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
    if read.get("n_seeds", pd.Series(dtype=float)).eq(1).any():
        flags.append(f"one_seed:{mode}")
    usable = curve[curve["test_rel_l2_mean"].gt(0)].sort_values("n")
    spacing = crossing_spacing(usable["n"], usable["test_rel_l2_mean"], target)
    if bound == "=" and spacing > COARSE_SPACING:
        flags.append(f"coarse:{mode}")
    if edge.isin(["tie_min", "tie_max"]).any():
        flags.append(f"lr_edge_tie:{mode}")
    return flags


def not_headline_because(
    flags: Sequence[str], ratio_bound: str, interval: tuple[float, float]
) -> list[str]:
    """Why a data-efficiency row is not a headline (empty: it is one): its blocking flags, a
    ratio that is a bound or unknown, or one without an interval."""
    why = [flag for flag in flags if EFFICIENCY_FLAGS[flag.split(":")[0]]]
    if ratio_bound != "=":
        why.append(f"ratio is a bound ({ratio_bound})" if ratio_bound else "ratio unknown")
    elif any(np.isnan(interval)):
        why.append("ratio has no interval")
    elif interval[0] <= 0 or math.isinf(interval[1]):
        why.append("ratio interval reaches beyond the sweep")
    return why
