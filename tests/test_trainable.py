"""Which parameters train (``--trainable``): counts, frozen weights, LoRA's start, packing,
and a LoRA checkpoint used like any other."""

from __future__ import annotations

import copy
import json
import re
import signal
from pathlib import Path

import pytest
import torch
from engine_helpers import dataset, load, pretrained, same_weights, train, train_args

from pdetransfer.cli import main
from pdetransfer.engine.models.build import build_model, build_packed
from pdetransfer.engine.models.normalization import CHANNELS
from pdetransfer.engine.models.packed import FunctionalEnsemble
from pdetransfer.engine.models.registry import parse_model
from pdetransfer.engine.models.trainable import LoRA, Trainable, count_trainable
from pdetransfer.errors import UserError
from pdetransfer.modes import MODES, TRAINABLE

RANK = 2
FLAGS = {"head": ("--trainable", "head"), "lora": ("--trainable", "lora", "--lora-rank", str(RANK))}
#: Parameter names each rule leaves frozen in the FNO (the merged model.pt of a lora run
#: changes exactly the adapted weights).
FROZEN = {
    "head": lambda name: not name.startswith("head."),
    "lora": lambda name: not re.fullmatch(r"(spectral|skips)\.\d+\.weight", name),
}


def tune_args(out: Path, *extra: str) -> list[str]:
    """A short downstream run from the shared pre-trained xs model."""
    return train_args(
        out,
        "--model", "xs", "--init", str(pretrained()),
        "--data", str(dataset("down_train")), "--val", str(dataset("down_val")),
        "--n-train", "16", "--batch-size", "8", "--max-steps", "4", "--val-every", "2",
        *extra,
    )  # fmt: skip


def closed_form(rule: str, modes: int, width: int, layers: int = 4) -> int:
    """What each rule trains of an FNO, written out independently of the code."""
    if rule == "head":
        return (width * 2 * width + 2 * width) + (2 * width + 1)
    spectral = 2 * width * RANK + 2 * modes * 2 * modes * RANK + 2 * RANK * width  # U, c_k, V
    skip = RANK * width + width * RANK  # A, B
    return layers * (spectral + skip)


def test_the_modes_name_the_engines_rules() -> None:
    assert {m.trainable for m in MODES.values()} <= set(TRAINABLE)
    assert {"head", "lora"} <= {m.trainable for m in MODES.values()}


@pytest.mark.parametrize("size", ["2,4", "xs", "s"])
def test_trainable_parameter_counts_per_rule(size: str) -> None:
    spec = parse_model(size, len(CHANNELS))
    counts = {
        rule: count_trainable(Trainable(rule, RANK if rule == "lora" else None).prepare(
            build_model(spec)))
        for rule in ("all", "head", "lora")
    }  # fmt: skip
    assert counts["all"] == spec.parameters
    assert counts["head"] == closed_form("head", spec.modes, spec.width)
    assert counts["lora"] == closed_form("lora", spec.modes, spec.width)
    assert counts["head"] < counts["lora"] < counts["all"] or size == "2,4"


