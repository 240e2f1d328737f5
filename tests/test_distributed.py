"""Two gloo processes under a real ``torchrun`` train like one process with the same batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import load, train, train_args


def _torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("loss", ["sse", "rel_l2"])
def test_two_process_run_matches_one_process(tmp_path: Path, loss: str) -> None:
    # 19 samples in batches of 8: the last global batch (3) splits unevenly, 2 + 1.
    extra = ("--n-train", "19", "--batch-size", "8", "--epochs", "2", "--loss", loss)
    single, double = tmp_path / "one", tmp_path / "two"
    assert train(train_args(single, *extra)) == 0

    command = [*_torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "pdetransfer"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run(
        [*command, *train_args(double, *extra)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("pdetransfer train: trained 6 steps (2 epochs") == 1  # rank 0

    assert sorted(p.name for p in double.iterdir()) == [
        "final.pt",
        "log.csv",
        "model.pt",
        "train.json",
    ]
    assert json.loads((double / "train.json").read_text())["world_size"] == 2
    for a, b in zip(_rows(single), _rows(double), strict=True):
        assert (a["step"], a["epoch"], a["lr"]) == (b["step"], b["epoch"], b["lr"])
        for key in ("train_loss", "val_rel_l2"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4)
    one, two = load(single / "model.pt")["weights"], load(double / "model.pt")["weights"]
    assert one.keys() == two.keys()  # saved unwrapped: no DDP "module." prefix
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-6), key
