"""The optimisation loop shared by the members of a run: batches, steps, checks, state saves.

The loop owns what the members of a cell share (the position in the epoch, the step counter,
the budget and validation schedule, the stop signals) and, for now, the one member's model and
optimiser; each member's own bookkeeping, its seed (which fixes its data order) and learning
rate included, is a :class:`pdetransfer.engine.member.MemberState`. One process trains one
member today.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from pdetransfer.engine.checkpoints import save_checkpoint, unwrapped_state
from pdetransfer.engine.evaluation import relative_l2_sums
from pdetransfer.engine.losses import per_sample_loss
from pdetransfer.engine.member import MemberState
from pdetransfer.engine.normalization import NormalizedOperator
from pdetransfer.engine.plan import Plan
from pdetransfer.engine.processes import Processes, StopSignals
from pdetransfer.engine.run_files import now, say, write_log
from pdetransfer.engine.training_data import FieldSet, epoch_order
from pdetransfer.progress import Progress


@dataclass
class LoopState:
    """Where the shared loop stands in the data; saved in ``state.pt`` as ``progress``."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimiser steps taken
    seconds: float = 0.0  # training seconds before this process started


class Trainer:
    """The optimisation loop of one run: batches, steps, validation checks, state saves."""

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
            say("--bf16 applies to CUDA devices only; training in float32 on the CPU")
        self.model: torch.nn.Module = operator
        if procs.world > 1:
            ids = [procs.device] if procs.device.type == "cuda" else None
            self.model = DistributedDataParallel(operator, device_ids=ids)
        self.started = time.perf_counter()
        self.step_lr = args.lr  # learning rate of the latest step, for the log
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, its sample order)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def seconds(self, loop: LoopState) -> float:
        return loop.seconds + time.perf_counter() - self.started

    def run(
        self,
        loop: LoopState,
        member: MemberState,
        header: dict[str, Any],
        out: Path,
        stop: StopSignals,
        after_step: Callable[[int], None] | None,
    ) -> int:
        """Train until the member stops (returns 0) or a signal arrives (returns 128 + signal)."""
        plan, procs, budget = self.plan, self.procs, self.plan.budget
        progress = Progress(
            budget.horizon - loop.step,
            "train",
            unit="step",
            enabled=procs.main and not self.args.quiet,
        )
        every = self.args.checkpoint_every
        with progress:
            while not member.done:
                indices, global_batch = self._next_batch(loop, member.seed)
                loss, loss_sum = self._loss(indices, global_batch)
                (signum,) = procs.reduce([float(stop.received or 0)], "max")
                (loss_sum,) = procs.reduce([loss_sum], "sum")
                if signum:
                    return self._interrupt(loop, member, header, out, int(signum))
                if member.check_loss(loop.step + 1, loss_sum, global_batch):
                    break  # diverged: the step is not taken
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.step_lr = self._lr()
                self.optimizer.step()
                self.scheduler.step()
                loop.step += 1
                loop.batch += 1
                if loop.batch == plan.steps_per_epoch:
                    loop.epoch, loop.batch = loop.epoch + 1, 0
                member.took_step(loss_sum, global_batch)
                progress.update(1, loss=loss_sum / global_batch)
                if after_step is not None:
                    after_step(loop.step)
                if budget.is_check(loop.step):
                    self._check(loop, member, header, out)
                    progress.update(0, val=member.history[-1]["val_rel_l2"])
                elif every and loop.step % every == 0:
                    self._save_state(loop, member, header, out)
        return 0

    def _next_batch(self, loop: LoopState, seed: int) -> tuple[torch.Tensor, int]:
        """This process's share of the next global batch, and the global batch's size."""
        if self._order is None or self._order[0] != loop.epoch:
            self._order = (loop.epoch, epoch_order(self.plan.n_train, seed, loop.epoch))
        size = self.plan.batch_size
        batch = self._order[1][loop.batch * size : (loop.batch + 1) * size]
        return batch[self.procs.rank :: self.procs.world], len(batch)

    def _loss(self, indices: torch.Tensor, global_batch: int) -> tuple[torch.Tensor, float]:
        """This process's loss term and the sum of its samples' loss terms.

        The loss is the mean over the global batch of a per-sample term (``--loss``). Each
        process sums over its share and divides by the global batch size; DDP then averages
        gradients over processes, so multiplying by the number of processes makes the result
        the one-process gradient.
        """
        device = self.procs.device
        f, c, u = (t.to(device, non_blocking=True) for t in self.train_set.batch(indices))
        with self.autocast():
            prediction = self.model(f, c)
        total = per_sample_loss(prediction, u, self.args.loss).sum()
        loss = total * (self.procs.world / global_batch)
        return loss, float(total.detach())

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _check(
        self, loop: LoopState, member: MemberState, header: dict[str, Any], out: Path
    ) -> None:
        """Validate, keep the best weights, decide whether to stop, log and save the state."""
        budget = self.plan.budget
        row = {
            "step": loop.step,
            "epoch": loop.step / self.plan.steps_per_epoch,
            "lr": self.step_lr,
            "val_rel_l2": self.validate(),
            "seconds": self.seconds(loop),
        }
        if member.record_check(row):
            member.best_weights = unwrapped_state(self.operator.network)
        if not member.done:
            if budget.plateaued(loop.step, member.best_step):
                member.stop_reason = "plateau"
            elif loop.step >= budget.horizon:
                member.stop_reason = budget.end_reason
        if self.procs.main:
            write_log(out / "log.csv", member.history)
        if not member.done:
            self._save_state(loop, member, header, out)

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
        self, loop: LoopState, member: MemberState, header: dict[str, Any], out: Path
    ) -> None:
        """Write ``state.pt`` (rank 0 only; every sum in it is already global)."""
        if not self.procs.main:
            return
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            **header,
            "kind": "state",
            "created": now(),
            "weights": unwrapped_state(self.operator.network),
            "best_weights": member.best_weights,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": {
                "epoch": loop.epoch,
                "batch": loop.batch,
                "step": loop.step,
                "seconds": self.seconds(loop),
            },
            "member": member.to_state(),
            "rng": rng,
        }
        save_checkpoint(state, out / "state.pt")

    def _interrupt(
        self,
        loop: LoopState,
        member: MemberState,
        header: dict[str, Any],
        out: Path,
        signum: int,
    ) -> int:
        self._save_state(loop, member, header, out)
        if self.procs.main:
            say(
                f"stopped by {signal.Signals(signum).name} at step {loop.step} of "
                f"{self.plan.budget.horizon}; state saved to {out / 'state.pt'}; run the same "
                "command again to resume"
            )
        return 128 + signum
