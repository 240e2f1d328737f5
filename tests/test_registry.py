"""The model registry: every entry built, run, trained packed against separate, checkpointed
and fine-tuned; old checkpoints without an architecture read as FNOs.

Besides the registered architectures, two entries exist only here: ``tiny``, a small
convolutional network with no packed implementation (so the generic ``torch.func`` ensemble
packs it), and ``fno_vmap``, the FNO registered without its member-axis layers (the same
network through the generic path). Tolerances of packed against separate are those of
``tests/test_ensemble.py``: forward at rtol 1e-5, weights after S Adam steps at 1e-3 * lr * S.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from engine_helpers import dataset, load, pretrained, same_weights, train, train_args
from torch import nn
from torch.nn import functional as F

from pdetransfer.cli import main
from pdetransfer.engine.checkpoints import build_operator, load_checkpoint, save_checkpoint
from pdetransfer.engine.models.build import build_model, build_packed, count_parameters
from pdetransfer.engine.models.normalization import CHANNELS, Normalization, NormalizedOperator
from pdetransfer.engine.models.packed import FunctionalEnsemble
from pdetransfer.engine.models.registry import (
    ARCHITECTURES,
    Architecture,
    ModelSpec,
    parameter_count,
    parse_model,
    split_size,
)
from pdetransfer.engine.training.ensemble_adam import EnsembleAdam
from pdetransfer.errors import UserError

NORM = Normalization(0.7, (1.0, 1.5, 0.5, 2.0, 0.8, 1.2))
GRID, BATCH, STEPS = 16, 3, 3


class TinyNet(nn.Module):
    """Lift, one circular 3x3 convolution, head: a network unlike the FNO in every layer."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.lift = nn.Conv2d(spec.in_channels, spec.width, 1)
        self.mix = nn.Conv2d(spec.width, spec.width, 3, padding=1, padding_mode="circular")
        self.head = nn.Conv2d(spec.width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.mix(F.gelu(self.lift(x)))))


def _tiny_parameters(spec: ModelSpec) -> int:
    w = spec.width
    return spec.in_channels * w + w + 9 * w * w + w + w + 1


TEST_ENTRIES = {
    "tiny": Architecture(
        network=f"{__name__}:TinyNet",
        packed=None,
        parameters=_tiny_parameters,
        resolution_problem=lambda spec, grid: None,
    ),
    "fno_vmap": Architecture(
        network="pdetransfer.engine.models.fno:FNO",
        packed=None,
        parameters=lambda s: parameter_count(s.modes, s.width, s.in_channels, s.layers),
        resolution_problem=ARCHITECTURES["fno"].resolution_problem,
    ),
}
NAMES = [*ARCHITECTURES, *TEST_ENTRIES]
#: The size each entry is tested at, in its own size words ("modes,width" unless listed).
SIZES = {"unet": "8,2"}


def size(name: str) -> str:
    return SIZES.get(name, "2,8")


