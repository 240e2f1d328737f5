"""The data-parallel process group of a training run and the signals that stop it."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from pdetransfer.engine.runtime.devices import resolve_device

# SIGURG: the slurm profile's --signal (see engine.runtime.deadline); SIGALRM: the deadline alarm.
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
