"""Study enumeration, tables and plots on synthetic run directories (no training)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from study_helpers import ROOT, aggregate_argv, fake_results, load_config, write_study

from pdetransfer.cli import main
from pdetransfer.errors import UserError
from pdetransfer.study.aggregation import read_csv, summarize, write_csv
from pdetransfer.study.config import ConfigError, Study, format_lr
from pdetransfer.study.efficiency import data_efficiency
from pdetransfer.study.publishing import format_error, format_n, format_ratio, render_tables
from pdetransfer.study.statistics import n_to_reach


# ---------------------------------------------------------------------------- study
def test_study_enumerates_shared_scratch_runs_once() -> None:
    study = Study(load_config("test"))
    runs = study.runs()
    assert len(runs) == len(set(runs))
    scratch = [r for r in runs if r.mode == "scratch"]
    # shifts (sizes tiny, xs) x {poisson_5_10, helmholtz_1_10} and mixed (tiny) x poisson_5_10
    # share the scratch runs of (tiny, poisson_5_10): 2 sizes x 2 datasets x 2 N.
    assert len(scratch) == 2 * 2 * 2
    assert {r.directory for r in scratch} >= {"runs/scratch/tiny/poisson_5_10/n4/lr0.001/s0"}
    zeroshot = [r for r in runs if r.mode == "zeroshot"]
    assert {r.directory for r in zeroshot} == {
        "runs/zeroshot/poisson_1_5/tiny/poisson_5_10",
        "runs/zeroshot/poisson_1_5/tiny/helmholtz_1_10",
        "runs/zeroshot/poisson_1_5/xs/poisson_5_10",
        "runs/zeroshot/poisson_1_5/xs/helmholtz_1_10",
        "runs/zeroshot/mixed/tiny/poisson_5_10",
    }
    assert study.pretrain_jobs() == [
        ("poisson_1_5", "tiny"),
        ("poisson_1_5", "xs"),
        ("mixed", "tiny"),
    ]
    assert study.ood_experiments() == ["shifts"]
    assert study.mixed_experiments() == ["mixed"]
    assert study.compare_pretrain("mixed", "poisson_5_10") == ["poisson_1_5"]


def test_format_lr_round_trips() -> None:
    for lr in (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 0.01):
        assert float(format_lr(lr)) == lr
    assert format_lr(1e-3) == "0.001"


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda c: c["experiments"]["shifts"].update(downstream=["nope"]),
            "experiments.shifts.downstream",
        ),
        (lambda c: c["pretrain"].update(mixed=["poisson_1_5", "nope"]), "pretrain.mixed"),
        (lambda c: c["experiments"]["mixed"].update(pretrain="nope"), "experiments.mixed.pretrain"),
        (lambda c: c["experiments"]["mixed"].update(sizes=["huge"]), "experiments.mixed.sizes"),
        (lambda c: c["sweep"].update(n=[4, 64]), "sweep.n"),
        (lambda c: c["sweep"].update(lr=[]), "sweep.lr"),
        (lambda c: c["report"].update(size_n=[16]), "report.size_n"),
        (lambda c: c["datasets"]["poisson_1_5"].update(range=[5, 1]), "datasets.poisson_1_5.range"),
    ],
)
def test_study_rejects_inconsistent_config_naming_the_key(edit, key: str) -> None:
    config = load_config("test")
    edit(config)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Study(config)


def test_n_larger_than_train_set_is_allowed_without_downstream_training() -> None:
    config = load_config("test")
    config["sweep"].update(n=[4, 64], modes=["zeroshot"])
    assert {r.mode for r in Study(config).runs()} == {"zeroshot"}


# ---------------------------------------------------------------------------- tables
def test_n_to_reach_interpolates_in_log_log() -> None:
    ns = [8, 32, 128, 512]
    errors = [n**-0.5 for n in ns]  # a power law is a straight line in log-log
    n, bound = n_to_reach(ns, errors, target=64**-0.5)
    assert bound == "=" and n == pytest.approx(64)
    assert n_to_reach(ns, errors, target=1.0) == (8.0, "<=")
    assert n_to_reach(ns, errors, target=1e-3) == (512.0, ">")
    assert n_to_reach(ns, [math.nan] * 4, target=0.1) == (math.nan, "") or math.isnan(
        n_to_reach(ns, [math.nan] * 4, target=0.1)[0]
    )


def _runs_frame() -> pd.DataFrame:
    """Two lrs x two seeds per cell; lr 0.01 has the better *test* but worse validation."""
    rows = []
    for mode, scale in (("finetune", 0.1), ("scratch", 1.0)):
        for n in (8, 32, 128):
            for lr, val_shift, test_shift in ((0.001, 0.0, 0.0), (0.01, 0.5, -0.05)):
                for seed, noise in ((0, -0.01), (1, 0.01)):
                    err = scale * n**-0.5
                    rows.append(
                        {
                            "mode": mode,
                            "pretrain": "p" if mode == "finetune" else "",
                            "size": "xs",
                            "downstream": "d",
                            "n": n,
                            "lr": lr,
                            "seed": seed,
                            "parameters": 1000,
                            "val_rel_l2": err + val_shift,
                            "test_rel_l2_mean": err * (1 + test_shift) + noise * err,
                            "train_seconds": 1.0,
                        }
                    )
    rows.append(
        {
            "mode": "zeroshot",
            "pretrain": "p",
            "size": "xs",
            "downstream": "d",
            "n": 0,
            "lr": math.nan,
            "seed": 0,
            "parameters": 1000,
            "val_rel_l2": math.nan,
            "test_rel_l2_mean": 0.5,
            "train_seconds": 0.0,
        }
    )
    return pd.DataFrame(rows)


def test_summary_picks_learning_rate_by_validation_not_test() -> None:
    summary = summarize(_runs_frame())
    trained = summary[summary["mode"] != "zeroshot"]
    assert (trained["best_lr"] == 0.001).all()
    assert (trained["n_seeds"] == 2).all() and (trained["n_lrs"] == 2).all()
    row = trained[(trained["mode"] == "scratch") & (trained["n"] == 32)].iloc[0]
    expected = [32**-0.5 * (1 - 0.01), 32**-0.5 * (1 + 0.01)]
    assert row["test_rel_l2_mean"] == pytest.approx(np.mean(expected))
    assert row["test_rel_l2_std"] == pytest.approx(np.std(expected, ddof=1))
    zs = summary[summary["mode"] == "zeroshot"].iloc[0]
    assert zs["test_rel_l2_mean"] == 0.5 and math.isnan(zs["best_lr"])
    assert math.isnan(zs["test_rel_l2_std"])


def test_data_efficiency_ratio_and_bounds() -> None:
    summary = summarize(_runs_frame())
    eff = data_efficiency(summary, targets=[0.05, 0.02, 0.5])
    by_target = eff.set_index("target_rel_l2")
    # scratch error = n^-1/2 (means over symmetric noise), finetune = 0.1 n^-1/2:
    # 0.05 -> scratch needs N=400 (beyond 128: ">"), finetune N=4 (below 8: "<=").
    row = by_target.loc[0.05]
    assert (row["finetune_bound"], row["scratch_bound"], row["ratio_bound"]) == ("<=", ">", ">")
    assert row["ratio"] == pytest.approx(128 / 8)
    row = by_target.loc[0.02]  # finetune N=25 interpolated, scratch unreachable
    assert row["finetune_bound"] == "=" and row["n_finetune"] == pytest.approx(25, rel=0.02)
    assert row["ratio_bound"] == ">"
    row = by_target.loc[0.5]  # both already reached at N=8: ratio undetermined
    assert row["ratio_bound"] == "" and math.isnan(row["ratio"])


def test_csv_round_trip_keeps_empty_pretrain(tmp_path: Path) -> None:
    summary = summarize(_runs_frame())
    write_csv(summary, tmp_path / "s.csv")
    back = read_csv(tmp_path / "s.csv")
    assert set(back["pretrain"]) == {"p", ""}
    assert "pdetransfer_version" in back.columns
    with pytest.raises(UserError, match="does not exist"):
        read_csv(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------- fake results
def _aggregated(tmp_path: Path) -> tuple[Study, Path, Path, Path]:
    """Fake results aggregated into tables, one figure drawn: what publish reads."""
    config = load_config("test")
    study = Study(config)
    results = tmp_path / "results"
    fake_results(results, study)
    study_file = write_study(config, results / "study.json")
    tables = results / "tables"
    assert main(aggregate_argv(study_file, results, tables)) == 0
    plots = results / "plots"
    figure = plots / "mixed" / "mixed.png"
    argv = ["plot", "mixed", "--study", str(study_file), "--experiment", "mixed"]
    assert main([*argv, "--summary", str(tables / "summary.csv"), "--out", str(figure)]) == 0
    return study, study_file, tables, plots


def test_aggregate_and_every_plot_from_fake_results(tmp_path: Path) -> None:
    study, study_file, tables_dir, _ = _aggregated(tmp_path)
    config = study.config
    results = tmp_path / "results"
    tables = {k: tables_dir / f"{k}.csv" for k in ("runs", "summary")}
    tables["eff"] = tables_dir / "data_efficiency.csv"
    runs = read_csv(tables["runs"])
    assert len(runs) == len(study.runs())
    assert set(runs["mode"]) == {"finetune", "scratch", "zeroshot"}
    assert runs["test_rel_l2_mean"].notna().all()
    eff = read_csv(tables["eff"])
    assert len(eff) == 5 * len(config["report"]["targets"])  # 5 (pretrain, size, downstream)

    common = ["--study", str(study_file), "--summary", str(tables["summary"])]
    for kind, extra in (
        ("error-vs-n", ["--experiment", "shifts", "--downstream", "helmholtz_1_10"]),
        ("error-vs-size", ["--experiment", "shifts"]),
        ("ood", ["--experiment", "shifts"]),
        ("mixed", ["--experiment", "mixed"]),
        ("gallery", ["--downstream", "poisson_5_10"]),
    ):
        outs = [str(tmp_path / f"{kind}.png"), str(tmp_path / f"{kind}.svg")]
        assert main(["plot", kind, *common, *extra, "--results", str(results), "--out", *outs]) == 0
        for out in outs:
            assert Path(out).stat().st_size > 1000


def test_aggregate_names_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = load_config("test")
    study_file = tmp_path / "study.json"
    main(["study", "--config-json", json.dumps(config), "--out", str(study_file)])
    argv = ["aggregate", "--study", str(study_file), "--results", str(tmp_path / "none")]
    argv += ["--runs-csv", "a.csv", "--summary-csv", "b.csv", "--efficiency-csv", "c.csv"]
    argv += ["--fits-csv", "d.csv"]
    assert main(argv) == 2
    assert "metrics.json does not exist" in capsys.readouterr().err


def test_study_command_rejects_an_inconsistent_config(tmp_path: Path, capsys) -> None:
    config = copy.deepcopy(load_config("test"))
    config["sweep"]["n"] = [4, 1000]
    assert main(["study", "--config-json", json.dumps(config), "--out", str(tmp_path / "s")]) == 2
    assert "'sweep.n'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- publish
def test_publish_formats_bounds_and_missing_values() -> None:
    assert format_error(0.052345, 0.00312) == "0.0523 ± 0.0031"
    assert format_error(0.052345) == "0.0523"
    assert format_error(math.nan) == "n/a"
    assert format_n(8.0, "<=") == "≤8"
    assert format_n(1024.0, ">") == ">1024"
    assert format_n(37.4, "=") == "37"
    assert format_ratio(12.34, "=") == "12.3x"
    assert format_ratio(4.0, ">=") == "≥4.0x"
    assert format_ratio(math.nan, "") == "n/a"


def test_publish_copies_the_run_and_renders_its_tables(tmp_path: Path) -> None:
    study, study_file, tables, plots = _aggregated(tmp_path)
    bench = tmp_path / "results" / "benchmarks"
    for rel, seconds in (
        ("pretrain/mixed/tiny.tsv", 12.5),
        ("pretrain/mixed/stats.tsv", 0.5),
        ("data/poisson_1_5/train.tsv", 1.5),
    ):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(f"s\th:m:s\n{seconds}\t0:00:{seconds}\n")
    out = tmp_path / "docs" / "results"
    argv = ["publish", "--study", str(study_file), "--tables", str(tables), "--plots", str(plots)]
    assert main([*argv, "--benchmarks", str(bench), "--out", str(out)]) == 0

    for name in ("runs.csv", "summary.csv", "data_efficiency.csv"):
        assert (out / "tables" / name).read_bytes() == (tables / name).read_bytes()
    assert (out / "figures" / "mixed" / "mixed.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "study.json").read_text())["config"] == study.config
    text = (out / "tables.md").read_text()
    summary = read_csv(tables / "summary.csv")
    row = summary[
        (summary["mode"] == "finetune")
        & (summary["pretrain"] == "poisson_1_5")
        & (summary["size"] == "xs")
        & (summary["downstream"] == "poisson_5_10")
        & (summary["n"] == 8)
    ].iloc[0]
    expected = f"{format_error(row['test_rel_l2_mean'], row['test_rel_l2_std'])} (lr 0.001)"
    assert "### poisson_1_5 → poisson e∈(5, 10), size xs" in text
    assert expected in text
    assert "### mixed (tiny) on poisson e∈(5, 10)" in text
    assert "| from mixed | 0.8 |" in text  # zero-shot of the fake results is 0.8
    assert "| pre-training | 1 | 12 | 0.00 |" in text
    assert "| data generation and checks | 2 | 2 | 0.00 |" in text
    assert "| all jobs |  | 14 | 0.00 |" in text


def test_publish_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, study_file, tables, plots = _aggregated(tmp_path)
    (tables / "summary.csv").unlink()
    argv = ["publish", "--study", str(study_file), "--tables", str(tables), "--plots", str(plots)]
    assert main([*argv, "--benchmarks", "", "--out", str(tmp_path / "out")]) == 2
    assert "summary.csv does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_published_results_are_the_reproduce_study_and_its_tables() -> None:
    """docs/results holds what config/reproduce.yaml produced, and tables.md renders its CSVs."""
    published = ROOT / "docs" / "results"
    record = json.loads((published / "study.json").read_text())
    assert record["config"] == load_config("reproduce")
    study = Study(record["config"])
    summary = read_csv(published / "tables" / "summary.csv")
    efficiency = read_csv(published / "tables" / "data_efficiency.csv")
    rendered = render_tables(study, summary, efficiency, benchmarks=None)
    committed = (published / "tables.md").read_text(encoding="utf-8")
    assert committed.split("\n\n## Compute")[0] + "\n" == rendered
    runs = read_csv(published / "tables" / "runs.csv")
    assert len(runs) == len(study.runs())
    assert runs["test_rel_l2_mean"].notna().all()