@pytest.fixture(autouse=True)
def _test_entries(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    for name, entry in TEST_ENTRIES.items():
        monkeypatch.setitem(ARCHITECTURES, name, entry)
    # An entry of an optional extra is tested where the extra is installed (.ci/run's step).
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("name") if callspec else None
    if name in ARCHITECTURES and ARCHITECTURES[name].requires:
        pytest.importorskip(ARCHITECTURES[name].requires, reason=f"{name} needs its extra")


def seeded(spec: ModelSpec, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec)


@pytest.mark.parametrize("name", NAMES)
def test_build_and_forward(name: str) -> None:
    spec = parse_model(size(name), len(CHANNELS), name)
    network = build_model(spec)
    assert network.spec == spec and count_parameters(network) == spec.parameters
    x = torch.randn(BATCH, len(CHANNELS), GRID, GRID)
    assert network(x).shape == (BATCH, 1, GRID, GRID)
    packed = build_packed([seeded(spec, 0), seeded(spec, 1)])
    expected = ARCHITECTURES[name].packed or "pdetransfer.engine.models.packed:FunctionalEnsemble"
    assert type(packed).__name__ == expected.split(":")[1]
    with torch.no_grad():
        out = packed(torch.stack([x, 2 * x]))
        for k, scale in enumerate((1, 2)):
            alone = seeded(spec, k)(scale * x)
            torch.testing.assert_close(
                out[k], alone, rtol=1e-5, atol=1e-5 * float(alone.abs().max())
            )


@pytest.mark.parametrize("name", NAMES)
def test_three_packed_steps_equal_separate_runs(name: str) -> None:
    spec = parse_model(size(name), len(CHANNELS), name)
    lrs, seeds = [3e-3, 1e-2], [4, 5]
    gen = torch.Generator().manual_seed(9)
    data = [
        (
            torch.randn(2, BATCH, GRID, GRID, generator=gen),
            torch.rand(2, BATCH, 6, generator=gen) + 0.1,
            0.1 * torch.randn(2, BATCH, GRID, GRID, generator=gen),
        )
        for _ in range(STEPS)
    ]
    packed = NormalizedOperator(build_packed([seeded(spec, s) for s in seeds]), NORM)
    optimizer = EnsembleAdam(packed.parameters(), lrs, [STEPS] * 2)
    for f, c, u in data:
        optimizer.zero_grad()
        (packed(f, c) - u).square().sum(dim=(-2, -1)).mean(-1).sum().backward()
        assert optimizer.step() == [True, True]
    for k, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
        alone = NormalizedOperator(seeded(spec, seed), NORM)
        adam = torch.optim.Adam(alone.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            adam, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, STEPS) / STEPS))
        )
        for f, c, u in data:
            adam.zero_grad()
            (alone(f[k], c[k]) - u[k]).square().sum(dim=(-2, -1)).mean().backward()
            adam.step()
            schedule.step()
        mine = packed.network.member_state_dict(k)  # type: ignore[operator]
        reference = alone.network.state_dict()
        assert list(mine) == list(reference)
        for key, value in reference.items():
            assert not torch.equal(value, seeded(spec, seed).state_dict()[key])  # it trained
            torch.testing.assert_close(mine[key], value, rtol=0, atol=1e-3 * lr * STEPS)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_and_fine_tuning(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, tuned = tmp_path / "pre", tmp_path / "tuned"
    architecture = ("--architecture", name, "--model", size(name))
    assert train(train_args(run, *architecture, "--epochs", "1")) == 0
    checkpoint = load_checkpoint(run / "model.pt")
    assert checkpoint["model"]["architecture"] == name
    assert checkpoint["config"]["model"]["architecture"] == name
    assert json.loads((run / "train.json").read_text())["architecture"] == name
    operator = build_operator(checkpoint, run / "model.pt")
    assert type(operator.network).__name__ == ARCHITECTURES[name].network.split(":")[1]
    for key, value in operator.network.state_dict().items():
        assert torch.equal(value, checkpoint["weights"][key])
    spec = ModelSpec.from_dict(checkpoint["model"])
    assert count_parameters(operator.network) == spec.parameters
    capsys.readouterr()
    assert main(["info", str(run / "model.pt")]) == 0
    described = ARCHITECTURES[name].describe(spec)
    assert f"({name}): {described}, {spec.parameters:,} parameters" in capsys.readouterr().out

    argv = train_args(tuned, *architecture, "--init", str(run / "model.pt"))
    argv += ["--data", str(dataset("down_train")), "--val", str(dataset("down_val"))]
    assert train(argv) == 0
    fine = load_checkpoint(tuned / "model.pt")
    assert fine["trained_on"]["init"]["path"] == str(run / "model.pt")
    assert fine["model"] == checkpoint["model"]
    assert fine["weights"].keys() == checkpoint["weights"].keys()
    assert any(not torch.equal(fine["weights"][k], v) for k, v in checkpoint["weights"].items())

    out = tmp_path / "metrics.json"
    evaluate = ["evaluate", "--checkpoint", str(tuned / "model.pt"), "--out", str(out)]
    assert main([*evaluate, "--data", str(dataset("down_test")), "--threads", "1", "--quiet"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["status"] == "ok" and metrics["checkpoint"]["architecture"] == name


@pytest.mark.parametrize("name", list(TEST_ENTRIES))
def test_the_generic_ensemble_trains_packed_and_resumes(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the whole loop: packed members against separate runs, and a resume."""
    monkeypatch.setattr(FunctionalEnsemble, "pays", classmethod(lambda *_: True))
    lrs, extra = ("3e-3", "1e-3"), ("--architecture", name, "--max-steps", "3")
    for lr in lrs:
        assert train(train_args(tmp_path / "separate" / lr, *extra, "--lr", lr)) == 0
    pattern = str(tmp_path / "packed" / "{lr}")
    argv = train_args(tmp_path / "unused", *extra, "--lr", *lrs)
    argv[argv.index("--out") : argv.index("--out") + 2] = ["--out-pattern", pattern]
    assert train(argv) == 0
    for lr in lrs:
        a, b = (
            load(tmp_path / "separate" / lr / "model.pt"),
            load(tmp_path / "packed" / lr / "model.pt"),
        )
        assert b["training"]["pack_size"] == 2 and a["training"]["pack_size"] == 1
        for key, value in a["weights"].items():
            assert torch.allclose(b["weights"][key], value, rtol=0, atol=1e-3 * float(lr) * 3)

    killed = tmp_path / "killed"
    resume = train_args(killed, "--architecture", name, "--checkpoint-every", "2")

    def stop_at(step: int) -> None:
        if step == 2:
            signal.raise_signal(signal.SIGUSR1)

    assert train(resume, stop_at) == 128 + signal.SIGUSR1
    assert (killed / "state.pt").exists()
    assert train(resume) == 0
    assert train(train_args(tmp_path / "straight", "--architecture", name)) == 0
    assert same_weights(tmp_path / "straight" / "model.pt", killed / "model.pt")


def _old_format(checkpoint: dict, path: Path) -> Path:
    """``checkpoint`` as written before the registry: no architecture anywhere."""
    del checkpoint["model"]["architecture"]
    del checkpoint["config"]["model"]["architecture"]
    save_checkpoint(checkpoint, path)
    return path


def test_a_checkpoint_without_architecture_is_an_fno(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _old_format(load(pretrained()), tmp_path / "old.pt")
    checkpoint = load_checkpoint(old)
    assert checkpoint["model"]["architecture"] == "fno"
    operator = build_operator(checkpoint, old)
    assert type(operator.network).__name__ == "FNO"
    assert main(["info", str(old)]) == 0
    assert "xs (fno): modes 4, width 16" in capsys.readouterr().out

    tuned = tmp_path / "tuned"
    argv = train_args(tuned, "--model", "xs", "--init", str(old), "--epochs", "1")
    assert train(argv) == 0
    assert load_checkpoint(tuned / "model.pt")["model"]["architecture"] == "fno"

    # A finished run of the old format is still recognised as the same run.
    run = tmp_path / "run"
    assert train(train_args(run, "--epochs", "1")) == 0
    _old_format(load(run / "model.pt"), run / "model.pt")
    steps: list[int] = []
    assert train(train_args(run, "--epochs", "1"), steps.append) == 0
    assert steps == []


def test_architecture_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"architecture 'vit' is not registered \(known: fno"):
        train(train_args(tmp_path / "a", "--architecture", "vit"))
    with pytest.raises(
        UserError, match=r"--architecture tiny but .* holds a model of architecture fno$"
    ):
        train(train_args(tmp_path / "b", "--architecture", "tiny", "--init", str(pretrained())))
    alien = load(pretrained())
    alien["model"]["architecture"] = "vit"
    save_checkpoint(alien, tmp_path / "alien.pt")
    with pytest.raises(
        UserError, match="holds a model of architecture 'vit', which this pdetransfer does not"
    ):
        load_checkpoint(tmp_path / "alien.pt")


def test_a_size_is_in_its_architectures_own_words() -> None:
    unet = parse_model("8,3", len(CHANNELS), "unet")
    assert (unet.width, unet.layers, unet.name) == (8, 3, "8,3")
    assert ARCHITECTURES["unet"].describe(unet) == "width 8, depth 3"
    assert ARCHITECTURES["unet"].resolution_problem(unet, 32) is None
    assert "not divisible by 8" in str(ARCHITECTURES["unet"].resolution_problem(unet, 20))
    with pytest.raises(
        UserError, match="the presets are FNO sizes; give a unet size as 'width,depth'"
    ):
        parse_model("xs", len(CHANNELS), "unet")
    with pytest.raises(UserError, match=r"needs width >= 1 and depth >= 1"):
        parse_model("8,0", len(CHANNELS), "unet")
    assert split_size("unet:8,3") == ("unet", "8,3")
    assert split_size("xs") == ("fno", "xs")
