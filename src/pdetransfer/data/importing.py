"""``pdetransfer import``: a dataset from files into the project's format, with provenance.

A dataset entry of a study may name a ``source`` instead of generating its data::

    darcy_b1:
      source: {format: pdebench-darcy, path: data/2D_DarcyFlow_beta1.0_Train.hdf5, beta: 1.0,
               downsample: 4, checksum: <sha256, optional>}
      grid: 32
      train: 256
      val: 64
      test: 64

The import writes ``train.h5``, ``val.h5`` and ``test.h5`` in the layout of
:mod:`pdetransfer.data.datasets`, so the rest of the workflow reads them as generated files.
Decisions:

- A single source file is split by one seeded permutation of its rows: train is a prefix of
  it, test a prefix of its reverse, val the block before test. Sets are disjoint, a larger
  train or test set contains the smaller one, and changing the train size changes neither
  val nor test. ``path`` may instead map each split to its own file (the reference
  generator writes one per split); each split then takes a prefix of its file.
- Downsampling is explicit: ``source.downsample`` k keeps every k-th point along each axis
  (offset 0), and the source grid over k must equal the dataset's ``grid``.
- Spatially varying coefficients fill the canonical channels (Darcy: D11 = D22 = a(x), f =
  beta), stored as ``coefficient_fields``; a model trained on generated data reads them.
- The PDE residual is computed at import on the source's own grid (before downsampling,
  where the source's solver defined it) and stored per sample; ``pdetransfer check`` judges
  it and recomputes it from the file when nothing was downsampled.
- Provenance attributes: source path (as given and resolved), its SHA-256 and whether a
  configured checksum was verified, the keys read with their shapes, the source rows of
  every sample and what the conversion did, in words.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.data import darcy, systems
from pdetransfer.data.check import realised_psi, spectral_residual
from pdetransfer.data.datasets import FORMAT_VERSION, PARAM_TOLERANCE, READ_BLOCK, SPLITS
from pdetransfer.data.import_spec import (
    PERIODIC,
    ImportSpec,
    is_imported,
    open_readers,
    parse_entry,
)
from pdetransfer.data.source_formats import Block, Reader
from pdetransfer.errors import UserError
from pdetransfer.progress import Progress

HASH_BLOCK = 1 << 22


# ---------------------------------------------------------------------------- conversion
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def split_seed(seed: int, n_rows: int) -> int:
    """The permutation's seed: a stable hash of the base seed and the file's row count."""
    key = f"pdetransfer-import|{seed}|{n_rows}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def split_rows(n_rows: int, sizes: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint source rows of each split (see the module docstring), in file order of use."""
    order = np.random.default_rng(split_seed(seed, n_rows)).permutation(n_rows)
    backwards = order[::-1]
    return {
        "train": order[: sizes["train"]],
        "test": backwards[: sizes["test"]],
        "val": backwards[sizes["test"] : sizes["test"] + sizes["val"]],
    }


def import_dataset(
    spec: ImportSpec, out_dir: str | Path, seed: int, progress: bool = True
) -> dict[str, Path]:
    """Convert the spec's source into ``out_dir/{train,val,test}.h5``; return their paths.

    All three files are renamed into place together, only when every one is complete.
    """
    out_dir = Path(out_dir)
    with open_readers(spec) as readers:
        digests = {}
        for part, reader in readers.items():
            digests[part] = sha256(reader.path)
            want = spec.checksums.get(part)
            if want is not None and digests[part] != want:
                raise UserError(
                    f"{reader.path}: SHA-256 {digests[part]} does not match {spec.where}.source."
                    f"checksum {want}; the file is damaged or another version: download it again "
                    "or correct the checksum"
                )
        plan = {
            split: (
                (readers[split], np.arange(spec.sizes[split]))
                if spec.split_files
                else (readers["all"], split_rows(readers["all"].n_samples, spec.sizes, seed)[split])
            )
            for split in SPLITS
        }
        total = sum(spec.sizes.values())
        bar = Progress(total, f"import {out_dir.name}", unit="samples", enabled=progress)
        with contextlib.ExitStack() as stack:
            stack.enter_context(bar)
            temporary = {
                split: stack.enter_context(atomic_path(out_dir / f"{split}.h5")) for split in SPLITS
            }
            for split, (reader, rows) in plan.items():
                part = split if spec.split_files else "all"
                _write_split(spec, split, reader, rows, temporary[split], seed, digests[part], bar)
    return {split: out_dir / f"{split}.h5" for split in SPLITS}


