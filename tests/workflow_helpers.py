"""Running the repository's Snakemake workflow from tests, and reading what it reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
