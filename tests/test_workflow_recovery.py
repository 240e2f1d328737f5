"""Recovering a study from a dataset file damaged after it was written, through ``snakemake``.

The documented recovery (docs/troubleshooting.md) is one command,
``snakemake --forcerun results/data/<dataset>/<split>.h5``; the jobs that read a damaged file
fail naming that command. Only the data rules run here (a few seconds).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from workflow_helpers import ROOT, same_dataset, snakemake

CONFIG = str(ROOT / "config" / "test.yaml")
FILE = "results/data/poisson_5_10/train.h5"
TARGETS = ["results/data/poisson_5_10/train.check.txt", "results/data/poisson_5_10/stats.json"]

pytestmark = pytest.mark.slow


def test_truncated_dataset_is_detected_and_regenerated(tmp_path: Path) -> None:
    options = ["--cores", "2", "--configfile", CONFIG]
    result = snakemake(tmp_path, *TARGETS, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    data = tmp_path / FILE
    clean = data.with_name("clean.h5")
    shutil.copyfile(data, clean)
    size = data.stat().st_size
    with data.open("r+b") as handle:  # a copy or a disk that gave up half-way
        handle.truncate(size // 3)

    result = snakemake(tmp_path, *TARGETS, *options)
    assert result.returncode != 0
    # the check rule puts the reader's one-line error, with the recovery command, on the console
    assert "truncated or corrupt" in result.stderr
    assert f"regenerate it (in the workflow: snakemake --forcerun {FILE})" in result.stderr
    assert not (tmp_path / TARGETS[0]).exists()  # no report claims the file passed
    for log in ("train.check.log", "stats.log"):  # every job that read it says the same
        text = (tmp_path / "results/logs/data/poisson_5_10" / log).read_text()
        assert f"snakemake --forcerun {FILE}" in text

    result = snakemake(tmp_path, *TARGETS, *options, "--forcerun", FILE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert same_dataset(data, clean)  # generation is deterministic: the same samples again
    assert (tmp_path / TARGETS[0]).read_text().rstrip().endswith("OK")
    result = snakemake(tmp_path, *TARGETS, "-n", *options)
    assert "Nothing to be done" in result.stdout + result.stderr
