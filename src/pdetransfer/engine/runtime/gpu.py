"""Give each concurrent job on one machine its own GPUs.

Snakemake counts GPUs (``--resources gpu=4``) but never says *which* device a job may use, so
four concurrent jobs would all land on device 0. Each job therefore claims free device ids
through lock files: one file per device in a shared lock directory, held with ``flock``. The
kernel drops an ``flock`` when the last file descriptor to it closes, so a device is released
when its holder exits *or is killed* -- there are no stale locks to clean up after a crash.

Under SLURM the scheduler has already given the job its devices (``CUDA_VISIBLE_DEVICES`` is
set in the job's environment), so nothing is locked there: SLURM owns the node.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pdetransfer.errors import UserError

#: Comma-separated device ids to hand out instead of the detected ones (tests fake GPUs this way).
IDS_ENV = "PDETRANSFER_GPU_IDS"
#: Directory of the per-device lock files (must be shared by all jobs on the machine).
LOCK_DIR_ENV = "PDETRANSFER_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/pdetransfer-gpu-locks"
#: Seconds between attempts while every device is taken.
POLL_SECONDS = 0.5
#: Set by ``pdetransfer launch --gpus K`` (K > 0) in the environment of the command it runs.
LAUNCHED_GPUS_ENV = "PDETRANSFER_LAUNCH_GPUS"
#: "1": ``--device auto`` may fall back to the CPU although GPUs were given -- only for test
#: clusters whose GPUs are fake GRES entries; a real job would silently train on the CPU.
ALLOW_CPU_ENV = "PDETRANSFER_ALLOW_CPU"


def default_lock_dir(env: Mapping[str, str] | None = None) -> Path:
    """The lock directory: ``$PDETRANSFER_GPU_LOCK_DIR`` or a fixed path under /tmp."""
    env = os.environ if env is None else env
    return Path(env.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _detect_ids() -> list[str]:
    """Physical device indices, from nvidia-smi or else torch in a child process.

    torch is asked in a separate process because once CUDA is initialised here, setting
    ``CUDA_VISIBLE_DEVICES`` for an in-process run would no longer take effect.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=index", "--format=csv,noheader"]
    else:
        query = [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    if smi:
        return _split_ids(out.stdout.replace("\n", ","))
    return [str(i) for i in range(int(out.stdout.strip() or 0))]


def device_pool(env: Mapping[str, str] | None = None) -> list[str]:
    """The device ids jobs on this machine share.

    ``$PDETRANSFER_GPU_IDS`` wins; else a ``CUDA_VISIBLE_DEVICES`` the user already set (its
    entries are physical ids, so claiming a subset of them is still coordinated correctly);
    else every device the driver reports.
    """
    env = os.environ if env is None else env
    if env.get(IDS_ENV):
        return _split_ids(env[IDS_ENV])
    if env.get("CUDA_VISIBLE_DEVICES"):
        return _split_ids(env["CUDA_VISIBLE_DEVICES"])
    return _detect_ids()


def slurm_devices(env: Mapping[str, str] | None = None) -> list[str] | None:
    """The devices SLURM gave this job, or None when not running inside a SLURM job.

    An empty list means a SLURM job without GPUs set up for CUDA (e.g. a CPU partition).
    """
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return None
    return _split_ids(env.get("CUDA_VISIBLE_DEVICES", ""))


def expected_gpus(env: Mapping[str, str] | None = None) -> str | None:
    """Who gave this process GPUs (for an error message), or None when nobody did."""
    env = os.environ if env is None else env
    if env.get(ALLOW_CPU_ENV) == "1":
        return None
    launched = env.get(LAUNCHED_GPUS_ENV, "")
    if launched.isdigit() and int(launched) > 0:
        return f"pdetransfer launch --gpus {launched} was asked for"
    slurm = slurm_devices(env)
    if slurm:
        return f"SLURM gave this job GPU(s) {','.join(slurm)} (CUDA_VISIBLE_DEVICES)"
    return None


@dataclass
class GpuClaim:
    """Devices held by this process; the lock descriptors keep them held until closed."""

    ids: list[str]
    fds: list[int] = field(default_factory=list)

    def release(self) -> None:
        """Give the devices back (also happens automatically when the process dies)."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __enter__(self) -> GpuClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(path: Path) -> int | None:
    """Open and exclusively lock ``path`` without blocking; None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # Record the holder for humans inspecting the lock directory; the lock is what counts.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _lock_name(device: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in device)
    return f"gpu-{safe}.lock"


def claim_gpus(
    count: int,
    pool: list[str] | None = None,
    lock_dir: Path | None = None,
    poll: float = POLL_SECONDS,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> GpuClaim:
    """Claim ``count`` devices of ``pool``, waiting while fewer than that are free.

    A partial claim is given back before waiting again, so two jobs that each need two of
    three devices cannot deadlock holding one each. ``timeout`` (seconds, None = forever)
    turns an endless wait into a :class:`UserError`.
    """
    pool = device_pool() if pool is None else pool
    lock_dir = default_lock_dir() if lock_dir is None else lock_dir
    if count < 1:
        raise UserError(f"the number of GPUs to claim must be at least 1, not {count}")
    if count > len(pool):
        found = ",".join(pool) if pool else "none"
        raise UserError(
            f"asked for {count} GPU(s) but this machine has {len(pool)} ({found}); "
            f"set {IDS_ENV} or CUDA_VISIBLE_DEVICES to the devices jobs may use"
        )
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the GPU lock directory {lock_dir}: {err}") from err
    start = time.monotonic()
    announced = False
    while True:
        claim = GpuClaim(ids=[])
        for device in pool:
            fd = _try_lock(lock_dir / _lock_name(device))
            if fd is not None:
                claim.ids.append(device)
                claim.fds.append(fd)
                if len(claim.ids) == count:
                    return claim
        claim.release()
        if timeout is not None and time.monotonic() - start > timeout:
            raise UserError(f"no {count} free GPU(s) of {','.join(pool)} within {timeout:g} s")
        if not announced:
            message = f"waiting for {count} free GPU(s) of {','.join(pool)} (locks in {lock_dir})"
            (on_wait or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
            announced = True
        time.sleep(poll)
