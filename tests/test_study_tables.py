"""The tables issue 21's studies need: several studies in one results root (their own paths and
the guard on what they share), the crossover of each fine-tuning mode with scratch, the gain
by model size and the compute per stage; on fabricated summaries and fake results."""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from study_helpers import aggregate_argv, fake_results, parameters, rich_config, write_study

from pdetransfer import layout
from pdetransfer.cli import main
from pdetransfer.study.aggregation import read_csv
from pdetransfer.study.compute import stage, study_benchmarks
from pdetransfer.study.config import ConfigError, Study
from pdetransfer.study.modes_table import crossover, crossover_table, mode_tables
from pdetransfer.study.statistics import Bootstrap, RunErrors
from pdetransfer.study.validation import check_shared, sharing_conflict


# ---------------------------------------------------------------------------- study paths
def test_a_named_study_keeps_its_own_outputs_apart_and_an_unnamed_one_where_they_were(
    tmp_path: Path,
) -> None:
    assert layout.study_path(None, "tables/runs.csv") == "tables/runs.csv"
    assert layout.study_path("sizes", "tables/runs.csv") == "studies/sizes/tables/runs.csv"
    (tmp_path / "studies" / "a").mkdir(parents=True)
    (tmp_path / "studies" / "a" / "study.json").write_text("{}")
    (tmp_path / "study.json").write_text("{}")
    assert layout.study_files(tmp_path) == {
        None: tmp_path / "study.json",
        "a": tmp_path / "studies" / "a" / "study.json",
    }


def _record(config: dict) -> dict:
    return Study(config).record()


def test_sharing_guard_names_the_key_where_the_studies_share_files(tmp_path: Path) -> None:
    base = rich_config()
    same = {**copy.deepcopy(base), "study": "b"}
    same["report"]["targets"] = [0.3]  # the study's own tables only
    assert sharing_conflict(_record(same), _record(base)) is None

    other_data = copy.deepcopy(same)
    other_data["datasets"]["poisson_5_10"]["train"] = 48
    assert sharing_conflict(_record(other_data), _record(base)) == "datasets.poisson_5_10"

    recipe = copy.deepcopy(same)
    recipe["training"]["downstream"]["epochs"] = 3
    assert sharing_conflict(_record(recipe), _record(base)) == "training.downstream"
    apart = copy.deepcopy(recipe)  # the same recipe change on runs the first study lacks
    apart["sizes"] = {"big": "2,8"}
    for exp in apart["experiments"].values():
        exp.pop("sizes", None)
    assert sharing_conflict(_record(apart), _record(base)) is None

    # A shared cell's refinement decisions depend on its grid: refining studies agree on it.
    refine = {"enabled": True, "rounds": 2, "lr_bounds": [1e-6, 1.0]}
    refined = copy.deepcopy(same)
    refined["sweep"]["refine"] = refine
    assert sharing_conflict(_record(refined), _record(base)) == "sweep.refine"
    both = {**copy.deepcopy(base), "sweep": {**base["sweep"], "refine": refine}}
    assert sharing_conflict(_record(refined), _record(both)) is None
    refined["sweep"]["lr"] = [*base["sweep"]["lr"], 0.5]
    assert sharing_conflict(_record(refined), _record(both)) == "sweep.lr"

    first = tmp_path / "studies" / "a" / "study.json"
    write_study({**base, "study": "a"}, first)
    with pytest.raises(ConfigError) as err:
        check_shared(_record(recipe), "b", layout.study_files(tmp_path))
    message = str(err.value)
    assert "'training.downstream'" in message and "study 'b'" in message
    assert "study 'a'" in message and "\n" not in message
    check_shared(_record(recipe), "a", layout.study_files(tmp_path))  # its own file: no peer


# ---------------------------------------------------------------------------- crossover
def test_crossover_lies_between_the_last_decisive_win_and_the_next_n() -> None:
    assert crossover([8, 16, 32], [True, True, False]) == (32.0, "=", 16.0, 32.0)
    assert crossover([8, 16, 32], [False, False, False]) == (8.0, "<=", 0.0, 8.0)
    # A mode that wins at N = 16 has not been caught up with at N = 8, where all may be poor.
    assert crossover([8, 16, 32, 64], [False, True, False, False]) == (32.0, "=", 16.0, 32.0)
    for decisive in ([True, True, True], [False, False, True]):
        n, bound, lo, hi = crossover([8, 16, 32], decisive)
        assert math.isnan(n) and bound == ">" and (lo, hi) == (32.0, math.inf)


NS = [8, 16, 32, 64]
CURVES = {  # mode -> (pretrain, trainable parameters, error per N)
    "finetune": ("p", 1000, [0.1, 0.1, 0.1, 0.1]),
    "scratch": ("", 1000, [0.4, 0.11, 0.09, 0.05]),
    "head": ("p", 30, [0.01, 0.01, 0.01, 0.01]),
    "lora": ("p", 80, [0.5, 0.5, 0.5, 0.5]),
}


