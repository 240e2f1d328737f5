"""Packed training: K members of a cell in one process against their separate runs.

Tolerances (see ``tests/test_ensemble.py`` for the measurement behind them). Initial weights,
N-subsets and epoch orders are bit-identical: they are functions of the seed alone. After the
first steps, weights agree within float32 re-association: the pack's matrix products cover
K * B samples, so BLAS may sum in another order (a few ulps per product), and Adam's update
(about lr per step whatever the gradient) can turn a few-ulp gradient difference into a
visible fraction of lr, hence an absolute 1e-3 * lr * steps. Over a whole run those
differences grow along the trajectory, so final errors are compared with the effect that
matters: the packed-vs-separate difference must be under a tenth of the seed-to-seed
difference of the same runs (the spread any result of the study already carries). Where a
pack is compared with another pack of the same shape (a resume) the arithmetic is identical
and results are bit-identical; a pack that dropped a stopped member (a diverging neighbour)
computes the kept rows with the same numbers and is compared bit for bit too.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import dataset, load, same_weights, train

from pdetransfer.engine.checkpoints import build_operator, load_checkpoint
from pdetransfer.engine.evaluation import relative_l2_sums
from pdetransfer.engine.fields import load_fields, read_infos
from pdetransfer.engine.models.fno_ensemble import EnsembleFNO
from pdetransfer.engine.models.registry import parse_model
from pdetransfer.engine.training import cell
from pdetransfer.engine.training.loop import Trainer
from pdetransfer.errors import UserError

LRS = ("3e-3", "1e-3")
SEEDS = ("0", "1")


def argv(
    out: str, *extra: str, lrs: tuple[str, ...] = LRS, seeds: tuple[str, ...] = SEEDS
) -> list[str]:
    """A small scratch cell: N = 16 of the downstream set, batch 8, model '2,8'."""
    flag = "--out-pattern" if "{" in out else "--out"
    return [
        "train", "--data", str(dataset("down_train")), "--val", str(dataset("down_val")),
        "--model", "2,8", flag, out, "--n-train", "16", "--batch-size", "8",
        "--epochs", "4", "--val-every", "2", "--lr", *lrs, "--seed", *seeds,
        "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


def separate(root: Path, *extra: str) -> None:
    """Every (lr, seed) of the cell as a separate run, one call each."""
    for lr in LRS:
        for seed in SEEDS:
            out = str(root / f"lr{lr}" / f"s{seed}")
            assert train(argv(out, *extra, lrs=(lr,), seeds=(seed,))) == 0


def runs(root: Path) -> list[Path]:
    return [root / f"lr{lr}" / f"s{seed}" for lr in LRS for seed in SEEDS]


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "train.json").read_text())


def test_packed_members_start_from_their_separate_runs_weights_and_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    original = Trainer.run

    def record(self: Trainer, loop: Any, *rest: Any) -> int:
        for k, member in enumerate(self.members):
            orders = []
            for epoch in range(2):
                self._orders.clear()
                at = type(loop)(epoch=epoch, batch=1)
                orders.append(self._next_batch(at)[0][k])
            self._orders.clear()
            seen.append(
                {
                    "key": (member.state.lr, member.state.seed),
                    "weights": self.network.member_state_dict(k),
                    "f": member.train_set.f.clone(),
                    "orders": orders,
                }
            )
        return original(self, loop, *rest)

    monkeypatch.setattr(Trainer, "run", record)
    separate(tmp_path / "separate", "--max-steps", "1")
    alone = {s["key"]: s for s in seen}
    seen.clear()
    assert train(argv(str(tmp_path / "packed" / "lr{lr}" / "s{seed}"), "--max-steps", "1")) == 0
    assert len(seen) == 4 and {s["key"] for s in seen} == set(alone)
    for packed in seen:
        mine = alone[packed["key"]]
        assert all(torch.equal(packed["weights"][n], mine["weights"][n]) for n in mine["weights"])
        assert torch.equal(packed["f"], mine["f"])  # the seed's N-subset
        assert all(torch.equal(a, b) for a, b in zip(packed["orders"], mine["orders"], strict=True))
    assert not torch.equal(seen[0]["f"], seen[1]["f"])  # two seeds, two subsets


def test_weights_after_the_first_steps_match_the_separate_runs(tmp_path: Path) -> None:
    steps = 3
    separate(tmp_path / "separate", "--max-steps", str(steps))
    assert (
        train(argv(str(tmp_path / "packed" / "lr{lr}" / "s{seed}"), "--max-steps", str(steps))) == 0
    )
    for a, b in zip(runs(tmp_path / "separate"), runs(tmp_path / "packed"), strict=True):
        lr = summary(a)["lr"]
        assert summary(b)["packed"] and summary(b)["pack_size"] == 4
        assert not summary(a)["packed"] and summary(a)["pack_size"] == 1
        wa, wb = load(a / "model.pt")["weights"], load(b / "model.pt")["weights"]
        for name in wa:
            assert torch.allclose(wa[name], wb[name], rtol=0, atol=1e-3 * lr * steps), name


def log_rows(run: Path) -> list[list[str]]:
    """A run's log without the seconds column (wall time differs between runs)."""
    return [line.split(",")[:5] for line in (run / "log.csv").read_text().splitlines()]


