"""Scaling fits: test error against N (and against model size) as a saturating power law.

``tables/scaling_fits.csv`` summarises each curve of the study by ``err = a * x^(-b) + c``
(``x`` = N, or the parameter count at fixed N), the form of the scaling literature: ``b`` is
the exponent a reader compares across modes, sizes and shifts, ``c >= 0`` the floor the curve
saturates at (model capacity, label noise, the solver's own error).

**Method.** For a fixed floor ``c`` the law is a straight line in ``log x - log(err - c)``, so
the fit profiles ``c``: over a grid of floors from 0 up to just below the smallest error
(dense near both ends, then refined around the best), a linear least-squares fit in log-log
space gives ``a`` and ``b``, and the floor kept is the one whose full model has the smallest
squared residual in ``log err``. Residuals are taken in log space because the errors span
decades and every point should count alike (a linear-space fit would follow only the smallest
N). The profile is deterministic, needs no starting point (a nonlinear solver's usual failure
on this law) and no dependency beyond numpy. ``rms_log_residual`` is the root-mean-square of
those residuals (natural log: 0.1 ~ 10% off).

**How many points.** The law has three parameters: with four or more points it is fitted as
is; with exactly three, ``c = 0`` (a pure power law, two parameters) so that a residual still
means something (``form`` says which); with fewer the row says why and carries no number. The
exponent's interval is the 95% percentile interval of the exponents refitted on bootstrap
replicates of the curve (:mod:`pdetransfer.study.statistics`), whose seed shifts are drawn per
point (a shift shared by every point would move no slope); ``interval_method`` and
``seed_df`` say what entered it. ``flags`` lists ``lr_at_edge``, ``unbracketed``,
``undertrained`` and ``one_seed`` when any point of the curve has them, and ``lr_edge_tie``
(which blocks nothing) (see :mod:`pdetransfer.study.flags`): the fit inherits its points'
doubts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.study.collection import Cell
from pdetransfer.study.config import Study
from pdetransfer.study.statistics import NO_INTERVAL, Bootstrap, RunErrors, percentile_interval

SATURATING = "a*x^-b+c"
POWER = "a*x^-b"
#: Fewest points per form (one more than its parameters, so that a residual exists).
MIN_POINTS = {SATURATING: 4, POWER: 3}
_COARSE = np.unique(np.concatenate([np.linspace(0, 0.99, 100), 1 - np.geomspace(1e-2, 1e-5, 40)]))

COLUMNS = [
    "experiment",
    "downstream",
    "mode",
    "pretrain",
    "size",
    "against",
    "n",
    "n_points",
    "form",
    "a",
    "b",
    "b_lo",
    "b_hi",
    "c",
    "rms_log_residual",
    "interval_method",
    "seed_df",
    "bootstrap_replicates",
    "bootstrap_seed",
    "flags",
    "note",
]


def _line_fits(log_x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (intercept, slope) of ``z`` (..., points) against ``log_x`` (points)."""
    xm = log_x.mean()
    dx = log_x - xm
    slope = (z * dx).sum(axis=-1) / (dx * dx).sum()
    return z.mean(axis=-1) - slope * xm, slope


def _profile(log_x: np.ndarray, y: np.ndarray, floors: np.ndarray) -> tuple[np.ndarray, ...]:
    """a, b, c and squared log residual per curve (rows of ``y``) and floor.

    ``floors`` are fractions of each curve's smallest error: one grid for every curve
    (floors,) or one per curve (curves x floors).
    """
    c = floors * y.min(axis=1, keepdims=True)
    intercept, slope = _line_fits(log_x, np.log(y[:, None, :] - c[:, :, None]))
    a, b = np.exp(intercept), -slope
    model = a[..., None] * np.exp(-b[..., None] * log_x) + c[..., None]
    sse = np.square(np.log(y)[:, None, :] - np.log(model)).sum(axis=-1)
    return a, b, c, sse


def fit_curves(x: Sequence[float], y: np.ndarray, form: str = SATURATING) -> dict[str, np.ndarray]:
    """Fit ``form`` to every row of ``y`` (curves x points, all positive) at abscissae ``x``.

    Returns arrays (one value per curve) ``a``, ``b``, ``c`` and ``rms_log_residual``.
    """
    log_x = np.log(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    rows = np.arange(len(y))
    if form == POWER:
        a, b, c, sse = _profile(log_x, y, np.zeros(1))
        best = np.zeros(len(y), dtype=int)
    else:
        a, b, c, sse = _profile(log_x, y, _COARSE)
        best = sse.argmin(axis=1)
        # Refine between the best coarse floor's neighbours.
        lo = _COARSE[np.maximum(best - 1, 0)]
        hi = _COARSE[np.minimum(best + 1, len(_COARSE) - 1)]
        fine = lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, 41)[None, :]
        a, b, c, sse = _profile(log_x, y, fine)
        best = sse.argmin(axis=1)
    pick = (rows, best)
    return {
        "a": a[pick],
        "b": b[pick],
        "c": c[pick],
        "rms_log_residual": np.sqrt(sse[pick] / len(log_x)),
    }


