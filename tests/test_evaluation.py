"""``pdetransfer evaluate``: metric definitions, zero-shot evaluation, predictions, packed
cells (several checkpoints in one process), bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from engine_helpers import dataset, load, pretrained, train, train_args

from pdetransfer.cli import main
from pdetransfer.data.datasets import read_samples
from pdetransfer.engine import evaluation
from pdetransfer.engine.checkpoints import build_operator, sha256_file
from pdetransfer.engine.evaluation import sample_errors, summarize
from pdetransfer.engine.losses import relative_l2

METRIC_KEYS = {
    "rel_l2_mean", "rel_l2_median", "rel_l2_std", "nrmse", "max_abs_error",
    "rel_l2_band_low", "rel_l2_band_mid", "rel_l2_band_high", "n_samples", "data",
    "checkpoint", "seconds", "pdetransfer_version",
}  # fmt: skip


def _wave(k: int, n: int = 32) -> torch.Tensor:
    x = torch.arange(n, dtype=torch.float64) / n
    return torch.cos(2 * math.pi * k * x)[:, None].expand(n, n)


def test_metrics_of_known_errors() -> None:
    u = torch.stack([_wave(1) + 0.5, _wave(2) + 1.0])
    # Errors at wavenumber 2 (low), 6 (mid) and 13 (high), with known amplitudes.
    err = torch.stack([0.1 * _wave(2) + 0.02 * _wave(6), 0.03 * _wave(13)])
    per = sample_errors((u + err).float(), u.float())
    norm_u = u.square().sum(dim=(1, 2)).sqrt()
    norm = lambda t: float(t.square().sum().sqrt())  # noqa: E731
    expected_rel = [norm(err[0]) / float(norm_u[0]), norm(err[1]) / float(norm_u[1])]
    assert per["rel_l2"] == pytest.approx(expected_rel, rel=1e-5)
    assert per["band_low"] == pytest.approx([norm(0.1 * _wave(2)) / float(norm_u[0]), 0], abs=1e-6)
    assert per["band_mid"][0] == pytest.approx(norm(0.02 * _wave(6)) / float(norm_u[0]), rel=1e-4)
    assert per["band_high"] == pytest.approx([0, expected_rel[1]], abs=1e-6)
    squares = per["band_low"] ** 2 + per["band_mid"] ** 2 + per["band_high"] ** 2
    assert squares == pytest.approx(per["rel_l2"] ** 2, rel=1e-5)

    metrics = summarize(per)
    assert metrics["rel_l2_mean"] == pytest.approx(np.mean(expected_rel), rel=1e-5)
    assert metrics["rel_l2_std"] == pytest.approx(np.std(expected_rel), rel=1e-4)
    pooled = math.sqrt(float(err.square().sum()) / float(u.square().sum()))
    assert metrics["nrmse"] == pytest.approx(pooled, rel=1e-5)
    assert metrics["max_abs_error"] == pytest.approx(0.12, rel=1e-5)
    assert metrics["n_samples"] == 2


def test_perfect_prediction_has_zero_error() -> None:
    u = torch.randn(3, 16, 16)
    metrics = summarize(sample_errors(u, u))
    assert metrics["rel_l2_mean"] == metrics["max_abs_error"] == metrics["nrmse"] == 0.0
    assert relative_l2(2 * u, u) == pytest.approx(torch.ones(3, dtype=torch.float64))


def test_zero_shot_evaluation_with_predictions(tmp_path: Path) -> None:
    out, pred = tmp_path / "metrics.json", tmp_path / "pred.h5"
    test_file = dataset("down_test")
    argv = ["evaluate", "--checkpoint", str(pretrained()), "--data", str(test_file)]
    argv += ["--out", str(out), "--predictions", str(pred), "--n-predictions", "5", "--quiet"]
    assert main(argv) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["n_samples"] == 12 and metrics["data"] == [str(test_file)]
    assert metrics["rel_l2_median"] > 0 and metrics["rel_l2_std"] >= 0
    per_sample = metrics["rel_l2_per_sample"]
    assert len(per_sample) == 12
    assert np.mean(per_sample) == pytest.approx(metrics["rel_l2_mean"], rel=1e-12)
    assert np.median(per_sample) == pytest.approx(metrics["rel_l2_median"], rel=1e-12)
    identity = metrics["checkpoint"]
    assert identity["sha256"] == sha256_file(pretrained())
    assert (identity["model"], identity["modes"], identity["width"]) == ("xs", 4, 16)
    assert identity["parameters"] == 67329
    assert identity["trained_on"]["data"][0]["param_range"] == [1.0, 5.0]
    assert metrics["files"][0]["system"] == "poisson"

    f, u, c = read_samples(test_file)
    operator = build_operator(load(pretrained()), pretrained()).eval()
    with torch.no_grad():
        expected = operator(torch.from_numpy(f[:5]), torch.from_numpy(c[:5])).numpy()
    with h5py.File(pred) as h5:
        assert {k: h5[k].shape for k in ("f", "u", "u_pred")} == {
            "f": (5, 16, 16),
            "u": (5, 16, 16),
            "u_pred": (5, 16, 16),
        }
        assert h5["u_pred"].dtype == np.float32
        assert np.array_equal(h5["u"][...], u[:5]) and np.array_equal(h5["f"][...], f[:5])
        assert np.allclose(h5["u_pred"][...], expected, atol=1e-6)
        assert h5.attrs["checkpoint_sha256"] == identity["sha256"]
    rel = np.linalg.norm((expected - u[:5]).reshape(5, -1), axis=1)
    rel /= np.linalg.norm(u[:5].reshape(5, -1), axis=1)
    with h5py.File(pred) as h5:
        assert np.allclose(h5["rel_l2"][...], rel, rtol=1e-4)


def test_evaluate_several_files_reports_each(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    files = [str(dataset("pre_test")), str(dataset("helm_test"))]
    argv = ["evaluate", "--checkpoint", str(pretrained()), "--data", *files, "--out", str(out)]
    assert main([*argv, "--quiet", "--batch-size", "5"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["n_samples"] == 24
    assert [f["n_samples"] for f in metrics["files"]] == [16, 8]
    assert [f["system"] for f in metrics["files"]] == ["poisson", "helmholtz"]
    weighted = (
        16 * metrics["files"][0]["rel_l2_mean"] + 8 * metrics["files"][1]["rel_l2_mean"]
    ) / 24
    assert metrics["rel_l2_mean"] == pytest.approx(weighted)


def _channel_mismatch(tmp_path: Path) -> Path:
    checkpoint = load(pretrained())
    checkpoint["channels"] = ["f", "e"]
    path = tmp_path / "other_layout.pt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("grid", "was trained on a 16x16 grid but the data is 32x32"),
        ("layout", "expects input channels ['f', 'e'], but the data provides the canonical"),
        ("missing_data", "does not exist"),
        ("missing_checkpoint", "checkpoint nowhere.pt does not exist"),
        ("n_predictions", "--n-predictions needs --predictions"),
        ("batch", "--batch-size must be at least 1"),
    ],
)
def test_evaluate_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    checkpoint, data, extra = str(pretrained()), str(dataset("pre_test")), []
    if case == "grid":
        data = str(dataset("coarse_test"))
    elif case == "layout":
        checkpoint = str(_channel_mismatch(tmp_path))
    elif case == "missing_data":
        data = str(tmp_path / "none.h5")
    elif case == "missing_checkpoint":
        checkpoint = "nowhere.pt"
    elif case == "n_predictions":
        extra = ["--n-predictions", "3"]
    else:
        extra = ["--batch-size", "0"]
    out = tmp_path / "m.json"
    argv = ["evaluate", "--checkpoint", checkpoint, "--data", data, "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(re.escape(message), err) and "\n" not in err
    assert not out.exists()


def _cell(tmp_path: Path) -> list[Path]:
    """Checkpoints of a cell's three kinds of member: two trained models and a diverged one."""
    calm, wild = tmp_path / "calm", tmp_path / "wild"
    assert train(train_args(calm, data="down_train", val="down_val")) == 0
    assert train(train_args(wild, "--lr", "1e4", "--batch-size", "8", "--val-every", "3")) == 0
    assert load(wild / "model.pt")["status"] == "diverged"
    return [pretrained(), wild / "model.pt", calm / "model.pt"]


