"""Dataset files as in-memory tensors for training and evaluation, with the study's subsetting.

One or several HDF5 files (several = mixed physics) are read through
:func:`pdetransfer.data.datasets.read_samples` and concatenated. Only ``f``, ``u`` and the six
coefficients are held (the 7-channel input is built per batch by the model), so a set costs
``8 n^2`` bytes per sample: 32K samples at n = 128 are 4.3 GB, 4K samples 0.5 GB. Files with
spatially varying coefficients (imported Darcy data) hold six coefficient planes instead, 4x
that; a set mixing them with constant-coefficient files holds every sample's planes.

The downstream size N of the data-scaling study is the first N entries of a permutation of the
train samples seeded by the run seed, so for one seed every smaller set is a subset of every
larger one and runs differ only in how much data they see. The training order is a fresh
permutation every epoch, derived from ``(seed, epoch)`` alone so that a resumed run replays
exactly the batches the interrupted one would have seen without saving any sampler state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from pdetransfer.data.datasets import DatasetInfo, read_info, read_samples
from pdetransfer.errors import UserError


def file_identity(info: DatasetInfo) -> dict[str, object]:
    """What identifies a dataset's content, independent of where the file lies."""
    return {
        "system": info.system,
        "split": info.split,
        "param_range": [float(v) for v in info.param_range],
        "grid": int(info.grid),
        "n_samples": int(info.n_samples),
        "seed": int(info.seed),
    }


def file_record(info: DatasetInfo) -> dict[str, object]:
    """Provenance of one file for checkpoints and summaries: its path plus its identity."""
    return {"path": os.fspath(info.path), **file_identity(info)}


def read_infos(paths: Sequence[str | os.PathLike[str]], split: str | None) -> list[DatasetInfo]:
    """Validate the files (existence, layout, one grid) and, if given, that all are ``split``."""
    infos = [read_info(path) for path in paths]
    for info in infos:
        if split is not None and info.split != split:
            raise UserError(f"{info.path} is a {info.split!r} split, expected {split!r} here")
    grids = {int(info.grid) for info in infos}
    if len(grids) > 1:
        listing = ", ".join(f"{info.path} (n={info.grid})" for info in infos)
        raise UserError(f"the files do not share one grid: {listing}")
    return infos


def subset_indices(total: int, n: int, seed: int) -> np.ndarray:
    """The first ``n`` of a seeded permutation of ``range(total)``, sorted.

    The permutation depends only on ``(total, seed)``, so for a seed the subsets are nested.
    Sorting does not change the set and lets HDF5 read it in file order.
    """
    if not 1 <= n <= total:
        raise UserError(f"--n-train {n} is not between 1 and the {total} training samples")
    order = np.random.default_rng([seed, total]).permutation(total)
    return np.sort(order[:n])


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch, a function of ``(seed, epoch)`` only (see module doc)."""
    return torch.from_numpy(np.random.default_rng([seed, epoch, n]).permutation(n))


@dataclass
class FieldSet(Dataset):
    """Samples of one or several dataset files held as tensors.

    ``f`` and ``u`` are ``(N, n, n)`` float32, ``coefficients`` ``(N, 6)`` (or, with spatially
    varying coefficients, ``(N, 6, n, n)``) float32 in the canonical order; ``files`` records
    each file's provenance and how many samples it gave.
    """

    f: torch.Tensor
    u: torch.Tensor
    coefficients: torch.Tensor
    files: list[dict[str, object]]

    def __len__(self) -> int:
        return int(self.f.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.f[index], self.coefficients[index], self.u[index]

    @property
    def grid(self) -> int:
        return int(self.f.shape[-1])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f, coefficients, u)`` of the given samples, gathered in one indexing operation."""
        return self.f[indices], self.coefficients[indices], self.u[indices]


def load_fields(infos: Sequence[DatasetInfo], n: int | None = None, seed: int = 0) -> FieldSet:
    """Read the files' samples, all of them or (``n`` given) the run's N-subset of their union.

    The subset is drawn over the concatenation of the files, so a mixed-physics subset holds
    each system in proportion to its file's size on average.
    """
    sizes = [int(info.n_samples) for info in infos]
    total = sum(sizes)
    chosen = np.arange(total) if n is None else subset_indices(total, n, seed)
    starts = np.cumsum([0, *sizes])
    fs, us, cs, files = [], [], [], []
    for info, lo, hi in zip(infos, starts[:-1], starts[1:], strict=True):
        local = chosen[(chosen >= lo) & (chosen < hi)] - lo
        files.append({**file_record(info), "used": len(local)})
        if len(local) == 0:
            continue
        f, u, c = read_samples(info.path, None if len(local) == hi - lo else local)
        if not (np.isfinite(f).all() and np.isfinite(u).all() and np.isfinite(c).all()):
            raise UserError(f"{info.path} holds non-finite values (NaN or infinity); regenerate it")
        fs.append(torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)))
        us.append(torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32)))
        cs.append(torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32)))
    if any(c.dim() > 2 for c in cs):  # constants become planes beside spatial coefficients
        n_grid = fs[0].shape[-1]
        cs = [c if c.dim() > 2 else c[..., None, None].expand(-1, -1, n_grid, n_grid) for c in cs]
    return FieldSet(_join(fs), _join(us), _join(cs), files)


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate, without copying the common single-file case (halves peak memory)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