def fit_row(
    x: Sequence[float],
    errors: Sequence[float],
    runs: Sequence[Sequence[RunErrors]],
    bootstrap: Bootstrap,
) -> dict[str, Any]:
    """The fit columns of one curve (points with a finite positive error, sorted by ``x``)."""
    n_points = len(x)
    row: dict[str, Any] = {"n_points": n_points, "interval_method": NO_INTERVAL, "note": ""}
    row["seed_df"] = 0
    if n_points < MIN_POINTS[POWER]:
        row["note"] = (
            f"too few points ({n_points}): a power law needs {MIN_POINTS[POWER]} "
            f"(the saturating law {MIN_POINTS[SATURATING]})"
        )
        return row
    form = SATURATING if n_points >= MIN_POINTS[SATURATING] else POWER
    fit = fit_curves(x, np.asarray(errors, dtype=float)[None, :], form)
    row.update(form=form, **{k: float(v[0]) for k, v in fit.items()})
    reps = bootstrap.curves([runs], per_point=True)
    row.update(interval_method=reps.method, seed_df=reps.seed_df)
    if reps.method != NO_INTERVAL:
        with np.errstate(all="ignore"):
            b = fit_curves(x, reps.curves[0], form)["b"]
        row["b_lo"], row["b_hi"] = percentile_interval(b)
    if form == POWER:
        row["note"] = (
            f"3 points: floor c fixed at 0 (the saturating law needs {MIN_POINTS[SATURATING]})"
        )
    return row


def _curve(summary: pd.DataFrame, x: str) -> pd.DataFrame:
    """Usable points of a curve: not all-diverged, finite positive error, sorted by ``x``."""
    ok = summary["test_rel_l2_mean"].gt(0) & np.isfinite(summary[x].astype(float))
    return summary[ok].sort_values(x)


def _flags(curve: pd.DataFrame) -> str:
    """Diagnostics of any point of a curve (the fit inherits them)."""
    flags = []
    if "lr_at_edge" in curve and curve["lr_at_edge"].isin(["min", "max"]).any():
        flags.append("lr_at_edge")
    if "lr_at_edge" in curve and curve["lr_at_edge"].eq("unbracketed").any():
        flags.append("unbracketed")
    if "undertrained" in curve and curve["undertrained"].fillna(False).astype(bool).any():
        flags.append("undertrained")
    if "n_seeds" in curve and curve["n_seeds"].eq(1).any():
        flags.append("one_seed")
    if "lr_at_edge" in curve and curve["lr_at_edge"].isin(["tie_min", "tie_max"]).any():
        flags.append("lr_edge_tie")
    return ";".join(flags)


def scaling_fits(
    study: Study,
    summary: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    bootstrap: Bootstrap,
) -> pd.DataFrame:
    """scaling_fits.csv: per experiment, downstream, mode and size a fit against N; per
    experiment with three or more sizes, downstream, mode and N a fit against model size."""
    rows: list[dict[str, Any]] = []
    modes = [mode for mode in study.study_modes() if mode.trains]

    def add(ident: dict[str, Any], curve: pd.DataFrame, x: str) -> None:
        runs = [chosen.get(_cell_key(r), []) for r in curve.itertuples()]
        fit = fit_row(curve[x].astype(float).tolist(), curve["test_rel_l2_mean"], runs, bootstrap)
        rows.append(
            {
                **ident,
                **fit,
                "bootstrap_replicates": bootstrap.replicates,
                "bootstrap_seed": bootstrap.seed,
                "flags": _flags(curve),
            }
        )

    for name, exp in study.experiments.items():
        sizes = study.experiment_sizes(name)
        for downstream in exp["downstream"]:
            for mode in modes:
                pretrain = exp["pretrain"] if mode.needs_pretrained else ""
                cells = summary[
                    (summary["mode"] == mode.name)
                    & (summary["pretrain"] == pretrain)
                    & (summary["downstream"] == downstream)
                ]
                ident = {"experiment": name, "downstream": downstream, "mode": mode.name}
                ident["pretrain"] = pretrain
                for size in sizes:
                    curve = _curve(cells[cells["size"] == size], "n")
                    add({**ident, "size": size, "against": "n", "n": math.nan}, curve, "n")
                if len(sizes) < 3:
                    continue
                for n in study.n_values:
                    at_n = cells[(cells["n"] == n) & cells["size"].isin(sizes)]
                    curve = _curve(at_n, "parameters")
                    add({**ident, "size": "", "against": "parameters", "n": n}, curve, "parameters")
    return pd.DataFrame(rows, columns=COLUMNS)


def _cell_key(row: Any) -> Cell:
    return (row.mode, row.pretrain, row.size, row.downstream, int(row.n))
