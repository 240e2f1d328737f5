"""GPU claiming and ``pdetransfer launch``, on CPU with fake device ids.

The concurrency tests run the real ``pdetransfer`` command in separate processes. The command
they launch is a ``probe`` subcommand added through a ``sitecustomize`` module on PYTHONPATH
(so it also exists inside torchrun's workers): it records the ``CUDA_VISIBLE_DEVICES`` and
rank it was given, then holds its devices until the test creates a release file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pdetransfer.engine.runtime import gpu, launching
from pdetransfer.errors import UserError

PROBE = textwrap.dedent(
    '''
    """Test-only ``pdetransfer probe OUT --release FILE [--exit N]`` subcommand."""
    import argparse, os, signal, time
    from pathlib import Path

    from pdetransfer import cli


    def _add_probe(sub):
        p = sub.add_parser("probe")
        p.add_argument("out")
        p.add_argument("--release", required=True)
        p.add_argument("--exit", type=int, default=0)
        p.set_defaults(_handler="sitecustomize:probe")


    def probe(args):
        got = []
        rank = os.environ.get("RANK", "-")
        out = Path(f"{args.out}.{rank}")

        def record(name):
            got.append(name)
            Path(f"{out}.{name}").touch()  # the test waits for it before the next signal

        signal.signal(signal.SIGUSR1, lambda *_: record("USR1"))
        signal.signal(signal.SIGURG, lambda *_: record("URG"))
        out.write_text(f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}|{rank}|{os.getpid()}")
        while not Path(args.release).exists():
            time.sleep(0.05)
        Path(f"{out}.signals").write_text(",".join(got))
        return args.exit


    cli.REGISTRARS.append(_add_probe)
    '''
)


@pytest.fixture
def probe_env(tmp_path: Path) -> dict[str, str]:
    """Environment with four fake GPUs, a private lock directory and the probe subcommand."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(PROBE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env[gpu.IDS_ENV] = "0,1,2,3"
    env[gpu.LOCK_DIR_ENV] = str(tmp_path / "locks")
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID"):
        env.pop(var, None)
    return env


def _pdetransfer() -> str:
    return str(Path(sys.executable).parent / "pdetransfer")


def _start_probe(env: dict[str, str], out: Path, release: Path, *launch_args: str):
    """The probe under ``pdetransfer launch``; its stderr goes to ``out.stderr``."""
    with Path(f"{out}.stderr").open("w") as stderr:
        return subprocess.Popen(
            [
                _pdetransfer(),
                "launch",
                *launch_args,
                "--",
                "probe",
                str(out),
                "--release",
                str(release),
            ],
            env=env,
            stderr=stderr,
        )