def _test_error(run: Path) -> float:
    checkpoint = load_checkpoint(run / "model.pt", "model")
    operator = build_operator(checkpoint, run / "model.pt")
    fields = load_fields(read_infos([dataset("down_test")], "test"))
    total, count = relative_l2_sums(
        operator, fields, torch.arange(len(fields)), 8, torch.device("cpu")
    )
    return total / count


def test_a_full_packed_run_ends_within_a_tenth_of_the_seed_spread(tmp_path: Path) -> None:
    separate(tmp_path / "separate")
    assert train(argv(str(tmp_path / "packed" / "lr{lr}" / "s{seed}"))) == 0
    for lr in LRS:
        pair = [tmp_path / "separate" / f"lr{lr}" / f"s{s}" for s in SEEDS]
        for metric in (lambda r: summary(r)["best_val_rel_l2"], _test_error):
            spread = abs(metric(pair[0]) - metric(pair[1]))
            assert spread > 0
            for seed in SEEDS:
                a = tmp_path / "separate" / f"lr{lr}" / f"s{seed}"
                b = tmp_path / "packed" / f"lr{lr}" / f"s{seed}"
                assert abs(metric(a) - metric(b)) < 0.1 * spread
                assert summary(a)["steps"] == summary(b)["steps"]


#: A cell whose members stop by their own plateau at steps 8 to 34 of a 40-step cap.
PLATEAU_LRS, PLATEAU = ("3e-2", "1e-2"), ("--patience", "4", "--max-steps", "40")