def _fabricated(curves: dict = CURVES) -> tuple[pd.DataFrame, dict]:
    """A summary and its chosen runs (one seed, 20 test samples with 30% noise each)."""
    rng = np.random.default_rng(1)
    rows, chosen = [], {}
    for mode, (pretrain, trainable, errors) in curves.items():
        for n, err in zip(NS, errors, strict=True):
            rows.append(
                {"mode": mode, "pretrain": pretrain, "size": "s", "downstream": "d", "n": n,
                 "status": "ok", "test_rel_l2_mean": err, "trainable_parameters": trainable}
            )  # fmt: skip
            samples = 1 + 0.3 * rng.standard_normal(20)
            samples = err * samples / samples.mean()
            chosen[(mode, pretrain, "s", "d", n)] = [RunErrors(err, samples)]
    return pd.DataFrame(rows), chosen


def test_crossover_with_scratch_reads_the_ratio_interval() -> None:
    summary, chosen = _fabricated()
    table = crossover_table(summary, chosen, Bootstrap(400, 0)).set_index("mode")
    assert sorted(table.index) == ["finetune", "head", "lora"]
    assert set(table["baseline"]) == {"scratch"}
    assert table["trainable_parameters"].to_dict() == {"finetune": 1000, "head": 30, "lora": 80}
    ft = table.loc["finetune"]
    # Scratch is 1.1x fine-tuning's error at N = 16, but within the noise: crossed there.
    assert (ft["n_crossover"], ft["crossover_bound"]) == (16, "=")
    assert (ft["n_crossover_sweep_lo"], ft["n_crossover_sweep_hi"]) == (8, 16)
    assert ft["ratio"] == pytest.approx(1.1) and ft["ratio_lo"] <= 1 <= ft["ratio_hi"]
    head = table.loc["head"]
    assert head["crossover_bound"] == ">" and math.isnan(head["n_crossover"])
    assert "none within the sweep" in head["note"]
    lora = table.loc["lora"]
    assert (lora["n_crossover"], lora["crossover_bound"], lora["n_crossover_sweep_lo"]) == (
        8, "<=", 0,
    )  # fmt: skip
    # Without intervals the point ratio decides: scratch is above fine-tuning up to N = 16.
    points = crossover_table(summary, {}, None).set_index("mode")
    assert points.loc["finetune", "n_crossover"] == 32
    assert points.loc["finetune", "interval_method"] == "none"


def test_a_win_after_a_level_n_moves_the_crossover_and_is_noted() -> None:
    """lora is as poor as scratch at N = 8 and beats it 2x at N = 16: no crossover before 32."""
    curves = {**CURVES, "lora": ("p", 80, [0.4, 0.05, 0.5, 0.5])}
    summary, chosen = _fabricated(curves)
    lora = crossover_table(summary, chosen, Bootstrap(400, 0)).set_index("mode").loc["lora"]
    assert (lora["n_crossover"], lora["crossover_bound"], lora["n_crossover_sweep_lo"]) == (
        32, "=", 16,
    )  # fmt: skip
    assert lora["note"] == "scratch is also level at N = 8, below a later win"


def test_crossover_and_comparison_print_one_interval_for_one_ratio() -> None:
    """Scratch / fine-tune at the crossover N is a row of both tables; each table draws its
    own replicates, but one comparison's are seeded by its key, whatever else a table drew
    before it (mode_comparison.csv draws head, lora and zero-shot's too)."""
    one, single = _fabricated()
    summary = pd.concat([one.assign(downstream="first"), one], ignore_index=True)
    chosen = {}
    for (m, p, s, _, n), (run,) in single.items():  # two seeds: the seed shifts draw too
        second = RunErrors(run.mean * 1.2, run.per_sample * 1.2)
        chosen |= {(m, p, s, d, n): [run, second] for d in ("first", "d")}
    table = crossover_table(summary, chosen, Bootstrap(400, 0))
    ft = table[(table["mode"] == "finetune") & (table["downstream"] == "d")].iloc[0]
    comparison, _ = mode_tables(summary, chosen, Bootstrap(400, 0))
    row = comparison[
        (comparison["mode"] == "scratch")
        & (comparison["downstream"] == "d")
        & (comparison["n"] == ft["n_crossover"])
    ]
    assert (row["ratio_lo"].item(), row["ratio_hi"].item()) == (ft["ratio_lo"], ft["ratio_hi"])
    other = crossover_table(summary, chosen, Bootstrap(400, 1))
    assert other["ratio_lo"].iloc[0] != table["ratio_lo"].iloc[0]  # the seed still decides


