"""Where the study's files live below the results root, as templates, and runs read back from
their directories by field name.

The workflow's rules (``workflow/rules/common.smk``), the study's enumeration of runs and the
tables all format these templates, so a path is spelled once. A run directory is derived from
its mode (:mod:`pdetransfer.modes`): ``runs/<mode>/[<pretrain>/]<size>/<downstream>`` for the
cell, then ``n<N>/lr<lr>/s<seed>`` for a mode that trains. A run that refinement added to a
cell (``sweep.refine``, :mod:`pdetransfer.study.refinement`) names its step cap too,
``lr<lr>/cap<cap>/s<seed>``, so a longer-cap rerun of a rate never overwrites the grid's runs
and the grid's paths stay as they were; the cell's decisions are ``refine/round<k>.json`` in
its directory. Runs that start from a pre-trained checkpoint live under its entry; the others
depend on no pre-training and are shared by every experiment with the same downstream
dataset. Paths are relative to the results root.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdetransfer.errors import UserError
from pdetransfer.modes import MODES, Mode

#: Names of datasets, sizes, pre-trainings and experiments: each becomes a path component.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
#: What each field of a template may hold (the workflow's wildcard constraints use them too).
FIELD_PATTERNS = {
    "pretrain": NAME_PATTERN,
    "size": NAME_PATTERN,
    "downstream": NAME_PATTERN,
    "n": r"[1-9][0-9]*",
    "lr": r"[0-9][0-9.e+-]*",
    "seed": r"[0-9]+",
    "cap": r"[1-9][0-9]*",
    "round": r"[1-9][0-9]*",
}

DATASET_FILE = "data/{dataset}/{split}.h5"
DATASET_CHECK = "data/{dataset}/{split}.check.txt"
DATASET_STATS = "data/{dataset}/stats.json"
MIXED_STATS = "pretrain/{pretrain}/stats.json"
PRETRAIN_DIR = "pretrain/{pretrain}/{size}"
PRETRAINED_MODEL = f"{PRETRAIN_DIR}/model.pt"
RUNS = "runs"
#: One member of a cell (a learning rate and seed), below the cell's directory.
MEMBER = "lr{lr}/s{seed}"
#: The runs refinement adds to a cell at one rate and step cap (one job when packed)...
ADDED_GROUP = "lr{lr}/cap{cap}"
#: ...and one of them (a seed below the group).
SEED_DIR = "s{seed}"
ADDED_MEMBER = f"{ADDED_GROUP}/{SEED_DIR}"
#: Refinement's decision of round k for a cell, below the cell's directory.
DECISION = "refine/round{round}.json"


def format_lr(lr: float) -> str:
    """The learning rate as it appears in paths: short, exact for typical values, unique.

    ``%g`` keeps 1e-3 as ``0.001`` and 5e-5 as ``5e-05``; parsing it back with ``float``
    gives the same number the config holds (up to 6 significant digits).
    """
    return f"{lr:g}"


def mode_root(mode: Mode) -> str:
    """The directory holding every run of a mode."""
    return f"{RUNS}/{mode.name}"


def cell_template(mode: Mode) -> str:
    """A cell of a mode: its runs differ only by learning rate and seed (one run if it does
    not train)."""
    parts = [mode_root(mode)]
    if mode.needs_pretrained:
        parts.append("{pretrain}")
    parts += ["{size}", "{downstream}"]
    if mode.trains:
        parts.append("n{n}")
    return "/".join(parts)


def run_template(mode: Mode, added: bool = False) -> str:
    """A run directory of a mode: one of the grid's, or (``added``) one refinement added."""
    cell = cell_template(mode)
    if not mode.trains:
        return cell
    return f"{cell}/{ADDED_MEMBER if added else MEMBER}"


def run_templates(mode: Mode) -> list[str]:
    """Every layout of a mode's run directories (the grid's, then refinement's)."""
    return (
        [run_template(mode), run_template(mode, added=True)]
        if mode.trains
        else [cell_template(mode)]
    )


def decision_template(mode: Mode) -> str:
    """The refinement decision of round ``{round}`` of a cell of a mode that trains."""
    return f"{cell_template(mode)}/{DECISION}"


def members(lrs: Iterable[str], seeds: Iterable[int]) -> list[str]:
    """The member directories of a cell, relative to it: every learning rate x seed."""
    seeds = list(seeds)
    return [MEMBER.format(lr=lr, seed=seed) for lr in lrs for seed in seeds]


def added_members(seeds: Iterable[int]) -> list[str]:
    """The member directories of a job of runs refinement added, relative to its rate and cap."""
    return [SEED_DIR.format(seed=seed) for seed in seeds]


def _regex(template: str, named: bool) -> str:
    """A template as a regex, each field by its pattern (a named group if ``named``)."""
    out = []
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(re.escape(literal))
        if field is not None:
            pattern = FIELD_PATTERNS[field]
            out.append(f"(?P<{field}>{pattern})" if named else f"(?:{pattern})")
    return "".join(out)


def run_pattern() -> str:
    """A regex of every run directory below ``runs/`` (the workflow's ``{run}`` wildcard)."""
    prefix = f"{RUNS}/"
    return "|".join(
        f"(?:{_regex(template.removeprefix(prefix), named=False)})"
        for mode in MODES.values()
        for template in run_templates(mode)
    )


