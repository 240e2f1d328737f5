"""Publish a finished study: its tables and figures copied out of results/, rendered as Markdown.

``results/`` is git-ignored and regenerated, so a study worth reading (docs/results) is a copy
of what the workflow produced: the three CSV tables, the PNG figures, the study file and the
Snakemake benchmark totals. ``tables.md`` renders the tables the study's questions are answered
from, so every number quoted in a write-up can be traced to a file the run wrote; nothing here
trains, evaluates or edits a number.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError
from pdetransfer.study.aggregation import load_study, read_csv, summary_rows
from pdetransfer.study.config import Study
from pdetransfer.study.plotting import dataset_label

MISSING = "n/a"
TABLES = ("runs.csv", "summary.csv", "data_efficiency.csv")
BOUND_SYMBOL = {"=": "", "<=": "≤", ">=": "≥", ">": ">", "<": "<"}
# Snakemake benchmark files by stage: (label, globs under results/benchmarks). A file counts
# for the first stage that matches it (the mixed-physics statistics sit under pretrain/).
STAGES = (
    ("data generation and checks", ("data/**/*.tsv", "pretrain/*/stats.tsv")),
    ("pre-training", ("pretrain/*/*.tsv",)),
    ("fine-tuning", ("runs/finetune/**/train.tsv",)),
    ("training from scratch", ("runs/scratch/**/train.tsv",)),
    ("evaluation", ("runs/**/evaluate.tsv",)),
    ("gallery predictions", ("runs/**/predict.tsv",)),
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (text cells, first column left, others right)."""
    align = [":--"] + ["--:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def format_error(mean: float, std: float = math.nan) -> str:
    """``0.0523 ± 0.0031``: three significant digits, the spread over seeds when known."""
    if not math.isfinite(mean):
        return MISSING
    text = f"{mean:.3g}"
    return f"{text} ± {std:.2g}" if math.isfinite(std) else text


def format_n(n: float, bound: str) -> str:
    """An N of data_efficiency.csv with its qualifier: ``≤8``, ``>1024`` or ``37``."""
    if not math.isfinite(n):
        return MISSING
    return f"{BOUND_SYMBOL.get(bound, '')}{n:.0f}"


def format_ratio(ratio: float, bound: str) -> str:
    """N_scratch / N_finetune with its qualifier: ``12.3x``, ``≥4.0x``; n/a when unknown."""
    if not bound or not math.isfinite(ratio):
        return MISSING
    return f"{BOUND_SYMBOL[bound]}{ratio:.1f}x"


def _task(study: Study, pretrain: str, downstream: str) -> str:
    return f"{pretrain} → {dataset_label(study, downstream)}"


def efficiency_section(study: Study, efficiency: pd.DataFrame) -> str:
    """N that fine-tuning and scratch need per target error, and their ratio (the paper's "x")."""
    rows = [
        [
            _task(study, r.pretrain, r.downstream),
            r.size,
            f"{r.target_rel_l2:g}",
            format_n(r.n_finetune, r.finetune_bound),
            format_n(r.n_scratch, r.scratch_bound),
            format_ratio(r.ratio, r.ratio_bound),
        ]
        for r in efficiency.itertuples()
    ]
    header = ["pre-training → downstream", "size", "target error", "N fine-tune", "N scratch"]
    return "\n".join(
        [
            "## Data efficiency",
            "",
            "Smallest N at which the best-lr mean test error reaches the target (interpolated in",
            "log N - log error between sweep points; ≤ = already at the smallest N, > = not",
            "reached by the largest N), and N scratch / N fine-tune.",
            "",
            markdown_table([*header, "ratio"], rows),
        ]
    )


def _cell_text(row: pd.Series) -> str:
    text = format_error(row["test_rel_l2_mean"], row["test_rel_l2_std"])
    if math.isfinite(row["best_lr"]):
        text += f" (lr {row['best_lr']:g})"
    return text


def error_section(study: Study, summary: pd.DataFrame) -> str:
    """Test error by N per (pre-training, size, downstream): fine-tune, scratch and zero-shot."""
    ns = sorted(study.n_values)
    parts = [
        "## Test error by N",
        "",
        "Mean relative L2 test error ± standard deviation over seeds, at the learning rate",
        "chosen by mean validation error (in brackets). Zero-shot does not depend on N.",
    ]
    cells = summary[summary["mode"] == "finetune"][["pretrain", "size", "downstream"]]
    for pretrain, size, downstream in cells.drop_duplicates().itertuples(index=False):
        cell = {"size": size, "downstream": downstream}
        rows = []
        for mode, curve in (
            ("fine-tune", summary_rows(summary, mode="finetune", pretrain=pretrain, **cell)),
            ("scratch", summary_rows(summary, mode="scratch", **cell)),
        ):
            picked = curve.set_index("n")
            rows.append(
                [mode, *(_cell_text(picked.loc[n]) if n in picked.index else MISSING for n in ns)]
            )
        zs = summary_rows(summary, mode="zeroshot", pretrain=pretrain, **cell)
        if not zs.empty:
            zero = format_error(zs["test_rel_l2_mean"].iloc[0])
            rows.append(["zero-shot", *([zero] * len(ns))])
        title = f"### {_task(study, pretrain, downstream)}, size {size}"
        parts += ["", title, "", markdown_table(["mode", *(f"N={n}" for n in ns)], rows)]
    return "\n".join(parts)


def mixed_section(study: Study, summary: pd.DataFrame) -> str:
    """Per system: mixed-physics pre-training against the single-system one and scratch."""
    experiments = study.mixed_experiments()
    if not experiments:
        return ""
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
            for source in [*sources, ""]:
                label = "scratch" if source == "" else f"from {source}"
                mode = "scratch" if source == "" else "finetune"
                curve = summary_rows(summary, mode=mode, pretrain=source, **cell).set_index("n")
                zs = summary_rows(summary, mode="zeroshot", pretrain=source, **cell)
                zero = format_error(zs["test_rel_l2_mean"].iloc[0]) if not zs.empty else MISSING
                errors = [
                    format_error(curve.loc[n, "test_rel_l2_mean"]) if n in curve.index else MISSING
                    for n in ns
                ]
                rows.append([label, zero, *errors])
            header = ["initial weights", "zero-shot", *(f"N={n}" for n in ns)]
            title = f"### {experiment} ({size}) on {dataset_label(study, downstream)}"
            parts += ["", title, "", markdown_table(header, rows)]
    return "\n".join(parts)


def learning_rate_section(study: Study, summary: pd.DataFrame) -> str:
    """How often the chosen lr is an end of the sweep: a hint that the sweep was too narrow."""
    trained = summary[summary["mode"] != "zeroshot"]
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


def compute_section(benchmarks: Path) -> str:
    """Job wall-clock seconds summed per stage, from Snakemake's benchmark files."""
    rows = []
    total = 0.0
    counted: set[Path] = set()
    for label, patterns in STAGES:
        files = sorted({path for p in patterns for path in benchmarks.glob(p)} - counted)
        counted.update(files)
        seconds = 0.0
        for path in files:
            try:
                seconds += float(pd.read_csv(path, sep="\t")["s"].sum())
            except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError):
                raise UserError(f"benchmark file {path} is not a Snakemake benchmark") from None
        total += seconds
        rows.append([label, str(len(files)), f"{seconds:,.0f}", f"{seconds / 3600:.2f}"])
    rows.append(["all jobs", "", f"{total:,.0f}", f"{total / 3600:.2f}"])
    return "\n".join(
        [
            "## Compute",
            "",
            "Wall-clock seconds of the jobs, summed per stage (Snakemake benchmark files); jobs",
            "ran in parallel, so the sum exceeds the study's elapsed time.",
            "",
            markdown_table(["stage", "jobs", "job seconds", "job hours"], rows),
        ]
    )


