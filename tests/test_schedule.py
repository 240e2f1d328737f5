"""The validation schedule, the budget rule and the recipe flags the workflow passes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, snakemake

from pdetransfer.engine.training.schedule import (
    Budget,
    checks,
    choose_val_every,
    cosine_factor,
    recipe_flags,
    validation_share,
)

VAL = 128  # validation samples of the reproduce study's protocol


def _batch(n: int) -> int:
    return min(32, n)  # the reproduce study's batch rule, batch = min(B, N)


@pytest.mark.parametrize("n", [8, 32, 128, 512, 1024])
@pytest.mark.parametrize("horizon", [120, 480, 2000, 10_000])
def test_share_bound_minimum_checks_and_last_step(n: int, horizon: int) -> None:
    batch = _batch(n)
    per_epoch = -(-n // batch)
    every = choose_val_every(horizon, batch, VAL, steps_per_epoch=per_epoch)
    budget = Budget(horizon, every, None, 0)
    steps = [s for s in range(1, horizon + 1) if budget.is_check(s)]
    assert steps[-1] == horizon and len(steps) == checks(horizon, every)
    assert len(steps) >= 10
    share = validation_share(horizon, batch, VAL, every)
    fewest = horizon // 10  # the interval of exactly ten checks
    if validation_share(horizon, batch, VAL, fewest) <= 0.1:
        assert share <= 0.1  # within the bound, and the finest such schedule ...
        finer = validation_share(horizon, batch, VAL, every - 1) if every > 1 else 1.0
        assert finer > 0.1 or every == per_epoch  # ... that validates at most once an epoch
    else:
        assert every == fewest  # too short for both: the minimum number of checks wins
    every_epoch = validation_share(horizon, batch, VAL, min(per_epoch, fewest or 1))
    assert share <= every_epoch + 1e-12  # never dearer than validating every epoch


def test_share_counts_forward_and_backward_work() -> None:
    # 100 steps of 8 samples = 2400 units of training; 10 checks of 128 samples = 1280.
    assert validation_share(100, 8, 128, 10) == pytest.approx(1280 / (2400 + 1280))
    assert checks(100, 30) == 4  # 30, 60, 90 and the last step
    # every step: 128 / (96 + 128) = 0.57 of the work; every other step: 64 / 160 = 0.4
    assert choose_val_every(1000, 32, 128, share=0.5, min_checks=1) == 2
    assert choose_val_every(1000, 32, 128, share=0.6, min_checks=1) == 1
    with pytest.raises(ValueError, match="share"):
        choose_val_every(100, 8, 128, share=1.0)


def test_cosine_schedule_runs_over_the_horizon() -> None:
    assert cosine_factor(0, 400) == 1.0 and cosine_factor(400, 400) == pytest.approx(0.0)
    assert cosine_factor(200, 400) == pytest.approx(0.5)
    assert cosine_factor(500, 400) == cosine_factor(400, 400)


def test_plateau_rule_and_still_improving() -> None:
    plateau = Budget(horizon=1000, val_every=10, patience=100, min_steps=300)
    assert not plateau.plateaued(200, 50)  # before min_steps
    assert plateau.plateaued(300, 200) and not plateau.plateaued(300, 210)
    assert plateau.end_reason == "cap"
    assert plateau.still_improving(1000, 950, "cap")
    assert not plateau.still_improving(1000, 900, "cap")
    assert not plateau.still_improving(400, 300, "plateau")
    fixed = Budget(horizon=1000, val_every=10, patience=None, min_steps=0)
    assert fixed.end_reason == "budget" and not fixed.plateaued(1000, 10)
    assert fixed.still_improving(1000, 910, "budget")  # within the last 10% of the steps
    assert not fixed.still_improving(1000, 900, "budget")
    assert not fixed.still_improving(1000, 1000, "diverged")


def test_recipe_flags_leave_out_unset_keys() -> None:
    recipe = {"epochs": 10, "min_steps": 0, "batch_size": 32, "patience": None, "lr": 1e-3}
    assert recipe_flags(recipe) == "--epochs 10 --min-steps 0 --batch-size 32"
    recipe |= {"patience": 200, "max_steps": 4000, "loss": "rel_l2"}
    assert recipe_flags(recipe) == (
        "--epochs 10 --min-steps 0 --max-steps 4000 --patience 200 --batch-size 32 --loss rel_l2"
    )


def _train_flags(command: str) -> dict[str, str]:
    """The flags of a `pdetransfer train` command that do not name a file or the run."""
    argv = shlex.split(command.split(">")[0])
    argv = argv[argv.index("train") + 1 :]
    skip = {"--data", "--val", "--stats", "--init", "--out", "--out-pattern"}
    flags, key = {}, None
    for word in argv:
        if word.startswith("--"):
            key = word
            flags[key] = ""
        elif key is not None and key not in skip:
            flags[key] = word
    return {k: v for k, v in flags.items() if k not in skip}


def test_finetune_and_scratch_of_a_cell_get_the_same_rule(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["training"]["downstream"] |= {"patience": 6, "max_steps": 40, "loss": "rel_l2"}
    path = tmp_path / "plateau.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    commands = re.findall(r"(pdetransfer launch .*-- train .*)$", output, re.M)
    cells: dict[tuple[str, str, str], dict[str, dict[str, str]]] = {}
    for command in commands:
        out = _out(command)
        if "/runs/" not in out:
            continue  # pre-training keeps its own fixed budget
        mode = "finetune" if "/runs/finetune/" in out else "scratch"
        size, downstream, n = out.rstrip("/").split("/")[-5:-2]
        lr_seed = "/".join(out.rstrip("/").split("/")[-2:])
        cells.setdefault((size, downstream, n + lr_seed), {})[mode] = _train_flags(command)
    assert cells and all(len(modes) == 2 for modes in cells.values())
    for modes in cells.values():
        assert modes["finetune"] == modes["scratch"]
        assert modes["scratch"]["--patience"] == "6" and modes["scratch"]["--loss"] == "rel_l2"


def _out(command: str) -> str:
    """The run directory of a command, or its members' pattern (lr{lr}/s{seed}) when packed."""
    argv = shlex.split(command.split(">")[0])
    flag = "--out" if "--out" in argv else "--out-pattern"
    return argv[argv.index(flag) + 1]
