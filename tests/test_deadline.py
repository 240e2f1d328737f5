"""Stopping before the SLURM time limit (engine.runtime.deadline): the time left, the margin, and a
training that stops on its own alarm, exits 128 + SIGALRM and resumes to identical weights."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from engine_helpers import same_weights, train, train_args

from pdetransfer.engine.runtime import deadline


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0:45", 45.0),
        ("12:00", 720.0),
        ("1:02:03", 3723.0),
        ("2-00:00:10", 2 * 86400 + 10.0),
        ("UNLIMITED", None),
        ("NOT_SET", None),
        ("INVALID", None),
    ],
)
def test_squeue_time_left_is_parsed(text: str, seconds: float | None) -> None:
    assert deadline.parse_time_left(text) == seconds


def test_margin_is_a_fraction_of_the_time_left_within_bounds() -> None:
    assert deadline.stop_margin(60) == deadline.MIN_MARGIN_SECONDS
    assert deadline.stop_margin(2000) == pytest.approx(0.05 * 2000)
    assert deadline.stop_margin(48 * 3600) == deadline.MAX_MARGIN_SECONDS


def test_time_left_comes_from_slurm_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert deadline.seconds_left({}) is None
    end = int(time.time()) + 600
    left = deadline.seconds_left({"SLURM_JOB_ID": "7", "SLURM_JOB_END_TIME": str(end)})
    assert left is not None and 590 < left <= 600
    # Without SLURM_JOB_END_TIME: squeue's %L for this job (a stand-in squeue here).
    squeue = tmp_path / "squeue"
    squeue.write_text('#!/bin/sh\n[ "$3" = 7 ] && [ "$5" = "%L" ] && echo 1:02:03\n')
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert deadline.seconds_left({"SLURM_JOB_ID": "7"}) == 3723.0


def test_training_stops_before_the_time_limit_and_resumes_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ("--epochs", "40", "--batch-size", "8")
    assert train(train_args(tmp_path / "straight", *argv)) == 0

    run = tmp_path / "limited"
    # A job with ten minutes left: the alarm is armed for about ten minutes less the margin.
    # At step 3 it is brought forward to now, so the run stops at a step no machine's speed
    # decides (a real wait for it would race the training's start on a loaded machine).
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 600))
    armed: list[float] = []

    def fire_alarm_at_step_3(step: int) -> None:
        if step == 3:
            armed.append(signal.getitimer(signal.ITIMER_REAL)[0])
            signal.setitimer(signal.ITIMER_REAL, 0.001)
            while signal.getitimer(signal.ITIMER_REAL)[0] > 0:  # until it has gone off
                time.sleep(0.001)

    assert train(train_args(run, *argv), fire_alarm_at_step_3) == 128 + signal.SIGALRM
    delay = 600 - deadline.stop_margin(600)  # less the seconds the run took to start
    assert delay - 60 < armed[0] <= delay
    assert (run / "state.pt").exists() and not (run / "model.pt").exists()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed on the way out

    monkeypatch.delenv("SLURM_JOB_END_TIME")
    monkeypatch.delenv("SLURM_JOB_ID")
    steps: list[int] = []
    assert train(train_args(run, *argv), steps.append) == 0
    assert steps[0] == 4  # continued after the step the alarm stopped, not from the start
    assert same_weights(run / "model.pt", tmp_path / "straight" / "model.pt")
