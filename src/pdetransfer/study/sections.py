"""The sections of tables.md read from the summary and data-efficiency tables: data efficiency,
test error by N (mean and, where the summary has it, median), mixed physics, learning rates.

Tables written before a column existed (docs/results) render as they always did.
"""

from __future__ import annotations

import math

import pandas as pd

from pdetransfer.modes import MODES, TRAINING, Mode, comparisons, full_finetune
from pdetransfer.study.aggregation import mode_rows, summary_rows
from pdetransfer.study.config import Study
from pdetransfer.study.markdown import (
    MISSING,
    format_error,
    format_interval,
    format_n,
    format_ratio,
    format_sweep,
    markdown_table,
    task_label,
)
from pdetransfer.study.plotting import dataset_label


def efficiency_section(study: Study, efficiency: pd.DataFrame) -> str:
    """N that each mode and its baseline need per target error, and their ratio (for
    fine-tuning against scratch the paper's "x"), with intervals and flags where the table
    has them."""
    return "\n\n".join(
        _comparison_section(study, efficiency, mode, base)
        for mode, base in comparisons()
        if f"n_{mode.name}" in efficiency
    )


def _comparison_section(study: Study, efficiency: pd.DataFrame, mode: Mode, base: Mode) -> str:
    """The data-efficiency rows of one mode against its baseline (headline rows first where
    the table says which they are)."""
    intervals = "ratio_lo" in efficiency
    headlines = "headline" in efficiency
    medians = "ratio_median" in efficiency
    if headlines:
        efficiency = efficiency.sort_values("headline", ascending=False, kind="stable")
    ours, theirs = mode.name, base.name
    rows = []
    for r in efficiency.itertuples():
        row = [
            task_label(study, r.pretrain, r.downstream),
            r.size,
            f"{r.target_rel_l2:g}",
            format_n(getattr(r, f"n_{ours}"), getattr(r, f"{ours}_bound")),
            format_n(getattr(r, f"n_{theirs}"), getattr(r, f"{theirs}_bound")),
            format_ratio(r.ratio, r.ratio_bound),
        ]
        if intervals:
            row[3] += format_interval(getattr(r, f"n_{ours}_lo"), getattr(r, f"n_{ours}_hi"))
            row[4] += format_interval(getattr(r, f"n_{theirs}_lo"), getattr(r, f"n_{theirs}_hi"))
            if row[5] != MISSING:
                row[5] += format_interval(r.ratio_lo, r.ratio_hi, ".1f")
        if medians:
            text = format_ratio(r.ratio_median, r.ratio_median_bound)
            if text != MISSING:
                text += format_interval(r.ratio_median_lo, r.ratio_median_hi, ".1f")
            row.insert(6, text)
        if headlines:
            for column, side in ((3, ours), (4, theirs)):
                if getattr(r, f"{side}_bound") == "=":
                    row[column] += format_sweep(
                        getattr(r, f"n_{side}_sweep_lo"), getattr(r, f"n_{side}_sweep_hi")
                    )
            if r.ratio_bound == "=":
                row[5] += format_sweep(r.ratio_sweep_lo, r.ratio_sweep_hi, ".1f")
            verdict = "headline" if r.headline else f"no: {r.not_headline_because}"
            row += [r.interval_method, r.flags.replace(";", ", ") or "none", verdict]
        elif intervals:
            row += [r.interval_from, r.flags.replace(";", ", ") or "none"]
        rows.append(row)
    header = ["pre-training → downstream", "size", "target error", f"N {mode.label}"]
    header += [f"N {base.label}", "ratio"] + (["ratio of medians"] if medians else [])
    text = [
        "## Data efficiency",
        "",
        "Smallest N at which the best-lr mean test error reaches the target (interpolated in",
        "log N - log error between sweep points; ≤ = already at the smallest N, > = not",
        f"reached by the largest N), and N {base.label} / N {mode.label}.",
    ]
    if medians:
        text += [
            "Ratio of medians: the same ratio read from the cells' median errors (the typical",
            "test sample), with its interval; headlines and flags are the mean's.",
        ]
    if headlines:
        header += ["interval method", "flags", "headline?"]
        text += [
            "In brackets: 95% interval (seed spread pooled over the curve with a t quantile,",
            "and test samples bootstrapped; 0 = below the smallest N, ∞ = beyond the largest).",
            "In parentheses: what the sweep points alone say if the curve is monotone (the two",
            "N around the crossing, and the ratios they allow). Headline rows come first; every",
            "other row says why it is not one. Blocking flags: lr_at_edge = an edge learning",
            "rate beats its neighbour by more than the noise, unbracketed = one learning rate,",
            "undertrained = a chosen run hit its cap still gaining more than the tolerance,",
            "diverged = a cell diverged at every learning rate, one_seed = a cell with one",
            "seed, coarse = crossing between sweep points more than 2x apart. lr_edge_tie (an",
            "edge rate tied with its neighbour) blocks nothing.",
        ]
    elif intervals:
        header += ["interval from", "flags"]
        text += [
            "In brackets: 95% bootstrap interval (0 = below the smallest N, ∞ = beyond the",
            "largest). A row with flags is not a headline: lr_at_edge = chosen learning rate at",
            "the grid's edge, unbracketed = one learning rate, undertrained = a chosen run",
            "stopped still improving, diverged = a cell diverged at every learning rate,",
            "coarse = crossing between sweep points more than 2x apart.",
        ]
    return "\n".join([*text, "", markdown_table(header, rows)])


