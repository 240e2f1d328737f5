"""Readers of the layouts ``pdetransfer import`` converts, each to the canonical sample form.

- ``reference``: files of the paper's released generator (Subramanian et al.): ``fields``
  (N, 2, n, n) = [source f, solution u] and ``tensor`` (N, T), the system's coefficient
  columns (Poisson kappa K as D11, D22, D12; advection-diffusion adds v1, v2; Helmholtz kappa,
  omega), float32 and no attributes. This project's own files extend that layout, so the
  columns mean what :data:`pdetransfer.data.systems.SYSTEMS` says and the grid points are
  ``i / n`` of the periodic unit square. That the released files hold exactly these two keys
  with these meanings is read from the generator's code, not from a released file.
- ``pdebench-darcy``: PDEBench's 2D Darcy flow, one file per forcing beta: ``nu`` (N, n, n)
  the coefficient a(x), ``tensor`` (N, 1, n, n) the solution, ``x-coordinate`` and
  ``y-coordinate`` (n,). The problem -div(a grad u) = beta is isotropic, so whether a file's
  arrays are [y, x] or [x, y] does not matter (pdetransfer's are [y, x]).
- ``hdf5``: any file, through a mapping of keys to roles: ``solution`` (N, n, n) or
  (N, 1, n, n); ``source`` likewise, (N,) (a constant f per sample) or a number (the same
  constant f for all); ``coefficients`` a mapping of
  canonical channels (D11, D22, D12, v1, v2, omega) to keys of shape (N,) (one value per
  sample), (N, n, n) or (N, 1, n, n) (spatially varying), or numbers (missing ones are 0);
  optional ``param`` (N,) the physics parameter and ``x`` / ``y`` (n,) coordinates.

Each reader checks keys and shapes when it opens the file and values (NaN, infinity) as it
reads, and says in one sentence which file and key is wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdetransfer.data import systems
from pdetransfer.data.check import coefficients_from_tensor
from pdetransfer.errors import UserError

FORMATS = ("reference", "pdebench-darcy", "hdf5")
ROLES = ("solution", "source", "coefficients", "param", "x", "y")  # of the hdf5 mapping


@dataclass(frozen=True)
class Block:
    """Samples in canonical form, float32, on the source's own grid."""

    f: np.ndarray  # (B, n, n)
    u: np.ndarray  # (B, n, n)
    coefficients: np.ndarray  # (B, 6) constants or (B, 6, n, n) fields
    param: np.ndarray | None  # (B,) float64, where the file states it


@dataclass
class Reader:
    """An open source file of one format; ``read`` returns any rows in canonical form."""

    path: Path
    h5: h5py.File
    n_samples: int
    grid: int
    keys: dict[str, dict[str, Any]]  # every key read: shape and dtype (provenance)
    conversions: list[str]  # what the conversion to canonical form does, in words
    load: Callable[[np.ndarray], Block] = field(repr=False)  # rows -> Block, unchecked
    coordinates: tuple[np.ndarray, np.ndarray] | None = None
    spatial: bool = False  # coefficients vary in space

    def read(self, rows: np.ndarray) -> Block:
        """Rows (increasing) of the file as a :class:`Block`; non-finite values are an error."""
        block = self.load(rows)
        for name, values in (("f", block.f), ("u", block.u), ("coefficients", block.coefficients)):
            bad = ~np.isfinite(values).reshape(len(rows), -1).all(axis=1)
            if bad.any():
                raise UserError(
                    f"{self.path}: sample {int(rows[np.argmax(bad)])} holds NaN or infinity "
                    f"(in {name}); remove such samples from the file or fix them"
                )
        return block

    def close(self) -> None:
        self.h5.close()


def open_source(path: Path, fmt: str, system: str, keys: Mapping[str, Any]) -> Reader:
    """Open and validate a source file of format ``fmt`` holding ``system``'s data."""
    if not path.exists():
        raise UserError(f"source file {path} does not exist; download it or fix the path")
    if path.is_dir():
        raise UserError(f"source {path} is a directory; name the HDF5 file itself")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"source file {path} is not a readable HDF5 file ({first}); download it again"
        ) from None
    try:
        opener = {"reference": _reference, "pdebench-darcy": _pdebench, "hdf5": _mapped}[fmt]
        return opener(path, h5, system, keys)
    except BaseException:
        h5.close()
        raise


def _dataset(h5: h5py.File, path: Path, key: str, fix: str) -> h5py.Dataset:
    node = h5.get(key)
    if not isinstance(node, h5py.Dataset):
        present = ", ".join(sorted(h5)) or "none"
        raise UserError(f"{path} has no dataset {key!r} (its keys: {present}); {fix}")
    return node