def test_members_stop_by_their_own_plateau_as_their_separate_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each member stops at its own plateau (here steps 8 to 34 in one pack), as alone, and
    from then on the pack no longer computes it."""
    lrs, extra = PLATEAU_LRS, PLATEAU
    for lr in lrs:
        for seed in SEEDS:
            out = str(tmp_path / "separate" / f"lr{lr}" / f"s{seed}")
            assert train(argv(out, *extra, lrs=(lr,), seeds=(seed,))) == 0
    widths: dict[bool, list[int]] = {True: [], False: []}  # training / validation passes
    forward = EnsembleFNO.forward

    def counted(self: EnsembleFNO, x: torch.Tensor) -> torch.Tensor:
        widths[self.training].append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(EnsembleFNO, "forward", counted)
    assert train(argv(str(tmp_path / "packed" / "lr{lr}" / "s{seed}"), *extra, lrs=lrs)) == 0
    stops = []
    for lr in lrs:
        for seed in SEEDS:
            a = summary(tmp_path / "separate" / f"lr{lr}" / f"s{seed}")
            b = summary(tmp_path / "packed" / f"lr{lr}" / f"s{seed}")
            assert (b["steps"], b["stop_reason"], b["best_step"]) == (
                a["steps"], a["stop_reason"], a["best_step"]
            )  # fmt: skip
            assert b["best_val_rel_l2"] == pytest.approx(a["best_val_rel_l2"], rel=1e-3)
            stops.append(b["steps"])
    assert len(set(stops)) > 1  # the members did stop at different steps
    # Each training pass covers the running members only: the member axis shrinks at every
    # stop, and the pack computed each member's own steps, no more.
    assert widths[True] == [sum(s > step for s in stops) for step in range(max(stops))]
    assert widths[False] == sorted(widths[False], reverse=True) and widths[False][-1] == 1


def test_a_pack_resumes_bit_identically_with_members_stopped_before_and_after_the_kill(
    tmp_path: Path,
) -> None:
    """The pack a resume builds from the running members' states is the one the uninterrupted
    run had shrunk to, so every member ends as in the uninterrupted run, bit for bit."""
    straight = tmp_path / "straight" / "lr{lr}" / "s{seed}"
    assert train(argv(str(straight), *PLATEAU, lrs=PLATEAU_LRS)) == 0
    killed = tmp_path / "killed" / "lr{lr}" / "s{seed}"

    def stop_at(step: int) -> None:
        if step == 10:  # after the first plateau stop (step 8), before the others (14 to 34)
            signal.raise_signal(signal.SIGTERM)

    assert train(argv(str(killed), *PLATEAU, lrs=PLATEAU_LRS), stop_at) == 128 + signal.SIGTERM
    before, after = [], []
    for lr in PLATEAU_LRS:
        for seed in SEEDS:
            run = tmp_path / "killed" / f"lr{lr}" / f"s{seed}"
            (before if (run / "model.pt").exists() else after).append(run)
            assert (run / "model.pt").exists() != (run / "state.pt").exists()
    assert len(before) == 1 and len(after) == 3
    assert train(argv(str(killed), *PLATEAU, lrs=PLATEAU_LRS)) == 0
    for lr in PLATEAU_LRS:
        for seed in SEEDS:
            a = tmp_path / "straight" / f"lr{lr}" / f"s{seed}"
            b = tmp_path / "killed" / f"lr{lr}" / f"s{seed}"
            assert same_weights(a / "model.pt", b / "model.pt")
            assert log_rows(a) == log_rows(b)
            keys = ("steps", "stop_reason", "best_step", "best_val_rel_l2")
            assert [summary(a)[k] for k in keys] == [summary(b)[k] for k in keys]
            assert summary(b)["pack_size"] == (4 if b in before else 3)


def test_a_diverging_member_does_not_disturb_the_others(tmp_path: Path) -> None:
    calm = str(tmp_path / "calm" / "lr{lr}" / "s{seed}")
    wild = str(tmp_path / "wild" / "lr{lr}" / "s{seed}")
    assert train(argv(calm, lrs=("3e-3", "1e-3"), seeds=("0",))) == 0
    assert train(argv(wild, lrs=("3e-3", "1e4"), seeds=("0",))) == 0
    diverged = summary(tmp_path / "wild" / "lr1e4" / "s0")
    assert diverged["status"] == "diverged" and diverged["steps"] < 8
    same = tmp_path / "calm" / "lr3e-3" / "s0", tmp_path / "wild" / "lr3e-3" / "s0"
    assert summary(same[1])["status"] == "completed" and summary(same[1])["steps"] == 8
    assert same_weights(same[0] / "model.pt", same[1] / "model.pt")  # same pack shape: exact
    assert (same[0] / "log.csv").read_text().split("\n")[1].split(",")[:5] == (
        same[1] / "log.csv"
    ).read_text().split("\n")[1].split(",")[:5]


def test_kill_and_resume_of_a_pack_is_bit_identical(tmp_path: Path) -> None:
    extra = ("--checkpoint-every", "3")
    assert train(argv(str(tmp_path / "straight" / "lr{lr}" / "s{seed}"), *extra)) == 0
    killed = str(tmp_path / "killed" / "lr{lr}" / "s{seed}")

    def stop_at(step: int) -> None:
        if step in (3, 6):
            signal.raise_signal(signal.SIGTERM)

    codes = [train(argv(killed, *extra), stop_at) for _ in range(3)]
    assert codes == [128 + signal.SIGTERM] * 2 + [0]
    for a, b in zip(runs(tmp_path / "straight"), runs(tmp_path / "killed"), strict=True):
        assert same_weights(a / "model.pt", b / "model.pt")
        assert not (b / "state.pt").exists()


def test_a_member_resumes_alone_from_a_packed_state(tmp_path: Path) -> None:
    """A packed member's state.pt is a separate run's: it resumes in any pack or none."""
    pattern = str(tmp_path / "packed" / "lr{lr}" / "s{seed}")

    def stop_at(step: int) -> None:
        if step == 2:
            signal.raise_signal(signal.SIGTERM)

    assert train(argv(pattern, "--max-steps", "4"), stop_at) == 128 + signal.SIGTERM
    state = load_checkpoint(tmp_path / "packed" / "lr3e-3" / "s1" / "state.pt", "state")
    assert state["progress"]["step"] == 2 and state["optimizer"]["state"]
    member = tmp_path / "packed" / "lr3e-3" / "s1"
    assert train(argv(str(member), "--max-steps", "4", lrs=("3e-3",), seeds=("1",))) == 0
    assert summary(member)["steps"] == 4 and summary(member)["pack_size"] == 1


def test_finished_members_are_re_emitted_not_retrained(tmp_path: Path) -> None:
    pattern = str(tmp_path / "lr{lr}" / "s{seed}")
    assert train(argv(pattern, seeds=("0",))) == 0
    old = tmp_path / "lr3e-3" / "s0"
    before = summary(old)
    weights = load(old / "model.pt")["weights"]
    for run in (old, tmp_path / "lr1e-3" / "s0"):  # what Snakemake does before a rerun
        (run / "model.pt").unlink()
        (run / "train.json").unlink()
    assert train(argv(pattern, lrs=("3e-3", "1e-3", "3e-4"), seeds=("0",))) == 0
    after = summary(old)
    assert after == before  # the same summary (train_seconds included): not trained again
    assert all(torch.equal(weights[n], load(old / "model.pt")["weights"][n]) for n in weights)
    assert os.stat(old / "model.pt").st_ino == os.stat(old / "final.pt").st_ino
    assert summary(tmp_path / "lr3e-4" / "s0")["pack_size"] == 1  # only the new one trained


def test_without_packing_members_train_one_after_another_as_separate_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    separate(tmp_path / "separate", "--max-steps", "3")
    monkeypatch.setattr(EnsembleFNO, "pays", classmethod(lambda *a: False))
    assert train(argv(str(tmp_path / "seq" / "lr{lr}" / "s{seed}"), "--max-steps", "3")) == 0
    for a, b in zip(runs(tmp_path / "separate"), runs(tmp_path / "seq"), strict=True):
        assert same_weights(a / "model.pt", b / "model.pt")  # K = 1 is a separate run
        assert summary(b)["pack_size"] == 1


def test_packs_group_by_resume_step_and_by_the_packing_rule() -> None:
    xs, s = parse_model("xs", 7), parse_model("s", 7)
    assert cell.packs([0, 0, 5, 0], 8, 16, xs, gpu=False) == [[0, 1, 3], [2]]
    assert cell.packs([0] * 4, 32, 64, s, gpu=False) == [[0], [1], [2], [3]]  # s: not packed
    assert cell.packs([0] * 4, 32, 64, s, gpu=True) == [[0, 1, 2, 3]]


@pytest.mark.parametrize(
    ("out", "lrs", "seeds", "message"),
    [
        ("runs/x", ("1e-3", "3e-3"), ("0",), "need --out-pattern"),
        ("runs/lr{lr}", ("1e-3",), ("0", "1"), "lacks {seed}"),
        ("runs/lr{lr}/s{seed}", ("1e-3", "1e-3"), ("0",), "must not repeat"),
        ("runs/lr{lr}/s{seed}", ("fast",), ("0",), "takes numbers"),
        ("runs/lr{lr}/s{seed}", ("-1",), ("0",), "must be positive"),
    ],
)
def test_bad_member_lists_are_one_clear_sentence(
    out: str, lrs: tuple[str, ...], seeds: tuple[str, ...], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        train(argv(out, lrs=lrs, seeds=seeds))