def derive_param(system: str, block: Block) -> np.ndarray:
    """Each sample's physics parameter, from the file or from its coefficients and u."""
    if block.param is not None:
        return block.param
    c = block.coefficients.astype(np.float64)
    if system == "poisson":  # trace of kappa K = kappa (1 + e)
        return (c[:, 0] + c[:, 1]) / systems.KAPPA - 1.0
    if system == "advdiff":
        return realised_psi(np.fft.rfft2(block.u.astype(np.float64)), block.coefficients)
    if system == "helmholtz":
        return c[:, 5]
    if system == "darcy":  # f = beta, one value per sample
        flat = block.f.reshape(len(block.f), -1).astype(np.float64)
        return flat[:, 0]
    return np.zeros(len(block.f))


def skip_reason(spec: ImportSpec, reader: Reader) -> str | None:
    """Why the residual of the spec's data cannot be checked, or None if it can."""
    if spec.system in PERIODIC:
        return None
    if spec.system != "darcy":
        return "the operator of an external system is not known to pdetransfer"
    if reader.coordinates is None:
        return "the source names no x / y coordinates, so the boundary is not known"
    if darcy.layout(*reader.coordinates) is None:
        return (
            "the coordinates are neither cell centres nor vertices of the unit square, so the "
            "boundary is not known"
        )
    return None


RESIDUALS = ("source_residual", "source_residual_floor", "source_boundary")


