"""``pdetransfer train``: pre-training, fine-tuning (``--init``) and training from scratch.

The recipe is the study's: Adam, a cosine learning-rate schedule over all optimiser steps,
loss = per-sample sum of squared errors averaged over the batch, batch = min(B, N), and the
weights with the best validation relative L2 error are the result. ``--min-steps`` raises the
number of epochs so that tiny downstream sets (N = 8 is one step per epoch) still get a
meaningful number of updates; the steps actually taken are recorded.

Restartability is built in because SLURM kills jobs at their time limit: the full training
state is written atomically every epoch (and every ``--checkpoint-every`` steps) and when
SIGTERM, SIGUSR1 or SIGURG arrives or the SLURM time limit nears (``engine.deadline``), after
which the process exits with 128 + signal number so that Snakemake/SLURM retry it.
Re-running the same command resumes; since the data order of an epoch is a function of
(seed, epoch) and the optimiser, scheduler and RNG states are restored, the resumed run ends
with bit-identical weights to an uninterrupted one on the same hardware.
A run whose ``model.pt`` exists with the same configuration is not retrained.

Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel: each process takes every
``WORLD_SIZE``-th sample of the global batch, whose size stays ``--batch-size``; the loss is
scaled so that DDP's gradient average equals the one-process gradient. Only rank 0 writes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path, write_json
from pdetransfer.data.stats import compute_stats, load_stats
from pdetransfer.engine.checkpoints import (
    FORMAT,
    FORMAT_VERSION,
    check_grid,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
    unwrapped_state,
)
from pdetransfer.engine.deadline import alarm_before_time_limit
from pdetransfer.engine.evaluation import relative_l2_sums, resolve_device
from pdetransfer.engine.models import FNO, ModelSpec, parse_model
from pdetransfer.engine.normalization import CHANNELS, Normalization, NormalizedOperator
from pdetransfer.engine.training_data import (
    FieldSet,
    epoch_order,
    file_identity,
    load_fields,
    read_infos,
)
from pdetransfer.errors import UserError
from pdetransfer.progress import Progress

LOG_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_rel_l2", "seconds")
# SIGURG: the slurm profile's --signal (see engine.deadline); SIGALRM: the deadline alarm.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGURG, signal.SIGALRM)


@dataclass(frozen=True)
class Processes:
    """This process's place among the data-parallel workers (one process: rank 0 of 1)."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    def reduce(self, values: list[float], op: str) -> list[float]:
        """``values`` combined over all processes with ``"sum"`` or ``"max"``."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return tensor.tolist()


def start_processes(device: str) -> Processes:
    """Join the ``torchrun`` process group if there is one (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    where = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if where.type == "cuda":
            torch.cuda.set_device(where)
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
    return Processes(rank, world, where)


class StopSignals:
    """Turn the stop signals into a flag that the loop checks between optimiser steps.

    Stopping at a step boundary (rather than in the handler) is what makes the saved state
    consistent; the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum


@dataclass
class Plan:
    """The resolved recipe of one run: sizes, steps and what identifies it."""

    spec: ModelSpec
    n_train: int
    batch_size: int
    steps_per_epoch: int
    epochs_run: int
    config: dict[str, Any]

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs_run


def train_command(args: argparse.Namespace, after_step: Callable[[int], None] | None = None) -> int:
    """Run ``pdetransfer train``; returns the exit status (128 + signal when interrupted).

    ``after_step`` is called with the step count after every optimiser step; tests use it to
    deliver a signal at an exact step.
    """
    _check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    procs = start_processes(args.device)
    try:
        return _train(args, procs, after_step)
    finally:
        if procs.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _check_arguments(args: argparse.Namespace) -> None:
    checks = [
        (args.lr > 0 and math.isfinite(args.lr), f"--lr must be positive, got {args.lr}"),
        (args.epochs >= 1, f"--epochs must be at least 1, got {args.epochs}"),
        (args.batch_size >= 1, f"--batch-size must be at least 1, got {args.batch_size}"),
        (args.min_steps >= 0, f"--min-steps must not be negative, got {args.min_steps}"),
        (
            args.n_train is None or args.n_train >= 1,
            f"--n-train must be at least 1, got {args.n_train}",
        ),
        (
            args.threads is None or args.threads >= 1,
            f"--threads must be at least 1, got {args.threads}",
        ),
        (args.checkpoint_every >= 0, "--checkpoint-every must not be negative"),
        (
            not (args.init and args.stats),
            "--stats cannot be combined with --init: a fine-tune reuses the pre-trained checkpoint's normalisation",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _train(
    args: argparse.Namespace, procs: Processes, after_step: Callable[[int], None] | None
) -> int:
    out = Path(args.out)
    model_path, state_path = out / "model.pt", out / "state.pt"
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
    plan = _plan(args, procs, data_infos, val_infos, grid, init)

    if model_path.exists():
        _require_same_run(load_checkpoint(model_path, "model")["config"], plan.config, model_path)
        if procs.main:
            _say(f"{model_path} exists: this run has already finished")
        return 0
    state = load_checkpoint(state_path, "state") if state_path.exists() else None
    if state is not None:
        _require_same_run(state["config"], plan.config, state_path)

    if state is not None:
        normalization = Normalization.from_stats(state["normalization"], str(state_path))
    elif init is not None:
        normalization = Normalization.from_stats(init["normalization"], str(args.init))
    else:
        normalization = _normalization_from_data(args)

    train_set = load_fields(data_infos, plan.n_train, args.seed)
    val_set = load_fields(val_infos)

    torch.manual_seed(args.seed)
    network = FNO(plan.spec)
    if init is not None:
        network.load_state_dict(init["weights"])
    operator = NormalizedOperator(network, normalization).to(procs.device)
    optimizer = torch.optim.Adam(operator.parameters(), lr=args.lr)
    total = plan.total_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
    )
    run = RunState()
    if state is not None:
        run.restore(state, network, optimizer, scheduler, procs)
        if procs.main:
            _say(f"resuming from {state_path} at epoch {run.epoch + 1}, step {run.step}")
    trainer = Trainer(args, procs, plan, operator, optimizer, scheduler, train_set, val_set)
    header = _checkpoint_header(args, plan, grid, normalization, train_set, val_set)
    with StopSignals() as stop, alarm_before_time_limit(procs.main):
        status = trainer.run(run, header, out, stop, after_step)
    if status:
        return status

    if procs.main:
        _finish(args, plan, run, header, out, trainer, train_set)
    return 0


def _plan(
    args: argparse.Namespace,
    procs: Processes,
    data_infos: list[Any],
    val_infos: list[Any],
    grid: int,
    init: dict[str, Any] | None,
) -> Plan:
    """Resolve the model, sizes and step counts, and the configuration that names the run."""
    spec = parse_model(args.model, len(CHANNELS))
    if init is not None:
        pre = ModelSpec.from_dict(init["model"])
        if (pre.modes, pre.width, pre.layers) != (spec.modes, spec.width, spec.layers):
            raise UserError(
                f"--model {args.model} is (modes {spec.modes}, width {spec.width}) but "
                f"{args.init} holds (modes {pre.modes}, width {pre.width})"
            )
    if 2 * spec.modes > grid:
        raise UserError(
            f"--model {args.model} keeps {spec.modes} modes per direction but a {grid}x{grid} "
            f"grid resolves at most {grid // 2}; use a smaller model or a finer grid"
        )
    n_total = sum(int(info.n_samples) for info in data_infos)
    n_train = n_total if args.n_train is None else args.n_train
    if n_train > n_total:
        raise UserError(f"--n-train {n_train} exceeds the {n_total} samples in --data")
    batch = min(args.batch_size, n_train)
    if procs.world > batch:
        raise UserError(f"a batch of {batch} samples cannot be split over {procs.world} processes")
    steps_per_epoch = math.ceil(n_train / batch)
    epochs_run = max(args.epochs, math.ceil(args.min_steps / steps_per_epoch))
    normalization_source: object = "data"
    if args.init:
        normalization_source = "init"
    elif args.stats:
        normalization_source = _normalization_from_data(args).to_dict()
    config = {
        "model": {"modes": spec.modes, "width": spec.width, "layers": spec.layers},
        "channels": list(CHANNELS),
        "data": [file_identity(info) for info in data_infos],
        "val": [file_identity(info) for info in val_infos],
        "n_train": n_train,
        "lr": args.lr,
        "epochs": args.epochs,
        "min_steps": args.min_steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "init": sha256_file(args.init) if args.init else None,
        "normalization": normalization_source,
    }
    return Plan(spec, n_train, batch, steps_per_epoch, epochs_run, config)


def _normalization_from_data(args: argparse.Namespace) -> Normalization:
    """Statistics of a from-scratch run: ``--stats``, or computed from the whole train files
    (not just the N-subset: a median over 8 samples would make tiny-N runs noisier)."""
    if args.stats:
        return Normalization.from_stats(load_stats(args.stats), f"--stats {args.stats}")
    return Normalization.from_stats(compute_stats(list(args.data)), "statistics of --data")


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


@dataclass
class RunState:
    """Where training stands; everything here goes into ``state.pt``."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimiser steps taken
    epoch_sse: float = 0.0  # sum of per-sample squared errors so far this epoch
    seconds: float = 0.0  # training seconds before this process started
    best_epoch: int | None = None
    best_val: float = math.inf
    best_weights: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def restore(
        self,
        state: dict[str, Any],
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        procs: Processes,
    ) -> None:
        """Continue from ``state.pt``: weights, optimiser, schedule, progress and RNG."""
        network.load_state_dict(state["weights"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        p = state["progress"]
        self.epoch, self.batch, self.step = int(p["epoch"]), int(p["batch"]), int(p["step"])
        # The saved partial sum is already summed over processes: count it once.
        self.epoch_sse = float(p["epoch_sse"]) if procs.main else 0.0
        self.seconds = float(p["seconds"])
        self.history = list(state["history"])
        best = state["best"]
        self.best_epoch = best["epoch"]
        self.best_val = math.inf if best["val_rel_l2"] is None else float(best["val_rel_l2"])
        self.best_weights = state["best_weights"]
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


class Trainer:
    """The optimisation loop of one run."""

    def __init__(
        self,
        args: argparse.Namespace,
        procs: Processes,
        plan: Plan,
        operator: NormalizedOperator,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_set: FieldSet,
        val_set: FieldSet,
    ) -> None:
        self.args = args
        self.procs = procs
        self.plan = plan
        self.operator = operator
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_set = train_set
        self.val_set = val_set
        self.bf16 = bool(args.bf16 and procs.device.type == "cuda")
        if args.bf16 and not self.bf16 and procs.main:
            _say("--bf16 applies to CUDA devices only; training in float32 on the CPU")
        self.model: torch.nn.Module = operator
        if procs.world > 1:
            ids = [procs.device] if procs.device.type == "cuda" else None
            self.model = DistributedDataParallel(operator, device_ids=ids)
        self.started = time.perf_counter()
        self.last_loss = math.nan  # per-sample loss of the latest batch, for the display
        self.step_lr = args.lr  # learning rate of the latest step, for the log

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def seconds(self, run: RunState) -> float:
        return run.seconds + time.perf_counter() - self.started

    def run(
        self,
        run: RunState,
        header: dict[str, Any],
        out: Path,
        stop: StopSignals,
        after_step: Callable[[int], None] | None,
    ) -> int:
        """Train until done (returns 0) or a stop signal arrives (returns 128 + signal)."""
        plan, procs = self.plan, self.procs
        progress = Progress(
            plan.total_steps - run.step,
            "train",
            unit="step",
            enabled=procs.main and not self.args.quiet,
        )
        every = self.args.checkpoint_every
        with progress:
            while run.epoch < plan.epochs_run:
                for indices, global_batch in self._batches(run):
                    loss, sse = self._loss(indices, global_batch)
                    stop_flag, bad = self.procs.reduce(
                        [float(stop.received or 0), 0.0 if math.isfinite(sse) else 1.0], "max"
                    )
                    if bad:
                        raise UserError(
                            f"the training loss became non-finite at epoch {run.epoch + 1}, "
                            f"step {run.step + 1} (lr {self._lr():.3g}); lower --lr"
                        )
                    if stop_flag:
                        return self._interrupt(run, header, out, int(stop_flag))
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.step_lr = self._lr()
                    self.optimizer.step()
                    self.scheduler.step()
                    run.step += 1
                    run.batch += 1
                    run.epoch_sse += sse
                    progress.update(1, epoch=run.epoch + 1, loss=self.last_loss)
                    if after_step is not None:
                        after_step(run.step)
                    if every and run.step % every == 0 and run.batch < plan.steps_per_epoch:
                        self._save_state(run, header, out)
                self._end_epoch(run, out, header)
                progress.update(0, epoch=run.epoch, val=run.history[-1]["val_rel_l2"])
        return 0

    def _batches(self, run: RunState) -> Iterator[tuple[torch.Tensor, int]]:
        """This process's share of each remaining global batch of the epoch, and its size."""
        order = epoch_order(self.plan.n_train, self.args.seed, run.epoch)
        size = self.plan.batch_size
        for b in range(run.batch, self.plan.steps_per_epoch):
            batch = order[b * size : (b + 1) * size]
            yield batch[self.procs.rank :: self.procs.world], len(batch)

    def _loss(self, indices: torch.Tensor, global_batch: int) -> tuple[torch.Tensor, float]:
        """This process's loss term and its summed per-sample squared errors.

        The study's loss is the mean over the global batch of each sample's sum of squared
        errors. Each process sums over its share and divides by the global batch size; DDP
        then averages gradients over processes, so multiplying by the number of processes
        makes the result the one-process gradient.
        """
        device = self.procs.device
        f, c, u = (t.to(device, non_blocking=True) for t in self.train_set.batch(indices))
        with self.autocast():
            prediction = self.model(f, c)
        sse = (prediction.float() - u).square().sum(dim=(1, 2)).sum()
        loss = sse * (self.procs.world / global_batch)
        value = float(sse.detach())
        self.last_loss = value / max(len(indices), 1)
        return loss, value

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _end_epoch(self, run: RunState, out: Path, header: dict[str, Any]) -> None:
        """Validate, keep the best weights, log the epoch and save the state."""
        (epoch_sse,) = self.procs.reduce([run.epoch_sse], "sum")
        val = self.validate()
        if not math.isfinite(val):
            raise UserError(
                f"the validation error became non-finite at epoch {run.epoch + 1}; lower --lr"
            )
        run.epoch += 1
        run.history.append(
            {
                "epoch": run.epoch,
                "step": run.step,
                "lr": self.step_lr,
                "train_loss": epoch_sse / self.plan.n_train,
                "val_rel_l2": val,
                "seconds": self.seconds(run),
            }
        )
        if val < run.best_val:
            run.best_val, run.best_epoch = val, run.epoch
            run.best_weights = unwrapped_state(self.operator.network)
        run.batch, run.epoch_sse = 0, 0.0
        if self.procs.main:
            write_log(out / "log.csv", run.history)
        self._save_state(run, header, out, summed=True)

    @torch.no_grad()
    def validate(self) -> float:
        """Mean relative L2 error over the whole validation set (shared among processes)."""
        self.operator.eval()
        indices = torch.arange(len(self.val_set))[self.procs.rank :: self.procs.world]
        total, count = relative_l2_sums(
            self.operator, self.val_set, indices, self.plan.batch_size, self.procs.device, self.bf16
        )
        self.operator.train()
        total, count = self.procs.reduce([total, float(count)], "sum")
        return total / count

    def _save_state(
        self, run: RunState, header: dict[str, Any], out: Path, summed: bool = False
    ) -> None:
        """Write ``state.pt`` (rank 0); every process must call this (it may reduce)."""
        epoch_sse = run.epoch_sse if summed else self.procs.reduce([run.epoch_sse], "sum")[0]
        if not self.procs.main:
            return
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            **header,
            "kind": "state",
            "created": _now(),
            "weights": unwrapped_state(self.operator.network),
            "best_weights": run.best_weights,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": {
                "epoch": run.epoch,
                "batch": run.batch,
                "step": run.step,
                "epoch_sse": epoch_sse,
                "seconds": self.seconds(run),
            },
            "history": run.history,
            "best": {
                "epoch": run.best_epoch,
                "val_rel_l2": None if run.best_epoch is None else run.best_val,
            },
            "rng": rng,
        }
        save_checkpoint(state, out / "state.pt")

    def _interrupt(self, run: RunState, header: dict[str, Any], out: Path, signum: int) -> int:
        self._save_state(run, header, out)
        if self.procs.main:
            name = signal.Signals(signum).name
            _say(
                f"stopped by {name} at epoch {run.epoch + 1}, step {run.step}; state saved to "
                f"{out / 'state.pt'}; run the same command again to resume"
            )
        return 128 + signum


def _checkpoint_header(
    args: argparse.Namespace,
    plan: Plan,
    grid: int,
    normalization: Normalization,
    train_set: FieldSet,
    val_set: FieldSet,
) -> dict[str, Any]:
    """The self-description shared by ``state.pt`` and ``model.pt``."""
    init = None
    if args.init:
        init = {"path": os.fspath(args.init), "sha256": plan.config["init"]}
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
            "seed": args.seed,
            "init": init,
        },
        "config": plan.config,
    }


