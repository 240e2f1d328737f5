# Shared by every rule: config validation, wildcard constraints and input/target functions.
# The study logic (what runs exist, where they live, what a config may say) is in
# pdetransfer.study.config so that the tables and plots enumerate exactly the runs built here.

import copy
import json
import os
import re
from dataclasses import replace

import yaml
from snakemake.exceptions import IncompleteCheckpointException
from snakemake.utils import validate

from pdetransfer import layout
from pdetransfer.data.import_spec import is_imported
from pdetransfer.engine.training.schedule import recipe_flags
from pdetransfer.modes import MODES
from pdetransfer.study import refinement
from pdetransfer.study.config import ConfigError, Study
from pdetransfer.study.validation import check_schema, check_shared, coerce_numbers

# A study given with --configfile REPLACES the default one instead of being deep-merged into
# it (Snakemake's default), which would silently add the default study's named datasets and
# experiments to it. --config KEY=VALUE overrides still apply on top.
if workflow.config_settings.configfiles:
    config.clear()
    config.update(copy.deepcopy(dict(workflow.config_settings.overwrite_config)))


RESULTS = "results"  # the results root: pdetransfer.layout's paths are relative to it

# Every config error is raised here, before the DAG is built, naming its key: numbers YAML 1.1
# or --config left as strings (1e-3) are converted first, then the schema is checked (by
# key), its defaults filled, and the study checked against every rule its jobs apply and
# against the other studies recorded in the same results root (whose files it shares).
SCHEMA = "../schemas/config.schema.yaml"
try:
    with open(workflow.source_path(SCHEMA)) as schema_file:
        schema = yaml.safe_load(schema_file)
    coerce_numbers(config, schema)
    check_schema(config, schema)
    validate(config, SCHEMA)
    STUDY = Study(config)
    check_shared(STUDY.record(), STUDY.name, layout.study_files(RESULTS))
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None

ENV = "../../envs/pdetransfer.yaml"
TRACK_ENV = "../../envs/track.yaml"  # the MLflow export's (rule track)


report: "../report/workflow.rst"


def _names(names):
    """A regex matching exactly the given names (and nothing, if there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


# Datasets the workflow generates, and those it imports from files (pdetransfer import).
IMPORTED = [name for name, ds in STUDY.datasets.items() if is_imported(ds)]
GENERATED = [name for name in STUDY.datasets if name not in IMPORTED]
# Source files fetched by URL (pdetransfer download): path -> the entry's source.
DOWNLOADS = {
    ds["source"]["path"]: ds["source"]
    for ds in STUDY.datasets.values()
    if is_imported(ds) and ds["source"].get("url")
}


wildcard_constraints:
    dataset=_names(STUDY.datasets),
    split="train|val|test",
    pretrain=_names(STUDY.pretrain),
    mixed=_names(p for p in STUDY.pretrain if STUDY.is_mixed(p)),
    size=_names(STUDY.sizes),
    downstream=_names(STUDY.datasets),
    experiment=_names(STUDY.experiments),
    n=layout.FIELD_PATTERNS["n"],
    lr=layout.FIELD_PATTERNS["lr"],
    seed=layout.FIELD_PATTERNS["seed"],
    cap=layout.FIELD_PATTERNS["cap"],
    round=layout.FIELD_PATTERNS["round"],
    run=layout.run_pattern(),


# ---------------------------------------------------------------- per-job settings
def res(stage, key):
    """A resource value of a stage (data, pretrain, train, evaluate) from the config."""
    return config["resources"][stage][key]


def runtime(stage, runs=1):
    """Minutes per attempt of a stage's jobs (the SLURM time limit), for jobs that do `runs`
    runs' work one after another (a packed cell's evaluation).

    Training resumes from state.pt, so every attempt gets the configured runtime and continues
    where the last one stopped; data generation and evaluation start over, so a retry after a
    time limit gets the runtime once more per attempt.
    """
    minutes = res(stage, "runtime") * runs
    if stage in ("pretrain", "train"):
        return minutes
    return lambda wildcards, attempt: minutes * attempt


def recipe(stage):
    """Training hyper-parameters of a stage (pretrain, downstream) from the config."""
    return config["training"][stage]


def train_flags(stage):
    """The budget, plateau and loss flags of a stage (one string, the same for all its jobs)."""
    return recipe_flags(recipe(stage))


# ---------------------------------------------------------------- packed cells (sweep.pack)
# With sweep.pack a training job of a mode trains, and another evaluates, a whole cell (all
# learning rates x seeds); without it each job is one run, lr{lr}/s{seed} of its cell. Where
# those jobs' files live is pdetransfer.layout's (layout.Jobs).
PACK = config["sweep"]["pack"]
JOBS = layout.Jobs(RESULTS, PACK, layout.members(STUDY.lrs, STUDY.seeds))
TRAINING_MODES = [mode for mode in MODES.values() if mode.trains]


def results(path):
    """A path of pdetransfer.layout (relative to the results root) below the root."""
    return f"{RESULTS}/{path}"


def study_out(path):
    """One of the study's own outputs (tables/runs.csv, logs/aggregate.log): below
    studies/<name>/ for a named study (config key study), else below the results root.
    """
    return results(layout.study_path(STUDY.name, path))


def member_flags(wildcards):
    """The --lr and --seed of a training job: the whole sweep for a cell, else the run's own."""
    if PACK:
        return (
            f"--lr {' '.join(STUDY.lrs)} --seed {' '.join(str(s) for s in STUDY.seeds)}"
        )
    return f"--lr {wildcards.lr} --seed {wildcards.seed}"


