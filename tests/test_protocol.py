"""The downstream protocol in ``pdetransfer train``: plateau and cap stops, the schedule through
a resume, the rel_l2 loss, divergence as an outcome, and what a resumed run says."""

from __future__ import annotations

import csv
import json
import math
import signal
from pathlib import Path

import pytest
import torch
from engine_helpers import dataset, load, pretrained, same_weights, train, train_args

from pdetransfer.cli import main
from pdetransfer.engine.losses import per_sample_loss
from pdetransfer.engine.training.member import MemberState
from pdetransfer.study.flags import stop_flags

# 8 samples in one batch: one step per epoch, so the model overfits and validation plateaus.
PLATEAU = ("--n-train", "8", "--batch-size", "8", "--val-every", "2", "--max-steps", "300")


def _log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _summary(run: Path) -> dict:
    return json.loads((run / "train.json").read_text())


def _without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_plateau_stops_early_on_the_schedule_of_the_cap(tmp_path: Path) -> None:
    plateau, fixed = tmp_path / "plateau", tmp_path / "fixed"
    assert train(train_args(plateau, *PLATEAU, "--patience", "20", "--min-steps", "30")) == 0
    assert train(train_args(fixed, *PLATEAU)) == 0
    summary, rows = _summary(plateau), _log(plateau)
    assert (summary["status"], summary["stop_reason"]) == ("completed", "plateau")
    steps, best = summary["steps"], summary["best_step"]
    assert 30 <= steps < 300 and summary["max_steps"] == 300 and summary["patience"] == 20
    assert steps - best >= 20 and steps - best < 22  # stopped at the first check past patience
    assert int(rows[-1]["step"]) == steps and summary["val_checks"] == len(rows) == steps // 2
    val = [float(r["val_rel_l2"]) for r in rows]
    assert summary["best_val_rel_l2"] == pytest.approx(min(val), rel=1e-6)
    assert int(rows[val.index(min(val))]["step"]) == best
    assert summary["still_improving"] is False
    # What aggregate reads from the run's files: no cap, no gain over the last patience steps.
    flags = stop_flags(summary, plateau / "log.csv", tolerance=0.01)
    assert flags == {"hit_cap": False, "last_window_gain": 0.0, "undertrained": False}
    assert stop_flags(_summary(fixed), fixed / "log.csv", tolerance=0.01)["hit_cap"]
    # The cosine schedule is over the cap: the plateau run is a prefix of the full-budget run.
    assert _without_seconds(rows) == _without_seconds(_log(fixed)[: len(rows)])
    assert _summary(fixed)["stop_reason"] == "budget" and _summary(fixed)["steps"] == 300
    assert load(plateau / "model.pt")["training"]["stop_reason"] == "plateau"


def test_fine_tuning_follows_the_same_plateau_rule(tmp_path: Path) -> None:
    run = tmp_path / "ft"
    argv = train_args(
        run, *PLATEAU, "--patience", "10", "--init", str(pretrained()), "--model", "xs",
        data="down_train", val="down_val",
    )  # fmt: skip
    assert train(argv) == 0
    summary = _summary(run)
    assert (summary["stop_reason"], summary["patience"], summary["max_steps"]) == (
        "plateau", 10, 300
    )  # fmt: skip
    assert summary["steps"] - summary["best_step"] >= 10 and summary["steps"] < 300
    assert summary["init"] == str(pretrained())


