"""A cell trained packed (one ``pdetransfer train`` process) against K separate processes.

Unlike ``benchmarks/packing_model.py`` (one training step, in one process), this times the
real command line, start-up, data loading, normalisation statistics and validation included,
which is where packing pays on a CPU: the per-step gain is small (0.7x to 1.24x) but every
separate run pays its own interpreter and torch start-up (~2.8 s wall), its own data load and
its own validation passes. For each point (size, grid, N, K):

* ``packed``: ``pdetransfer train --lr ... --seed ... --out-pattern ...`` training the K
  members of a cell (learning rates x seeds) in one process; the pack falls back to training
  the members one after another in that process where
  :func:`pdetransfer.engine.models.fno_ensemble.packing_pays` says a packed step would be
  slower, and the results record which it did (``pack_size`` of the members' ``train.json``);
* ``separate``: one ``pdetransfer train --out ...`` process per member, one after another.
  Members of a cell do the same work (same N, batch, steps and model; only lr and seed
  differ), so to keep the whole benchmark within ~10 minutes on a shared 2-core machine only
  the first ``min(K, --separate-measured)`` members are run separately and the separate time
  of the cell is K times their mean; the results say how many were measured.

Every process runs on one thread (``--threads 1``, ``OMP_NUM_THREADS=1``). The budget is a
fixed, short ``--max-steps`` (default 10) with one validation check at the end on 32
validation samples; the data are real Poisson datasets made once (1024 train samples per
grid) with normalisation statistics given by ``--stats``, as the workflow passes them. Wall
time is measured, and CPU time (user + system of the child processes) too, since on a shared
machine other jobs inflate wall time but not CPU time; the speedups are reported for both.
Samples/s counts training samples (K x steps x batch) per second of wall time.

Run ``python benchmarks/packing.py`` (about 10 minutes) or ``--quick`` (seconds); results go
to ``benchmarks/results/packing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pdetransfer import __version__  # noqa: E402
from pdetransfer.atomic import write_json  # noqa: E402
from pdetransfer.data.datasets import generate_dataset  # noqa: E402
from pdetransfer.data.stats import compute_stats  # noqa: E402

LRS = ("1e-3", "3e-3", "3e-4", "1e-4", "5e-4")
SEEDS = ("0", "1")
#: members -> (learning rates, seeds) of a cell of that many members
CELLS = {4: (LRS[:2], SEEDS), 10: (LRS, SEEDS)}
BATCH = 32
VAL_SAMPLES = 32
TRAIN_SAMPLES = 1024


def make_data(root: Path, grid: int) -> dict[str, Path]:
    """A train set of 1024 Poisson samples, 32 validation samples and their statistics."""
    train = generate_dataset(
        "poisson", (1.0, 5.0), "train", TRAIN_SAMPLES, grid, 7, root / f"train{grid}.h5",
        progress=False, threads=1,
    )  # fmt: skip
    val = generate_dataset(
        "poisson", (1.0, 5.0), "val", VAL_SAMPLES, grid, 7, root / f"val{grid}.h5",
        progress=False, threads=1,
    )  # fmt: skip
    stats = root / f"stats{grid}.json"
    write_json(stats, compute_stats([train], progress=False))
    return {"train": train, "val": val, "stats": stats}


def timed(command: list[str]) -> tuple[float, float]:
    """Run one command; its wall seconds and CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": str(ROOT / "src"),
}


