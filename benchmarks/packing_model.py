"""Training-step time of K runs packed as one ensemble against K separate steps, on CPU.

For each point (size, grid, batch, K) the same K members take one training step (forward of
the normalised operator, the study's loss, backward, optimiser) two ways in the same process,
interleaved round by round so that load from other processes hits both alike:

* ``separate``: K ordinary runs one after another, each ``FNO`` + ``NormalizedOperator`` +
  ``torch.optim.Adam`` + ``LambdaLR``, exactly as ``pdetransfer train`` builds them;
* ``packed``: one :class:`~pdetransfer.engine.models.fno_ensemble.EnsembleFNO` in a
  ``NormalizedOperator`` with :class:`~pdetransfer.engine.training.ensemble_adam.EnsembleAdam`;
* ``vmap`` (at K = 4): the alternative design, ``torch.func.vmap`` of the plain FNO over the
  same stacked parameters, with the same optimiser.

The whole grid runs twice, each time in a fresh process: with glibc's malloc as it comes
(``default``) and after :func:`~pdetransfer.engine.runtime.allocator.retain_freed_memory`
(``retain``), because the packed step's large activations make the allocator's page faults a
first-order cost.

The batch is ``min(32, N)``: N = 8 trains at batch 8 and N = 32, 128, 1024 all at batch 32, so
per step they are one measurement (their runs differ in steps per epoch, not in step time); the
results list every N with the batch it implies. Separately, the start-up every run process
pays before its first step (``import torch, pdetransfer.engine.training.command`` in a fresh
interpreter) is timed, since packing saves K - 1 of those as well.

For each mode and model width, the largest ensemble activation size
``K * batch * width * grid**2`` up to which every measured point was packed no slower than
separate (speedup >= 1 - :data:`TOLERANCE`) is written out as ``derived_limits_by_width``;
:data:`pdetransfer.engine.models.fno_ensemble.PACKING_LIMITS` holds those values (a test checks they
agree) and :func:`pdetransfer.engine.models.fno_ensemble.packing_pays` applies them.
``--derive-only`` recomputes them from the stored points.

Run ``python benchmarks/packing_model.py`` (about 7 minutes on one core) or with ``--quick``
(seconds) while developing; results go to ``benchmarks/results/packing_model.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pdetransfer import __version__
from pdetransfer.engine.models.fno import FNO
from pdetransfer.engine.models.fno_ensemble import EnsembleFNO
from pdetransfer.engine.models.normalization import CHANNELS, Normalization, NormalizedOperator
from pdetransfer.engine.models.registry import parse_model
from pdetransfer.engine.runtime.allocator import retain_freed_memory
from pdetransfer.engine.training.ensemble_adam import EnsembleAdam

NORM = Normalization(1.0, (1.0,) * 6)
N_VALUES = (8, 32, 128, 1024)
LR, HORIZON = 1e-3, 1000
#: glibc malloc as it comes, and after :func:`retain_freed_memory`; each in its own process.
MODES = ("default", "retain")
#: A point counts as "packing no slower" at a speedup of at least 1 - TOLERANCE: repeated
#: measurements of one configuration spread by a few percent (``separate_repeat_spread``).
TOLERANCE = 0.05


def loss_of(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The study's loss (per-sample SSE, mean over the batch), summed over any member axis."""
    return (prediction - target).square().sum(dim=(-2, -1)).mean(-1).sum()


