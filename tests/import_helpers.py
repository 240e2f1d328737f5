"""Small source files in the layouts ``pdetransfer import`` reads, written by the tests.

The Darcy samples are solved with the check's own finite-volume scheme (a dense solve of its
matrix, built by applying :func:`pdetransfer.data.darcy.operator` to unit vectors), so a
correct file passes the residual check at the float32 floor; the reference files are this
project's generated files reduced to the reference generator's two keys.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from pdetransfer.data import darcy
from pdetransfer.data.generate import generate_dataset


def piecewise_coefficients(n_samples: int, grid: int, seed: int) -> np.ndarray:
    """(N, grid, grid) a(x) taking 12 or 3 on a 4 x 4 pattern of blocks (as FNO's Darcy)."""
    rng = np.random.default_rng(seed)
    blocks = np.where(rng.random((n_samples, 4, 4)) < 0.5, 12.0, 3.0)
    step = grid // 4
    return blocks.repeat(step, axis=1).repeat(step, axis=2)


def darcy_solve(a: np.ndarray, beta: float, layout: str = "cell") -> np.ndarray:
    """u with -div(a grad u) = beta, u = 0 on the boundary, in the check's scheme (B, n, n)."""
    out = np.zeros(a.shape)
    n = a.shape[-1]
    inner = n if layout == "cell" else n - 2
    for i, sample in enumerate(a):
        units = np.zeros((inner * inner, n, n))
        index = np.arange(inner * inner)
        offset = 0 if layout == "cell" else 1
        units[index, index // inner + offset, index % inner + offset] = 1.0
        columns = darcy.operator(np.broadcast_to(sample, units.shape), units, layout)
        matrix = columns.reshape(inner * inner, inner * inner).T
        solution = np.linalg.solve(matrix, np.full(inner * inner, beta))
        out[i, offset : offset + inner, offset : offset + inner] = solution.reshape(inner, inner)
    return out


def cell_centres(grid: int) -> np.ndarray:
    return (np.arange(grid) + 0.5) / grid


def write_pdebench_darcy(path: Path, n_samples: int, grid: int, beta: float, seed: int) -> Path:
    """A PDEBench 2D Darcy flow file: nu (N, n, n), tensor (N, 1, n, n), coordinates (n,)."""
    a = piecewise_coefficients(n_samples, grid, seed)
    u = darcy_solve(a, beta)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["nu"] = a.astype(np.float32)
        h5["tensor"] = u[:, None].astype(np.float32)
        h5["x-coordinate"] = cell_centres(grid).astype(np.float32)
        h5["y-coordinate"] = cell_centres(grid).astype(np.float32)
    return path


def write_reference(
    path: Path,
    system: str,
    param_range: tuple[float, float],
    n_samples: int,
    grid: int,
    seed: int = 7,
) -> Path:
    """A file of the reference generator's layout, fields (N, 2, n, n) and tensor (N, T), cut
    from a generated file that stays beside it (``generated(path)``) for comparisons."""
    full = generated(path)
    generate_dataset(system, param_range, "train", n_samples, grid, seed, full, progress=False)
    with h5py.File(full, "r") as source, h5py.File(path, "w") as h5:
        h5["fields"] = source["fields"][()]
        h5["tensor"] = source["tensor"][()]
    return path


def generated(reference: Path) -> Path:
    return reference.with_suffix(".generated.h5")


def write_mapped_darcy(path: Path, n_samples: int, grid: int, beta: float, seed: int) -> Path:
    """Darcy data under other names: a vertex grid with its boundary points, as FNO's files."""
    a = piecewise_coefficients(n_samples, grid, seed)
    u = darcy_solve(a, beta, layout="vertex")
    vertices = np.arange(grid) / (grid - 1)
    with h5py.File(path, "w") as h5:
        h5["inputs/permeability"] = a[:, None].astype(np.float32)
        h5["outputs/pressure"] = u.astype(np.float32)
        h5["forcing"] = np.full(n_samples, beta)
        h5["mesh/x"] = vertices
        h5["mesh/y"] = vertices
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """A loopback HTTP server of ``directory`` for the length of the block; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