def test_packed_evaluation_writes_what_separate_evaluations_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each member's metrics equal its own ``evaluate``'s but for the timing; data read once."""
    checkpoints = [str(path) for path in _cell(tmp_path)]
    files = [str(dataset("down_test")), str(dataset("helm_test"))]
    options = ["--data", *files, "--batch-size", "5", "--threads", "1", "--quiet"]
    for k, checkpoint in enumerate(checkpoints):
        argv = ["evaluate", "--checkpoint", checkpoint, "--out", str(tmp_path / f"alone{k}.json")]
        assert main([*argv, *options]) == 0

    reads: list[str] = []
    load_fields = evaluation.load_fields

    def counting(infos: list, *args: object, **kwargs: object) -> object:
        reads.extend(str(info.path) for info in infos)
        return load_fields(infos, *args, **kwargs)

    monkeypatch.setattr(evaluation, "load_fields", counting)
    outs = [str(tmp_path / f"packed{k}.json") for k in range(len(checkpoints))]
    argv = ["evaluate", "--checkpoint", *checkpoints, "--out", *outs]
    assert main([*argv, *options]) == 0
    assert reads == files  # each test file once, shared by the members that run a model

    statuses = []
    for k, out in enumerate(outs):
        packed = json.loads(Path(out).read_text())
        alone = json.loads((tmp_path / f"alone{k}.json").read_text())
        assert packed.pop("seconds") >= 0 and alone.pop("seconds") >= 0
        assert packed == alone, checkpoints[k]
        statuses.append(packed["status"])
    assert statuses == ["ok", "diverged", "ok"]


@pytest.mark.parametrize(
    ("outs", "extra", "message"),
    [
        (["a.json"], [], "--checkpoint names 2 checkpoint(s) but --out 1 file(s); give one"),
        (["a.json", "./a.json"], [], "--out ./a.json is given twice"),
        (["a.json", "b.json"], ["--predictions", "p.h5"], "--predictions holds one checkpoint's"),
    ],
    ids=["counts", "repeated", "predictions"],
)
def test_packed_evaluation_rejects_unpaired_outputs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    outs: list[str],
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoints = [str(pretrained()), str(pretrained())]
    argv = ["evaluate", "--checkpoint", *checkpoints, "--data", str(dataset("pre_test"))]
    assert main([*argv, "--out", *outs, *extra, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not [p.name for p in tmp_path.iterdir()]
