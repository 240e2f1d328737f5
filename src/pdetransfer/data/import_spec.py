"""The ``source`` entry of an imported dataset: parsed, validated and checked against its files.

One function, :func:`parse_entry`, turns a config entry into an :class:`ImportSpec` for both
the workflow's config check and ``pdetransfer import``, and :func:`inspect` opens the files
(keys, shapes, grid, sizes; no samples read), so a config that passes the check does not fail
the import on anything but the data themselves (values, checksum, residual). The conversion
is :mod:`pdetransfer.data.importing`'s.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdetransfer.data import source_formats, systems
from pdetransfer.data.check import DEFAULT_TOLERANCE
from pdetransfer.data.datasets import MIN_GRID, SPLITS
from pdetransfer.data.source_formats import FORMATS, Reader
from pdetransfer.errors import UserError

PERIODIC = tuple(systems.SYSTEMS)  # operators checked spectrally on the periodic square
DEFAULT_SYSTEM = {"reference": None, "pdebench-darcy": "darcy", "hdf5": "external"}
SHA256 = re.compile(r"[0-9a-f]{64}")
SOURCE_KEYS = frozenset(
    ("format", "path", "url", "checksum", "downsample", "beta", "keys", "residual_tolerance")
)
DEFAULT_GRID = 128  # the schema's default of datasets.*.grid, for configs read without it


@dataclass(frozen=True)
class ImportSpec:
    """A validated ``source`` entry with the dataset's grid and split sizes."""

    where: str  # the dataset's config key, e.g. "datasets.darcy_b1", for messages
    format: str
    paths: dict[str, Path]  # {"all": file} or {"train": ..., "val": ..., "test": ...}
    checksums: dict[str, str]  # the same keys as paths, where configured
    system: str
    param_range: tuple[float, float] | None
    beta: float | None
    keys: dict[str, Any]
    url: str | None  # where the single source file is downloaded from, if it is
    downsample: int
    grid: int
    sizes: dict[str, int]
    residual_tolerance: float

    @property
    def split_files(self) -> bool:
        return "all" not in self.paths

    def range_or_beta(self) -> tuple[float, float] | None:
        """The parameter range the config states (Darcy files: [beta, beta])."""
        if self.param_range is not None:
            return self.param_range
        return (self.beta, self.beta) if self.beta is not None else None


def is_imported(entry: Mapping[str, Any]) -> bool:
    """Whether a dataset entry of a config imports its data."""
    return entry.get("source") is not None


def parse_entry(entry: Mapping[str, Any], where: str) -> ImportSpec:
    """A dataset entry with a ``source`` as an :class:`ImportSpec`; problems name their key."""
    source = entry.get("source")
    if not isinstance(source, Mapping):
        raise UserError(f"config key '{where}.source' must be a mapping with format and path")
    fmt = source.get("format")
    if fmt not in FORMATS:
        raise UserError(
            f"config key '{where}.source.format': {fmt!r} is not a known format; choose one of "
            f"{', '.join(FORMATS)}"
        )
    system = entry.get("system") or DEFAULT_SYSTEM[fmt]
    allowed = {
        "reference": PERIODIC,
        "pdebench-darcy": ("darcy",),
        "hdf5": (*PERIODIC, *systems.IMPORTED_SYSTEMS),
    }[fmt]
    if system not in allowed:
        what = "is required" if system is None else f"{system!r} is not allowed"
        raise UserError(
            f"config key '{where}.system': {what} for format {fmt}; choose one of "
            f"{', '.join(allowed)}"
        )
    paths, checksums = _paths(source, where)
    beta = _beta(source, where, fmt, system, paths)
    param_range = _range(entry, where, system, fmt, beta)
    keys = _keys(source, where, fmt)
    url = source.get("url")
    if url is not None and not (isinstance(url, str) and "all" in paths and "all" in checksums):
        raise UserError(
            f"config key '{where}.source.url' needs one file as path (where it is downloaded "
            "to) and its published checksum"
        )
    downsample = source.get("downsample", 1)
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise UserError(f"config key '{where}.source.downsample' must be a whole number >= 1")
    tolerance = source.get("residual_tolerance", DEFAULT_TOLERANCE)
    if not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise UserError(f"config key '{where}.source.residual_tolerance' must be a number >= 0")
    grid = int(entry.get("grid", DEFAULT_GRID))
    if grid < MIN_GRID:
        raise UserError(f"config key '{where}.grid' must be at least {MIN_GRID}")
    sizes = {}
    for split in SPLITS:
        size = entry.get(split)
        if not isinstance(size, int) or size < 1:
            raise UserError(f"config key '{where}.{split}' must be a positive whole number")
        sizes[split] = size
    unknown = set(source) - SOURCE_KEYS
    if unknown:
        raise UserError(f"config key '{where}.source.{sorted(unknown)[0]}' is not a source key")
    return ImportSpec(
        where,
        fmt,
        paths,
        checksums,
        system,
        param_range,
        beta,
        keys,
        url,
        downsample,
        grid,
        sizes,
        float(tolerance),
    )


