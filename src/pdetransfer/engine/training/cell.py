"""The members of one ``pdetransfer train`` call: which to train, which to resume, how to pack.

``--lr A B C --seed 0 1`` asks for the six runs (A, 0), (A, 1), ... of one cell; each writes
the files a separate run writes, in ``--out-pattern`` with ``{lr}`` (as spelled on the command
line) and ``{seed}`` filled in, so ``--lr 1e-3 --seed 0 --out-pattern 'DIR/lr{lr}/s{seed}'``
is the separate run with ``--out DIR/lr1e-3/s0``.

Each member is in one of four states, decided from its own directory:

* ``model.pt`` with the same configuration: finished, left alone;
* ``final.pt`` (the second name of a finished ``model.pt``, see
  :mod:`pdetransfer.engine.training.run_files`) with the same configuration: finished, its
  outputs are re-emitted without training (what makes adding a learning rate or seed to a
  packed Snakemake job cheap);
* ``state.pt``: interrupted, resumed from its own state;
* none of these: trained from the start.

Members to train are grouped by the step they resume from (a pack shares one loop position),
and a group is trained as one pack when that pays (on a GPU always: one small model uses a
sliver of it; on the CPU where the architecture's packed implementation was measured to pay
per step, :meth:`pdetransfer.engine.models.packed.PackedNetwork.pays`), else member by member
in this same process -- which still saves a process start-up, the data loads and the
validation set's load per member. Either way every member's result is
that of its separate run (``tests/test_packing.py`` states the tolerances). A pack drops its
members as they stop (:mod:`pdetransfer.engine.training.loop`), so the members a signal
interrupts resume as the very pack they were in: bit-identical to an uninterrupted run, with
members stopped before and after the kill. Only a resume from an earlier periodic state, when
members stopped between that save and the kill, runs some steps in a smaller pack than the
uninterrupted run did, whose products may be summed in another order (the same float32
tolerance as packed against separate).
"""

from __future__ import annotations

from typing import Any

from pdetransfer.engine.models.build import packed_class
from pdetransfer.engine.models.registry import ModelSpec
from pdetransfer.engine.training.config import MemberSpec


def member_config(identity: dict[str, Any], spec: MemberSpec) -> dict[str, Any]:
    """A member's run identity: the cell's, with its own learning rate and seed."""
    return {**identity, "lr": spec.lr, "seed": spec.seed}


def packs(
    positions: list[int], batch: int, grid: int, spec: ModelSpec, gpu: bool, wrapped: bool = False
) -> list[list[int]]:
    """Members (by index) grouped into packs: same resume step, and packed only if it pays.

    ``positions[k]`` is the step member ``k`` resumes from (0: a fresh start); ``wrapped``:
    the members' networks are wrapped (see :func:`~pdetransfer.engine.models.build.packed_class`).
    """
    groups: dict[int, list[int]] = {}
    for k, step in enumerate(positions):
        groups.setdefault(step, []).append(k)
    out: list[list[int]] = []
    for step in sorted(groups):
        group = groups[step]
        if gpu or packed_class(spec, wrapped).pays(spec, len(group), batch, grid):
            out.append(group)
        else:
            out.extend([k] for k in group)
    return out
