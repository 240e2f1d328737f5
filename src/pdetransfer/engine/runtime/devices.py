"""Which torch device a command runs on, from ``--device`` and what the process was given.

Used by training (through :mod:`.processes`) and evaluation alike, so it lives here rather
than in either subcommand.
"""

from __future__ import annotations

import torch

from pdetransfer.engine.runtime import gpu
from pdetransfer.errors import UserError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` (this process's GPU) or ``cuda:K``.

    ``auto`` falls back to the CPU only when no GPU was given to the process: a job that asked
    for GPUs but got a torch without CUDA would otherwise train for days on the CPU.
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif (given := gpu.expected_gpus()) is not None:
            raise UserError(
                f"{given} but torch {torch.__version__} cannot use CUDA (is it a CPU-only "
                "build? see docs/cluster.md for a CUDA build); pass --device cpu "
                f"to run on the CPU anyway, or set {gpu.ALLOW_CPU_ENV}=1 on a test cluster"
            )
        else:
            name = "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for but no CUDA device is available")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device (auto, cpu, cuda or cuda:K)") from None