def _paths(source: Mapping[str, Any], where: str) -> tuple[dict[str, Path], dict[str, str]]:
    path, checksum = source.get("path"), source.get("checksum")
    if isinstance(path, str) and path:
        paths = {"all": Path(path)}
        checksums = {} if checksum is None else {"all": checksum}
    elif isinstance(path, Mapping) and set(path) == set(SPLITS):
        paths = {split: Path(str(path[split])) for split in SPLITS}
        if len(set(paths.values())) < len(SPLITS):
            raise UserError(
                f"config key '{where}.source.path' maps two splits to one file, so they would "
                "share samples; give one file as path to have it split"
            )
        if checksum is not None and not (
            isinstance(checksum, Mapping) and set(checksum) <= set(paths)
        ):
            raise UserError(
                f"config key '{where}.source.checksum' must map splits to SHA-256 digests, as "
                "source.path maps them to files"
            )
        checksums = dict(checksum or {})
    else:
        raise UserError(
            f"config key '{where}.source.path' must be one file, or map each of "
            f"{', '.join(SPLITS)} to its own file"
        )
    for key, digest in checksums.items():
        if not (isinstance(digest, str) and SHA256.fullmatch(digest.lower())):
            suffix = "" if key == "all" else f".{key}"
            raise UserError(
                f"config key '{where}.source.checksum{suffix}' must be a SHA-256 digest "
                "(64 hexadecimal digits, as sha256sum prints it)"
            )
    return paths, {k: v.lower() for k, v in checksums.items()}


def _beta(
    source: Mapping[str, Any], where: str, fmt: str, system: str, paths: dict[str, Path]
) -> float | None:
    beta = source.get("beta")
    if fmt != "pdebench-darcy":
        if beta is not None:
            raise UserError(f"config key '{where}.source.beta' is only for format pdebench-darcy")
        return None
    if (
        not isinstance(beta, int | float)
        or isinstance(beta, bool)
        or not (math.isfinite(beta) and beta > 0)
    ):
        raise UserError(
            f"config key '{where}.source.beta' must be the file's forcing beta > 0 (PDEBench "
            "names it in the file name, e.g. 2D_DarcyFlow_beta1.0_Train.hdf5)"
        )
    for path in paths.values():
        named = re.search(r"beta([0-9.]+[0-9])", path.name)
        if named and not math.isclose(float(named.group(1)), beta, rel_tol=1e-9):
            raise UserError(
                f"config key '{where}.source.beta': {beta:g}, but the file {path.name} says "
                f"beta {named.group(1)}; fix beta or the path"
            )
    return float(beta)


