"""Uncertainty of the study's numbers: a seeded bootstrap over seeds and test samples.

A point of an error-versus-N (or versus size) curve is the mean, over the seeds of the chosen
learning rate, of each run's mean relative L2 error over the test samples. Two sources of
chance move it: which seeds were drawn (initialisation, N-subset, batch order) and which test
samples were drawn. One bootstrap replicate redraws both:

- **test samples**: one resampled index set (with replacement) per replicate, *shared* by every
  run of the curves compared together. Every run of a downstream dataset is evaluated on the
  same test set, so a hard sample is hard for fine-tuning and scratch alike; resampling it
  jointly keeps that pairing, and a ratio N_scratch / N_finetune is not charged twice for it.
- **seeds**: per point, the seeds of the chosen learning rate drawn with replacement, each
  run's error recomputed on the replicate's samples, then averaged.

Whatever is computed from the curves (the N at which a target is reached, a ratio, a fitted
exponent) is recomputed on every replicate, and the interval is the 2.5th to 97.5th
percentile of the replicates (percentile bootstrap, 95%). With one seed per point only the
test samples vary (``interval_from = "samples"``); a run without per-sample errors (written
before ``metrics.json`` recorded them) keeps its mean fixed, and a curve with neither source
gets no interval (``"none"``). Seeds are few (2-3 in the studies shipped here), so the seed
part of the interval is itself rough: a percentile bootstrap over 2 seeds understates the
spread by a factor of about sqrt(1/2). The replicates use a fixed seed, recorded in every
table that carries an interval, so the tables are reproducible to the digit.

The N at which a curve reaches a target is interpolated linearly in log N - log error between
sweep points. For a pure power law this is exact; a curve that bends (saturates) between two
points makes the interpolated N off by an amount the data cannot show. That error is not a
sampling error and no bootstrap measures it, so it is not folded into the interval: a
noise-free curve keeps its degenerate interval, and the tables instead flag a crossing read
between sweep points more than :data:`COARSE_SPACING` apart (``coarse`` in their ``flags``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Two-sided coverage of every interval.
LEVEL = 0.95
#: Sweep points further apart than this factor make an interpolated N a rough one.
COARSE_SPACING = 2.0


@dataclass(frozen=True)
class RunErrors:
    """A run's test error: its mean, and per test sample (test-set order) where recorded."""

    mean: float
    per_sample: np.ndarray | None = None


#: A curve: per point (N or model size), the completed runs of the chosen learning rate.
Curve = Sequence[Sequence[RunErrors]]


def n_to_reach(ns: Sequence[float], errors: Sequence[float], target: float) -> tuple[float, str]:
    """Smallest N at which a curve reaches ``target``: (N, qualifier).

    Qualifier ``"="``: interpolated (linear in log N - log error between the two sweep points
    around the first crossing); ``"<="``: already reached at the smallest N; ``">"``: never
    reached, N is the largest evaluated. Points are sorted by N; NaN errors are skipped.
    """
    points = sorted((n, e) for n, e in zip(ns, errors, strict=True) if np.isfinite(e) and e > 0)
    if not points:
        return math.nan, ""
    for i, (n, e) in enumerate(points):
        if e <= target:
            if i == 0:
                return float(n), "<="
            n0, e0 = points[i - 1]
            frac = (math.log(target) - math.log(e0)) / (math.log(e) - math.log(e0))
            return float(math.exp(math.log(n0) + frac * (math.log(n) - math.log(n0)))), "="
    return float(points[-1][0]), ">"


def crossing_spacing(ns: Sequence[float], errors: Sequence[float], target: float) -> float:
    """Ratio of the two sweep points an interpolated N lies between (1 when not interpolated)."""
    points = sorted((n, e) for n, e in zip(ns, errors, strict=True) if np.isfinite(e) and e > 0)
    for i, (n, e) in enumerate(points):
        if e <= target:
            return float(n / points[i - 1][0]) if i > 0 else 1.0
    return 1.0


