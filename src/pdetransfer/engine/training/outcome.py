"""What a finished member records: the outcome and recipe in ``train.json`` and ``model.pt``.

Called by the loop as soon as a member stops (plateau, cap, budget or divergence), so a pack's
members are written one by one; the keys are described in
:mod:`pdetransfer.engine.training.run_files`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch

from pdetransfer import __version__
from pdetransfer.engine.training.config import MemberSpec, TrainConfig
from pdetransfer.engine.training.loop import LoopState, Member, Trainer
from pdetransfer.engine.training.plan import Plan
from pdetransfer.engine.training.run_files import finite_or_none, say, write_outputs
from pdetransfer.engine.training.schedule import work_share


def write_member_outputs(
    config: TrainConfig,
    spec: MemberSpec,
    plan: Plan,
    loop: LoopState,
    slot: Member,
    trainer: Trainer,
    k: int,
    pack_size: int,
    export: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> None:
    """Write member ``k``'s outputs (see :mod:`pdetransfer.engine.training.run_files`) and say
    how it ended; ``export`` turns the trained network's weights into the plain network's
    (:meth:`pdetransfer.engine.models.trainable.Trainable.export`)."""
    budget, spe = plan.budget, plan.steps_per_epoch
    member, header, out, train_set = slot.state, slot.header, slot.out, slot.train_set
    seconds = trainer.seconds(loop)
    steps = member.steps
    best_step = member.best_step
    weights = member.best_weights
    weights_from = "best_check"
    if weights is None:
        weights, weights_from = trainer.member_weights(k), "last_step"
    weights = export(weights)
    outcome = {
        "status": "diverged" if member.diverged else "completed",
        "stop_reason": member.stop_reason,
        "steps": steps,
        "max_steps": budget.horizon,
        "epochs_run": math.ceil(steps / spe),
        "steps_per_epoch": spe,
        "best_step": best_step,
        "best_epoch": None if best_step is None else math.ceil(best_step / spe),
        "best_val_rel_l2": finite_or_none(member.best_val) if best_step is not None else None,
        "val_every": budget.val_every,
        "val_checks": len(member.history),
        "val_share": work_share(steps, plan.batch_size, plan.val_samples, len(member.history)),
        "patience": budget.patience,
        "still_improving": budget.still_improving(steps, best_step, str(member.stop_reason)),
        "diverged_at_step": member.divergence["step"] if member.divergence else None,
        "divergence": member.divergence["reason"] if member.divergence else None,
        "loss": config.loss,
        "final_train_loss": finite_or_none(
            member.history[-1]["train_loss"] if member.history else None
        ),
    }
    training = {
        "lr": spec.lr,
        "epochs": config.epochs,
        "batch_size": plan.batch_size,
        "min_steps": config.min_steps,
        **outcome,
        "weights_from": weights_from,
        "train_seconds": seconds,
        "world_size": trainer.procs.world,
        "device": str(trainer.procs.device),
        "bf16": trainer.bf16,
        "packed": pack_size > 1,
        "pack_size": pack_size,
    }
    summary = {
        "model": plan.spec.name,
        "architecture": plan.spec.architecture,
        "modes": plan.spec.modes,
        "width": plan.spec.width,
        "parameters": plan.spec.parameters,
        "trainable": config.trainable.rule,
        "trainable_parameters": plan.trainable_parameters,
        "n_train": plan.n_train,
        "lr": spec.lr,
        "epochs": config.epochs,
        "batch_size": plan.batch_size,
        "min_steps": config.min_steps,
        "seed": spec.seed,
        **outcome,
        "weights_from": weights_from,
        "train_seconds": seconds,
        "init": os.fspath(config.init) if config.init else None,
        "data": train_set.files,
        "val": header["trained_on"]["val"],
        "world_size": training["world_size"],
        "device": training["device"],
        "bf16": training["bf16"],
        "packed": training["packed"],
        "pack_size": pack_size,
        "pdetransfer_version": __version__,
        "torch_version": str(torch.__version__),
    }
    write_outputs(out, header, summary, training, weights, member.history, member.divergence)
    if member.diverged:
        kept = f"the best check's weights (step {best_step})" if best_step else "its last weights"
        say(
            f"diverged: {member.divergence['reason']} (lr {spec.lr:g}); model.pt keeps {kept}, "
            f"flagged as diverged; wrote {out / 'model.pt'}"
        )
        return
    say(
        f"trained {steps} steps ({steps / spe:.4g} epochs, stopped by {member.stop_reason}) in "
        f"{seconds:.1f} s; best validation rel-L2 {member.best_val:.4g} at step {best_step} "
        f"of {len(member.history)} checks; wrote {out / 'model.pt'}"
    )
