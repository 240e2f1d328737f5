"""``pdetransfer train``: pre-training, fine-tuning (``--init``) and training from scratch.

The recipe is the study's: Adam, a cosine learning-rate schedule over the run's horizon,
``--loss`` (default ``sse``, the per-sample sum of squared errors averaged over the batch;
:mod:`pdetransfer.engine.losses`), batch = min(B, N), and the weights of the best validation
check are the result. How long a run trains (fixed budget or plateau rule with a cap), when it
validates and how the learning rate decays are in :mod:`pdetransfer.engine.training.schedule`; what one
run knows about itself (best check, divergence, log rows) in :mod:`pdetransfer.engine.training.member`;
its files in :mod:`pdetransfer.engine.training.run_files`. ``--min-steps`` raises the fixed budget's
epochs so that tiny downstream sets (N = 8 is one step per epoch) still get a meaningful number
of updates, and is the earliest step a plateau stop may happen.

A run whose loss or validation error becomes non-finite or explodes has *diverged*: that is an
outcome of its learning rate, not an error, so it ends with exit status 0, ``status:
"diverged"`` in ``train.json`` and a flagged ``model.pt``. Non-finite input data is an error.

Restartability is built in because SLURM kills jobs at their time limit: the full training
state is written atomically at every validation check (and every ``--checkpoint-every`` steps)
and when SIGTERM, SIGUSR1 or SIGURG arrives or the SLURM time limit nears
(:mod:`pdetransfer.engine.runtime.deadline`), after which the process exits with 128 + signal number so
that Snakemake/SLURM retry it. Re-running the same command resumes and says from where; an
unreadable ``state.pt`` is reported and the run starts over. Since the data order of an epoch is
a function of (seed, epoch) and the optimiser, scheduler and RNG states are restored, the
resumed run ends with bit-identical weights to an uninterrupted one on the same hardware. A run
whose ``model.pt`` exists with the same configuration is not retrained.

One call trains the K members of a cell (``--lr A B ... --seed 0 1 ...`` with
``--out-pattern``) in one process, as one batched ensemble where that pays
(:mod:`pdetransfer.engine.training.cell`); a single run is the case K = 1 of the same loop
(:mod:`pdetransfer.engine.training.loop`). Every member writes the files of its separate run.

Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel: each process takes every
``WORLD_SIZE``-th sample of the global batch, whose size stays ``--batch-size``; the loss is
scaled so that DDP's gradient average equals the one-process gradient. Only rank 0 writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pdetransfer import __version__
from pdetransfer.engine.checkpoints import check_grid, load_checkpoint
from pdetransfer.engine.fields import FieldSet, load_fields, read_infos
from pdetransfer.engine.models.fno import FNO
from pdetransfer.engine.models.fno_ensemble import EnsembleFNO
from pdetransfer.engine.models.normalization import Normalization, NormalizedOperator
from pdetransfer.engine.runtime.allocator import retain_freed_memory
from pdetransfer.engine.runtime.deadline import alarm_before_time_limit
from pdetransfer.engine.runtime.processes import Processes, StopSignals, start_processes
from pdetransfer.engine.training.cell import MemberSpec, member_config, member_specs, packs
from pdetransfer.engine.training.ensemble_adam import EnsembleAdam
from pdetransfer.engine.training.loop import LoopState, Member, Trainer
from pdetransfer.engine.training.member import MemberState
from pdetransfer.engine.training.plan import (
    Plan,
    checkpoint_header,
    normalization_from_data,
    resolve_plan,
)
from pdetransfer.engine.training.run_files import (
    finished_config,
    finite_or_none,
    read_state,
    reemit,
    say,
    write_outputs,
)
from pdetransfer.engine.training.schedule import work_share
from pdetransfer.errors import UserError


def train_command(args: argparse.Namespace, after_step: Callable[[int], None] | None = None) -> int:
    """Run ``pdetransfer train``; returns the exit status (128 + signal when interrupted).

    ``after_step`` is called with the step count after every optimiser step; tests use it to
    deliver a signal at an exact step.
    """
    specs = member_specs(args)
    _check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    procs = start_processes(args.device)
    try:
        if procs.world > 1 and len(specs) > 1:
            raise UserError(
                "data-parallel training (WORLD_SIZE > 1) takes one --lr and one --seed; "
                "several members train in one process"
            )
        if len(specs) > 1:
            retain_freed_memory()
        status = _train(args, specs, procs, after_step)
        if procs.world > 1:
            # Leave together: a rank that tears gloo down while rank 0 still writes the outputs
            # can abort at exit ("terminate called without an active exception", seen once in
            # CI). If rank 0 fails instead, torchrun stops the rank waiting here.
            dist.barrier()
        return status
    finally:
        if procs.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _check_arguments(args: argparse.Namespace) -> None:
    def at_least_one(flag: str, value: int | None) -> tuple[bool, str]:
        return value is None or value >= 1, f"{flag} must be at least 1, got {value}"

    checks_ = [
        at_least_one("--epochs", args.epochs),
        at_least_one("--batch-size", args.batch_size),
        (args.min_steps >= 0, f"--min-steps must not be negative, got {args.min_steps}"),
        at_least_one("--n-train", args.n_train),
        at_least_one("--threads", args.threads),
        at_least_one("--patience", args.patience),
        at_least_one("--max-steps", args.max_steps),
        at_least_one("--val-every", args.val_every),
        at_least_one("--min-val-checks", args.min_val_checks),
        (0 < args.val_share < 1, f"--val-share must lie between 0 and 1, got {args.val_share}"),
        (args.checkpoint_every >= 0, "--checkpoint-every must not be negative"),
        (
            not (args.init and args.stats),
            "--stats cannot be combined with --init: a fine-tune reuses the pre-trained checkpoint's normalisation",
        ),
    ]
    for ok, message in checks_:
        if not ok:
            raise UserError(message)


def _train(
    args: argparse.Namespace,
    specs: list[MemberSpec],
    procs: Processes,
    after_step: Callable[[int], None] | None,
) -> int:
    data_infos = read_infos(args.data, "train")
    val_infos = read_infos(args.val, "val")
    grid = int(data_infos[0].grid)
    if int(val_infos[0].grid) != grid:
        raise UserError(
            f"validation file {val_infos[0].path} has grid {val_infos[0].grid}, "
            f"the training data {grid}"
        )
    init = load_checkpoint(args.init, "model") if args.init else None
    if init is not None:
        check_grid(init, args.init, grid)
        if init.get("status") == "diverged":
            raise UserError(
                f"--init {args.init} is a diverged run ({init['divergence']['reason']}); "
                "pre-train it again with a lower learning rate"
            )
    base = specs[0].args(args)
    plan = resolve_plan(base, procs, data_infos, val_infos, grid, init)
    todo = [entry for spec in specs if (entry := _to_train(spec, plan, procs)) is not None]
    if not todo:
        return 0

    resumed = [(spec, state) for spec, state in todo if state is not None]
    if resumed:  # every member of one call shares the cell's normalisation
        spec, state = resumed[0]
        normalization = Normalization.from_stats(state["normalization"], str(spec.out / "state.pt"))
    elif init is not None:
        normalization = Normalization.from_stats(init["normalization"], str(args.init))
    else:
        normalization = normalization_from_data(base)
    train_sets = {s.seed: load_fields(data_infos, plan.n_train, s.seed) for s, _ in todo}
    val_set = load_fields(val_infos)
    positions = [0 if state is None else int(state["progress"]["step"]) for _, state in todo]
    gpu = procs.device.type == "cuda"
    for group in packs(positions, plan.batch_size, grid, plan.spec.width, gpu):
        entries = [todo[k] for k in group]
        pack = _Pack(args, procs, plan, grid, normalization, train_sets, val_set)
        status = pack.train(entries, init, after_step)
        if status:
            return status
    return 0


def _to_train(
    spec: MemberSpec, plan: Plan, procs: Processes
) -> tuple[MemberSpec, dict[str, Any] | None] | None:
    """None for a finished member (its outputs re-emitted if needed), else its resume state."""
    config = member_config(plan.config, spec)
    model_path, state_path = spec.out / "model.pt", spec.out / "state.pt"
    if model_path.exists():
        _require_same_run(load_checkpoint(model_path, "model")["config"], config, model_path)
        if procs.main:
            say(f"{model_path} exists: this run has already finished")
        return None
    finished = finished_config(spec.out)
    if finished == config:
        if procs.main:
            reemit(spec.out)
            say(f"{spec.out} had finished (final.pt): re-emitted its model.pt and train.json")
        return None
    if finished is not None and procs.main:
        say(f"{spec.out / 'final.pt'} is of another configuration; training this run anew")
    state = read_state(state_path, procs.main)
    if state is not None:
        _require_same_run(state["config"], config, state_path)
    return spec, state


class _Pack:
    """Builds one pack's ensemble and optimiser from fresh or saved members, trains it, and
    writes each member's outputs when it stops."""

    def __init__(
        self,
        args: argparse.Namespace,
        procs: Processes,
        plan: Plan,
        grid: int,
        normalization: Normalization,
        train_sets: dict[int, FieldSet],
        val_set: FieldSet,
    ) -> None:
        self.args, self.procs, self.plan, self.grid = args, procs, plan, grid
        self.normalization = normalization
        self.train_sets, self.val_set = train_sets, val_set

    def train(
        self,
        entries: list[tuple[MemberSpec, dict[str, Any] | None]],
        init: dict[str, Any] | None,
        after_step: Callable[[int], None] | None,
    ) -> int:
        args, plan, procs = self.args, self.plan, self.procs
        networks = []
        for spec, _ in entries:
            torch.manual_seed(spec.seed)  # a separate run's initialisation, member by member
            network = FNO(plan.spec)
            if init is not None:
                network.load_state_dict(init["weights"])
            networks.append(network)
        ensemble = EnsembleFNO(networks)
        operator = NormalizedOperator(ensemble, self.normalization).to(procs.device)
        optimizer = EnsembleAdam(
            ensemble.parameters(), [s.lr for s, _ in entries], [plan.budget.horizon] * len(entries)
        )
        loop, members = LoopState(), []
        for k, (spec, state) in enumerate(entries):
            member_plan = dataclasses.replace(plan, config=member_config(plan.config, spec))
            train_set = self.train_sets[spec.seed]
            header = checkpoint_header(
                spec.args(args), member_plan, self.grid, self.normalization, train_set, self.val_set
            )
            member = MemberState(spec.seed, spec.lr, args.loss)
            if state is not None:
                ensemble.load_member(k, state["weights"])
                optimizer.load_member_state(k, state["optimizer"], state["scheduler"])
                member = MemberState.from_state(state["member"], state.get("best_weights"))
                p = state["progress"]
                loop = LoopState(
                    int(p["epoch"]), int(p["batch"]), int(p["step"]), float(p["seconds"])
                )
                torch.set_rng_state(state["rng"]["torch"])
                if torch.cuda.is_available() and state["rng"].get("cuda"):
                    torch.cuda.set_rng_state_all(state["rng"]["cuda"])
                if procs.main:
                    say(
                        f"resumed from step {loop.step} of {plan.budget.horizon}, saved at "
                        f"{state['created']} in {spec.out / 'state.pt'}"
                    )
            members.append(Member(member, spec.out, header, train_set))
        trainer = Trainer(args, procs, plan, operator, optimizer, members, self.val_set)

        def finish(k: int, at: LoopState) -> None:
            spec = entries[k][0]
            _finish(spec.args(args), plan, at, members[k], trainer, k, len(entries))

        with StopSignals() as stop, alarm_before_time_limit(self.procs.main):
            return trainer.run(loop, stop, finish, after_step)


