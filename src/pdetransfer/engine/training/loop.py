"""The optimisation loop shared by the members of a pack: batches, steps, checks, state saves.

One loop trains K members of one cell (its learning rates x seeds) as one
:class:`~pdetransfer.engine.models.packed.PackedNetwork` with an
:class:`~pdetransfer.engine.training.ensemble_adam.EnsembleAdam`; a single run is the case
K = 1 (so a separate run and a packed member go through the very same code). The loop owns
what the members share: the position in the epoch, the step counter, the budget and
validation schedule, the validation data and the stop signals. Each member keeps its own
bookkeeping in a :class:`~pdetransfer.engine.training.member.MemberState` and has its own seed
(hence its own N-subset and epoch order, :class:`Member`), learning rate and run directory.

A member that stops (plateau, cap, divergence) is deactivated in the optimiser, so its weights
and moments no longer change, and its outputs are written at once (``finish``); its loss no
longer enters the summed objective, so nothing of it reaches the others. Members never mix:
every layer and every optimiser operation is elementwise along the member axis.

**Stopped members cost nothing.** Before each step the pack keeps only its running members
(:meth:`~pdetransfer.engine.models.packed.PackedNetwork.keep_members` and
:meth:`~pdetransfer.engine.training.ensemble_adam.EnsembleAdam.keep_members`): the forward and
backward passes, the optimiser and validation cover those alone, so a cell costs what its
members' own stops make it cost. ``rows`` maps the pack's member axis to the members (a
member keeps its index ``k`` in ``members`` throughout). Each member's batches are a function
of its seed, the epoch and the shared batch position alone, so dropping others changes none of
them; and a kept member's rows hold the same numbers and go through the same batched
operations (``tests/test_ensemble.py`` compares them bit for bit with the larger pack). The
pack a resume builds from the ``state.pt`` its running members wrote at a signal is the very
pack the uninterrupted run had shrunk to.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from pdetransfer.engine.checkpoints import save_checkpoint
from pdetransfer.engine.fields import FieldSet, epoch_order
from pdetransfer.engine.losses import per_sample_loss, relative_l2
from pdetransfer.engine.models.normalization import NormalizedOperator
from pdetransfer.engine.models.packed import PackedNetwork
from pdetransfer.engine.runtime.processes import Processes, StopSignals
from pdetransfer.engine.training.config import TrainConfig
from pdetransfer.engine.training.ensemble_adam import EnsembleAdam
from pdetransfer.engine.training.member import MemberState
from pdetransfer.engine.training.plan import Plan
from pdetransfer.engine.training.run_files import now, say, write_log
from pdetransfer.progress import Progress


@dataclass
class LoopState:
    """Where the shared loop stands in the data; saved in ``state.pt`` as ``progress``."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimiser steps taken
    seconds: float = 0.0  # training seconds before this process started


@dataclass
class Member:
    """One member of a pack: its bookkeeping, run directory, checkpoint header and N-subset."""

    state: MemberState
    out: Path
    header: dict[str, Any]
    train_set: FieldSet


