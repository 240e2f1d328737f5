"""Coverage of the tables' 95% intervals at 2, 3 and 5 seeds: the old method against the new.

Fabricated studies of known truth (``tests/study_helpers.py``: err = a * N^-0.5 over N = 8, 32,
128, 512, fine-tuning's a half of scratch's, so N_scratch / N_finetune = 4; each run's errors
times a lognormal seed factor, log-sd 0.15; each test sample's times a difficulty shared by
every run of its dataset, log-sd 0.4). Their intervals are computed by the functions
``pdetransfer aggregate`` calls (:func:`point_intervals` for the cell means of summary.csv,
:func:`data_efficiency` for the ratio at the target both curves reach inside the sweep) twice:

* ``percentile_seeds``: the method before issue 17, a percentile bootstrap that resamples the
  seeds of each point with replacement (and the test samples);
* ``pooled_seed_t``: :mod:`pdetransfer.study.statistics`, the between-seed variance pooled over
  a curve with a t quantile, and the test samples bootstrapped.

The runs stay in memory (one learning rate, every run chosen): tests/test_coverage.py runs the
same studies through ``pdetransfer aggregate`` end to end, files included, with fewer draws.
Per seeds x quantity x method: the share of intervals that contain the truth and the median
and mean interval widths relative to the truth (the mean is inf where some ratio interval
reaches beyond the sweep, an infinite end). Quantities: the cell means (truth a * N^-0.5), the cell
medians (``test_rel_l2_median``: truth a * N^-0.5 times the difficulty's median,
exp(-log-sd^2 / 2)), the data-efficiency ratio, and (new method only: data_efficiency draws it
with :class:`Bootstrap` whatever the mean's method) the ratio read from the medians. Results go to ``benchmarks/results/coverage.csv``.

    PYTHONPATH=src python benchmarks/coverage.py            # 200 draws, minutes
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from study_helpers import (  # noqa: E402  (the fabricated study of the coverage test)
    DIFFICULTY_LOG_SD,
    SEED_LOG_SD,
    TRUE_MEDIAN_FACTOR,
    TRUE_RATIO,
    TRUE_SCALE,
    coverage_config,
    seeded_errors,
)

from pdetransfer import __version__  # noqa: E402
from pdetransfer.study.aggregation import point_intervals  # noqa: E402
from pdetransfer.study.config import Study  # noqa: E402
from pdetransfer.study.efficiency import data_efficiency  # noqa: E402
from pdetransfer.study.statistics import (  # noqa: E402
    MEAN,
    Bootstrap,
    Curve,
    Replicates,
    RunErrors,
    resampled_medians,
)

SEEDS = (2, 3, 5)
OUT = ROOT / "benchmarks" / "results" / "coverage.csv"


class PercentileBootstrap(Bootstrap):
    """The intervals before issue 17: per point, the seeds redrawn with replacement."""

    def curves(
        self, curves: Sequence[Curve], per_point: bool = False, statistic: str = MEAN
    ) -> Replicates:
        length = len(curves[0][0][0].per_sample)
        weights = self.sample_weights(length)
        out = []
        for curve in curves:
            columns = []
            for point in curve:
                if statistic == MEAN:
                    per_run = weights @ np.stack([run.per_sample for run in point], axis=1)
                else:
                    counts = self.sample_counts(length)
                    per_run = np.stack(
                        [resampled_medians(counts, run.per_sample) for run in point], axis=1
                    )
                draw = self.rng.integers(0, len(point), size=(self.replicates, len(point)))
                rows = np.arange(self.replicates)[:, None]
                columns.append(per_run[rows, draw].mean(axis=1))
            out.append(np.stack(columns, axis=1))
        return Replicates(out, "percentile_seeds", 0)


METHODS = {"percentile_seeds": PercentileBootstrap, "pooled_seed_t": Bootstrap}


def tables(study: Study, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """The summary (one cell per mode, task and N, every run of it chosen) and the
    chosen runs' errors of one fabricated study."""
    chosen: dict[tuple, list[RunErrors]] = {}
    for run, (per_sample, _) in seeded_errors(study, rng).items():
        key = (run.mode, run.pretrain or "", run.size, run.downstream, run.n)
        errors = RunErrors(float(per_sample.mean()), per_sample, float(np.median(per_sample)))
        chosen.setdefault(key, []).append(errors)
    rows = [
        dict(zip(("mode", "pretrain", "size", "downstream", "n"), key, strict=True))
        | {"status": "ok", "lr_at_edge": "no", "undertrained": False, "n_seeds": len(runs)}
        | {"test_rel_l2_mean": float(np.mean([r.mean for r in runs]))}
        for key, runs in chosen.items()
    ]
    return pd.DataFrame(rows), chosen


