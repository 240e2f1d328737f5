"""The conda environment of the jobs (envs/): every runtime dependency of the package with the
same floor, and the package installed so that code changes reach the jobs without a rebuild."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = ROOT / "envs" / "pdetransfer.yaml"
POST_DEPLOY = ROOT / "envs" / "pdetransfer.post-deploy.sh"
TRACK_ENV = ROOT / "envs" / "track.yaml"
TRACK_POST_DEPLOY = ROOT / "envs" / "track.post-deploy.sh"
#: pip name -> conda-forge name, where they differ (the -base packages leave out GUI extras).
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base", "seaborn": "seaborn-base"}
#: Run the workflow from the login node's environment, never inside a job's conda env.
WORKFLOW_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def _requirement(text: str) -> tuple[str, str]:
    """``name``, ``constraint`` of a pip or conda requirement, constraint without spaces."""
    name, constraint = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", text).groups()
    return name.lower(), constraint.replace(" ", "")


def test_conda_env_has_every_runtime_dependency_with_the_same_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        CONDA_NAMES.get(name, name): constraint
        for name, constraint in map(_requirement, project["dependencies"])
        if name not in WORKFLOW_ONLY
    }
    wanted["python"] = project["requires-python"]
    env = dict(map(_requirement, yaml.safe_load(ENV_FILE.read_text())["dependencies"]))
    assert {name: env.get(name) for name in wanted} == wanted
    # Beyond the package's dependencies, only what installing it from source needs.
    assert set(env) - set(wanted) == {"pip", "setuptools", "wheel"}


def test_track_env_has_mlflow_and_what_the_export_imports_with_the_same_floors() -> None:
    """envs/track.yaml (rule track): the [track] extra, and the package's dependencies the
    export imports, each as pyproject.toml pins it; it installs the package like the jobs'."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = dict(map(_requirement, project["dependencies"]))
    pinned |= dict(map(_requirement, project["optional-dependencies"]["track"]))
    env = dict(map(_requirement, yaml.safe_load(TRACK_ENV.read_text())["dependencies"]))
    assert env["mlflow"] == pinned["mlflow"]
    imported = {"numpy", "pandas", "h5py"}  # tests/test_tracking.py: no torch, no plotting
    assert {name: env.get(name) for name in imported} == {n: pinned[n] for n in imported}
    assert env["python"] == project["requires-python"]
    assert set(env) - imported - {"mlflow", "python"} == {"pip", "setuptools", "wheel"}
    assert TRACK_POST_DEPLOY.resolve() == POST_DEPLOY.resolve()


@pytest.mark.slow
def test_post_deploy_installs_the_repository_so_that_edits_reach_the_jobs(
    tmp_path: Path,
) -> None:
    """The post-deploy script in a fresh environment (a venv that sees this one's packages
    stands in for the conda env); then the repository changes and the job's command sees it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md", "src", "envs"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / name)
    # The stand-in environment: an empty venv that sees this interpreter's packages (torch,
    # setuptools, pip...) through a .pth file, with a `pip` of its own as conda envs have.
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=300)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = venv / "bin" / "pip"
    pip.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python"}" -m pip "$@"\n')
    pip.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["PIP_NO_INDEX"] = "1"  # everything it needs is here: no network
    subprocess.run(
        ["bash", str(POST_DEPLOY)],
        cwd=repo,
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )
    # An edit after the environment was built, then a job's command in that environment.
    errors = repo / "src" / "pdetransfer" / "errors.py"
    errors.write_text(errors.read_text() + "\nEDITED_AFTER_DEPLOY = True\n")
    probe = "import pdetransfer.errors as e; print(e.__file__, e.EDITED_AFTER_DEPLOY)"
    result = subprocess.run(
        [venv / "bin" / "python", "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == [str(errors), "True"], result.stderr
    cli = subprocess.run(
        [venv / "bin" / "pdetransfer", "--version"], env=env, capture_output=True, timeout=120
    )
    assert cli.returncode == 0