def _wait_for(paths: list[Path], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"timed out waiting for {paths}"
        time.sleep(0.05)


def _wait_for_text(path: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"timed out waiting for {text!r} in {path}"
        time.sleep(0.05)


def test_pool_prefers_explicit_ids_then_visible_devices() -> None:
    assert gpu.device_pool({gpu.IDS_ENV: "3, 5", "CUDA_VISIBLE_DEVICES": "0"}) == ["3", "5"]
    assert gpu.device_pool({"CUDA_VISIBLE_DEVICES": "2,7"}) == ["2", "7"]


def test_slurm_devices_only_inside_a_job() -> None:
    assert gpu.slurm_devices({"CUDA_VISIBLE_DEVICES": "0"}) is None
    assert gpu.slurm_devices({"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "1,2"}) == ["1", "2"]
    assert gpu.slurm_devices({"SLURM_JOB_ID": "7"}) == []


def test_claims_are_exclusive_and_released(tmp_path: Path) -> None:
    pool = ["0", "1", "2"]
    with gpu.claim_gpus(2, pool=pool, lock_dir=tmp_path) as first:
        assert first.ids == ["0", "1"]
        with gpu.claim_gpus(1, pool=pool, lock_dir=tmp_path) as second:
            assert second.ids == ["2"]
        # Only one device is free: a two-device claim waits, and holds nothing while waiting.
        with pytest.raises(UserError, match="no 2 free GPU"):
            gpu.claim_gpus(2, pool=pool, lock_dir=tmp_path, poll=0.01, timeout=0.05, on_wait=print)
        with gpu.claim_gpus(1, pool=pool, lock_dir=tmp_path) as third:
            assert third.ids == ["2"]
    with gpu.claim_gpus(3, pool=pool, lock_dir=tmp_path) as everything:
        assert everything.ids == pool


def test_asking_for_more_gpus_than_exist_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="asked for 3 GPU"):
        gpu.claim_gpus(3, pool=["0", "1"], lock_dir=tmp_path)
    with pytest.raises(UserError, match="has 0 \\(none\\)"):
        gpu.claim_gpus(1, pool=[], lock_dir=tmp_path)


def test_slurm_assignment_is_used_without_locking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6")
    placement, claim = launching.place(2, None, tmp_path)
    assert (placement.devices, placement.nproc, placement.source, claim) == (
        ["5", "6"],
        2,
        "slurm",
        None,
    )
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="SLURM gave this job only 2"):
        launching.place(4, None, tmp_path)


def test_group_jobs_share_a_slurm_allocation_device_by_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grouped commands in one allocation of two GPUs get one each, locked per SLURM job."""
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    first, first_claim = launching.place(1, None, tmp_path)
    second, second_claim = launching.place(1, None, tmp_path)
    assert (first.devices, second.devices) == (["0"], ["1"])
    assert first.source == "slurm, claimed"
    assert sorted(p.name for p in (tmp_path / "slurm-43").iterdir()) == [
        "gpu-0.lock",
        "gpu-1.lock",
    ]
    for claim in (first_claim, second_claim):
        assert claim is not None
        claim.release()


def test_process_count_follows_gpus_unless_given() -> None:
    assert launching.place(0, None, None)[0].nproc == 1
    assert launching.place(0, 2, None)[0].nproc == 2
    command = launching.torchrun_command(3, ["train", "--out", "r"])
    assert command[-8:] == [
        "--standalone",
        "--nproc-per-node",
        "3",
        "-m",
        "pdetransfer",
        "train",
        "--out",
        "r",
    ]


def test_four_jobs_get_four_gpus_and_a_fifth_waits_for_a_killed_holder(
    tmp_path: Path, probe_env: dict[str, str]
) -> None:
    release = tmp_path / "release"
    outs = [tmp_path / f"job{i}" for i in range(5)]
    jobs = [_start_probe(probe_env, out, release, "--gpus", "1") for out in outs[:4]]
    try:
        _wait_for([Path(f"{out}.-") for out in outs[:4]])
        seen = [Path(f"{out}.-").read_text().split("|")[0] for out in outs[:4]]
        assert sorted(seen) == ["0", "1", "2", "3"]

        fifth = _start_probe(probe_env, outs[4], release, "--gpus", "1")
        jobs.append(fifth)
        _wait_for_text(Path(f"{outs[4]}.stderr"), "waiting for 1 free GPU(s)")
        assert not Path(f"{outs[4]}.-").exists(), "a fifth job ran while four GPUs were held"

        jobs[2].send_signal(signal.SIGKILL)  # the holder dies without cleaning up
        jobs[2].wait()
        _wait_for([Path(f"{outs[4]}.-")])
        assert Path(f"{outs[4]}.-").read_text().split("|")[0] == seen[2]
    finally:
        release.touch()
        for job in jobs:
            job.wait(timeout=60)
    assert [job.returncode for job in jobs] == [0, 0, -signal.SIGKILL, 0, 0]


def test_two_processes_under_torchrun_forward_usr1_urg_and_exit_status(
    tmp_path: Path, probe_env: dict[str, str]
) -> None:
    """Two gloo-ready CPU processes: ranks set, SIGUSR1 and SIGURG (the slurm profile's time
    signal) reach both, torchrun survives them."""
    release = tmp_path / "release"
    out = tmp_path / "multi"
    job = subprocess.Popen(
        [
            _pdetransfer(),
            "launch",
            "--nproc",
            "2",
            "--",
            "probe",
            str(out),
            "--release",
            str(release),
            "--exit",
            "3",
        ],
        env=probe_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for([Path(f"{out}.0"), Path(f"{out}.1")], timeout=120)
        job.send_signal(signal.SIGUSR1)
        _wait_for([Path(f"{out}.0.USR1"), Path(f"{out}.1.USR1")])
        job.send_signal(signal.SIGURG)
        _wait_for([Path(f"{out}.0.URG"), Path(f"{out}.1.URG")])
    finally:
        release.touch()
        job.wait(timeout=120)
    stderr = job.stderr.read()
    assert job.returncode != 0, stderr  # the workers' failure (exit 3) is not swallowed
    for rank in ("0", "1"):
        assert Path(f"{out}.{rank}").read_text().split("|")[1] == rank
        assert Path(f"{out}.{rank}.signals").read_text() == "USR1,URG", stderr


def test_exit_status_of_an_in_process_run_is_propagated(
    tmp_path: Path, probe_env: dict[str, str]
) -> None:
    release = tmp_path / "release"
    release.touch()
    result = subprocess.run(
        [
            _pdetransfer(),
            "launch",
            "--gpus",
            "2",
            "--nproc",
            "1",
            "--",
            "probe",
            str(tmp_path / "o"),
            "--release",
            str(release),
            "--exit",
            "5",
        ],
        env=probe_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 5
    assert (tmp_path / "o.-").read_text().split("|")[0] == "0,1"


def test_launch_errors_are_one_sentence(probe_env: dict[str, str]) -> None:
    for args, message in [
        ([], "no subcommand to launch"),
        (["--gpus", "9", "--", "info", "x"], "asked for 9 GPU(s)"),
        (["--", "launch", "info"], "cannot launch itself"),
    ]:
        result = subprocess.run(
            [_pdetransfer(), "launch", *args], env=probe_env, capture_output=True, text=True
        )
        assert result.returncode == 2
        assert result.stderr.strip().startswith("pdetransfer launch: error:")
        assert message in result.stderr


SNAKEFILE = """
rule all:
    input: expand("out/{i}.done", i=range(6))

rule probe:
    output: "out/{i}.done"
    resources: gpu=1
    shell:
        "pdetransfer launch --gpus {resources.gpu} -- probe out/{wildcards.i}"
        " --release {config[release]} && touch {output}"
"""


def test_snakemake_with_four_gpus_runs_four_jobs_on_four_devices(
    tmp_path: Path, probe_env: dict[str, str]
) -> None:
    """`snakemake --resources gpu=4`: Snakemake counts, the lock files pick the devices."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    release = tmp_path / "release"
    env = dict(probe_env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{probe_env['PATH']}")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "8",
            "--resources",
            "gpu=4",
            "--config",
            f"release={release}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def started() -> list[Path]:
        return sorted(tmp_path.glob("out/*.-"))

    try:
        deadline = time.monotonic() + 120
        while len(started()) < 4:
            assert time.monotonic() < deadline and run.poll() is None, "four jobs did not start"
            time.sleep(0.05)
        time.sleep(1.0)  # a fifth job would have started by now
        assert len(started()) == 4
        assert sorted(p.read_text().split("|")[0] for p in started()) == ["0", "1", "2", "3"]
    finally:
        release.touch()
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr[-3000:]
    assert len(list(tmp_path.glob("out/*.done"))) == 6


def test_launch_runs_a_two_process_gloo_training_on_cpu(tmp_path: Path) -> None:
    engine_helpers = pytest.importorskip("engine_helpers")
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run(
        [_pdetransfer(), "launch", "--nproc", "2", "--", *engine_helpers.train_args(run)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr
    assert json.loads((run / "train.json").read_text())["world_size"] == 2


def test_auto_device_refuses_the_cpu_when_gpus_were_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job given GPUs whose torch cannot use CUDA fails in one sentence, not on the CPU."""
    from pdetransfer.engine.runtime.devices import resolve_device

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for name in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", gpu.LAUNCHED_GPUS_ENV, gpu.ALLOW_CPU_ENV):
        monkeypatch.delenv(name, raising=False)
    assert resolve_device("auto").type == "cpu"  # nobody gave this process a GPU

    monkeypatch.setenv("SLURM_JOB_ID", "3")
    assert resolve_device("auto").type == "cpu"  # a CPU job under SLURM
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(UserError, match=r"^SLURM gave this job GPU\(s\) 0 .* cannot use CUDA"):
        resolve_device("auto")
    assert resolve_device("cpu").type == "cpu"  # asked for explicitly
    monkeypatch.setenv(gpu.ALLOW_CPU_ENV, "1")
    assert resolve_device("auto").type == "cpu"

    monkeypatch.delenv(gpu.ALLOW_CPU_ENV)
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv(gpu.LAUNCHED_GPUS_ENV, "2")
    with pytest.raises(UserError, match=r"^pdetransfer launch --gpus 2 was asked for but"):
        resolve_device("auto")


def test_launch_with_gpus_and_cpu_only_torch_fails_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch can use CUDA: the error cannot happen here")
    env = {**os.environ, gpu.IDS_ENV: "0", gpu.LOCK_DIR_ENV: str(tmp_path / "locks")}
    for name in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", gpu.ALLOW_CPU_ENV):
        env.pop(name, None)
    argv = pytest.importorskip("engine_helpers").train_args(tmp_path / "run", "--epochs", "1")
    result = subprocess.run(
        [_pdetransfer(), "launch", "--gpus", "1", "--", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("pdetransfer train: error: pdetransfer launch --gpus 1 was")
    assert not (tmp_path / "run" / "model.pt").exists()
