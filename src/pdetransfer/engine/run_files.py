"""The files of a training run: ``state.pt`` (resume), ``log.csv``, ``train.json``, ``model.pt``.

``train.json`` is what aggregation reads; besides the recipe (model, n_train, lr, batch_size,
epochs, min_steps, seed, init, data, val, versions) it records the outcome:

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
    work (counted, see :mod:`pdetransfer.engine.schedule`).
``patience``
    The plateau rule's patience in steps (null: fixed budget).
``still_improving``
    Whether the run ran out of budget while still improving: with a plateau rule, it stopped
    at the cap with its best check fewer than ``patience`` steps before its last step (the rule
    had not fired); without one, its best check lies within the last ``max(val_every,
    ceil(10% of steps))`` steps. False for plateau stops and diverged runs
    (:meth:`pdetransfer.engine.schedule.Budget.still_improving`).
``diverged_at_step``, ``divergence``
    The step and one-line reason of a divergence (null otherwise).
``loss``
    The training loss (``sse`` or ``rel_l2``).

A diverged run's ``model.pt`` has ``status: "diverged"``, its ``divergence`` and holds the
best checked weights before the divergence, or (with no check before it) the weights of the
last step taken: ``training.weights_from`` says which.
"""

from __future__ import annotations

import csv
import math
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
    }
    save_checkpoint(model, out / "model.pt")
    (out / "state.pt").unlink(missing_ok=True)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def say(message: str) -> None:
    print(f"pdetransfer train: {message}", file=sys.stderr, flush=True)
