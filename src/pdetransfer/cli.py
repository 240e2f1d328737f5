"""The ``pdetransfer`` command line: one subcommand per workflow step.

Every Snakemake rule calls one of these subcommands, so each step also runs by hand. Argument
definitions live here; each subcommand's work is done by a function in the module that owns
the logic, imported only when that subcommand runs (so ``--help`` does not pay for torch).
A :class:`~pdetransfer.errors.UserError` becomes one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from pdetransfer import __version__
from pdetransfer.engine.models.registry import ARCHITECTURES, DEFAULT_ARCHITECTURE, TRAINABLE_RULES
from pdetransfer.errors import UserError

SYSTEMS = ("poisson", "advdiff", "helmholtz")
SPLITS = ("train", "val", "test")


def _handler(parser: argparse.ArgumentParser, target: str) -> None:
    """Attach ``module:function`` as the subcommand's handler, imported lazily."""
    parser.set_defaults(_handler=target)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="solve a PDE system for random sources into an HDF5 dataset"
    )
    p.add_argument("--system", required=True, choices=SYSTEMS)
    p.add_argument(
        "--range",
        required=True,
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="range of the physics parameter (e, Psi or omega)",
    )
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--n-samples", required=True, type=int)
    p.add_argument("--grid", type=int, default=128, help="grid size n (even, >= 16)")
    p.add_argument("--seed", type=int, default=0, help="base seed; the file's seed derives from it")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=256,
        help="samples computed ahead of the writer (bounds memory; results do not depend on it)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="worker threads (default: all CPUs this process may use; results do not depend on it)",
    )
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _handler(p, "pdetransfer.data.generate:generate_command")


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="normalisation statistics of a training set")
    p.add_argument("train", nargs="+", help="train split file(s); several = mixed physics")
    p.add_argument("--out", required=True, help="output JSON file")
    _handler(p, "pdetransfer.data.stats:stats_command")


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a dataset's layout and PDE residual")
    p.add_argument("file", help="dataset .h5 file")
    p.add_argument(
        "--tolerance",
        type=float,
        help="relative residual accepted on top of twice the float32 rounding floor, which "
        "grows like n^2 (about 1e-4 at n=128); default 1e-6, for an imported file the "
        "residual_tolerance it was imported with",
    )
    _handler(p, "pdetransfer.data.check:check_command")


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="convert a dataset from files (reference, PDEBench Darcy, any HDF5) into "
        "train/val/test files",
    )
    entry = p.add_mutually_exclusive_group(required=True)
    entry.add_argument("--config", help="study config (YAML) whose datasets.NAME has a source")
    entry.add_argument("--entry-json", help="the dataset entry as JSON (the workflow's)")
    p.add_argument("--dataset", help="NAME: the entry under 'datasets' (names it in messages)")
    p.add_argument(
        "--seed", type=int, help="base seed of the split (default: the config's data_seed, or 0)"
    )
    p.add_argument("--out-dir", required=True, help="output folder of train/val/test.h5")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _handler(p, "pdetransfer.data.importing:import_command")


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch a source file by URL, verified by its SHA-256")
    p.add_argument("--url", required=True)
    p.add_argument("--sha256", required=True, help="the file's published SHA-256 digest")
    p.add_argument("--out", required=True, help="where the file goes")
    _handler(p, "pdetransfer.data.download:download_command")


