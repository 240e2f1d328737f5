"""Normalisation statistics of a (pre-)training set, as the model input of docs/science.md needs them.

The model divides each sample's source by its RMS norm relative to the training set's median
source norm, and each canonical coefficient channel by its median magnitude. Both medians come
from the training split only (several files for mixed physics) and are written as JSON:

    {"source_norm_median": float,
     "coefficient_abs_median": [6 floats],   # [D11, D22, D12, v1, v2, omega], median |c|
                                             # over the non-zero entries; 1.0 if all zero
                                             # (spatially varying coefficients: over every
                                             # grid point, constants weighted by n^2)
     "channels": ["f", "D11", "D22", "D12", "v1", "v2", "omega"],
     "files": [{"path", "system", "split", "n_samples", "seed", "param_range"}],
     "n_samples": int, "pdetransfer_version": str}
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdetransfer import __version__
from pdetransfer.atomic import write_json
from pdetransfer.data import datasets, systems
from pdetransfer.errors import UserError
from pdetransfer.progress import Progress

CHANNELS = ["f", *systems.COEFFICIENT_NAMES]
# Grid values per file read for the median of spatially varying coefficients (a strided subset
# of every plane beyond this, so memory stays bounded at any N and grid).
MEDIAN_POINTS = 2**22


def source_norm(f: np.ndarray) -> np.ndarray:
    """RMS norm sqrt(mean over the grid of f^2) of each source in (..., n, n): the definition
    the model's per-sample input scaling uses. Grid-size independent for a given function."""
    f = np.asarray(f, dtype=np.float64)
    return np.sqrt(np.mean(f * f, axis=(-2, -1)))


def _source_norms(info: datasets.DatasetInfo, bar: Progress) -> np.ndarray:
    """Source norms of every sample of one file, read in slabs (memory independent of N)."""
    norms = np.empty(info.n_samples)
    with h5py.File(info.path, "r") as h5:
        fields = h5["fields"]
        for start in range(0, info.n_samples, datasets.READ_BLOCK):
            stop = min(start + datasets.READ_BLOCK, info.n_samples)
            slab = datasets.read_rows(fields, start, stop, info.path)
            norms[start:stop] = source_norm(slab[:, 0])
            bar.update(stop - start)
    return norms


def compute_stats(paths: Sequence[str | Path], progress: bool = False) -> dict[str, Any]:
    """Normalisation statistics over the union of the given train-split files."""
    if not paths:
        raise UserError("stats needs at least one training file")
    infos = [datasets.read_info(path) for path in paths]
    for info in infos:
        if info.split != "train":
            raise UserError(
                f"{info.path} is a {info.split!r} split; normalisation statistics must come "
                "from training files only"
            )
    total = sum(info.n_samples for info in infos)
    norms, coefficients = [], []
    with Progress(total, "stats", unit="samples", enabled=progress) as bar:
        for info in infos:
            norms.append(_source_norms(info, bar))
            coefficients.append(_abs_coefficients(info))
    if any(info.coefficient_fields for info in infos):
        medians = _weighted_medians(coefficients)
    else:
        all_coefficients = np.concatenate([values for values, _ in coefficients])
        medians = []
        for column in all_coefficients.T:
            nonzero = column[column != 0]
            medians.append(float(np.median(nonzero)) if nonzero.size else 1.0)
    return {
        "source_norm_median": float(np.median(np.concatenate(norms))),
        "coefficient_abs_median": medians,
        "channels": list(CHANNELS),
        "files": [
            {
                "path": str(info.path),
                "system": info.system,
                "split": info.split,
                "n_samples": info.n_samples,
                "seed": info.seed,
                "param_range": list(info.param_range),
            }
            for info in infos
        ],
        "n_samples": total,
        "pdetransfer_version": __version__,
    }


def _abs_coefficients(info: datasets.DatasetInfo) -> tuple[np.ndarray, float]:
    """|coefficients| of a file as rows (M, 6) and the grid points each row stands for.

    Constant coefficients give one row per sample standing for its n^2 points; spatially
    varying ones give a row per grid point read (every ``stride``-th point along each axis,
    so at most about ``MEDIAN_POINTS`` rows), each standing for stride^2 points.
    """
    with h5py.File(info.path, "r") as h5:
        if not info.coefficient_fields:
            rows = datasets.read_rows(h5["coefficients"], 0, info.n_samples, info.path)
            return np.abs(rows.astype(np.float64)), float(info.grid**2)
        points = info.n_samples * info.grid**2
        stride = max(1, math.ceil(math.sqrt(points / MEDIAN_POINTS)))
        parts = []
        for start in range(0, info.n_samples, datasets.READ_BLOCK):
            stop = min(start + datasets.READ_BLOCK, info.n_samples)
            planes = datasets.read_rows(h5["coefficient_fields"], start, stop, info.path)
            parts.append(planes[:, :, ::stride, ::stride].transpose(0, 2, 3, 1).reshape(-1, 6))
        return np.abs(np.concatenate(parts).astype(np.float64)), float(stride**2)


def _weighted_medians(parts: list[tuple[np.ndarray, float]]) -> list[float]:
    """Per channel, the median over grid points of the non-zero |values| (1.0 if none)."""
    values = np.concatenate([rows for rows, _ in parts])
    weights = np.concatenate([np.full(len(rows), weight) for rows, weight in parts])
    medians = []
    for column in values.T:
        keep = column != 0
        if not keep.any():
            medians.append(1.0)
            continue
        order = np.argsort(column[keep], kind="stable")
        cumulative = np.cumsum(weights[keep][order])
        middle = np.searchsorted(cumulative, 0.5 * cumulative[-1])
        medians.append(float(column[keep][order][middle]))
    return medians


def load_stats(path: str | Path) -> dict[str, Any]:
    """Read and validate a stats JSON file; any problem is one UserError sentence."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"stats file {path} does not exist")
    try:
        stats = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"stats file {path} is not readable JSON: {err}") from None
    if not isinstance(stats, dict):
        raise UserError(f"stats file {path} does not hold a JSON object")
    for key in ("source_norm_median", "coefficient_abs_median", "channels", "files", "n_samples"):
        if key not in stats:
            raise UserError(
                f"stats file {path} lacks {key!r}; regenerate it with pdetransfer stats"
            )
    if stats["channels"] != CHANNELS:
        raise UserError(f"stats file {path} has channels {stats['channels']}, expected {CHANNELS}")
    values = [stats["source_norm_median"], *_as_list(stats["coefficient_abs_median"])]
    if len(values) != 1 + len(systems.COEFFICIENT_NAMES) or not all(
        _positive_number(v) for v in values
    ):
        raise UserError(
            f"stats file {path} must hold a positive source_norm_median and "
            f"{len(systems.COEFFICIENT_NAMES)} positive coefficient medians"
        )
    return stats


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [None]


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def stats_command(args: argparse.Namespace) -> int:
    """``pdetransfer stats TRAIN.h5 [...] --out STATS.json``."""
    stats = compute_stats(args.train, progress=True)
    write_json(args.out, stats)
    medians = ", ".join(
        f"{name}={value:.4g}"
        for name, value in zip(
            systems.COEFFICIENT_NAMES, stats["coefficient_abs_median"], strict=True
        )
    )
    print(
        f"wrote {args.out}: {stats['n_samples']} samples from {len(stats['files'])} file(s); "
        f"source norm median {stats['source_norm_median']:.4g}; |coefficient| medians {medians}"
    )
    return 0
