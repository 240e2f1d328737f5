"""Checkpoints describe themselves, load on one CPU, and every broken one is one sentence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from engine_helpers import load, pretrained

from pdetransfer.cli import main
from pdetransfer.engine.checkpoints import (
    FORMAT_VERSION,
    build_operator,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from pdetransfer.engine.models.fno import FNO
from pdetransfer.engine.models.normalization import CHANNELS
from pdetransfer.engine.models.registry import ModelSpec
from pdetransfer.errors import UserError


def test_model_checkpoint_describes_itself() -> None:
    checkpoint = load(pretrained())
    assert checkpoint["format"] == "pdetransfer-checkpoint"
    assert (checkpoint["kind"], checkpoint["format_version"]) == ("model", FORMAT_VERSION)
    assert checkpoint["model"] == {
        "name": "xs",
        "modes": 4,
        "width": 16,
        "in_channels": 7,
        "layers": 4,
        "architecture": "fno",
        "parameters": 67329,
    }
    assert checkpoint["channels"] == list(CHANNELS) and checkpoint["grid"] == 16
    assert set(checkpoint["normalization"]) >= {"source_norm_median", "coefficient_abs_median"}
    data = checkpoint["trained_on"]["data"][0]
    assert {"path", "system", "split", "param_range", "seed", "n_samples", "used"} <= set(data)
    assert checkpoint["trained_on"]["init"] is None
    assert isinstance(checkpoint["pdetransfer_version"], str)
    assert checkpoint["torch_version"] == str(torch.__version__)
    # Weights are plain FNO keys (no DDP "module." prefix) and load into a fresh model.
    assert not any(k.startswith("module.") for k in checkpoint["weights"])
    FNO(ModelSpec.from_dict(checkpoint["model"])).load_state_dict(checkpoint["weights"])


def test_operator_from_checkpoint_reproduces_its_weights() -> None:
    checkpoint = load(pretrained())
    operator = build_operator(checkpoint, pretrained())
    for key, value in operator.network.state_dict().items():
        assert torch.equal(value, checkpoint["weights"][key])
    assert operator.normalization.source_norm_median == pytest.approx(
        checkpoint["normalization"]["source_norm_median"]
    )


def test_info_prints_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(pretrained())]) == 0
    text = capsys.readouterr().out
    assert "xs (fno): modes 4, width 16, 4 layers, 67,329 parameters" in text
    assert "poisson (1, 5) train, 64 of 64 samples" in text
    assert "init         none (from scratch)" in text
    assert main(["info", str(pretrained()), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sha256"] == sha256_file(pretrained())
    assert summary["model"]["parameters"] == 67329
    assert "weights" not in summary and summary["training"]["epochs_run"] == 8


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    checkpoint = load(pretrained())
    target = tmp_path / "copy.pt"
    save_checkpoint(checkpoint, target)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pt"]
    assert load_checkpoint(target)["model"] == checkpoint["model"]


def _edited(tmp_path: Path, **changes: object) -> Path:
    checkpoint = load(pretrained())
    checkpoint.update(changes)
    path = tmp_path / "edited.pt"
    torch.save(checkpoint, path)
    return path


def test_broken_checkpoints_are_one_sentence(tmp_path: Path) -> None:
    real = pretrained().read_bytes()
    (tmp_path / "truncated.pt").write_bytes(real[: len(real) // 2])
    (tmp_path / "noise.pt").write_bytes(b"not a checkpoint at all" * 100)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases = {
        tmp_path / "missing.pt": "does not exist",
        tmp_path: "is not a file",
        tmp_path / "truncated.pt": "cannot be read (corrupt, truncated or not a torch file",
        tmp_path / "noise.pt": "cannot be read (corrupt, truncated or not a torch file",
        tmp_path / "foreign.pt": "is a torch file but not a pdetransfer checkpoint",
        tmp_path / "list.pt": "is a torch file but not a pdetransfer checkpoint",
    }
    for path, message in cases.items():
        with pytest.raises(UserError, match=re.escape(message)):
            load_checkpoint(path)


def test_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="format version 99"):
        load_checkpoint(_edited(tmp_path, format_version=99))
    with pytest.raises(UserError, match=r"is a 'state' checkpoint, not a finished run's model\.pt"):
        load_checkpoint(_edited(tmp_path, kind="state"))
    layout = ["f", "D11", "D22", "D12", "v1", "v2"]
    with pytest.raises(UserError, match=r"expects input channels \['f', 'D11'"):
        load_checkpoint(_edited(tmp_path, channels=layout))
    weights = dict(load(pretrained())["weights"])
    weights.pop("lift.bias")
    with pytest.raises(UserError, match="has weights that do not fit its model"):
        path = _edited(tmp_path, weights=weights)
        build_operator(load_checkpoint(path), path)


def test_info_of_a_broken_checkpoint_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(tmp_path / "nothing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pdetransfer info: error: checkpoint {tmp_path / 'nothing.pt'} does not exist"
