"""Reproducible HDF5 datasets: generation (streamed, atomic), reading, and checking.

One file per system x range x split. Layout (``FORMAT_VERSION`` 1):

- ``fields``       float32 (N, 2, n, n): [:, 0] the source f, [:, 1] the solution u, indexed
  [sample, channel, y, x] (the reference generator's layout), chunked per sample;
- ``tensor``       float32 (N, T): the reference's per-system coefficient columns;
- ``coefficients`` float32 (N, 6): canonical [D11, D22, D12, v1, v2, omega] for every system;
- ``param``        float64 (N,): the realised physics parameter (e, Psi or omega);
- ``sparsity``     float64 (N,): each source's sparsity s;
- root attributes: system, param_name, param_range, split, grid, n_samples, base_seed, seed
  (derived), kappa, pdetransfer_version, format_version, config (JSON), tensor_columns and
  coefficient_columns (JSON lists); Helmholtz files add omega_values / omega_counts (the
  realised omega histogram) and n_rejected.

The derived seed hashes (base seed, system, range, split) with SHA-256, so splits and ranges
never share sources, while the same draw at another grid size is the same source function.
Samples are generated in fixed blocks by a thread pool and written in order by the main
thread into a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.data import solver, sources, systems
from pdetransfer.errors import UserError
from pdetransfer.progress import Progress

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MIN_GRID = 16
PARAM_TOLERANCE = 1e-6  # relative slack on the stored parameter's range
READ_BLOCK = 256  # samples per slab when reading or checking
FLOOR_FACTOR = 2.0  # check: residuals may reach this multiple of their float32 rounding floor


def derive_seed(base_seed: int, system: str, param_range: tuple[float, float], split: str) -> int:
    """The file's seed: a stable 63-bit hash of what identifies it (never Python's ``hash``)."""
    lo, hi = (float(x) for x in param_range)
    key = f"pdetransfer-dataset|{base_seed}|{system}|{lo!r}|{hi!r}|{split}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def default_threads() -> int:
    """CPUs this process may use (respects SLURM / taskset affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _validate_generate(
    system: str,
    param_range: tuple[float, float],
    split: str,
    n_samples: int,
    grid: int,
    seed: int,
    out: Path,
    chunk_size: int,
    force: bool,
    threads: int,
) -> tuple[float, float]:
    """Every user mistake in the generation arguments, as one sentence each."""
    systems.get_system(system)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    param_range = systems.validate_range(system, *param_range)
    if n_samples <= 0:
        raise UserError(f"--n-samples must be positive, got {n_samples}")
    if grid < MIN_GRID or grid % 2:
        raise UserError(f"--grid must be an even number >= {MIN_GRID}, got {grid}")
    if seed < 0:
        raise UserError(f"--seed must be non-negative, got {seed}")
    if chunk_size <= 0:
        raise UserError(f"--chunk-size must be positive, got {chunk_size}")
    if threads <= 0:
        raise UserError(f"--threads must be positive, got {threads}")
    if out.is_dir():
        raise UserError(f"output {out} is a directory, not a file")
    if out.exists() and not force:
        raise UserError(f"output {out} already exists; pass --force to overwrite it")
    return param_range


@dataclass
class _Written:
    """A generated block, converted to its on-disk dtypes in the worker thread."""

    start: int
    stop: int
    fields: np.ndarray
    tensor: np.ndarray
    coefficients: np.ndarray
    param: np.ndarray
    sparsity: np.ndarray
    rejected: int


def _make_block(sampler: systems.Sampler, start: int, stop: int) -> _Written:
    batch = sampler.block(start, stop)
    fields = np.empty((stop - start, 2, sampler.grid, sampler.grid), dtype=np.float32)
    fields[:, 0] = batch.f
    fields[:, 1] = batch.u
    return _Written(
        start,
        stop,
        fields,
        batch.tensor.astype(np.float32),
        batch.coefficients.astype(np.float32),
        batch.param,
        batch.sparsity,
        int((batch.attempts - 1).sum()),
    )


def _generate_blocks(
    sampler: systems.Sampler, n_samples: int, threads: int, chunk_size: int
) -> Iterator[_Written]:
    """Blocks in order, computed ahead by a thread pool; at most ~chunk_size samples in flight.

    NumPy's FFTs, matrix products and ufunc loops release the GIL, so threads give real
    parallelism; the bound keeps peak memory independent of N.
    """
    blocks = sampler.blocks(n_samples)
    ahead = max(threads, math.ceil(chunk_size / systems.block_size(sampler.grid)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: collections.deque[Future[_Written]] = collections.deque()
        try:
            for start, stop in blocks:
                pending.append(pool.submit(_make_block, sampler, start, stop))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def generate_dataset(
    system: str,
    param_range: tuple[float, float],
    split: str,
    n_samples: int,
    grid: int,
    seed: int,
    out: str | Path,
    chunk_size: int = 256,
    force: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """Generate one dataset file; return its path.

    The contents depend only on (system, param_range, split, n_samples, grid, seed): not on
    ``chunk_size`` (samples computed ahead of the writer) or ``threads``. A smaller N gives a
    prefix of a larger N's samples.
    """
    out = Path(out)
    threads = default_threads() if threads is None else threads
    param_range = _validate_generate(
        system, param_range, split, n_samples, grid, seed, out, chunk_size, force, threads
    )
    spec = systems.get_system(system)
    derived = derive_seed(seed, system, param_range, split)
    sampler = systems.Sampler(system, param_range, grid, derived)
    config = _config(spec, param_range, split, n_samples, grid, seed, derived)
    omega_counts: collections.Counter[int] = collections.Counter()
    rejected = 0
    # Our threads split the work; BLAS threads on top of them (its products here are small)
    # only oversubscribe the CPUs, which is several times slower on a busy node.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        atomic_path(out) as tmp,
        h5py.File(tmp, "w", track_order=True) as h5,
    ):
        datasets = _create_datasets(h5, spec, n_samples, grid)
        fields = datasets["fields"]
        _write_attrs(h5, config)
        bar = Progress(n_samples, f"generate {out.name}", unit="samples", enabled=progress)
        pipeline = _generate_blocks(sampler, n_samples, threads, chunk_size)
        with bar, contextlib.closing(pipeline):
            for block in pipeline:
                rows = slice(block.start, block.stop)
                for i, sample in enumerate(block.fields, start=block.start):
                    # One chunk per sample, no filters: hand HDF5 the bytes (1.5x faster).
                    fields.id.write_direct_chunk((i, 0, 0, 0), sample)
                datasets["tensor"][rows] = block.tensor
                datasets["coefficients"][rows] = block.coefficients
                datasets["param"][rows] = block.param
                datasets["sparsity"][rows] = block.sparsity
                rejected += block.rejected
                if spec.name == "helmholtz":
                    omega_counts.update(block.param.astype(np.int64).tolist())
                    bar.update(block.stop - block.start, rejected=rejected)
                else:
                    bar.update(block.stop - block.start)
        if spec.name == "helmholtz":
            values = sorted(omega_counts)
            h5.attrs["omega_values"] = np.asarray(values, dtype=np.int64)
            h5.attrs["omega_counts"] = np.asarray([omega_counts[v] for v in values], np.int64)
            h5.attrs["n_rejected"] = rejected
    return out


def _config(
    spec: systems.SystemSpec,
    param_range: tuple[float, float],
    split: str,
    n_samples: int,
    grid: int,
    seed: int,
    derived: int,
) -> dict[str, Any]:
    """Everything that determines the file's contents, for its ``config`` attribute."""
    physics: dict[str, Any] = {"kappa": systems.KAPPA}
    if spec.name == "advdiff":
        physics |= {
            "e_range": list(systems.ADVDIFF_E_RANGE),
            "lambda_from": "bracketed Newton on log(lambda / (1 - lambda)) per sample",
            "root_tolerance_log_psi": systems.ADVDIFF_ROOT_TOLERANCE,
        }
    if spec.name == "helmholtz":
        physics |= {
            "max_abs_u": systems.HELMHOLTZ_MAX_ABS_U,
            "max_attempts": systems.HELMHOLTZ_MAX_ATTEMPTS,
        }
    return {
        "system": spec.name,
        "param_name": spec.param_name,
        "param_range": list(param_range),
        "split": split,
        "n_samples": n_samples,
        "grid": grid,
        "base_seed": seed,
        "seed": derived,
        "physics": physics,
        "sources": {
            "sigma": sources.SIGMA,
            "bumps_per_axis": sources.BUMPS_PER_AXIS,
            "spacing": sources.SPACING,
            "centre": [sources.CENTRE, sources.CENTRE],
            "sparsities": list(sources.SPARSITIES),
            "amplitude_range": list(sources.AMPLITUDE_RANGE),
            "max_reference_grid": sources.REFERENCE_GRID,
            "periodic": "minimum-image Gaussians on the unit torus",
            "mean_free": spec.mean_free,
        },
        "rng": {
            "bit_generator": "PCG64",
            "draws_per_sample": systems.N_DRAWS,
            "stream": "SeedSequence(seed, spawn_key=(attempt,)) advanced to index * draws",
        },
        "tensor_columns": list(spec.tensor_names),
        "coefficient_columns": list(systems.COEFFICIENT_NAMES),
        "format_version": FORMAT_VERSION,
        "pdetransfer_version": __version__,
    }


def _create_datasets(
    h5: h5py.File, spec: systems.SystemSpec, n_samples: int, grid: int
) -> dict[str, h5py.Dataset]:
    """Create the datasets (no timestamps, so identical inputs give identical files)."""
    rows = min(n_samples, 4096)
    made = {
        "fields": h5.create_dataset(
            "fields",
            (n_samples, 2, grid, grid),
            dtype=np.float32,
            chunks=(1, 2, grid, grid),
            track_times=False,
        ),
        "tensor": h5.create_dataset(
            "tensor",
            (n_samples, len(spec.tensor_names)),
            dtype=np.float32,
            chunks=(rows, len(spec.tensor_names)),
            track_times=False,
        ),
        "coefficients": h5.create_dataset(
            "coefficients",
            (n_samples, 6),
            dtype=np.float32,
            chunks=(rows, 6),
            track_times=False,
        ),
        "param": h5.create_dataset(
            "param", (n_samples,), dtype=np.float64, chunks=(rows,), track_times=False
        ),
        "sparsity": h5.create_dataset(
            "sparsity", (n_samples,), dtype=np.float64, chunks=(rows,), track_times=False
        ),
    }
    made["fields"].attrs["layout"] = "sample, channel [f, u], y, x"
    made["tensor"].attrs["columns"] = json.dumps(list(spec.tensor_names))
    made["coefficients"].attrs["columns"] = json.dumps(list(systems.COEFFICIENT_NAMES))
    made["param"].attrs["name"] = spec.param_name
    return made


def _write_attrs(h5: h5py.File, config: dict[str, Any]) -> None:
    attrs = h5.attrs
    attrs["system"] = config["system"]
    attrs["param_name"] = config["param_name"]
    attrs["param_range"] = np.asarray(config["param_range"], dtype=np.float64)
    attrs["split"] = config["split"]
    attrs["grid"] = config["grid"]
    attrs["n_samples"] = config["n_samples"]
    attrs["base_seed"] = config["base_seed"]
    attrs["seed"] = config["seed"]
    attrs["kappa"] = systems.KAPPA
    attrs["pdetransfer_version"] = __version__
    attrs["format_version"] = FORMAT_VERSION
    attrs["tensor_columns"] = json.dumps(config["tensor_columns"])
    attrs["coefficient_columns"] = json.dumps(config["coefficient_columns"])
    attrs["config"] = json.dumps(config, sort_keys=True)


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset file says about itself (validated by :func:`read_info`)."""

    path: Path
    system: str
    param_name: str
    param_range: tuple[float, float]
    split: str
    grid: int
    n_samples: int
    seed: int
    base_seed: int
    attrs: dict[str, Any] = field(repr=False)


_REQUIRED_ATTRS = (
    "system",
    "param_name",
    "param_range",
    "split",
    "grid",
    "n_samples",
    "base_seed",
    "seed",
    "kappa",
    "format_version",
)


def _open(path: Path) -> h5py.File:
    """Open a dataset read-only, or say in one sentence why it cannot be."""
    if not path.exists():
        raise UserError(f"dataset {path} does not exist")
    if path.is_dir():
        raise UserError(f"dataset {path} is a directory, not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise UserError(
            f"dataset {path} is not a readable HDF5 file (truncated or corrupt?): {_short(err)}; "
            f"{regenerate_hint(path)}"
        ) from None


def regenerate_hint(path: Path) -> str:
    """How to replace a damaged dataset file; generation is deterministic, so the regenerated
    file is the one that was damaged, and the workflow's path is the file's own."""
    return f"regenerate it (in the workflow: snakemake --forcerun {path})"


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _attr(value: Any) -> Any:
    """HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _info_from(h5: h5py.File, path: Path) -> DatasetInfo:
    """Validate the layout and attributes of an open file."""
    missing = [name for name in _REQUIRED_ATTRS if name not in h5.attrs]
    if missing:
        raise UserError(f"{path} is not a pdetransfer dataset: attribute {missing[0]!r} missing")
    attrs = {key: _attr(value) for key, value in h5.attrs.items()}
    if attrs["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {attrs['format_version']}, this pdetransfer reads "
            f"{FORMAT_VERSION}; regenerate it"
        )
    system = attrs["system"]
    if system not in systems.SYSTEMS:
        raise UserError(f"{path} names an unknown system {system!r}")
    spec = systems.SYSTEMS[system]
    n, grid = int(attrs["n_samples"]), int(attrs["grid"])
    expected = {
        "fields": ((n, 2, grid, grid), np.float32),
        "tensor": ((n, len(spec.tensor_names)), np.float32),
        "coefficients": ((n, 6), np.float32),
        "param": ((n,), np.float64),
        "sparsity": ((n,), np.float64),
    }
    for name, (shape, dtype) in expected.items():
        if name not in h5:
            raise UserError(f"{path} is not a pdetransfer dataset: dataset {name!r} missing")
        dataset = h5[name]
        if not isinstance(dataset, h5py.Dataset) or dataset.shape != shape:
            got = getattr(dataset, "shape", "a group")
            raise UserError(f"{path}: dataset {name!r} has shape {got}, expected {shape}")
        if dataset.dtype != dtype:
            raise UserError(f"{path}: dataset {name!r} is {dataset.dtype}, expected {dtype}")
    lo, hi = (float(x) for x in attrs["param_range"])
    return DatasetInfo(
        path=path,
        system=system,
        param_name=attrs["param_name"],
        param_range=(lo, hi),
        split=attrs["split"],
        grid=grid,
        n_samples=n,
        seed=int(attrs["seed"]),
        base_seed=int(attrs["base_seed"]),
        attrs=attrs,
    )


def read_info(path: str | Path) -> DatasetInfo:
    """Validated description of a dataset file; any problem is one UserError sentence."""
    path = Path(path)
    with _open(path) as h5:
        return _info_from(h5, path)


def read_rows(dataset: h5py.Dataset, start: int, stop: int, path: Path) -> np.ndarray:
    """A slab of rows; an unreadable (e.g. truncated) chunk becomes a UserError."""
    try:
        return dataset[start:stop]
    except (OSError, RuntimeError) as err:
        raise UserError(
            f"{path}: cannot read {dataset.name.lstrip('/')} rows {start}..{stop - 1} "
            f"(truncated or corrupt?): {_short(err)}; {regenerate_hint(path)}"
        ) from None


def read_samples(
    path: str | Path, indices: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources f (K, n, n), solutions u (K, n, n) and coefficients (K, 6), all float32.

    ``indices`` selects samples in any order (repeats allowed); the file is read in slabs of
    ``READ_BLOCK`` consecutive samples, so reading a prefix or a random subset costs memory
    proportional to K only.
    """
    path = Path(path)
    with _open(path) as h5:
        info = _info_from(h5, path)
        n = info.n_samples
        wanted = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
        if wanted.size and (wanted.min() < 0 or wanted.max() >= n):
            bad = wanted[(wanted < 0) | (wanted >= n)][0]
            raise UserError(f"{path}: sample index {bad} is outside [0, {n})")
        fields, coefficients = h5["fields"], h5["coefficients"]
        all_coefficients = read_rows(coefficients, 0, n, path)
        f = np.empty((wanted.size, info.grid, info.grid), dtype=np.float32)
        u = np.empty_like(f)
        order = np.argsort(wanted, kind="stable")
        slab_of = wanted[order] // READ_BLOCK
        for rows in np.split(order, np.flatnonzero(np.diff(slab_of)) + 1):
            first, last = int(wanted[rows[0]]), int(wanted[rows[-1]])
            data = read_rows(fields, first, last + 1, path)
            local = wanted[rows] - first
            f[rows] = data[local, 0]
            u[rows] = data[local, 1]
        return f, u, all_coefficients[wanted]


# ----------------------------------------------------------------------------- checking


@dataclass
class CheckReport:
    """Outcome of :func:`check_dataset`: ``failures`` empty means the file passed."""

    info: DatasetInfo
    residual: np.ndarray  # (N,) relative residual |L u - f| / |f|
    floor: np.ndarray  # (N,) its float32 rounding floor (see rounding_floor)
    params: np.ndarray  # (N,)
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def coefficients_from_tensor(system: str, tensor: np.ndarray) -> np.ndarray:
    """Canonical [D11, D22, D12, v1, v2, omega] rows from a system's reference 'tensor'."""
    out = np.zeros((tensor.shape[0], 6), dtype=tensor.dtype)
    if system == "helmholtz":
        out[:, 0] = out[:, 1] = tensor[:, 0]
        out[:, 5] = tensor[:, 1]
    else:
        out[:, : tensor.shape[1]] = tensor
    return out


def _operator_parts(coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """D (B, 2, 2), v (B, 2), omega (B,) in float64 from canonical rows."""
    c = coefficients.astype(np.float64)
    D = np.empty((c.shape[0], 2, 2))
    D[:, 0, 0], D[:, 1, 1] = c[:, 0], c[:, 1]
    D[:, 0, 1] = D[:, 1, 0] = c[:, 2]
    return D, c[:, 3:5], c[:, 5]


def realised_psi(u_hat: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """SYS-2's Psi = |v . grad u| / |div(D grad u)| per sample, from u's rfft2 and the stored
    canonical coefficients (norms by Parseval)."""
    D, v, omega = _operator_parts(coefficients)
    n, zero = u_hat.shape[-2], np.zeros_like(omega)
    advection = solver.symbol(n, np.zeros_like(D), v, zero) * u_hat
    diffusion = solver.symbol(n, D, np.zeros_like(v), zero) * u_hat
    return solver.spectral_norm(advection) / solver.spectral_norm(diffusion)


def rounding_floor(f32: np.ndarray, u32: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """The relative residual that float32 storage alone causes, per sample.

    Rounding u to float32 adds white noise du with variance ulp(u)^2 / 12 per point, and L
    (symbol ``sym``) amplifies white noise by the rms of its symbol over the grid (Parseval),
    which grows like n^2: |L du| = rms|symbol| |du|. Adding f's own rounding gives the floor
    below which no stored sample's residual |L u - f| / |f| can be; measured residuals of
    correct data sit within about 10% of it.
    """
    n = u32.shape[-1]
    rms = np.sqrt((np.abs(sym) ** 2 * solver.parseval_weights(n)).sum(axis=(1, 2))) / n
    du = np.sqrt((np.spacing(np.abs(u32)).astype(np.float64) ** 2).sum(axis=(1, 2)) / 12.0)
    df = np.sqrt((np.spacing(np.abs(f32)).astype(np.float64) ** 2).sum(axis=(1, 2)) / 12.0)
    return (rms * du + df) / np.linalg.norm(f32.astype(np.float64), axis=(1, 2))


def check_dataset(path: str | Path, tolerance: float = 1e-6, progress: bool = True) -> CheckReport:
    """Validate layout, attributes and physics of a dataset file.

    Physics: every sample's relative residual |L u - f| / |f| with the stored canonical
    coefficients must be at most ``FLOOR_FACTOR`` times its float32 rounding floor plus
    ``tolerance`` (the floor grows like n^2, ~1e-4 at n = 128, so a fixed bound would either
    fail correct high-resolution data or miss errors at low resolution); the parameter lies in
    its range and agrees with the coefficients (for advdiff, with u itself); the reference
    tensor matches the canonical coefficients; SYS-1/2 sources are mean-free; SYS-3 has
    max|u| <= 2 and a correct omega histogram.
    """
    path = Path(path)
    failures: list[str] = []
    with _open(path) as h5:
        info = _info_from(h5, path)
        spec = systems.SYSTEMS[info.system]
        residual = np.empty(info.n_samples)
        floor = np.empty(info.n_samples)
        params = np.empty(info.n_samples)
        bar = Progress(info.n_samples, f"check {path.name}", unit="samples", enabled=progress)
        with bar:
            for start in range(0, info.n_samples, READ_BLOCK):
                stop = min(start + READ_BLOCK, info.n_samples)
                rows = slice(start, stop)
                fields = read_rows(h5["fields"], start, stop, path)
                coefficients = read_rows(h5["coefficients"], start, stop, path)
                tensor = read_rows(h5["tensor"], start, stop, path)
                params[rows] = read_rows(h5["param"], start, stop, path)
                D, v, omega = _operator_parts(coefficients)
                f, u = fields[:, 0].astype(np.float64), fields[:, 1].astype(np.float64)
                f_hat, u_hat = np.fft.rfft2(f), np.fft.rfft2(u)
                sym = solver.symbol(info.grid, D, v, omega)
                residual[rows] = solver.spectral_norm(sym * u_hat - f_hat) / solver.spectral_norm(
                    f_hat
                )
                floor[rows] = rounding_floor(fields[:, 0], fields[:, 1], sym)
                problems = _check_block(spec, f, u, u_hat, coefficients, tensor, params[rows], info)
                failures.extend(f"samples {start}..{stop - 1}: {p}" for p in problems)
                bar.update(stop - start)
        if spec.name == "helmholtz":
            failures.extend(_check_histogram(h5.attrs, params))
    bad = np.flatnonzero(~(residual <= FLOOR_FACTOR * floor + tolerance))
    if bad.size:
        worst = bad[np.argmax(residual[bad] / floor[bad])]
        failures.insert(
            0,
            f"{bad.size} samples have a residual above {FLOOR_FACTOR:g} x float32 floor + "
            f"{tolerance:g}, e.g. sample {worst}: {residual[worst]:.3g} (floor "
            f"{floor[worst]:.3g})",
        )
    return CheckReport(info=info, residual=residual, floor=floor, params=params, failures=failures)


def _check_block(
    spec: systems.SystemSpec,
    f: np.ndarray,
    u: np.ndarray,
    u_hat: np.ndarray,
    coefficients: np.ndarray,
    tensor: np.ndarray,
    param: np.ndarray,
    info: DatasetInfo,
) -> list[str]:
    """Checks of one slab other than the residual; returns problem descriptions."""
    problems = []
    if not (np.isfinite(f).all() and np.isfinite(u).all()):
        problems.append("non-finite values in fields")
    if not np.array_equal(coefficients_from_tensor(spec.name, tensor), coefficients):
        problems.append("'tensor' and 'coefficients' disagree")
    lo, hi = info.param_range
    slack = PARAM_TOLERANCE * max(abs(lo), abs(hi))
    if param.min() < lo - slack or param.max() > hi + slack:
        problems.append(f"{spec.param_name} outside [{lo:g}, {hi:g}]")
    if spec.mean_free and np.abs(f.mean(axis=(1, 2))).max() > 1e-6:
        problems.append("source not mean-free")
    if spec.name == "poisson":
        e = (coefficients[:, 0].astype(np.float64) + coefficients[:, 1]) / systems.KAPPA - 1.0
        if not np.allclose(e, param, rtol=1e-4, atol=1e-4):
            problems.append("e disagrees with the diffusion tensor's trace")
    elif spec.name == "advdiff":
        if not np.allclose(realised_psi(u_hat, coefficients), param, rtol=1e-4):
            problems.append("psi disagrees with the one recomputed from u")
    else:
        if not np.array_equal(param, coefficients[:, 5]) or np.any(param != np.round(param)):
            problems.append("omega is not the whole number stored in the coefficients")
        if np.abs(u).max() > systems.HELMHOLTZ_MAX_ABS_U * (1 + 1e-6):
            problems.append(f"max|u| exceeds {systems.HELMHOLTZ_MAX_ABS_U:g}")
    return problems


def _check_histogram(attrs: h5py.AttributeManager, params: np.ndarray) -> list[str]:
    if "omega_values" not in attrs or "omega_counts" not in attrs:
        return ["omega histogram attributes missing"]
    values, counts = np.unique(params.astype(np.int64), return_counts=True)
    if not (
        np.array_equal(values, attrs["omega_values"])
        and np.array_equal(counts, attrs["omega_counts"])
    ):
        return ["omega histogram attributes disagree with the stored omegas"]
    return []


# ----------------------------------------------------------------------------- commands


def generate_command(args: argparse.Namespace) -> int:
    """``pdetransfer generate``."""
    out = generate_dataset(
        system=args.system,
        param_range=tuple(args.range),
        split=args.split,
        n_samples=args.n_samples,
        grid=args.grid,
        seed=args.seed,
        out=args.out,
        chunk_size=args.chunk_size,
        force=args.force,
        progress=not args.quiet,
        threads=args.threads,
    )
    if not args.quiet:
        info = read_info(out)
        print(
            f"wrote {out}: {info.system} {info.param_name} in "
            f"[{info.param_range[0]:g}, {info.param_range[1]:g}], {info.split}, "
            f"{info.n_samples} samples on {info.grid}x{info.grid}, seed {info.seed}"
        )
    return 0


def check_command(args: argparse.Namespace) -> int:
    """``pdetransfer check``: exit 0 if the file passes, 1 if it fails, 2 if unreadable."""
    if not args.tolerance >= 0:
        raise UserError(f"--tolerance must be non-negative, got {args.tolerance}")
    report = check_dataset(args.file, args.tolerance)
    info = report.info
    worst = int(np.argmax(report.residual))
    ratio = report.residual / report.floor
    print(
        f"{info.path}: {info.system}, {info.param_name} in [{info.param_range[0]:g}, "
        f"{info.param_range[1]:g}], {info.split}, {info.n_samples} samples on "
        f"{info.grid}x{info.grid}, seed {info.seed} (base {info.base_seed})"
    )
    print(
        f"  relative residual |Lu - f|/|f|: max {report.residual[worst]:.3g} (sample {worst}), "
        f"median {np.median(report.residual):.3g}"
    )
    print(
        f"  residual / float32 rounding floor: max {ratio.max():.3g}, median "
        f"{np.median(ratio):.3g} (allowed {FLOOR_FACTOR:g} x floor + {args.tolerance:g})"
    )
    print(f"  {info.param_name}: min {report.params.min():.6g}, max {report.params.max():.6g}")
    if info.system == "helmholtz":
        pairs = zip(info.attrs["omega_values"], info.attrs["omega_counts"], strict=True)
        print("  omega histogram: " + ", ".join(f"{v}:{c}" for v, c in pairs))
        print(f"  rejected draws (max|u| > 2): {info.attrs['n_rejected']}")
    for failure in report.failures:
        print(f"  FAIL {failure}")
    if report.ok:
        print("  OK")
    else:
        print(f"  FAILED ({len(report.failures)} problems); if the file was damaged after it was")
        print(f"  written, {regenerate_hint(info.path)}")
    return 0 if report.ok else 1
