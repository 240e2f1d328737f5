"""Publish a finished study: its tables and figures copied out of results/, rendered as Markdown.

``results/`` is git-ignored and regenerated, so a study worth reading (docs/results) is a copy
of what the workflow produced: the CSV tables, the PNG figures, the study file and the
Snakemake benchmark totals. ``tables.md`` renders the tables the study's questions are answered
from, so every number quoted in a write-up can be traced to a file the run wrote; nothing here
trains, evaluates or edits a number.

The diagnostics travel with the numbers: every N and ratio with its 95% interval, the bounds
the sweep points alone give and its ``flags``; headline rows first, every other row with why
it is not one; every test error with its cell's learning rate at the grid's edge (or tied
there) or undertrained marked; a diagnostics section with the share of chosen runs that hit
the cap and that were undertrained, and of cells whose learning rate is at the edge; and the
scaling fits. Tables written before those columns existed (docs/results) render as they
always did.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError
from pdetransfer.layout import BENCHMARKS_DIR, PLOTS_DIR, STUDY_FILE, TABLES_DIR, study_path
from pdetransfer.modes import MODES, TRAINING, Mode, comparisons, full_finetune
from pdetransfer.study import compute
from pdetransfer.study.aggregation import load_study, mode_rows, read_csv, summary_rows
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
from pdetransfer.study.sections import compute_section, crossover_section, size_section

TABLES = ("runs.csv", "summary.csv", "data_efficiency.csv", "scaling_fits.csv")
COMPUTE = "compute.csv"
#: Tables copied and rendered where the study wrote them.
OPTIONAL_TABLES = (
    "mode_comparison.csv",
    "mode_threshold.csv",
    "mode_crossover.csv",
    "size_gain.csv",
    COMPUTE,
)


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
    header += [f"N {base.label}", "ratio"]
    text = [
        "## Data efficiency",
        "",
        "Smallest N at which the best-lr mean test error reaches the target (interpolated in",
        "log N - log error between sweep points; ≤ = already at the smallest N, > = not",
        f"reached by the largest N), and N {base.label} / N {mode.label}.",
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
    text = format_error(row["test_rel_l2_mean"], row["test_rel_l2_std"])
    if math.isfinite(row["best_lr"]):
        text += f" (lr {row['best_lr']:g})"
    notes = [EDGE_TEXT[row["lr_at_edge"]]] if row.get("lr_at_edge") in EDGE_TEXT else []
    if row.get("undertrained"):
        count = row.get("n_undertrained", row.get("n_still_improving"))
        notes.append(f"undertrained {count}/{row['n_seeds']}")
    return text + (f" [{'; '.join(notes)}]" if notes else "")


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
                zero = format_error(curve["test_rel_l2_mean"].iloc[0])
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


def _share(part: float, whole: float) -> str:
    return f"{part:.0f} of {whole:.0f} ({100 * part / whole:.0f}%)" if whole else MISSING


def diagnostics_section(summary: pd.DataFrame) -> str:
    """How far the study's numbers can be trusted: runs still improving, lrs at the edge,
    divergence (empty for a summary written before these columns)."""
    if "lr_at_edge" not in summary:
        return ""
    if "n_hit_cap" in summary:
        return _stop_diagnostics(summary)
    rows = []
    for mode, cells in summary[summary["mode"].isin(TRAINING)].groupby("mode", sort=False):
        ok = cells[cells["status"] == "ok"]
        rows.append(
            [
                mode,
                _share(ok["n_still_improving"].sum(), ok["n_seeds"].sum()),
                _share(ok["lr_at_edge"].isin(["min", "max"]).sum(), len(ok)),
                str(int((ok["lr_at_edge"] == "unbracketed").sum())),
                str(int(cells["n_diverged"].sum())),
                str(int((cells["status"] == "diverged").sum())),
            ]
        )
    header = [
        "mode",
        "chosen runs stopped still improving",
        "cells with lr at grid edge",
        "cells with one lr",
        "diverged runs",
        "cells diverged at every lr",
    ]
    return "\n".join(
        [
            "## Diagnostics",
            "",
            "Chosen runs: the runs of each cell's chosen learning rate. A run stopped still",
            "improving hit its step cap or budget with its best validation near the end; an lr",
            "at the grid's edge may have its optimum outside the grid.",
            "",
            markdown_table(header, rows),
        ]
    )


def _stop_diagnostics(summary: pd.DataFrame) -> str:
    """The diagnostics of a summary with the cap, undertrained and edge-tie columns."""
    rows = []
    for mode, cells in summary[summary["mode"].isin(TRAINING)].groupby("mode", sort=False):
        ok = cells[cells["status"] == "ok"]
        seeds = ok["n_seeds"].sum()
        rows.append(
            [
                mode,
                _share(ok["n_hit_cap"].sum(), seeds),
                _share(ok["n_undertrained"].sum(), seeds),
                _share(ok["lr_at_edge"].isin(["min", "max"]).sum(), len(ok)),
                _share(ok["lr_at_edge"].isin(["tie_min", "tie_max"]).sum(), len(ok)),
                str(int((ok["lr_at_edge"] == "unbracketed").sum())),
                str(int(ok["one_seed"].astype(bool).sum())),
                str(int(cells["n_diverged"].sum())),
                str(int((cells["status"] == "diverged").sum())),
            ]
        )
    header = [
        "mode",
        "chosen runs at the cap",
        "chosen runs undertrained",
        "cells with lr at grid edge",
        "cells with an edge lr tied",
        "cells with one lr",
        "cells with one seed",
        "diverged runs",
        "cells diverged at every lr",
    ]
    return "\n".join(
        [
            "## Diagnostics",
            "",
            "Chosen runs: the runs of each cell's chosen learning rate. Reaching the cap is a",
            "fact, not a flag; a run is undertrained when it reached it with its best validation",
            "error still falling by more than the tolerance over its last patience steps. An lr",
            "at the grid's edge beats its neighbour by more than the noise (its optimum may lie",
            "outside the grid); a tied one does not.",
            "",
            markdown_table(header, rows),
        ]
    )


def fits_section(fits: pd.DataFrame) -> str:
    """The scaling fits: exponent with its interval, floor, residual, or why there is none."""
    rows = []
    for r in fits.itertuples():
        where = r.size if r.against == "n" else f"N={r.n:.0f}"
        if math.isfinite(r.b):
            exponent = f"{r.b:.2f}" + format_interval(r.b_lo, r.b_hi, ".2f")
            floor, residual = f"{r.c:.3g}", f"{r.rms_log_residual:.2g}"
        else:
            exponent, floor, residual = MISSING, MISSING, MISSING
        task = f"{r.pretrain} → {r.downstream}" if r.pretrain else r.downstream
        notes = ", ".join(part for part in (r.flags.replace(";", ", "), r.note) if part)
        ident = [r.experiment, task, r.mode, r.against, where, str(r.n_points)]
        rows.append([*ident, exponent, floor, residual, notes])
    header = ["experiment", "downstream", "mode", "against", "size / N", "points", "b [95%]"]
    return "\n".join(
        [
            "## Scaling fits",
            "",
            "err = a·x^(-b) + c against N (per size) or parameter count (per N); rms = root",
            "mean square residual in natural-log error.",
            "",
            markdown_table([*header, "c", "rms", "flags / note"], rows),
        ]
    )


def render_tables(
    study: Study,
    summary: pd.DataFrame,
    efficiency: pd.DataFrame,
    compute_table: pd.DataFrame | None,
    fits: pd.DataFrame | None = None,
    extra: Mapping[str, pd.DataFrame] | None = None,
) -> str:
    """tables.md: every section, in the order the study's questions are asked (``extra``: the
    optional tables by file name, mode_crossover.csv and size_gain.csv, where written)."""
    extra = extra or {}
    sections = [
        "# Tables of the study",
        f"Written by `pdetransfer publish` (pdetransfer {__version__}) from the workflow's\n"
        "tables; the CSV files next to this one hold every digit.",
        diagnostics_section(summary),
        efficiency_section(study, efficiency),
        error_section(study, summary),
        mixed_section(study, summary),
        learning_rate_section(study, summary),
        fits_section(fits) if fits is not None else "",
    ]
    if "size_gain.csv" in extra:
        sections.append(size_section(study, extra["size_gain.csv"], efficiency))
    if "mode_crossover.csv" in extra:
        sections.append(crossover_section(study, extra["mode_crossover.csv"]))
    if compute_table is not None:
        sections.append(compute_section(compute_table))
    return "\n\n".join(section for section in sections if section) + "\n"


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The study file, tables and plots of the run: as given, else the study's own
    (:func:`pdetransfer.layout.study_path` of ``--name`` below ``--results``)."""

    def own(path: str) -> Path:
        return Path(args.results) / study_path(args.name, path)

    return (
        Path(args.study) if args.study else own(STUDY_FILE),
        Path(args.tables) if args.tables else own(TABLES_DIR),
        Path(args.plots) if args.plots else own(PLOTS_DIR),
    )