def _require_same_run(old: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    """Refuse to resume or skip a run whose existing files describe a different run."""
    for key in new:
        if old.get(key) != new[key]:
            raise UserError(
                f"{path} belongs to a different run ({key}: {_short(old.get(key))} there, "
                f"{_short(new[key])} now); use another --out or delete {path}"
            )


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _finish(
    args: argparse.Namespace,
    plan: Plan,
    loop: LoopState,
    slot: Member,
    trainer: Trainer,
    k: int,
    pack_size: int,
) -> None:
    """Write member ``k``'s outputs (see :mod:`pdetransfer.engine.training.run_files`) and say how it
    ended."""
    budget, spe = plan.budget, plan.steps_per_epoch
    member, header, out, train_set = slot.state, slot.header, slot.out, slot.train_set
    seconds = trainer.seconds(loop)
    steps = member.steps
    best_step = member.best_step
    weights = member.best_weights
    weights_from = "best_check"
    if weights is None:
        weights, weights_from = trainer.network.member_state_dict(k), "last_step"
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
        "loss": args.loss,
        "final_train_loss": finite_or_none(
            member.history[-1]["train_loss"] if member.history else None
        ),
    }
    training = {
        "lr": args.lr,
        "epochs": args.epochs,
        "batch_size": plan.batch_size,
        "min_steps": args.min_steps,
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
        "modes": plan.spec.modes,
        "width": plan.spec.width,
        "parameters": plan.spec.parameters,
        "n_train": plan.n_train,
        "lr": args.lr,
        "epochs": args.epochs,
        "batch_size": plan.batch_size,
        "min_steps": args.min_steps,
        "seed": args.seed,
        **outcome,
        "weights_from": weights_from,
        "train_seconds": seconds,
        "init": os.fspath(args.init) if args.init else None,
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
            f"diverged: {member.divergence['reason']} (lr {args.lr:g}); model.pt keeps {kept}, "
            f"flagged as diverged; wrote {out / 'model.pt'}"
        )
        return
    say(
        f"trained {steps} steps ({steps / spe:.4g} epochs, stopped by {member.stop_reason}) in "
        f"{seconds:.1f} s; best validation rel-L2 {member.best_val:.4g} at step {best_step} "
        f"of {len(member.history)} checks; wrote {out / 'model.pt'}"
    )