EDGE_TEXT = {
    "min": "lr at grid min",
    "max": "lr at grid max",
    "tie_min": "lr at grid min, tied with its neighbour",
    "tie_max": "lr at grid max, tied with its neighbour",
    "unbracketed": "one lr",
}


def _cell_text(row: pd.Series) -> str:
    """A cell's error, its chosen lr and, where the summary has them, its diagnostics."""
    if row.get("status") == "diverged":
        return "diverged at every lr"
    text = format_error(row["test_rel_l2_mean"], row["test_rel_l2_std"]) + _median_text(row)
    if math.isfinite(row["best_lr"]):
        text += f" (lr {row['best_lr']:g})"
    notes = [EDGE_TEXT[row["lr_at_edge"]]] if row.get("lr_at_edge") in EDGE_TEXT else []
    if row.get("undertrained"):
        count = row.get("n_undertrained", row.get("n_still_improving"))
        notes.append(f"undertrained {count}/{row['n_seeds']}")
    return text + (f" [{'; '.join(notes)}]" if notes else "")


def _median_text(row: pd.Series) -> str:
    """``; median 0.041 [0.036, 0.047]`` where the summary has the cell's median (else empty)."""
    median = row.get("test_rel_l2_median", math.nan)
    if not math.isfinite(median):
        return ""
    lo, hi = row.get("test_rel_l2_median_lo", math.nan), row.get("test_rel_l2_median_hi", math.nan)
    return f"; median {median:.3g}" + format_interval(lo, hi, ".3g")