# ---------------------------------------------------------------------------- compute
def _benchmark(folder: Path, relative: str, seconds: float, end: float) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t1.0\n")
    os.utime(path, (end, end))


def test_stages_of_benchmark_files() -> None:
    assert stage("data/poisson_1_5/train.tsv") == "data"
    assert stage("pretrain/mixed/stats.tsv") == "data"
    assert stage("pretrain/mixed/xs.tsv") == "pretrain"
    assert stage("runs/scratch/xs/poisson_5_10/n8/lr0.001/s0/train.tsv") == "scratch"
    assert stage("runs/finetune/p/xs/poisson_5_10/n8/train.tsv") == "finetune"
    assert stage("runs/zeroshot/p/xs/poisson_5_10/evaluate.tsv") == "evaluate"
    assert stage("aggregate.tsv") == "aggregate"


def test_aggregate_writes_crossover_size_gain_and_compute_that_publish_renders(
    tmp_path: Path,
) -> None:
    config = rich_config()
    study = Study(config)
    results = tmp_path / "results"
    fake_results(results, study)
    study_file = write_study(config, results / "study.json")
    bench = results / "benchmarks"
    t0 = time.time() - 1000
    run = next(r for r in study.runs() if r.mode == "scratch")
    _benchmark(bench, "data/poisson_5_10/train.tsv", 2.0, t0 + 2)
    _benchmark(bench, "pretrain/poisson_1_5/xs.tsv", 100.0, t0 + 102)
    _benchmark(bench, f"{run.directory}/train.tsv", 30.0, t0 + 150)
    _benchmark(bench, f"{run.directory}/evaluate.tsv", 5.0, t0 + 160)
    _benchmark(bench, "data/elsewhere/train.tsv", 999.0, t0 + 500)  # another study's dataset
    cell = run.directory.rsplit("/", 2)[0]  # a run refinement added to the cell
    _benchmark(bench, f"{cell}/lr0.05/cap2000/train.tsv", 40.0, t0 + 300)
    _benchmark(bench, f"{cell}0/lr0.05/cap2000/train.tsv", 999.0, t0 + 500)  # another N's cell
    assert [p.name for p in study_benchmarks(study, bench)].count("train.tsv") == 3

    tables = results / "tables"
    extra = ["--modes-csv", str(tables / "mode_comparison.csv")]
    for flag, name in (("--crossover-csv", "mode_crossover"), ("--size-csv", "size_gain"),
                       ("--compute-csv", "compute")):  # fmt: skip
        extra += [flag, str(tables / f"{name}.csv")]
    assert main(aggregate_argv(study_file, results, tables, *extra)) == 0

    compute = read_csv(tables / "compute.csv").set_index("stage")
    assert list(compute.index) == ["data", "pretrain", "scratch", "evaluate", "all"]
    assert compute.loc["all", "jobs"] == 5 and compute.loc["all", "job_seconds"] == 177
    assert compute.loc["all", "span_seconds"] == pytest.approx(300, abs=1)
    assert compute.loc["scratch", "span_seconds"] == pytest.approx(180, abs=1)

    gains = read_csv(tables / "size_gain.csv")
    sizes = study.experiment_sizes("shifts")
    assert len(sizes) == 3 and set(gains["experiment"]) == {"shifts"}
    assert len(gains) == len(sizes) * len(study.n_values) * 2  # two downstream sets
    assert gains["gain"].to_numpy() == pytest.approx(5.0)  # scratch 0.5 / fine-tune 0.1
    assert (gains["gain_lo"] <= gains["gain"]).all() and (gains["gain"] <= gains["gain_hi"]).all()
    assert set(zip(gains["size"], gains["parameters"], strict=True)) == {
        (size, parameters(size)) for size in sizes
    }
    fits = read_csv(tables / "scaling_fits.csv")
    assert (fits["against"] == "parameters").sum() == 2 * len(study.n_values) * 2  # 2 modes

    crossovers = read_csv(tables / "mode_crossover.csv")
    assert set(crossovers["mode"]) == {"finetune"} and set(crossovers["crossover_bound"]) == {">"}

    out = tmp_path / "published"
    argv = ["publish", "--results", str(results), "--out", str(out)]
    (results / "plots").mkdir()
    (results / "plots" / "x.png").write_bytes(b"\x89PNG")
    assert main(argv) == 0
    text = (out / "tables.md").read_text()
    assert "## Gain by model size" in text and "| N=4 | 5.00x [" in text
    assert "## Crossover with scratch" in text and "none within the sweep" in text
    assert "| pre-training | 1 | 100 | 0.03 | 1 min 40 s |" in text
    assert "| all jobs | 5 | 177 | 0.05 | 5 min 00 s |" in text
    for name in ("compute.csv", "size_gain.csv", "mode_crossover.csv"):
        assert (out / "tables" / name).is_file()