def render_tables(
    study: Study, summary: pd.DataFrame, efficiency: pd.DataFrame, benchmarks: Path | None
) -> str:
    """tables.md: every section, in the order the study's questions are asked."""
    sections = [
        "# Tables of the study",
        f"Written by `pdetransfer publish` (pdetransfer {__version__}) from the workflow's\n"
        "tables; the CSV files next to this one hold every digit.",
        efficiency_section(study, efficiency),
        error_section(study, summary),
        mixed_section(study, summary),
        learning_rate_section(study, summary),
    ]
    if benchmarks is not None:
        sections.append(compute_section(benchmarks))
    return "\n\n".join(section for section in sections if section) + "\n"


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def publish_command(args: argparse.Namespace) -> int:
    """``pdetransfer publish``: copy tables, PNG figures and study file; write tables.md."""
    study = load_study(args.study)
    tables, plots, out = Path(args.tables), Path(args.plots), Path(args.out)
    for name in TABLES:
        if not (tables / name).is_file():
            raise UserError(f"{tables / name} does not exist: run the workflow's aggregate rule")
    figures = sorted(plots.glob("**/*.png"))
    if not figures:
        raise UserError(f"no PNG figures under {plots}: run the workflow first")
    benchmarks = Path(args.benchmarks) if args.benchmarks else None
    if benchmarks is not None and not benchmarks.is_dir():
        raise UserError(f"--benchmarks {benchmarks} is not a directory")
    summary = read_csv(tables / "summary.csv")
    efficiency = read_csv(tables / "data_efficiency.csv")
    text = render_tables(study, summary, efficiency, benchmarks)
    for name in TABLES:
        _copy(tables / name, out / "tables" / name)
    for figure in figures:
        _copy(figure, out / "figures" / figure.relative_to(plots))
    _copy(Path(args.study), out / "study.json")
    with atomic_path(out / "tables.md") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    print(f"published {len(TABLES)} tables and {len(figures)} figures to {out}")
    return 0
