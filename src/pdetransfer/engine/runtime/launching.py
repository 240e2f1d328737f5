"""``pdetransfer launch``: run one subcommand on its own GPUs, as one process or several.

Workflow rules call ``pdetransfer launch --gpus {resources.gpu} -- train ...`` so that the
number of processes follows the rule's resources rather than a number written into the rule:

* no GPUs and one process: the subcommand runs in this very process (no start-up cost);
* K GPUs: K free devices are claimed (:mod:`pdetransfer.engine.runtime.gpu`) -- or, inside a
  SLURM job, the ones SLURM assigned are used (claimed among themselves when a group job's
  allocation holds more than K, so grouped commands do not pile onto device 0) -- and
  ``CUDA_VISIBLE_DEVICES`` is set before anything touches CUDA;
* more than one process: ``torchrun --standalone`` starts them (data-parallel; the engine
  reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``).

In the multi-process case this process stays in between and forwards signals: SIGTERM and
SIGINT go to torchrun, which shuts its workers down; SIGUSR1 and SIGURG (SLURM's "time is
nearly up" from ``--signal``) go straight to the workers (torchrun's children, each in a session of its own)
so that they checkpoint, while torchrun itself ignores it -- by default it would die of it and
orphan them. The exit status is the child's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pdetransfer.engine.runtime import gpu
from pdetransfer.errors import UserError


@dataclass(frozen=True)
class Placement:
    """Where a launched command runs: its devices and how many processes share them."""

    devices: list[str] | None  # None: leave CUDA_VISIBLE_DEVICES as it is
    nproc: int
    source: str  # who decided the devices ("none", "claimed", "slurm"), for the log line


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command line running ``pdetransfer ARGV`` in ``nproc`` local processes.

    The ``torchrun`` script installed beside this interpreter is preferred, so a virtual
    environment's torch is used even when the environment is not activated.
    """
    script = Path(sys.executable).parent / "torchrun"
    runner = [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*runner, "--standalone", "--nproc-per-node", str(nproc), "-m", "pdetransfer", *argv]


def _ignore_usr1() -> None:
    """Run in the child before exec: torchrun must survive the SIGUSR1 meant for its workers.

    An ignored signal stays ignored across exec and in torchrun's workers, until the engine
    installs its own checkpointing handler -- so a SIGUSR1 during start-up is harmless too.
    """
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def child_pids(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (Linux ``/proc``; torchrun's workers)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process exited while we looked
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def run_forwarding_signals(cmd: Sequence[str], env: dict[str, str], keep_fds: Sequence[int]) -> int:
    """Run ``cmd`` in its own process group, forward SIGTERM/SIGINT/SIGUSR1/SIGURG; its status.

    ``keep_fds`` (the GPU lock descriptors) are inherited by the child, so the devices stay
    claimed while the child lives even if this process is killed first.
    """
    try:
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            pass_fds=tuple(keep_fds),
            start_new_session=True,
            preexec_fn=_ignore_usr1,
        )
    except OSError as err:
        raise UserError(f"cannot start {cmd[0]}: {err}") from err

    def forward(signum: int, _frame: FrameType | None) -> None:
        targets = child_pids(proc.pid) if signum in _TO_WORKERS else [proc.pid]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - status if status < 0 else status


_TO_WORKERS = (signal.SIGUSR1, signal.SIGURG)  # torchrun ignores SIGURG by default
_FORWARDED = (signal.SIGTERM, signal.SIGINT, *_TO_WORKERS)


def run_in_process(argv: Sequence[str]) -> int:
    """Run ``pdetransfer ARGV`` in this process and return its exit status."""
    from pdetransfer.cli import main

    return main(list(argv))


def place(
    gpus: int, nproc: int | None, lock_dir: Path | None
) -> tuple[Placement, gpu.GpuClaim | None]:
    """Decide devices and process count; claims GPU locks when outside SLURM.

    Returns the placement and the claim (None when nothing was locked); the caller keeps the
    claim alive for as long as the command runs.
    """
    if gpus < 0:
        raise UserError(f"--gpus must be 0 or more, not {gpus}")
    if nproc is not None and nproc < 1:
        raise UserError(f"--nproc must be at least 1, not {nproc}")
    processes = nproc if nproc is not None else max(gpus, 1)
    if gpus == 0:
        return Placement(devices=None, nproc=processes, source="none"), None
    from_slurm = gpu.slurm_devices()
    if from_slurm is not None:
        if from_slurm and len(from_slurm) < gpus:
            raise UserError(
                f"--gpus {gpus} but SLURM gave this job only {len(from_slurm)} "
                f"(CUDA_VISIBLE_DEVICES={','.join(from_slurm)}); request gpu={gpus} for the rule"
            )
        if len(from_slurm) <= gpus:
            # The allocation is exactly this command's (or has no CUDA devices): use it as is.
            return Placement(devices=from_slurm or None, nproc=processes, source="slurm"), None
        # A group job: several commands share the allocation, so each claims its own share.
        # Device numbers are per job under SLURM, hence a lock directory per job.
        job_locks = (lock_dir or gpu.default_lock_dir()) / f"slurm-{os.environ['SLURM_JOB_ID']}"
        claim = gpu.claim_gpus(gpus, pool=from_slurm, lock_dir=job_locks)
        return Placement(devices=claim.ids, nproc=processes, source="slurm, claimed"), claim
    claim = gpu.claim_gpus(gpus, lock_dir=lock_dir)
    return Placement(devices=claim.ids, nproc=processes, source="claimed"), claim


def launch(
    argv: Sequence[str], gpus: int = 0, nproc: int | None = None, lock_dir: Path | None = None
) -> int:
    """Run ``pdetransfer ARGV`` on ``gpus`` devices in ``nproc`` processes (default: one per GPU)."""
    if not argv:
        raise UserError(
            "no subcommand to launch; write e.g. 'pdetransfer launch --gpus 1 -- train ...'"
        )
    if argv[0] == "launch":
        raise UserError("'launch' cannot launch itself; give the subcommand to run after '--'")
    placement, claim = place(gpus, nproc, lock_dir)
    try:
        if placement.devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(placement.devices)
        if gpus > 0:
            os.environ[gpu.LAUNCHED_GPUS_ENV] = str(gpus)  # the command must then use CUDA
        devices = ",".join(placement.devices) if placement.devices else "none"
        print(
            f"pdetransfer launch: devices {devices} ({placement.source}), "
            f"{placement.nproc} process(es): {' '.join(argv)}",
            file=sys.stderr,
            flush=True,
        )
        if placement.nproc == 1:
            return run_in_process(argv)
        fds = claim.fds if claim is not None else []
        return run_forwarding_signals(
            torchrun_command(placement.nproc, argv), dict(os.environ), fds
        )
    finally:
        if claim is not None:
            claim.release()


def launch_command(args: argparse.Namespace) -> int:
    """Handler of ``pdetransfer launch``."""
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    lock_dir = Path(args.lock_dir) if args.lock_dir else None
    return launch(argv, gpus=args.gpus, nproc=args.nproc, lock_dir=lock_dir)
