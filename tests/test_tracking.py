"""``pdetransfer track``: a study's runs in an MLflow store, once each, from fabricated runs.

The tests that need MLflow skip when it is not installed (the ``[track]`` extra); the ones
that check the command without it always run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from study_helpers import fake_results, load_config, write_study
from workflow_helpers import ROOT, job_counts, snakemake

from pdetransfer.cli import main
from pdetransfer.study.config import Study
from pdetransfer.study.tracking import DIGEST_TAG, KEY_TAG, default_uri

CURVE_STEPS = (1, 2, 3, 4)


def _write_curve(directory: Path, scale: float = 1.0) -> None:
    """A log.csv as the engine writes it: one row per validation check."""
    rows = ["step,epoch,lr,train_loss,val_rel_l2,seconds"]
    for step in CURVE_STEPS:
        rows.append(f"{step},{step},{0.001 / step:.8g},{scale * 10 / step},{scale / step},0.1")
    (directory / "log.csv").write_text("\n".join(rows) + "\n")


def _fake_study(root: Path) -> tuple[Study, Path, Path]:
    """The test study's runs (and pre-trainings) with learning curves, and its study file."""
    config = load_config("test")
    study = Study(config)
    results = root / "results"
    fake_results(results, study)
    for run in study.runs():
        if run.trains:
            _write_curve(results / run.directory)
    for entry, size in study.pretrain_jobs():
        directory = results / "pretrain" / entry / size
        directory.mkdir(parents=True)
        summary = {"status": "completed", "stop_reason": "budget", "best_val_rel_l2": 0.2}
        summary |= {"model": size, "parameters": 1000, "lr": 0.001, "seed": 0, "steps": 4}
        (directory / "train.json").write_text(json.dumps(summary))
        _write_curve(directory, scale=2.0)
    return study, results, write_study(config, root / "study.json")


def _track(study_file: Path, results: Path, out: Path) -> dict:
    argv = ["track", "--study", str(study_file), "--results", str(results), "--out", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_store_holds_every_run_with_its_curve_and_a_second_export_adds_nothing(
    tmp_path: Path,
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    study, results, study_file = _fake_study(tmp_path)
    n_runs = len(study.runs()) + len(study.pretrain_jobs())
    first = _track(study_file, results, tmp_path / "first.json")
    assert (first["runs"], first["created"], first["unchanged"]) == (n_runs, n_runs, 0)
    assert first["uri"] == default_uri(results)

    client = MlflowClient(tracking_uri=first["uri"])
    experiment = client.get_experiment_by_name("pdetransfer")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_key = {run.data.tags[KEY_TAG]: run for run in runs}
    assert len(runs) == len(by_key) == n_runs
    expected = {run.directory for run in study.runs()}
    expected |= {f"pretrain/{e}/{s}" for e, s in study.pretrain_jobs()}
    assert set(by_key) == expected

    run = next(r for r in study.runs() if r.mode == "finetune")
    tracked = by_key[run.directory]
    metrics = json.loads((results / run.directory / "metrics.json").read_text())
    assert tracked.data.params["mode"] == "finetune"
    assert tracked.data.params["n"] == str(run.n) and tracked.data.params["lr"] == run.lr
    assert tracked.data.tags["cell"] == (
        f"finetune/{run.pretrain}/{run.size}/{run.downstream}/n{run.n}"
    )
    assert tracked.data.tags["status"] == "completed"
    assert tracked.data.tags["stop_reason"] == "plateau"
    assert tracked.data.metrics["test_rel_l2_mean"] == pytest.approx(metrics["rel_l2_mean"])
    assert tracked.info.status == "FINISHED"
    for key, tracked in by_key.items():
        if "/zeroshot/" in f"/{key}":
            continue  # zero-shot trains nothing: no curve
        curve = client.get_metric_history(tracked.info.run_id, "val_rel_l2")
        assert [m.step for m in curve] == list(CURVE_STEPS), key
    zeroshot = next(r for r in study.runs() if r.mode == "zeroshot")
    assert "val_rel_l2" not in by_key[zeroshot.directory].data.metrics
    assert by_key[run.directory].data.metrics["best_val_rel_l2"] > 0

    # a second export of the same files writes nothing
    second = _track(study_file, results, tmp_path / "second.json")
    assert (second["created"], second["replaced"], second["unchanged"]) == (0, 0, n_runs)
    everything = client.search_runs(
        [experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000
    )
    assert {r.info.run_id for r in everything} == {r.info.run_id for r in runs}

    # a retrained run replaces its MLflow run: still one per key, with the new curve
    _write_curve(results / run.directory, scale=0.5)
    third = _track(study_file, results, tmp_path / "third.json")
    assert (third["created"], third["replaced"], third["unchanged"]) == (0, 1, n_runs - 1)
    active = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(active) == n_runs
    (new,) = [r for r in active if r.data.tags[KEY_TAG] == run.directory]
    assert new.info.run_id != by_key[run.directory].info.run_id
    assert new.data.tags[DIGEST_TAG] != by_key[run.directory].data.tags[DIGEST_TAG]
    values = [m.value for m in client.get_metric_history(new.info.run_id, "val_rel_l2")]
    assert values == pytest.approx([0.5 / step for step in CURVE_STEPS])


@pytest.mark.slow
def test_snakemake_track_is_one_job_after_the_runs(tmp_path: Path) -> None:
    """`snakemake track` on a finished study (fabricated: --allowed-rules keeps Snakemake
    from rebuilding the runs it did not make) runs one job, which writes every run."""
    pytest.importorskip("mlflow")
    study, results, study_file = _fake_study(tmp_path)
    study_file.rename(results / "study.json")
    config = str(ROOT / "config" / "test.yaml")
    argv = ["track", "--cores", "1", "--allowed-rules", "track", "--configfile", config]
    result = snakemake(tmp_path, *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr) == {"track": 1}
    export = json.loads((results / "tracking" / "export.json").read_text())
    n_runs = len(study.runs()) + len(study.pretrain_jobs())
    assert (export["runs"], export["created"]) == (n_runs, n_runs)
    assert (results / "tracking" / "mlflow.db").is_file()


def test_an_unreachable_tracking_server_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlflow")
    _, results, study_file = _fake_study(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = "http://127.0.0.1:9/"  # loopback, nothing listens: refused at once
    argv = ["track", "--study", str(study_file), "--results", str(results), "--uri", uri]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"pdetransfer track: error: cannot write to the MLflow store {uri}: " in err
    assert "Traceback" not in err


def test_without_mlflow_track_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config("test")
    study_file = write_study(config, tmp_path / "study.json")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    assert main(["track", "--study", str(study_file), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pdetransfer track needs MLflow: pip install -e '.[track]'" in err
    assert "Traceback" not in err


def test_the_command_line_does_not_import_mlflow() -> None:
    """MLflow is imported by the export alone: the CLI and the tracking module load without
    it, so `pdetransfer` stays fast and works where the [track] extra is not installed."""
    code = (
        "import sys; from pdetransfer.cli import build_parser; import pdetransfer.study.tracking;"
        " build_parser(); assert 'mlflow' not in sys.modules, 'mlflow imported';"
        # envs/track.yaml holds only what the export imports: no torch, no plotting
        " assert not {'torch', 'matplotlib'} & set(sys.modules), 'torch or matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