def _add_card(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("card", help="a dataset's card: what its files say, as Markdown (+ HTML)")
    p.add_argument("--name", required=True, help="the dataset's name (the card's title)")
    p.add_argument("--data", required=True, nargs="+", help="the dataset's split files (.h5)")
    p.add_argument(
        "--checks", nargs="+", help="the `pdetransfer check` report of each --data file, in order"
    )
    p.add_argument("--stats", help="the train split's stats.json")
    p.add_argument("--out", required=True, help="output Markdown card (card.md)")
    p.add_argument("--html", help="also write the card as HTML (for the Snakemake report)")
    _handler(p, "pdetransfer.data.card:card_command")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pre-train, fine-tune (--init) or train from scratch")
    p.add_argument("--data", required=True, nargs="+", help="train file(s); several = mixed")
    p.add_argument("--val", required=True, nargs="+", help="validation file(s)")
    p.add_argument(
        "--model",
        required=True,
        help="size: a preset name or 'modes,width' (FNOs), 'width,depth' (unet)",
    )
    p.add_argument(
        "--architecture",
        default=DEFAULT_ARCHITECTURE,
        help=f"registered model architecture ({', '.join(ARCHITECTURES)})",
    )
    p.add_argument("--out", help="run directory (one run)")
    p.add_argument(
        "--out-pattern",
        help="run directory of each --lr/--seed member, with {lr} (as given) and {seed}, "
        "e.g. 'runs/lr{lr}/s{seed}'; the members train in one process",
    )
    p.add_argument("--init", help="pre-trained checkpoint to fine-tune from")
    p.add_argument("--stats", help="normalisation stats JSON (default: computed from --data)")
    p.add_argument(
        "--trainable",
        choices=TRAINABLE_RULES,
        default="all",
        help="which parameters train: all, head (the output projection only) or lora "
        "(zero-initialised low-rank updates of the Fourier layers, --lora-rank)",
    )
    p.add_argument("--lora-rank", type=int, default=4, help="rank of --trainable lora's updates")
    p.add_argument("--n-train", type=int, help="use the first N of a seeded permutation")
    p.add_argument(
        "--lr", nargs="+", default=["1e-3"], help="learning rate(s); several: one member each"
    )
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument(
        "--min-steps",
        type=int,
        default=0,
        help="train at least this many steps (fixed budget); no plateau stop before it",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        help="horizon in steps: the cap under --patience, else the fixed budget (default: "
        "--epochs raised by --min-steps); the cosine schedule decays over it",
    )
    p.add_argument(
        "--patience",
        type=int,
        help="stop after this many steps without a validation improvement (default: none, "
        "train the whole budget)",
    )
    p.add_argument(
        "--val-every",
        type=int,
        help="validate every K steps and at the last (default: chosen from --val-share)",
    )
    p.add_argument(
        "--val-share",
        type=float,
        default=0.1,
        help="largest share of the run's forward+backward work spent on validation",
    )
    p.add_argument(
        "--min-val-checks",
        type=int,
        default=10,
        help="fewest validation checks per run (wins over --val-share for short runs)",
    )
    p.add_argument(
        "--loss",
        choices=("sse", "rel_l2"),  # pdetransfer.engine.losses.LOSSES, kept torch-free here
        default="sse",
        help="sse: per-sample sum of squared errors; rel_l2: per-sample relative L2; "
        "both averaged over the batch",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="seed(s); several: one member each"
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on GPU")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="also checkpoint every K steps (0: at validation checks only)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _handler(p, "pdetransfer.engine.training.command:train_command")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="test-set metrics of checkpoints (zero-shot too)")
    p.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="model.pt file(s); several (a packed cell's members) share one read of the data",
    )
    p.add_argument("--data", required=True, nargs="+", help="test file(s)")
    p.add_argument(
        "--out", required=True, nargs="+", help="output metrics JSON, one per --checkpoint"
    )
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--predictions",
        help="also write the first test samples' predictions (HDF5; one --checkpoint only)",
    )
    p.add_argument("--n-predictions", type=int, help="samples in --predictions (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _handler(p, "pdetransfer.engine.evaluation:evaluate_command")


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print what a checkpoint describes about itself")
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _handler(p, "pdetransfer.engine.checkpoints:info_command")


def _add_launch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="run a subcommand on claimed GPUs, in one process or several (torchrun)",
        description="Run 'pdetransfer SUBCOMMAND ARGS' on K free GPUs (claimed through lock "
        "files, or the ones SLURM assigned) in P processes; P > 1 starts torchrun.",
    )
    p.add_argument("--gpus", type=int, default=0, help="GPUs to claim (0: none, run on CPU)")
    p.add_argument("--nproc", type=int, help="processes (default: one per GPU, at least one)")
    p.add_argument(
        "--lock-dir",
        help="directory of the per-GPU lock files "
        "(default: $PDETRANSFER_GPU_LOCK_DIR or /tmp/pdetransfer-gpu-locks)",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- SUBCOMMAND ARGS")
    _handler(p, "pdetransfer.engine.runtime.launching:launch_command")


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="check the workflow's resolved config and record it")
    p.add_argument(
        "--config-json", required=True, help="the validated config as JSON (the workflow's)"
    )
    p.add_argument("--out", required=True, help="study file (JSON) that aggregate/plot read")
    _handler(p, "pdetransfer.study.config:study_command")


def _add_aggregate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="tables of every run, best lr per cell, data efficiency")
    p.add_argument("--study", required=True, help="study file written by `pdetransfer study`")
    p.add_argument("--results", default="results", help="results root the run paths are under")
    p.add_argument("--runs-csv", required=True, help="output: one row per run")
    p.add_argument("--summary-csv", required=True, help="output: best lr by validation error")
    p.add_argument("--efficiency-csv", required=True, help="output: N to reach target errors")
    p.add_argument("--fits-csv", required=True, help="output: power-law fits of error vs N, size")
    p.add_argument("--modes-csv", help="output: every mode's error and ratio to full fine-tuning")
    p.add_argument(
        "--thresholds-csv", help="output: per mode, the N from which it stays near full fine-tuning"
    )
    p.add_argument("--bins-csv", help="output: each cell's error per bin of the physical parameter")
    p.add_argument(
        "--forgetting-csv", help="output: fine-tuned against zero-shot error, sample by sample"
    )
    p.add_argument(
        "--crossover-csv", help="output: per fine-tuning mode, the N from which scratch catches up"
    )
    p.add_argument("--size-csv", help="output: the fine-tune gain per model size at each N")
    p.add_argument(
        "--mixed-csv", help="output: mixed-physics pre-training over the single-system one"
    )
    p.add_argument(
        "--compute-csv", help="output: job-seconds and wall time per stage (benchmark files)"
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="use the runs finished so far instead of failing on the first missing one",
    )
    p.add_argument("--missing-csv", help="output with --partial: per cell, the runs not finished")
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap replicates of every interval"
    )
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap")
    _handler(p, "pdetransfer.study.aggregation:aggregate_command")


