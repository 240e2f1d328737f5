"""Uncertainty of the study's numbers: a between-seed spread pooled over a curve, with a t
quantile, combined with a seeded bootstrap over test samples.

A point of an error-versus-N (or versus size) curve is the mean, over the seeds of the chosen
learning rate, of each run's mean relative L2 error over the test samples. Two sources of
chance move it, and each enters every interval by its own mechanism:

- **seeds** (initialisation, N-subset, batch order). A study has 2-5 of them per point, too few
  to resample: a percentile bootstrap over 2 seeds returns about their range, one standard
  error of their mean, and covers the truth far less often than it claims
  (``benchmarks/coverage.py`` measures it). Instead the between-seed variance of the runs'
  log errors (seed effects are multiplicative, the errors span decades) is **pooled over the
  points of a curve** (one mode, pre-training, size and downstream set across N), with
  ``sum(seeds - 1)`` degrees of freedom (:func:`pooled_spread`). Each replicate draws that
  variance from its sampling distribution (``s^2 * df / chi^2_df``) and shifts the log error of
  a point of ``k`` seeds by a normal draw of that variance over ``k``: the shift's marginal is
  ``t_df * s / sqrt(k)``, so a single point gets exactly a t interval and everything read from
  several points (an N-to-target, a ratio, an exponent) inherits the t's width. A point with
  one seed borrows its curve's variance; a curve with one seed everywhere has none
  (``seed_df = 0``), its interval is from test samples alone, and the tables flag it
  ``one_seed``.
- **test samples**: one resampled index set (with replacement) per replicate, *shared* by every
  run of the curves compared together. Every run of a downstream dataset is evaluated on the
  same test set, so a hard sample is hard for fine-tuning and scratch alike; resampling it
  jointly keeps that pairing, and a ratio N_scratch / N_finetune is not charged twice for it.

How the seed shifts of one curve's points relate is not known: for one seed the N-subsets are
nested (``subset_indices``), so they are likely positively correlated. Each quantity takes the
end of that range that widens it: the N at which a curve reaches a target (read between two
points) gets **one shift per curve** (perfect correlation gives an interpolated log error the
full variance, independence at most half of it), a fitted exponent **one shift per point**
(a shift shared by all points moves no slope). Fine-tuning and scratch curves are shifted
independently (their shared N-subsets would only narrow a ratio). The pooled degrees of
freedom assume the points' spreads are estimated independently; with 2 seeds and several
points the t quantile is then near 2.5-3 instead of 12.7.

Whatever is computed from the curves is recomputed on every replicate, and the interval is
the 2.5th to 97.5th percentile of the replicates (95%). ``interval_method`` names what
entered (:data:`SEEDS_AND_SAMPLES` and the others); a run without per-sample errors (written
before ``metrics.json`` recorded them) keeps its mean fixed. The replicates use a fixed seed,
recorded in every table that carries an interval, so the tables are reproducible to the digit.

The N at which a curve reaches a target is interpolated linearly in log N - log error between
sweep points. For a pure power law this is exact; a curve that bends between two points makes
the interpolated N off by an amount the data cannot show. That error is not a sampling error
and is not folded into the interval: the tables give next to it the bounds the sweep points
alone give (:func:`sweep_bounds`, assuming a monotone curve) and flag a crossing read between
points more than :data:`COARSE_SPACING` apart (``coarse``).

**Medians** (``statistic = "median"``) take the same two mechanisms, so a median's interval
respects seed-to-seed variation exactly as a mean's does. A cell's median error is the mean over
its seeds of each run's median over the test samples (what ``metrics.json`` records as
``rel_l2_median``): the typical sample's error of a typical run, which a few extreme samples
cannot move. Per replicate, every run's median is recomputed on the shared resampled test set
(the sample bootstrap of a median is consistent for continuous errors, and sharing the draw keeps
the pairing), and the log of the seed-mean is shifted by the between-seed variance of the runs'
log medians, pooled over the curve with its t quantile. Pooling the medians' own spread, not the
means', matters: a seed that shifts a few extreme samples moves the mean and not the median.
A pooled-seed t on a point estimate that is not a mean is an approximation; the coverage test
(``tests/test_coverage.py``) checks that it holds its level at 2, 3 and 5 seeds.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Two-sided coverage of every interval.
LEVEL = 0.95
#: Sweep points further apart than this factor make an interpolated N a rough one.
COARSE_SPACING = 2.0
#: ``interval_method`` values: what entered an interval.
SEEDS_AND_SAMPLES = "pooled_seed_t+sample_bootstrap"
SEEDS_ONLY = "pooled_seed_t"
SAMPLES_ONLY = "sample_bootstrap"
NO_INTERVAL = "none"
#: What a point of a curve is over its test samples: the run's mean or its median error.
MEAN, MEDIAN = "mean", "median"


@dataclass(frozen=True)
class RunErrors:
    """A run's test error: its mean, per test sample (test-set order) where recorded, and its
    median over the test samples (NaN where unknown)."""

    mean: float
    per_sample: np.ndarray | None = None
    median: float = math.nan

    def value(self, statistic: str) -> float:
        """The run's ``statistic`` (:data:`MEAN` or :data:`MEDIAN`) over its test samples."""
        if statistic == MEAN:
            return self.mean
        if math.isnan(self.median) and self.per_sample is not None:
            return float(np.median(self.per_sample))
        return self.median