def test_lora_at_step_zero_is_the_pre_trained_model() -> None:
    spec = parse_model("xs", len(CHANNELS))
    torch.manual_seed(3)
    network = build_model(spec)
    x = torch.randn(2, len(CHANNELS), 16, 16)
    lora = LoRA(copy.deepcopy(network), RANK)
    assert torch.equal(lora(x), network(x))
    merged = lora.merged_state_dict()
    assert all(torch.equal(merged[k], v) for k, v in network.state_dict().items())
    # Packed by torch.func (K = 2), each member is still the pre-trained model.
    packed = build_packed([lora, LoRA(copy.deepcopy(network), RANK)])
    assert isinstance(packed, FunctionalEnsemble)
    out = packed(torch.stack([x, x]))
    torch.testing.assert_close(out[1], network(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["head", "lora"])
def test_frozen_weights_are_bit_identical_after_training(rule: str, tmp_path: Path) -> None:
    assert train(tune_args(tmp_path, *FLAGS[rule])) == 0
    base, tuned = load(pretrained())["weights"], load(tmp_path / "model.pt")
    assert tuned["weights"].keys() == base.keys()  # a lora model.pt holds the merged network
    frozen = [k for k in base if FROZEN[rule](k)]
    assert frozen and len(frozen) < len(base)
    for key, value in base.items():
        assert torch.equal(tuned["weights"][key], value) == (key in frozen), key
    spec = parse_model("xs", len(CHANNELS))
    count = closed_form(rule, spec.modes, spec.width)
    summary = json.loads((tmp_path / "train.json").read_text())
    assert (summary["trainable"], summary["trainable_parameters"]) == (rule, count)
    assert tuned["trainable"]["rule"] == rule and tuned["trainable"]["parameters"] == count
    assert tuned["config"]["trainable"]["rule"] == rule


@pytest.mark.parametrize("rule", ["head", "lora"])
def test_a_pack_gives_each_member_its_separate_runs_result(
    rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FunctionalEnsemble, "pays", classmethod(lambda *_: True))
    lrs, seeds = ("3e-3", "1e-3"), ("0", "1")
    for lr in lrs:
        for seed in seeds:
            out = tmp_path / "separate" / f"lr{lr}" / f"s{seed}"
            assert train(tune_args(out, *FLAGS[rule], "--lr", lr, "--seed", seed)) == 0
    argv = tune_args(tmp_path / "unused", *FLAGS[rule], "--lr", *lrs, "--seed", *seeds)
    index = argv.index("--out")
    argv[index : index + 2] = ["--out-pattern", str(tmp_path / "packed" / "lr{lr}" / "s{seed}")]
    assert train(argv) == 0
    base = load(pretrained())["weights"]
    for lr in lrs:
        for seed in seeds:
            alone = load(tmp_path / "separate" / f"lr{lr}" / f"s{seed}" / "model.pt")
            packed = load(tmp_path / "packed" / f"lr{lr}" / f"s{seed}" / "model.pt")
            assert packed["training"]["pack_size"] == 4
            for key, value in alone["weights"].items():
                if FROZEN[rule](key):
                    assert torch.equal(packed["weights"][key], base[key])
                else:  # float32 re-association only (tests/test_packing.py's tolerance)
                    torch.testing.assert_close(
                        packed["weights"][key], value, rtol=0, atol=1e-3 * float(lr) * 4
                    )


def test_a_lora_run_resumes_bit_identically(tmp_path: Path) -> None:
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    argv = tune_args(killed, *FLAGS["lora"], "--checkpoint-every", "1")

    def stop_at(step: int) -> None:
        if step == 3:
            signal.raise_signal(signal.SIGUSR1)

    assert train(argv, stop_at) == 128 + signal.SIGUSR1
    assert any(k.startswith("updates.") for k in load(killed / "state.pt")["weights"])
    assert train(argv) == 0
    assert train(tune_args(straight, *FLAGS["lora"])) == 0
    assert same_weights(killed / "model.pt", straight / "model.pt")


def test_a_lora_checkpoint_evaluates_is_inspected_and_fine_tunes_further(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora, further = tmp_path / "lora", tmp_path / "further"
    assert train(tune_args(lora, *FLAGS["lora"])) == 0
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(lora / "model.pt"), "--out", str(out),
                 "--data", str(dataset("down_test")), "--threads", "1", "--quiet"]) == 0  # fmt: skip
    assert json.loads(out.read_text())["status"] == "ok"
    capsys.readouterr()
    assert main(["info", str(lora / "model.pt")]) == 0
    text = capsys.readouterr().out
    assert f"lora rank {RANK}" in text and "merged" in text and str(pretrained()) in text
    argv = tune_args(further, "--init", str(lora / "model.pt"))
    assert train(argv) == 0
    tuned = load(further / "model.pt")
    assert tuned["trained_on"]["init"]["path"] == str(lora / "model.pt")
    assert "trainable" not in tuned["config"]  # a plain fine-tune of the merged weights


def test_rule_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--trainable head adapts a pre-trained model"):
        train(train_args(tmp_path / "a", "--trainable", "head"))
    with pytest.raises(UserError, match="--lora-rank of at least 1"):
        train(tune_args(tmp_path / "b", "--trainable", "lora", "--lora-rank", "0"))


@pytest.mark.parametrize("rule", ["head", "lora"])
def test_a_pack_whose_members_stop_apart_drops_them_and_keeps_the_rest_exact(
    rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members stopped by their plateau leave the pack (the optimiser keeps the rule's
    trainable weights only); the others go on as their separate runs."""
    monkeypatch.setattr(FunctionalEnsemble, "pays", classmethod(lambda *_: True))
    lrs, plateau = ("1e-1", "1e-3"), ("--patience", "2", "--max-steps", "24")
    for lr in lrs:
        out = tmp_path / "separate" / f"lr{lr}"
        assert train(tune_args(out, *FLAGS[rule], *plateau, "--lr", lr)) == 0
    argv = tune_args(tmp_path / "unused", *FLAGS[rule], *plateau, "--lr", *lrs)
    index = argv.index("--out")
    argv[index : index + 2] = ["--out-pattern", str(tmp_path / "packed" / "lr{lr}")]
    assert train(argv) == 0
    stops = []
    for lr in lrs:
        alone = json.loads((tmp_path / "separate" / f"lr{lr}" / "train.json").read_text())
        packed = json.loads((tmp_path / "packed" / f"lr{lr}" / "train.json").read_text())
        assert (packed["steps"], packed["stop_reason"]) == (alone["steps"], alone["stop_reason"])
        assert packed["best_val_rel_l2"] == pytest.approx(alone["best_val_rel_l2"], rel=1e-3)
        stops.append(packed["steps"])
    assert len(set(stops)) > 1, stops  # one member left the pack before the other
