"""Cells that refine themselves (``sweep.refine``): after a cell's runs finish, a round decides
from their own files which runs to add, and how a cell's rate is chosen over everything it ran.

**The choice** (:func:`choose_lr`, for the decisions and for summary.csv alike): the rate with
the lowest mean validation error over its completed seeds, preferring rates with no diverged
seed, over every rate of the cell, the grid's and the added ones. Where a rate has runs at
several step caps, the runs at its longest cap supersede the shorter-cap ones
(:func:`superseded`) for the choice and the tables: a rerun at a longer cap measures the same
rate with the budget no longer deciding its error. Superseded runs stay in runs.csv, marked.

**A round k** (:func:`decide`) reads the cell's ``train.json`` and ``log.csv`` of the grid and
of rounds before k -- validation errors only, never test errors, so the test set stays unseen by
every decision -- and adds at most one group of runs, every seed of the cell:

1. the next rate beyond a *decisive* edge (``lr_at_edge`` ``min``/``max`` by
   :func:`pdetransfer.study.flags.edge_position`, its noise pooled over the cell's own rates;
   a tie adds nothing), one grid step further (the ratio of the edge to its neighbour), at the
   chosen runs' cap, if it lies within ``sweep.refine.lr_bounds``; else
2. a rerun of the chosen rate at twice its runs' cap, if some of them are ``undertrained``
   (:func:`pdetransfer.study.flags.stop_flags`, ``report.undertrained_tolerance``).

The rate comes first: a longer cap is worth paying for only at the rate the cell keeps, and one
group per round keeps one cap per packed job. A round that adds nothing ends the cell's
refinement; there are at most ``sweep.refine.rounds`` rounds. Each decision is a JSON file
(``refine/round<k>.json`` in the cell's directory, :mod:`pdetransfer.layout`) that the workflow's
checkpoint writes and :func:`refinement_rounds` reads back, there and in ``aggregate``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from pdetransfer import __version__
from pdetransfer.atomic import write_json
from pdetransfer.errors import UserError
from pdetransfer.layout import Run, decision_template, format_lr, parse_run
from pdetransfer.study.config import Study
from pdetransfer.study.flags import edge_position, stop_flags
from pdetransfer.study.statistics import pooled_spread

#: Why a round adds runs: the chosen rate is at a decisive edge, or its runs were undertrained.
REASONS = ("edge_min", "edge_max", "undertrained")
#: How much longer a rerun of undertrained runs trains.
CAP_FACTOR = 2


def choose_lr(cell: pd.DataFrame) -> float:
    """The rate with the lowest mean validation error over completed seeds, preferring rates
    with no diverged seed (NaN when every run of the cell diverged)."""
    done = cell[cell["status"] != "diverged"]
    if done.empty:
        return math.nan
    partly = set(cell.loc[cell["status"] == "diverged", "lr"])
    ranking = done.groupby("lr", sort=False)["val_rel_l2"].mean().reset_index()
    ranking["partly_diverged"] = ranking["lr"].isin(partly)
    ranking = ranking.sort_values(["partly_diverged", "val_rel_l2"], na_position="last")
    return float(ranking["lr"].iloc[0])


def superseded(runs: pd.DataFrame, cell: Sequence[str] = ()) -> pd.Series:
    """Per run, whether a run of the same cell (``cell`` columns) and rate trained to a longer
    cap (``max_steps``, the step horizon train.json records). Runs without a rate (zero-shot
    evaluations) are never superseded."""
    if runs.empty or "max_steps" not in runs:
        return pd.Series(False, index=runs.index)
    keys = [*cell, "lr"]
    caps = pd.to_numeric(runs["max_steps"], errors="coerce")
    longest = caps.groupby([runs[k] for k in keys], dropna=False).transform("max")
    return (caps < longest).fillna(False).astype(bool)


@dataclass(frozen=True)
class Addition:
    """A group of runs a round adds to a cell: one rate at one step cap, every seed."""

    lr: str  # as in run paths (:func:`pdetransfer.layout.format_lr`)
    cap: int
    seeds: tuple[int, ...]
    why: str  # one of REASONS

    def runs(self, cell: Run) -> list[Run]:
        """The added runs of a cell (named by any run of it)."""
        return [replace(cell, lr=self.lr, seed=seed, cap=self.cap) for seed in self.seeds]


def decide(
    runs: pd.DataFrame, round_: int, rounds: int, bounds: tuple[float, float]
) -> tuple[Addition | None, str]:
    """What round ``round_`` adds to a cell, and why, from the cell's runs so far (one row per
    run: ``lr``, ``seed``, ``status``, ``val_rel_l2``, ``undertrained``, ``max_steps``)."""
    if round_ > rounds:
        return None, f"rounds exhausted (sweep.refine.rounds = {rounds})"
    current = runs[~superseded(runs)]
    best = choose_lr(current)
    if math.isnan(best):
        return None, "every run diverged"
    done = current[current["status"] != "diverged"]
    val = {lr: group["val_rel_l2"].tolist() for lr, group in done.groupby("lr")}
    grid = sorted(set(current["lr"]))
    edge = edge_position(grid, best, val, pooled_spread(val.values()))
    chosen = done[done["lr"] == best]
    cap = int(chosen["max_steps"].max())
    seeds = tuple(sorted(int(s) for s in set(runs["seed"])))
    held = f"lr {format_lr(best)} chosen (lr_at_edge {edge})"
    beyond = ""
    if edge in ("min", "max"):
        ratio = grid[-1] / grid[-2] if edge == "max" else grid[0] / grid[1]
        text = format_lr(best * ratio)
        if bounds[0] <= float(text) <= bounds[1]:
            why = f"edge_{edge}"
            return Addition(text, cap, seeds, why), f"{held}: beats its neighbour, add lr {text}"
        beyond = f"; lr {text} beyond sweep.refine.lr_bounds {list(bounds)}"
    if chosen["undertrained"].fillna(True).astype(bool).any():
        new = CAP_FACTOR * cap
        return Addition(format_lr(best), new, seeds, "undertrained"), (
            f"{held}{beyond}; its runs were undertrained at cap {cap}: rerun at cap {new}"
        )
    return None, f"{held}{beyond}; nothing to add"


# ---------------------------------------------------------------------------- decision files
def decision_path(cell: Run, round_: int) -> str:
    """A cell's decision file of a round, relative to the results root."""
    fields = {"pretrain": cell.pretrain, "size": cell.size, "downstream": cell.downstream}
    return decision_template(cell.spec).format(**fields, n=cell.n, round=round_)


