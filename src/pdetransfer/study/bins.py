"""error_bins.csv: each cell's test error per bin of its downstream dataset's physical parameter.

A mean over test samples can be carried by a few extreme ones (Helmholtz's near-resonant
wavenumbers), and so can a conclusion drawn from it. Binning the test samples by the parameter
their dataset varies shows where the error is: the ``param`` of the test file, named by its
``param_name`` (Poisson's diffusion eigenvalue ``e``, advection-diffusion's ratio ``psi``,
Helmholtz's wavenumber ``omega``).

For every cell at its chosen learning rate (zero-shot cells included), the test samples fall
into ``report.bins`` equal-width bins over the test file's ``param_range`` (a sample on the
upper edge, or just outside the range within the file's tolerance, in the end bin). Per bin:
its range, how many samples, and the mean and median error, each the mean over the cell's seeds
of every run's statistic over the bin's samples, with 95% intervals by the method of the cell
means (:mod:`pdetransfer.study.statistics`: the bin's samples resampled, one draw shared by
every run of that bin's size; the between-seed spread pooled over the curve's cells in that
bin). A cell whose runs lack per-sample errors has no rows. An imported dataset whose samples
carry no parameter (every value equal: what an imported file without one stores) has no rows,
and ``aggregate`` says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdetransfer.data.datasets import info_from, open_dataset, read_rows
from pdetransfer.errors import UserError
from pdetransfer.layout import DATASET_FILE
from pdetransfer.study.collection import CELL, CURVE, Cell
from pdetransfer.study.statistics import (
    MEAN,
    MEDIAN,
    NO_INTERVAL,
    Bootstrap,
    RunErrors,
    percentile_interval,
)

BIN_COLUMNS = [
    *CELL,
    "param_name",
    "bin",
    "param_lo",
    "param_hi",
    "samples",
    "test_rel_l2_mean",
    "test_rel_l2_lo",
    "test_rel_l2_hi",
    "test_rel_l2_median",
    "test_rel_l2_median_lo",
    "test_rel_l2_median_hi",
    "interval_method",
    "median_interval_method",
    "seed_df",
    "bootstrap_replicates",
    "bootstrap_seed",
]


@dataclass(frozen=True)
class Parameter:
    """A test set's physical parameter: its name, the range the bins span, each sample's value."""

    name: str
    lo: float
    hi: float
    values: np.ndarray

    def bins(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count + 1`` equal-width edges over the range, and each sample's bin."""
        edges = np.linspace(self.lo, self.hi, count + 1)
        index = np.searchsorted(edges, self.values, side="right") - 1
        return edges, np.clip(index, 0, count - 1)


def read_parameter(path: Path) -> Parameter | None:
    """The physical parameter of a test file; None when its samples carry none (every value
    equal, or a degenerate range)."""
    with open_dataset(path) as h5:
        info = info_from(h5, path)
        values = read_rows(h5["param"], 0, info.n_samples, path).astype(float)
    lo, hi = info.param_range
    varies = values.size > 0 and values.min() < values.max()
    if not (np.isfinite(values).all() and varies and hi > lo):
        return None
    return Parameter(info.param_name, lo, hi, values)


def dataset_parameters(
    downstream: Sequence[str], results: str | Path
) -> tuple[dict[str, Parameter], list[str]]:
    """Per downstream dataset with a parameter, that parameter; and one line per dataset
    without one (for the log)."""
    out, notes = {}, []
    for name in dict.fromkeys(downstream):
        path = Path(results) / DATASET_FILE.format(dataset=name, split="test")
        parameter = read_parameter(path)
        if parameter is None:
            notes.append(
                f"error_bins: {name} has no physical parameter (its test samples all carry the"
                " same value, as an imported file without one stores): no rows"
            )
        else:
            out[name] = parameter
    return out, notes