def error_section(study: Study, summary: pd.DataFrame) -> str:
    """Test error by N per (pre-training, size, downstream): a row per mode (one that does not
    train only where the study has it)."""
    ns = sorted(study.n_values)
    parts = [
        "## Test error by N",
        "",
        "Mean relative L2 test error ± standard deviation over seeds, at the learning rate",
        "chosen by mean validation error (in brackets). Zero-shot does not depend on N.",
    ]
    if "test_rel_l2_median" in summary:
        parts += [
            "Median: the mean over seeds of each run's median error over the test samples (the",
            "typical sample), with its 95% interval (seed spread pooled over the curve with a t",
            "quantile, test samples bootstrapped). Where it is far below the mean, a few extreme",
            "samples carry the mean.",
        ]
    if "n_undertrained" in summary:
        parts += [
            "In square brackets: the chosen lr is an end of the grid (decisively, or tied with",
            "its neighbour) or the only one, or k of the chosen runs hit their cap still gaining",
            "more than the tolerance (undertrained k/seeds).",
        ]
    elif "lr_at_edge" in summary:
        parts += [
            "In square brackets: the chosen lr is an end of the grid (or the only one), or",
            "k of the chosen runs stopped still improving (undertrained k/seeds).",
        ]
    fine_tuned = [m.name for m in study.study_modes() if m.trains and m.needs_pretrained]
    cells = summary[summary["mode"].isin(fine_tuned)][["pretrain", "size", "downstream"]]
    for pretrain, size, downstream in cells.drop_duplicates().itertuples(index=False):
        cell = {"size": size, "downstream": downstream}
        rows = []
        for mode in study.study_modes():
            curve = mode_rows(summary, mode, pretrain, **cell)
            if mode.trains:
                picked = curve.set_index("n")
                texts = [_cell_text(picked.loc[n]) if n in picked.index else MISSING for n in ns]
                rows.append([mode.label, *texts])
            elif not curve.empty:
                first = curve.iloc[0]
                zero = format_error(first["test_rel_l2_mean"]) + _median_text(first)
                rows.append([mode.label, *([zero] * len(ns))])
        title = f"### {task_label(study, pretrain, downstream)}, size {size}"
        parts += ["", title, "", markdown_table(["mode", *(f"N={n}" for n in ns)], rows)]
    return "\n".join(parts)


def mixed_section(study: Study, summary: pd.DataFrame) -> str:
    """Per system: mixed-physics pre-training against the single-system one and scratch, with
    the error of the mode that does not train (zero-shot) from each source as a column."""
    experiments = study.mixed_experiments()
    if not experiments:
        return ""
    (level,) = (m for m in MODES.values() if not m.trains)
    ns = sorted(study.n_values)
    parts = [
        "## Mixed physics",
        "",
        "Mean test error per source of the initial weights (best lr by validation); the",
        "zero-shot column is the pre-trained model applied with no downstream training.",
    ]
    for experiment in experiments:
        exp = study.experiments[experiment]
        size = study.experiment_sizes(experiment)[-1]
        for downstream in exp["downstream"]:
            cell = {"size": size, "downstream": downstream}
            rows = []
            sources = [exp["pretrain"], *study.compare_pretrain(experiment, downstream)]
            for mode in (m for m in study.study_modes() if m.trains):
                for source in sources if mode.needs_pretrained else [""]:
                    label = f"from {source}" if mode.needs_pretrained else mode.label
                    if mode.needs_pretrained and mode is not full_finetune():
                        label = f"{mode.label} {label}"
                    curve = mode_rows(summary, mode, source, **cell).set_index("n")
                    zs = summary_rows(summary, mode=level.name, pretrain=source, **cell)
                    zero = format_error(zs["test_rel_l2_mean"].iloc[0]) if not zs.empty else MISSING
                    errors = [
                        format_error(curve.loc[n, "test_rel_l2_mean"])
                        if n in curve.index
                        else MISSING
                        for n in ns
                    ]
                    rows.append([label, zero, *errors])
            header = ["initial weights", level.label, *(f"N={n}" for n in ns)]
            title = f"### {experiment} ({size}) on {dataset_label(study, downstream)}"
            parts += ["", title, "", markdown_table(header, rows)]
    return "\n".join(parts)


def learning_rate_section(study: Study, summary: pd.DataFrame) -> str:
    """How often the chosen lr is an end of the sweep: a hint that the sweep was too narrow."""
    trained = summary[summary["mode"].isin(TRAINING)]
    lrs = sorted(float(lr) for lr in study.lrs)
    rows = []
    for mode, cells in trained.groupby("mode", sort=False):
        counts = cells["best_lr"].value_counts()
        rows.append([mode, *(str(int(counts.get(lr, 0))) for lr in lrs), str(len(cells))])
    header = ["mode", *(f"lr {lr:g} chosen" for lr in lrs), "cells"]
    return "\n".join(
        [
            "## Learning rates chosen",
            "",
            "Cells (pre-training, size, downstream, N) per chosen learning rate.",
            "",
            markdown_table(header, rows),
        ]
    )