def _finish(
    args: argparse.Namespace,
    plan: Plan,
    run: RunState,
    header: dict[str, Any],
    out: Path,
    trainer: Trainer,
    train_set: FieldSet,
) -> None:
    """Write log.csv, train.json and finally model.pt (the "finished" marker); drop state.pt."""
    seconds = trainer.seconds(run)
    training = {
        "lr": args.lr,
        "epochs": args.epochs,
        "epochs_run": plan.epochs_run,
        "batch_size": plan.batch_size,
        "min_steps": args.min_steps,
        "steps": run.step,
        "steps_per_epoch": plan.steps_per_epoch,
        "best_epoch": run.best_epoch,
        "best_val_rel_l2": run.best_val,
        "final_train_loss": run.history[-1]["train_loss"],
        "train_seconds": seconds,
        "world_size": trainer.procs.world,
        "device": str(trainer.procs.device),
        "bf16": trainer.bf16,
    }
    write_log(out / "log.csv", run.history)
    write_json(
        out / "train.json",
        {
            "model": plan.spec.name,
            "modes": plan.spec.modes,
            "width": plan.spec.width,
            "parameters": plan.spec.parameters,
            "n_train": plan.n_train,
            **{k: training[k] for k in ("lr", "epochs", "epochs_run", "batch_size")},
            "min_steps": args.min_steps,
            "steps": run.step,
            "seed": args.seed,
            "best_epoch": run.best_epoch,
            "best_val_rel_l2": run.best_val,
            "train_seconds": seconds,
            "init": os.fspath(args.init) if args.init else None,
            "data": train_set.files,
            "val": header["trained_on"]["val"],
            "final_train_loss": training["final_train_loss"],
            "world_size": training["world_size"],
            "device": training["device"],
            "bf16": training["bf16"],
            "pdetransfer_version": __version__,
            "torch_version": str(torch.__version__),
        },
    )
    model = {
        **header,
        "kind": "model",
        "created": _now(),
        "training": training,
        "weights": run.best_weights,
    }
    save_checkpoint(model, out / "model.pt")
    (out / "state.pt").unlink(missing_ok=True)
    _say(
        f"trained {plan.epochs_run} epochs ({run.step} steps) in {seconds:.1f} s; best "
        f"validation rel-L2 {run.best_val:.4g} at epoch {run.best_epoch}; wrote {out / 'model.pt'}"
    )


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """Rewrite the per-epoch CSV log atomically from the full history."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _say(message: str) -> None:
    print(f"pdetransfer train: {message}", file=sys.stderr, flush=True)
