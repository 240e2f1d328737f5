"""Fault injection through ``snakemake``: a study survives its failures by the documented recovery.

One tiny study (derived from config/test.yaml) runs twice, in two directories: once clean, once
with three faults injected, each followed by the recovery docs/troubleshooting.md
documents:

1. a learning rate that diverges (``sweep.lr: [0.001, 1000.0]``): no recovery needed, its runs
   are outcomes (status ``diverged``), and ``snakemake --keep-going`` exits 0;
2. one training process killed with SIGKILL mid-training (as the kernel's OOM killer does):
   Snakemake, which survives, finishes every other job and exits 1; ``snakemake partial``
   tables the rest and lists that run as missing; ``snakemake --rerun-incomplete`` then reruns
   the job, whose log says it resumed from its ``state.pt``;
3. a downstream test set truncated after the study finished: the ``check`` rule and every
   evaluation that reads it fail naming the file and the command, and ``snakemake --forcerun
   <file>`` regenerates it.

Afterwards the faulted study must equal the clean one: the same dataset bytes, bit-identical
weights of the resumed run (resume is bit-identical on the same hardware), every run's metrics to
the last digit, and the four tables except their timing and path columns. Diverged runs are
compared too: divergence is as deterministic as the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from workflow_helpers import (
    ROOT,
    held_training_env,
    job_counts,
    same_dataset,
    snakemake,
    snakemake_argv,
    wait_for_hold,
)

from pdetransfer.engine.checkpoints import load_checkpoint

#: The killed run: 120 epochs of 8 steps (N = 32, batch 4), held once its first ``state.pt``
#: (step 10) is written and killed there.
KILLED = "results/runs/scratch/tiny/poisson_5_10/n32/lr0.001/s0"
TRUNCATED = "results/data/poisson_5_10/test.h5"
TABLES = ("runs.csv", "summary.csv", "data_efficiency.csv", "scaling_fits.csv")
# how the run was executed, not what it computed: a resumed member may finish in a smaller pack
MACHINE_KEYS = re.compile(r"seconds|time|run_dir|path|sha256|created|packed|pack_size")

pytestmark = pytest.mark.slow


def study_config(directory: Path) -> str:
    """config/test.yaml cut down to one shift, sizes 'tiny', N 4 and 32, a diverging lr 1000."""
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["datasets"] = {
        name: config["datasets"][name] for name in ("poisson_1_5", "poisson_5_10")
    }
    config["sizes"] = {"tiny": config["sizes"]["tiny"]}
    config["pretrain"] = {"poisson_1_5": ["poisson_1_5"]}
    config["experiments"] = {"shifts": {"pretrain": "poisson_1_5", "downstream": ["poisson_5_10"]}}
    config["sweep"] = {
        "n": [4, 32],
        "lr": [0.001, 1000.0],
        "seeds": [0],
        "modes": ["finetune", "scratch"],
    }
    config["training"]["downstream"] = {"epochs": 120, "batch_size": 4}
    config["training"]["checkpoint_every"] = 10
    path = directory / "faults.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def kill_training_mid_way(workdir: Path, options: list[str]) -> subprocess.CompletedProcess:
    """Run the study, SIGKILL the training process of ``KILLED`` once it has saved a resume
    state (it holds there until then: :func:`held_training_env`), and let Snakemake
    (``--keep-going``) finish everything else."""
    run, marker = workdir / KILLED, workdir / "held"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [*snakemake_argv(workdir), *options],
            env=held_training_env(workdir / "site", run, marker),
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            os.kill(wait_for_hold(marker, proc), signal.SIGKILL)
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:  # a failed test leaves no workflow running
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    assert not (run / "model.pt").exists(), "the run finished before the signal arrived"
    return result


def table(workdir: Path, name: str) -> pd.DataFrame:
    """A table without the columns that describe the machine's timing and the paths."""
    frame = pd.read_csv(workdir / "results" / "tables" / name)
    return frame[[c for c in frame.columns if not MACHINE_KEYS.search(c)]]


def without_machine_keys(value: object) -> object:
    """A JSON value without timings, paths and checkpoint hashes (a checkpoint records when it
    was written), at every depth."""
    if isinstance(value, dict):
        return {
            key: without_machine_keys(item)
            for key, item in value.items()
            if not MACHINE_KEYS.search(key)
        }
    if isinstance(value, list):
        return [without_machine_keys(item) for item in value]
    return value


def metrics(workdir: Path) -> dict[str, object]:
    """Every run's metrics.json and train.json without machine keys, by path."""
    found = {}
    for path in sorted((workdir / "results" / "runs").glob("**/*.json")):
        key = path.relative_to(workdir).as_posix()
        found[key] = without_machine_keys(json.loads(path.read_text()))
    return found


