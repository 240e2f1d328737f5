"""The workflow on a real SLURM cluster: the one-node cluster of ``.ci/slurm-cluster.sh``.

``.ci/run`` starts that cluster before the tests and stops it afterwards; without a cluster
that answers (``sinfo``), every test here is skipped with the reason. The study (a cut of
config/test.yaml) runs as a cluster user runs it -- ``snakemake --profile slurm`` from the
root of (a copy of) the repository -- with the test cluster's few differences layered on top
(tests/profiles/slurm-test). A local run of the same study gives the reference tables:
training is seeded and both runs use the same thread counts, so the numbers must be equal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
TEST_PROFILE = ROOT / "tests" / "profiles" / "slurm-test"
TEST_CLUSTER = "pdetransfer-ci"  # ClusterName in .ci/slurm-cluster.sh
WORKFLOW_PATHS = ("Snakefile", "workflow", "config", "envs", "slurm")
STUDY = "config/slurm-test.yaml"  # written by _write_study
TABLES = ("runs.csv", "summary.csv", "data_efficiency.csv")
# Rules that must run as SLURM jobs (the workflow's `localrules`, tables and plots, may not).
COMPUTE_RULES = {"generate", "dataset_stats", "mixed_stats", "pretrain"}
COMPUTE_RULES.update(["finetune_cell", "scratch_cell"])  # sweep.pack: true, the default
COMPUTE_RULES.update(["evaluate", "predict"])


def _no_cluster_reason() -> str | None:
    """Why the SLURM tests cannot run here, or None when a cluster answers."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) installed; CI starts one with .ci/slurm-cluster.sh start"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=5
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        states = []
    if not {"idle", "mix", "alloc"} & set(states):
        return "no SLURM cluster answers (sinfo); start one with .ci/slurm-cluster.sh start"
    if _slurm_config().get("ClusterName") != TEST_CLUSTER:
        # Never submit test jobs to (or cancel jobs on) a real cluster this machine reaches.
        return f"the SLURM cluster here is not the test cluster '{TEST_CLUSTER}'"
    return None


def _slurm_config() -> dict[str, str]:
    """``scontrol show config`` as {key: value}."""
    text = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", text, re.M))


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = _no_cluster_reason()
    if reason:
        pytest.skip(reason)


def _env() -> dict[str, str]:
    """This interpreter's environment first on PATH: sbatch exports it to the jobs."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_PATHS:
        src = ROOT / name
        if src.is_symlink():
            (dest / name).symlink_to(os.readlink(src))
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def _write_study(workdir: Path) -> None:
    """config/test.yaml cut to every rule but a third of the jobs: one size, one shift, one N.

    A SLURM job starts Python three times (the batch's snakemake, the step's snakemake, the
    command) where a local job starts it once; on a two-core CI machine the full test study
    would take the SLURM test past its five minutes.
    """
    study = yaml.safe_load((workdir / "config" / "test.yaml").read_text())
    study["sizes"] = {"tiny": study["sizes"]["tiny"]}
    study["experiments"]["shifts"]["downstream"] = ["poisson_5_10"]
    study["sweep"]["n"] = study["sweep"]["n"][:1]
    (workdir / STUDY).write_text(yaml.safe_dump(study))


def _snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """Start the study in ``workdir``; output goes to ``workdir/snakemake.out``."""
    with (workdir / "snakemake.out").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--configfile", STUDY, *args],
            cwd=workdir,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _finish(run: subprocess.Popen, workdir: Path, timeout: float = 900) -> str:
    """Wait for a run started by :func:`_snakemake`; its output, which must report success."""
    try:
        run.wait(timeout=timeout)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    output = (workdir / "snakemake.out").read_text()
    assert run.returncode == 0, output[-5000:]
    return output


@pytest.fixture(scope="module")
def runs(cluster: None, tmp_path_factory: pytest.TempPathFactory):
    """The study on SLURM and, at the same time (SLURM runs mostly wait), locally.

    Returns the SLURM run's directory and output, and the local reference run's directory.
    """
    local_dir = _copy_workflow(tmp_path_factory.mktemp("local"))
    slurm_dir = _copy_workflow(tmp_path_factory.mktemp("slurm"))
    for workdir in (local_dir, slurm_dir):
        _write_study(workdir)
    local = _snakemake(local_dir, "--cores", "1")
    try:
        on_slurm = _snakemake(slurm_dir, "--profile", "slurm", "--profile", str(TEST_PROFILE))
        try:
            output = _finish(on_slurm, slurm_dir)
        finally:
            _cancel_jobs_in(slurm_dir)
        _finish(local, local_dir)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    return slurm_dir, output, local_dir


def _cancel_jobs_in(workdir: Path) -> None:
    """Cancel jobs still queued or running in ``workdir`` (only a failure leaves any)."""
    queue = subprocess.run(
        ["squeue", "-h", "-u", str(os.getuid()), "-o", "%i %Z"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    ids = [line.split()[0] for line in queue.splitlines() if str(workdir) in line]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _job_history() -> dict[str, str]:
    """{job id: state} of every finished job, from slurmctld's job completion log."""
    location = _slurm_config().get("JobCompLoc")
    assert location, "the test cluster should log finished jobs (JobCompType=jobcomp/filetxt)"
    history = {}
    for line in Path(location).read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        history[fields["JobId"]] = fields["JobState"]
    return history


