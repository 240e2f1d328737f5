"""Adam with a cosine schedule for each member of a packed model (its weights stacked along a
leading member axis, :class:`~pdetransfer.engine.models.packed.PackedNetwork`).

A separate run trains with ``torch.optim.Adam(lr=base)`` and a ``LambdaLR`` whose factor after
``s`` steps is ``0.5 * (1 + cos(pi * min(s, T) / T))`` over its ``T`` optimiser steps. Members
of an ensemble have their own ``base`` (the learning-rate sweep), their own ``T`` (N and the
step floor may give members different horizons once a plateau rule ends some early) and their
own step count (a stopped member no longer steps), so the schedule is per member and lives in
the optimiser: :class:`EnsembleAdam` updates every stacked weight in one pass of vectorised
ops (a handful of kernels per tensor whatever K is, rather than K separate optimisers' worth)
with each member's learning rate and bias corrections broadcast along the member axis.

The update is the same sequence of float32 operations as ``torch.optim.Adam``'s
single-tensor path (``lerp_``, ``mul_().addcmul_()``, ``sqrt() / bias_correction2_sqrt +
eps``, ``param + (-step_size * exp_avg) / denom``), with the scalars (learning rate from the
schedule, bias corrections) computed in Python double precision exactly as torch and
``LambdaLR`` compute them: given the same gradients, a member's weights are bit-identical to
its separate run's (tested in ``tests/test_ensemble.py``).

Isolation: members that are inactive (stopped, diverged) or whose gradient holds a NaN or inf
are left untouched -- weights, moments and step count -- and every operation is elementwise
along the member axis, so nothing of one member reaches another. A pack drops its stopped
members altogether at the next step (:meth:`EnsembleAdam.keep_members`), so that they cost
nothing; deactivation covers the rest of the step in which a member stops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from pdetransfer.errors import UserError


def cosine_lr(base: float, step: int, horizon: int) -> float:
    """The learning rate after ``step`` steps of a cosine decay from ``base`` to 0 over
    ``horizon`` steps, computed exactly as a ``LambdaLR`` of that factor computes it."""
    return base * (0.5 * (1.0 + math.cos(math.pi * min(step, horizon) / horizon)))


class EnsembleAdam:
    """Adam over stacked parameters ``(K, ...)`` with per-member lr, schedule and activity.

    ``lr[k]`` is member ``k``'s base learning rate (checked where the run's configuration is
    parsed, :mod:`pdetransfer.engine.training.config`) and ``horizon[k]`` the number of steps
    its cosine schedule spans. Call :meth:`zero_grad`, backpropagate the sum of the members'
    losses (each member's gradient is then that of its own loss) and :meth:`step`.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: Sequence[float],
        horizon: Sequence[int],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.members = len(lr)
        if len(horizon) != self.members:
            raise UserError(f"{len(lr)} learning rates but {len(horizon)} schedule horizons")
        for p in self.params:
            if p.dim() == 0 or p.shape[0] != self.members:
                raise UserError(
                    f"a parameter of shape {tuple(p.shape)} has no member axis of {self.members}"
                )
        for value in horizon:
            if value < 1:
                raise UserError(f"schedule horizons must be at least 1 step, got {value}")
        self.lr = [float(v) for v in lr]
        self.horizon = [int(v) for v in horizon]
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.steps = [0] * self.members
        self.active = [True] * self.members
        self.exp_avg = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.exp_avg_sq = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]

    def current_lr(self) -> list[float]:
        """Each member's learning rate for its next step (what the log records as ``lr``)."""
        return [
            cosine_lr(b, s, t) for b, s, t in zip(self.lr, self.steps, self.horizon, strict=True)
        ]

    def deactivate(self, member: int) -> None:
        """Freeze member ``member`` for good: its weights and optimiser state stop changing."""
        self.active[member] = False

    @torch.no_grad()
    def keep_members(self, rows: Sequence[int], params: Iterable[torch.Tensor]) -> None:
        """Keep only the members at ``rows`` (in that order) and step ``params`` from now on:
        the parameters of the packed model that has just kept the same rows
        (:meth:`PackedNetwork.keep_members
        <pdetransfer.engine.models.packed.PackedNetwork.keep_members>`).

        Moments, learning rates, horizons, step counts and activity are gathered along the
        member axis, so a kept member's next update is the one it would have taken in the
        larger pack, and stopped members cost the optimiser nothing either.
        """
        params = list(params)
        if len(params) != len(self.params) or any(
            tuple(new.shape) != (len(rows), *old.shape[1:])
            for new, old in zip(params, self.params, strict=True)
        ):
            raise RuntimeError("the parameters given are not these members' rows of the model")
        if any(not 0 <= r < self.members for r in rows) or len(set(rows)) < len(rows):
            raise IndexError(f"cannot keep members {list(rows)} of an ensemble of {self.members}")
        for name in ("lr", "horizon", "steps", "active"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])
        for moments in (self.exp_avg, self.exp_avg_sq):
            for i, t in enumerate(moments):
                moments[i] = t.index_select(0, torch.tensor(rows, device=t.device))
        self.params = params
        self.members = len(rows)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def finite_gradients(self) -> torch.Tensor:
        """``(K,)`` booleans (on the CPU): whether each member's gradient is all finite."""
        finite = torch.ones(self.members, dtype=torch.bool, device=self._device())
        for p in self.params:
            if p.grad is not None:
                finite &= torch.isfinite(p.grad).flatten(1).all(1)
        return finite.cpu()

    @torch.no_grad()
    def step(self) -> list[bool]:
        """One Adam step of every active member with a finite gradient; which ones stepped.

        The caller decides what a skipped active member means (for training: it diverged,
        so :meth:`deactivate` it and record why).
        """
        finite = self.finite_gradients().tolist()
        stepped = [a and f for a, f in zip(self.active, finite, strict=True)]
        if not any(stepped):
            return stepped
        beta1, beta2 = self.betas
        step_size, bc2_sqrt = [], []
        for k in range(self.members):
            count = self.steps[k] + 1
            lr = cosine_lr(self.lr[k], self.steps[k], self.horizon[k])
            step_size.append(-(lr / (1 - beta1**count)))
            bc2_sqrt.append((1 - beta2**count) ** 0.5)
        keep = [k for k, s in enumerate(stepped) if not s]
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            grad = p.grad
            if p.is_complex():  # as torch's Adam: a complex weight is two real ones
                p, grad, m, v = (torch.view_as_real(t) for t in (p, grad, m, v))
            shape = (self.members,) + (1,) * (p.dim() - 1)
            neg_step = torch.tensor(step_size, dtype=p.dtype, device=p.device).view(shape)
            bc2 = torch.tensor(bc2_sqrt, dtype=p.dtype, device=p.device).view(shape)
            index = torch.tensor(keep, dtype=torch.long, device=p.device)
            saved = [t.index_select(0, index) for t in (p, m, v)] if keep else []
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bc2).add_(self.eps)
            # addcdiv_'s value must be one number; this is its arithmetic, member by member.
            p.add_((m * neg_step) / denom)
            if keep:
                for t, old in zip((p, m, v), saved, strict=True):
                    t.index_copy_(0, index, old)
        for k, s in enumerate(stepped):
            self.steps[k] += int(s)
        return stepped

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as plain data and tensors (``weights_only``-safe)."""
        return {
            "lr": list(self.lr),
            "horizon": list(self.horizon),
            "betas": list(self.betas),
            "eps": self.eps,
            "steps": list(self.steps),
            "active": list(self.active),
            "exp_avg": [t.detach().clone() for t in self.exp_avg],
            "exp_avg_sq": [t.detach().clone() for t in self.exp_avg_sq],
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; refuses one of another shape of ensemble."""
        moments = list(state["exp_avg"]), list(state["exp_avg_sq"])
        shapes = [tuple(p.shape) for p in self.params]
        if len(state["lr"]) != self.members or any(
            [tuple(t.shape) for t in ms] != shapes for ms in moments
        ):
            raise UserError(
                f"the saved optimiser state is for another ensemble (not {self.members} members "
                "of this model); delete the state file to start over"
            )
        self.lr = [float(v) for v in state["lr"]]
        self.horizon = [int(v) for v in state["horizon"]]
        self.betas = (float(state["betas"][0]), float(state["betas"][1]))
        self.eps = float(state["eps"])
        self.steps = [int(v) for v in state["steps"]]
        self.active = [bool(v) for v in state["active"]]
        for mine, saved in zip(
            self.exp_avg + self.exp_avg_sq, moments[0] + moments[1], strict=True
        ):
            mine.copy_(saved)

    def member_state(self, member: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Member ``member``'s optimiser and scheduler state as a separate run stores them.

        The pair is ``state_dict()`` of the ``torch.optim.Adam`` and ``LambdaLR`` of the
        recipe after this member's steps: a packed member's ``state.pt`` can be resumed by an
        ordinary run and reads like one.
        """
        count = self.steps[member]
        copies = [torch.zeros_like(p[member], device="cpu") for p in self.params]
        optimizer = torch.optim.Adam(copies, lr=self.lr[member], betas=self.betas, eps=self.eps)
        for p, m, v in zip(copies, self.exp_avg, self.exp_avg_sq, strict=True):
            if count:
                optimizer.state[p] = {
                    "step": torch.tensor(float(count)),
                    "exp_avg": m[member].detach().to("cpu", copy=True),
                    "exp_avg_sq": v[member].detach().to("cpu", copy=True),
                }
        base, horizon = self.lr[member], self.horizon[member]
        for group in optimizer.param_groups:
            group["initial_lr"] = base
        # Constructing at last_epoch = count - 1 makes LambdaLR take its step `count`, which
        # sets the group's lr and the scheduler's counters as `count` real steps would.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, horizon) / horizon)),
            last_epoch=count - 1,
        )
        return optimizer.state_dict(), scheduler.state_dict()

    @torch.no_grad()
    def load_member_state(
        self, member: int, optimizer: dict[str, Any], scheduler: dict[str, Any]
    ) -> None:
        """Make member ``member`` continue from a separate run's Adam and LambdaLR state dicts.

        The inverse of :meth:`member_state`: moments copied into the member's slice, its step
        count from the scheduler's (one scheduler step per optimiser step), so a member resumes
        bit-identically from a ``state.pt`` whichever pack (or none) wrote it.
        """
        saved = optimizer["state"]
        for index, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            entry = saved.get(index)
            if entry is None:
                m[member].zero_()
                v[member].zero_()
                continue
            if tuple(entry["exp_avg"].shape) != tuple(m.shape[1:]):
                raise UserError(
                    "the saved optimiser state does not fit this model; delete the state file "
                    "to start over"
                )
            m[member].copy_(entry["exp_avg"])
            v[member].copy_(entry["exp_avg_sq"])
        self.steps[member] = int(scheduler["last_epoch"])

    def _device(self) -> torch.device:
        return self.params[0].device if self.params else torch.device("cpu")