def _compute(tables: Path, benchmarks: str | None, results: str) -> pd.DataFrame | None:
    """The study's compute.csv; for tables written before it, every job of a benchmark folder
    (``--benchmarks``, by default the results root's where it exists; '' for none)."""
    if (tables / COMPUTE).is_file():
        return read_csv(tables / COMPUTE)
    folder = Path(results) / BENCHMARKS_DIR if benchmarks is None else Path(benchmarks)
    if (benchmarks is None and not folder.is_dir()) or benchmarks == "":
        return None
    if not folder.is_dir():
        raise UserError(f"--benchmarks {folder} is not a directory")
    return compute.compute_table(folder, sorted(folder.glob("**/*.tsv")))


def publish_command(args: argparse.Namespace) -> int:
    """``pdetransfer publish``: copy tables, PNG figures and study file; write tables.md."""
    study_file, tables, plots = _paths(args)
    study = load_study(study_file)
    out = Path(args.out)
    for name in TABLES:
        if not (tables / name).is_file():
            raise UserError(f"{tables / name} does not exist: run the workflow's aggregate rule")
    figures = sorted(plots.glob("**/*.png"))
    if not figures:
        raise UserError(f"no PNG figures under {plots}: run the workflow first")
    costs = _compute(tables, args.benchmarks, args.results)
    summary = read_csv(tables / "summary.csv")
    efficiency = read_csv(tables / "data_efficiency.csv")
    fits = read_csv(tables / "scaling_fits.csv")
    present = [name for name in OPTIONAL_TABLES if (tables / name).is_file()]
    extra = {name: read_csv(tables / name) for name in present}
    text = render_tables(study, summary, efficiency, costs, fits, extra)
    copied = [*TABLES, *present]
    for name in copied:
        _copy(tables / name, out / "tables" / name)
    for figure in figures:
        _copy(figure, out / "figures" / figure.relative_to(plots))
    _copy(study_file, out / "study.json")
    with atomic_path(out / "tables.md") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    print(f"published {len(copied)} tables and {len(figures)} figures to {out}")
    return 0
