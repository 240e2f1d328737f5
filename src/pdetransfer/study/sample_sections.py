"""The sections of tables.md read from the per-sample tables: forgetting (fine-tuned modes against
zero-shot, sample by sample) and the error per bin of the physical parameter.

Both exist so that a few extreme test samples cannot carry a conclusion: the first says whether
the typical sample kept what the pre-trained model knew, the second where in the parameter's
range the error lies.
"""

from __future__ import annotations

import math

import pandas as pd

from pdetransfer.modes import MODES
from pdetransfer.study.config import Study
from pdetransfer.study.markdown import MISSING, format_interval, markdown_table, task_label
from pdetransfer.study.plotting import dataset_label


def _label(mode: str) -> str:
    return MODES[mode].label if mode in MODES else mode


def _share(value: float, lo: float, hi: float) -> str:
    """``62% [50, 75]``: a share with its interval, in percent."""
    if not math.isfinite(value):
        return MISSING
    return f"{100 * value:.0f}%" + format_interval(100 * lo, 100 * hi)


def _number(value: float, lo: float = math.nan, hi: float = math.nan) -> str:
    """``0.0412 [0.036, 0.047]``: three significant digits and the interval where known."""
    if not math.isfinite(value):
        return MISSING
    return f"{value:.3g}" + format_interval(lo, hi, ".3g")


def forgetting_section(study: Study, forgetting: pd.DataFrame) -> str:
    """Per fine-tuned cell: how many test samples got worse than zero-shot, and the median
    ratio to zero-shot's error, with intervals (empty when the table has no row)."""
    if forgetting.empty:
        return ""
    rows = []
    for r in forgetting.itertuples():
        rows.append(
            [
                task_label(study, r.pretrain, r.downstream),
                r.size,
                str(int(r.n)),
                _label(r.mode),
                _number(r.zeroshot_rel_l2_median),
                _number(r.test_rel_l2_median),
                _share(r.fraction_worse, r.fraction_worse_lo, r.fraction_worse_hi),
                _number(r.median_ratio, r.median_ratio_lo, r.median_ratio_hi),
            ]
        )
    header = ["pre-training → downstream", "size", "N", "mode", "zero-shot median"]
    header += ["median", "samples worse than zero-shot", "median error / zero-shot"]
    return "\n".join(
        [
            "## Forgetting",
            "",
            "Each fine-tuned cell against the zero-shot error of its pre-trained model, sample by",
            "sample: the share of test samples whose error got worse, and the median over samples",
            "of error / zero-shot error (above 1: the typical sample lost what the pre-trained",
            "model knew), each the mean over seeds with a 95% interval (seed spread pooled over",
            "the curve with a t quantile, test samples bootstrapped).",
            "",
            markdown_table(header, rows),
        ]
    )


def bins_section(study: Study, bins: pd.DataFrame) -> str:
    """Per (pre-training, size, downstream): mean and median error per bin of the downstream
    dataset's parameter, a row per cell (empty when the table has no row)."""
    if bins.empty:
        return ""
    parts = [
        "## Error per bin of the physical parameter",
        "",
        "Test samples binned by the downstream dataset's parameter (equal-width bins over its",
        "range; samples per bin in the header): mean and median error of each cell's chosen",
        "runs over the bin's samples, the median with its 95% interval.",
    ]
    keys = ["pretrain", "size", "downstream"]
    for (pretrain, size, downstream), task in bins.groupby(keys, sort=False):
        edges = task.drop_duplicates("bin").sort_values("bin")
        name = edges["param_name"].iloc[0]
        header = ["mode", "N"] + [
            f"{name} ∈ [{r.param_lo:.3g}, {r.param_hi:.3g}] ({r.samples})"
            for r in edges.itertuples()
        ]
        rows = []
        for (mode, n), cell in task.groupby(["mode", "n"], sort=False):
            cell = cell.sort_values("bin")
            texts = [
                f"{_number(r.test_rel_l2_mean)}; median "
                + _number(r.test_rel_l2_median, r.test_rel_l2_median_lo, r.test_rel_l2_median_hi)
                if r.samples
                else MISSING
                for r in cell.itertuples()
            ]
            rows.append([_label(mode), str(int(n)) if n else "", *texts])
        if pretrain:
            source = task_label(study, pretrain, downstream)
        else:
            source = f"{dataset_label(study, downstream)} (no pre-training)"
        parts += ["", f"### {source}, size {size}", "", markdown_table(header, rows)]
    return "\n".join(parts)
