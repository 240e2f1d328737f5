"""generate / stats / check through the real command line: results, and every bad argument
giving one clear sentence with exit status 2 and no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pdetransfer import cli


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's own errors (unknown choice, missing value)
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _generate_args(out, *extra: str) -> list[str]:
    return [
        "generate",
        "--system",
        "poisson",
        "--range",
        "1",
        "5",
        "--split",
        "train",
        "--n-samples",
        "6",
        "--grid",
        "16",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "train.h5"
    assert cli.main(_generate_args(path)) == 0
    return path


def _assert_one_sentence(code: int, err: str, *phrases: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for phrase in phrases:
        assert phrase in lines[0], err


def test_console_script_generates_and_checks(tmp_path):
    exe = shutil.which("pdetransfer") or f"{sys.executable} -m pdetransfer"
    out = tmp_path / "h.h5"
    args = "--system helmholtz --range 1 10 --split test --n-samples 5 --grid 16"
    run = subprocess.run(
        f"{exe} generate {args} --out {out}", shell=True, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "samples/s" in run.stderr
    check = subprocess.run(f"{exe} check {out}", shell=True, capture_output=True, text=True)
    assert check.returncode == 0 and "OK" in check.stdout and "omega histogram" in check.stdout


def test_stats_and_check_commands(capsys, train_file, tmp_path):
    out = tmp_path / "stats.json"
    code, stdout, _ = _run(capsys, "stats", str(train_file), "--out", str(out))
    assert code == 0 and "wrote" in stdout
    assert json.loads(out.read_text())["files"][0]["path"] == str(train_file)
    code, stdout, _ = _run(capsys, "check", str(train_file))
    assert code == 0 and stdout.strip().endswith("OK")


def test_check_exits_1_on_a_physics_failure(capsys, train_file, tmp_path):
    broken = tmp_path / "broken.h5"
    shutil.copy(train_file, broken)
    with h5py.File(broken, "r+") as h5:
        h5["fields"][0, 1] = np.zeros((16, 16), np.float32) + 1.0
    code, stdout, _ = _run(capsys, "check", str(broken))
    assert code == 1 and "FAIL" in stdout


@pytest.mark.parametrize(
    ("replace", "phrases"),
    [
        ({"--system": "heat"}, ["--system", "invalid choice"]),
        ({"--split": "dev"}, ["--split", "invalid choice"]),
        ({"--range": ("5", "1")}, ["needs LO smaller than HI"]),
        ({"--range": ("3", "3")}, ["needs LO smaller than HI"]),
        ({"--range": ("0", "5")}, ["not allowed for poisson", "0 < LO"]),
        ({"--range": ("1", "nan")}, ["finite"]),
        ({"--grid": "33"}, ["--grid must be an even number >= 16"]),
        ({"--grid": "8"}, ["--grid must be an even number >= 16"]),
        ({"--n-samples": "0"}, ["--n-samples must be positive"]),
        ({"--n-samples": "-4"}, ["--n-samples must be positive"]),
        ({"--seed": "-1"}, ["--seed must be non-negative"]),
        ({"--chunk-size": "0"}, ["--chunk-size must be positive"]),
        ({"--threads": "0"}, ["--threads must be positive"]),
        ({"--n-samples": "many"}, ["--n-samples", "invalid int value"]),
    ],
)
def test_bad_generate_arguments(capsys, tmp_path, replace, phrases):
    argv = _generate_args(tmp_path / "x.h5")
    for flag, value in replace.items():
        if flag in argv:
            i = argv.index(flag)
            width = 2 if flag == "--range" else 1
            argv[i + 1 : i + 1 + width] = [value] if isinstance(value, str) else list(value)
        else:
            argv += [flag, value]
    code, _, err = _run(capsys, *argv)
    _assert_one_sentence(code, err, *phrases)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    ("system", "lo", "hi", "phrase"),
    [
        ("advdiff", "0", "1", "not allowed for advdiff"),
        ("advdiff", "1", "1e4", "not allowed for advdiff"),
        ("helmholtz", "0", "10", "not allowed for helmholtz"),
        ("helmholtz", "1.5", "10", "whole numbers"),
    ],
)
def test_bad_ranges_per_system(capsys, tmp_path, system, lo, hi, phrase):
    argv = _generate_args(tmp_path / "x.h5")
    argv[argv.index("--system") + 1] = system
    i = argv.index("--range")
    argv[i + 1 : i + 3] = [lo, hi]
    code, _, err = _run(capsys, *argv)
    _assert_one_sentence(code, err, phrase)


def test_existing_output_without_force(capsys, train_file):
    code, _, err = _run(capsys, *_generate_args(train_file))
    _assert_one_sentence(code, err, "already exists", "--force")


def _bad_inputs(tmp_path, train_file) -> dict[str, tuple]:
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(train_file.read_bytes()[:3000])
    wrong = tmp_path / "wrong.h5"
    shutil.copy(train_file, wrong)
    with h5py.File(wrong, "r+") as h5:
        del h5["fields"]
        h5["fields"] = np.zeros((6, 2, 16, 15), np.float32)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["data"] = np.zeros(3)
    return {
        "missing": (tmp_path / "missing.h5", "does not exist"),
        "text": (text, "not a readable HDF5 file"),
        "truncated": (truncated, "truncated or corrupt"),
        "wrong shape": (wrong, "'fields' has shape"),
        "foreign": (foreign, "not a pdetransfer dataset"),
    }


@pytest.mark.parametrize("command", ["stats", "check"])
def test_unreadable_inputs(capsys, tmp_path, train_file, command):
    for path, phrase in _bad_inputs(tmp_path, train_file).values():
        argv = [command, str(path)] + (
            ["--out", str(tmp_path / "s.json")] if command == "stats" else []
        )
        code, _, err = _run(capsys, *argv)
        _assert_one_sentence(code, err, str(path.name), phrase)
    assert not (tmp_path / "s.json").exists()


def test_stats_refuses_a_validation_split(capsys, tmp_path):
    val = tmp_path / "val.h5"
    argv = _generate_args(val)
    argv[argv.index("--split") + 1] = "val"
    assert cli.main(argv) == 0
    code, _, err = _run(capsys, "stats", str(val), "--out", str(tmp_path / "s.json"))
    _assert_one_sentence(code, err, "'val' split", "training files only")
