"""A training run's resolved recipe: model, sizes, budget and schedule, and its identity.

The ``identity`` of a plan is what determines a run's result (stored in checkpoints as their
``config``); a rerun of ``train`` compares it with the one in ``model.pt``/``state.pt`` to
decide between "already finished", "resume" and "a different run is in the way". It holds the
*resolved* validation interval, so ``--val-every K`` given explicitly and the same ``K``
chosen automatically are the same run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from pdetransfer import __version__
from pdetransfer.data.stats import compute_stats, load_stats
from pdetransfer.engine.checkpoints import FORMAT, FORMAT_VERSION, sha256_file
from pdetransfer.engine.fields import FieldSet, file_identity
from pdetransfer.engine.models.build import build_model
from pdetransfer.engine.models.normalization import CHANNELS, Normalization
from pdetransfer.engine.models.registry import ModelSpec, resolution_problem
from pdetransfer.engine.models.trainable import count_trainable
from pdetransfer.engine.runtime.processes import Processes
from pdetransfer.engine.training.config import MemberSpec, TrainConfig
from pdetransfer.engine.training.schedule import Budget, choose_val_every
from pdetransfer.errors import UserError


@dataclass
class Plan:
    """The resolved recipe of one run: sizes, budget, schedule and what identifies it."""

    spec: ModelSpec
    trainable_parameters: int  # of the network as its rule prepares it
    n_train: int
    batch_size: int
    steps_per_epoch: int
    val_samples: int
    budget: Budget
    identity: dict[str, Any]


def resolve_plan(
    config: TrainConfig,
    procs: Processes,
    data_infos: list[Any],
    val_infos: list[Any],
    grid: int,
    init: dict[str, Any] | None,
) -> Plan:
    """Resolve the model, sizes, budget and schedule, and the configuration that names the run.

    The identity holds the first member's learning rate and seed; each member's own are put
    in by :func:`pdetransfer.engine.training.cell.member_config`.
    """
    spec = config.model
    if init is not None:
        pre = ModelSpec.from_dict(init["model"])
        if pre.architecture != spec.architecture:
            raise UserError(
                f"--architecture {spec.architecture} but {config.init} holds a model of "
                f"architecture {pre.architecture}"
            )
        if (pre.modes, pre.width, pre.layers) != (spec.modes, spec.width, spec.layers):
            raise UserError(
                f"--model {spec.name} is (modes {spec.modes}, width {spec.width}) but "
                f"{config.init} holds (modes {pre.modes}, width {pre.width})"
            )
    problem = resolution_problem(spec, grid)
    if problem:
        raise UserError(f"--model {spec.name} {problem}; use a smaller model or a finer grid")
    n_total = sum(int(info.n_samples) for info in data_infos)
    n_train = n_total if config.n_train is None else config.n_train
    if n_train > n_total:
        raise UserError(f"--n-train {n_train} exceeds the {n_total} samples in --data")
    batch = min(config.batch_size, n_train)
    if procs.world > batch:
        raise UserError(f"a batch of {batch} samples cannot be split over {procs.world} processes")
    steps_per_epoch = math.ceil(n_train / batch)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    horizon = config.max_steps or steps_per_epoch * epochs
    val_samples = sum(int(info.n_samples) for info in val_infos)
    val_every = config.val_every or choose_val_every(
        horizon, batch, val_samples, config.val_share, config.min_val_checks, steps_per_epoch
    )
    budget = Budget(horizon, val_every, config.patience, config.min_steps)
    normalization_source: object = "data"
    if config.init:
        normalization_source = "init"
    elif config.stats:
        normalization_source = normalization_from_data(config).to_dict()
    identity = {
        "model": {
            "architecture": spec.architecture,
            "modes": spec.modes,
            "width": spec.width,
            "layers": spec.layers,
        },
        "channels": list(CHANNELS),
        "data": [file_identity(info) for info in data_infos],
        "val": [file_identity(info) for info in val_infos],
        "n_train": n_train,
        "lr": config.members[0].lr,
        "epochs": config.epochs,
        "min_steps": config.min_steps,
        "max_steps": config.max_steps,
        "patience": config.patience,
        "val_every": val_every,
        "loss": config.loss,
        "batch_size": config.batch_size,
        "seed": config.members[0].seed,
        "init": sha256_file(config.init) if config.init else None,
        "normalization": normalization_source,
    }
    rule = config.trainable.identity()
    if rule is not None:  # absent for "all": runs from before the rules keep their identity
        identity["trainable"] = rule
    with torch.device("meta"):  # counted without allocating (or drawing) any weights
        prepared = config.trainable.prepare(build_model(spec))
    trainable = count_trainable(prepared)
    return Plan(spec, trainable, n_train, batch, steps_per_epoch, val_samples, budget, identity)


def normalization_from_data(config: TrainConfig) -> Normalization:
    """Statistics of a from-scratch run: ``--stats``, or computed from the whole train files
    (not just the N-subset: a median over 8 samples would make tiny-N runs noisier)."""
    if config.stats:
        return Normalization.from_stats(load_stats(config.stats), f"--stats {config.stats}")
    return Normalization.from_stats(compute_stats(list(config.data)), "statistics of --data")


def checkpoint_header(
    config: TrainConfig,
    member: MemberSpec,
    plan: Plan,
    grid: int,
    normalization: Normalization,
    train_set: FieldSet,
    val_set: FieldSet,
) -> dict[str, Any]:
    """The self-description shared by ``state.pt`` and ``model.pt``."""
    init = None
    if config.init:
        init = {"path": os.fspath(config.init), "sha256": plan.identity["init"]}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pdetransfer_version": __version__,
        "torch_version": str(torch.__version__),
        "model": plan.spec.to_dict(),
        "channels": list(CHANNELS),
        "grid": grid,
        "normalization": normalization.to_dict(),
        "trained_on": {
            "data": train_set.files,
            "val": [{k: v for k, v in f.items() if k != "used"} for f in val_set.files],
            "n_train": plan.n_train,
            "seed": member.seed,
            "init": init,
        },
        "trainable": {
            "rule": config.trainable.rule,
            "rank": config.trainable.rank,
            "parameters": plan.trainable_parameters,
            "weights": "merged" if config.trainable.rule == "lora" else "trained",
        },
        "config": plan.identity,
    }
