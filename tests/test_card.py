"""``pdetransfer card``: a dataset's card says what its files, stats and check reports say."""

from __future__ import annotations

import contextlib
import io
import json
import platform
from pathlib import Path

import h5py
import pytest

from pdetransfer.cli import main
from pdetransfer.data.datasets import read_info

SPLITS = {"train": 10, "val": 4, "test": 6}


def _quiet(argv: list[str]) -> str:
    """Run a subcommand, returning what it printed (its progress goes to stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0, argv
    return out.getvalue()


def _generate(split: str, n: int, out: Path, *extra: str) -> list[str]:
    """``pdetransfer generate`` of a small Poisson split."""
    argv = ["generate", "--system", "poisson", "--split", split, "--n-samples", str(n)]
    return [*argv, "--grid", "16", "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Poisson dataset as the workflow lays it out: splits, check reports, stats."""
    folder = tmp_path_factory.mktemp("data") / "poisson_2_4"
    for split, n in SPLITS.items():
        h5 = folder / f"{split}.h5"
        _quiet(_generate(split, n, h5, "--range", "2", "4", "--seed", "3"))
        (folder / f"{split}.check.txt").write_text(_quiet(["check", str(h5)]))
    _quiet(["stats", str(folder / "train.h5"), "--out", str(folder / "stats.json")])
    return folder


def _card(folder: Path, *extra: str, splits: tuple[str, ...] = tuple(SPLITS)) -> list[str]:
    return [
        "card",
        "--name",
        folder.name,
        "--data",
        *(str(folder / f"{s}.h5") for s in splits),
        "--checks",
        *(str(folder / f"{s}.check.txt") for s in splits),
        "--out",
        str(folder / "card.md"),
        *extra,
    ]


def test_card_shows_system_range_grid_sizes_seeds_generation_stats_and_check(
    dataset: Path,
) -> None:
    html = dataset / "card.html"
    _quiet(_card(dataset, "--stats", str(dataset / "stats.json"), "--html", str(html)))
    card = (dataset / "card.md").read_text()
    assert card.startswith("# Dataset poisson_2_4\n")
    assert "poisson: e in [2, 4] on a 16 x 16 periodic grid; train 10, val 4, test 6 samples." in (
        card
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in card.splitlines()}
    for split, n in SPLITS.items():
        info = read_info(dataset / f"{split}.h5")
        generation = json.loads(info.attrs["generation"])
        row = rows[split]
        assert row.startswith(f"| {split} | {n} | {info.seed} | ")  # derived seed
        assert f"| {generation['seconds']:.1f} s |" in row
        assert f"| {platform.node()}, " in row and f"{generation['threads']} thread" in row
        assert row.endswith(f"| {generation['finished_utc']} | passed |")
        assert (dataset / f"{split}.check.txt").read_text().splitlines()[1] in card
    assert rows["base seed"] == "| base seed | 3 |"
    stats = json.loads((dataset / "stats.json").read_text())
    assert f"| {stats['source_norm_median']:.4g} | " in card
    assert "## Other attributes" not in card  # everything a generated file says is shown
    page = html.read_text()
    assert "<h1>Dataset poisson_2_4</h1>" in page and "<td>passed</td>" in page


def test_unknown_attributes_are_listed_and_missing_provenance_is_said(
    dataset: Path, tmp_path: Path
) -> None:
    """Attributes the card does not know (an imported dataset's provenance, say) appear as
    they are; a file without a generation record says so instead of failing."""
    folder = tmp_path / dataset.name
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.h5").write_bytes((dataset / f"{split}.h5").read_bytes())
        (folder / f"{split}.check.txt").write_text("x.h5: ...\n  FAILED (1 problems)\n")
    with h5py.File(folder / "train.h5", "r+") as h5:
        h5.attrs["source"] = "https://example.org/darcy.h5"
        h5.attrs["source_sha256"] = "ab" * 32
        del h5.attrs["generation"]
    _quiet(_card(folder, splits=("train", "test")))
    card = (folder / "card.md").read_text()
    assert "## Other attributes" in card
    assert "| source | https://example.org/darcy.h5 |  |" in card
    assert f"| source_sha256 | {'ab' * 32} |  |" in card
    train = next(line for line in card.splitlines() if line.startswith("| train | 10 |"))
    assert "| not recorded | not recorded |" in train and train.endswith("| FAILED |")
    assert "## Normalisation statistics" not in card  # no --stats given


def test_bad_inputs_are_one_sentence(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.h5"
    _quiet(_generate("val", 2, other, "--range", "2", "5"))
    argv = ["card", "--name", "mixed_up", "--out", str(tmp_path / "card.md"), "--data"]
    assert main([*argv, str(dataset / "train.h5"), str(other)]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main([*argv, str(dataset / "train.h5"), "--checks", "a.txt", "b.txt"]) == 2
    assert "--checks needs one report per --data file (1), got 2" in capsys.readouterr().err
    assert not (tmp_path / "card.md").exists()