def test_every_job_is_a_completed_slurm_job(runs) -> None:
    workdir, output, _ = runs
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)
    assert submitted, "no job was submitted through sbatch"
    ids = {job_id for job_id, _ in submitted}
    history = _job_history()
    assert {job_id: history.get(job_id) for job_id in ids} == dict.fromkeys(ids, "COMPLETED")

    # Every non-local rule ran inside one of those jobs, and nothing else did.
    logs = [Path(log) for _, log in submitted]
    assert all(log.exists() for log in logs)
    ran = set()
    for log in logs:
        ran.update(re.findall(r"^\s*(?:local)?rule (\w+):", log.read_text(), re.M))
    local_rules = set(re.findall(r"^\s*localrule (\w+):", output, re.M))
    scheduled = set(re.findall(r"^\s*(?:local)?rule (\w+):", output, re.M))
    assert ran >= COMPUTE_RULES
    assert ran == scheduled - local_rules
    assert not local_rules & COMPUTE_RULES

    # Group jobs batched the short runs: fewer SLURM jobs than submitted rule instances.
    assert "Group job runs_" in output and "Group job evaluations" in output
    assert len(ids) < len(re.findall(r"^\s*rule (\w+):", output, re.M))

    # Pre-training used the device SLURM assigned (the fake GRES), not a locally claimed one.
    pretrain_logs = (workdir / "results" / "logs" / "pretrain").rglob("*.log")
    pretraining_logs = [p for p in pretrain_logs if p.name != "stats.log"]  # mixed_stats' too
    assert pretraining_logs
    for log in pretraining_logs:
        assert re.search(r"pdetransfer launch: devices \S+ \(slurm\)", log.read_text()), log


def test_tables_match_a_local_run(runs) -> None:
    workdir, _, local_run = runs
    for name in TABLES:
        on_slurm = pd.read_csv(workdir / "results" / "tables" / name)
        local = pd.read_csv(local_run / "results" / "tables" / name)
        timing = [c for c in local.columns if "seconds" in c]
        assert len(on_slurm) == len(local) > 0, name
        pd.testing.assert_frame_equal(
            on_slurm.drop(columns=timing), local.drop(columns=timing), check_exact=True
        )


def _sbatch_train(workdir: Path, run: str, epochs: int) -> str:
    """Submit a two-GPU pre-training (fake GPUs: two gloo processes on the CPU); its job id."""
    data = "results/data/poisson_1_5"
    command = (
        f"srun -n1 --gpus=2 pdetransfer launch --gpus 2 -- train"
        f" --data {data}/train.h5 --val {data}/val.h5 --stats {data}/stats.json"
        f" --model 2,4 --epochs {epochs} --batch-size 8 --seed 0 --threads 1 --out {run}"
    )
    sbatch = ["sbatch", "--parsable", "-p", "gpu", "--gpus=2", "--cpus-per-gpu=1", "-t", "10"]
    result = subprocess.run(
        [*sbatch, "-o", f"{run}.%j.log", "--wrap", command],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def _end_state(job_id: str, timeout: float = 180) -> str:
    """Wait for a job to end; its final state. (`sbatch --wait` polls too slowly.)"""
    deadline = time.monotonic() + timeout
    while (state := _job_history().get(job_id)) is None:
        assert time.monotonic() < deadline, f"job {job_id} did not end in {timeout:g} s"
        time.sleep(0.5)
    return state


def _log(workdir: Path, run: str, job_id: str) -> str:
    return (workdir / f"{run}.{job_id}.log").read_text()


def test_two_process_pretraining_under_srun_and_torchrun(runs) -> None:
    workdir, _, _ = runs
    job_id = _sbatch_train(workdir, "ddp", epochs=2)
    assert _end_state(job_id) == "COMPLETED"
    log = _log(workdir, "ddp", job_id)
    assert "pdetransfer launch: devices 0,1 (slurm), 2 process(es)" in log
    summary = json.loads((workdir / "ddp" / "train.json").read_text())
    assert summary["world_size"] == 2
    assert (workdir / "ddp" / "model.pt").exists()


def test_usr1_before_the_time_limit_checkpoints_and_a_rerun_resumes(runs) -> None:
    """SLURM's --signal=USR1@T signals every process of the job's steps; `scancel --signal`
    delivers it the same way, now rather than minutes before a time limit."""
    workdir, _, _ = runs
    run = workdir / "preempted"
    job_id = _sbatch_train(workdir, "preempted", epochs=100)
    deadline = time.monotonic() + 120
    while not (run / "state.pt").exists():
        assert time.monotonic() < deadline, "no state.pt within 2 minutes"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=30)
    assert _end_state(job_id) == "FAILED"  # exit status 128 + 10: Snakemake retries it
    assert "stopped by SIGUSR1" in _log(workdir, "preempted", job_id)
    assert (run / "state.pt").exists() and not (run / "model.pt").exists()

    assert _end_state(_sbatch_train(workdir, "preempted", epochs=100)) == "COMPLETED"
    summary = json.loads((run / "train.json").read_text())
    assert summary["epochs_run"] == 100
    every, steps = summary["val_every"], summary["steps"]
    checks = pd.read_csv(run / "log.csv")["step"].tolist()
    tail = [steps] if steps % every else []
    assert checks == [*range(every, steps + 1, every), *tail]  # every check once: resumed
