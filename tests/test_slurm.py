"""The workflow on a real SLURM cluster: the one-node cluster of ``.ci/slurm-cluster.sh``.

``.ci/run`` starts that cluster before the tests and stops it afterwards; without a cluster
that answers (``sinfo``), every test here is skipped with the reason -- or fails, under
``CI=true``, so that CI cannot pass by skipping. The study (a cut of config/test.yaml with
cluster-style ``resources``) runs as a cluster user runs it -- ``snakemake --profile slurm``
from the root of (a copy of) the repository -- with the test cluster's few differences
layered on top (tests/profiles/slurm-test). Its pre-trainings have more epochs than fit in one
attempt, and each of the two ways an attempt stops before SLURM kills it is proven by a run in
which only that way can stop it: the mixed pre-training (one-minute limit, no signal) only by
its own deadline alarm; the single-physics one (a limit its alarm cannot reach before the
training ends) only by the SIGURG that the test sends to its job's steps once the training has
said it is running -- SLURM's own ``--signal`` arrives at slurmctld's periodic check, a time no
test can choose, so it would make the order of the two stops a matter of chance. Both resume
over several attempts. How many epochs that takes depends on the machine's speed, so a pilot
pre-training measures it first and the study's epochs are sized from its steps per second:
a fixed count that takes several attempts on a loaded machine ends within one on a fast one.
A local run of the same study gives the reference: training is seeded
and resumes exactly, and both runs use the same thread counts, so the weights and the tables
must be equal.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pdetransfer.engine.runtime.deadline import parse_time_left

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
TEST_PROFILE = ROOT / "tests" / "profiles" / "slurm-test"
TEST_CLUSTER = "pdetransfer-ci"  # ClusterName in .ci/slurm-cluster.sh
WORKFLOW_PATHS = ("Snakefile", "workflow", "config", "envs", "slurm")
STUDY = "config/slurm-test.yaml"  # written by _write_study
TABLES = ("runs.csv", "summary.csv", "data_efficiency.csv")
# Rules that must run as SLURM jobs (the workflow's `localrules`, tables and plots, may not).
COMPUTE_RULES = {"generate", "dataset_stats", "mixed_stats", "pretrain"}
# One job per cell with sweep.pack: true, the default (the same rules train and evaluate one
# run per job without it).
CELL_RULES = {"finetune", "scratch", "evaluate_finetune", "evaluate_scratch"}
COMPUTE_RULES.update(CELL_RULES)
COMPUTE_RULES.update(["evaluate_zeroshot", "predict"])  # zero-shot runs; gallery predictions
# What the study's jobs need: distinct values per stage, so that the test can tell that each
# job asked SLURM for its own stage's (threads stay 1, as in the local reference run).
RESOURCES = {
    "data": {"mem_mb": 1000, "runtime": 20},
    "pretrain": {"gpu": 1, "mem_mb": 1500, "runtime": 1},
    "train": {"gpu": 1, "mem_mb": 1200, "runtime": 20},
    "evaluate": {"gpu": 1, "mem_mb": 1100, "runtime": 20},
}
STAGE = {"generate": "data", "check": "data", "dataset_stats": "data", "mixed_stats": "data"}
STAGE.update(pretrain="pretrain", finetune="train", scratch="train")
STAGE.update(evaluate_zeroshot="evaluate", predict="evaluate")
STAGE.update(evaluate_finetune="evaluate", evaluate_scratch="evaluate")
# The pilot: the mixed pre-training for this many epochs (400 steps), locally, to measure the
# machine's steps per second before the study's epochs are chosen.
PILOT_EPOCHS = 50
# The mixed pre-training's length in seconds at the pilot's pace. An attempt trains at most
# 40 s (the one-minute limit less the alarm's 20-s margin, less the job's start), so the first
# attempt cannot finish unless the study trains 2.25 times faster than the pilot did, and the
# last one ends within the test profile's 16 attempts even 5 times slower (3 processes share 2
# cores while both pre-trainings and the local run train: 1.5 times).
MIXED_SECONDS = 90.0
# The USR1 test's pre-training, in seconds at the pilot's pace: the signal, sent once its first
# state.pt is written, must arrive well before the training ends.
USR1_SECONDS = 30.0
# The signalled pre-training's time limit (minutes): its deadline alarm is set 20 s before it,
# minutes after its whole training (half the mixed one's steps: 45 s at the pilot's pace) would
# have ended, so only the test's signal can stop it; its retry then trains to the end.
SIGNALLED_RUNTIME = 6
RESUMING = re.compile(r"^pdetransfer train: resumed from step (\d+) of ", re.M)
# How the job's snakemake reports the failed command in the SLURM log of an attempt.
EXIT_STATUS = re.compile(r"returned non-zero exit status (\d+)")
# Members of each packed fine-tune or scratch cell: its training job asks for resources.train's
# runtime and memory times this, its evaluation job for resources.evaluate's runtime times this
# (the members are evaluated one after another, one in memory at a time).
CELL_MEMBERS = 2
SIGNALLED = "poisson_1_5"  # stopped once by the test's SIGURG; "mixed" only by its alarm
# What the training prints once its stop handlers are up (engine/deadline.py): the earliest
# moment a signal is sure to be handled rather than ignored (SIGURG's default action).
ARMED = "the SLURM job's time limit is in"


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
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)


def _env() -> dict[str, str]:
    """This interpreter's environment first on PATH: sbatch exports it to the jobs.

    The test cluster's GPUs are fake GRES entries, so the jobs' ``--device auto`` must be let
    fall back to the CPU (on a real cluster that would be an error: no CUDA where GPUs were
    given).
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PDETRANSFER_ALLOW_CPU"] = "1"
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