def _range(
    entry: Mapping[str, Any], where: str, system: str, fmt: str, beta: float | None
) -> tuple[float, float] | None:
    given = entry.get("range")
    if fmt == "pdebench-darcy":
        if given is not None and [float(v) for v in given] != [beta, beta]:
            raise UserError(f"config key '{where}.range' of a PDEBench Darcy file is [beta, beta]")
        return None
    if given is None:
        if system == "external":
            return None
        raise UserError(
            f"config key '{where}.range' is required: the {systems.file_system(system).param_name}"
            " range the imported samples must lie in"
        )
    lo, hi = (float(v) for v in given)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise UserError(f"config key '{where}.range' must be two finite numbers LO <= HI")
    return lo, hi


def _keys(source: Mapping[str, Any], where: str, fmt: str) -> dict[str, Any]:
    keys = source.get("keys")
    if fmt != "hdf5":
        if keys is not None:
            raise UserError(f"config key '{where}.source.keys' is only for format hdf5")
        return {}
    if not isinstance(keys, Mapping) or "solution" not in keys or "source" not in keys:
        raise UserError(
            f"config key '{where}.source.keys' must name at least solution and source (a key, "
            "or a number for a constant f)"
        )
    unknown = set(keys) - set(source_formats.ROLES)
    if unknown:
        raise UserError(
            f"config key '{where}.source.keys.{sorted(unknown)[0]}' is not a role; roles: "
            f"{', '.join(source_formats.ROLES)}"
        )
    coefficients = keys.get("coefficients") or {}
    extra = set(coefficients) - set(systems.COEFFICIENT_NAMES)
    if extra:
        raise UserError(
            f"config key '{where}.source.keys.coefficients.{sorted(extra)[0]}' is not a channel;"
            f" channels: {', '.join(systems.COEFFICIENT_NAMES)}"
        )
    return {**keys, "coefficients": dict(coefficients)}


# ---------------------------------------------------------------------------- inspection
@contextlib.contextmanager
def open_readers(spec: ImportSpec) -> Iterator[dict[str, Reader]]:
    """The spec's source files, open and validated against it (keys, shapes, grid, sizes)."""
    readers: dict[str, Reader] = {}
    keys = {**spec.keys, "beta": spec.beta}
    try:
        for part, path in spec.paths.items():
            reader = source_formats.open_source(path, spec.format, spec.system, keys)
            readers[part] = reader
            _check_reader(spec, part, reader)
        yield readers
    finally:
        for reader in readers.values():
            reader.close()


def _check_reader(spec: ImportSpec, part: str, reader: Reader) -> None:
    if reader.grid % spec.downsample or reader.grid // spec.downsample != spec.grid:
        hint = (
            f"set {spec.where}.source.downsample: {reader.grid // spec.grid}"
            if reader.grid % spec.grid == 0 and reader.grid >= spec.grid
            else f"use a {spec.where}.grid that divides {reader.grid}"
        )
        raise UserError(
            f"{reader.path} is on a {reader.grid}x{reader.grid} grid, which downsampling by "
            f"{spec.downsample} does not bring to {spec.where}.grid = {spec.grid}; {hint}"
        )
    needed = sum(spec.sizes.values()) if part == "all" else spec.sizes[part]
    if needed > reader.n_samples:
        what = "train + val + test" if part == "all" else part
        raise UserError(
            f"{reader.path} holds {reader.n_samples} samples, fewer than the {needed} that "
            f"{spec.where} asks for ({what}); lower the sizes"
        )
    if spec.system in PERIODIC and reader.spatial:
        raise UserError(
            f"{reader.path}: {spec.system} has constant coefficients, but source.keys map a "
            "spatially varying one; use system darcy or external"
        )


def inspect(spec: ImportSpec) -> None:
    """Check what can be checked without reading samples (the config check calls this); a
    file still to be downloaded is checked by the import."""
    if spec.url is not None and not spec.paths["all"].exists():
        return
    with open_readers(spec):
        pass
