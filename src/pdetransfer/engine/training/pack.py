"""One pack of a cell's members: its ensemble and optimiser, built from fresh or saved members.

A pack is the unit the loop trains (:mod:`pdetransfer.engine.training.cell` decides which
members form one). Each member starts as its separate run would: the network its seed
initialises (or the pre-trained weights), or the weights, optimiser moments, progress and RNG
state of its own ``state.pt``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch

from pdetransfer.engine.fields import FieldSet
from pdetransfer.engine.models.build import build_model, build_packed
from pdetransfer.engine.models.normalization import Normalization, NormalizedOperator
from pdetransfer.engine.runtime.deadline import alarm_before_time_limit
from pdetransfer.engine.runtime.processes import Processes, StopSignals
from pdetransfer.engine.training.cell import member_config
from pdetransfer.engine.training.config import MemberSpec, TrainConfig
from pdetransfer.engine.training.ensemble_adam import EnsembleAdam
from pdetransfer.engine.training.loop import LoopState, Member, Trainer
from pdetransfer.engine.training.member import MemberState
from pdetransfer.engine.training.outcome import write_member_outputs
from pdetransfer.engine.training.plan import Plan, checkpoint_header
from pdetransfer.engine.training.run_files import say


class Pack:
    """Builds one pack's ensemble and optimiser from fresh or saved members, trains it, and
    writes each member's outputs when it stops."""

    def __init__(
        self,
        config: TrainConfig,
        procs: Processes,
        plan: Plan,
        grid: int,
        normalization: Normalization,
        train_sets: dict[int, FieldSet],
        val_set: FieldSet,
    ) -> None:
        self.config, self.procs, self.plan, self.grid = config, procs, plan, grid
        self.normalization = normalization
        self.train_sets, self.val_set = train_sets, val_set

    def train(
        self,
        entries: list[tuple[MemberSpec, dict[str, Any] | None]],
        init: dict[str, Any] | None,
        after_step: Callable[[int], None] | None,
    ) -> int:
        """Train the pack until every member stops (0) or a signal arrives (128 + signal)."""
        config, plan, procs = self.config, self.plan, self.procs
        networks = []
        for spec, _ in entries:
            torch.manual_seed(spec.seed)  # a separate run's initialisation, member by member
            network = build_model(plan.spec)
            if init is not None:
                network.load_state_dict(init["weights"])
            networks.append(config.trainable.prepare(network))  # adapters: drawn from the seed
        ensemble = build_packed(networks)
        operator = NormalizedOperator(ensemble, self.normalization).to(procs.device)
        optimizer = EnsembleAdam(
            [p for p in ensemble.parameters() if p.requires_grad],  # the rule's, in net order
            [s.lr for s, _ in entries],
            [plan.budget.horizon] * len(entries),
        )
        loop, members = LoopState(), []
        for k, (spec, state) in enumerate(entries):
            member_plan = dataclasses.replace(plan, identity=member_config(plan.identity, spec))
            train_set = self.train_sets[spec.seed]
            header = checkpoint_header(
                config, spec, member_plan, self.grid, self.normalization, train_set, self.val_set
            )
            member = MemberState(spec.seed, spec.lr, config.loss)
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
        trainer = Trainer(config, procs, plan, operator, optimizer, members, self.val_set)

        def finish(k: int, at: LoopState) -> None:
            spec = entries[k][0]
            export = functools.partial(config.trainable.export, networks[0])
            write_member_outputs(
                config, spec, plan, at, members[k], trainer, k, len(entries), export
            )

        with StopSignals() as stop, alarm_before_time_limit(procs.main):
            return trainer.run(loop, stop, finish, after_step)