def out_flag(mode):
    """Where a training job of a mode writes: --out-pattern with {lr} and {seed} for a cell
    (the cell's directory, then lr{lr}/s{seed}), --out the run's directory for one run.
    """

    def flag(wildcards):
        directory = JOBS.directory(mode).format(**wildcards)
        return (
            f"--out-pattern '{directory}/{layout.MEMBER}'"
            if PACK
            else f"--out {directory}"
        )

    return flag


def trainable_flags(mode):
    """Which parameters a training job of the mode trains (its rule in pdetransfer.modes)."""
    return f"--trainable {mode.trainable} --lora-rank {config['sweep']['lora_rank']}"


def train_resource(key, jobs=JOBS):
    """A training job's resource: resources.train per run; for a packed cell one GPU at most
    (the pack is one process), and runtime and memory times the members (the bound of the
    sequential fallback, which trains them one after another in that process).
    """
    if not PACK:
        return runtime("train") if key == "runtime" else res("train", key)
    value = res("train", key)
    if key == "gpu":
        return min(value, 1)
    return value * len(jobs.members)


# ---------------------------------------------------------------- refinement (sweep.refine)
# Runs refinement adds to a cell: one rate at one step cap per job when packed (its members
# the seeds, below lr{lr}/cap{cap}), else one run; pdetransfer.study.refinement decides them.
REFINE = config["sweep"]["refine"]
ADDED = layout.Jobs(RESULTS, PACK, layout.added_members(STUDY.seeds), added=True)


def added_member_flags(wildcards):
    """The --lr and --seed of a job of added runs: its rate, and every seed or its own."""
    seeds = " ".join(str(s) for s in STUDY.seeds) if PACK else wildcards.seed
    return f"--lr {wildcards.lr} --seed {seeds}"


def added_out_flag(mode):
    """Where a job of added runs writes: --out-pattern with {seed}, or --out one run."""

    def flag(wildcards):
        directory = ADDED.directory(mode).format(**wildcards)
        if PACK:
            return f"--out-pattern '{directory}/{layout.SEED_DIR}'"
        return f"--out {directory}"

    return flag


def added_recipe(wildcards):
    """The downstream recipe's flags at the added runs' own step cap."""
    return recipe_flags({**recipe("downstream"), "max_steps": int(wildcards.cap)})


def wildcard_cell(mode, wildcards):
    """The cell of a mode that the wildcards name (a run without rate or seed)."""
    pretrain = wildcards.pretrain if mode.needs_pretrained else None
    return layout.Run(
        mode.name,
        wildcards.size,
        wildcards.downstream,
        pretrain=pretrain,
        n=int(wildcards.n),
    )


def decision_file(cell):
    """Round k's decision file of a cell, through its checkpoint (raises while it is not made)."""
    decider = getattr(checkpoints, cell.spec.refine_rule)
    fields = {"size": cell.size, "downstream": cell.downstream, "n": str(cell.n)}
    if cell.spec.needs_pretrained:
        fields["pretrain"] = cell.pretrain

    def path(k):
        return decider.get(**fields, round=str(k)).output[0]

    return path


def refine_inputs(mode):
    """What round k of a cell's refinement reads: train.json of the grid's runs and of those
    rounds 1..k-1 added (their log.csv beside), and those rounds' decisions."""

    def inputs(wildcards):
        cell = wildcard_cell(mode, wildcards)
        before = int(wildcards.round) - 1
        added, decisions = refinement.refinement_rounds(
            cell, before, decision_file(cell)
        )
        grid = [
            replace(cell, lr=lr, seed=seed) for lr in STUDY.lrs for seed in STUDY.seeds
        ]
        runs = grid + [run for run, _ in added]
        return {
            "train": [results(f"{run.directory}/train.json") for run in runs],
            "decisions": decisions,
        }

    return inputs


def study_run_outputs(wildcards):
    """run_outputs() and, with sweep.refine, every cell's decisions and added runs: a cell
    whose next decision is not made yet asks for it (all cells at once, so their checkpoints
    run side by side; Snakemake asks again when one finishes)."""
    files = run_outputs()
    if not STUDY.refine:
        return files
    for cell in STUDY.trained_cells():
        try:
            added, decisions = refinement.refinement_rounds(
                cell, REFINE["rounds"], decision_file(cell)
            )
        except IncompleteCheckpointException as pending:
            files.append(pending.targetfile)
            continue
        files += decisions
        for run, _ in added:
            files += [
                results(f"{run.directory}/{name}")
                for name in ("metrics.json", "train.json")
            ]
    return files


