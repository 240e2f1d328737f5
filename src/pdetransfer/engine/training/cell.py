"""The members of one ``pdetransfer train`` call: which to train, which to resume, how to pack.

``--lr A B C --seed 0 1`` asks for the six runs (A, 0), (A, 1), ... of one cell; each writes
the files a separate run writes, in ``--out-pattern`` with ``{lr}`` (as spelled on the command
line) and ``{seed}`` filled in, so ``--lr 1e-3 --seed 0 --out-pattern 'DIR/lr{lr}/s{seed}'``
is the separate run with ``--out DIR/lr1e-3/s0``.

Each member is in one of four states, decided from its own directory:

* ``model.pt`` with the same configuration: finished, left alone;
* ``final.pt`` (the second name of a finished ``model.pt``, see
  :mod:`pdetransfer.engine.training.run_files`) with the same configuration: finished, its outputs are
  re-emitted without training (what makes adding a learning rate or seed to a packed
  Snakemake job cheap);
* ``state.pt``: interrupted, resumed from its own state;
* none of these: trained from the start.

Members to train are grouped by the step they resume from (a pack shares one loop position),
and a group is trained as one pack when that pays (on a GPU always: one small model uses a
sliver of it; on the CPU by :func:`pdetransfer.engine.models.fno_ensemble.packing_pays`, measured per
step), else member by member in this same process -- which still saves a process start-up,
the data loads and the validation set's load per member. Either way every member's result is
that of its separate run (``tests/test_packing.py`` states the tolerances). A pack resumed
with all its members is bit-identical to an uninterrupted one; when some members had already
finished before the kill, the others resume as a smaller pack, whose products may be summed
in another order (the same float32 tolerance as packed against separate).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdetransfer.engine.models.fno_ensemble import packing_pays
from pdetransfer.errors import UserError


@dataclass(frozen=True)
class MemberSpec:
    """One (learning rate, seed) of the call and its run directory."""

    lr: float
    seed: int
    out: Path

    def args(self, args: argparse.Namespace) -> argparse.Namespace:
        """The arguments of this member's separate run."""
        return argparse.Namespace(
            **{**vars(args), "lr": self.lr, "seed": self.seed, "out": self.out}
        )


def member_specs(args: argparse.Namespace) -> list[MemberSpec]:
    """The members asked for, learning rate major; refuses ambiguous or clashing outputs."""
    lrs: list[str] = [str(v) for v in args.lr]
    seeds: list[int] = list(args.seed)
    values = []
    for text in lrs:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--lr takes numbers, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"--lr must be positive, got {text}")
        values.append(value)
    if len(set(values)) < len(values) or len(set(seeds)) < len(seeds):
        raise UserError("--lr and --seed must not repeat a value")
    pattern = args.out_pattern
    if (args.out is None) == (pattern is None):
        raise UserError("give exactly one of --out (one run) and --out-pattern (several)")
    if pattern is None:
        if len(lrs) * len(seeds) > 1:
            raise UserError(
                "several --lr or --seed values need --out-pattern with {lr} and {seed}, "
                "e.g. --out-pattern 'runs/lr{lr}/s{seed}'"
            )
        return [MemberSpec(values[0], seeds[0], Path(args.out))]
    for key, count in (("{lr}", len(lrs)), ("{seed}", len(seeds))):
        if count > 1 and key not in pattern:
            raise UserError(
                f"--out-pattern {pattern!r} lacks {key}, so runs would share a directory"
            )
    return [
        MemberSpec(value, seed, Path(pattern.replace("{lr}", text).replace("{seed}", str(seed))))
        for text, value in zip(lrs, values, strict=True)
        for seed in seeds
    ]


def member_config(config: dict[str, Any], spec: MemberSpec) -> dict[str, Any]:
    """A member's run configuration: the cell's, with its own learning rate and seed."""
    return {**config, "lr": spec.lr, "seed": spec.seed}


def packs(positions: list[int], batch: int, grid: int, width: int, gpu: bool) -> list[list[int]]:
    """Members (by index) grouped into packs: same resume step, and packed only if it pays.

    ``positions[k]`` is the step member ``k`` resumes from (0: a fresh start).
    """
    groups: dict[int, list[int]] = {}
    for k, step in enumerate(positions):
        groups.setdefault(step, []).append(k)
    out: list[list[int]] = []
    for step in sorted(groups):
        group = groups[step]
        if gpu or packing_pays(len(group), batch, grid, width):
            out.append(group)
        else:
            out.extend([k] for k in group)
    return out