class Trainer:
    """The optimisation loop of one pack (K >= 1 members): steps, validation checks, saves."""

    def __init__(
        self,
        config: TrainConfig,
        procs: Processes,
        plan: Plan,
        operator: NormalizedOperator,
        optimizer: EnsembleAdam,
        members: list[Member],
        val_set: FieldSet,
    ) -> None:
        self.config = config
        self.procs = procs
        self.plan = plan
        self.operator = operator
        self.optimizer = optimizer
        self.members = members
        self.val_set = val_set
        self.bf16 = bool(config.bf16 and procs.device.type == "cuda")
        if config.bf16 and not self.bf16 and procs.main:
            say("--bf16 applies to CUDA devices only; training in float32 on the CPU")
        self.model: torch.nn.Module = operator
        if procs.world > 1:
            ids = [procs.device] if procs.device.type == "cuda" else None
            self.model = DistributedDataParallel(operator, device_ids=ids)
        self.started = time.perf_counter()
        self._orders: dict[int, tuple[int, torch.Tensor]] = {}  # seed -> (epoch, its order)
        self.rows = list(range(len(members)))  # the member at each row of the member axis
        # learning rates of the latest step by member, for the log
        self.step_lr = dict(zip(self.rows, optimizer.current_lr(), strict=True))

    @property
    def network(self) -> PackedNetwork:
        return self.operator.network  # type: ignore[return-value]

    def member_weights(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s current weights as a network's ``state_dict`` (CPU copies)."""
        return self.network.member_state_dict(self.rows.index(k))

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def seconds(self, loop: LoopState) -> float:
        return loop.seconds + time.perf_counter() - self.started

    def run(
        self,
        loop: LoopState,
        stop: StopSignals,
        finish: Callable[[int, LoopState], None],
        after_step: Callable[[int], None] | None,
    ) -> int:
        """Train until every member stops (returns 0) or a signal arrives (128 + signal).

        ``finish(k, loop)`` writes member ``k``'s outputs as soon as it stops.
        """
        plan, procs, budget = self.plan, self.procs, self.plan.budget
        progress = Progress(
            budget.horizon - loop.step,
            "train",
            unit="step",
            enabled=procs.main and not self.config.quiet,
        )
        every = self.config.checkpoint_every
        with progress:
            while self._active():
                self._shrink()
                rows = self.rows  # == the running members until the next step
                indices, global_batch = self._next_batch(loop)
                losses, sums = self._losses(indices, global_batch)  # by row
                (signum,) = procs.reduce([float(stop.received or 0)], "max")
                sums = procs.reduce(sums, "sum")
                if signum:
                    return self._interrupt(loop, int(signum))
                for r, k in enumerate(rows):
                    if self.members[k].state.check_loss(loop.step + 1, sums[r], global_batch):
                        self._stop(k, loop, finish)  # diverged: its step is not taken
                live = [r for r, k in enumerate(rows) if not self.members[k].state.done]
                if not live:
                    break
                self.optimizer.zero_grad()
                # Only running members' losses: a stopped one gets no gradient at all.
                losses[torch.tensor(live, device=losses.device)].sum().backward()
                self.step_lr = dict(zip(rows, self.optimizer.current_lr(), strict=True))
                stepped = self.optimizer.step()
                loop.step += 1
                loop.batch += 1
                if loop.batch == plan.steps_per_epoch:
                    loop.epoch, loop.batch = loop.epoch + 1, 0
                for r in live:
                    k = rows[r]
                    member = self.members[k].state
                    if stepped[r]:
                        member.took_step(sums[r], global_batch)
                    else:
                        member.diverge(
                            loop.step, f"the gradient became non-finite at step {loop.step}"
                        )
                        self._stop(k, loop, finish)
                progress.update(1, loss=sum(sums[r] for r in live) / (len(live) * global_batch))
                if after_step is not None:
                    after_step(loop.step)
                if budget.is_check(loop.step):
                    self._check(loop, finish)
                elif every and loop.step % every == 0:
                    self._save_states(loop)
        return 0

    def _active(self) -> list[int]:
        return [k for k, m in enumerate(self.members) if not m.state.done]

    def _shrink(self) -> None:
        """Drop the members that stopped from the model and the optimiser (see the module
        docstring); their outputs are written, so nothing of them is needed any more. (Only
        a one-member run is wrapped in DDP, and it never shrinks.)"""
        active = self._active()
        if active == self.rows:
            return
        keep = [self.rows.index(k) for k in active]
        self.network.keep_members(keep)
        # the optimiser steps the trainable parameters only (a mode's rule may freeze some)
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer.keep_members(keep, trainable)
        self.rows = active

    def _stop(self, k: int, loop: LoopState, finish: Callable[[int, LoopState], None]) -> None:
        self.optimizer.deactivate(self.rows.index(k))
        if self.procs.main:
            finish(k, loop)

    def _next_batch(self, loop: LoopState) -> tuple[list[torch.Tensor], int]:
        """Each row's member's share (this process's) of its next global batch, and the batch
        size.

        A member's order is a function of its seed and the epoch alone, exactly as in a
        separate run, so members with one seed share it.
        """
        size, n = self.plan.batch_size, self.plan.n_train
        shares = []
        for k in self.rows:
            seed = self.members[k].state.seed
            cached = self._orders.get(seed)
            if cached is None or cached[0] != loop.epoch:
                cached = self._orders[seed] = (loop.epoch, epoch_order(n, seed, loop.epoch))
            batch = cached[1][loop.batch * size : (loop.batch + 1) * size]
            shares.append(batch[self.procs.rank :: self.procs.world])
        return shares, len(batch)

    def _losses(
        self, indices: list[torch.Tensor], global_batch: int
    ) -> tuple[torch.Tensor, list[float]]:
        """Each row's loss term ``(K,)`` and the sums of its samples' loss terms.

        A member's loss is the mean over its global batch of a per-sample term (``--loss``).
        Each process sums over its share and divides by the global batch size; DDP then
        averages gradients over processes, so multiplying by the number of processes makes the
        result the one-process gradient.
        """
        device = self.procs.device
        sets = [self.members[k].train_set for k in self.rows]
        parts = [s.batch(i) for s, i in zip(sets, indices, strict=True)]
        f, c, u = (torch.stack(t).to(device, non_blocking=True) for t in zip(*parts, strict=True))
        with self.autocast():
            prediction = self.model(f, c)
        members, batch = u.shape[:2]
        per_sample = per_sample_loss(
            prediction.flatten(0, 1), u.flatten(0, 1), self.config.loss
        ).view(members, batch)
        totals = per_sample.sum(1)
        losses = totals * (self.procs.world / global_batch)
        return losses, totals.detach().cpu().tolist()

    def _check(self, loop: LoopState, finish: Callable[[int, LoopState], None]) -> None:
        """Validate, keep each member's best weights, stop members, log and save the states."""
        budget = self.plan.budget
        errors = self.validate()
        seconds = self.seconds(loop)
        for k in self._active():
            member = self.members[k].state
            row = {
                "step": loop.step,
                "epoch": loop.step / self.plan.steps_per_epoch,
                "lr": self.step_lr[k],
                "val_rel_l2": errors[self.rows.index(k)],
                "seconds": seconds,
            }
            if member.record_check(row):
                member.best_weights = self.member_weights(k)
            if not member.done:
                if budget.plateaued(loop.step, member.best_step):
                    member.stop_reason = "plateau"
                elif loop.step >= budget.horizon:
                    member.stop_reason = budget.end_reason
            if self.procs.main:
                write_log(self.members[k].out / "log.csv", member.history)
            if member.done:
                self._stop(k, loop, finish)
        self._save_states(loop)

    @torch.no_grad()
    def validate(self) -> list[float]:
        """Each row's mean relative L2 error over the validation set (shared data)."""
        self.operator.eval()
        members, device = len(self.rows), self.procs.device
        indices = torch.arange(len(self.val_set))[self.procs.rank :: self.procs.world]
        totals = torch.zeros(members, dtype=torch.float64)
        for start in range(0, len(indices), self.plan.batch_size):
            f, c, u = self.val_set.batch(indices[start : start + self.plan.batch_size])
            shape = (members, *f.shape)
            f_k = f.to(device).unsqueeze(0).expand(shape)
            c_k = c.to(device).unsqueeze(0).expand(members, *c.shape)
            with self.autocast():
                prediction = self.operator(f_k, c_k)
            totals += relative_l2(prediction.float().cpu(), u.unsqueeze(0)).sum(1)
        self.operator.train()
        *totals_list, count = self.procs.reduce([*totals.tolist(), float(len(indices))], "sum")
        return [t / count for t in totals_list]

    def _save_states(self, loop: LoopState) -> None:
        """Write each running member's ``state.pt`` (rank 0 only; every sum is already global).

        A member's state is that of a separate run (one network's weights, ``torch.optim.Adam``
        and ``LambdaLR`` state dicts), so any member resumes alone or in any pack.
        """
        if not self.procs.main:
            return
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        progress = {
            "epoch": loop.epoch,
            "batch": loop.batch,
            "step": loop.step,
            "seconds": self.seconds(loop),
        }
        for k in self._active():
            member = self.members[k]
            optimizer, scheduler = self.optimizer.member_state(self.rows.index(k))
            state = {
                **member.header,
                "kind": "state",
                "created": now(),
                "weights": self.member_weights(k),
                "best_weights": member.state.best_weights,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "progress": progress,
                "member": member.state.to_state(),
                "rng": rng,
            }
            save_checkpoint(state, member.out / "state.pt")

    def _interrupt(self, loop: LoopState, signum: int) -> int:
        self._save_states(loop)
        if self.procs.main:
            where = ", ".join(str(self.members[k].out / "state.pt") for k in self._active())
            say(
                f"stopped by {signal.Signals(signum).name} at step {loop.step} of "
                f"{self.plan.budget.horizon}; state saved to {where}; run the same "
                "command again to resume"
            )
        return 128 + signum
