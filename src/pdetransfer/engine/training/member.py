"""What one training run (one member of a cell) knows about itself, apart from the shared loop.

A member is one (learning rate, seed) of a cell. Everything specific to it lives here: its
seed and learning rate, its best validation check and weights, its first loss and validation
error (the references of the divergence criteria), its log rows, the training loss summed since
its last check, why it stopped and whether it diverged. The loop that feeds it batches, the
budget and the validation schedule are shared (:mod:`pdetransfer.engine.training.schedule`), so that
several members can later be trained by one loop; the plateau counter is derived (steps since
``best_step``), so nothing here depends on how often the loop validates.

**Divergence is an outcome.** A member diverges when its training loss is not finite (the step
is not taken) or exceeds :data:`pdetransfer.engine.losses.EXPLOSION` times its first value, or
when a validation error is not finite or exceeds :data:`VAL_EXPLOSION` times the first check's.
Adam runs that blow up pass those bounds within a few steps and do not come back, while a
recovering run's error never grows 1000-fold in amplitude. The member then stops with status
``diverged``; its best weights before the divergence (if it had a check) are its result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from pdetransfer.engine.losses import EXPLOSION

#: How many times its first check's error a validation error may reach before divergence.
VAL_EXPLOSION = 1e3


@dataclass
class MemberState:
    """One run's own state; :meth:`to_state` / :meth:`from_state` carry it through state.pt."""

    seed: int
    lr: float
    loss: str
    steps: int = 0  # optimiser steps this member has taken
    best_step: int | None = None
    best_val: float = math.inf
    best_weights: dict[str, torch.Tensor] | None = None
    first_loss: float | None = None
    first_val: float | None = None
    window_loss: float = 0.0  # per-sample losses summed since the last check, all processes
    window_samples: int = 0
    stop_reason: str | None = None  # "plateau", "cap", "budget" or "diverged" once stopped
    divergence: dict[str, Any] | None = None  # {"step": s, "reason": "..."}
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    def check_loss(self, step: int, loss_sum: float, samples: int) -> bool:
        """Screen the global batch loss of step ``step`` before it is taken; True if diverged."""
        value = loss_sum / samples
        if not math.isfinite(value):
            self.diverge(step, f"the training loss became non-finite at step {step}")
        elif self.first_loss is None:
            self.first_loss = value
        elif self.first_loss > 0 and value > EXPLOSION[self.loss] * self.first_loss:
            self.diverge(
                step,
                f"the training loss reached {value:.3g} at step {step}, over "
                f"{EXPLOSION[self.loss]:g} times its first value {self.first_loss:.3g}",
            )
        return self.diverged

    def took_step(self, loss_sum: float, samples: int) -> None:
        """Count an optimiser step and its loss towards the next log row."""
        self.steps += 1
        self.window_loss += loss_sum
        self.window_samples += samples

    def record_check(self, row: dict[str, float]) -> bool:
        """Log a validation check (``row`` has step, epoch, lr, val_rel_l2, seconds).

        Returns whether it is the best check so far (the caller keeps its weights). A
        non-finite or exploded validation error makes the member diverge instead.
        """
        step, val = int(row["step"]), float(row["val_rel_l2"])
        train_loss = self.window_loss / self.window_samples if self.window_samples else math.nan
        self.history.append({**row, "train_loss": train_loss})
        self.window_loss, self.window_samples = 0.0, 0
        if not math.isfinite(val):
            self.diverge(step, f"the validation error became non-finite at step {step}")
            return False
        if self.first_val is None:
            self.first_val = val
        elif val > VAL_EXPLOSION * self.first_val:
            self.diverge(
                step,
                f"the validation error reached {val:.3g} at step {step}, over "
                f"{VAL_EXPLOSION:g} times its first check's {self.first_val:.3g}",
            )
            return False
        if val < self.best_val:
            self.best_val, self.best_step = val, step
            return True
        return False

    def diverge(self, step: int, reason: str) -> None:
        self.divergence = {"step": step, "reason": reason}
        self.stop_reason = "diverged"

    def to_state(self) -> dict[str, Any]:
        """Everything but ``best_weights`` as plain data (the weights are stored beside it)."""
        return {
            "seed": self.seed,
            "lr": self.lr,
            "loss": self.loss,
            "steps": self.steps,
            "best_step": self.best_step,
            "best_val": None if self.best_step is None else self.best_val,
            "first_loss": self.first_loss,
            "first_val": self.first_val,
            "window_loss": self.window_loss,
            "window_samples": self.window_samples,
            "stop_reason": self.stop_reason,
            "divergence": self.divergence,
            "history": self.history,
        }

    @classmethod
    def from_state(
        cls, data: dict[str, Any], best_weights: dict[str, torch.Tensor] | None
    ) -> MemberState:
        best_val = data["best_val"]
        return cls(
            seed=int(data["seed"]),
            lr=float(data["lr"]),
            loss=str(data["loss"]),
            steps=int(data["steps"]),
            best_step=data["best_step"],
            best_val=math.inf if best_val is None else float(best_val),
            best_weights=best_weights,
            first_loss=data["first_loss"],
            first_val=data["first_val"],
            window_loss=float(data["window_loss"]),
            window_samples=int(data["window_samples"]),
            stop_reason=data["stop_reason"],
            divergence=data["divergence"],
            history=list(data["history"]),
        )