def time_point(
    size: str, grid: int, batch: int, members: int, seconds: float, vmap: bool
) -> dict[str, float]:
    """Least CPU seconds of one packed step, of K separate steps and (``vmap``) of the
    torch.func alternative, over rounds that take about ``seconds`` per contender (3 to 30).

    CPU time (user + system, this process) rather than wall time: the machines this runs on
    are shared, and other processes' load stretches wall time but not the CPU time a step
    needs; system time keeps page-fault costs in.
    """
    spec = parse_model(size, len(CHANNELS))
    networks = []
    for seed in range(members):
        torch.manual_seed(seed)
        networks.append(FNO(spec))
    f = torch.randn(members, batch, grid, grid)
    c = torch.rand(members, batch, 6) + 0.1
    u = torch.randn(members, batch, grid, grid)

    packed = NormalizedOperator(EnsembleFNO(networks), NORM)
    ensemble_adam = EnsembleAdam(packed.parameters(), [LR] * members, [HORIZON] * members)
    runs = []
    for network in networks:
        operator = NormalizedOperator(network, NORM)
        adam = torch.optim.Adam(operator.parameters(), lr=LR)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            adam, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, HORIZON) / HORIZON))
        )
        runs.append((operator, adam, schedule))

    def packed_step() -> None:
        ensemble_adam.zero_grad()
        loss_of(packed(f, c), u).backward()
        ensemble_adam.step()

    def separate_steps() -> None:
        for k, (operator, adam, schedule) in enumerate(runs):
            adam.zero_grad(set_to_none=True)
            loss_of(operator(f[k], c[k]), u[k]).backward()
            adam.step()
            schedule.step()

    # The alternative the ensemble module was chosen against: the plain FNO's forward,
    # vmapped over stacked parameters (the ensemble's own, whose names are the FNO's).
    template = NormalizedOperator(FNO(spec), NORM)
    stacked = {f"network.{n}": p for n, p in packed.network.named_parameters()}

    def member_forward(
        params: dict[str, torch.Tensor], f: torch.Tensor, c: torch.Tensor
    ) -> torch.Tensor:
        return torch.func.functional_call(template, params, (f, c))

    batched = torch.func.vmap(member_forward)

    def vmap_step() -> None:
        ensemble_adam.zero_grad()
        loss_of(batched(stacked, f, c), u).backward()
        ensemble_adam.step()

    steps = {"packed": packed_step, "separate": separate_steps}
    if vmap:
        steps["vmap"] = vmap_step
    best = {name: math.inf for name in steps}
    start = time.process_time()
    for step in steps.values():  # warm-up: DFT matrices, optimiser state, allocator
        step()
    warmup = time.process_time() - start
    rounds = max(3, min(30, math.ceil(seconds * len(steps) / warmup)))
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.process_time()
            step()
            best[name] = min(best[name], time.process_time() - start)
    return best