def _shape_error(path: Path, key: str, got: tuple[int, ...], want: str, fix: str) -> UserError:
    return UserError(f"{path}: {key!r} has shape {got}, expected {want}; {fix}")


def _square(path: Path, key: str, shape: tuple[int, ...], fix: str) -> int:
    if shape[-1] != shape[-2] or shape[-1] < 3:
        raise _shape_error(path, key, shape, "a square n x n grid", fix)
    return int(shape[-1])


def _record(*datasets: h5py.Dataset) -> dict[str, dict[str, Any]]:
    return {d.name.lstrip("/"): {"shape": list(d.shape), "dtype": str(d.dtype)} for d in datasets}


def take(dataset: h5py.Dataset, rows: np.ndarray, path: Path) -> np.ndarray:
    """Rows (increasing) of a dataset: one slab read when they are dense, else a selection."""
    try:
        first, last = int(rows[0]), int(rows[-1])
        if last - first + 1 <= 4 * len(rows):
            return np.asarray(dataset[first : last + 1])[rows - first]
        return np.asarray(dataset[np.asarray(rows)])
    except (OSError, RuntimeError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{path}: cannot read {dataset.name.lstrip('/')!r} ({first_line}); the file is "
            "truncated or corrupt: download it again"
        ) from None


# ------------------------------------------------------------------------------ reference
def _reference(path: Path, h5: h5py.File, system: str, _keys: Mapping[str, Any]) -> Reader:
    spec = systems.get_system(system)
    fix = f"is it a file of the reference generator for {system}?"
    fields = _dataset(h5, path, "fields", fix)
    tensor = _dataset(h5, path, "tensor", fix)
    if fields.ndim != 4 or fields.shape[1] != 2:
        raise _shape_error(path, "fields", fields.shape, "(N, 2, n, n) = [f, u]", fix)
    grid = _square(path, "fields", fields.shape, fix)
    width = len(spec.tensor_names)
    if tensor.shape != (fields.shape[0], width):
        raise _shape_error(
            path, "tensor", tensor.shape, f"({fields.shape[0]}, {width}) = {spec.tensor_names}", fix
        )

    def load(rows: np.ndarray) -> Block:
        data = take(fields, rows, path).astype(np.float32)
        columns = take(tensor, rows, path).astype(np.float32)
        return Block(data[:, 0], data[:, 1], coefficients_from_tensor(system, columns), None)

    return Reader(
        path,
        h5,
        int(fields.shape[0]),
        grid,
        _record(fields, tensor),
        [
            "f = fields[:, 0], u = fields[:, 1]",
            f"coefficients from tensor columns {list(spec.tensor_names)} "
            f"(canonical {list(systems.COEFFICIENT_NAMES)})",
        ],
        load,
    )


# ------------------------------------------------------------------------------ PDEBench
def _pdebench(path: Path, h5: h5py.File, system: str, keys: Mapping[str, Any]) -> Reader:
    fix = "is it a PDEBench 2D Darcy flow file (keys nu, tensor, x-coordinate, y-coordinate)?"
    nu = _dataset(h5, path, "nu", fix)
    tensor = _dataset(h5, path, "tensor", fix)
    x = _dataset(h5, path, "x-coordinate", fix)
    y = _dataset(h5, path, "y-coordinate", fix)
    if nu.ndim != 3:
        raise _shape_error(path, "nu", nu.shape, "(N, n, n)", fix)
    grid = _square(path, "nu", nu.shape, fix)
    if tensor.shape != (nu.shape[0], 1, grid, grid):
        raise _shape_error(path, "tensor", tensor.shape, f"({nu.shape[0]}, 1, {grid}, {grid})", fix)
    for name, axis in (("x-coordinate", x), ("y-coordinate", y)):
        if axis.shape != (grid,):
            raise _shape_error(path, name, axis.shape, f"({grid},)", fix)
    beta = float(keys["beta"])

    def load(rows: np.ndarray) -> Block:
        a = take(nu, rows, path).astype(np.float32)
        u = take(tensor, rows, path)[:, 0].astype(np.float32)
        coefficients = np.zeros((len(rows), 6, grid, grid), dtype=np.float32)
        coefficients[:, 0] = coefficients[:, 1] = a
        f = np.full_like(u, beta)
        return Block(f, u, coefficients, np.full(len(rows), beta))

    return Reader(
        path,
        h5,
        int(nu.shape[0]),
        grid,
        _record(nu, tensor, x, y),
        [
            "u = tensor[:, 0]",
            f"f = beta = {beta:g} at every point",
            "D11 = D22 = nu (the coefficient a(x)); D12 = v1 = v2 = omega = 0",
        ],
        load,
        coordinates=(np.asarray(x[()], np.float64), np.asarray(y[()], np.float64)),
        spatial=True,
    )