def n_to_reach_replicates(ns: Sequence[float], curves: np.ndarray, target: float) -> np.ndarray:
    """:func:`n_to_reach` of every row of ``curves`` (replicates x points, sorted by N).

    Bounds become numbers the percentiles can order: 0 for "already reached at the smallest
    N" (somewhere below the sweep) and infinity for "never reached" (beyond it).
    """
    log_n = np.log(np.asarray(ns, dtype=float))
    log_e = np.log(np.clip(curves, 1e-300, None))
    reached = curves <= target
    first = reached.argmax(axis=1)
    rows = np.arange(len(curves))
    out = np.full(len(curves), math.inf)
    out[reached[:, 0]] = 0.0
    inside = reached.any(axis=1) & (first > 0)
    i, r = first[inside], rows[inside]
    e0, e1 = log_e[r, i - 1], log_e[r, i]
    frac = (math.log(target) - e0) / (e1 - e0)
    out[inside] = np.exp(log_n[i - 1] + frac * (log_n[i] - log_n[i - 1]))
    return out


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """The central :data:`LEVEL` interval of bootstrap replicates (may contain 0 or inf).

    Replicates that are undefined (NaN: a ratio of two bounds in the same direction) are
    dropped while they are at most the interval's tail share; more would make either end
    depend on how they were ordered, so the interval is then undefined too.
    """
    values = np.asarray(values, dtype=float)
    defined = values[~np.isnan(values)]
    tail = (1 - LEVEL) / 2
    if len(values) == 0 or len(values) - len(defined) > tail * len(values):
        return math.nan, math.nan
    lo, hi = np.quantile(defined, [tail, 1 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def interval_source(curves: Sequence[Curve]) -> str:
    """What a bootstrap of ``curves`` resamples: ``seeds+samples``, ``samples``, ``seeds``, ``none``.

    Seeds count only if every point has at least two runs; samples only if every run recorded
    per-sample errors of one common test set.
    """
    runs = [run for curve in curves for point in curve for run in point]
    lengths = {None if r.per_sample is None else len(r.per_sample) for r in runs}
    samples = bool(runs) and len(lengths) == 1 and None not in lengths
    seeds = bool(runs) and all(len(point) >= 2 for curve in curves for point in curve)
    parts = [name for name, used in (("seeds", seeds), ("samples", samples)) if used]
    return "+".join(parts) or "none"


class Bootstrap:
    """Seeded bootstrap replicates of error curves (see the module docstring).

    The test-sample draws are made once per test-set length and reused by every call on one
    instance: replicate ``b`` resamples the same test samples for every curve of a table, so
    curves compared within a table stay paired, and a study with thousands of test samples
    and cells draws them once instead of per cell.
    """

    def __init__(self, replicates: int, seed: int) -> None:
        self.replicates = replicates
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._weights: dict[int, np.ndarray] = {}

    def sample_weights(self, length: int) -> np.ndarray:
        """Per replicate, how often each of ``length`` test samples is drawn, over ``length``
        (replicates x length): a run's replicate means are one matrix product with it."""
        if length not in self._weights:
            draws = self.rng.integers(0, length, size=(self.replicates, length))
            offsets = np.arange(self.replicates)[:, None] * length
            counts = np.bincount((draws + offsets).ravel(), minlength=self.replicates * length)
            self._weights[length] = counts.reshape(self.replicates, length) / length
        return self._weights[length]

    def curves(self, curves: Sequence[Curve]) -> tuple[list[np.ndarray], str]:
        """Replicates of every curve (each replicates x points) and what was resampled;
        seeds are redrawn per point."""
        source = interval_source(curves)
        weights = None
        if "samples" in source:
            weights = self.sample_weights(len(curves[0][0][0].per_sample))  # type: ignore[arg-type]
        out = []
        for curve in curves:
            columns = []
            for point in curve:
                if weights is None:
                    per_run = np.repeat([[run.mean for run in point]], self.replicates, axis=0)
                else:
                    per_run = weights @ np.stack([run.per_sample for run in point], axis=1)
                if len(point) >= 2:
                    draw = self.rng.integers(0, len(point), size=(self.replicates, len(point)))
                    rows = np.arange(self.replicates)[:, None]
                    columns.append(per_run[rows, draw].mean(axis=1))
                else:
                    columns.append(per_run[:, 0])
            empty = np.empty((self.replicates, 0))
            out.append(np.stack(columns, axis=1) if columns else empty)
        return out, source
