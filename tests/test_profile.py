"""The shipped SLURM profile (workflow/profiles/slurm) says only WHERE jobs run; WHAT they need
comes from the study's config. Checked without a cluster: the profile's keys, and a dry-run
under ``--profile slurm`` showing a paper-sized job's resources exactly as config/paper.yaml
gives them (tests/test_slurm.py shows them reaching ``sbatch`` on the loopback cluster)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from workflow_helpers import snakemake

from pdetransfer.modes import MODES

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "slurm" / "profile.yaml").read_text())
#: Every rule that runs on a GPU: each mode's training and evaluation rules (one name each,
#: whatever sweep.pack is), pre-training and the gallery's predictions.
GPU_RULES = ("pretrain", "predict", *(rule for mode in MODES.values() for rule in mode.rules))
#: Resources the config's `resources:` section decides (threads reach sbatch as CPUs).
NEEDS = {"mem_mb", "mem", "runtime", "gpu", "threads", "cpus_per_task", "cpus_per_gpu", "gres"}


def test_the_profile_defines_nothing_the_config_defines() -> None:
    assert "set-threads" not in PROFILE
    for rule, values in {
        "default": PROFILE["default-resources"],
        **PROFILE["set-resources"],
    }.items():
        assert not NEEDS & set(values), rule


def test_every_gpu_rule_is_placed_alike_and_no_group_outgrows_its_members() -> None:
    resources = PROFILE["set-resources"]
    placement = {k: v for k, v in resources["pretrain"].items() if k != "slurm_extra"}
    assert placement["nodes"] == 1  # torchrun --standalone: one node
    assert set(resources) == set(GPU_RULES)  # every GPU rule, and no rule that no longer exists
    for rule in GPU_RULES:
        assert {k: v for k, v in resources[rule].items() if k != "slurm_extra"} == placement
    # Group members run one at a time in their allocation (plugin issue #469) while Snakemake
    # sizes a group for members side by side: the profile groups nothing.
    assert "groups" not in PROFILE and "group-components" not in PROFILE


def test_a_dry_run_under_the_profile_gives_jobs_the_configs_resources(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["resources"]
    target = "results/pretrain/poisson_1_5/m/model.pt"
    profile, study = str(ROOT / "slurm"), str(ROOT / "config" / "paper.yaml")
    result = snakemake(tmp_path, target, "-n", "--profile", profile, "--configfile", study)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    jobs = re.split(r"\n(?=rule \w+:)", result.stdout)
    (pretrain,) = [job for job in jobs if job.startswith("rule pretrain:")]
    resources = dict(re.findall(r"(\w+)=([^,\n]+)", pretrain.split("resources:")[1].split("\n")[0]))
    wanted = config["pretrain"]
    assert resources["mem_mb"] == str(wanted["mem_mb"])
    assert resources["runtime"] == str(wanted["runtime"])
    assert resources["gpu"] == str(wanted["gpu"])
    assert resources["cpus_per_gpu"] == str(wanted["threads"])
    assert resources["slurm_partition"] == PROFILE["set-resources"]["pretrain"]["slurm_partition"]
    assert f"--threads {wanted['threads']} " in pretrain
    generate = next(job for job in jobs if job.startswith("rule generate:"))
    assert f"mem_mb={config['data']['mem_mb']}," in generate
    assert f"slurm_partition={PROFILE['default-resources']['slurm_partition']}" in generate
