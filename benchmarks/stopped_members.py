"""A pack whose members stop early: CPU time of a pack that drops them against one that keeps
computing them, side by side.

A pack of 8 members (learning rates x seeds of one cell: an FNO ensemble in a
``NormalizedOperator``, the study's loss, :class:`~pdetransfer.engine.training.ensemble_adam.
EnsembleAdam`) trains for a cap of ``H`` steps and validates every ``H / 10`` steps on one
shared validation batch, as :class:`~pdetransfer.engine.training.loop.Trainer` does. Six
members stop at 20% of the cap (at a check, as the plateau rule stops them), the other two
run to the cap. Two contenders run the very same steps:

* ``shrinking`` (the loop now): at the first step after the stop the pack keeps its running
  members only (:meth:`PackedNetwork.keep_members
  <pdetransfer.engine.models.packed.PackedNetwork.keep_members>` and
  :meth:`EnsembleAdam.keep_members
  <pdetransfer.engine.training.ensemble_adam.EnsembleAdam.keep_members>`, the calls of the
  loop's ``_shrink``);
* ``computing_all`` (the loop before): the stopped members are deactivated in the optimiser
  and their losses left out of the objective, but they stay on the member axis of every
  forward and backward pass, optimiser update and validation pass.

Each round runs both whole packs (fresh, same seeds) one after the other, alternating which
goes first, so that load from other processes hits both alike; CPU time (user + system of this
process, one thread) is summed over the rounds, since on a shared machine other processes
stretch wall time but not the CPU time a pack needs. Network construction is left out of the
timing. Each round also checks that the two members that ran to the cap end with bit-identical
weights in both contenders (the rows a pack keeps are the same numbers).

Run ``python benchmarks/stopped_members.py`` (about 3 minutes of CPU time) or ``--quick``
(seconds); results go to ``benchmarks/results/stopped_members.json`` and a table to
``benchmarks/results/stopped_members.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pdetransfer import __version__  # noqa: E402
from pdetransfer.atomic import atomic_path, write_json  # noqa: E402
from pdetransfer.engine.losses import per_sample_loss  # noqa: E402
from pdetransfer.engine.models.build import build_model, build_packed  # noqa: E402
from pdetransfer.engine.models.normalization import (  # noqa: E402
    CHANNELS,
    Normalization,
    NormalizedOperator,
)
from pdetransfer.engine.models.registry import parse_model  # noqa: E402
from pdetransfer.engine.runtime.allocator import retain_freed_memory  # noqa: E402
from pdetransfer.engine.training.ensemble_adam import EnsembleAdam  # noqa: E402

NORM = Normalization(1.0, (1.0,) * 6)
MEMBERS, STOPPED, STOP_SHARE = 8, 6, 0.2
LRS = (1e-3, 3e-3, 3e-4, 1e-4)  # x seeds 0 and 1: the 8 members
VAL_SAMPLES = 32
#: (size, grid, batch): the study's batch at grid 32, and a small-N cell's batch at grid 64.
POINTS = (("xs", 32, 32), ("xs", 64, 8))


def pack(size: str, horizon: int) -> tuple[NormalizedOperator, EnsembleAdam]:
    """A fresh pack of the 8 members, each initialised by its seed as a separate run is."""
    spec = parse_model(size, len(CHANNELS))
    networks = []
    for k in range(MEMBERS):
        torch.manual_seed(k % 2)
        networks.append(build_model(spec))
    operator = NormalizedOperator(build_packed(networks), NORM)
    lrs = [LRS[k // 2] for k in range(MEMBERS)]
    return operator, EnsembleAdam(operator.parameters(), lrs, [horizon] * MEMBERS)


def train_pack(
    size: str, grid: int, batch: int, horizon: int, shrink: bool
) -> tuple[float, dict[int, list[torch.Tensor]]]:
    """CPU seconds of one pack's training (steps and checks) and its survivors' weights."""
    operator, optimizer = pack(size, horizon)
    stop = [round(STOP_SHARE * horizon)] * STOPPED + [horizon] * (MEMBERS - STOPPED)
    val_every = max(1, horizon // 10)
    gen = torch.Generator().manual_seed(0)
    pool = [
        (
            torch.randn(MEMBERS, batch, grid, grid, generator=gen),
            torch.rand(MEMBERS, batch, 6, generator=gen) + 0.1,
            torch.randn(MEMBERS, batch, grid, grid, generator=gen),
        )
        for _ in range(4)
    ]
    val_f = torch.randn(VAL_SAMPLES, grid, grid, generator=gen)
    val_c = torch.rand(VAL_SAMPLES, 6, generator=gen) + 0.1
    rows = list(range(MEMBERS))  # the member at each row of the pack
    start = time.process_time()
    for step in range(horizon):
        running = [k for k in range(MEMBERS) if step < stop[k]]
        if shrink and running != rows:  # the loop's _shrink
            keep = [rows.index(k) for k in running]
            operator.network.keep_members(keep)  # type: ignore[operator]
            optimizer.keep_members(keep, operator.network.parameters())
            rows = running
        f, c, u = (t[rows] for t in pool[step % len(pool)])
        prediction = operator(f, c)
        losses = per_sample_loss(prediction.flatten(0, 1), u.flatten(0, 1), "sse")
        losses = losses.view(len(rows), batch).mean(1)
        live = [r for r, k in enumerate(rows) if k in running]
        optimizer.zero_grad()
        losses[torch.tensor(live)].sum().backward()
        optimizer.step()
        if (step + 1) % val_every == 0 or step + 1 == horizon:
            operator.eval()
            with torch.no_grad():
                operator(
                    val_f.unsqueeze(0).expand(len(rows), *val_f.shape),
                    val_c.unsqueeze(0).expand(len(rows), *val_c.shape),
                )
            operator.train()
            for r, k in enumerate(rows):
                if step + 1 == stop[k]:  # stopped at this check: frozen from now on
                    optimizer.deactivate(r)
    seconds = time.process_time() - start
    survivors = {
        k: [p[rows.index(k)].detach().clone() for p in operator.parameters()]
        for k in range(STOPPED, MEMBERS)
    }
    return seconds, survivors


def measure(size: str, grid: int, batch: int, horizon: int, rounds: int) -> dict[str, Any]:
    cpu = {"shrinking": 0.0, "computing_all": 0.0}
    train_pack(size, grid, batch, max(10, horizon // 10), True)  # warm-up
    for i in range(rounds):
        order = [True, False] if i % 2 == 0 else [False, True]
        weights = {}
        for shrink in order:
            seconds, weights[shrink] = train_pack(size, grid, batch, horizon, shrink)
            cpu["shrinking" if shrink else "computing_all"] += seconds
        for k in weights[True]:
            if not all(
                torch.equal(a, b) for a, b in zip(weights[True][k], weights[False][k], strict=True)
            ):
                raise SystemExit(f"member {k} ended differently in the two packs")
    ratio = cpu["shrinking"] / cpu["computing_all"]
    steps_done = STOPPED * round(STOP_SHARE * horizon) + (MEMBERS - STOPPED) * horizon
    return {
        "size": size,
        "grid": grid,
        "batch": batch,
        "cap_steps": horizon,
        "rounds": rounds,
        "shrinking_cpu_s": round(cpu["shrinking"] / rounds, 3),
        "computing_all_cpu_s": round(cpu["computing_all"] / rounds, 3),
        "ratio": round(ratio, 3),
        "member_steps_share": round(steps_done / (MEMBERS * horizon), 3),
        "survivors_bit_identical": True,
    }


def write_table(path: Path, summary: dict[str, Any]) -> None:
    lines = [
        "# Stopped members: shrinking pack vs computing all members (CPU time)",
        "",
        f"{MEMBERS} members, {STOPPED} stop at {STOP_SHARE:.0%} of the cap; "
        f"{summary['threads']} thread; written by `benchmarks/stopped_members.py`.",
        "",
        "| size | grid | batch | cap | rounds | shrinking CPU s | computing all CPU s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in summary["points"]:
        lines.append(
            f"| {p['size']} | {p['grid']} | {p['batch']} | {p['cap_steps']} | {p['rounds']} | "
            f"{p['shrinking_cpu_s']} | {p['computing_all_cpu_s']} | {p['ratio']} |"
        )
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="grid 32, batch 8, cap 10, 1 round")
    parser.add_argument("--cap", type=int, default=50, help="the cap H of every pack")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender per point")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stopped_members"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    retained = retain_freed_memory()  # as the training command does for several members
    points, cap, rounds = POINTS, args.cap, args.rounds
    if args.quick:
        points, cap, rounds = (("xs", 32, 8),), 10, 1
    started = time.perf_counter()
    results = []
    for size, grid, batch in points:
        result = measure(size, grid, batch, cap, rounds)
        print(result, flush=True)
        results.append(result)
    summary = {
        "benchmark": "a pack of 8 whose 6 members stop at 20% of the cap: shrinking vs "
        "computing all members, CPU time in one process, interleaved",
        "members": MEMBERS,
        "stopped": STOPPED,
        "stop_share": STOP_SHARE,
        "val_samples": VAL_SAMPLES,
        "threads": 1,
        "freed_memory_retained": retained,
        "max_ratio": max(p["ratio"] for p in results),
        "points": results,
        "benchmark_seconds": round(time.perf_counter() - started, 1),
        "load_average_at_end": list(os.getloadavg()),
        "cpu": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_version": str(torch.__version__),
        "pdetransfer_version": __version__,
        "quick": args.quick,
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), summary)
    write_table(out.with_suffix(".md"), summary)
    print(f"wrote {out}.json and {out}.md in {summary['benchmark_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