def weights(workdir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The weights of every checkpoint of the study, by path."""
    return {
        path.relative_to(workdir).as_posix(): load_checkpoint(path, "model")["weights"]
        for path in sorted((workdir / "results").glob("**/model.pt"))
    }


def failed_rules(output: str) -> list[str]:
    return re.findall(r"Error in rule (\w+):", output)


def test_study_survives_divergence_kill_and_truncation(tmp_path: Path) -> None:
    clean, faulted = tmp_path / "clean", tmp_path / "faulted"
    clean.mkdir()
    faulted.mkdir()
    options = ["--cores", "2", "--keep-going", "--configfile", study_config(tmp_path)]

    # the clean study: one learning rate diverges everywhere, and that is an outcome
    result = snakemake(clean, *options)
    assert result.returncode == 0, result.stderr[-5000:]
    jobs = job_counts(result.stdout + result.stderr)
    runs = pd.read_csv(clean / "results/tables/runs.csv")
    diverged = runs[runs["status"] == "diverged"]
    assert set(diverged["lr"]) == {1000.0} and len(diverged) == 4
    assert diverged["test_rel_l2_mean"].isna().all()
    assert runs.loc[runs["lr"] == 0.001, "status"].eq("completed").all()
    summary = pd.read_csv(clean / "results/tables/summary.csv")
    assert len(summary) == 4 and (summary["best_lr"] == 0.001).all()
    assert (summary["n_diverged"] == 1).all() and summary["test_rel_l2_mean"].notna().all()
    assert len(pd.read_csv(clean / "results/tables/data_efficiency.csv")) == 2
    log = (clean / "results/logs/aggregate.log").read_text()
    assert re.search(r"^aggregate: 4 of 8 trained runs diverged", log, re.M), log

    # the faulted study starts from the clean study's datasets (as files copied in: Snakemake
    # has no record of them), saving their 12 jobs; fault 3 damages its own copy
    shutil.copytree(clean / "results" / "data", faulted / "results" / "data")

    # fault 2: the training process of one job is SIGKILLed once it has saved a resume state
    result = kill_training_mid_way(faulted, options)
    assert result.returncode == 1
    assert failed_rules(result.stderr) == ["scratch"], result.stderr[-5000:]
    assert "exit status 137" in result.stderr  # 128 + SIGKILL
    finished = int(re.findall(r"(\d+) of \d+ steps", result.stdout + result.stderr)[-1])
    # meanwhile the partial tables say what is missing, and only that
    result = snakemake(faulted, "partial", *options)
    assert result.returncode == 0, result.stderr[-5000:]
    partial = faulted / "results/partial/tables"
    missing = pd.read_csv(partial / "missing.csv")
    # Snakemake removes a failed job's outputs: the killed cell's diverged member (finished
    # before the kill) is missing too, until the rerun re-emits it from its final.pt
    missing_runs = [["scratch", 32, "lr0.001/s0 lr1000/s0"]]
    assert missing[["mode", "n", "missing"]].values.tolist() == missing_runs
    assert len(pd.read_csv(partial / "runs.csv")) == len(runs) - 2
    result = snakemake(faulted, *options, "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-5000:]
    rerun = job_counts(result.stdout + result.stderr)
    assert rerun["scratch"] == 1 and not {"finetune", "pretrain", "generate"} & set(rerun)
    train_log = (
        (
            faulted
            / "results/logs"
            / os.path.dirname(os.path.dirname(KILLED.removeprefix("results/")))
        )
        .joinpath("train.log")
        .read_text()
    )  # the packed cell's log: one per cell
    resumed = re.search(r"resumed from step (\d+) of (\d+), saved at ", train_log)
    assert resumed is not None, train_log[-2000:]
    step, horizon = int(resumed.group(1)), int(resumed.group(2))
    assert 0 < step < horizon == 960

    # fault 3: a downstream test set truncated after the study finished
    data = faulted / TRUNCATED
    data_bytes = data.stat().st_size
    with data.open("r+b") as handle:
        handle.truncate(data_bytes // 3)
    result = snakemake(faulted, *options)
    assert result.returncode != 0
    detected = failed_rules(result.stderr)  # its check and every job that reads it
    readers = {"check", "evaluate_finetune", "evaluate_scratch", "predict"}
    assert set(detected) == readers, result.stderr[-5000:]
    logs = re.findall(r"log: (\S+) \(check log file", result.stderr)
    assert len(logs) == len(detected)
    for log in logs:  # each names the file and the recovery command
        text = (faulted / log).read_text()
        assert f"dataset {TRUNCATED} is not a readable HDF5 file (truncated or corrupt?)" in text
        assert f"regenerate it (in the workflow: snakemake --forcerun {TRUNCATED})" in text
    result = snakemake(faulted, *options, "--forcerun", TRUNCATED)
    assert result.returncode == 0, result.stderr[-5000:]
    regenerated = job_counts(result.stdout + result.stderr)
    assert same_dataset(data, clean / TRUNCATED)
    check = faulted / TRUNCATED.replace(".h5", ".check.txt")
    assert check.read_text().rstrip().endswith("OK")
    result = snakemake(faulted, "-n", *options)
    assert "Nothing to be done" in result.stdout + result.stderr

    # the recovered study equals the clean one
    expected_weights = weights(clean)
    assert weights(faulted).keys() == expected_weights.keys() and len(expected_weights) == 9
    for path, tensors in weights(faulted).items():
        for name, tensor in tensors.items():
            assert torch.equal(tensor, expected_weights[path][name]), (path, name)
    assert metrics(faulted) == metrics(clean)
    cells = 0
    for name in TABLES:
        expected = table(clean, name)
        pd.testing.assert_frame_equal(table(faulted, name), expected, check_exact=True)
        cells += expected.size
    recovered = pd.read_csv(faulted / "results/tables/summary.csv")

    print(
        f"\nfault injection: {sum(jobs.values())} jobs in the study "
        f"({', '.join(f'{rule} {count}' for rule, count in sorted(jobs.items()))}); "
        f"faults injected: {len(diverged)} diverged runs (lr 1000), 1 SIGKILL mid-training "
        f"(resumed at step {step} of {horizon}; {finished} other jobs finished around it), 1 truncated file "
        f"({TRUNCATED}, {data_bytes} -> {data_bytes // 3} bytes; {len(detected)} jobs failed on "
        f"it); recovery reran {sum(rerun.values())} + {sum(regenerated.values())} jobs; "
        f"{len(recovered)} summary cells and {cells} table values equal to the clean run, "
        f"{len(expected_weights)} checkpoints bit-identical"
    )
