"""Tiny datasets and runs shared by the training-engine tests (made once per test session).

Everything is small enough for a shared 2-core machine: 16x16 grids, tens of samples, the
"2,8" and "xs" models. The files are real datasets made by ``generate_dataset``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from pdetransfer.cli import build_parser
from pdetransfer.data.generate import generate_dataset
from pdetransfer.engine.training.command import train_command

GRID = 16
#: name -> (system, range, split, n_samples, grid)
FILES = {
    "pre_train": ("poisson", (1.0, 5.0), "train", 64, GRID),
    "pre_val": ("poisson", (1.0, 5.0), "val", 16, GRID),
    "pre_test": ("poisson", (1.0, 5.0), "test", 16, GRID),
    "down_train": ("poisson", (5.0, 10.0), "train", 32, GRID),
    "down_val": ("poisson", (5.0, 10.0), "val", 8, GRID),
    "down_test": ("poisson", (5.0, 10.0), "test", 12, GRID),
    "helm_train": ("helmholtz", (1.0, 10.0), "train", 24, GRID),
    "helm_val": ("helmholtz", (1.0, 10.0), "val", 8, GRID),
    "helm_test": ("helmholtz", (1.0, 10.0), "test", 8, GRID),
    "coarse_train": ("poisson", (1.0, 5.0), "train", 8, 32),
    "coarse_val": ("poisson", (1.0, 5.0), "val", 4, 32),
    "coarse_test": ("poisson", (1.0, 5.0), "test", 4, 32),
}


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pdetransfer-engine-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def dataset(name: str) -> Path:
    """Path of one of :data:`FILES`, generated on first use."""
    system, param_range, split, n, grid = FILES[name]
    out = workdir() / "data" / f"{name}.h5"
    return generate_dataset(system, param_range, split, n, grid, 7, out, progress=False, threads=1)


def train_args(out: Path, *extra: str, data: str = "pre_train", val: str = "pre_val") -> list[str]:
    """Command-line arguments of a tiny, fast training run (override with ``extra``)."""
    return [
        "train",
        "--data",
        str(dataset(data)),
        "--val",
        str(dataset(val)),
        "--model",
        "2,8",
        "--out",
        str(out),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--threads",
        "1",
        "--quiet",
        *extra,
    ]


def train(argv: list[str], after_step: Callable[[int], None] | None = None) -> int:
    """Run ``pdetransfer train`` in this process (faster than a subprocess)."""
    return train_command(build_parser().parse_args(argv), after_step)


@functools.cache
def pretrained() -> Path:
    """model.pt of a short pre-training on Poisson (1, 5)."""
    out = workdir() / "runs" / "pretrain"
    assert train(train_args(out, "--epochs", "8", "--batch-size", "8", "--model", "xs")) == 0
    return out / "model.pt"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load(a)["weights"], load(b)["weights"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