# ------------------------------------------------------------------------------ mapping
def _mapped(path: Path, h5: h5py.File, system: str, keys: Mapping[str, Any]) -> Reader:
    solution = _dataset(h5, path, str(keys["solution"]), _fix("solution"))
    n = int(solution.shape[0]) if solution.ndim else 0
    if solution.ndim not in (3, 4) or (solution.ndim == 4 and solution.shape[1] != 1):
        raise _shape_error(
            path,
            solution.name.lstrip("/"),
            solution.shape,
            "(N, n, n) or (N, 1, n, n)",
            _fix("solution"),
        )
    grid = _square(path, solution.name.lstrip("/"), solution.shape, _fix("solution"))
    used = [solution]
    notes = [f"u = {solution.name.lstrip('/')}"]

    def field_or_value(role: str, value: Any) -> Any:
        """A number, or the dataset it names (one value per sample, or a field per sample)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        data = _dataset(h5, path, str(value), _fix(role))
        shapes = [(n,), (n, grid, grid), (n, 1, grid, grid)]
        if data.shape not in shapes:
            raise _shape_error(
                path, str(value), data.shape, " or ".join(map(str, shapes)), _fix(role)
            )
        used.append(data)
        return data

    source = field_or_value("source", keys["source"])
    notes.append(f"f = {_describe(source)}")
    mapping = dict(keys.get("coefficients") or {})
    channels = [
        field_or_value(f"coefficients.{name}", mapping.get(name, 0.0))
        for name in systems.COEFFICIENT_NAMES
    ]
    notes.append(
        "coefficients "
        + ", ".join(
            f"{name} = {_describe(c)}"
            for name, c in zip(systems.COEFFICIENT_NAMES, channels, strict=True)
        )
    )
    spatial = any(isinstance(c, h5py.Dataset) and c.ndim > 1 for c in channels)
    param = None
    if keys.get("param") is not None:
        param = _dataset(h5, path, str(keys["param"]), _fix("param"))
        if param.shape != (n,):
            raise _shape_error(path, str(keys["param"]), param.shape, f"({n},)", _fix("param"))
        used.append(param)
    coordinates = None
    if keys.get("x") is not None and keys.get("y") is not None:
        axes = [_dataset(h5, path, str(keys[k]), _fix(k)) for k in ("x", "y")]
        for role, axis in zip(("x", "y"), axes, strict=True):
            if axis.shape != (grid,):
                raise _shape_error(path, str(keys[role]), axis.shape, f"({grid},)", _fix(role))
        used.extend(axes)
        coordinates = (np.asarray(axes[0][()], np.float64), np.asarray(axes[1][()], np.float64))

    def load(rows: np.ndarray) -> Block:
        u = _plane(take(solution, rows, path))
        f = _values(source, rows, u.shape[1:], path)
        shape = (len(rows), 6, grid, grid) if spatial else (len(rows), 6)
        coefficients = np.empty(shape, dtype=np.float32)
        for i, channel in enumerate(channels):
            coefficients[:, i] = _values(channel, rows, shape[2:], path, len(rows))
        values = None if param is None else take(param, rows, path).astype(np.float64)
        return Block(f, u, coefficients, values)

    return Reader(path, h5, n, grid, _record(*used), notes, load, coordinates, spatial)


def _fix(role: str) -> str:
    return f"set source.keys.{role} to the key that holds it"


def _describe(value: Any) -> str:
    return f"{value:g} everywhere" if isinstance(value, float) else repr(value.name.lstrip("/"))


def _plane(data: np.ndarray) -> np.ndarray:
    """(N, n, n) float32 from (N, n, n) or (N, 1, n, n)."""
    return (data[:, 0] if data.ndim == 4 else data).astype(np.float32)


def _values(
    value: Any, rows: np.ndarray, shape: tuple[int, ...], path: Path, count: int | None = None
) -> np.ndarray:
    """A role's values for the rows, broadcast to ``shape`` per sample (B, *shape)."""
    count = len(rows) if count is None else count
    if isinstance(value, float):
        return np.full((count, *shape), value, dtype=np.float32)
    data = take(value, rows, path)
    if data.ndim == 1:  # one value per sample
        per_sample = data.astype(np.float32).reshape(-1, *[1] * len(shape))
        return np.broadcast_to(per_sample, (count, *shape))
    return _plane(data)
