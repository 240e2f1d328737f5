"""What a config must satisfy before any job runs: its schema, and every rule a job enforces.

A study of thousands of jobs should not fail hours in because a generate or train job rejects
an argument the config gave it. So each rule a job applies to its arguments is checked here,
when Snakemake reads the config, through the very function the job calls (the parameter range
through :func:`pdetransfer.data.systems.range_problem`, the reachable advection ratio through
:func:`pdetransfer.data.systems.advdiff_reach`, an imported dataset's files through
:func:`pdetransfer.data.import_spec.inspect`, a size against a grid through
:func:`pdetransfer.engine.models.registry.resolution_problem`), so the check and the job cannot
disagree. Cross-references (names, N versus train sets) are :class:`~pdetransfer.study.config.Study`'s.

Numbers: YAML 1.1 (PyYAML, hence Snakemake's ``--configfile``) reads ``1e-3`` as a string,
and Snakemake parses nested ``--config`` values with YAML's BaseLoader, which leaves every
scalar a string. :func:`coerce_numbers` turns such strings into numbers wherever the schema
expects one, before the schema is checked, so users can write numbers the way they read them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdetransfer.data import datasets, import_spec, systems
from pdetransfer.engine.models.registry import parse_model, resolution_problem, split_size
from pdetransfer.errors import UserError

if TYPE_CHECKING:
    from pdetransfer.study.config import Study

# Numbers as YAML 1.2 and JSON write them (1e-3, 5E-4, .5, 1.0e-3), which YAML 1.1 misses.
_INTEGER = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
# Advection-diffusion samples whose reachable Psi is computed when the config is read: all of
# a split up to this many grid points (4096 samples at 32x32), else its first ones.
REACH_PROBE_POINTS = 2**22


class ConfigError(UserError):
    """A config that does not describe a runnable study; the message names the key."""


# ---------------------------------------------------------------------------- schema
def coerce_numbers(
    data: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None
) -> Any:
    """``data`` with number-like strings turned into numbers (and ``true``/``false`` into
    booleans) where ``schema`` expects one.

    Containers are changed in place (Snakemake's ``config`` object must stay the same object)
    and returned; a scalar is returned converted or as it was. Strings the schema does not
    want as numbers (names, size specs such as ``"2,4"``) are left alone.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(data, str):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "integer" in types and _INTEGER.fullmatch(data):
            return int(data)
        if "number" in types and _NUMBER.fullmatch(data):
            return int(data) if _INTEGER.fullmatch(data) else float(data)
        if "boolean" in types and data.lower() in ("true", "false"):
            return data.lower() == "true"
        return data
    if isinstance(data, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in data.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                data[key] = coerce_numbers(value, sub, root)
        return data
    if isinstance(data, list) and isinstance(schema.get("items"), Mapping):
        for i, value in enumerate(data):
            data[i] = coerce_numbers(value, schema["items"], root)
    return data


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """A schema node with its local ``$ref`` (``#/$defs/NAME``) followed."""
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def check_schema(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for the config's most relevant schema violation, by key.

    Snakemake's own ``validate`` reports where in the schema a check failed, not where in the
    config; this names the config key (``sweep.lr[1]``) so the user knows what to edit.
    """
    import jsonschema  # a Snakemake dependency; only the workflow checks schemas

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    path = list(error.absolute_path)
    message = error.message
    if error.validator == "required":  # name the missing key itself, not its parent
        path.append(next(k for k in error.validator_value if k not in error.instance))
        message = "is required but missing"
    raise ConfigError(f"config key '{key_name(path)}': {message}")


def key_name(path: Sequence[Any]) -> str:
    """A config location as users write it: ``datasets.a.range[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


# ---------------------------------------------------------------------------- job rules
def resolve_datasets(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every dataset entry with its system and range, as the study's tables and plots read them.

    Generated entries must name both; an imported entry (``source``) is parsed as ``pdetransfer
    import`` will parse it and completed from it (a Darcy file's range is [beta, beta]; an
    external system without a stated range has None).
    """
    resolved = {}
    for name, ds in entries.items():
        if import_spec.is_imported(ds):
            try:
                spec = import_spec.parse_entry(ds, f"datasets.{name}")
            except UserError as err:
                raise ConfigError(str(err)) from None
            stated = spec.range_or_beta()
            resolved[name] = {**ds, "system": spec.system, "range": stated and list(stated)}
            continue
        for key in ("system", "range"):
            if key not in ds:
                raise ConfigError(
                    f"config key 'datasets.{name}.{key}': is required but missing (or give a "
                    "source to import the dataset from files)"
                )
        if ds["system"] not in systems.SYSTEMS:
            raise ConfigError(
                f"config key 'datasets.{name}.system': {ds['system']} data cannot be generated, "
                "only imported (give a source)"
            )
        resolved[name] = dict(ds)
    return resolved


def check_ranges(study: Study) -> None:
    """Each generated dataset's range as ``pdetransfer generate`` will judge it."""
    for name, ds in study.datasets.items():
        if import_spec.is_imported(ds):
            continue
        lo, hi = ds["range"]
        problem = systems.range_problem(ds["system"], lo, hi)
        if problem is not None:
            raise ConfigError(f"config key 'datasets.{name}.range': [{lo:g}, {hi:g}] {problem}")


def check_refine(study: Study) -> None:
    """``sweep.refine``: its rate bounds are an interval that holds the grid's own rates."""
    if study.refine is None:
        return
    lo, hi = (float(x) for x in study.refine["lr_bounds"])
    if not lo < hi:
        raise ConfigError(
            f"config key 'sweep.refine.lr_bounds': [{lo:g}, {hi:g}] is not an interval (low < high)"
        )
    outside = [lr for lr in study.lrs if not lo <= float(lr) <= hi]
    if outside:
        raise ConfigError(
            f"config key 'sweep.refine.lr_bounds': sweep.lr {outside[0]} lies outside "
            f"[{lo:g}, {hi:g}]; widen the bounds or drop the rate"
        )


def check_runnable(study: Study) -> None:
    """Every rule a job applies to what the config gives it (after the cross-references)."""
    _check_sources(study)
    _check_grids(study)
    _check_sizes(study)
    _check_batches(study)
    _check_reachable(study)


def _check_sources(study: Study) -> None:
    """Imported datasets' files as ``pdetransfer import`` will open them (keys, shapes, grid,
    sizes; the values, checksum and residual are the import's to judge)."""
    for name, ds in study.datasets.items():
        if import_spec.is_imported(ds):
            try:
                import_spec.inspect(import_spec.parse_entry(ds, f"datasets.{name}"))
            except UserError as err:
                raise ConfigError(f"config key 'datasets.{name}.source': {err}") from None


def _check_grids(study: Study) -> None:
    """Fine-tuned and zero-shot models meet their downstream data on the pre-training grid."""
    if not study.builds_pretraining():
        return
    for name, exp in study.experiments.items():
        entry = exp["pretrain"]
        grid = study.datasets[study.pretrain[entry][0]]["grid"]
        for ds in exp["downstream"]:
            if study.datasets[ds]["grid"] != grid:
                raise ConfigError(
                    f"config key 'experiments.{name}.downstream': dataset {ds!r} is on a "
                    f"{study.datasets[ds]['grid']} grid but pre-training {entry!r} on {grid}; "
                    "a model is fine-tuned and evaluated on the grid it was trained on"
                )


def _check_sizes(study: Study) -> None:
    """Every size parses, and resolves on the grid of every dataset it trains or runs on."""
    specs = {}
    for size, text in study.sizes.items():
        try:
            architecture, model = split_size(text)
            specs[size] = parse_model(model, 1, architecture)
        except UserError as err:
            raise ConfigError(f"config key 'sizes.{size}': {err}") from None
    for name, exp in study.experiments.items():
        used = list(exp["downstream"])
        if study.builds_pretraining():
            used = [*study.pretrain[exp["pretrain"]], *used]
        for size in study.experiment_sizes(name):
            for ds in used:
                grid = study.datasets[ds]["grid"]
                problem = resolution_problem(specs[size], grid)
                if problem is not None:
                    raise ConfigError(
                        f"config key 'sizes.{size}': {study.sizes[size]!r} {problem} (dataset "
                        f"{ds!r} of experiments.{name}); use a smaller size or a finer grid"
                    )


def _check_batches(study: Study) -> None:
    """A batch is split over a job's processes (one per GPU), so it must have one sample each.

    A batch size above N is no error: training then uses all N samples as one batch.
    """
    training = study.config["training"]
    resources = study.config["resources"]
    checks = []
    if study.trains():
        checks += [("train", "downstream", n, "sweep.n") for n in study.n_values]
    if study.builds_pretraining():
        for entry in study.used_pretrain_entries():
            n_total = sum(int(study.datasets[ds]["train"]) for ds in study.pretrain[entry])
            checks.append(("pretrain", "pretrain", n_total, f"pretrain.{entry}"))
    for stage, recipe, n, where in checks:
        processes = max(1, int(resources[stage]["gpu"]))
        batch = min(int(training[recipe]["batch_size"]), n)
        if batch < processes:
            raise ConfigError(
                f"config key 'resources.{stage}.gpu': {processes} GPUs each need a share of the "
                f"batch, but {where} trains on batches of {batch} samples (training.{recipe}"
                f".batch_size, at most N = {n}); use fewer GPUs or larger N"
            )


def _check_reachable(study: Study) -> None:
    """Advection-diffusion targets the root finder can reach, for the samples the jobs draw.

    Which Psi is reachable depends on each sample's source (its energy in modes that carry no
    advection), so the check evaluates the dataset's own samples, from the same seeds and with
    the same function as ``pdetransfer generate``: exact for a split of up to
    ``REACH_PROBE_POINTS`` grid points, its first samples for a larger one.
    """
    seed = int(study.config["data_seed"])
    for name, splits in study.dataset_splits().items():
        ds = study.datasets[name]
        if ds["system"] != "advdiff" or import_spec.is_imported(ds):
            continue
        lo, hi = (float(x) for x in ds["range"])
        grid = int(ds["grid"])
        for split in splits:
            n = min(int(ds[split]), max(1, REACH_PROBE_POINTS // (grid * grid)))
            derived = datasets.derive_seed(seed, "advdiff", (lo, hi), split)
            target, reachable = systems.advdiff_reach(derived, grid, n, (lo, hi))
            short = [i for i in range(n) if target[i] > reachable[i]]
            if short:
                i = short[0]
                raise ConfigError(
                    f"config key 'datasets.{name}.range': Psi {target[i]:.4g} (sample {i} of "
                    f"the {split} split) cannot be reached on a {grid}x{grid} grid, where that "
                    f"source allows at most {reachable[i]:.4g}; use a finer grid or a lower range"
                )


# ---------------------------------------------------------------------------- shared roots
#: Named entries two studies in one results root must define alike (their files are shared).
SHARED_ENTRIES = ("datasets", "sizes", "pretrain")
#: Settings two studies must agree on where they share what the setting shapes: the datasets
#: both generate, the pre-trainings both build, the run cells both hold (a training job's
#: params; with sweep.pack a cell's job trains every learning rate x seed of the sweep).
SHARED_SETTINGS = (
    ("data_seed", "datasets"),
    ("training.pretrain", "pretrain_checkpoints"),
    ("training.checkpoint_every", "pretrain_checkpoints"),
    ("training.downstream", "cells"),
    ("training.checkpoint_every", "cells"),
    ("evaluation", "cells"),
    ("sweep.lora_rank", "cells"),
    ("sweep.pack", "cells"),
    ("report.gallery.samples", "cells"),
)
PACKED_SETTINGS = ("sweep.lr", "sweep.seeds")
#: Settings a refinement decision of a cell reads (its grid, its rounds and bounds, the
#: undertrained rule): two studies that share a cell and either refines must agree on them, or
#: one would read the other's decision files as its own.
REFINE_SETTINGS = ("sweep.refine", "sweep.lr", "sweep.seeds", "report.undertrained_tolerance")


def _label(name: str | None) -> str:
    return f"study {name!r}" if name is not None else "the unnamed study"


def _setting(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def sharing_conflict(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str | None:
    """The first config key two study records (``Study.record``) disagree on although their
    studies share the files it shapes; None when they can share one results root. A record
    written before ``cells`` existed shares no cells as far as this can tell."""
    mine, other = ours["config"], theirs["config"]
    for section in SHARED_ENTRIES:
        for name in sorted(set(mine[section]) & set(other.get(section, {}))):
            if mine[section][name] != other[section][name]:
                return f"{section}.{name}"
    shared = {
        what: set(map(str, ours.get(what, []))) & set(map(str, theirs.get(what, [])))
        for what in ("datasets", "pretrain_checkpoints", "cells")
    }
    settings = list(SHARED_SETTINGS)
    if _setting(mine, "sweep.pack"):
        settings += [(key, "cells") for key in PACKED_SETTINGS]
    if _setting(mine, "sweep.refine.enabled") or _setting(other, "sweep.refine.enabled"):
        settings += [(key, "cells") for key in REFINE_SETTINGS]
    for key, what in settings:
        if shared[what] and _setting(mine, key) != _setting(other, key):
            return key
    return None


def check_shared(record: Mapping[str, Any], name: str | None, files: Mapping[Any, Any]) -> None:
    """Raise :class:`ConfigError` when the study (its record and name) would overwrite files of
    another study recorded in the same results root (``files``: name -> its study file)."""
    for other, path in files.items():
        if other == name:
            continue
        try:
            theirs = json.loads(Path(path).read_text())
            key = sharing_conflict(record, theirs)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ConfigError(
                f"study file {path} is unreadable: remove it or rerun its study first"
            ) from None
        if key is not None:
            raise ConfigError(
                f"config key '{key}': {_label(name)} sets it differently from {_label(other)} "
                f"({path}), and both use the same files under the results root; make them "
                "agree or run the studies in separate directories"
            )
