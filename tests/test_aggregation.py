"""Study enumeration, tables and plots on synthetic run directories (no training)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from snakemake.utils import validate
from study_helpers import (
    ROOT,
    SCHEMA,
    aggregate_argv,
    fake_results,
    fake_test_files,
    load_config,
    rich_config,
    write_study,
)

from pdetransfer.cli import main
from pdetransfer.errors import UserError
from pdetransfer.layout import format_lr
from pdetransfer.study.aggregation import read_csv, summarize, warnings, write_csv
from pdetransfer.study.config import ConfigError, Study
from pdetransfer.study.efficiency import data_efficiency
from pdetransfer.study.markdown import (
    format_error,
    format_interval,
    format_n,
    format_ratio,
    format_sweep,
)
from pdetransfer.study.publishing import render_tables
from pdetransfer.study.sections import efficiency_section
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
#: aggregate's optional outputs (flag stem: table name).
LATER_TABLES = {
    "modes": "mode_comparison",
    "thresholds": "mode_threshold",
    "bins": "error_bins",
    "forgetting": "forgetting",
}


def _aggregated(tmp_path: Path) -> tuple[Study, Path, Path, Path]:
    """Fake results aggregated into tables, one figure drawn: what publish reads."""
    config = load_config("test")
    study = Study(config)
    results = tmp_path / "results"
    fake_results(results, study)
    fake_test_files(results, study)
    study_file = write_study(config, results / "study.json")
    tables = results / "tables"
    extra = [f"--{name}-csv={tables / f'{table}.csv'}" for name, table in LATER_TABLES.items()]
    assert main(aggregate_argv(study_file, results, tables, *extra)) == 0
    plots = results / "plots"
    figure = plots / "mixed" / "mixed.png"
    argv = ["plot", "mixed", "--study", str(study_file), "--experiment", "mixed"]
    assert main([*argv, "--summary", str(tables / "summary.csv"), "--out", str(figure)]) == 0
    return study, study_file, tables, plots


def test_mixed_comparison_reads_the_mixture_over_the_single_system_pretraining(
    tmp_path: Path,
) -> None:
    """The test config's mixed pre-training fine-tuned on Poisson (5,10) beside the Poisson
    one: made 1.2x worse when it trains, the same zero-shot model otherwise."""
    config = load_config("test")
    study = Study(config)
    results = tmp_path / "results"
    worse = {"mixed": 1.2}
    fake_results(results, study, noise=0.1, lr_factor=lambda run: worse.get(run.pretrain, 1.0))
    fake_test_files(results, study)
    study_file = write_study(config, results / "study.json")
    tables = results / "tables"
    mixed_csv = f"--mixed-csv={tables / 'mixed_comparison.csv'}"
    assert main(aggregate_argv(study_file, results, tables, mixed_csv)) == 0
    table = read_csv(tables / "mixed_comparison.csv").set_index(["mode", "n"])
    assert list(table.index) == [("finetune", 4), ("finetune", 8), ("zeroshot", 0)]
    assert set(table["single_pretrain"]) == {"poisson_1_5"}
    assert set(table["pretrain"]) == {"mixed"} and set(table["downstream"]) == {"poisson_5_10"}
    trained = table.loc["finetune"]
    # The noise is drawn per run, so the point ratio is near 1.2, and its interval covers it.
    assert np.allclose(trained["ratio"], 1.2, atol=0.05)
    assert ((trained["ratio_lo"] > 1) & (trained["ratio_lo"] < 1.2)).all()
    assert (trained["ratio_hi"] > 1.2).all()
    zero = table.loc[("zeroshot", 0)]
    assert zero["ratio_lo"] < 1 < zero["ratio_hi"]  # the same model, other noise: no evidence
    assert (table["interval_method"] == "sample_bootstrap").all()  # one seed per cell
    out, plots = tmp_path / "published", tmp_path / "plots"
    plots.mkdir()
    (plots / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # publish copies, never reads
    argv = ["publish", "--study", str(study_file), "--tables", str(tables), "--plots", str(plots)]
    assert main([*argv, "--benchmarks", "", "--out", str(out)]) == 0
    assert (out / "tables" / "mixed_comparison.csv").is_file()
    markdown = (out / "tables.md").read_text()
    assert "## Mixed physics against single-system pre-training" in markdown
    assert f"{trained['ratio'].iloc[0]:.3g} [" in markdown


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
    # Noise-free fake runs: every sample of a run has its mean error, so median = mean.
    summary = read_csv(tables["summary"])
    assert np.allclose(summary["test_rel_l2_median"], summary["test_rel_l2_mean"])
    assert (summary["median_interval_method"] == "sample_bootstrap").all()
    assert {"n_finetune_median", "ratio_median", "ratio_median_lo"} <= set(eff.columns)
    modes = read_csv(tables_dir / "mode_comparison.csv")
    assert np.allclose(modes["ratio_median"], modes["ratio"])
    # The test config's 8 test samples spread evenly over each range: 2 per bin of 4.
    bins = read_csv(tables_dir / "error_bins.csv")
    assert len(bins) == 4 * len(summary) and (bins["samples"] == 2).all()
    assert set(bins["param_name"]) == {"e", "omega"}
    assert np.allclose(bins["test_rel_l2_median"], bins["test_rel_l2_mean"])
    # Fine-tuning (0.1 N^-0.3) beats zero-shot (0.8) on every sample.
    forgetting = read_csv(tables_dir / "forgetting.csv")
    assert len(forgetting) == (summary["mode"] == "finetune").sum()
    assert (forgetting["fraction_worse"] == 0).all()
    assert np.allclose(forgetting["median_ratio"], 0.125 * forgetting["n"] ** -0.3)

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
    assert format_interval(30.2, 45.7) == " [30, 46]"
    assert format_interval(0.0, math.inf) == " [0, ∞]"
    assert format_interval(0.0, 0.0) == format_interval(math.nan, math.nan) == ""
    assert format_sweep(16.0, 32.0) == " (16, 32]" and format_sweep(0.0, 8.0) == " (0, 8]"
    assert format_sweep(1.0, math.inf, ".1f") == " (1.0, ∞]" and format_sweep(math.nan, 1) == ""


def test_tables_md_lists_headlines_first_and_says_why_the_others_are_not() -> None:
    study = Study(load_config("test"))
    base = {"pretrain": "poisson_1_5", "size": "xs", "downstream": "poisson_5_10"}
    numbers = {"n_finetune": 24.0, "n_scratch": 48.0, "ratio": 2.0, "interval_method": "m"}
    numbers |= {"finetune_bound": "=", "scratch_bound": "=", "ratio_bound": "="}
    for name, lo, hi in (("n_finetune", 16, 32), ("n_scratch", 32, 64), ("ratio", 1, 4)):
        numbers |= {f"{name}_lo": lo + 1, f"{name}_hi": hi - 1}
        numbers |= {f"{name}_sweep_lo": lo, f"{name}_sweep_hi": hi}
    rows = [
        {**base, **numbers, "target_rel_l2": 0.2, "headline": False}
        | {"flags": "undertrained:scratch", "not_headline_because": "undertrained:scratch"},
        {**base, **numbers, "target_rel_l2": 0.1, "headline": True}
        | {"flags": "lr_edge_tie:finetune", "not_headline_because": ""},
    ]
    text = efficiency_section(study, pd.DataFrame(rows))
    first, second = (line for line in text.splitlines() if line.startswith("| poisson_1_5"))
    assert (
        "| 0.1 | 24 [17, 31] (16, 32] | 48 [33, 63] (32, 64] | 2.0x [2.0, 3.0] (1.0, 4.0]" in first
    )
    assert first.endswith("| m | lr_edge_tie:finetune | headline |")
    assert second.endswith("| undertrained:scratch | no: undertrained:scratch |")


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
    median = f"; median {row['test_rel_l2_median']:.3g}"
    median += f" [{row['test_rel_l2_median_lo']:.3g}, {row['test_rel_l2_median_hi']:.3g}]"
    expected = format_error(row["test_rel_l2_mean"], row["test_rel_l2_std"]) + median
    expected += " (lr 0.001)"
    assert "### poisson_1_5 → poisson e∈(5, 10), size xs" in text
    assert f"{expected} [one lr] |" in text  # the test config sweeps a single lr
    # 8 scratch cells (2 sizes x 2 downstream x 2 N), one run each (one seed, one lr), none
    # at the cap.
    row = "| scratch | 0 of 8 (0%) | 0 of 8 (0%) | 0 of 8 (0%) | 0 of 8 (0%) | 8 | 8 | 0 | 0 |"
    assert row in text
    flags = "unbracketed:finetune, one_seed:finetune, unbracketed:scratch, one_seed:scratch"
    assert f"| sample_bootstrap | {flags} | no: {flags.replace(', ', '; ')}" in text
    assert "## Scaling fits" in text and "too few points (2)" in text
    assert "### mixed (tiny) on poisson e∈(5, 10)" in text
    assert "| from mixed | 0.8 |" in text  # zero-shot of the fake results is 0.8
    assert "| pre-training | 1 | 12 | 0.00 |" in text
    assert "| data generation and checks | 2 | 2 | 0.00 |" in text
    assert "| all jobs | 3 | 14 | 0.00 |" in text
    for name in LATER_TABLES.values():
        assert (out / "tables" / f"{name}.csv").read_bytes() == (
            tables / f"{name}.csv"
        ).read_bytes()
    assert "## Forgetting" in text and "| poisson_1_5 → poisson e∈(5, 10) | xs | 8 | " in text
    assert "## Error per bin of the physical parameter" in text
    assert "| mode | N | e ∈ [5, 6.25] (2) | e ∈ [6.25, 7.5] (2) |" in text


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
    # Keys added to the schema since (with their defaults) do not make it another study.
    validate(record["config"], str(SCHEMA))
    reproduce = load_config("reproduce")
    reproduce["sweep"]["refine"]["enabled"] = False  # turned on since (issue 17), not yet rerun
    assert record["config"] == reproduce
    study = Study(record["config"])
    summary = read_csv(published / "tables" / "summary.csv")
    efficiency = read_csv(published / "tables" / "data_efficiency.csv")
    fits = read_csv(published / "tables" / "scaling_fits.csv")
    rendered = render_tables(study, summary, efficiency, None, fits=fits)
    committed = (published / "tables.md").read_text(encoding="utf-8")
    assert committed.split("\n\n## Compute")[0] + "\n" == rendered
    runs = read_csv(published / "tables" / "runs.csv")
    assert len(runs) == len(study.runs())
    assert runs["test_rel_l2_mean"].notna().all()


# ---------------------------------------------------------------------------- diagnostics
def _run(n: int, lr: float, seed: int, val: float, **extra) -> dict:
    """One scratch run of runs.csv (cell by N), completed unless ``status`` says otherwise."""
    row = {"mode": "scratch", "pretrain": "", "size": "xs", "downstream": "d", "n": n}
    row.update(lr=lr, seed=seed, parameters=1000, val_rel_l2=val, test_rel_l2_mean=val)
    row.update(train_seconds=1.0, status="completed", hit_cap=False, undertrained=False)
    return {**row, **extra}


def test_summary_diagnoses_edge_lr_undertrained_and_diverged_cells() -> None:
    lrs = (0.001, 0.003, 0.01)
    rows = []
    # N=8: the largest lr is best, one of its seeds hit the cap still gaining, the other
    # hit it with no gain to speak of.
    for lr, val in zip(lrs, (0.5, 0.4, 0.3), strict=True):
        rows += [
            _run(8, lr, s, val, hit_cap=lr == 0.01, undertrained=(lr == 0.01 and s == 1))
            for s in (0, 1)
        ]
    # N=16: the largest lr has the smallest validation error but one seed diverged (with a
    # tiny validation error before it did): it must not be chosen; 0.003 is, bracketed.
    for lr, val in zip(lrs, (0.5, 0.3, 0.1), strict=True):
        rows += [_run(16, lr, 0, val), _run(16, lr, 1, val / 100 if lr == 0.01 else val)]
    rows[-1].update(status="diverged", test_rel_l2_mean=math.nan)
    # N=32: every run diverged.
    rows += [_run(32, lr, s, 0.01, status="diverged") for lr in lrs for s in (0, 1)]
    # N=64: the smallest lr is best; N=128: a single lr.
    rows += [_run(64, lr, 0, val) for lr, val in zip(lrs, (0.1, 0.2, 0.3), strict=True)]
    rows += [_run(128, 0.003, 0, 0.1)]
    runs = pd.DataFrame(rows)
    summary = summarize(runs).set_index("n")

    assert summary.loc[8, "best_lr"] == 0.01 and summary.loc[8, "lr_at_edge"] == "max"
    assert summary.loc[8, "undertrained"] and summary.loc[8, "n_undertrained"] == 1
    assert summary.loc[8, "n_hit_cap"] == 2
    assert summary.loc[16, "best_lr"] == 0.003 and summary.loc[16, "lr_at_edge"] == "no"
    assert summary.loc[16, "n_diverged"] == 1 and not summary.loc[16, "undertrained"]
    assert summary.loc[32, "status"] == "diverged" and summary.loc[32, "n_diverged"] == 6
    assert math.isnan(summary.loc[32, "best_lr"]) and math.isnan(
        summary.loc[32, "test_rel_l2_mean"]
    )
    assert summary.loc[64, "lr_at_edge"] == "min"
    assert summary.loc[128, "lr_at_edge"] == "unbracketed"
    assert (summary.drop(index=32)["status"] == "ok").all()

    lines = warnings(runs, summary.reset_index())
    assert "7 of 22 trained runs diverged" in lines[0]
    assert "1 of 5 trained cells diverged at every learning rate (scratch/xs/d/n32)" in lines[1]
    assert (
        "2 of 5 trained cells chose a learning rate at the grid's edge (1 largest, 1 smallest"
        in lines[2]
    )
    assert "1 of 5 trained cells have a single learning rate" in lines[3]
    assert lines[4].startswith("1 of 5 trained cells undertrained (scratch/xs/d/n8;")


def test_learning_rate_partly_diverged_is_chosen_only_when_every_rate_is() -> None:
    rows = [_run(8, 0.001, 0, 0.2), _run(8, 0.001, 1, 0.3, status="diverged")]
    rows += [_run(8, 0.01, 0, 0.1), _run(8, 0.01, 1, 0.4, status="diverged")]
    row = summarize(pd.DataFrame(rows)).iloc[0]
    assert row["best_lr"] == 0.01 and row["n_seeds"] == 1 and row["n_diverged"] == 2


def test_data_efficiency_flags_what_it_was_read_from(tmp_path: Path) -> None:
    """Flags name the mode and the problem of the cells an N was read from, never others."""
    summary = summarize(_runs_frame())
    assert (summary.loc[summary["mode"] != "zeroshot", "lr_at_edge"] == "min").all()
    summary["lr_at_edge"] = "no"
    summary.loc[(summary["mode"] == "scratch") & (summary["n"] == 8), "lr_at_edge"] = "max"
    summary.loc[(summary["mode"] == "finetune") & (summary["n"] == 128), "undertrained"] = True
    eff = data_efficiency(summary, targets=[0.05, 0.02]).set_index("target_rel_l2")
    # 0.05: fine-tune read at N=8 only (<=), scratch never reached (all points).
    assert eff.loc[0.05, "flags"] == "lr_at_edge:scratch"
    # 0.02: fine-tune crosses between 8 and 32 (4x apart: coarse), scratch all points.
    assert eff.loc[0.02, "flags"] == "coarse:finetune;lr_at_edge:scratch"
    assert eff["interval_method"].eq("none").all() and eff["ratio_lo"].isna().all()


# ---------------------------------------------------------------------------- partial results
def test_partial_aggregate_lists_what_is_missing_and_strict_still_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = rich_config()
    study = Study(config)
    results = tmp_path / "results"
    unfinished = {"scratch": 16, "finetune": 32}  # the N not finished per mode (tiny size)

    def skip(run) -> bool:
        return run.size == "tiny" and unfinished.get(run.mode) == run.n and run.seed == 1

    fake_results(results, study, noise=0.2, skip=skip)
    # A run that trained but is not evaluated yet is missing too.
    evaluating = next(r for r in study.runs() if r.mode == "scratch" and r.size == "xs")
    (results / evaluating.directory / "metrics.json").unlink()
    study_file = write_study(config, tmp_path / "study.json")
    partial = tmp_path / "partial"
    argv = aggregate_argv(study_file, results, partial, "--partial")
    assert main([*argv, "--missing-csv", str(partial / "missing.csv")]) == 0
    out = capsys.readouterr().out
    missing = read_csv(partial / "missing.csv")
    # 3 lrs x (scratch tiny: 2 downstream; fine-tune tiny: 2 from poisson_1_5, 1 from mixed)
    expected_runs = 3 * 2 + 3 * 3 + 1
    assert missing["n_missing"].sum() == expected_runs
    assert len(missing) == 2 + 3 + 1
    row = missing[(missing["mode"] == "finetune") & (missing["pretrain"] == "mixed")].iloc[0]
    assert row["n"] == 32 and row["missing"] == "lr0.001/s1 lr0.003/s1 lr0.01/s1"
    assert f"{len(study.runs()) - expected_runs} of {len(study.runs())} runs finished" in out
    assert "missing finetune/mixed/tiny/poisson_5_10/n32: lr0.001/s1 lr0.003/s1 lr0.01/s1" in out

    summary = read_csv(partial / "summary.csv")
    cell = summary[
        (summary["mode"] == "scratch") & (summary["size"] == "tiny") & (summary["n"] == 16)
    ]
    assert (cell["n_seeds"] == 1).all() and cell["test_rel_l2_mean"].notna().all()
    for name in ("runs", "data_efficiency", "scaling_fits"):
        assert (partial / f"{name}.csv").stat().st_size > 0

    argv = aggregate_argv(study_file, results, tmp_path / "strict")
    assert main(argv) == 2
    assert "does not exist: run the workflow before aggregating" in capsys.readouterr().err
    assert main([*argv, "--partial"]) == 2  # a partial table must say what it lacks
    assert "--missing-csv" in capsys.readouterr().err


def test_aggregate_reports_diverged_runs_and_bootstraps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = rich_config()
    study = Study(config)
    results = tmp_path / "results"

    def diverged(run) -> bool:  # the largest lr of scratch tiny diverges; one cell entirely
        dead_cell = run.mode == "finetune" and run.size == "xs" and run.n == 16
        return (run.mode == "scratch" and run.lr == "0.01") or (
            dead_cell and run.downstream == "helmholtz_1_10"
        )

    fake_results(
        results,
        study,
        noise=0.3,
        diverged=diverged,
        undertrained=lambda run: run.mode == "scratch" and run.n == 4 and run.seed == 0,
    )
    study_file = write_study(config, tmp_path / "study.json")
    tables = tmp_path / "tables"
    assert main(aggregate_argv(study_file, results, tables)) == 0
    out = capsys.readouterr().out
    assert "aggregate: 1 of 52 trained cells diverged at every learning rate" in out
    assert "aggregate: 6 of 52 trained cells undertrained" in out
    runs = read_csv(tables / "runs.csv")
    dead = runs[runs["status"] == "diverged"]
    assert len(dead) == 3 * 4 * 2 * 2 + 3 * 2 and dead["test_rel_l2_mean"].isna().all()
    assert set(runs["stop_reason"]) == {"", "plateau", "cap", "diverged"}
    summary = read_csv(tables / "summary.csv")
    scratch = summary[summary["mode"] == "scratch"]
    # Every rate has the same validation error: the smallest is chosen and ties with its
    # neighbour, which is reported but blocks no headline.
    assert (scratch["best_lr"] < 0.01).all() and (scratch["lr_at_edge"] == "tie_min").all()
    ok = summary[summary["status"] == "ok"]
    assert (ok["test_rel_l2_lo"] <= ok["test_rel_l2_mean"]).all()
    assert (ok["test_rel_l2_mean"] <= ok["test_rel_l2_hi"]).all()
    eff = read_csv(tables / "data_efficiency.csv")
    assert set(eff["interval_method"]) == {"pooled_seed_t+sample_bootstrap"}
    assert (eff["seed_df"] > 0).all()
    assert eff["flags"].str.contains("lr_edge_tie:scratch").all()
    assert not eff["flags"].str.contains("lr_at_edge:").any()
    fits = read_csv(tables / "scaling_fits.csv")
    by_n = fits[fits["against"] == "n"]
    assert len(by_n) == 2 * 2 * 3 + 2  # shifts: 2 downstream x 2 modes x 3 sizes; mixed: 2
    assert len(fits[fits["against"] == "parameters"]) == 2 * 2 * 4  # shifts: 4 N
    assert (by_n["form"] == "a*x^-b+c").sum() == len(by_n) - 1  # the dead cell leaves 3 N
    assert (fits["bootstrap_replicates"] == 200).all()

    figure = tmp_path / "error_vs_n.png"
    argv = ["plot", "error-vs-n", "--study", str(study_file), "--experiment", "shifts"]
    argv += ["--downstream", "helmholtz_1_10", "--summary", str(tables / "summary.csv")]
    assert main([*argv, "--fits", str(tables / "scaling_fits.csv"), "--out", str(figure)]) == 0
    assert figure.stat().st_size > 1000
