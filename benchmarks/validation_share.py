"""Validation's share of a training run's work, validating every epoch against the schedule.

For the reproduce study's sizes (128 validation samples, 64 x 64 grid, model xs, batch
min(32, N)) and N = 8 ... 1024, the share of a run's forward+backward work spent on validation
is computed two ways, side by side, for validation every epoch ("before") and on the schedule
of :mod:`pdetransfer.engine.training.schedule` ("after"):

* ``counted``: in forward-pass units (a validation pass over V samples = V units, a training
  step = 3 B units), as the schedule itself counts;
* ``measured``: from seconds measured here, on this machine, for one training step at each
  batch size and one validation pass: ``checks * t_val / (steps * t_step + checks * t_val)``.

Two horizons per N: the reproduce study's fixed budget (10 epochs, at least 120 steps) and a
plateau rule's cap of 2,000 steps. Results go to ``benchmarks/results/validation_share.json``
with the before/after ratios of the share and of the run's total seconds.

    PYTHONPATH=src python benchmarks/validation_share.py
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pdetransfer import __version__
from pdetransfer.engine.losses import per_sample_loss, relative_l2
from pdetransfer.engine.models.fno import FNO
from pdetransfer.engine.models.normalization import (
    CHANNELS,
    COEFFICIENTS,
    Normalization,
    NormalizedOperator,
)
from pdetransfer.engine.models.registry import parse_model
from pdetransfer.engine.training.schedule import checks, choose_val_every, validation_share

NS = [8, 32, 128, 512, 1024]
GRID, VAL, MODEL, BATCH = 64, 128, "xs", 32
EPOCHS, MIN_STEPS, CAP = 10, 120, 2000


def fixed_budget(n: int) -> int:
    """Steps of the reproduce study's fixed budget: 10 epochs, raised to at least 120 steps."""
    per_epoch = math.ceil(n / min(BATCH, n))
    return per_epoch * max(EPOCHS, math.ceil(MIN_STEPS / per_epoch))


def _operator() -> NormalizedOperator:
    torch.manual_seed(0)
    network = FNO(parse_model(MODEL, len(CHANNELS)))
    normalization = Normalization(1.0, tuple(1.0 for _ in COEFFICIENTS))
    return NormalizedOperator(network, normalization)


def _sample(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f = torch.randn(n, GRID, GRID)
    return f, torch.rand(n, len(COEFFICIENTS)), torch.randn(n, GRID, GRID)


def time_step(operator: NormalizedOperator, batch: int, repeats: int) -> float:
    """Median seconds of one Adam step (forward, SSE loss, backward, update) at ``batch``."""
    optimizer = torch.optim.Adam(operator.parameters(), lr=1e-4)
    f, c, u = _sample(batch)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        loss = per_sample_loss(operator(f, c), u, "sse").mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:  # the first steps pay for allocation
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def time_validation(operator: NormalizedOperator, batch: int, repeats: int) -> float:
    """Median seconds of one validation pass over VAL samples in chunks of ``batch``."""
    f, c, u = _sample(VAL)
    operator.eval()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        for lo in range(0, VAL, batch):
            relative_l2(operator(f[lo : lo + batch], c[lo : lo + batch]), u[lo : lo + batch])
        if i >= 1:
            times.append(time.perf_counter() - start)
    operator.train()
    return statistics.median(times)


def schedule_row(
    steps: int, batch: int, every: int, t_step: float, t_val: float
) -> dict[str, float | int]:
    n_checks = checks(steps, every)
    val_seconds = n_checks * t_val
    total = steps * t_step + val_seconds
    return {
        "val_every": every,
        "checks": n_checks,
        "share_counted": validation_share(steps, batch, VAL, every),
        "share_measured": val_seconds / total,
        "run_seconds_measured": total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per number")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results" / "validation_share.json"),
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    operator = _operator()
    batches = sorted({min(BATCH, n) for n in NS})
    t_step = {b: time_step(operator, b, args.repeats) for b in batches}
    t_val = {b: time_validation(operator, b, max(3, args.repeats // 3)) for b in batches}
    rows = []
    for n in NS:
        batch = min(BATCH, n)
        per_epoch = math.ceil(n / batch)
        for horizon_name, steps in (("fixed_budget", fixed_budget(n)), ("cap_2000", CAP)):
            before = schedule_row(steps, batch, per_epoch, t_step[batch], t_val[batch])
            every = choose_val_every(steps, batch, VAL, steps_per_epoch=per_epoch)
            after = schedule_row(steps, batch, every, t_step[batch], t_val[batch])
            rows.append(
                {
                    "n": n,
                    "batch": batch,
                    "horizon": horizon_name,
                    "steps": steps,
                    "before_every_epoch": before,
                    "after_schedule": after,
                    "share_ratio_before_over_after": before["share_measured"]
                    / after["share_measured"],
                    "run_time_ratio_before_over_after": before["run_seconds_measured"]
                    / after["run_seconds_measured"],
                }
            )
            print(
                f"N={n:5d} {horizon_name:12s} steps {steps:5d}: share every epoch "
                f"{before['share_counted']:.1%} counted / {before['share_measured']:.1%} "
                f"measured ({before['checks']} checks); schedule {after['share_counted']:.1%} / "
                f"{after['share_measured']:.1%} ({after['checks']} checks, every "
                f"{after['val_every']}); run time x{rows[-1]['run_time_ratio_before_over_after']:.2f}"
            )
    # How well "3 B units per step, V per validation pass" matches the measured seconds.
    units = {str(b): (t_step[b] / (3 * b)) / (t_val[b] / VAL) for b in batches}
    result = {
        "benchmark": "validation_share",
        "setup": {
            "model": MODEL,
            "grid": GRID,
            "val_samples": VAL,
            "batch_rule": f"min({BATCH}, N)",
            "fixed_budget": f"{EPOCHS} epochs, at least {MIN_STEPS} steps",
            "cap": CAP,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        "seconds_per_train_step": {str(b): t_step[b] for b in batches},
        "seconds_per_validation_pass": {str(b): t_val[b] for b in batches},
        "train_unit_over_val_unit_measured": units,
        "rows": rows,
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_version": str(torch.__version__),
        "pdetransfer_version": __version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