def _write_study(workdir: Path, epochs: int) -> None:
    """config/test.yaml cut to every rule but a third of the jobs: one size, one shift, one N.

    A SLURM job starts Python three times (the batch's snakemake, the step's snakemake, the
    command) where a local job starts it once; on a two-core CI machine the full test study
    would take the SLURM test past its five minutes.
    """
    study = yaml.safe_load((workdir / "config" / "test.yaml").read_text())
    study["sizes"] = {"tiny": study["sizes"]["tiny"]}
    study["experiments"]["shifts"]["downstream"] = ["poisson_5_10"]
    study["sweep"]["n"] = study["sweep"]["n"][:1]
    study["sweep"]["seeds"] = list(range(CELL_MEMBERS))  # a packed cell of two members
    study["resources"] = RESOURCES
    study["training"]["pretrain"]["epochs"] = epochs
    (workdir / STUDY).write_text(yaml.safe_dump(study))


def _signal_profile(workdir: Path) -> Path:
    """The shipped ``set-resources`` with no SLURM signal for pre-training and a longer limit
    for the signalled one.

    A later profile replaces a top-level key of an earlier one as a whole, so the shipped
    placement is copied and only the pre-training's ``slurm_extra`` and ``runtime`` change. (The
    shipped ``--signal=URG@600`` would arrive at a check of slurmctld's, at no chosen time.)
    """
    shipped = yaml.safe_load((ROOT / "slurm" / "profile.yaml").read_text())
    resources = {rule: dict(values) for rule, values in shipped["set-resources"].items()}
    resources["pretrain"]["slurm_extra"] = "''"  # a YAML alias no more: other rules keep theirs
    limit = RESOURCES["pretrain"]["runtime"]
    resources["pretrain"]["runtime"] = (
        f"{SIGNALLED_RUNTIME} if wildcards.pretrain == '{SIGNALLED}' else {limit}"
    )
    profile = workdir / "signal-profile"
    profile.mkdir()
    (profile / "profile.yaml").write_text(yaml.safe_dump({"set-resources": resources}))
    return profile


def _snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the study in ``workdir``; output goes to ``workdir/snakemake.out``."""
    with (workdir / "snakemake.out").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--configfile", STUDY, *args],
            cwd=workdir,
            env=env or _env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _finish(run: subprocess.Popen, workdir: Path, timeout: float = 1800) -> str:
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


def _local_env(workdir: Path) -> dict[str, str]:
    """Locally, the study's GPU jobs claim fake devices (one job at a time: --cores 1)."""
    return {**_env(), "PDETRANSFER_GPU_IDS": "0", "PDETRANSFER_GPU_LOCK_DIR": str(workdir)}