def _add_refine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refine", help="one round of a cell's refinement: which runs to add")
    p.add_argument("--results", default="results", help="results root the run paths are under")
    p.add_argument(
        "--train", nargs="+", required=True, help="train.json of every run of the cell so far"
    )
    p.add_argument("--round", type=int, required=True, help="the round decided (1, 2, ...)")
    p.add_argument("--rounds", type=int, required=True, help="sweep.refine.rounds")
    p.add_argument("--lr-bounds", type=float, nargs=2, required=True, help="sweep.refine.lr_bounds")
    p.add_argument("--tolerance", type=float, required=True, help="report.undertrained_tolerance")
    p.add_argument("--out", required=True, help="the decision file (JSON)")
    _handler(p, "pdetransfer.study.refinement:refine_command")


PLOT_KINDS = ("error-vs-n", "error-vs-size", "ood", "mixed", "gallery")


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="one figure of the study (PNG and/or SVG)")
    p.add_argument("kind", choices=PLOT_KINDS)
    p.add_argument("--study", required=True, help="study file written by `pdetransfer study`")
    p.add_argument(
        "--experiment", help="experiment (gallery: default the first using --downstream)"
    )
    p.add_argument("--downstream", help="downstream dataset (error-vs-n, gallery)")
    p.add_argument("--summary", help="summary.csv (every kind but gallery)")
    p.add_argument("--fits", help="scaling_fits.csv: overlay the fitted power laws (error-vs-n)")
    p.add_argument("--results", default="results", help="results root (gallery predictions)")
    p.add_argument("--out", required=True, nargs="+", help="output .png/.svg file(s)")
    _handler(p, "pdetransfer.study.plotting:plot_command")


def _add_publish(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish", help="copy a finished study's tables and figures out of results/ (+ tables.md)"
    )
    p.add_argument(
        "--name",
        help="the study's name (config key study): its files are under "
        "results/studies/NAME/ (default: the unnamed study's, directly under results/)",
    )
    p.add_argument("--results", default="results", help="results root of the run")
    p.add_argument("--study", help="study file of the run (default: the study's study.json)")
    p.add_argument("--tables", help="folder of the aggregate tables (default: the study's)")
    p.add_argument("--plots", help="folder of the figures, PNG copied (default: the study's)")
    p.add_argument(
        "--benchmarks",
        help="Snakemake benchmark folder, for compute per stage where the tables have no "
        "compute.csv (default: the results root's; '' to leave it out)",
    )
    p.add_argument("--out", required=True, help="output folder, e.g. docs/results")
    _handler(p, "pdetransfer.study.publishing:publish_command")


def _add_track(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track",
        help="export every run of a finished study into MLflow (needs the [track] extra)",
        description="Write every run of the study (params, log.csv learning curve, final "
        "metrics, status, stop reason, cell) into an MLflow store; a second export updates "
        "the runs whose files changed and adds nothing else.",
    )
    p.add_argument("--study", required=True, help="study file written by `pdetransfer study`")
    p.add_argument("--results", default="results", help="results root the run paths are under")
    p.add_argument(
        "--uri",
        help="MLflow tracking URI (default: the study's tracking.uri, else "
        "sqlite:///RESULTS/tracking/mlflow.db)",
    )
    p.add_argument(
        "--experiment", help="MLflow experiment (default: the study's tracking.experiment)"
    )
    p.add_argument("--out", help="also write what was exported as JSON")
    _handler(p, "pdetransfer.study.tracking:track_command")


def _add_config_doc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config-doc", help="write config/README.md (every config key) from the config schema"
    )
    p.add_argument(
        "--schema", default="workflow/schemas/config.schema.yaml", help="the config's schema"
    )
    p.add_argument("--configs", default="config", help="folder of the shipped configs (examples)")
    p.add_argument("--out", default="config/README.md", help="output Markdown page")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if --out is out of date"
    )
    _handler(p, "pdetransfer.study.configdoc:config_doc_command")


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_generate,
    _add_stats,
    _add_check,
    _add_import,
    _add_download,
    _add_card,
    _add_train,
    _add_evaluate,
    _add_info,
    _add_launch,
    _add_study,
    _add_aggregate,
    _add_refine,
    _add_plot,
    _add_publish,
    _add_track,
    _add_config_doc,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="pdetransfer",
        description="Pre-train / fine-tune scaling and transfer study for neural operators.",
    )
    parser.add_argument("--version", action="version", version=f"pdetransfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pdetransfer`` console script."""
    args = build_parser().parse_args(argv)
    module_name, func_name = args._handler.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        result = func(args)
    except UserError as err:
        print(f"pdetransfer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pdetransfer {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
