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
from pdetransfer.modes import TRAINING
from pdetransfer.study import compute
from pdetransfer.study.aggregation import load_study, read_csv
from pdetransfer.study.config import Study
from pdetransfer.study.markdown import (
    MISSING,
    format_interval,
    markdown_table,
)
from pdetransfer.study.sample_sections import bins_section, forgetting_section
from pdetransfer.study.sections import (
    efficiency_section,
    error_section,
    learning_rate_section,
    mixed_section,
)
from pdetransfer.study.study_sections import (
    compute_section,
    crossover_section,
    mixed_comparison_section,
    size_section,
)

TABLES = ("runs.csv", "summary.csv", "data_efficiency.csv", "scaling_fits.csv")
COMPUTE = "compute.csv"
#: Tables copied and rendered where the study wrote them.
OPTIONAL_TABLES = (
    "mode_comparison.csv",
    "mode_threshold.csv",
    "error_bins.csv",
    "forgetting.csv",
    "mode_crossover.csv",
    "size_gain.csv",
    "mixed_comparison.csv",
    COMPUTE,
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
    optional tables by file name, where written)."""
    extra = extra or {}
    sections = [
        "# Tables of the study",
        f"Written by `pdetransfer publish` (pdetransfer {__version__}) from the workflow's\n"
        "tables; the CSV files next to this one hold every digit.",
        diagnostics_section(summary),
        efficiency_section(study, efficiency),
        error_section(study, summary),
        mixed_section(study, summary),
        mixed_comparison_section(study, extra.get("mixed_comparison.csv")),
        learning_rate_section(study, summary),
        fits_section(fits) if fits is not None else "",
    ]
    if "forgetting.csv" in extra:
        sections.append(forgetting_section(study, extra["forgetting.csv"]))
    if "error_bins.csv" in extra:
        sections.append(bins_section(study, extra["error_bins.csv"]))
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