def error_bins(
    summary: pd.DataFrame,
    chosen: Mapping[Cell, Sequence[RunErrors]],
    parameters: Mapping[str, Parameter],
    count: int,
    bootstrap: Bootstrap,
) -> pd.DataFrame:
    """error_bins.csv (see the module docstring). The medians draw from a bootstrap of their
    own (same seed), as in the other tables."""
    medians = Bootstrap(bootstrap.replicates, bootstrap.seed)
    rows: list[dict[str, Any]] = []
    ok = summary[summary["status"] == "ok"]
    for (mode, pretrain, size, downstream), curve in ok.groupby(CURVE, sort=False):
        parameter = parameters.get(downstream)
        if parameter is None:
            continue
        cells = []
        for n in curve["n"]:
            runs = chosen.get((mode, pretrain, size, downstream, int(n)), [])
            if runs and all(r.per_sample is not None for r in runs):
                cells.append((int(n), runs))
        if not cells:
            continue
        length = {len(r.per_sample) for _, runs in cells for r in runs}  # type: ignore[arg-type]
        if length != {len(parameter.values)}:
            raise UserError(
                f"runs of {downstream} recorded {sorted(length)} test errors per run, its test"
                f" file has {len(parameter.values)} samples: rerun their evaluation"
            )
        edges, index = parameter.bins(count)
        by_cell: list[list[dict[str, Any]]] = [[] for _ in cells]
        for b in range(count):
            mask = index == b
            binned = [[_restrict(r, mask) for r in runs] for _, runs in cells]
            mean = _intervals(binned, bootstrap, MEAN) if mask.any() else None
            median = _intervals(binned, medians, MEDIAN) if mask.any() else None
            for j, ((n, _), runs) in enumerate(zip(cells, binned, strict=True)):
                row = dict(zip(CELL, (mode, pretrain, size, downstream, n), strict=True))
                row |= {"param_name": parameter.name, "bin": b}
                row |= {"param_lo": edges[b], "param_hi": edges[b + 1], "samples": int(mask.sum())}
                by_cell[j].append(row | _numbers(runs, j, mean, median, bootstrap))
        rows += [row for cell in by_cell for row in cell]
    return pd.DataFrame(rows, columns=BIN_COLUMNS)


def _restrict(run: RunErrors, mask: np.ndarray) -> RunErrors:
    """A run's errors on the samples of one bin."""
    errors = run.per_sample[mask]  # type: ignore[index]
    if not errors.size:
        return RunErrors(math.nan, errors, math.nan)
    return RunErrors(float(errors.mean()), errors, float(np.median(errors)))


def _intervals(
    curve: list[list[RunErrors]], bootstrap: Bootstrap, statistic: str
) -> tuple[list[tuple[float, float]], str, int]:
    """Per cell of a curve restricted to one bin: the interval of ``statistic``, the method
    and the seed degrees of freedom."""
    reps = bootstrap.curves([curve], per_point=True, statistic=statistic)
    if reps.method == NO_INTERVAL:
        return [(math.nan, math.nan)] * len(curve), NO_INTERVAL, 0
    columns = reps.curves[0].T
    return [percentile_interval(column) for column in columns], reps.method, reps.seed_df


def _numbers(
    runs: Sequence[RunErrors],
    j: int,
    mean: tuple[list[tuple[float, float]], str, int] | None,
    median: tuple[list[tuple[float, float]], str, int] | None,
    bootstrap: Bootstrap,
) -> dict[str, Any]:
    """The errors of the ``j``-th cell of a curve in one bin (NaN for an empty bin)."""
    if mean is None or median is None:
        return {"interval_method": NO_INTERVAL, "median_interval_method": NO_INTERVAL}
    known = mean[1] != NO_INTERVAL
    return {
        "test_rel_l2_mean": float(np.mean([r.mean for r in runs])),
        "test_rel_l2_lo": mean[0][j][0],
        "test_rel_l2_hi": mean[0][j][1],
        "test_rel_l2_median": float(np.mean([r.median for r in runs])),
        "test_rel_l2_median_lo": median[0][j][0],
        "test_rel_l2_median_hi": median[0][j][1],
        "interval_method": mean[1],
        "median_interval_method": median[1],
        "seed_df": mean[2],
        "bootstrap_replicates": bootstrap.replicates if known else math.nan,
        "bootstrap_seed": bootstrap.seed if known else math.nan,
    }
