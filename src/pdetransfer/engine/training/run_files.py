"""The files of a training run: ``state.pt`` (resume), ``log.csv``, ``train.json``, ``model.pt``.

``train.json`` is what aggregation reads; besides the recipe (model, n_train, lr, batch_size,
epochs, min_steps, seed, init, data, val, versions; ``trainable``, the rule for which
parameters train, and ``trainable_parameters``, how many real numbers it trains) it records
the outcome:

``status``
    ``"completed"`` or ``"diverged"`` (a diverged run is a result, not a failure).
``stop_reason``
    ``"plateau"`` (no validation improvement for ``patience`` steps), ``"cap"`` (reached
    ``max_steps`` under a plateau rule), ``"budget"`` (the fixed epochs/min-steps/max-steps,
    without a plateau rule) or ``"diverged"``.
``steps``, ``max_steps``, ``epochs_run``
    Optimiser steps taken, the horizon (the cap, or the fixed budget) and the epochs begun.
``best_step``, ``best_epoch``, ``best_val_rel_l2``
    The best validation check (null without one); ``best_epoch`` is the epoch it fell in.
``val_every``, ``val_checks``, ``val_share``
    The validation interval, the checks made and validation's share of the forward+backward
    work (counted, see :mod:`pdetransfer.engine.training.schedule`).
``patience``
    The plateau rule's patience in steps (null: fixed budget).
``still_improving``
    Whether the run ran out of budget while still improving: with a plateau rule, it stopped
    at the cap with its best check fewer than ``patience`` steps before its last step (the rule
    had not fired); without one, its best check lies within the last ``max(val_every,
    ceil(10% of steps))`` steps. False for plateau stops and diverged runs
    (:meth:`pdetransfer.engine.training.schedule.Budget.still_improving`).
``diverged_at_step``, ``divergence``
    The step and one-line reason of a divergence (null otherwise).
``loss``
    The training loss (``sse`` or ``rel_l2``).

``packed``, ``pack_size``
    Whether the run was trained as a member of a pack, and how many members the pack had
    (1: trained alone; see :mod:`pdetransfer.engine.training.cell`).

**Evidence of a finished run.** Besides ``model.pt`` a finished run keeps ``final.pt``, a
second name (hard link) of the same file, which holds the ``train.json`` summary and the log
rows too. Snakemake deletes a job's declared outputs before it reruns the job, so when a
learning rate or seed is added to a packed cell, the members that had finished find their
``model.pt`` gone but ``final.pt`` there: :func:`reemit` restores ``model.pt``, ``train.json``
and ``log.csv`` from it instead of training again (costing no disk: one file, two names).

A diverged run's ``model.pt`` has ``status: "diverged"``, its ``divergence`` and holds the
best checked weights before the divergence, or (with no check before it) the weights of the
last step taken: ``training.weights_from`` says which.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pdetransfer.atomic import atomic_path, write_json
from pdetransfer.engine.checkpoints import load_checkpoint, save_checkpoint
from pdetransfer.errors import UserError

LOG_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_rel_l2", "seconds")
#: What a usable state.pt holds beyond the common checkpoint header.
STATE_KEYS = ("config", "weights", "optimizer", "scheduler", "progress", "member", "rng")


def read_state(path: Path, main: bool) -> dict[str, Any] | None:
    """The resume state at ``path``, or None if there is none or it cannot be used.

    A truncated, corrupt or outdated ``state.pt`` is reported in one line and removed (by
    rank 0) so that the run starts over rather than failing on every retry.
    """
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, "state")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)} (written by another version)")
    except UserError as err:
        if main:
            say(f"{err}; starting this run over")
            path.unlink(missing_ok=True)
        return None
    return state


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """Rewrite the CSV log (one row per validation check) atomically from the full history."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{row[k]:.8g}" if isinstance(row[k], float) else row[k]) for k in LOG_COLUMNS}
            )


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a missing or non-finite number is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def write_outputs(
    out: Path,
    header: dict[str, Any],
    summary: dict[str, Any],
    training: dict[str, Any],
    weights: dict[str, Any],
    history: list[dict[str, float]],
    divergence: dict[str, Any] | None,
) -> None:
    """Write log.csv, train.json and finally model.pt (the "finished" marker); drop state.pt."""
    write_log(out / "log.csv", history)
    write_json(out / "train.json", summary)
    model = {
        **header,
        "kind": "model",
        "created": now(),
        "status": summary["status"],
        "divergence": divergence,
        "training": training,
        "weights": weights,
        "summary": summary,
        "history": history,
    }
    save_checkpoint(model, out / "model.pt")
    _second_name(out / "model.pt", out / FINAL)
    (out / "state.pt").unlink(missing_ok=True)


#: The file that survives Snakemake's removal of a job's outputs (see the module docstring).
FINAL = "final.pt"


def finished_config(out: Path) -> dict[str, Any] | None:
    """The configuration of the finished run kept in ``out/final.pt``, or None if unusable."""
    path = out / FINAL
    if not path.exists():
        return None
    try:
        final = load_checkpoint(path, "model")
    except UserError as err:
        say(f"{err}; ignoring it")
        return None
    if "summary" not in final or "history" not in final:
        return None
    return dict(final["config"])


def reemit(out: Path) -> None:
    """Restore ``model.pt``, ``train.json`` and ``log.csv`` of a finished run from ``final.pt``.

    ``model.pt`` becomes a name of ``final.pt`` again and its modification time is renewed,
    so that Snakemake sees a fresh output of the job that re-emitted it.
    """
    final = load_checkpoint(out / FINAL, "model")
    write_log(out / "log.csv", final["history"])
    write_json(out / "train.json", final["summary"])
    _second_name(out / FINAL, out / "model.pt")
    os.utime(out / "model.pt")


def _second_name(existing: Path, name: Path) -> None:
    """Make ``name`` a hard link to ``existing`` (atomically); a copy where links fail."""
    tmp = name.with_name(f".{name.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(existing, tmp)
    except OSError:
        shutil.copyfile(existing, tmp)
    os.replace(tmp, name)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def say(message: str) -> None:
    print(f"pdetransfer train: {message}", file=sys.stderr, flush=True)
