"""What refinement (sweep.refine) costs in DAG building: `snakemake -n -q` of a study from an
empty results folder with refinement on and off, timed side by side (alternating, so that load
on the machine hits both alike), and the job counts of each dry-run.

    python benchmarks/refine_dag.py --config config/paper.yaml --repeats 3 \
        --out benchmarks/results/refine_dag.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from workflow_helpers import job_counts, snakemake_argv, snakemake_env  # noqa: E402


def dry_run(workdir: Path, config: Path, quiet: bool) -> tuple[float, str]:
    """Seconds of one dry-run of the study's default target, and its output."""
    argv = [*snakemake_argv(workdir), "-n", "--configfile", str(config)]
    argv += ["-q"] if quiet else []
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=snakemake_env())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"dry-run of {config} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/refine_dag.md")
    args = parser.parse_args()
    base = yaml.safe_load(args.config.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for name, enabled in (("on", True), ("off", False)):
            study = dict(base)
            study["sweep"] = {**base["sweep"], "refine": {**base["sweep"].get("refine", {})}}
            study["sweep"]["refine"]["enabled"] = enabled
            configs[name] = Path(tmp) / f"{name}.yaml"
            configs[name].write_text(yaml.safe_dump(study, sort_keys=False))
            (Path(tmp) / name).mkdir()
        counts = {
            name: job_counts(dry_run(Path(tmp) / name, path, quiet=False)[1])
            for name, path in configs.items()
        }
        seconds: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.repeats):
            for name, path in configs.items():
                seconds[name].append(dry_run(Path(tmp) / name, path, quiet=True)[0])
    rel = args.config.resolve().relative_to(ROOT)
    lines = [
        "# DAG-building cost of refinement (sweep.refine)",
        "",
        f"`snakemake -n -q --configfile {rel}` from an empty results folder, refinement on and",
        f"off (the config with `sweep.refine.enabled` set), {args.repeats} runs each, alternating.",
        "Regenerate with:",
        "",
        f"    python benchmarks/refine_dag.py --config {rel} --repeats {args.repeats}",
        "",
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, shared with other jobs (compare the columns, not the"
        " absolute times).",
        "",
        "| refine | runs (s) | median (s) | jobs | refine checkpoints |",
        "|---|---|---|---|---|",
    ]
    for name in ("off", "on"):
        runs = ", ".join(f"{s:.1f}" for s in seconds[name])
        total = sum(counts[name].values())
        checkpoints = sum(v for k, v in counts[name].items() if k.startswith("refine_"))
        median = statistics.median(seconds[name])
        lines.append(f"| {name} | {runs} | {median:.1f} | {total} | {checkpoints} |")
    lines += [
        "",
        "With refinement on, a fresh dry-run holds every cell's round-1 decision (one local",
        "checkpoint job per cell of a mode that trains); the runs they add join the DAG only",
        "once a decision exists, so their count is not known before the grid has run.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
