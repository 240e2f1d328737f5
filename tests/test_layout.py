"""The run layout and the mode table: every mode's run formats to a path that parses back to
the same run, anything else is rejected naming the layouts; the table is consistent with the
config schema and the workflow's rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pdetransfer import layout
from pdetransfer.errors import UserError
from pdetransfer.layout import Jobs, Run, parse_run
from pdetransfer.modes import MODES, TRAINABLE, comparisons, mode

ROOT = Path(__file__).resolve().parents[1]


def _run(name: str) -> Run:
    spec = MODES[name]
    fields = {"n": 16, "lr": "5e-05", "seed": 3} if spec.trains else {}
    pretrain = "poisson_1_5" if spec.needs_pretrained else None
    return Run(name, "xs", "helmholtz_1_10", pretrain=pretrain, **fields)


@pytest.mark.parametrize("name", list(MODES))
def test_every_modes_run_path_parses_back_to_the_run(name: str) -> None:
    run = _run(name)
    assert run.directory.startswith(f"runs/{name}/")
    assert parse_run(run.directory) == run
    assert re.fullmatch(layout.run_pattern(), run.directory.removeprefix("runs/"))


def test_run_paths_are_the_studys_layout() -> None:
    assert (
        _run("finetune").directory == "runs/finetune/poisson_1_5/xs/helmholtz_1_10/n16/lr5e-05/s3"
    )
    assert _run("scratch").directory == "runs/scratch/xs/helmholtz_1_10/n16/lr5e-05/s3"
    assert _run("zeroshot").directory == "runs/zeroshot/poisson_1_5/xs/helmholtz_1_10"
    assert _run("finetune").checkpoint == f"{_run('finetune').directory}/model.pt"
    assert _run("zeroshot").checkpoint == "pretrain/poisson_1_5/xs/model.pt"
    assert _run("scratch").test_file == "data/helmholtz_1_10/test.h5"


@pytest.mark.parametrize(
    "directory",
    [
        "runs/finetune/poisson_1_5/xs/helmholtz_1_10/n16/lr5e-05",  # no seed
        "runs/scratch/poisson_1_5/xs/helmholtz_1_10/n16/lr5e-05/s3",  # a pre-training
        "runs/zeroshot/poisson_1_5/xs/helmholtz_1_10/n16",  # zero-shot has no N
        "runs/adapter/poisson_1_5/xs/helmholtz_1_10/n16/lr5e-05/s3",  # no such mode
        "runs/finetune/poisson_1_5/xs/helmholtz_1_10/n0/lr5e-05/s3",  # N = 0
        "finetune/poisson_1_5/xs/helmholtz_1_10/n16/lr5e-05/s3",  # not below runs/
        "pretrain/poisson_1_5/xs",
    ],
)
def test_a_directory_that_is_not_a_run_is_rejected(directory: str) -> None:
    with pytest.raises(UserError, match="is not a run directory") as error:
        parse_run(directory)
    assert repr(directory) in str(error.value)
    assert "runs/finetune/{pretrain}/{size}/{downstream}/n{n}/lr{lr}/s{seed}" in str(error.value)
    if directory.startswith("runs/"):
        assert not re.fullmatch(layout.run_pattern(), directory.removeprefix("runs/"))


def test_jobs_cover_a_cell_when_packed_and_a_run_otherwise() -> None:
    members = layout.members(["0.001", "0.01"], [0, 1])
    assert members == ["lr0.001/s0", "lr0.001/s1", "lr0.01/s0", "lr0.01/s1"]
    packed, single = Jobs("results", True, members), Jobs("results", False, members)
    cell = "results/runs/scratch/{size}/{downstream}/n{n}"
    assert packed.files(MODES["scratch"], "model.pt") == [f"{cell}/{m}/model.pt" for m in members]
    assert single.files(MODES["scratch"], "model.pt") == [f"{cell}/lr{{lr}}/s{{seed}}/model.pt"]
    assert (packed.runs(MODES["scratch"]), single.runs(MODES["scratch"])) == (4, 1)
    zeroshot = "results/runs/zeroshot/{pretrain}/{size}/{downstream}"
    for jobs in (packed, single):  # one run per cell, packed or not
        assert jobs.files(MODES["zeroshot"], "metrics.json") == [f"{zeroshot}/metrics.json"]
        assert jobs.checkpoints(MODES["zeroshot"]) == [
            "results/pretrain/{pretrain}/{size}/model.pt"
        ]
        assert jobs.log(MODES["zeroshot"], "logs", "evaluate.log") == (
            "results/logs/runs/zeroshot/{pretrain}/{size}/{downstream}/evaluate.log"
        )
    assert packed.start(MODES["finetune"]) == (
        "--init",
        "results/pretrain/{pretrain}/{size}/model.pt",
    )
    assert packed.start(MODES["scratch"]) == ("--stats", "results/data/{downstream}/stats.json")


def test_the_mode_table_is_consistent() -> None:
    for spec in MODES.values():
        assert spec.trainable in TRAINABLE
        assert spec.shared == (not spec.needs_pretrained)
        assert spec.trains or spec.needs_pretrained  # random weights, untrained: no model
        assert bool(spec.activity) == spec.trains
    for spec, base in comparisons():
        assert spec.trains and base.trains and spec is not base
    assert [(m.name, b.name) for m, b in comparisons()] == [("finetune", "scratch")]
    with pytest.raises(UserError, match="unknown mode 'adapter'"):
        mode("adapter")


def test_the_schema_allows_exactly_the_modes_of_the_table() -> None:
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    modes = schema["properties"]["sweep"]["properties"]["modes"]
    assert modes["items"]["enum"] == list(MODES)
    assert modes["default"] == [m for m in MODES if MODES[m].trainable in ("all", "none")]
