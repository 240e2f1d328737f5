"""config/README.md is generated from the config schema; it must say what the schema says."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pdetransfer.cli import main
from pdetransfer.errors import UserError
from pdetransfer.study import configdoc

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
PAGE = ROOT / "config" / "README.md"


def test_config_readme_is_up_to_date() -> None:
    page = configdoc.generate(SCHEMA, ROOT / "config")
    assert PAGE.read_text() == page, (
        f"config/README.md is out of date with the schema; regenerate it with "
        f"{configdoc.REGENERATE} and commit it"
    )


def test_every_key_has_a_row_with_its_type_default_and_example() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    page = configdoc.generate(SCHEMA, ROOT / "config")
    keys = [key.name for key in configdoc.walk(schema)]
    assert len(keys) > 50
    for name in keys:
        assert f"`{name}`" in page, name
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines()}
    assert rows["datasets.<name>.grid"].endswith(
        "| integer (≥ 16, multiple of 2) | `128` | `32` (config/config.yaml) |"
    )
    assert "| required | `64` (config/config.yaml) |" in rows["datasets.<name>.val"]
    assert (
        "integer (≥ 1) or null | `null` | `200` (config/data_scaling.yaml)"
        in rows["training.downstream.patience"]
    )
    # a key no shipped config sets shows its default as the example
    assert rows["tracking.experiment"].endswith("| `pdetransfer` | `pdetransfer` (default) |")


def test_a_key_without_a_description_is_an_error_naming_it() -> None:
    schema = copy.deepcopy(yaml.safe_load(SCHEMA.read_text()))
    del schema["properties"]["sweep"]["properties"]["seeds"]["description"]
    with pytest.raises(UserError, match=r"'sweep\.seeds' has no description"):
        configdoc.render(schema, [])


def test_check_flag_fails_on_a_stale_page_and_passes_after_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "README.md"
    argv = ["config-doc", "--schema", str(SCHEMA), "--configs", str(ROOT / "config")]
    out.write_text("# stale\n")
    assert main([*argv, "--out", str(out), "--check"]) == 1
    assert "out of date; regenerate it with `pdetransfer config-doc`" in capsys.readouterr().err
    assert out.read_text() == "# stale\n"
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(out), "--check"]) == 0
    assert out.read_text() == PAGE.read_text()


def test_a_missing_schema_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-doc", "--schema", "nowhere.yaml", "--check"]) == 2
    assert "schema nowhere.yaml does not exist" in capsys.readouterr().err