# ---------------------------------------------------------------- input functions
def dataset_file(name, split):
    """One split of a named dataset."""
    return results(layout.DATASET_FILE.format(dataset=name, split=split))


def source_files(wildcards):
    """The file(s) an imported dataset is converted from (one, or one per split)."""
    path = config["datasets"][wildcards.dataset]["source"]["path"]
    return list(path.values()) if isinstance(path, dict) else [path]


def pretrain_files(wildcards, split):
    """The split files of a pre-training entry (several for mixed physics)."""
    return [dataset_file(ds, split) for ds in STUDY.pretrain[wildcards.pretrain]]


def pretrain_stats(wildcards):
    """Normalisation stats of a pre-training entry: its dataset's, or the mixed set's."""
    members = STUDY.pretrain[wildcards.pretrain]
    if len(members) == 1:
        return results(layout.DATASET_STATS.format(dataset=members[0]))
    return results(layout.MIXED_STATS.format(pretrain=wildcards.pretrain))


def run_checkpoint(wildcards):
    """The model a run evaluates: its own, or the pre-trained checkpoint it starts from."""
    return results(layout.parse_run(f"{layout.RUNS}/{wildcards.run}").checkpoint)


def run_test_file(wildcards):
    """The test split of the run's downstream dataset (named in the run path)."""
    return results(layout.parse_run(f"{layout.RUNS}/{wildcards.run}").test_file)


# ---------------------------------------------------------------- targets
def run_outputs():
    """metrics.json and (for trained runs) train.json of every run of the study."""
    files = []
    for run in STUDY.runs():
        files.append(results(f"{run.directory}/metrics.json"))
        if run.trains:
            files.append(results(f"{run.directory}/train.json"))
    return files


def pretrain_outputs():
    """train.json of every pre-training run the study builds."""
    return [
        f"results/pretrain/{pretrain}/{size}/train.json"
        for pretrain, size in STUDY.pretrain_jobs()
    ]


def data_checks():
    """Check reports of every dataset file the study generates."""
    return [
        results(layout.DATASET_CHECK.format(dataset=ds, split=split))
        for ds, splits in STUDY.dataset_splits().items()
        for split in splits
    ]


def test_files():
    """The test split of every downstream dataset (error_bins.csv reads its parameter)."""
    return [
        dataset_file(ds, "test") for ds in sorted({r.downstream for r in STUDY.runs()})
    ]


def card_inputs(wildcards):
    """What a dataset's card reads: its split files, their check reports (same order) and,
    where it has a train split, its normalisation stats."""
    folder = f"results/data/{wildcards.dataset}"
    splits = STUDY.dataset_splits()[wildcards.dataset]
    return {
        "data": [f"{folder}/{split}.h5" for split in splits],
        "checks": [f"{folder}/{split}.check.txt" for split in splits],
        "stats": [f"{folder}/stats.json"] if "train" in splits else [],
    }


def data_cards():
    """The card of every dataset the study generates."""
    return [f"results/data/{ds}/card.md" for ds in STUDY.dataset_splits()]


def gallery_inputs(wildcards):
    """Prediction files (and validation summaries) of the runs a dataset's gallery shows."""
    experiment = STUDY.gallery_experiment(wildcards.downstream)
    runs = STUDY.gallery_runs(experiment, wildcards.downstream)
    files = [results(f"{run.directory}/predictions.h5") for run in runs]
    files += [results(f"{run.directory}/train.json") for run in runs if run.trains]
    return files


def plot_targets():
    """Every plot of the study (PNG and SVG)."""
    stems = [
        f"error_vs_n/{name}/{ds}"
        for name, exp in STUDY.experiments.items()
        for ds in exp["downstream"]
    ]
    stems += [f"gallery/{ds}" for ds in STUDY.gallery_datasets()]
    stems += [f"error_vs_size/{name}" for name in STUDY.scaling_experiments()]
    stems += [f"ood/{name}" for name in STUDY.ood_experiments()]
    stems += [f"mixed/{name}" for name in STUDY.mixed_experiments()]
    return [plot(f"{stem}.{ext}") for stem in stems for ext in ("png", "svg")]


def table(name):
    """One of the study's tables."""
    return study_out(f"{layout.TABLES_DIR}/{name}")


def plot(name):
    """One of the study's figures."""
    return study_out(f"{layout.PLOTS_DIR}/{name}")


def study_log(name):
    """The log of one of the study's own jobs."""
    return study_out(f"{layout.LOGS_DIR}/{name}")


STUDY_FILE = study_out(layout.STUDY_FILE)
TABLES = [
    table("runs.csv"),
    table("summary.csv"),
    table("data_efficiency.csv"),
    table("scaling_fits.csv"),
]
