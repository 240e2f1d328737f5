"""Stop training before the SLURM job's time limit, with no signal from outside.

SLURM's ``--signal=SIG@T`` warns every process of the job's steps up to a minute before
``T`` seconds before the limit -- and the step of a Snakemake job runs the job's own
``python -m snakemake``, which SIGUSR1 kills at once (its default action), after which SLURM
ends the step's other processes, the training possibly in the middle of saving. So the slurm
profile sends SIGURG, which every process of the chain but the training ignores by default.
A signal still depends on how the command was started: a ``B:`` prefix signals only the batch
shell, and another launcher or a site's ``srun`` wrapper may never pass it on. So the training
process also learns the job's end itself and sets an alarm (SIGALRM, one of the engine's stop
signals) a margin before it; the loop then stops at a step boundary, writes ``state.pt`` and
exits with 128 + SIGALRM, a failure Snakemake retries -- and the retry resumes.

The end is the *job's* end, not the rule's ``runtime``: a command started late in an allocation
(a member of a group job) has less time than its rule asked for. It comes from
``$SLURM_JOB_END_TIME`` (Unix seconds; exported by recent SLURM versions) or else from
``squeue -o %L`` (the time left). Outside SLURM, or for a job without a limit, nothing is set.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping

#: The margin is this fraction of the time left, within the bounds below (seconds). It must
#: cover one optimiser step, an epoch's validation and writing ``state.pt`` (seconds even for
#: the largest model), and leaves the rest of the allocation unused; SLURM kills the job at
#: the limit anyway, so a margin too short costs the work since the last checkpoint.
MARGIN_FRACTION = 0.05
MIN_MARGIN_SECONDS = 20.0
MAX_MARGIN_SECONDS = 300.0

_TIME_LEFT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def parse_time_left(text: str) -> float | None:
    """Seconds in squeue's ``%L`` (``[D-][H:]M:S``); None for UNLIMITED, NOT_SET or INVALID."""
    match = _TIME_LEFT.match(text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def seconds_left(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds until this SLURM job's time limit; None outside SLURM or without a limit."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    end = env.get("SLURM_JOB_END_TIME", "")
    if end.isdigit():
        return float(end) - time.time()
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%L"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_time_left(out.splitlines()[0]) if out.strip() else None


def stop_margin(left: float) -> float:
    """How long before the limit to stop, given the seconds left when training starts."""
    return min(MAX_MARGIN_SECONDS, max(MIN_MARGIN_SECONDS, MARGIN_FRACTION * left))


@contextlib.contextmanager
def alarm_before_time_limit(
    announce: bool = True, env: Mapping[str, str] | None = None
) -> Iterator[float | None]:
    """Arm SIGALRM a margin before the job's time limit for as long as the block runs.

    The caller must already handle SIGALRM (the engine's stop signals), or the alarm would end
    the process. Yields the seconds until the alarm, or None when there is no limit to meet.
    """
    left = seconds_left(env)
    if left is None:
        yield None
        return
    delay = max(left - stop_margin(left), 0.001)
    if announce:
        print(
            f"pdetransfer train: the SLURM job's time limit is in {left:.0f} s; stopping to "
            f"save state.pt after {delay:.0f} s if not done by then",
            file=sys.stderr,
            flush=True,
        )
    signal.setitimer(signal.ITIMER_REAL, delay)
    try:
        yield delay
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
