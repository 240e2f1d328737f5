"""Datasets imported from files: each layout converted with its provenance, the split and
downsampling rules, the residual check (Darcy's own scheme), spatially varying coefficients
through the model's channels, and one clear sentence for every bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from import_helpers import (
    generated,
    serving,
    sha256,
    write_mapped_darcy,
    write_pdebench_darcy,
    write_reference,
)
from snakemake.utils import validate

from pdetransfer import cli
from pdetransfer.data import darcy
from pdetransfer.data.datasets import read_info, read_samples
from pdetransfer.data.download import download
from pdetransfer.data.import_check import check_imported
from pdetransfer.data.import_spec import parse_entry
from pdetransfer.data.importing import import_dataset, split_rows
from pdetransfer.data.stats import compute_stats
from pdetransfer.engine.fields import load_fields, read_infos
from pdetransfer.engine.models.fno import FNO
from pdetransfer.engine.models.normalization import Normalization, NormalizedOperator
from pdetransfer.engine.models.registry import parse_model
from pdetransfer.errors import UserError
from pdetransfer.study.config import ConfigError, Study
from pdetransfer.study.validation import check_schema, coerce_numbers

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {
        "darcy": write_pdebench_darcy(root / "2D_DarcyFlow_beta1.0_Train.hdf5", 20, 32, 1.0, 1),
        "reference": write_reference(root / "poisson.h5", "poisson", (1, 5), 12, 16),
        "mapped": write_mapped_darcy(root / "mapped.h5", 12, 16, 2.0, 3),
    }


def darcy_entry(path: Path, **source) -> dict:
    return {
        "source": {"format": "pdebench-darcy", "path": str(path), "beta": 1.0, "downsample": 2}
        | source,
        "grid": 16,
        "train": 10,
        "val": 4,
        "test": 4,
    }


def mapped_entry(path: Path) -> dict:
    keys = {
        "solution": "outputs/pressure",
        "source": "forcing",
        "coefficients": {"D11": "inputs/permeability", "D22": "inputs/permeability"},
        "x": "mesh/x",
        "y": "mesh/y",
    }
    return {
        "system": "darcy",
        "range": [2, 2],
        "source": {"format": "hdf5", "path": str(path), "keys": keys},
        "grid": 16,
        "train": 6,
        "val": 3,
        "test": 3,
    }


def imported(entry: dict, out: Path, seed: int = 0) -> dict[str, Path]:
    return import_dataset(parse_entry(entry, "datasets.d"), out, seed, progress=False)


# ------------------------------------------------------------------------------ layouts
def test_pdebench_darcy_becomes_the_dataset_format_with_its_provenance(sources, tmp_path):
    files = imported(darcy_entry(sources["darcy"]), tmp_path)
    with h5py.File(sources["darcy"], "r") as h5:
        nu, u_source = h5["nu"][()], h5["tensor"][:, 0]
    rows = []
    for split, size in zip(SPLITS, (10, 4, 4), strict=True):
        info = read_info(files[split])
        assert (info.system, info.split, info.grid, info.n_samples) == ("darcy", split, 16, size)
        assert info.imported and info.coefficient_fields and info.param_range == (1.0, 1.0)
        f, u, c = read_samples(files[split])
        with h5py.File(files[split], "r") as h5:
            attrs, picked = dict(h5.attrs), h5["source_rows"][()]
        rows.append(picked)
        np.testing.assert_array_equal(u, u_source[picked][:, ::2, ::2])
        np.testing.assert_array_equal(c[:, 0], nu[picked][:, ::2, ::2])
        np.testing.assert_array_equal(c[:, 1], c[:, 0])
        assert not c[:, 2:].any() and (f == 1.0).all()
        assert attrs["source_sha256"] == sha256(sources["darcy"])
        assert json.loads(attrs["source_keys"])["nu"] == {"dtype": "float32", "shape": [20, 32, 32]}
        assert (attrs["source_grid"], attrs["downsample"]) == (32, 2)
        assert any("downsampled 32 -> 16" in s for s in json.loads(attrs["conversions"]))
    assert len(np.unique(np.concatenate(rows))) == 18  # disjoint splits


def test_splits_are_disjoint_prefixes_that_do_not_move_each_other() -> None:
    small = split_rows(40, {"train": 4, "val": 3, "test": 5}, seed=0)
    large = split_rows(40, {"train": 20, "val": 3, "test": 8}, seed=0)
    assert len(np.unique(np.concatenate(list(large.values())))) == 31
    np.testing.assert_array_equal(large["train"][:4], small["train"])
    np.testing.assert_array_equal(large["test"][:5], small["test"])
    np.testing.assert_array_equal(
        split_rows(40, {"train": 30, "val": 3, "test": 5}, 0)["val"], small["val"]
    )
    assert not np.array_equal(
        split_rows(40, {"train": 4, "val": 3, "test": 5}, 1)["train"], small["train"]
    )


@pytest.mark.parametrize(
    ("system", "param_range"), [("poisson", (1, 5)), ("advdiff", (0.2, 1)), ("helmholtz", (1, 10))]
)
def test_a_reference_file_imports_as_the_generated_file_it_came_from(system, param_range, tmp_path):
    source = write_reference(tmp_path / "reference.h5", system, param_range, 12, 16)
    entry = {
        "system": system,
        "range": list(param_range),
        "source": {"format": "reference", "path": str(source)},
        "grid": 16,
        "train": 8,
        "val": 2,
        "test": 2,
    }
    files = imported(entry, tmp_path / "out")
    with h5py.File(generated(source), "r") as h5:
        fields, coefficients, param = h5["fields"][()], h5["coefficients"][()], h5["param"][()]
    for split in SPLITS:
        f, u, c = read_samples(files[split])
        with h5py.File(files[split], "r") as h5:
            rows, imported_param = h5["source_rows"][()], h5["param"][()]
        np.testing.assert_array_equal(np.stack([f, u], axis=1), fields[rows])
        np.testing.assert_array_equal(c, coefficients[rows])
        np.testing.assert_allclose(imported_param, param[rows], rtol=1e-5)
        report = check_imported(files[split])
        assert report.ok and report.recomputed and report.residual.max() < 1e-5


def test_per_split_files_give_each_split_a_prefix_of_its_own(tmp_path):
    paths = {
        split: write_reference(tmp_path / f"{split}.h5", "helmholtz", (1, 10), 6, 16, seed=i)
        for i, split in enumerate(SPLITS)
    }
    entry = {
        "system": "helmholtz",
        "range": [1, 10],
        "source": {"format": "reference", "path": {s: str(p) for s, p in paths.items()}},
        "grid": 16,
        "train": 5,
        "val": 3,
        "test": 4,
    }
    files = imported(entry, tmp_path / "out")
    for split, size in zip(SPLITS, (5, 3, 4), strict=True):
        with h5py.File(generated(paths[split]), "r") as h5:
            expected = h5["fields"][:size]
        f, u, _ = read_samples(files[split])
        np.testing.assert_array_equal(np.stack([f, u], axis=1), expected)
        assert check_imported(files[split]).ok
    entry["source"]["path"]["val"] = str(paths["train"])
    with pytest.raises(UserError, match=r"maps two splits to one file"):
        parse_entry(entry, "datasets.d")


def test_a_mapped_vertex_grid_darcy_file_imports_and_passes_its_check(sources, tmp_path):
    files = imported(mapped_entry(sources["mapped"]), tmp_path)
    report = check_imported(files["val"])
    assert report.ok, report.failures
    assert report.recomputed and report.skipped is None
    assert (report.residual <= 2 * report.floor + 1e-6).all()
    _, _, c = read_samples(files["val"])
    assert c.shape == (3, 6, 16, 16) and set(np.unique(c[:, 0])) <= {3.0, 12.0}


def test_an_external_system_is_imported_with_the_reason_its_residual_is_not_checked(
    sources, tmp_path
):
    entry = mapped_entry(sources["mapped"])
    del entry["system"], entry["range"]
    files = imported(entry, tmp_path)
    report = check_imported(files["test"])
    assert report.ok and report.skipped and "external" in report.skipped
    assert read_info(files["test"]).system == "external"


# ------------------------------------------------------------------------------ the check
def test_darcy_scheme_converges_to_the_pde_at_second_order() -> None:
    """Independent of any solve: sin(pi x) sin(pi y) with a = 1 has f = 2 pi^2 u."""
    for layout, points in (
        ("cell", lambda n: (np.arange(n) + 0.5) / n),
        ("vertex", lambda n: np.arange(n) / (n - 1)),
    ):
        errors = []
        for n in (16, 32):
            x = points(n)
            u = np.sin(np.pi * x)[None, :] * np.sin(np.pi * x)[:, None]
            residual, _, boundary = darcy.residual(
                np.ones((1, n, n)), u[None], 2 * np.pi**2 * u[None], layout
            )
            errors.append(residual[0])
            assert boundary[0] < 1e-12
        assert 3.5 < errors[0] / errors[1] < 4.5, (layout, errors)


def test_a_wrong_solution_fails_the_check_until_its_residual_is_accepted(sources, tmp_path):
    bad = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    bad.write_bytes(sources["darcy"].read_bytes())
    with h5py.File(bad, "r+") as h5:
        h5["tensor"][...] = h5["tensor"][()] * 1.01
    files = imported(darcy_entry(bad), tmp_path / "strict")
    report = check_imported(files["train"])
    assert not report.ok and "residual above" in report.failures[0]
    assert report.residual.min() > 5e-3  # a 1% error in u is a ~1% residual
    files = imported(darcy_entry(bad, residual_tolerance=0.05), tmp_path / "lenient")
    assert check_imported(files["train"]).ok


def test_check_command_reports_an_imported_file(sources, tmp_path, capsys):
    files = imported(darcy_entry(sources["darcy"]), tmp_path)
    assert cli.main(["check", str(files["test"])]) == 0
    out = capsys.readouterr().out
    assert "imported (pdebench-darcy)" in out and "finite volume (Dirichlet), 32x32" in out
    assert "computed at import" in out and out.rstrip().endswith("OK")


# ------------------------------------------------------------------------------ the model
def test_coefficient_planes_enter_the_model_as_constants_do() -> None:
    torch.manual_seed(0)
    network = FNO(parse_model("2,4", 7))
    operator = NormalizedOperator(network, Normalization(0.5, (0.02, 0.02, 0.01, 1, 1, 1)))
    f = torch.rand(3, 16, 16)
    constants = torch.rand(3, 6)
    planes = constants[..., None, None].expand(3, 6, 16, 16)
    torch.testing.assert_close(operator(f, constants), operator(f, planes))
    # Darcy's forcing: the source scaling makes the prediction exactly linear in beta.
    a = torch.rand(3, 6, 16, 16)
    one = operator(torch.ones(3, 16, 16), a)
    torch.testing.assert_close(operator(torch.full((3, 16, 16), 10.0), a), 10 * one)


def test_imported_and_generated_files_mix_in_one_training_set(sources, tmp_path):
    darcy_files = imported(darcy_entry(sources["darcy"]), tmp_path / "darcy")
    reference = {
        "system": "poisson",
        "range": [1, 5],
        "source": {"format": "reference", "path": str(sources["reference"])},
        "grid": 16,
        "train": 6,
        "val": 2,
        "test": 2,
    }
    poisson_files = imported(reference, tmp_path / "poisson")
    infos = read_infos([darcy_files["train"], poisson_files["train"]], "train")
    fields = load_fields(infos)
    assert fields.coefficients.shape == (16, 6, 16, 16)
    _, _, constants = read_samples(poisson_files["train"])
    torch.testing.assert_close(
        fields.coefficients[10:, :, 3, 5], torch.from_numpy(constants), rtol=0, atol=0
    )
    stats = compute_stats([darcy_files["train"], poisson_files["train"]])
    pixels = np.concatenate(
        [read_samples(darcy_files["train"])[2][:, 0].ravel(), np.repeat(constants[:, 0], 256)]
    )
    expected = np.sort(pixels)[int(np.ceil(pixels.size / 2)) - 1]
    assert stats["coefficient_abs_median"][0] == pytest.approx(expected)


# ------------------------------------------------------------------------------ bad input
def _run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def _config_file(tmp_path: Path, entry: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"d": entry}}))
    return path


def _import_error(capsys, tmp_path: Path, entry: dict) -> str:
    config = _config_file(tmp_path, entry)
    out = tmp_path / "out"
    code, err = _run(
        capsys,
        "import",
        "--config",
        str(config),
        "--dataset",
        "d",
        "--out-dir",
        str(out),
        "--quiet",
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not list(out.glob("*.h5")) if out.exists() else True
    return lines[0]


def _copy(source: Path, target: Path, edit) -> Path:
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as h5:
        edit(h5)
    return target


def test_a_missing_file_is_one_line(capsys, tmp_path):
    missing = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    line = _import_error(capsys, tmp_path, darcy_entry(missing))
    assert f"source file {missing} does not exist; download it or fix the path" in line


def test_a_wrong_key_is_one_line_listing_the_keys(sources, capsys, tmp_path):
    def rename(h5):
        h5.move("nu", "a")

    path = _copy(sources["darcy"], tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", rename)
    line = _import_error(capsys, tmp_path, darcy_entry(path))
    assert f"{path} has no dataset 'nu'" in line and "its keys: a, tensor" in line


def test_a_wrong_shape_is_one_line(sources, capsys, tmp_path):
    def squeeze(h5):
        data = h5["tensor"][:, 0]
        del h5["tensor"]
        h5["tensor"] = data

    path = _copy(sources["darcy"], tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", squeeze)
    line = _import_error(capsys, tmp_path, darcy_entry(path))
    assert "'tensor' has shape (20, 32, 32), expected (20, 1, 32, 32)" in line


def test_nan_is_one_line_naming_the_sample(sources, capsys, tmp_path):
    def poison(h5):
        h5["tensor"][7, 0, 3, 3] = np.nan

    path = _copy(sources["darcy"], tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", poison)
    entry = darcy_entry(path) | {"train": 14, "val": 3, "test": 3}  # every row
    line = _import_error(capsys, tmp_path, entry)
    assert f"{path}: sample 7 holds NaN or infinity (in u)" in line


def test_a_grid_mismatch_says_which_downsampling_fits(sources, capsys, tmp_path):
    entry = darcy_entry(sources["darcy"])
    del entry["source"]["downsample"]
    line = _import_error(capsys, tmp_path, entry)
    assert "is on a 32x32 grid" in line and "set datasets.d.source.downsample: 2" in line


def test_a_checksum_mismatch_is_one_line(sources, capsys, tmp_path):
    line = _import_error(capsys, tmp_path, darcy_entry(sources["darcy"], checksum="0" * 64))
    assert f"SHA-256 {sha256(sources['darcy'])} does not match" in line
    assert "download it again or correct the checksum" in line


def test_a_matching_checksum_is_recorded_as_verified(sources, tmp_path):
    entry = darcy_entry(sources["darcy"], checksum=sha256(sources["darcy"]).upper())
    files = imported(entry, tmp_path)
    with h5py.File(files["val"], "r") as h5:
        assert bool(h5.attrs["checksum_verified"])


def test_beta_must_agree_with_the_file_name(sources, capsys, tmp_path):
    line = _import_error(capsys, tmp_path, darcy_entry(sources["darcy"], beta=10.0))
    assert "'datasets.d.source.beta': 10, but the file" in line and "says beta 1.0" in line


def test_too_few_samples_is_one_line(sources, capsys, tmp_path):
    line = _import_error(capsys, tmp_path, darcy_entry(sources["darcy"]) | {"train": 40})
    assert "holds 20 samples, fewer than the 48" in line


def test_an_existing_output_is_kept_without_force(sources, capsys, tmp_path):
    config = _config_file(tmp_path, darcy_entry(sources["darcy"]))
    argv = ["import", "--config", str(config), "--dataset", "d", "--out-dir", str(tmp_path / "o")]
    assert cli.main([*argv, "--quiet"]) == 0
    assert "into" in capsys.readouterr().out
    code, err = _run(capsys, *argv, "--quiet")
    assert code == 2 and "already exists; pass --force" in err
    assert cli.main([*argv, "--quiet", "--force"]) == 0


# ------------------------------------------------------------------------------ config check
def _study(datasets: dict, pretrain: list[str] | None = None) -> dict:
    return {
        "datasets": datasets,
        "sizes": {"tiny": "2,4"},
        "pretrain": {"p": pretrain or ["d1"]},
        "experiments": {"e": {"pretrain": "p", "downstream": ["d1"]}},
        "sweep": {"n": [4]},
    }


def _checked(config: dict) -> Study:
    config = copy.deepcopy(config)
    coerce_numbers(config, SCHEMA)
    check_schema(config, SCHEMA)
    validate(config, str(SCHEMA_PATH))
    return Study(config)


def test_the_config_check_completes_imported_entries(sources):
    study = _checked(_study({"d1": darcy_entry(sources["darcy"])}))
    assert study.datasets["d1"]["system"] == "darcy" and study.datasets["d1"]["range"] == [1, 1]


def test_the_config_check_catches_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^config key 'datasets\.d1\.source': source file .* "):
        _checked(_study({"d1": darcy_entry(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")}))


def test_the_config_check_catches_a_wrong_format_name(sources):
    entry = darcy_entry(sources["darcy"])
    entry["source"]["format"] = "pdebench"
    with pytest.raises(ConfigError, match=r"^config key 'datasets\.d1\.source\.format': "):
        _checked(_study({"d1": entry}))


def test_the_config_check_catches_a_grid_mismatch_for_mixing(sources):
    datasets = {
        "d1": darcy_entry(sources["darcy"]),
        "g": {"system": "poisson", "range": [1, 5], "grid": 32, "train": 8, "val": 2, "test": 2},
    }
    with pytest.raises(ConfigError, match=r"'pretrain\.p': mixed datasets must share one grid"):
        _checked(_study(datasets, ["d1", "g"]))


def test_the_config_check_catches_a_source_grid_mismatch(sources):
    entry = darcy_entry(sources["darcy"]) | {"grid": 32}
    with pytest.raises(ConfigError, match=r"'datasets\.d1\.source': .*downsample: 1"):
        _checked(_study({"d1": entry}))


def test_a_generated_entry_still_needs_system_and_range():
    datasets = {"d1": {"system": "poisson", "grid": 16, "train": 8, "val": 2, "test": 2}}
    with pytest.raises(ConfigError, match=r"^config key 'datasets\.d1\.range': is required"):
        _checked(_study(datasets))
    datasets["d1"] |= {"system": "darcy", "range": [1, 1]}
    with pytest.raises(ConfigError, match=r"darcy data cannot be generated, only imported"):
        _checked(_study(datasets))


# ------------------------------------------------------------------------------ download
def test_a_download_is_kept_only_with_its_published_checksum(sources, tmp_path, capsys):
    name = sources["darcy"].name
    with serving(sources["darcy"].parent) as url:
        out = download(f"{url}/{name}", sha256(sources["darcy"]), tmp_path / "a" / name)
        assert out.read_bytes() == sources["darcy"].read_bytes()
        code, err = _run(
            capsys,
            "download",
            "--url",
            f"{url}/{name}",
            "--sha256",
            "0" * 64,
            "--out",
            str(tmp_path / "b" / name),
        )
        assert code == 2 and "not the published 0000" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())
        code, err = _run(
            capsys,
            "download",
            "--url",
            f"{url}/missing.h5",
            "--sha256",
            "0" * 64,
            "--out",
            str(tmp_path / "c.h5"),
        )
        assert code == 2 and "cannot download" in err and "(HTTP 404 " in err
    assert not (tmp_path / "c.h5").exists()


def test_a_url_needs_its_checksum(sources):
    entry = darcy_entry(sources["darcy"], url="http://127.0.0.1:9/x.hdf5")
    with pytest.raises(UserError, match=r"'datasets\.d\.source\.url' needs one file .* checksum"):
        parse_entry(entry, "datasets.d")


def test_a_parameter_outside_the_stated_range_is_one_line(sources, capsys, tmp_path):
    entry = {
        "system": "poisson",
        "range": [1, 2],
        "source": {"format": "reference", "path": str(sources["reference"])},
        "grid": 16,
        "train": 8,
        "val": 2,
        "test": 2,
    }
    line = _import_error(capsys, tmp_path, entry)
    assert "has e = " in line and "outside datasets.d.range [1, 2]; widen the range" in line