def one_draw(study: Study, rng: np.random.Generator, replicates: int, seed: int) -> dict:
    """Per method and quantity: (hits, relative widths) of one fabricated study."""
    summary, chosen = tables(study, rng)
    targets = study.config["report"]["targets"]
    out = {}
    for name, method in METHODS.items():
        cells = point_intervals(summary, chosen, method(replicates, seed))
        truth = cells["mode"].map(TRUE_SCALE) * cells["n"] ** -0.5
        lo, hi = cells["test_rel_l2_lo"], cells["test_rel_l2_hi"]
        means = ((lo <= truth) & (hi >= truth), (hi - lo) / truth)
        truth = truth * TRUE_MEDIAN_FACTOR
        lo, hi = cells["test_rel_l2_median_lo"], cells["test_rel_l2_median_hi"]
        medians = ((lo <= truth) & (hi >= truth), (hi - lo) / truth)
        eff = data_efficiency(cells, targets, chosen, method(replicates, seed))
        lo, hi = eff["ratio_lo"], eff["ratio_hi"]
        ratio = ((lo <= TRUE_RATIO) & (hi >= TRUE_RATIO), (hi - lo) / TRUE_RATIO)
        lo, hi = eff["ratio_median_lo"], eff["ratio_median_hi"]
        median_ratio = ((lo <= TRUE_RATIO) & (hi >= TRUE_RATIO), (hi - lo) / TRUE_RATIO)
        out[name] = {"cell means": means, "cell medians": medians, "ratio": ratio}
        if name == "pooled_seed_t":  # the median reading is drawn by the tables' own method
            out[name]["median ratio"] = median_ratio
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200, help="fabricated studies per seeds")
    parser.add_argument("--tasks", type=int, default=5, help="transfer tasks per study")
    parser.add_argument("--test", type=int, default=128, help="test samples per task")
    parser.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = []
    for seeds in SEEDS:
        study = Study(coverage_config(seeds, args.tasks, args.test))
        rng = np.random.default_rng(seeds)
        hits: dict[tuple[str, str], list[pd.Series]] = {}
        widths: dict[tuple[str, str], list[pd.Series]] = {}
        for draw in range(args.draws):
            for method, quantities in one_draw(study, rng, args.replicates, draw).items():
                for quantity, (hit, width) in quantities.items():
                    hits.setdefault((method, quantity), []).append(hit)
                    widths.setdefault((method, quantity), []).append(width)
            if (draw + 1) % 20 == 0:
                print(f"{seeds} seeds: {draw + 1} of {args.draws} draws", flush=True)
        for (method, quantity), parts in hits.items():
            hit, width = pd.concat(parts), pd.concat(widths[(method, quantity)])
            rows.append(
                {
                    "seeds": seeds,
                    "quantity": quantity,
                    "method": method,
                    "intervals": len(hit),
                    "coverage": hit.mean(),
                    "median_relative_width": width.median(),
                    "mean_relative_width": width.mean(),
                }
            )
            print(
                f"{seeds} seeds, {quantity}, {method}: {hit.mean():.1%} of {len(hit)}", flush=True
            )
    table = pd.DataFrame(rows).assign(
        draws=args.draws,
        tasks_per_draw=args.tasks,
        test_samples=args.test,
        replicates=args.replicates,
        seed_log_sd=SEED_LOG_SD,
        difficulty_log_sd=DIFFICULTY_LOG_SD,
        pdetransfer_version=__version__,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4g")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
