"""A study on imported files through ``snakemake``: two PDEBench Darcy files (beta = 1 and 10),
a Darcy file under other key names and a reference-generator Poisson file, imported at grid
16; pre-training on beta = 1, fine-tuned and zero-shot on beta = 10, and a pre-training that
mixes the mapped Darcy file with generated Poisson data, fine-tuned on the reference file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from import_helpers import (
    serving,
    sha256,
    write_mapped_darcy,
    write_pdebench_darcy,
    write_reference,
)
from workflow_helpers import job_counts, snakemake

pytestmark = pytest.mark.slow

SIZES = {"train": 16, "val": 4, "test": 4}


def study_config(sources: dict[str, Path]) -> dict:
    mapped_keys = {
        "solution": "outputs/pressure",
        "source": "forcing",
        "coefficients": {"D11": "inputs/permeability", "D22": "inputs/permeability"},
        "x": "mesh/x",
        "y": "mesh/y",
    }
    small = {"train": 8, "val": 2, "test": 2}
    return {
        "datasets": {
            "darcy_b1": {
                "source": {
                    "format": "pdebench-darcy",
                    "path": str(sources["b1"]),
                    "beta": 1.0,
                    "downsample": 2,
                },
                "grid": 16,
                **SIZES,
            },
            "darcy_b10": {
                "source": {"format": "pdebench-darcy", "path": str(sources["b10"]), "beta": 10},
                "grid": 16,
                **SIZES,
            },
            "darcy_mapped": {
                "system": "darcy",
                "range": [2, 2],
                "source": {"format": "hdf5", "path": str(sources["mapped"]), "keys": mapped_keys},
                "grid": 16,
                **small,
            },
            "poisson_ref": {
                "system": "poisson",
                "range": [1, 5],
                "source": {"format": "reference", "path": str(sources["reference"])},
                "grid": 16,
                **small,
            },
            "poisson_gen": {"system": "poisson", "range": [5, 10], "grid": 16, **small},
        },
        "sizes": {"tiny": "2,4"},
        "pretrain": {"darcy_b1": ["darcy_b1"], "mixed": ["darcy_mapped", "poisson_gen"]},
        "experiments": {
            "darcy_beta": {"pretrain": "darcy_b1", "downstream": ["darcy_b10"]},
            "mixed": {"pretrain": "mixed", "downstream": ["poisson_ref"]},
        },
        "sweep": {"n": [4], "lr": [0.001], "seeds": [0], "modes": ["finetune", "zeroshot"]},
        "training": {
            "pretrain": {"epochs": 2, "batch_size": 8},
            "downstream": {"epochs": 2, "batch_size": 4},
        },
        "evaluation": {"batch_size": 8},
    }


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imported")
    sources = {
        "b1": write_pdebench_darcy(
            root / "src" / "2D_DarcyFlow_beta1.0_Train.hdf5", 24, 32, 1.0, 1
        ),
        "b10": write_pdebench_darcy(
            root / "src" / "2D_DarcyFlow_beta10.0_Train.hdf5", 24, 16, 10.0, 2
        ),
        "mapped": write_mapped_darcy(root / "src" / "mapped.h5", 12, 16, 2.0, 3),
        "reference": write_reference(root / "src" / "poisson.h5", "poisson", (1, 5), 12, 16),
    }
    (root / "study.yaml").write_text(yaml.safe_dump(study_config(sources)))
    config = str(root / "study.yaml")
    result = snakemake(root, "results/tables/runs.csv", "--cores", "2", "--configfile", config)
    assert result.returncode == 0, result.stderr[-5000:]
    assert job_counts(result.stdout + result.stderr)["import_dataset"] == 4
    return root


def test_the_study_trains_and_evaluates_on_every_imported_layout(study_dir: Path) -> None:
    runs = pd.read_csv(study_dir / "results" / "tables" / "runs.csv")
    pairs = set(zip(runs["pretrain"], runs["downstream"], runs["mode"], strict=True))
    assert pairs == {
        (p, d, m)
        for p, d in (("darcy_b1", "darcy_b10"), ("mixed", "poisson_ref"))
        for m in ("finetune", "zeroshot")
    }
    assert (runs["status"] == "completed").all()
    assert runs["test_rel_l2_mean"].between(0, 1e3).all()
    assert set(runs["system"]) == {"darcy", "poisson"}


def test_every_imported_file_passed_its_check(study_dir: Path) -> None:
    data = study_dir / "results" / "data"
    reports = {p.relative_to(data).as_posix(): p.read_text() for p in data.glob("*/*.check.txt")}
    assert "darcy_b10/test.check.txt" in reports and "darcy_b1/train.check.txt" in reports
    assert all(text.rstrip().endswith("OK") for text in reports.values())
    assert "finite volume (Dirichlet), 32x32" in reports["darcy_b1/train.check.txt"]
    assert "spectral (periodic), 16x16" in reports["poisson_ref/test.check.txt"]
    assert "recomputed from this file" in reports["darcy_mapped/train.check.txt"]


def test_a_second_run_has_nothing_to_do(study_dir: Path) -> None:
    config = str(study_dir / "study.yaml")
    result = snakemake(study_dir, "results/tables/runs.csv", "-n", "--configfile", config)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_a_missing_source_file_stops_the_workflow_before_any_job(tmp_path: Path) -> None:
    config = study_config({k: tmp_path / f"{k}.h5" for k in ("b1", "b10", "mapped", "reference")})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "study.yaml"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid config: config key 'datasets.darcy_b1.source': source file" in output
    assert "does not exist" in output and "Traceback" not in output


def test_a_source_with_a_url_is_downloaded_then_imported(tmp_path: Path) -> None:
    served = write_pdebench_darcy(
        tmp_path / "www" / "2D_DarcyFlow_beta1.0_Train.hdf5", 12, 16, 1.0, 4
    )
    target = "data/2D_DarcyFlow_beta1.0_Train.hdf5"
    with serving(served.parent) as url:
        source = {
            "format": "pdebench-darcy",
            "path": target,
            "beta": 1.0,
            "url": f"{url}/{served.name}",
            "checksum": sha256(served),
        }
        config = {
            "datasets": {"d": {"source": source, "grid": 16, "train": 6, "val": 3, "test": 3}},
            "sizes": {"tiny": "2,4"},
            "pretrain": {"d": ["d"]},
            "experiments": {"e": {"pretrain": "d", "downstream": ["d"]}},
            "sweep": {"n": [4]},
        }
        work = tmp_path / "work"
        work.mkdir()
        (work / "study.yaml").write_text(yaml.safe_dump(config))
        result = snakemake(
            work,
            "results/data/d/test.check.txt",
            "--cores",
            "1",
            "--configfile",
            str(work / "study.yaml"),
        )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert (counts["download"], counts["import_dataset"], counts["check"]) == (1, 1, 1)
    assert (work / target).read_bytes() == served.read_bytes()
    report = (work / "results" / "data" / "d" / "test.check.txt").read_text()
    assert "verified against the config" in report and report.rstrip().endswith("OK")