def point(
    root: Path, data: dict[str, Path], size: str, n: int, members: int, steps: int, measured: int
) -> dict[str, Any]:
    lrs, seeds = CELLS[members]
    base = [
        sys.executable, "-m", "pdetransfer", "train", "--data", str(data["train"]),
        "--val", str(data["val"]), "--stats", str(data["stats"]), "--model", size,
        "--n-train", str(n), "--batch-size", str(BATCH), "--max-steps", str(steps),
        "--val-every", str(steps), "--threads", "1", "--quiet",
    ]  # fmt: skip
    cell = root / f"{size}-n{n}-k{members}"
    packed_wall, packed_cpu = timed(
        [
            *base,
            "--lr",
            *lrs,
            "--seed",
            *seeds,
            "--out-pattern",
            f"{cell}/packed/lr{{lr}}/s{{seed}}",
        ]
    )
    pack_size = json.loads(
        (cell / "packed" / f"lr{lrs[0]}" / f"s{seeds[0]}" / "train.json").read_text()
    )["pack_size"]
    walls, cpus = [], []
    pairs = [(lr, seed) for lr in lrs for seed in seeds][:measured]
    for lr, seed in pairs:
        wall, cpu = timed(
            [*base, "--lr", lr, "--seed", seed, "--out", f"{cell}/separate/lr{lr}/s{seed}"]
        )
        walls.append(wall)
        cpus.append(cpu)
    separate_wall = members * sum(walls) / len(walls)
    separate_cpu = members * sum(cpus) / len(cpus)
    samples = members * steps * min(BATCH, n)
    return {
        "size": size,
        "n_train": n,
        "batch": min(BATCH, n),
        "members": members,
        "packed_as": "one pack" if pack_size == members else "one after another in one process",
        "separate_measured": len(pairs),
        "packed_wall_s": round(packed_wall, 3),
        "separate_wall_s": round(separate_wall, 3),
        "packed_cpu_s": round(packed_cpu, 3),
        "separate_cpu_s": round(separate_cpu, 3),
        "packed_samples_per_s": round(samples / packed_wall, 1),
        "separate_samples_per_s": round(samples / separate_wall, 1),
        "speedup_wall": round(separate_wall / packed_wall, 3),
        "speedup_cpu": round(separate_cpu / packed_cpu, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="xs, grid 32, N = 8, K = 4, 3 steps")
    parser.add_argument("--steps", type=int, default=10, help="fixed budget of every run")
    parser.add_argument(
        "--separate-measured", type=int, default=2, help="separate runs timed per cell"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "packing.json"))
    args = parser.parse_args(argv)
    sizes, grids, ns, ks = ("xs", "s"), (32, 64), (8, 32, 128, 1024), (4, 10)
    steps = args.steps
    if args.quick:
        sizes, grids, ns, ks, steps = ("xs",), (32,), (8,), (4,), 3
    started = time.perf_counter()
    points = []
    with tempfile.TemporaryDirectory(prefix="pdetransfer-packing-") as tmp:
        for grid in grids:
            data = make_data(Path(tmp), grid)
            for size in sizes:
                for n in ns:
                    for k in ks:
                        result = {
                            "grid": grid,
                            **point(
                                Path(tmp) / f"g{grid}",
                                data,
                                size,
                                n,
                                k,
                                steps,
                                args.separate_measured,
                            ),
                        }
                        print(json.dumps(result), flush=True)
                        points.append(result)
    xs_small = [p for p in points if p["size"] == "xs" and p["n_train"] <= 32]
    summary = {
        "benchmark": "a cell trained packed (one process) vs K separate pdetransfer train processes, CPU",
        "steps_per_run": steps,
        "batch": BATCH,
        "val_samples": VAL_SAMPLES,
        "threads": 1,
        "separate_estimate": "K x mean of the first separate_measured members' processes",
        "min_speedup_wall": min(p["speedup_wall"] for p in points),
        "min_speedup_cpu": min(p["speedup_cpu"] for p in points),
        "min_speedup_cpu_xs_n_le_32": min((p["speedup_cpu"] for p in xs_small), default=None),
        "points": points,
        "benchmark_seconds": round(time.perf_counter() - started, 1),
        "load_average_at_end": list(os.getloadavg()),
        "cpu": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_version": str(torch.__version__),
        "pdetransfer_version": __version__,
        "quick": args.quick,
    }
    write_json(Path(args.out), summary)
    print(f"wrote {args.out} in {summary['benchmark_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