@dataclass(frozen=True)
class Run:
    """One evaluated model of the sweep (a run of a mode that does not train has no n, lr or
    seed; one that does not start from a pre-trained checkpoint has no pretrain; only a run
    that refinement added has a cap)."""

    mode: str
    size: str
    downstream: str
    pretrain: str | None = None
    n: int | None = None
    lr: str | None = None
    seed: int | None = None
    cap: int | None = None

    @property
    def spec(self) -> Mode:
        """The run's mode (:mod:`pdetransfer.modes`)."""
        return MODES[self.mode]

    @property
    def directory(self) -> str:
        """The run directory relative to the results root."""
        return run_template(self.spec, self.cap is not None).format(**self._fields())

    @property
    def cell_directory(self) -> str:
        """The directory of the run's cell (the run's own, for a mode that does not train)."""
        return cell_template(self.spec).format(**self._fields())

    @property
    def trains(self) -> bool:
        """Whether the run trains a model (else it evaluates the checkpoint it starts from)."""
        return self.spec.trains

    @property
    def checkpoint(self) -> str:
        """The model the run evaluates: its own, or the pre-trained one it starts from."""
        if self.trains:
            return f"{self.directory}/model.pt"
        return PRETRAINED_MODEL.format(pretrain=self.pretrain, size=self.size)

    @property
    def test_file(self) -> str:
        """The test split of its downstream dataset."""
        return DATASET_FILE.format(dataset=self.downstream, split="test")

    def _fields(self) -> dict[str, Any]:
        return {
            "pretrain": self.pretrain,
            "size": self.size,
            "downstream": self.downstream,
            "n": self.n,
            "lr": self.lr,
            "seed": self.seed,
            "cap": self.cap,
        }


def parse_run(directory: str) -> Run:
    """The run a directory (relative to the results root) holds, its fields read by name."""
    for mode in MODES.values():
        for template in run_templates(mode):
            found = re.fullmatch(_regex(template, named=True), directory)
            if found is None:
                continue
            fields: dict[str, Any] = found.groupdict()
            for key in ("n", "seed", "cap"):
                if key in fields:
                    fields[key] = int(fields[key])
            return Run(mode.name, **fields)
    layouts = ", ".join(t for mode in MODES.values() for t in run_templates(mode))
    raise UserError(f"{directory!r} is not a run directory (run directories: {layouts})")


@dataclass(frozen=True)
class Jobs:
    """What one training or evaluation job of a mode covers: with ``packed`` a whole cell
    (every member, learning rate x seed), else one run; a mode that does not train has one run
    per cell either way. Paths keep the cell's fields as ``{wildcards}`` and are relative to
    ``root``.

    ``added``: the jobs of the runs refinement adds, one rate and cap of a cell per packed job
    (its members the seeds, below ``lr{lr}/cap{cap}``), else one run of them."""

    root: str
    packed: bool
    members: Sequence[str]
    added: bool = False

    def _packs(self, mode: Mode) -> bool:
        return self.packed and mode.trains

    def directory(self, mode: Mode) -> str:
        """The directory a job of the mode covers: its cell, or one run."""
        if not self._packs(mode):
            return f"{self.root}/{run_template(mode, self.added)}"
        group = f"/{ADDED_GROUP}" if self.added else ""
        return f"{self.root}/{cell_template(mode)}{group}"

    def files(self, mode: Mode, name: str) -> list[str]:
        """One file of every run a job of the mode writes or reads."""
        directory = self.directory(mode)
        if self._packs(mode):
            return [f"{directory}/{member}/{name}" for member in self.members]
        return [f"{directory}/{name}"]

    def runs(self, mode: Mode) -> int:
        """Runs per job of the mode."""
        return len(self.members) if self._packs(mode) else 1

    def checkpoints(self, mode: Mode) -> list[str]:
        """The models a job of the mode evaluates: its runs' own, or the pre-trained one."""
        if mode.trains:
            return self.files(mode, "model.pt")
        return [f"{self.root}/{PRETRAINED_MODEL}"]

    def log(self, mode: Mode, tree: str, name: str) -> str:
        """A job's log or benchmark: its directory, moved under ``<root>/<tree>``."""
        relative = self.directory(mode).removeprefix(f"{self.root}/")
        return f"{self.root}/{tree}/{relative}/{name}"

    def start(self, mode: Mode) -> tuple[str, str]:
        """How ``pdetransfer train`` is told what a training job of the mode starts from: its
        flag and file (the pre-trained checkpoint, or the downstream set's statistics)."""
        if mode.needs_pretrained:
            return "--init", f"{self.root}/{PRETRAINED_MODEL}"
        return "--stats", f"{self.root}/{DATASET_STATS.format(dataset='{downstream}')}"


# ---------------------------------------------------------------- a study's own outputs
#: A named study (config key ``study``) keeps its own outputs (study file, tables, plots,
#: partial tables, tracking export, their logs and benchmarks) below this folder, so several
#: studies share one results root and its datasets, pre-trainings and runs; an unnamed study
#: keeps them directly below the root.
STUDIES = "studies"
STUDY_FILE = "study.json"
TABLES_DIR = "tables"
PLOTS_DIR = "plots"
PARTIAL_DIR = "partial"
LOGS_DIR = "logs"
BENCHMARKS_DIR = "benchmarks"
TRACKING_EXPORT = "tracking/export.json"


def study_root(name: str | None) -> str:
    """The folder of a study's own outputs relative to the results root ('' when unnamed)."""
    return f"{STUDIES}/{name}" if name else ""


def study_path(name: str | None, path: str) -> str:
    """One of a study's own outputs (``tables/runs.csv``) relative to the results root."""
    root = study_root(name)
    return f"{root}/{path}" if root else path


def study_files(results: str | Path) -> dict[str | None, Path]:
    """The study file of every study recorded below a results root, by name (None: the
    unnamed study's)."""
    results = Path(results)
    found: dict[str | None, Path] = {}
    if (results / STUDY_FILE).is_file():
        found[None] = results / STUDY_FILE
    for path in sorted(results.glob(f"{STUDIES}/*/{STUDY_FILE}")):
        found[path.parent.name] = path
    return found
