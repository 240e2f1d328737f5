"""size_gain.csv: the fine-tune gain per model size at each fixed N (the paper's "gains grow
with model size").

The gain of a cell is its baseline's error over full fine-tuning's (scratch / fine-tune, the
baseline of :func:`pdetransfer.modes.full_finetune`): the baseline's row of
``mode_comparison.csv`` (:mod:`pdetransfer.study.modes_table`), whose ratio and 95% interval
are read here, not recomputed. One row per experiment with several sizes, downstream dataset,
N and size, with the size's parameter count; the data efficiency per size at fixed targets is
``data_efficiency.csv``'s per-size rows, and the fits against the parameter count are
``scaling_fits.csv``'s ``against = parameters`` rows.
"""

from __future__ import annotations

import pandas as pd

from pdetransfer.modes import MODES, full_finetune
from pdetransfer.study.config import Study

TRAILER = ["interval_method", "seed_df", "bootstrap_replicates", "bootstrap_seed"]


def columns() -> list[str]:
    """size_gain.csv's columns, named after the two modes compared."""
    reference = full_finetune()
    baseline = MODES[reference.baseline or ""]
    return [
        "experiment",
        "pretrain",
        "downstream",
        "n",
        "size",
        "parameters",
        f"{reference.name}_rel_l2",
        f"{baseline.name}_rel_l2",
        "gain",
        "gain_lo",
        "gain_hi",
        *TRAILER,
    ]


def size_gain(study: Study, summary: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """size_gain.csv from the summary (parameter counts) and mode_comparison.csv."""
    reference = full_finetune()
    baseline = MODES[reference.baseline or ""]
    cols = columns()
    rows = comparison[comparison["mode"] == baseline.name]
    sizes = summary[summary["mode"] == reference.name][["pretrain", "size", "parameters"]]
    sizes = sizes.drop_duplicates(["pretrain", "size"])
    out = []
    for name in study.scaling_experiments():
        exp = study.experiments[name]
        picked = rows[
            (rows["pretrain"] == exp["pretrain"])
            & rows["downstream"].isin(exp["downstream"])
            & rows["size"].isin(study.experiment_sizes(name))
        ]
        if picked.empty:
            continue
        picked = picked.merge(sizes, on=["pretrain", "size"], how="left")
        order = {size: i for i, size in enumerate(study.experiment_sizes(name))}
        picked = picked.assign(_order=picked["size"].map(order))
        picked = picked.sort_values(["downstream", "n", "_order"], kind="stable")
        out.append(
            pd.DataFrame(
                {
                    "experiment": name,
                    "pretrain": picked["pretrain"],
                    "downstream": picked["downstream"],
                    "n": picked["n"],
                    "size": picked["size"],
                    "parameters": picked["parameters"],
                    cols[6]: picked["reference_rel_l2_mean"],
                    cols[7]: picked["test_rel_l2_mean"],
                    "gain": picked["ratio"],
                    "gain_lo": picked["ratio_lo"],
                    "gain_hi": picked["ratio_hi"],
                    **{column: picked[column] for column in TRAILER},
                }
            )
        )
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.concat(out, ignore_index=True)[cols]