@dataclass(frozen=True)
class Pace:
    """How fast the study's mixed pre-training trains here, from a local pilot of it."""

    steps_per_second: float
    steps_per_epoch: int

    def epochs(self, seconds: float, steps_per_epoch: int | None = None) -> int:
        """Epochs that take ``seconds`` at this pace (of the mixed pre-training by default)."""
        per_epoch = steps_per_epoch or self.steps_per_epoch
        return max(PILOT_EPOCHS, math.ceil(seconds * self.steps_per_second / per_epoch))


@pytest.fixture(scope="module")
def pace(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Pace:
    """The pilot: the real rule (data, then ``pdetransfer train``), so its pace counts the same
    validation checks and checkpoint writes as the study's; every pre-training of the test has
    the same model and batch size."""
    workdir = _copy_workflow(tmp_path_factory.mktemp("pilot"))
    _write_study(workdir, PILOT_EPOCHS)
    target = "results/pretrain/mixed/tiny/train.json"
    _finish(_snakemake(workdir, "--cores", "1", target, env=_local_env(workdir)), workdir, 600)
    summary = json.loads((workdir / target).read_text())
    return Pace(summary["steps"] / summary["train_seconds"], summary["steps_per_epoch"])


@pytest.fixture(scope="module")
def runs(pace: Pace, tmp_path_factory: pytest.TempPathFactory):
    """The study on SLURM and, at the same time (SLURM runs mostly wait), locally.

    Returns the SLURM run's directory and output, and the local reference run's directory.
    """
    local_dir = _copy_workflow(tmp_path_factory.mktemp("local"))
    slurm_dir = _copy_workflow(tmp_path_factory.mktemp("slurm"))
    for workdir in (local_dir, slurm_dir):
        _write_study(workdir, pace.epochs(MIXED_SECONDS))
    local = _snakemake(local_dir, "--cores", "1", env=_local_env(local_dir))
    signaller = _Signaller(slurm_dir / "results" / "logs" / "pretrain" / SIGNALLED / "tiny.log")
    try:
        profiles = ("slurm", str(TEST_PROFILE), str(_signal_profile(slurm_dir)))
        on_slurm = _snakemake(slurm_dir, *(arg for p in profiles for arg in ("--profile", p)))
        try:
            output = _finish(on_slurm, slurm_dir)
        finally:
            _cancel_jobs_in(slurm_dir)
            signaller.stop()
        _finish(local, local_dir)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    return slurm_dir, output, local_dir, signaller.sent


class _Signaller:
    """Sends SIGURG to the signalled pre-training's job once its training is ready for it.

    ``scancel --signal=URG`` signals every process of the job's steps, as SLURM's ``--signal``
    without ``B:`` does, but when the test chooses: right after the first attempt's log says
    that the stop handlers are up (:data:`ARMED`), minutes before its alarm. ``sent`` is the job
    id signalled, None until then.
    """

    def __init__(self, log: Path) -> None:
        self.log = log
        self.sent: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        comment = f"rule_pretrain_wildcards_{SIGNALLED}_tiny"  # the executor plugin's comment
        while self.sent is None and not self._done.wait(0.2):
            try:
                armed = ARMED in self.log.read_text()
            except OSError:  # the job has not started yet
                continue
            if not armed:
                continue
            queue = subprocess.run(
                ["squeue", "-h", "-t", "R", "-o", "%i %k"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            ids = [line.split()[0] for line in queue.splitlines() if line.endswith(comment)]
            if len(ids) == 1:
                subprocess.run(["scancel", "--signal=URG", ids[0]], check=True, timeout=30)
                self.sent = ids[0]

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


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


def _submitted(output: str) -> dict[str, Path]:
    """{SLURM job id: its SLURM log} of every job Snakemake submitted."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)
    assert found, "no job was submitted through sbatch"
    return {job_id: Path(log) for job_id, log in found}


def _rule(log: Path) -> str:
    """The rule a SLURM job ran: the plugin files its log under ``rule_<name>/``."""
    (name,) = [part[len("rule_") :] for part in log.parts if part.startswith("rule_")]
    return name


def _request(job_id: str) -> dict[str, str]:
    """What a job asked SLURM for, from ``scontrol show job`` (kept for MinJobAge)."""
    text = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def test_every_job_asks_slurm_for_its_stage_resources_from_the_config(runs) -> None:
    """One source of truth: the study's ``resources`` reach sbatch through --profile slurm,
    and no job is a group job asking for members it runs one at a time."""
    _, output, _, _ = runs
    assert "Group job" not in output
    jobs = _submitted(output)
    for job_id, log in jobs.items():
        rule, request = _rule(log), _request(job_id)
        wanted = dict(RESOURCES[STAGE[rule]])
        if rule == "pretrain" and log.parent.name == f"{SIGNALLED}_tiny":
            wanted["runtime"] = SIGNALLED_RUNTIME  # the test's signal profile sets it
        if rule in CELL_RULES:
            wanted["runtime"] *= CELL_MEMBERS
            if STAGE[rule] == "train":
                wanted["mem_mb"] *= CELL_MEMBERS
        seconds = parse_time_left(request["TimeLimit"])  # the same [D-][H:]M:S format
        assert seconds == 60 * wanted["runtime"], (rule, job_id, request["TimeLimit"])
        assert request["MinMemoryNode"] == f"{wanted['mem_mb']}M", (rule, job_id)
        gpus = wanted.get("gpu", 0)
        assert request.get("TresPerJob", "") == (f"gres:gpu:{gpus}" if gpus else ""), rule
        assert request["Partition"] == ("gpu" if STAGE[rule] != "data" else "cpu"), rule
        assert request["NumCPUs"] == "1", (rule, job_id)  # the study's threads: 1


def test_pretraining_stops_before_its_time_limit_and_resumes_to_the_same_weights(
    runs, pace: Pace
) -> None:
    """Through the chain a user runs: sbatch -> the job's snakemake -> srun -> the step's
    snakemake -> launch -> train. The signalled pre-training's first attempt stopped on the
    signal and nothing else; every attempt of the other but the last stopped on its own alarm;
    SLURM killed nothing; the last attempt resumed after a saved step, every check is logged
    once, and the weights equal those of the uninterrupted local run.

    How each attempt ended is read from its own SLURM log (the exit status, 128 + the stop
    signal), which no later attempt rewrites."""
    workdir, output, local_dir, signalled = runs
    jobs, history = _submitted(output), _job_history()
    assert "TIMEOUT" not in {history[job_id] for job_id in jobs}  # SLURM never had to kill
    failed = {job_id: log for job_id, log in jobs.items() if history[job_id] == "FAILED"}
    assert {_rule(log) for log in failed.values()} == {"pretrain"}  # nothing else failed
    stops: dict[str, list[str]] = {}
    for job_id in sorted(failed, key=int):
        statuses = {int(s) for s in EXIT_STATUS.findall(failed[job_id].read_text())}
        assert len(statuses) == 1 and min(statuses) > 128, (job_id, statuses)
        pretrain = failed[job_id].parent.name.removesuffix("_tiny")
        stops.setdefault(pretrain, []).append(signal.Signals(statuses.pop() - 128).name)
    assert signalled in failed
    assert stops[SIGNALLED] == ["SIGURG"]  # the one attempt the test signalled
    assert set(stops.get("mixed", [])) == {"SIGALRM"}, stops  # every attempt but the last
    for pretrain in (SIGNALLED, "mixed"):
        said = (workdir / "results" / "logs" / "pretrain" / pretrain / "tiny.log").read_text()
        assert "stopped by SIG" not in said and int(RESUMING.search(said).group(1)) > 0
        run = Path("results/pretrain") / pretrain / "tiny"
        summary = json.loads((workdir / run / "train.json").read_text())
        every, steps = summary["val_every"], summary["steps"]
        assert summary["epochs_run"] == pace.epochs(MIXED_SECONDS)
        checks = pd.read_csv(workdir / run / "log.csv")["step"].tolist()
        tail = [steps] if steps % every else []
        assert checks == [*range(every, steps + 1, every), *tail]  # every check once
        assert _same_weights(workdir / run / "model.pt", local_dir / run / "model.pt")


def _same_weights(a: Path, b: Path) -> bool:
    import torch

    wa = torch.load(a, map_location="cpu", weights_only=True)["weights"]
    wb = torch.load(b, map_location="cpu", weights_only=True)["weights"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_every_job_is_a_slurm_job(runs) -> None:
    workdir, output, _, _ = runs
    jobs = _submitted(output)
    ids = set(jobs)
    history = _job_history()
    assert {history.get(job_id) for job_id in ids} <= {"COMPLETED", "FAILED"}

    # Every non-local rule ran inside one of those jobs, and nothing else did.
    logs = list(jobs.values())
    assert all(log.exists() for log in logs)
    ran = set()
    for log in logs:
        ran.update(re.findall(r"^\s*(?:local)?rule (\w+):", log.read_text(), re.M))
    local_rules = set(re.findall(r"^\s*localrule (\w+):", output, re.M))
    scheduled = set(re.findall(r"^\s*(?:local)?rule (\w+):", output, re.M))
    assert ran >= COMPUTE_RULES
    assert ran == scheduled - local_rules
    assert not local_rules & COMPUTE_RULES

    # Pre-training used the device SLURM assigned (the fake GRES), not a locally claimed one.
    pretrain_logs = (workdir / "results" / "logs" / "pretrain").rglob("*.log")
    pretraining_logs = [p for p in pretrain_logs if p.name != "stats.log"]  # mixed_stats' too
    assert pretraining_logs
    for log in pretraining_logs:
        assert re.search(r"pdetransfer launch: devices \S+ \(slurm\)", log.read_text()), log


def test_tables_match_a_local_run(runs) -> None:
    workdir, _, local_run, _ = runs
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
    workdir, _, _, _ = runs
    job_id = _sbatch_train(workdir, "ddp", epochs=2)
    assert _end_state(job_id) == "COMPLETED"
    log = _log(workdir, "ddp", job_id)
    assert "pdetransfer launch: devices 0,1 (slurm), 2 process(es)" in log
    summary = json.loads((workdir / "ddp" / "train.json").read_text())
    assert summary["world_size"] == 2
    assert (workdir / "ddp" / "model.pt").exists()


def test_usr1_before_the_time_limit_checkpoints_and_a_rerun_resumes(runs, pace: Pace) -> None:
    """SLURM's --signal=USR1@T signals every process of the job's steps; `scancel --signal`
    delivers it the same way, now rather than minutes before a time limit."""
    workdir, _, _, _ = runs
    run = workdir / "preempted"
    done = json.loads((workdir / "results/pretrain/poisson_1_5/tiny/train.json").read_text())
    epochs = pace.epochs(USR1_SECONDS, done["steps_per_epoch"])  # the same data and batch
    job_id = _sbatch_train(workdir, "preempted", epochs=epochs)
    deadline = time.monotonic() + 120
    while not (run / "state.pt").exists():
        assert time.monotonic() < deadline, "no state.pt within 2 minutes"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=30)
    assert _end_state(job_id) == "FAILED"  # exit status 128 + 10: Snakemake retries it
    assert "stopped by SIGUSR1" in _log(workdir, "preempted", job_id)
    assert (run / "state.pt").exists() and not (run / "model.pt").exists()

    assert _end_state(_sbatch_train(workdir, "preempted", epochs=epochs)) == "COMPLETED"
    summary = json.loads((run / "train.json").read_text())
    assert summary["epochs_run"] == epochs
    every, steps = summary["val_every"], summary["steps"]
    checks = pd.read_csv(run / "log.csv")["step"].tolist()
    tail = [steps] if steps % every else []
    assert checks == [*range(every, steps + 1, every), *tail]  # every check once: resumed
