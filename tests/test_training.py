"""``pdetransfer train``: learning, logs, resume after a kill, fine-tuning, subsets, bad input."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from engine_helpers import dataset, load, pretrained, same_weights, train, train_args, workdir
from workflow_helpers import held_training_env, wait_for_hold

from pdetransfer.cli import build_parser, main
from pdetransfer.data.stats import compute_stats
from pdetransfer.engine.fields import epoch_order, load_fields, read_infos, subset_indices
from pdetransfer.engine.runtime.processes import Processes
from pdetransfer.engine.training.config import TrainConfig
from pdetransfer.engine.training.plan import resolve_plan
from pdetransfer.errors import UserError

TRAIN_JSON_KEYS = {
    "model", "architecture", "modes", "width", "parameters", "n_train", "lr", "epochs",
    "epochs_run", "batch_size", "min_steps", "steps", "seed", "best_epoch", "best_val_rel_l2",
    "train_seconds", "init", "data", "val", "pdetransfer_version", "torch_version",
    "status", "stop_reason", "max_steps", "best_step", "val_every", "val_checks", "patience",
    "still_improving", "diverged_at_step", "divergence", "loss",
}  # fmt: skip


def _log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_short_run_lowers_the_error_and_writes_its_outputs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(train_args(run, "--epochs", "12", "--batch-size", "8", "--model", "xs")) == 0
    rows = _log(run)
    summary = json.loads((run / "train.json").read_text())
    assert list(rows[0]) == ["step", "epoch", "lr", "train_loss", "val_rel_l2", "seconds"]
    # 8 steps of 8 samples per epoch against 16 validation samples: validating once per
    # epoch costs 16 / (192 + 16) = 7.7% < 10%, and the schedule never validates more often.
    every = summary["val_every"]
    assert every == 8 and [int(r["step"]) for r in rows] == list(range(every, 97, every))
    assert [float(r["epoch"]) for r in rows] == [int(r["step"]) / 8 for r in rows]
    val = [float(r["val_rel_l2"]) for r in rows]
    assert min(val) < 0.5 * val[0]
    assert float(rows[-1]["train_loss"]) < 0.2 * float(rows[0]["train_loss"])
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-4  # cosine decay to ~0
    assert set(summary) >= TRAIN_JSON_KEYS
    assert summary["best_val_rel_l2"] == pytest.approx(min(val), rel=1e-6)
    assert summary["best_step"] == every * (1 + val.index(min(val)))
    assert summary["best_epoch"] == -(-summary["best_step"] // 8)
    assert (summary["steps"], summary["n_train"], summary["init"]) == (96, 64, None)
    assert (summary["status"], summary["stop_reason"], summary["patience"]) == (
        "completed",
        "budget",
        None,
    )
    assert (summary["max_steps"], summary["val_checks"], summary["loss"]) == (96, 12, "sse")
    assert summary["val_share"] == pytest.approx(16 / (3 * 8 * 8 + 16))
    assert (run / "model.pt").exists() and not (run / "state.pt").exists()
    assert load(run / "model.pt")["training"]["best_val_rel_l2"] == summary["best_val_rel_l2"]


def test_resume_after_signals_gives_bit_identical_weights(tmp_path: Path) -> None:
    # 6 steps per epoch, checks at 5, 10, 15 and 18, extra state saves every 4 steps.
    extra = ("--batch-size", "12", "--checkpoint-every", "4", "--val-every", "5")
    assert train(train_args(tmp_path / "straight", *extra)) == 0

    seen: list[list[int]] = []

    def stop_at(step: int) -> None:
        seen[-1].append(step)
        if step in (5, 12):  # at a check, then at an epoch's end between checks
            signal.raise_signal(signal.SIGUSR1)

    codes = []
    for _ in range(3):
        seen.append([])
        codes.append(train(train_args(tmp_path / "killed", *extra), stop_at))
    assert codes == [128 + signal.SIGUSR1] * 2 + [0]
    assert [s[0] for s in seen] == [1, 6, 13]  # each restart continued where it stopped
    assert same_weights(tmp_path / "straight" / "model.pt", tmp_path / "killed" / "model.pt")
    for a, b in zip(_log(tmp_path / "straight"), _log(tmp_path / "killed"), strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }


def test_sigterm_to_a_running_process_saves_state_and_exits_nonzero(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = train_args(run, "--epochs", "40", "--batch-size", "8")
    marker = tmp_path / "held"  # the training holds there once state.pt is written
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdetransfer", *argv],
        env=held_training_env(tmp_path / "site", run, marker),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_hold(marker, proc, timeout=60)
        held_step = int(marker.read_text().split()[1])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "run the same command again" in err
    assert (run / "state.pt").exists() and not (run / "model.pt").exists()
    stopped_at = load(run / "state.pt")["progress"]["step"]
    assert 0 < stopped_at == held_step < 320

    first: list[int] = []
    assert train(argv, lambda step: first.append(step)) == 0
    assert first[0] == stopped_at + 1
    assert train(train_args(tmp_path / "straight", "--epochs", "40", "--batch-size", "8")) == 0
    assert same_weights(run / "model.pt", tmp_path / "straight" / "model.pt")


def test_finished_run_is_not_retrained_and_other_runs_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(train_args(run, "--epochs", "1")) == 0
    stamp = (run / "model.pt").stat().st_mtime_ns
    steps: list[int] = []
    assert train(train_args(run, "--epochs", "1"), steps.append) == 0
    assert steps == [] and (run / "model.pt").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match=r"model.pt belongs to a different run \(lr"):
        train(train_args(run, "--epochs", "1", "--lr", "1e-4"))


def test_resume_refuses_a_state_of_another_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(train_args(run), lambda s: signal.raise_signal(signal.SIGTERM)) == 143
    with pytest.raises(UserError, match=r"state.pt belongs to a different run \(seed"):
        train(train_args(run, "--seed", "5"))


def test_fine_tune_reuses_the_pretrained_normalisation(tmp_path: Path) -> None:
    init = pretrained()
    pre = load(init)
    run = tmp_path / "ft"
    argv = train_args(
        run, "--init", str(init), "--model", "xs", "--n-train", "16", "--batch-size", "8",
        data="down_train", val="down_val",
    )  # fmt: skip
    assert train(argv, lambda s: s == 3 and signal.raise_signal(signal.SIGTERM)) == 143
    resumed: list[int] = []
    assert train(argv, resumed.append) == 0
    assert resumed[0] == 4  # continued from its own state.pt, not from --init

    tuned = load(run / "model.pt")
    assert tuned["normalization"] == pre["normalization"]
    own = compute_stats([str(dataset("down_train"))])
    assert own["coefficient_abs_median"] != pre["normalization"]["coefficient_abs_median"]
    assert tuned["trained_on"]["init"]["sha256"] == tuned["config"]["init"]
    assert tuned["trained_on"]["init"]["path"] == str(init)
    assert tuned["trained_on"]["n_train"] == 16
    assert not all(torch.equal(tuned["weights"][k], pre["weights"][k]) for k in pre["weights"])
    summary = json.loads((run / "train.json").read_text())
    assert summary["init"] == str(init)

    straight = tmp_path / "straight"
    argv[argv.index("--out") + 1] = str(straight)
    assert train(argv) == 0
    assert same_weights(run / "model.pt", straight / "model.pt")


def test_min_steps_raises_the_number_of_epochs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = train_args(run, "--n-train", "8", "--epochs", "2", "--min-steps", "7")
    assert train(argv) == 0
    summary = json.loads((run / "train.json").read_text())
    assert (summary["batch_size"], summary["epochs_run"], summary["steps"]) == (8, 7, 7)
    assert len(_log(run)) == 7


def test_subsets_are_nested_and_seeded() -> None:
    small, large = subset_indices(100, 10, 3), subset_indices(100, 40, 3)
    assert set(small) <= set(large) and len(set(large)) == 40
    assert np.array_equal(small, subset_indices(100, 10, 3))
    assert not np.array_equal(small, subset_indices(100, 10, 4))
    with pytest.raises(UserError, match="--n-train 101"):
        subset_indices(100, 101, 0)


def test_epoch_order_reshuffles_every_epoch_reproducibly() -> None:
    orders = [epoch_order(50, 0, epoch) for epoch in range(3)]
    assert all(sorted(o.tolist()) == list(range(50)) for o in orders)
    assert not torch.equal(orders[0], orders[1])
    assert torch.equal(orders[2], epoch_order(50, 0, 2))


def test_training_set_takes_the_subset_and_validation_everything() -> None:
    infos = read_infos([dataset("pre_train")], "train")
    subset = load_fields(infos, 10, seed=0)
    full = load_fields(infos)
    chosen = torch.from_numpy(subset_indices(64, 10, 0))
    assert torch.equal(subset.u, full.u[chosen]) and torch.equal(subset.f, full.f[chosen])
    assert subset.files[0]["used"] == 10 and full.files[0]["used"] == 64
    assert len(load_fields(read_infos([dataset("pre_val")], "val"))) == 16


def test_mixed_physics_training_set_and_run(tmp_path: Path) -> None:
    infos = read_infos([dataset("pre_train"), dataset("helm_train")], "train")
    mixed = load_fields(infos, 40, seed=1)
    assert len(mixed) == 40
    used = [f["used"] for f in mixed.files]
    assert sum(used) == 40 and all(u > 0 for u in used)
    omega = mixed.coefficients[:, 5]
    assert int((omega != 0).sum()) == used[1]  # Helmholtz samples carry omega, Poisson's is 0
    assert [f["system"] for f in mixed.files] == ["poisson", "helmholtz"]

    run = tmp_path / "mixed"
    argv = train_args(run, "--epochs", "1", "--n-train", "40", "--val", str(dataset("helm_val")))
    argv[argv.index("--data") + 1 : argv.index("--data") + 2] = [
        str(dataset("pre_train")),
        str(dataset("helm_train")),
    ]
    assert train(argv) == 0
    checkpoint = load(run / "model.pt")
    assert [f["system"] for f in checkpoint["trained_on"]["data"]] == ["poisson", "helmholtz"]
    assert checkpoint["normalization"]["coefficient_abs_median"][5] != 1.0  # omega seen


def test_non_finite_training_data_is_an_error_not_a_divergence(tmp_path: Path) -> None:
    broken = tmp_path / "nan_train.h5"
    broken.write_bytes(dataset("pre_train").read_bytes())
    with h5py.File(broken, "r+") as h5:
        fields = h5["fields"][...]
        fields[:, 1] = np.nan
        h5["fields"][...] = fields
    argv = train_args(tmp_path / "run", "--stats", str(_stats_file(tmp_path)))
    argv[argv.index("--data") + 1] = str(broken)
    with pytest.raises(UserError, match=r"nan_train\.h5 holds non-finite values"):
        train(argv)


def _stats_file(tmp_path: Path) -> Path:
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(compute_stats([str(dataset("pre_train"))])))
    return path


def test_stats_file_is_used_for_a_scratch_run(tmp_path: Path) -> None:
    stats = json.loads(_stats_file(tmp_path).read_text())
    stats["source_norm_median"] *= 2
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    run = tmp_path / "run"
    assert train(train_args(run, "--epochs", "1", "--stats", str(tmp_path / "stats.json"))) == 0
    assert load(run / "model.pt")["normalization"]["source_norm_median"] == pytest.approx(
        stats["source_norm_median"]
    )


def test_processes_must_not_outnumber_the_batch() -> None:
    config = TrainConfig.from_args(
        build_parser().parse_args(train_args(workdir() / "unused", "--n-train", "2"))
    )
    infos = read_infos([dataset("pre_train")], "train")
    vals = read_infos([dataset("pre_val")], "val")
    with pytest.raises(UserError, match="batch of 2 samples cannot be split over 4 processes"):
        resolve_plan(config, Processes(0, 4, torch.device("cpu")), infos, vals, 16, None)


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(pretrained().read_bytes()[:5000])
    return path


def _not_ours(tmp_path: Path) -> Path:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    return path


BAD_RUNS = [
    (["--data", "missing.h5"], "dataset missing.h5 does not exist"),
    (["--val", "{pre_train}"], "is a 'train' split, expected 'val'"),
    (["--data", "{pre_val}"], "is a 'val' split, expected 'train'"),
    (["--val", "{coarse_val}"], "has grid 32, the training data 16"),
    (["--data", "{pre_train}", "{coarse_train}"], "do not share one grid"),
    (["--n-train", "65"], "--n-train 65 exceeds the 64 samples"),
    (["--n-train", "0"], "--n-train must be at least 1"),
    (["--model", "big"], "neither a preset"),
    (["--model", "l"], "keeps 32 modes per direction but a 16x16 grid resolves at most 8"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--init", "missing.pt"], "checkpoint missing.pt does not exist"),
    (["--init", "{corrupt}"], "cannot be read (corrupt, truncated or not a torch file"),
    (["--init", "{not_ours}"], "is a torch file but not a pdetransfer checkpoint"),
    (["--init", "{pretrained}", "--model", "s"], "holds (modes 4, width 16)"),
    (["--init", "{pretrained}", "--model", "xs", "--stats", "s.json"], "--stats cannot be"),
    (
        ["--init", "{pretrained}", "--model", "xs", "--data", "{coarse_train}", "--val",
         "{coarse_val}"],
        "was trained on a 16x16 grid but the data is 32x32",
    ),
    (["--stats", "missing.json"], "missing.json"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), BAD_RUNS)
def test_bad_input_is_one_clear_sentence(tmp_path: Path, extra: list[str], message: str) -> None:
    names = {name: str(dataset(name)) for name in ("pre_train", "pre_val", "coarse_val")}
    names |= {
        "coarse_train": str(dataset("coarse_train")),
        "corrupt": str(_corrupt(tmp_path)) if "{corrupt}" in extra else "",
        "not_ours": str(_not_ours(tmp_path)) if "{not_ours}" in extra else "",
        "pretrained": str(pretrained()) if "{pretrained}" in extra else "",
    }
    argv = train_args(tmp_path / "run")
    extra = [e.format(**names) for e in extra]
    for flag in ("--data", "--val"):  # replace, not repeat, multi-valued options
        if flag in extra:
            i = argv.index(flag)
            del argv[i : i + 2]
    with pytest.raises(UserError, match=re.escape(message)):
        train(argv + extra)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_cli_reports_a_user_error_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(train_args(tmp_path / "run", "--n-train", "1000")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdetransfer train: error: --n-train 1000") and "\n" not in err
    assert not (tmp_path / "run" / "model.pt").exists()