def test_no_plateau_stop_before_min_steps(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(train_args(run, *PLATEAU, "--patience", "1", "--min-steps", "40")) == 0
    summary = _summary(run)
    assert summary["stop_reason"] == "plateau" and summary["steps"] >= 40


def test_cap_stops_a_run_that_is_still_improving(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = train_args(run, "--batch-size", "8", "--max-steps", "24", "--patience", "500")
    assert train(argv) == 0
    summary = _summary(run)
    assert (summary["stop_reason"], summary["steps"], summary["max_steps"]) == ("cap", 24, 24)
    assert summary["steps"] - summary["best_step"] < 500 and summary["still_improving"] is True
    assert _log(run)[-1]["step"] == "24"  # the last step is always checked
    # Its patience spans the whole run, so its gain is measured from its first check.
    flags = stop_flags(summary, run / "log.csv", tolerance=0.01)
    val = [float(row["val_rel_l2"]) for row in _log(run)]
    assert flags["last_window_gain"] == pytest.approx((val[0] - min(val)) / val[0])
    assert flags["hit_cap"] and flags["undertrained"] and flags["last_window_gain"] > 0.01
    assert summary["epochs_run"] == 3 and summary["steps_per_epoch"] == 8


def test_resume_with_plateau_and_schedule_is_bit_identical(tmp_path: Path) -> None:
    extra = (*PLATEAU, "--patience", "12", "--val-every", "3", "--checkpoint-every", "5")
    assert train(train_args(tmp_path / "straight", *extra)) == 0
    kills = (4, 9, 10)  # between checks, at a state save, between checks again

    def stop_at(step: int) -> None:
        if step in kills:
            signal.raise_signal(signal.SIGTERM)

    codes = [train(train_args(tmp_path / "killed", *extra), stop_at) for _ in range(4)]
    assert codes == [143, 143, 143, 0]
    assert same_weights(tmp_path / "straight" / "model.pt", tmp_path / "killed" / "model.pt")
    assert _without_seconds(_log(tmp_path / "straight")) == _without_seconds(
        _log(tmp_path / "killed")
    )
    a, b = _summary(tmp_path / "straight"), _summary(tmp_path / "killed")
    keys = ("stop_reason", "steps", "best_step", "best_val_rel_l2", "val_checks", "val_every")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert a["stop_reason"] == "plateau"


def test_a_resumed_run_says_from_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = train_args(tmp_path / "run", "--batch-size", "12")  # 6 steps per epoch, 18 in all
    assert train(argv, lambda s: s == 5 and signal.raise_signal(signal.SIGUSR1)) == 138
    assert "stopped by SIGUSR1 at step 5 of 18" in capsys.readouterr().err
    assert train(argv) == 0
    err = capsys.readouterr().err
    assert "pdetransfer train: resumed from step 5 of 18, saved at 20" in err
    assert err.count("resumed from") == 1


@pytest.mark.parametrize("damage", ["truncated", "not_ours"])
def test_an_unreadable_state_is_reported_and_the_run_starts_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    run = tmp_path / "run"
    argv = train_args(run, "--batch-size", "12")
    assert train(argv, lambda s: s == 7 and signal.raise_signal(signal.SIGTERM)) == 143
    state = run / "state.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[:3000])
    else:
        torch.save({"weights": {}}, state)
    capsys.readouterr()
    steps: list[int] = []
    assert train(argv, steps.append) == 0
    err = capsys.readouterr().err
    assert steps[0] == 1 and "starting this run over" in err
    assert len([line for line in err.splitlines() if "state.pt" in line]) == 1
    assert train(train_args(tmp_path / "straight", "--batch-size", "12")) == 0
    assert same_weights(run / "model.pt", tmp_path / "straight" / "model.pt")


def test_rel_l2_loss_value() -> None:
    target = torch.ones(2, 4, 4)
    target[1] *= 2
    prediction = target * torch.tensor([1.5, 0.9])[:, None, None]
    assert per_sample_loss(prediction, target, "rel_l2").tolist() == pytest.approx([0.5, 0.1])
    assert per_sample_loss(prediction, target, "sse").tolist() == pytest.approx([4.0, 0.64])
    with pytest.raises(ValueError, match="unknown loss"):
        per_sample_loss(prediction, target, "l1")


def test_training_with_rel_l2_learns(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = train_args(
        run, "--epochs", "12", "--batch-size", "8", "--lr", "1e-2", "--loss", "rel_l2"
    )
    assert train(argv) == 0
    rows, summary = _log(run), _summary(run)
    assert summary["loss"] == "rel_l2"
    assert load(run / "model.pt")["config"]["loss"] == "rel_l2"
    val = [float(r["val_rel_l2"]) for r in rows]
    assert min(val) < 0.6 * val[0]
    assert 0 < float(rows[-1]["train_loss"]) < 1.5  # a relative error, not a sum of squares


def test_divergence_is_an_outcome_and_evaluate_writes_null_metrics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(train_args(run, "--lr", "1e4", "--batch-size", "8", "--val-every", "3")) == 0
    summary = _summary(run)
    assert (summary["status"], summary["stop_reason"]) == ("diverged", "diverged")
    assert summary["diverged_at_step"] >= 1 and summary["divergence"]
    assert summary["still_improving"] is False and summary["steps"] < summary["max_steps"]
    checkpoint = load(run / "model.pt")
    assert checkpoint["status"] == "diverged"
    assert checkpoint["divergence"]["step"] == summary["diverged_at_step"]
    expected = "best_check" if summary["best_step"] is not None else "last_step"
    assert checkpoint["training"]["weights_from"] == expected
    assert not (run / "state.pt").exists()

    metrics, predictions = tmp_path / "metrics.json", tmp_path / "pred.h5"
    argv = ["evaluate", "--checkpoint", str(run / "model.pt"), "--data"]
    argv += [str(dataset("pre_test")), "--out", str(metrics), "--predictions", str(predictions)]
    assert main(argv) == 0
    result = json.loads(metrics.read_text())
    assert result["status"] == "diverged" and result["divergence"] == summary["divergence"]
    assert result["rel_l2_mean"] is None and result["nrmse"] is None
    assert result["n_samples"] == 16 and predictions.exists()

    ok = tmp_path / "ok.json"
    argv = ["evaluate", "--checkpoint", str(pretrained()), "--data", str(dataset("pre_test"))]
    assert main([*argv, "--out", str(ok)]) == 0
    good = json.loads(ok.read_text())
    assert good["status"] == "ok" and math.isfinite(good["rel_l2_mean"])
    assert {k for k in result if k.startswith(("rel_l2", "nrmse", "max_abs"))} == {
        k for k in good if k.startswith(("rel_l2", "nrmse", "max_abs"))
    }


def test_fine_tuning_a_diverged_pretraining_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "pre"
    assert main(train_args(run, "--lr", "1e4", "--batch-size", "8", "--model", "xs")) == 0
    argv = train_args(tmp_path / "ft", "--init", str(run / "model.pt"), "--model", "xs")
    assert main(argv) == 2
    assert not (tmp_path / "ft" / "model.pt").exists()


def test_divergence_criteria_of_a_member() -> None:
    member = MemberState(seed=0, lr=1e-3, loss="sse")
    assert not member.check_loss(1, 80.0, 8)  # first value: 10 per sample
    assert not member.check_loss(2, 8e6, 8)  # 1e5 times: still within 1e6
    assert member.check_loss(3, 8.1e7, 8) and member.divergence["step"] == 3
    assert "over 1e+06 times its first value" in member.divergence["reason"]

    member = MemberState(seed=0, lr=1e-3, loss="rel_l2")
    row = {"step": 5, "epoch": 1.0, "lr": 1e-3, "seconds": 0.0}
    assert member.record_check({**row, "val_rel_l2": 0.5})
    assert not member.record_check({**row, "step": 10, "val_rel_l2": 400.0}) and not member.done
    assert not member.record_check({**row, "step": 15, "val_rel_l2": 600.0})
    assert member.stop_reason == "diverged" and member.divergence["step"] == 15
    assert member.best_step == 5

    member = MemberState(seed=0, lr=1e-3, loss="rel_l2")
    assert not member.record_check({**row, "val_rel_l2": math.nan})
    assert member.divergence == {
        "step": 5,
        "reason": "the validation error became non-finite at step 5",
    }
