"""Config checking before any job: numbers YAML leaves as strings, keys in schema errors, and
the job rules the study checks agreeing with the jobs themselves.

The workflow-level tests (a broken config stops ``snakemake -n`` naming its key) are in
test_workflow.py; these test the functions behind them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from pdetransfer.data.generate import generate_dataset
from pdetransfer.errors import UserError
from pdetransfer.study.config import ConfigError, Study
from pdetransfer.study.validation import check_schema, coerce_numbers, key_name, sharing_conflict

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def raw_config(name: str = "test") -> dict:
    return yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())


def checked(config: dict) -> Study:
    """What the workflow does with a config: coerce, check the schema, fill defaults, study."""
    coerce_numbers(config, SCHEMA)
    check_schema(config, SCHEMA)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return Study(config)


def test_yaml_11_leaves_exponent_floats_as_strings() -> None:
    """The reason coerce_numbers exists (if PyYAML changes this, it may go)."""
    assert yaml.safe_load("lr: [1e-3, 5E-4, 1.0e-3]") == {"lr": ["1e-3", "5E-4", 0.001]}


def test_sweep_pack_defaults_to_true_and_takes_booleans_written_as_strings() -> None:
    config = raw_config()
    checked(config)
    assert config["sweep"]["pack"] is True
    for text, value in (("false", False), ("True", True)):
        config = raw_config()
        config["sweep"]["pack"] = text  # as `--config 'sweep={pack: false}'` may leave it
        checked(config)
        assert config["sweep"]["pack"] is value
    config = raw_config()
    config["sweep"]["pack"] = "maybe"
    with pytest.raises(ConfigError, match=r"sweep\.pack"):
        checked(config)


def test_numbers_are_coerced_only_where_the_schema_wants_numbers() -> None:
    config = raw_config()
    config["sweep"].update(lr=["1e-3", "5E-4", ".5"], n=["4", "8"], seeds=["0"])
    config["training"]["pretrain"]["lr"] = "2e-3"
    config["datasets"]["poisson_1_5"]["range"] = ["1", "5e0"]
    config["sizes"]["tiny"] = "2,4"
    config["pretrain"]["odd"] = ["1e3"]  # a dataset name that looks like a number
    result = coerce_numbers(config, SCHEMA)
    assert result is config
    assert config["sweep"]["lr"] == [0.001, 0.0005, 0.5]
    assert config["sweep"]["n"] == [4, 8] and config["sweep"]["seeds"] == [0]
    assert config["training"]["pretrain"]["lr"] == 0.002
    assert config["datasets"]["poisson_1_5"]["range"] == [1, 5.0]
    assert config["sizes"]["tiny"] == "2,4"
    assert config["pretrain"]["odd"] == ["1e3"]


def test_a_non_integer_string_stays_a_schema_error_naming_its_key() -> None:
    config = raw_config()
    config["sweep"]["n"] = [4, "1.5"]
    coerce_numbers(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"^config key 'sweep\.n\[1\]': '1\.5' is not of type"):
        check_schema(config, SCHEMA)


def test_a_missing_key_is_named() -> None:
    config = raw_config()
    del config["datasets"]["poisson_1_5"]["train"]
    with pytest.raises(
        ConfigError, match=r"^config key 'datasets\.poisson_1_5\.train': is required"
    ):
        check_schema(config, SCHEMA)
    del config["datasets"]
    with pytest.raises(ConfigError, match=r"^config key 'datasets': is required"):
        check_schema(config, SCHEMA)


def test_key_names() -> None:
    assert key_name(["datasets", "a", "range", 0]) == "datasets.a.range[0]"
    assert key_name(["sweep"]) == "sweep"
    assert key_name([]) == ""


def test_the_shipped_configs_pass() -> None:
    for name in ("config", "reproduce", "paper", "test"):
        checked(raw_config(name))


def test_a_batch_larger_than_n_is_allowed() -> None:
    """Training uses min(batch, N): a batch size above the smallest N is no error."""
    config = raw_config()
    config["training"]["downstream"]["batch_size"] = 1000
    checked(config)


def test_sizes_are_checked_only_against_grids_they_run_on() -> None:
    """Scratch-only studies build no pre-training, so its grid does not constrain sizes."""
    config = raw_config()
    config["datasets"]["poisson_5_10"]["grid"] = 32
    config["datasets"]["helmholtz_1_10"]["grid"] = 32
    config["pretrain"]["mixed"] = ["poisson_1_5"]
    config["sizes"]["tiny"] = "12,4"  # fine on 32, too many modes for 16
    scratch = copy.deepcopy(config)
    scratch["sweep"]["modes"] = ["scratch"]
    checked(scratch)
    with pytest.raises(ConfigError, match=r"config key 'experiments\.shifts\.downstream'"):
        checked(config)


def _advdiff_study(psi_range: list[float]) -> dict:
    config = raw_config()
    config["datasets"]["poisson_5_10"] = {
        "system": "advdiff",
        "range": psi_range,
        "grid": 32,
        "train": 8,
        "val": 4,
        "test": 4,
    }
    config["sweep"].update(modes=["scratch"], n=[4])
    return config


def test_unreachable_psi_is_refused_by_the_config_check_and_by_generation(tmp_path: Path) -> None:
    """The check computes the reachable Psi of the very samples generate draws: on a 32x32 grid
    (whose Nyquist modes coincide with the sources' bump lattice) Psi above ~46 is out of reach
    for every source; up to 40 every source reaches it."""
    with pytest.raises(ConfigError, match=r"config key 'datasets\.poisson_5_10\.range': Psi "):
        checked(_advdiff_study([1, 100]))
    with pytest.raises(UserError, match="cannot be reached on a 32x32 grid"):
        generate_dataset("advdiff", (1, 100), "test", 4, 32, 0, tmp_path / "a.h5", progress=False)
    checked(_advdiff_study([1, 40]))
    generate_dataset("advdiff", (1, 40), "test", 4, 32, 0, tmp_path / "b.h5", progress=False)


QUESTION_STUDIES = ("data_scaling", "model_size", "ood_shift", "mixed_physics", "modes")


def test_the_question_studies_are_valid_and_share_one_results_root() -> None:
    """Each question study is a config a user runs alone; run in one directory, none
    redefines a dataset, pre-training, recipe or refinement rule another one uses."""
    records = {name: checked(raw_config(name)).record() for name in QUESTION_STUDIES}
    for name, record in records.items():
        assert record["config"]["study"] == name
        assert record["config"]["sweep"]["refine"]["enabled"]
        assert len(record["config"]["sweep"]["seeds"]) >= 3
        for other, theirs in records.items():
            if other != name:
                assert sharing_conflict(record, theirs) is None, (name, other)
    shared = set(records["data_scaling"]["cells"]) & set(records["ood_shift"]["cells"])
    assert shared  # the (5,10) cells are run once for both