def read_additions(path: str | Path) -> list[Addition]:
    """The runs a decision file adds (none: the cell's refinement ended)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        return [
            Addition(str(a["lr"]), int(a["cap"]), tuple(int(s) for s in a["seeds"]), a["why"])
            for a in record["add"]
        ]
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run the workflow's refinement first") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(
            f"{path} is not a refinement decision (write it with `pdetransfer refine`)"
        ) from None


def refinement_rounds(
    cell: Run, rounds: int, decision: Callable[[int], str | Path | None]
) -> tuple[list[tuple[Run, int]], list[str]]:
    """The runs refinement added to a cell, each with its round, and the decision files read:
    round after round while the previous one added runs. ``decision(k)`` gives round k's
    file, or None where it is not known yet (the rounds stop there)."""
    added: list[tuple[Run, int]] = []
    files: list[str] = []
    for k in range(1, rounds + 1):
        path = decision(k)
        if path is None:
            break
        files.append(str(path))
        additions = read_additions(path)
        if not additions:
            break
        added += [(run, k) for addition in additions for run in addition.runs(cell)]
    return added, files


def added_runs(study: Study, results: str | Path, partial: bool = False) -> list[tuple[Run, int]]:
    """Every run refinement added to the study's cells, with its round (none without
    ``sweep.refine``). A missing decision ends a cell's rounds with ``partial``; else it is an
    error (the study is not finished)."""
    if study.refine is None:
        return []
    root = Path(results)

    def found(cell: Run) -> Callable[[int], Path | None]:
        def path(k: int) -> Path | None:
            file = root / decision_path(cell, k)
            return None if partial and not file.is_file() else file

        return path

    rounds = int(study.refine["rounds"])
    return [
        pair
        for cell in study.trained_cells()
        for pair in refinement_rounds(cell, rounds, found(cell))[0]
    ]


# ---------------------------------------------------------------------------- the command
def cell_runs(train_files: Sequence[str], results: Path, tolerance: float) -> pd.DataFrame:
    """One row per run of a cell from its ``train.json`` and ``log.csv`` (no test error)."""
    rows = []
    for name in train_files:
        path = Path(name)
        try:
            run = parse_run(path.parent.relative_to(results).as_posix())
        except ValueError:
            raise UserError(f"--train {path} is not below --results {results}") from None
        try:
            train = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path} does not exist: the cell's runs must finish first") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON ({err.msg})") from None
        val = train.get("best_val_rel_l2")
        rows.append(
            {
                "cell": run.cell_directory,
                "lr": float(str(run.lr)),
                "seed": run.seed,
                "status": "diverged" if train.get("status") == "diverged" else "completed",
                "val_rel_l2": math.nan if val is None else float(val),
                "max_steps": train.get("max_steps"),
                **stop_flags(train, path.parent / "log.csv", tolerance),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty or frame["cell"].nunique() != 1:
        raise UserError("--train must name the train.json files of one cell's runs")
    return frame


def refine_command(args: argparse.Namespace) -> int:
    """``pdetransfer refine``: one round's decision for a cell, written atomically as JSON."""
    lo, hi = args.lr_bounds
    runs = cell_runs(args.train, Path(args.results), args.tolerance)
    addition, reason = decide(runs, args.round, args.rounds, (lo, hi))
    current = runs[~superseded(runs)]
    rates = [
        {
            "lr": format_lr(lr),
            "cap": int(group["max_steps"].max()),
            "runs": len(group),
            "diverged": int((group["status"] == "diverged").sum()),
            "val_rel_l2_mean": group["val_rel_l2"].mean(),
            "undertrained": int(group["undertrained"].sum()),
        }
        for lr, group in current.groupby("lr")
    ]
    write_json(
        args.out,
        {
            "cell": runs["cell"].iloc[0],
            "round": args.round,
            "rounds": args.rounds,
            "lr_bounds": [lo, hi],
            "undertrained_tolerance": args.tolerance,
            "seeds": sorted(int(s) for s in set(runs["seed"])),
            "rates": rates,
            "add": [] if addition is None else [asdict(addition)],
            "reason": reason,
            "pdetransfer_version": __version__,
        },
    )
    print(f"refine {runs['cell'].iloc[0]} round {args.round}: {reason}")
    return 0