def native_residual(
    spec: ImportSpec, reader: Reader, block: Block
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample residual, its rounding floor and (vertex grids) the boundary ratio, on the
    source grid; call only where :func:`skip_reason` is None."""
    if spec.system in PERIODIC:
        residual, floor = spectral_residual(block.f, block.u, block.coefficients)
        return residual, floor, np.zeros(len(block.f))
    assert reader.coordinates is not None
    a = block.coefficients[:, 0]
    if a.ndim == 1:  # one value per sample
        a = np.broadcast_to(a[:, None, None], block.u.shape)
    layout = darcy.layout(*reader.coordinates)
    assert layout is not None
    return darcy.residual(a, block.u, block.f, layout)


def _validate_darcy(spec: ImportSpec, reader: Reader, block: Block, rows: np.ndarray) -> None:
    """Darcy's canonical form: D11 = D22 = a > 0, nothing else, f one constant per sample."""
    count = len(rows)
    c = block.coefficients.reshape(count, 6, -1)
    f = block.f.reshape(count, -1)
    checks = (
        ((c[:, 0] == c[:, 1]).all(axis=1), "D11 differs from D22"),
        ((c[:, 2:] == 0).all(axis=(1, 2)), "D12, v or omega is not 0"),
        ((c[:, 0] > 0).all(axis=1), "a(x) is not positive everywhere"),
        ((f == f[:, :1]).all(axis=1), "f is not one constant beta"),
    )
    for ok, problem in checks:
        if not ok.all():
            raise UserError(
                f"{reader.path}: sample {int(rows[np.argmin(ok)])} is not a Darcy problem "
                f"({problem}); check {spec.where}.source.keys or choose system external"
            )


def _read_in_order(reader: Reader, rows: np.ndarray) -> Block:
    """Rows in the given order (the file is read in increasing order)."""
    order = np.argsort(rows)
    block = reader.read(rows[order])
    undo = np.argsort(order)
    param = None if block.param is None else block.param[undo]
    return Block(block.f[undo], block.u[undo], block.coefficients[undo], param)


def _write_split(
    spec: ImportSpec,
    split: str,
    reader: Reader,
    rows: np.ndarray,
    out: Path,
    seed: int,
    digest: str,
    bar: Progress,
) -> None:
    n, k = len(rows), spec.downsample
    skipped = skip_reason(spec, reader)
    fsys = systems.file_system(spec.system)
    with h5py.File(out, "w", track_order=True) as h5:
        made = _create(h5, n, spec.grid, len(fsys.tensor_names), reader.spatial, skipped is None)
        params = np.empty(n)
        for start in range(0, n, READ_BLOCK):
            stop = min(start + READ_BLOCK, n)
            block = _read_in_order(reader, rows[start:stop])
            if spec.system == "darcy":
                _validate_darcy(spec, reader, block, rows[start:stop])
            params[start:stop] = derive_param(spec.system, block)
            if skipped is None:
                for name, values in zip(
                    RESIDUALS, native_residual(spec, reader, block), strict=True
                ):
                    made[name][start:stop] = values
            made["fields"][start:stop] = np.stack([block.f, block.u], axis=1)[..., ::k, ::k]
            if reader.spatial:
                planes = block.coefficients[..., ::k, ::k]
                made["coefficient_fields"][start:stop] = planes
                coefficients = planes.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
            else:
                coefficients = block.coefficients
            made["coefficients"][start:stop] = coefficients
            made["tensor"][start:stop] = (
                _tensor(spec.system, coefficients)
                if spec.system in PERIODIC
                else params[start:stop, None]
            )
            bar.update(stop - start)
        made["param"][:] = params
        made["sparsity"][:] = np.nan
        made["source_rows"][:] = rows
        lo_hi = _final_range(spec, reader, rows, params)
        _write_attrs(h5, spec, split, reader, n, seed, digest, lo_hi, skipped)


def _tensor(system: str, coefficients: np.ndarray) -> np.ndarray:
    """The reference's per-system columns from canonical rows (inverse of the checker's map)."""
    if system == "helmholtz":
        return coefficients[:, [0, 5]]
    width = len(systems.file_system(system).tensor_names)
    return coefficients[:, :width]


def _final_range(
    spec: ImportSpec, reader: Reader, rows: np.ndarray, params: np.ndarray
) -> tuple[float, float]:
    stated = spec.range_or_beta()
    if stated is None:  # an external system without a stated range: the realised one
        return (float(params.min()), float(params.max())) if params.size else (0.0, 0.0)
    lo, hi = stated
    slack = PARAM_TOLERANCE * max(abs(lo), abs(hi), 1e-300)
    outside = np.flatnonzero((params < lo - slack) | (params > hi + slack))
    if outside.size:
        i = outside[0]
        name = systems.file_system(spec.system).param_name
        raise UserError(
            f"{reader.path}: sample {int(rows[i])} has {name} = {params[i]:.6g}, outside "
            f"{spec.where}.range [{lo:g}, {hi:g}]; widen the range or check the system"
        )
    return lo, hi


def _create(
    h5: h5py.File, n: int, grid: int, width: int, spatial: bool, checked: bool
) -> dict[str, h5py.Dataset]:
    def make(name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]) -> Any:
        return h5.create_dataset(name, shape, dtype=dtype, chunks=chunks, track_times=False)

    rows = max(1, min(n, 4096))
    made = {
        "fields": make("fields", (n, 2, grid, grid), np.float32, (1, 2, grid, grid)),
        "tensor": make("tensor", (n, width), np.float32, (rows, width)),
        "coefficients": make("coefficients", (n, 6), np.float32, (rows, 6)),
        "param": make("param", (n,), np.float64, (rows,)),
        "sparsity": make("sparsity", (n,), np.float64, (rows,)),
        "source_rows": make("source_rows", (n,), np.int64, (rows,)),
    }
    if checked:
        for name in RESIDUALS:
            made[name] = make(name, (n,), np.float64, (rows,))
    if spatial:
        made["coefficient_fields"] = make(
            "coefficient_fields", (n, 6, grid, grid), np.float32, (1, 6, grid, grid)
        )
    made["fields"].attrs["layout"] = "sample, channel [f, u], y, x"
    made["coefficients"].attrs["columns"] = json.dumps(list(systems.COEFFICIENT_NAMES))
    return made


