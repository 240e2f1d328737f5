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
scaling fits. Every test error shows its median next to its mean, and where the study has
them, the error per bin of the physical parameter and the fine-tuned modes against zero-shot
sample by sample (so that a few extreme samples cannot carry a conclusion). Tables written
before those columns existed (docs/results) render as they always did.

The sections live by what they read: :mod:`pdetransfer.study.sections` (summary and data
efficiency), :mod:`pdetransfer.study.sample_sections` (per-sample tables), this module the
diagnostics, fits, compute and the command; :mod:`pdetransfer.study.markdown` writes numbers.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import pandas as pd

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError
from pdetransfer.layout import mode_root
from pdetransfer.modes import MODES, TRAINING
from pdetransfer.study.aggregation import load_study, read_csv
from pdetransfer.study.config import Study
from pdetransfer.study.markdown import MISSING, format_interval, markdown_table
from pdetransfer.study.sample_sections import bins_section, forgetting_section
from pdetransfer.study.sections import (
    efficiency_section,
    error_section,
    learning_rate_section,
    mixed_section,
)

TABLES = ("runs.csv", "summary.csv", "data_efficiency.csv", "scaling_fits.csv")
#: Tables of later versions, copied and rendered where the study has them (a study aggregated
#: before they existed publishes without them).
OPTIONAL_TABLES = ("mode_comparison.csv", "mode_threshold.csv", "error_bins.csv", "forgetting.csv")
# Snakemake benchmark files by stage: (label, globs under results/benchmarks). A file counts
# for the first stage that matches it (the mixed-physics statistics sit under pretrain/).
STAGES = (
    ("data generation and checks", ("data/**/*.tsv", "pretrain/*/stats.tsv")),
    ("pre-training", ("pretrain/*/*.tsv",)),
    *((m.activity, (f"{mode_root(m)}/**/train.tsv",)) for m in MODES.values() if m.trains),
    ("evaluation", ("runs/**/evaluate.tsv",)),
    ("gallery predictions", ("runs/**/predict.tsv",)),
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
    study: Study,
    summary: pd.DataFrame,
    efficiency: pd.DataFrame,
    benchmarks: Path | None,
    fits: pd.DataFrame | None = None,
    bins: pd.DataFrame | None = None,
    forgetting: pd.DataFrame | None = None,
) -> str:
    """tables.md: every section, in the order the study's questions are asked."""
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
        forgetting_section(study, forgetting) if forgetting is not None else "",
        bins_section(study, bins) if bins is not None else "",
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
    fits = read_csv(tables / "scaling_fits.csv")
    present = [name for name in OPTIONAL_TABLES if (tables / name).is_file()]
    optional = {name: read_csv(tables / name) for name in present}
    bins, forgetting = optional.get("error_bins.csv"), optional.get("forgetting.csv")
    text = render_tables(study, summary, efficiency, benchmarks, fits, bins, forgetting)
    for name in (*TABLES, *present):
        _copy(tables / name, out / "tables" / name)
    for figure in figures:
        _copy(figure, out / "figures" / figure.relative_to(plots))
    _copy(Path(args.study), out / "study.json")
    with atomic_path(out / "tables.md") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    print(f"published {len(TABLES) + len(present)} tables and {len(figures)} figures to {out}")
    return 0
