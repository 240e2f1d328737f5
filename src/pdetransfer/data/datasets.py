"""Reproducible HDF5 datasets: the file format, its identity (seeds) and reading.

Generation is :mod:`pdetransfer.data.generate`, the physics check :mod:`pdetransfer.data.check`.

One file per system x range x split. Layout (``FORMAT_VERSION`` 1):

- ``fields``       float32 (N, 2, n, n): [:, 0] the source f, [:, 1] the solution u, indexed
  [sample, channel, y, x] (the reference generator's layout), chunked per sample;
- ``tensor``       float32 (N, T): the reference's per-system coefficient columns;
- ``coefficients`` float32 (N, 6): canonical [D11, D22, D12, v1, v2, omega] for every system;
- ``param``        float64 (N,): the realised physics parameter (e, Psi or omega);
- ``sparsity``     float64 (N,): each source's sparsity s (NaN in imported files);
- ``coefficient_fields`` float32 (N, 6, n, n), optional: spatially varying coefficients in the
  canonical channels (imported data such as Darcy's a(x)); where present it is what readers
  return, and ``coefficients`` holds each channel's spatial mean;
- root attributes: system, param_name, param_range, split, grid, n_samples, base_seed, seed
  (derived), kappa, pdetransfer_version, format_version, config (JSON), tensor_columns and
  coefficient_columns (JSON lists); Helmholtz files add omega_values / omega_counts (the
  realised omega histogram) and n_rejected; generation (JSON: seconds, time, host, CPU,
  threads, versions) says when and where the file was made. Imported files
  (:mod:`pdetransfer.data.importing`) add ``origin = "import"`` and their provenance.

The derived seed hashes (base seed, system, range, split) with SHA-256, so splits and ranges
never share sources, while the same draw at another grid size is the same source function.
Samples are generated in fixed blocks by a thread pool and written in order by the main
thread into a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdetransfer.data import systems
from pdetransfer.errors import UserError

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
    coefficient_fields: bool = False  # holds spatially varying coefficients

    @property
    def imported(self) -> bool:
        """Whether the file was converted from another layout rather than generated."""
        return self.attrs.get("origin") == "import"


REQUIRED_ATTRS = (
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


def open_dataset(path: Path) -> h5py.File:
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


def info_from(h5: h5py.File, path: Path) -> DatasetInfo:
    """Validate the layout and attributes of an open file."""
    missing = [name for name in REQUIRED_ATTRS if name not in h5.attrs]
    if missing:
        raise UserError(f"{path} is not a pdetransfer dataset: attribute {missing[0]!r} missing")
    attrs = {key: _attr(value) for key, value in h5.attrs.items()}
    if attrs["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {attrs['format_version']}, this pdetransfer reads "
            f"{FORMAT_VERSION}; regenerate it"
        )
    system = attrs["system"]
    if system not in systems.SYSTEMS and system not in systems.IMPORTED_SYSTEMS:
        raise UserError(f"{path} names an unknown system {system!r}")
    spec = systems.file_system(system)
    n, grid = int(attrs["n_samples"]), int(attrs["grid"])
    expected = {
        "fields": ((n, 2, grid, grid), np.float32),
        "tensor": ((n, len(spec.tensor_names)), np.float32),
        "coefficients": ((n, 6), np.float32),
        "param": ((n,), np.float64),
        "sparsity": ((n,), np.float64),
    }
    if "coefficient_fields" in h5:
        expected["coefficient_fields"] = ((n, 6, grid, grid), np.float32)
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
        coefficient_fields="coefficient_fields" in h5,
    )


def read_info(path: str | Path) -> DatasetInfo:
    """Validated description of a dataset file; any problem is one UserError sentence."""
    path = Path(path)
    with open_dataset(path) as h5:
        return info_from(h5, path)


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
    """Sources f (K, n, n), solutions u (K, n, n) and coefficients, all float32: (K, 6)
    constants, or (K, 6, n, n) fields for a file with ``coefficient_fields``.

    ``indices`` selects samples in any order (repeats allowed); the file is read in slabs of
    ``READ_BLOCK`` consecutive samples, so reading a prefix or a random subset costs memory
    proportional to K only.
    """
    path = Path(path)
    with open_dataset(path) as h5:
        info = info_from(h5, path)
        n = info.n_samples
        wanted = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
        if wanted.size and (wanted.min() < 0 or wanted.max() >= n):
            bad = wanted[(wanted < 0) | (wanted >= n)][0]
            raise UserError(f"{path}: sample index {bad} is outside [0, {n})")
        fields, coefficients = h5["fields"], h5["coefficients"]
        planes = h5["coefficient_fields"] if info.coefficient_fields else None
        all_coefficients = read_rows(coefficients, 0, n, path) if planes is None else None
        f = np.empty((wanted.size, info.grid, info.grid), dtype=np.float32)
        u = np.empty_like(f)
        c = None if planes is None else np.empty((wanted.size, 6, *f.shape[1:]), np.float32)
        order = np.argsort(wanted, kind="stable")
        slab_of = wanted[order] // READ_BLOCK
        for rows in np.split(order, np.flatnonzero(np.diff(slab_of)) + 1):
            first, last = int(wanted[rows[0]]), int(wanted[rows[-1]])
            data = read_rows(fields, first, last + 1, path)
            local = wanted[rows] - first
            f[rows] = data[local, 0]
            u[rows] = data[local, 1]
            if planes is not None and c is not None:
                c[rows] = read_rows(planes, first, last + 1, path)[local]
        return f, u, c if all_coefficients is None else all_coefficients[wanted]
