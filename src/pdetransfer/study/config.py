"""The study a config describes: which datasets, checkpoints and runs it needs, and where.

The Snakemake workflow (``workflow/rules/common.smk``) and the aggregation/plotting commands
both enumerate runs from the same validated config through this module, so the files the
workflow builds and the files the tables read can never disagree. The config's *shape* (types,
unknown keys, defaults) is checked by the JSON schema in ``workflow/schemas``; this module
checks what a schema cannot: names that refer to other entries, N versus the train set, and
(through :mod:`pdetransfer.study.validation`) every rule a job would apply to its arguments.
Every problem is reported as a :class:`ConfigError` naming the offending key.

Which runs a cell has follows the modes (:mod:`pdetransfer.modes`), and where they live the
run layout (:mod:`pdetransfer.layout`): one run per (mode, source, size, downstream dataset,
N, learning rate, seed), a mode that trains nothing having one run per cell.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pdetransfer import __version__
from pdetransfer.atomic import write_json
from pdetransfer.engine.models.registry import split_size
from pdetransfer.errors import UserError
from pdetransfer.layout import NAME_PATTERN, Run, cell_template, format_lr
from pdetransfer.modes import MODES, Mode
from pdetransfer.study.validation import (
    ConfigError,
    check_ranges,
    check_refine,
    check_runnable,
    resolve_datasets,
)


class Study:
    """A validated (schema-checked, defaults filled) config, checked for consistency."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        # Imported entries completed with their system and range (see resolve_datasets).
        self.datasets: dict[str, dict[str, Any]] = resolve_datasets(config["datasets"])
        self.sizes: dict[str, str] = dict(config["sizes"])
        self.pretrain: dict[str, list[str]] = {k: list(v) for k, v in config["pretrain"].items()}
        self.experiments: dict[str, dict[str, Any]] = dict(config["experiments"])
        sweep = config["sweep"]
        self.n_values: list[int] = [int(n) for n in sweep["n"]]
        self.lrs: list[str] = [format_lr(float(lr)) for lr in sweep["lr"]]
        self.seeds: list[int] = [int(s) for s in sweep["seeds"]]
        self.modes: list[str] = list(sweep["modes"])
        #: The study's name (config key ``study``): its own outputs live under
        #: ``studies/<name>/`` (:func:`pdetransfer.layout.study_root`); None keeps them at the
        #: results root.
        self.name: str | None = config.get("study")
        refine = sweep.get("refine") or {}  # absent from study files of older versions
        #: sweep.refine when enabled (rounds, lr_bounds), else None.
        self.refine: dict[str, Any] | None = dict(refine) if refine.get("enabled") else None
        self._check()

    # ------------------------------------------------------------------ consistency checks
    def _check(self) -> None:
        """Raise :class:`ConfigError` naming the key of the first inconsistency found."""
        named = [self.name] if self.name is not None else []
        for name in (*self.datasets, *self.sizes, *self.pretrain, *self.experiments, *named):
            if not re.fullmatch(NAME_PATTERN, str(name)):
                raise ConfigError(
                    f"name {name!r} must match {NAME_PATTERN} (it becomes a path component)"
                )
        check_ranges(self)
        for name, members in self.pretrain.items():
            if not members:
                raise ConfigError(f"config key 'pretrain.{name}' is an empty list of datasets")
            for ds in members:
                self._need_dataset(ds, f"pretrain.{name}")
            grids = {self.datasets[ds]["grid"] for ds in members}
            if len(grids) > 1:
                raise ConfigError(
                    f"config key 'pretrain.{name}': mixed datasets must share one grid, got "
                    f"{sorted(grids)}"
                )
        if not self.experiments:
            raise ConfigError("config key 'experiments' defines no experiment")
        for name, exp in self.experiments.items():
            key = f"experiments.{name}"
            if exp["pretrain"] not in self.pretrain:
                raise ConfigError(
                    f"config key '{key}.pretrain': {exp['pretrain']!r} is not a pre-training "
                    f"entry (defined: {', '.join(self.pretrain) or 'none'})"
                )
            if not exp["downstream"]:
                raise ConfigError(f"config key '{key}.downstream' is an empty list")
            for ds in exp["downstream"]:
                self._need_dataset(ds, f"{key}.downstream")
            sizes = exp.get("sizes")
            if sizes is not None:
                if not sizes:
                    raise ConfigError(f"config key '{key}.sizes' is an empty list")
                for size in sizes:
                    if size not in self.sizes:
                        raise ConfigError(
                            f"config key '{key}.sizes': {size!r} is not a model size "
                            f"(defined: {', '.join(self.sizes)})"
                        )
        for key, values in (
            ("sweep.n", self.n_values),
            ("sweep.lr", self.lrs),
            ("sweep.seeds", self.seeds),
            ("sweep.modes", self.modes),
        ):
            if not values:
                raise ConfigError(f"config key '{key}' is an empty list")
            if len(set(values)) != len(values):
                raise ConfigError(f"config key '{key}' has duplicate values: {values}")
        check_refine(self)
        for name in self.modes:
            if name not in MODES:
                raise ConfigError(
                    f"config key 'sweep.modes': {name!r} is not a mode ({', '.join(MODES)})"
                )
        if self.trains():
            for name, exp in self.experiments.items():
                for ds in exp["downstream"]:
                    n_train = int(self.datasets[ds]["train"])
                    too_big = [n for n in self.n_values if n > n_train]
                    if too_big:
                        raise ConfigError(
                            f"config key 'sweep.n': N={too_big[0]} exceeds the train set of "
                            f"dataset {ds!r} (datasets.{ds}.train = {n_train}, used by "
                            f"experiments.{name})"
                        )
        report = self.config["report"]
        for n in report.get("size_n") or []:
            if n not in self.n_values:
                raise ConfigError(f"config key 'report.size_n': {n} is not one of sweep.n")
        gallery_n = report["gallery"].get("n")
        if gallery_n is not None and gallery_n not in self.n_values:
            raise ConfigError(f"config key 'report.gallery.n': {gallery_n} is not one of sweep.n")
        check_runnable(self)

    def _need_dataset(self, name: str, key: str) -> None:
        if name not in self.datasets:
            raise ConfigError(
                f"config key '{key}': dataset {name!r} is not defined under 'datasets' "
                f"(defined: {', '.join(self.datasets)})"
            )

    # ------------------------------------------------------------------ enumeration
    def study_modes(self) -> list[Mode]:
        """The study's modes, in the order of the mode table (not of ``sweep.modes``)."""
        return [mode for name, mode in MODES.items() if name in self.modes]

    def trains(self) -> bool:
        """Whether some mode trains on the downstream sets."""
        return any(mode.trains for mode in self.study_modes())

    def builds_pretraining(self) -> bool:
        """Whether some mode starts from a pre-trained checkpoint."""
        return any(mode.needs_pretrained for mode in self.study_modes())

    def model(self, size: str) -> tuple[str, str]:
        """The architecture and the ``--model`` size a ``sizes`` entry names (an FNO's unless
        it is written ``"architecture:size"``)."""
        return split_size(self.sizes[size])

    def experiment_sizes(self, experiment: str) -> list[str]:
        """Model sizes of an experiment (all sizes, in config order, unless it lists some)."""
        sizes = self.experiments[experiment].get("sizes")
        return list(sizes) if sizes else list(self.sizes)

    def is_mixed(self, pretrain: str) -> bool:
        """Whether a pre-training entry mixes several datasets (mixed physics)."""
        return len(self.pretrain[pretrain]) > 1

    def pretrain_jobs(self) -> list[tuple[str, str]]:
        """(pre-training entry, size) pairs some experiment fine-tunes or evaluates."""
        if not self.builds_pretraining():
            return []
        return _unique(
            (exp["pretrain"], size)
            for name, exp in self.experiments.items()
            for size in self.experiment_sizes(name)
        )

    def used_pretrain_entries(self) -> list[str]:
        """Pre-training entries whose checkpoints the study builds."""
        return _unique(p for p, _ in self.pretrain_jobs())

    def used_datasets(self) -> list[str]:
        """Datasets the study generates: downstream ones and those of built pre-trainings."""
        return list(self.dataset_splits())

    def dataset_splits(self) -> dict[str, list[str]]:
        """The splits of each dataset that some job reads.

        A pre-training set's test split is generated only if it is also a downstream set;
        train and val splits only if something trains on them.
        """
        splits: dict[str, set[str]] = {}
        for p in self.used_pretrain_entries():
            for ds in self.pretrain[p]:
                splits.setdefault(ds, set()).update(("train", "val"))
        wanted = ("train", "val", "test") if self.trains() else ("test",)
        for exp in self.experiments.values():
            for ds in exp["downstream"]:
                splits.setdefault(ds, set()).update(wanted)
        order = ("train", "val", "test")
        return {ds: [s for s in order if s in found] for ds, found in splits.items()}

    def experiment_runs(self, experiment: str) -> list[Run]:
        """Every run one experiment shows (its scratch runs included)."""
        exp = self.experiments[experiment]
        runs: list[Run] = []
        for size in self.experiment_sizes(experiment):
            for ds in exp["downstream"]:
                runs.extend(self.cell_runs(exp["pretrain"], size, ds))
        return runs

    def cell_runs(self, pretrain: str, size: str, downstream: str) -> list[Run]:
        """The runs of every mode from one pre-training entry on one dataset: the modes that
        train nothing first (one run each), then each training mode's sweep."""
        runs: list[Run] = []
        for mode in sorted(self.study_modes(), key=lambda mode: mode.trains):
            source = pretrain if mode.needs_pretrained else None
            if not mode.trains:
                runs.append(Run(mode.name, size, downstream, pretrain=source))
                continue
            runs.extend(
                Run(mode.name, size, downstream, pretrain=source, n=n, lr=lr, seed=seed)
                for n in self.n_values
                for lr in self.lrs
                for seed in self.seeds
            )
        return runs

    def runs(self) -> list[Run]:
        """Every run of the study once (runs of a shared mode, scratch, appear once): the
        grid's, not those refinement adds (:mod:`pdetransfer.study.refinement`)."""
        return _unique(run for name in self.experiments for run in self.experiment_runs(name))

    def cells(self) -> list[str]:
        """The cell directory of every run (what two studies in one results root may share)."""
        return _unique(
            cell_template(run.spec).format(
                pretrain=run.pretrain, size=run.size, downstream=run.downstream, n=run.n
            )
            for run in self.runs()
        )

    def record(self) -> dict[str, Any]:
        """The study file's content: the resolved config and what the study builds (the
        tables read the config; another study in the same results root reads the rest to
        find what the two share)."""
        runs = self.runs()
        return {
            "config": self.config,
            "datasets": self.used_datasets(),
            "pretrain_checkpoints": [list(job) for job in self.pretrain_jobs()],
            "cells": self.cells(),
            "runs": {name: sum(r.mode == name for r in runs) for name in MODES},
            "pdetransfer_version": __version__,
        }

    def trained_cells(self) -> list[Run]:
        """One grid run (the first) of every cell of a mode that trains: the cells refinement
        decides on, each named by its run's cell fields."""
        firsts: dict[str, Run] = {}
        for run in self.runs():
            if run.trains:
                firsts.setdefault(run.cell_directory, run)
        return list(firsts.values())

    # ------------------------------------------------------------------ report selections
    def ood_experiments(self) -> list[str]:
        """Experiments with a series of downstream datasets from a single-system pre-training."""
        return [
            name
            for name, exp in self.experiments.items()
            if len(exp["downstream"]) > 1 and not self.is_mixed(exp["pretrain"])
        ]

    def mixed_experiments(self) -> list[str]:
        """Experiments that fine-tune a mixed-physics pre-training."""
        return [name for name, exp in self.experiments.items() if self.is_mixed(exp["pretrain"])]

    def scaling_experiments(self) -> list[str]:
        """Experiments with more than one model size (error-versus-size plots)."""
        return [name for name in self.experiments if len(self.experiment_sizes(name)) > 1]

    def size_n(self) -> list[int]:
        """N values of the error-versus-size plot (default: the smallest and largest N)."""
        chosen = self.config["report"].get("size_n")
        return list(chosen) if chosen else _unique([min(self.n_values), max(self.n_values)])

    def gallery_experiment(self, downstream: str) -> str:
        """The experiment a dataset's gallery shows: the first (config order) that uses it."""
        return next(
            name for name, exp in self.experiments.items() if downstream in exp["downstream"]
        )

    def gallery_datasets(self) -> list[str]:
        """Downstream datasets, each with one gallery."""
        return _unique(ds for exp in self.experiments.values() for ds in exp["downstream"])

    def gallery_runs(self, experiment: str, downstream: str) -> list[Run]:
        """Runs whose test predictions the gallery shows: largest size, gallery N, first seed.

        All learning rates are predicted so the gallery can show the best one by validation
        error without the DAG having to know it in advance.
        """
        exp = self.experiments[experiment]
        size = self.experiment_sizes(experiment)[-1]
        n = self.config["report"]["gallery"].get("n") or min(self.n_values)
        return [
            run
            for run in self.cell_runs(exp["pretrain"], size, downstream)
            if not run.trains or (run.n == n and run.seed == self.seeds[0])
        ]

    def compare_pretrain(self, experiment: str, downstream: str) -> list[str]:
        """Single-system pre-trainings fine-tuned on the same dataset (mixed-physics panel)."""
        size = self.experiment_sizes(experiment)[-1]
        return _unique(
            exp["pretrain"]
            for name, exp in self.experiments.items()
            if name != experiment
            and not self.is_mixed(exp["pretrain"])
            and downstream in exp["downstream"]
            and size in self.experiment_sizes(name)
        )


def _unique(items: Iterable[Any]) -> list[Any]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


def study_command(args: argparse.Namespace) -> int:
    """``pdetransfer study``: check a resolved config and record it as the study file.

    The workflow passes its validated config (schema defaults filled) as JSON; the study file
    is what ``aggregate`` and ``plot`` read, so they enumerate exactly the workflow's runs.
    """
    try:
        config = json.loads(args.config_json)
    except json.JSONDecodeError as err:
        raise UserError(f"--config-json is not valid JSON ({err.msg})") from None
    if not isinstance(config, dict):
        raise UserError("--config-json must be a JSON object (the workflow's config)")
    try:
        study = Study(config)
    except KeyError as err:
        raise UserError(
            f"--config-json lacks key {err}: pass the workflow's validated config"
        ) from None
    record = study.record()
    write_json(args.out, record)
    print(f"study: {sum(record['runs'].values())} runs of {len(study.experiments)} experiments")
    return 0
