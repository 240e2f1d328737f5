"""Running the repository's Snakemake workflow from tests, and reading what it reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"


def snakemake_argv(workdir: Path) -> list[str]:
    """The command line running the repository's workflow in ``workdir``."""
    argv = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE)]
    return [*argv, "--directory", str(workdir)]


def snakemake_env() -> dict[str, str]:
    """The environment with this interpreter's scripts (``pdetransfer``) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# A sitecustomize module that makes the ``pdetransfer train`` of a run directory hold once that
# run has saved its resume state, until a signal arrives: a test signals or kills it then, at a
# point no machine's speed decides (a signal sent on seeing state.pt races a training that may
# finish first).
HOLD = textwrap.dedent(
    '''
    """Test-only: the ``pdetransfer train`` of RUN holds once RUN/state.pt exists."""
    import os, signal
    from pathlib import Path

    from pdetransfer import cli

    RUN, MARKER = os.environ["PDETRANSFER_TEST_HOLD"].split(os.pathsep)


    def train(args):
        from pdetransfer.engine.training.command import train_command
        from pdetransfer.engine.training.config import TrainConfig

        members = TrainConfig.from_args(args).members
        mine = Path(RUN) in {member.out.resolve() for member in members}

        def hold(step):
            if mine and not Path(MARKER).exists() and (Path(RUN) / "state.pt").exists():
                Path(MARKER).write_text(f"{os.getpid()} {step}")
                signal.pause()  # returns once a signal's handler has run

        return train_command(args, hold)


    def _add_train(sub):
        cli._add_train(sub)
        sub.choices["train"].set_defaults(_handler="sitecustomize:train")


    cli.REGISTRARS[cli.REGISTRARS.index(cli._add_train)] = _add_train
    '''
)


def held_training_env(site: Path, run: Path, marker: Path) -> dict[str, str]:
    """:func:`snakemake_env` in which the training of ``run`` holds once it has saved its
    resume state, after writing ``marker`` (its process id and step), until a signal."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(HOLD)
    env = snakemake_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["PDETRANSFER_TEST_HOLD"] = f"{run.resolve()}{os.pathsep}{marker}"
    return env


def wait_for_hold(marker: Path, proc: subprocess.Popen, timeout: float = 600) -> int:
    """The process id of the held training, once ``marker`` says it holds."""
    deadline = time.monotonic() + timeout
    while not (marker.exists() and marker.read_text()):
        assert proc.poll() is None, "the study stopped before the training held"
        assert time.monotonic() < deadline, f"no training held within {timeout:g} s"
        time.sleep(0.05)
    return int(marker.read_text().split()[0])


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` and wait for it."""
    return subprocess.run(
        [*snakemake_argv(workdir), *args],
        capture_output=True,
        text=True,
        env=snakemake_env(),
        timeout=timeout,
    )


def job_counts(output: str) -> Counter:
    """The "Job stats" table of a snakemake run or dry-run as {rule: count}."""
    counts: Counter = Counter()
    match = re.search(
        r"Job stats:\s*\n\s*job\s+count\s*\n[- ]+\n(.*?)\n\s*total\s+(\d+)", output, re.S
    )
    if match is None:
        return counts
    for line in match.group(1).splitlines():
        rule, count = line.split()
        counts[rule] = int(count)
    assert sum(counts.values()) == int(match.group(2))
    return counts


def same_dataset(a: Path, b: Path) -> bool:
    """The same samples and attributes, but for ``generation`` (when, where and how fast the
    file was made, which a regenerated file rightly tells anew)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        attrs = [{k: v for k, v in f.attrs.items() if k != "generation"} for f in (fa, fb)]
        same_attrs = attrs[0].keys() == attrs[1].keys() and all(
            np.array_equal(attrs[0][k], attrs[1][k]) for k in attrs[0]
        )
        return (
            same_attrs
            and fa.keys() == fb.keys()
            and all(np.array_equal(fa[k][()], fb[k][()]) for k in fa)
        )
