"""How long a run trains, when it validates, and its learning-rate schedule.

**Budget.** A run has a *horizon* of ``H`` optimiser steps: ``--max-steps`` if given, else the
fixed budget of ``--epochs`` (raised by ``--min-steps`` to whole epochs). Without
``--patience`` it trains exactly ``H`` steps (stop reason ``budget``). With ``--patience P``
the horizon is a cap: the run stops at the first validation check at least ``--min-steps``
into training whose best check lies ``P`` or more steps back (``plateau``), or at ``H``
(``cap``).

**Learning rate.** The cosine schedule decays from ``--lr`` to 0 over the horizon ``H``, also
under a plateau rule. A schedule that depended on when the plateau is reached would need to
know the future; one over the cap keeps every step's learning rate a function of the step
alone, so a run stopped by the plateau is exactly the prefix of the same run with a larger
patience, and fine-tune and scratch runs of one cell follow the same curve. The price is that a
plateau stop ends before the learning rate reaches 0; the validation check that stops it is
still the best weights seen, which is what the run returns.

**Validation schedule.** Validating every epoch costs ``V`` forward passes (V validation
samples) per ``ceil(N/B)`` steps of ``~3B`` forward-pass units each (forward + backward), which
at N = 8 is most of the run's work. Instead the run validates every ``K`` steps and at its last
step. ``K`` is the smallest interval whose validation work stays within a share ``s`` (default
10%) of the run's forward+backward work, ``checks * V <= s * (3 B H + checks * V)``, so the
budget buys as many checks as it allows (finer best-checkpoint selection and plateau timing),
but not more often than once per epoch: at large N an epoch is many steps and validating once
per epoch already costs less than ``s`` (4% at N = 1024 in the reproduce study), so the schedule
is never more expensive than the old protocol. And never fewer than ``min_checks`` (default
10) checks per run: ten checks are the fewest that still place the best checkpoint within a
tenth of the run and leave a plateau rule several checks per patience window. When a run is too
short for both, the minimum number of checks wins and the share recorded in ``train.json`` says
what it cost. Since checks are evenly spaced in steps, a plateau stop keeps the same share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Default bound on validation's share of a run's forward+backward work.
VAL_SHARE = 0.1
#: Default minimum number of validation checks per run.
MIN_CHECKS = 10
#: Forward-pass units of one training sample: forward + backward ~ 3 forward passes.
TRAIN_UNITS = 3


def checks(horizon: int, val_every: int) -> int:
    """Validation checks of a run of ``horizon`` steps: every ``val_every``-th step and the last."""
    return horizon // val_every + (1 if horizon % val_every else 0)


def validation_share(horizon: int, batch: int, val_samples: int, val_every: int) -> float:
    """Validation's share of a run's forward+backward work, counted in forward-pass units."""
    return work_share(horizon, batch, val_samples, checks(horizon, val_every))


def work_share(steps: int, batch: int, val_samples: int, n_checks: int) -> float:
    """Validation's share of the work of ``steps`` training steps and ``n_checks`` checks."""
    val = n_checks * val_samples
    total = TRAIN_UNITS * batch * steps + val
    return val / total if total else 0.0


def choose_val_every(
    horizon: int,
    batch: int,
    val_samples: int,
    share: float = VAL_SHARE,
    min_checks: int = MIN_CHECKS,
    steps_per_epoch: int = 1,
) -> int:
    """The validation interval ``K`` described in the module docstring."""
    if not 0 < share < 1:
        raise ValueError(f"share must lie in (0, 1), got {share}")
    most = max(1, horizon // min_checks)  # the largest K that still gives min_checks checks
    # The share falls as K grows, so the smallest K within the bound is found by bisection.
    lo, hi = min(steps_per_epoch, most), most
    if validation_share(horizon, batch, val_samples, hi) > share:
        return most
    while lo < hi:
        mid = (lo + hi) // 2
        if validation_share(horizon, batch, val_samples, mid) <= share:
            hi = mid
        else:
            lo = mid + 1
    return lo


def cosine_factor(step: int, horizon: int) -> float:
    """Learning-rate multiplier after ``step`` steps of a cosine decay to 0 over ``horizon``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, horizon) / horizon))


@dataclass(frozen=True)
class Budget:
    """The stop rule and validation schedule of one run (shared by every member of a cell)."""

    horizon: int  # steps of the fixed budget, or the cap under a plateau rule
    val_every: int
    patience: int | None  # None: fixed budget
    min_steps: int  # no plateau stop before this step

    def is_check(self, step: int) -> bool:
        """Whether the run validates after optimiser step ``step``."""
        return step % self.val_every == 0 or step == self.horizon

    @property
    def end_reason(self) -> str:
        """Why a run that reaches the horizon stopped."""
        return "budget" if self.patience is None else "cap"

    def plateaued(self, step: int, best_step: int | None) -> bool:
        """Whether a run at check ``step`` whose best check was ``best_step`` stops now."""
        if self.patience is None or best_step is None or step < self.min_steps:
            return False
        return step - best_step >= self.patience

    def still_improving(self, steps: int, best_step: int | None, stop_reason: str) -> bool:
        """Whether a run that ran out of budget was still improving when it stopped.

        With a plateau rule: it stopped at the cap with its best check fewer than ``patience``
        steps before the end (the plateau rule had not fired). Without one: its best check lies
        within the last ``max(val_every, 10% of steps)`` steps. Runs stopped by the plateau or
        by divergence are not.
        """
        if stop_reason not in ("cap", "budget") or best_step is None:
            return False
        window = self.patience
        if window is None:
            window = max(self.val_every, math.ceil(0.1 * steps))
        return steps - best_step < window


#: Keys of a ``training`` config section that become ``pdetransfer train`` flags.
RECIPE_FLAGS = {
    "epochs": "--epochs",
    "min_steps": "--min-steps",
    "max_steps": "--max-steps",
    "patience": "--patience",
    "batch_size": "--batch-size",
    "loss": "--loss",
}


def recipe_flags(recipe: dict[str, object]) -> str:
    """The ``pdetransfer train`` flags of a config's training section (unset keys left out).

    The fine-tune and scratch rules both call this on ``training.downstream``, so the two
    modes of a cell get the same budget, plateau rule and loss by construction.
    """
    return " ".join(
        f"{flag} {recipe[key]}" for key, flag in RECIPE_FLAGS.items() if recipe.get(key) is not None
    )