def _write_attrs(
    h5: h5py.File,
    spec: ImportSpec,
    split: str,
    reader: Reader,
    n: int,
    seed: int,
    digest: str,
    param_range: tuple[float, float],
    skipped: str | None,
) -> None:
    fsys = systems.file_system(spec.system)
    k = spec.downsample
    conversions = [*reader.conversions, "stored as float32"]
    if k > 1:
        conversions.append(
            f"downsampled {reader.grid} -> {spec.grid}: every {k}th point along each axis from "
            "the first (the residual was computed before, on the source grid)"
        )
    if spec.split_files:
        conversions.append(f"{split}: the first {n} rows of its own file")
    else:
        conversions.append(
            f"{split}: {n} rows of a permutation of the file's {reader.n_samples} rows seeded "
            f"by {split_seed(seed, reader.n_samples)} (train its prefix, test the prefix of its "
            "reverse, val the block before test); source_rows lists them"
        )
    residual = {
        "method": "spectral (periodic)" if spec.system in PERIODIC else "finite volume (Dirichlet)",
        "grid": reader.grid,
        "tolerance": spec.residual_tolerance,
        "skipped": skipped,
    }
    record = {
        "origin": "import",
        "source_format": spec.format,
        "source_path": str(reader.path),
        "source_resolved": str(reader.path.resolve()),
        "source_sha256": digest,
        "checksum_verified": bool(spec.checksums),
        "source_keys": json.dumps(reader.keys, sort_keys=True),
        "source_grid": reader.grid,
        "source_samples": reader.n_samples,
        "downsample": k,
        "conversions": json.dumps(conversions),
        "residual_check": json.dumps(residual),
    }
    attrs = h5.attrs
    attrs["system"] = spec.system
    attrs["param_name"] = fsys.param_name
    attrs["param_range"] = np.asarray(param_range, dtype=np.float64)
    attrs["split"] = split
    attrs["grid"] = spec.grid
    attrs["n_samples"] = n
    attrs["base_seed"] = seed
    attrs["seed"] = split_seed(seed, reader.n_samples)
    attrs["kappa"] = systems.KAPPA if spec.system in PERIODIC else np.nan
    attrs["pdetransfer_version"] = __version__
    attrs["format_version"] = FORMAT_VERSION
    attrs["tensor_columns"] = json.dumps(list(fsys.tensor_names))
    attrs["coefficient_columns"] = json.dumps(list(systems.COEFFICIENT_NAMES))
    for key, value in record.items():
        attrs[key] = value
    if reader.coordinates is not None:
        attrs["x"] = reader.coordinates[0][::k]
        attrs["y"] = reader.coordinates[1][::k]
    attrs["config"] = json.dumps(
        {
            "format": spec.format,
            "paths": {part: str(path) for part, path in spec.paths.items()},
            "checksums": spec.checksums,
            "system": spec.system,
            "range": list(param_range),
            "beta": spec.beta,
            "keys": spec.keys,
            "downsample": k,
            "grid": spec.grid,
            "sizes": spec.sizes,
            "residual_tolerance": spec.residual_tolerance,
            "base_seed": seed,
            "format_version": FORMAT_VERSION,
            "pdetransfer_version": __version__,
        },
        sort_keys=True,
    )


# ---------------------------------------------------------------------------- command
def _entry_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], str, int]:
    """The dataset entry, its config key and the split's base seed."""
    if args.entry_json is not None:
        try:
            entry = json.loads(args.entry_json)
        except json.JSONDecodeError as err:
            raise UserError(f"--entry-json is not valid JSON ({err.msg})") from None
        return entry, f"datasets.{args.dataset or 'imported'}", args.seed or 0
    if args.dataset is None:
        raise UserError("--config needs --dataset, the name of the entry under 'datasets'")
    try:
        config = yaml.safe_load(Path(args.config).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read config {args.config}: {err}") from None
    entry = ((config or {}).get("datasets") or {}).get(args.dataset)
    if not isinstance(entry, Mapping):
        raise UserError(f"{args.config} has no dataset {args.dataset!r} under 'datasets'")
    if not is_imported(entry):
        raise UserError(f"datasets.{args.dataset} in {args.config} names no source to import")
    seed = config.get("data_seed", 0) if args.seed is None else args.seed
    return dict(entry), f"datasets.{args.dataset}", int(seed)


def import_command(args: argparse.Namespace) -> int:
    """``pdetransfer import``."""
    entry, where, seed = _entry_from_args(args)
    spec = parse_entry(entry, where)
    out_dir = Path(args.out_dir)
    if not args.force:
        existing = [out_dir / f"{s}.h5" for s in SPLITS if (out_dir / f"{s}.h5").exists()]
        if existing:
            raise UserError(f"output {existing[0]} already exists; pass --force to overwrite it")
    written = import_dataset(spec, out_dir, seed, progress=not args.quiet)
    with h5py.File(written["train"], "r") as h5:
        check = json.loads(h5.attrs["residual_check"])
    note = f"residual check skipped: {check['skipped']}" if check["skipped"] else "residuals stored"
    print(
        f"imported {spec.format} {', '.join(str(p) for p in spec.paths.values())} as {spec.system}"
        f" on {spec.grid}x{spec.grid} into {out_dir}: "
        + ", ".join(f"{s} {spec.sizes[s]}" for s in SPLITS)
        + f"; {note} (run pdetransfer check on each file)"
    )
    return 0
