"""Sections of tables.md for the tables a study writes where it has them: compute per stage
(compute.csv), the crossover of each fine-tuning mode with scratch (mode_crossover.csv), the
gain by model size (size_gain.csv beside data_efficiency.csv's per-size rows) and a mixed-physics
pre-training over the single-system one (mixed_comparison.csv)."""

from __future__ import annotations

import math

import pandas as pd

from pdetransfer.modes import MODES
from pdetransfer.study import compute
from pdetransfer.study.config import Study
from pdetransfer.study.markdown import (
    MISSING,
    format_interval,
    format_n,
    format_ratio,
    format_sweep,
    markdown_table,
    task_label,
)

#: How the stages of compute.csv (:mod:`pdetransfer.study.compute`) read in tables.md.
STAGE_LABELS = {
    compute.DATA: "data generation and checks",
    compute.PRETRAIN: "pre-training",
    **{m.name: m.activity for m in MODES.values() if m.trains},
    compute.EVALUATE: "evaluation",
    compute.PREDICT: "gallery predictions",
    compute.ALL: "all jobs",
}


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d} h {minutes:02d} min" if hours else f"{minutes:d} min {secs:02d} s"


def compute_section(table: pd.DataFrame) -> str:
    """compute.csv: jobs, job-seconds and wall-clock span per stage."""
    rows = [
        [
            STAGE_LABELS.get(r.stage, r.stage),
            str(int(r.jobs)),
            f"{r.job_seconds:,.0f}",
            f"{r.job_seconds / 3600:.2f}",
            _duration(r.span_seconds),
        ]
        for r in table.itertuples()
    ]
    return "\n".join(
        [
            "## Compute",
            "",
            "Wall-clock seconds of the study's jobs summed per stage (Snakemake benchmark files),",
            "and the span from the stage's first job start to its last job end (a job ends when",
            "its benchmark file is written, and started its seconds before); jobs ran in",
            "parallel, so the sum may exceed the span.",
            "",
            markdown_table(["stage", "jobs", "job seconds", "job hours", "wall span"], rows),
        ]
    )


def crossover_section(study: Study, crossovers: pd.DataFrame) -> str:
    """mode_crossover.csv: per fine-tuning mode, from which N scratch catches up."""
    if crossovers.empty:
        return ""
    rows = []
    for r in crossovers.itertuples():
        if r.crossover_bound == ">":
            where = f"none within the sweep (wins up to N = {r.n_crossover_sweep_lo:.0f})"
        else:
            where = format_n(r.n_crossover, r.crossover_bound)
            where += format_sweep(r.n_crossover_sweep_lo, r.n_crossover_sweep_hi)
        ratio = f"{r.ratio:.3g}" + format_interval(r.ratio_lo, r.ratio_hi, ".3g")
        label = MODES[r.mode].label if r.mode in MODES else r.mode
        task = task_label(study, r.pretrain, r.downstream)
        rows.append([task, r.size, label, f"{r.trainable_parameters:,.0f}", where, ratio])
    header = ["pre-training → downstream", "size", "mode", "trainable parameters"]
    header += ["crossover N", "scratch / mode there [95%]"]
    return "\n".join(
        [
            "## Crossover with scratch",
            "",
            "Smallest N of the sweep from which scratch's error is no longer decisively above",
            "the mode's, there and at every larger N (the 95% interval of scratch / mode",
            "reaches 1); in parentheses the sweep points the crossing lies between (≤ = the",
            "mode wins at no N). mode_crossover.csv's note names smaller N where scratch was",
            "level too.",
            "",
            markdown_table(header, rows),
        ]
    )


def mixed_comparison_section(study: Study, table: pd.DataFrame | None) -> str:
    """mixed_comparison.csv: the mixture's error over the single-system pre-training's, per
    mode and N, means and medians with their intervals."""
    if table is None or table.empty:
        return ""
    rows = []
    for r in table.itertuples():
        label = MODES[r.mode].label if r.mode in MODES else r.mode
        mean = f"{r.ratio:.3g}" + format_interval(r.ratio_lo, r.ratio_hi, ".3g")
        median = f"{r.ratio_median:.3g}" + format_interval(
            r.ratio_median_lo, r.ratio_median_hi, ".3g"
        )
        n = "—" if r.n == 0 else f"{r.n:.0f}"
        task = task_label(study, r.single_pretrain, r.downstream)
        rows.append([task, r.pretrain, r.size, label, n, mean, median])
    header = ["single pre-training → downstream", "mixture", "size", "mode", "N"]
    header += ["mean: mixture / single [95%]", "median: mixture / single [95%]"]
    return "\n".join(
        [
            "## Mixed physics against single-system pre-training",
            "",
            "The mixed-physics pre-training's test error over the single-system one's, fine-tuned",
            "on the same dataset in the same mode (above 1: the mixture costs accuracy; an",
            "interval containing 1: no evidence either way).",
            "",
            markdown_table(header, rows),
        ]
    )


def size_section(study: Study, gains: pd.DataFrame, efficiency: pd.DataFrame) -> str:
    """size_gain.csv and data_efficiency.csv's per-size rows side by side: the fine-tune
    gain at each N, and the N ratio at each target, one column per model size."""
    if gains.empty:
        return ""
    parts = [
        "## Gain by model size",
        "",
        "Scratch error / fine-tune error at each N, and N scratch / N fine-tune at each target",
        "error, per model size (parameters in the header); 95% intervals in brackets.",
    ]
    for (experiment, pretrain, downstream), rows in gains.groupby(
        ["experiment", "pretrain", "downstream"], sort=False
    ):
        sizes = list(dict.fromkeys(rows["size"]))
        counts = rows.drop_duplicates("size").set_index("size")["parameters"]
        header = [f"{size} ({counts[size]:,.0f})" for size in sizes]
        at_n = []
        for n, cells in rows.groupby("n", sort=True):
            by_size = cells.set_index("size")
            at_n.append(
                [
                    f"N={n:.0f}",
                    *(
                        f"{by_size.loc[s, 'gain']:.2f}x"
                        + format_interval(
                            by_size.loc[s, "gain_lo"], by_size.loc[s, "gain_hi"], ".2f"
                        )
                        if s in by_size.index
                        else MISSING
                        for s in sizes
                    ),
                ]
            )
        title = f"### {experiment}: {task_label(study, pretrain, downstream)}"
        parts += ["", title, "", markdown_table(["fine-tune gain", *header], at_n)]
        eff = efficiency[
            (efficiency["pretrain"] == pretrain) & (efficiency["downstream"] == downstream)
        ]
        at_target = []
        for target, cells in eff.groupby("target_rel_l2", sort=False):
            by_size = cells.drop_duplicates("size").set_index("size")
            texts = []
            for s in sizes:
                if s not in by_size.index:
                    texts.append(MISSING)
                    continue
                r = by_size.loc[s]
                text = format_ratio(r["ratio"], r["ratio_bound"])
                if text != MISSING and "ratio_lo" in r:
                    text += format_interval(r["ratio_lo"], r["ratio_hi"], ".1f")
                texts.append(text)
            at_target.append([f"target {target:g}", *texts])
        if at_target:
            parts += ["", markdown_table(["N ratio", *header], at_target)]
    return "\n".join(parts)