#: A curve: per point (N or model size), the completed runs of the chosen learning rate.
Curve = Sequence[Sequence[RunErrors]]


@dataclass(frozen=True)
class Spread:
    """A between-seed variance of log errors pooled over groups, and its degrees of freedom."""

    variance: float
    df: int


def pooled_spread(groups: Iterable[Sequence[float]], log: bool = True) -> Spread:
    """Variance of the log of positive values around their group's mean, pooled over groups
    (each group: the seeds of one point, or of one learning rate); groups of one add nothing.
    ``log=False``: of the finite values themselves (a share, which may be 0)."""
    squares, df = 0.0, 0
    for group in groups:
        if log:
            logs = np.log([v for v in group if np.isfinite(v) and v > 0])
        else:
            logs = np.asarray([v for v in group if np.isfinite(v)], dtype=float)
        if len(logs) >= 2:
            squares += float(np.square(logs - logs.mean()).sum())
            df += len(logs) - 1
    return Spread(squares / df if df else math.nan, df)


def _t_coverage(t: float, df: int) -> float:
    """P(|T| < t) of Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term, total = math.cos(theta), math.cos(theta) if df > 1 else 0.0
        for j in range(3, df - 1, 2):
            term *= c2 * (j - 1) / j
            total += term
        return 2 / math.pi * (theta + s * total)
    term = total = 1.0
    for j in range(2, df - 1, 2):
        term *= c2 * (j - 1) / j
        total += term
    return s * total


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom."""
    lo, hi = 0.0, 1.0
    while _t_coverage(hi, df) < level:
        lo, hi = hi, 2 * hi
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_coverage(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def n_to_reach(ns: Sequence[float], errors: Sequence[float], target: float) -> tuple[float, str]:
    """Smallest N at which a curve reaches ``target``: (N, qualifier).

    Qualifier ``"="``: interpolated (linear in log N - log error between the two sweep points
    around the first crossing); ``"<="``: already reached at the smallest N; ``">"``: never
    reached, N is the largest evaluated. Points are sorted by N; NaN errors are skipped.
    """
    points = _points(ns, errors)
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


def _points(ns: Sequence[float], errors: Sequence[float]) -> list[tuple[float, float]]:
    return sorted((n, e) for n, e in zip(ns, errors, strict=True) if np.isfinite(e) and e > 0)


def crossing_spacing(ns: Sequence[float], errors: Sequence[float], target: float) -> float:
    """Ratio of the two sweep points an interpolated N lies between (1 when not interpolated)."""
    lo, hi = sweep_bounds(ns, errors, target)
    return hi / lo if lo > 0 and math.isfinite(hi) else 1.0


def sweep_bounds(
    ns: Sequence[float], errors: Sequence[float], target: float
) -> tuple[float, float]:
    """What the sweep points alone say of the N at which a curve reaches ``target``, if the
    curve falls monotonically between them: ``(lo, hi]``, the last point above the target and
    the first at or below it; 0 when reached at the smallest N, infinity when never reached."""
    points = _points(ns, errors)
    if not points:
        return math.nan, math.nan
    for i, (n, e) in enumerate(points):
        if e <= target:
            return (float(points[i - 1][0]) if i else 0.0), float(n)
    return float(points[-1][0]), math.inf


def n_to_reach_replicates(ns: Sequence[float], curves: np.ndarray, target: float) -> np.ndarray:
    """:func:`n_to_reach` of every row of ``curves`` (replicates x points, sorted by N).

    Bounds become numbers the percentiles can order: 0 for "already reached at the smallest
    N" (somewhere below the sweep) and infinity for "never reached" (beyond it).
    """
    log_n = np.log(np.asarray(ns, dtype=float))
    with np.errstate(over="ignore", invalid="ignore"):
        log_e = np.log(np.clip(curves, 1e-300, None))
    reached = curves <= target
    first = reached.argmax(axis=1)
    rows = np.arange(len(curves))
    out = np.full(len(curves), math.inf)
    out[reached[:, 0]] = 0.0
    inside = reached.any(axis=1) & (first > 0)
    i, r = first[inside], rows[inside]
    e0, e1 = log_e[r, i - 1], log_e[r, i]
    with np.errstate(divide="ignore", invalid="ignore"):
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


def resampled_medians(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row of ``counts`` (replicates x samples: how often each sample is drawn, summing to
    the number of samples), the median of the drawn values, as :func:`numpy.median` of the
    resample would give it (the mean of the two middle values of an even count)."""
    order = np.argsort(values, kind="stable")
    ordered = np.asarray(values, dtype=float)[order]
    cumulative = np.cumsum(counts[:, order], axis=1)
    total = int(cumulative[0, -1])
    low = (cumulative <= (total - 1) // 2).sum(axis=1)
    high = (cumulative <= total // 2).sum(axis=1)
    return (ordered[low] + ordered[high]) / 2


def _sample_length(curves: Sequence[Curve]) -> int | None:
    """The common test-set length of every run's per-sample errors (None: some run lacks them,
    or they come from different test sets)."""
    runs = [run for curve in curves for point in curve for run in point]
    lengths = {None if r.per_sample is None else len(r.per_sample) for r in runs}
    return lengths.pop() if runs and len(lengths) == 1 else None


@dataclass(frozen=True)
class Replicates:
    """Bootstrap replicates of curves (each replicates x points), what entered them
    (``method``) and the fewest seed degrees of freedom of the curves (0: some curve had one
    seed per point, so seed-to-seed variation is not in its interval)."""

    curves: list[np.ndarray]
    method: str
    seed_df: int


class Bootstrap:
    """Seeded replicates of error curves (see the module docstring).

    The test-sample draws are made once per test-set length and reused by every call on one
    instance: replicate ``b`` resamples the same test samples for every curve drawn from it,
    so compared curves stay paired, and a study with thousands of test samples and cells
    draws them once instead of per cell. Tables that report one comparison in several places
    draw it from :meth:`stream` (its curves paired with each other, not with the rest).
    """

    def __init__(self, replicates: int, seed: int) -> None:
        self.replicates = replicates
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._counts: dict[int, np.ndarray] = {}

    def stream(self, *key: object) -> Bootstrap:
        """A bootstrap of its own for one comparison, seeded by this seed and ``key``: every
        table that reports the same comparison draws the same replicates, whatever it drew
        before, so two tables never print two intervals for one ratio."""
        child = Bootstrap(self.replicates, self.seed)
        child.rng = np.random.default_rng([self.seed, zlib.crc32(repr(key).encode())])
        return child

    def sample_counts(self, length: int) -> np.ndarray:
        """Per replicate, how often each of ``length`` test samples is drawn (replicates x
        length), drawn once per length and shared by every call."""
        if length not in self._counts:
            draws = self.rng.integers(0, length, size=(self.replicates, length))
            offsets = np.arange(self.replicates)[:, None] * length
            counts = np.bincount((draws + offsets).ravel(), minlength=self.replicates * length)
            self._counts[length] = counts.reshape(self.replicates, length)
        return self._counts[length]

    def sample_weights(self, length: int) -> np.ndarray:
        """:meth:`sample_counts` over ``length``: a run's replicate means are one matrix
        product with it."""
        return self.sample_counts(length) / length

    def seed_shifts(self, spread: Spread, seeds: np.ndarray, per_point: bool) -> np.ndarray:
        """Log-error shifts (replicates x points) of a curve whose points have ``seeds`` runs:
        a variance drawn from the pooled one's sampling distribution, then normal shifts of
        that variance over the seeds, one per curve or one per point."""
        df, b = spread.df, self.replicates
        if df == 0:
            return np.zeros((b, len(seeds)))
        variance = spread.variance * df / self.rng.chisquare(df, size=(b, 1))
        z = self.rng.standard_normal((b, len(seeds) if per_point else 1))
        return z * np.sqrt(variance / seeds)

    def curves(
        self, curves: Sequence[Curve], per_point: bool = False, statistic: str = MEAN
    ) -> Replicates:
        """Replicates of every curve: test samples resampled jointly, each curve's seed
        variation drawn from its own pooled spread, shifted per curve or (``per_point``) per
        point (see the module docstring for which quantity takes which). ``statistic``: each
        run's :data:`MEAN` or :data:`MEDIAN` over its test samples, averaged over seeds."""
        length = _sample_length(curves)
        counts = None if length is None else self.sample_counts(length)
        weights = None if length is None else self.sample_weights(length)
        out, dfs = [], []
        for curve in curves:
            if not curve:
                out.append(np.empty((self.replicates, 0)))
                continue
            columns = []
            for point in curve:
                if counts is None:
                    fixed = np.mean([r.value(statistic) for r in point])
                    columns.append(np.full(self.replicates, fixed))
                elif statistic == MEAN:
                    stacked = np.stack([run.per_sample for run in point], axis=1)
                    columns.append((weights @ stacked).mean(axis=1))
                else:
                    medians = [resampled_medians(counts, run.per_sample) for run in point]
                    columns.append(np.mean(medians, axis=0))
            spread = pooled_spread([[r.value(statistic) for r in point] for point in curve])
            seeds = np.array([len(point) for point in curve], dtype=float)
            with np.errstate(over="ignore"):
                shift = np.exp(self.seed_shifts(spread, seeds, per_point))
            out.append(np.stack(columns, axis=1) * shift)
            dfs.append(spread.df)
        seed_df = min(dfs, default=0)
        seeds_in = any(dfs)
        if counts is not None:
            method = SEEDS_AND_SAMPLES if seeds_in else SAMPLES_ONLY
        else:
            method = SEEDS_ONLY if seeds_in else NO_INTERVAL
        return Replicates(out, method, seed_df)
