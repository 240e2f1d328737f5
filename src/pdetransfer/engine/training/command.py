"""``pdetransfer train``: pre-training, fine-tuning (``--init``) and training from scratch.

The recipe is the study's: Adam, a cosine learning-rate schedule over the run's horizon,
``--loss`` (default ``sse``, the per-sample sum of squared errors averaged over the batch;
:mod:`pdetransfer.engine.losses`), batch = min(B, N), and the weights of the best validation
check are the result. How long a run trains (fixed budget or plateau rule with a cap), when it
validates and how the learning rate decays are in :mod:`pdetransfer.engine.training.schedule`;
what one run knows about itself (best check, divergence, log rows) in
:mod:`pdetransfer.engine.training.member`; its files in
:mod:`pdetransfer.engine.training.run_files`. ``--min-steps`` raises the fixed budget's epochs
so that tiny downstream sets (N = 8 is one step per epoch) still get a meaningful number of
updates, and is the earliest step a plateau stop may happen.

A run whose loss or validation error becomes non-finite or explodes has *diverged*: that is an
outcome of its learning rate, not an error, so it ends with exit status 0, ``status:
"diverged"`` in ``train.json`` and a flagged ``model.pt``. Non-finite input data is an error.

Restartability is built in because SLURM kills jobs at their time limit: the full training
state is written atomically at every validation check (and every ``--checkpoint-every`` steps)
and when SIGTERM, SIGUSR1 or SIGURG arrives or the SLURM time limit nears
(:mod:`pdetransfer.engine.runtime.deadline`), after which the process exits with 128 + signal
number so that Snakemake/SLURM retry it. Re-running the same command resumes and says from where; an
unreadable ``state.pt`` is reported and the run starts over. Since the data order of an epoch is
a function of (seed, epoch) and the optimiser, scheduler and RNG states are restored, the
resumed run ends with bit-identical weights to an uninterrupted one on the same hardware. A run
whose ``model.pt`` exists with the same configuration is not retrained.

One call trains the K members of a cell (``--lr A B ... --seed 0 1 ...`` with
``--out-pattern``) in one process, as one batched ensemble where that pays
(:mod:`pdetransfer.engine.training.cell`, :mod:`pdetransfer.engine.training.pack`); a single
run is the case K = 1 of the same loop (:mod:`pdetransfer.engine.training.loop`). Every member
writes the files of its separate run (:mod:`pdetransfer.engine.training.outcome`). The command
line is read once into a :class:`~pdetransfer.engine.training.config.TrainConfig`.

Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel: each process takes every
``WORLD_SIZE``-th sample of the global batch, whose size stays ``--batch-size``; the loss is
scaled so that DDP's gradient average equals the one-process gradient. Only rank 0 writes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pdetransfer.engine.checkpoints import check_grid, load_checkpoint
from pdetransfer.engine.fields import load_fields, read_infos
from pdetransfer.engine.models.normalization import Normalization
from pdetransfer.engine.runtime.allocator import retain_freed_memory
from pdetransfer.engine.runtime.processes import Processes, start_processes
from pdetransfer.engine.training.cell import member_config, packs
from pdetransfer.engine.training.config import MemberSpec, TrainConfig
from pdetransfer.engine.training.pack import Pack
from pdetransfer.engine.training.plan import Plan, normalization_from_data, resolve_plan
from pdetransfer.engine.training.run_files import finished_config, read_state, reemit, say
from pdetransfer.errors import UserError


def train_command(args: argparse.Namespace, after_step: Callable[[int], None] | None = None) -> int:
    """Run ``pdetransfer train``; returns the exit status (128 + signal when interrupted).

    ``after_step`` is called with the step count after every optimiser step; tests use it to
    deliver a signal at an exact step.
    """
    return train(TrainConfig.from_args(args), after_step)


def train(config: TrainConfig, after_step: Callable[[int], None] | None = None) -> int:
    """Train the members of ``config``; the exit status, as :func:`train_command`'s."""
    if config.threads:
        torch.set_num_threads(config.threads)
    procs = start_processes(config.device)
    try:
        if procs.world > 1 and len(config.members) > 1:
            raise UserError(
                "data-parallel training (WORLD_SIZE > 1) takes one --lr and one --seed; "
                "several members train in one process"
            )
        if len(config.members) > 1:
            retain_freed_memory()
        status = _train(config, procs, after_step)
        if procs.world > 1:
            # Leave together: a rank that tears gloo down while rank 0 still writes the outputs
            # can abort at exit ("terminate called without an active exception", seen once in
            # CI). If rank 0 fails instead, torchrun stops the rank waiting here.
            dist.barrier()
        return status
    finally:
        if procs.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, procs: Processes, after_step: Callable[[int], None] | None) -> int:
    data_infos = read_infos(config.data, "train")
    val_infos = read_infos(config.val, "val")
    grid = int(data_infos[0].grid)
    if int(val_infos[0].grid) != grid:
        raise UserError(
            f"validation file {val_infos[0].path} has grid {val_infos[0].grid}, "
            f"the training data {grid}"
        )
    init = load_checkpoint(config.init, "model") if config.init else None
    if init is not None:
        check_grid(init, config.init, grid)
        if init.get("status") == "diverged":
            raise UserError(
                f"--init {config.init} is a diverged run ({init['divergence']['reason']}); "
                "pre-train it again with a lower learning rate"
            )
    plan = resolve_plan(config, procs, data_infos, val_infos, grid, init)
    todo = [entry for spec in config.members if (entry := _to_train(spec, plan, procs)) is not None]
    if not todo:
        return 0

    resumed = [(spec, state) for spec, state in todo if state is not None]
    if resumed:  # every member of one call shares the cell's normalisation
        spec, state = resumed[0]
        normalization = Normalization.from_stats(state["normalization"], str(spec.out / "state.pt"))
    elif init is not None:
        normalization = Normalization.from_stats(init["normalization"], str(config.init))
    else:
        normalization = normalization_from_data(config)
    train_sets = {s.seed: load_fields(data_infos, plan.n_train, s.seed) for s, _ in todo}
    val_set = load_fields(val_infos)
    positions = [0 if state is None else int(state["progress"]["step"]) for _, state in todo]
    gpu = procs.device.type == "cuda"
    wrapped = config.trainable.wraps
    for group in packs(positions, plan.batch_size, grid, plan.spec, gpu, wrapped):
        entries = [todo[k] for k in group]
        pack = Pack(config, procs, plan, grid, normalization, train_sets, val_set)
        status = pack.train(entries, init, after_step)
        if status:
            return status
    return 0


def _to_train(
    spec: MemberSpec, plan: Plan, procs: Processes
) -> tuple[MemberSpec, dict[str, Any] | None] | None:
    """None for a finished member (its outputs re-emitted if needed), else its resume state."""
    identity = member_config(plan.identity, spec)
    model_path, state_path = spec.out / "model.pt", spec.out / "state.pt"
    if model_path.exists():
        _require_same_run(load_checkpoint(model_path, "model")["config"], identity, model_path)
        if procs.main:
            say(f"{model_path} exists: this run has already finished")
        return None
    finished = finished_config(spec.out)
    if finished == identity:
        if procs.main:
            reemit(spec.out)
            say(f"{spec.out} had finished (final.pt): re-emitted its model.pt and train.json")
        return None
    if finished is not None and procs.main:
        say(f"{spec.out / 'final.pt'} is of another configuration; training this run anew")
    state = read_state(state_path, procs.main)
    if state is not None:
        _require_same_run(state["config"], identity, state_path)
    return spec, state


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