def startup_seconds(repeats: int) -> tuple[float, float]:
    """Best wall and CPU seconds of a fresh interpreter importing torch and the trainer."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    command = [sys.executable, "-c", "import torch, pdetransfer.engine.training.command"]
    wall = cpu = math.inf
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env)
        wall = min(wall, time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        cpu = min(cpu, used)
    return wall, cpu


def derive_limits(points: list[dict[str, Any]]) -> dict[str, int]:
    """Per model width, the largest activation size up to which packing was no slower.

    "No slower" is a speedup of at least ``1 - TOLERANCE``: within the spread of repeated
    measurements (see :func:`noise`). Keys are widths as strings (JSON object keys).
    """
    limits = {}
    for width in sorted({int(p["width"]) for p in points}):
        ordered = sorted((p for p in points if p["width"] == width), key=lambda p: p["activations"])
        limit = 0
        for point in ordered:
            if point["speedup"] < 1.0 - TOLERANCE:
                break
            limit = int(point["activations"])
        limits[str(width)] = limit
    return limits


def noise(points: list[dict[str, Any]]) -> dict[str, float]:
    """Spread of repeated measurements: separate runs' per-sample throughput of one
    configuration is measured once at each K, and should not depend on K."""
    by_config: dict[tuple[Any, ...], list[float]] = {}
    for p in points:
        key = (p["size"], p["grid"], p["batch"])
        by_config.setdefault(key, []).append(float(p["separate_samples_per_s"]))
    spreads = sorted(max(v) / min(v) - 1 for v in by_config.values() if len(v) > 1)
    if not spreads:
        return {}
    return {"median": round(statistics.median(spreads), 3), "max": round(spreads[-1], 3)}


def measure(quick: bool, seconds: float) -> list[dict[str, object]]:
    """Every point of the grid of sizes, grids, batches and K, in this process."""
    torch.set_num_threads(1)
    sizes, grids, ks = (["xs"], [32], [4]) if quick else (["xs", "s"], [32, 64], [4, 10])
    batches = sorted({min(32, n) for n in N_VALUES})
    points: list[dict[str, object]] = []
    for size in sizes:
        width = parse_model(size, len(CHANNELS)).width
        for grid in grids:
            for batch in batches:
                for members in ks:
                    # vmap is timed at K = 4 only: enough to show the choice, half the cost.
                    best = time_point(size, grid, batch, members, seconds, members == 4)
                    samples = members * batch
                    point: dict[str, object] = {
                        "size": size,
                        "grid": grid,
                        "batch": batch,
                        "n_train": [n for n in N_VALUES if min(32, n) == batch],
                        "members": members,
                        "width": width,
                        "activations": members * batch * width * grid * grid,
                        "separate_step_s": round(best["separate"], 5),
                        "packed_step_s": round(best["packed"], 5),
                        "separate_samples_per_s": round(samples / best["separate"], 1),
                        "packed_samples_per_s": round(samples / best["packed"], 1),
                        "speedup": round(best["separate"] / best["packed"], 3),
                    }
                    if "vmap" in best:
                        point["vmap_step_s"] = round(best["vmap"], 5)
                        point["packed_vs_vmap"] = round(best["vmap"] / best["packed"], 3)
                    points.append(point)
                    print(json.dumps(point), file=sys.stderr, flush=True)
    return points


def derived(points: list[dict[str, Any]]) -> dict[str, Any]:
    """One allocator mode's entry of the results: the rule's limits, the noise, the points."""
    return {
        "derived_limits_by_width": derive_limits(points),
        "tolerance": TOLERANCE,
        "separate_repeat_spread": noise(points),
        "points": points,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="xs, grid 32, K = 4, short rounds")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="timing per contender and point (best of)"
    )
    parser.add_argument("--allocator", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--derive-only",
        action="store_true",
        help="recompute the derived limits of an existing --out file without measuring",
    )
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results" / "packing_model.json"),
    )
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else args.seconds
    if args.derive_only:
        out = Path(args.out)
        report = json.loads(out.read_text())
        for mode in MODES:
            report[mode] = derived(report[mode]["points"])
        out.write_text(json.dumps(report, indent=2) + "\n")
        print({mode: report[mode]["derived_limits_by_width"] for mode in MODES})
        return 0
    if args.allocator:  # one allocator mode, in a process of its own: print the points
        if args.allocator == "retain" and not retain_freed_memory():
            raise SystemExit("retain_freed_memory() is not available on this platform")
        print(json.dumps(measure(args.quick, seconds)))
        return 0

    started = time.perf_counter()
    startup, startup_cpu = startup_seconds(2 if args.quick else 3)
    print(
        f"start-up (import torch, pdetransfer.engine.training.command): {startup:.2f} s wall, "
        f"{startup_cpu:.2f} s CPU",
        flush=True,
    )
    modes = {}
    for mode in MODES:
        print(f"allocator {mode}:", flush=True)
        command = [sys.executable, __file__, "--allocator", mode, "--seconds", str(seconds)]
        command += ["--quick"] if args.quick else []
        result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        points = json.loads(result.stdout)
        modes[mode] = derived(points)

    report = {
        "benchmark": "one training step of K runs: packed ensemble vs K separate steps, CPU",
        "threads": 1,
        "seconds_per_contender": seconds,
        "statistic": "least CPU time (user + system) of 3 to 30 interleaved rounds",
        "quick": args.quick,
        "startup_s": round(startup, 3),
        "startup_cpu_s": round(startup_cpu, 3),
        "startup_what": "fresh python -c 'import torch, pdetransfer.engine.training.command'",
        "allocator_modes": {
            "default": "glibc malloc as configured by default",
            "retain": "after pdetransfer.engine.runtime.allocator.retain_freed_memory()",
        },
        **modes,
        "benchmark_seconds": round(time.perf_counter() - started, 1),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "pdetransfer_version": __version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    limits = {mode: modes[mode]["derived_limits_by_width"] for mode in MODES}
    print(f"derived limits by width {limits}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
