"""Dataset files: layout, attributes, determinism, atomic writes, reading, check, stats."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pdetransfer import __version__
from pdetransfer.data import check, datasets, generate, stats, systems
from pdetransfer.errors import UserError

RANGES = {"poisson": (1.0, 5.0), "advdiff": (0.2, 1.0), "helmholtz": (1.0, 10.0)}


def _generate(tmp_path: Path, name: str = "d.h5", **kwargs) -> Path:
    args = {
        "system": "poisson",
        "param_range": (1.0, 5.0),
        "split": "train",
        "n_samples": 12,
        "grid": 16,
        "seed": 0,
        "progress": False,
    }
    args.update(kwargs)
    return generate.generate_dataset(out=tmp_path / name, **args)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {name: h5[name][()] for name in ("fields", "tensor", "coefficients", "param")}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One small file per system, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("data")
    return {
        system: _generate(root, f"{system}.h5", system=system, param_range=rng, n_samples=24)
        for system, rng in RANGES.items()
    }


@pytest.mark.parametrize("system", list(RANGES))
def test_layout_and_attributes(files, system):
    spec = systems.SYSTEMS[system]
    with h5py.File(files[system], "r") as h5:
        assert h5["fields"].shape == (24, 2, 16, 16) and h5["fields"].dtype == np.float32
        assert h5["fields"].chunks == (1, 2, 16, 16)
        assert h5["tensor"].shape == (24, len(spec.tensor_names))
        assert h5["tensor"].dtype == np.float32
        assert h5["coefficients"].shape == (24, 6) and h5["coefficients"].dtype == np.float32
        assert h5["param"].dtype == np.float64 and h5["sparsity"].shape == (24,)
        assert set(np.unique(h5["sparsity"][()])) <= {0.2, 0.4, 0.6, 0.8}
        attrs = dict(h5.attrs)
    assert attrs["system"] == system and attrs["param_name"] == spec.param_name
    assert list(attrs["param_range"]) == list(RANGES[system])
    assert attrs["split"] == "train" and attrs["grid"] == 16 and attrs["n_samples"] == 24
    assert attrs["base_seed"] == 0
    assert attrs["seed"] == datasets.derive_seed(0, system, RANGES[system], "train")
    assert attrs["kappa"] == 0.01 and attrs["format_version"] == datasets.FORMAT_VERSION
    assert attrs["pdetransfer_version"] == __version__
    config = json.loads(attrs["config"])
    assert config["system"] == system and config["seed"] == attrs["seed"]
    assert config["tensor_columns"] == list(spec.tensor_names)
    if system == "helmholtz":
        assert attrs["omega_counts"].sum() == 24 and attrs["n_rejected"] >= 0
        assert set(attrs["omega_values"]) <= set(range(1, 11))
    info = datasets.read_info(files[system])
    assert (info.system, info.split, info.grid, info.n_samples) == (system, "train", 16, 24)
    assert info.param_range == RANGES[system] and info.seed == attrs["seed"]


@pytest.mark.parametrize("system", list(RANGES))
def test_generated_files_pass_the_check(files, system):
    report = check.check_dataset(files[system], progress=False)
    assert report.ok, report.failures
    assert report.residual.max() < 1e-4 and np.all(report.residual <= 2 * report.floor + 1e-6)


def test_check_catches_wrong_solutions_and_inconsistent_coefficients(files, tmp_path):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(files["advdiff"].read_bytes())
    with h5py.File(broken, "r+") as h5:
        h5["fields"][3, 1] *= 1.001
        tensor = h5["tensor"][()]
        tensor[5, 0] *= 2
        h5["tensor"][...] = tensor
    failures = " ".join(check.check_dataset(broken, progress=False).failures)
    assert "residual above" in failures and "disagree" in failures


def test_seed_derivation_is_stable_and_distinguishes_files():
    assert datasets.derive_seed(0, "poisson", (1, 5), "train") == 9099351028053839240
    seeds = {
        datasets.derive_seed(0, "poisson", (1, 5), split) for split in ("train", "val", "test")
    }
    seeds.add(datasets.derive_seed(0, "poisson", (1, 5.5), "train"))
    seeds.add(datasets.derive_seed(0, "advdiff", (1, 5), "train"))
    seeds.add(datasets.derive_seed(1, "poisson", (1, 5), "train"))
    assert len(seeds) == 6


def test_bit_identical_whatever_chunk_size_or_threads(tmp_path):
    """n = 16 has 256-sample blocks, so 300 samples span two blocks."""
    common = {"system": "helmholtz", "param_range": (1.0, 6.0), "n_samples": 300}
    a = _arrays(_generate(tmp_path, "a.h5", chunk_size=1, threads=1, **common))
    b = _arrays(_generate(tmp_path, "b.h5", chunk_size=1000, threads=2, **common))
    c = _arrays(_generate(tmp_path, "c.h5", chunk_size=256, threads=3, **common))
    for name in a:
        assert np.array_equal(a[name], b[name]) and np.array_equal(a[name], c[name]), name
    prefix = _arrays(_generate(tmp_path, "p.h5", system="helmholtz", param_range=(1.0, 6.0)))
    for name in a:
        assert np.array_equal(prefix[name], a[name][:12]), name


def test_splits_and_ranges_get_different_sources(tmp_path):
    train = _arrays(_generate(tmp_path, "t.h5"))["fields"][:, 0]
    val = _arrays(_generate(tmp_path, "v.h5", split="val"))["fields"][:, 0]
    shifted = _arrays(_generate(tmp_path, "s.h5", param_range=(1.0, 6.0)))["fields"][:, 0]
    for other in (val, shifted):
        assert not np.any([np.array_equal(x, y) for x in train for y in other])


def test_grid_sizes_sample_the_same_sources(tmp_path):
    coarse = _arrays(_generate(tmp_path, "c.h5", grid=32, n_samples=4))
    fine = _arrays(_generate(tmp_path, "f.h5", grid=64, n_samples=4))
    assert np.abs(coarse["fields"][:, 0] - fine["fields"][:, 0, ::2, ::2]).max() < 1e-6
    assert np.array_equal(coarse["coefficients"], fine["coefficients"])


def test_failed_generation_leaves_no_file(tmp_path, monkeypatch):
    calls = []

    def failing_block(self, start, stop):
        calls.append(start)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(systems.Sampler, "block", failing_block)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _generate(tmp_path, "x.h5")
    assert calls and list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path):
    path = _generate(tmp_path)
    with pytest.raises(UserError, match="--force"):
        _generate(tmp_path)
    before = _arrays(path)["param"]
    _generate(tmp_path, seed=1, force=True)
    assert not np.array_equal(before, _arrays(path)["param"])


def test_read_samples_in_any_order(files):
    path = files["poisson"]
    data = _arrays(path)
    indices = np.array([7, 2, 2, 23, 0])
    f, u, coefficients = datasets.read_samples(path, indices)
    assert f.dtype == u.dtype == coefficients.dtype == np.float32
    assert np.array_equal(f, data["fields"][indices, 0])
    assert np.array_equal(u, data["fields"][indices, 1])
    assert np.array_equal(coefficients, data["coefficients"][indices])
    f_all, _, _ = datasets.read_samples(path)
    assert np.array_equal(f_all, data["fields"][:, 0])
    with pytest.raises(UserError, match="outside"):
        datasets.read_samples(path, np.array([24]))


def test_unreadable_files_are_user_errors(files, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        datasets.read_info(tmp_path / "missing.h5")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5"):
        datasets.read_info(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(files["poisson"].read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated"):
        datasets.read_info(truncated)
    reshaped = tmp_path / "reshaped.h5"
    reshaped.write_bytes(files["poisson"].read_bytes())
    with h5py.File(reshaped, "r+") as h5:
        del h5["coefficients"]
        h5["coefficients"] = np.zeros((24, 5), np.float32)
    with pytest.raises(UserError, match="shape"):
        datasets.read_info(reshaped)


def test_stats_of_one_and_several_files(files, tmp_path):
    one = stats.compute_stats([files["poisson"]])
    f, _, coefficients = datasets.read_samples(files["poisson"])
    assert np.isclose(one["source_norm_median"], np.median(np.sqrt((f**2).mean(axis=(1, 2)))))
    assert np.isclose(one["coefficient_abs_median"][0], np.median(np.abs(coefficients[:, 0])))
    assert one["coefficient_abs_median"][3:] == [1.0, 1.0, 1.0]  # all-zero channels
    assert one["channels"] == ["f", "D11", "D22", "D12", "v1", "v2", "omega"]
    assert one["n_samples"] == 24 and one["files"][0]["system"] == "poisson"
    mixed = stats.compute_stats([files[s] for s in RANGES])
    assert mixed["n_samples"] == 72 and len(mixed["files"]) == 3
    assert all(value != 1.0 for value in mixed["coefficient_abs_median"][3:])
    out = tmp_path / "stats.json"
    out.write_text(json.dumps(mixed))
    assert stats.load_stats(out) == mixed


def test_stats_rejects_other_splits_and_bad_json(files, tmp_path):
    val = _generate(tmp_path, "val.h5", split="val")
    with pytest.raises(UserError, match="training files only"):
        stats.compute_stats([files["poisson"], val])
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(UserError, match="not readable JSON"):
        stats.load_stats(bad)
    good = stats.compute_stats([files["poisson"]])
    good["coefficient_abs_median"] = [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    bad.write_text(json.dumps(good))
    with pytest.raises(UserError, match="positive"):
        stats.load_stats(bad)


def test_source_norm_definition():
    f = np.stack([np.full((4, 4), 2.0), np.arange(16.0).reshape(4, 4)])
    assert np.allclose(stats.source_norm(f), [2.0, np.sqrt(np.mean(np.arange(16.0) ** 2))])
