"""Darcy flow, -div(a(x) grad u) = f on the unit square with u = 0 on its boundary: a residual.

The periodic systems are checked spectrally (:mod:`pdetransfer.data.check`); Darcy's Dirichlet
problem with a piecewise constant a(x) is not periodic, so its data are checked with their own
discretisation: the standard five-point finite-volume scheme, face coefficients the harmonic
mean of the two cells (the flux-continuous choice for a discontinuous a). Which points the
samples sit on decides where the boundary is:

- cell centres ``(i + 1/2) h``, ``h = 1/n`` (PDEBench's coordinates, as far as its files
  show): the boundary lies on the outer cell faces, half a cell beyond the outer points;
- vertices ``i h``, ``h = 1/(n - 1)``: the outer points are the boundary; the residual covers
  the interior points and the boundary values must vanish.

The residual is judged as generated data are: against the float32 rounding floor of the
stored u, f and a, plus a tolerance (a file from another discretisation needs a larger one).
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("cell", "vertex")
COORDINATE_TOLERANCE = 1e-4  # relative to the spacing


def layout(x: np.ndarray, y: np.ndarray) -> str | None:
    """``cell`` or ``vertex`` if both coordinate vectors are such a grid of [0, 1], else None."""
    found = {_axis_layout(np.asarray(axis, dtype=np.float64)) for axis in (x, y)}
    return found.pop() if len(found) == 1 else None


def _axis_layout(axis: np.ndarray) -> str | None:
    n = axis.size
    if axis.ndim != 1 or n < 3:
        return None
    for name, points in (
        ("cell", (np.arange(n) + 0.5) / n),
        ("vertex", np.arange(n) / (n - 1)),
    ):
        if np.abs(axis - points).max() <= COORDINATE_TOLERANCE / n:
            return name
    return None


def _face_flux_operator(a: np.ndarray, u: np.ndarray, h: float, axis: int) -> np.ndarray:
    """-d/dx(a du/dx) along one axis of cell-centred (B, n, n) data, u = 0 on the outer faces."""
    a1, a2 = np.swapaxes(a, axis, -1), np.swapaxes(u, axis, -1)
    face = 2.0 * a1[..., :-1] * a1[..., 1:] / (a1[..., :-1] + a1[..., 1:])
    inner = face * (a2[..., 1:] - a2[..., :-1]) / h
    lower = a1[..., :1] * (a2[..., :1] - 0.0) / (0.5 * h)
    upper = a1[..., -1:] * (0.0 - a2[..., -1:]) / (0.5 * h)
    flux = np.concatenate([lower, inner, upper], axis=-1)
    return np.swapaxes(-(flux[..., 1:] - flux[..., :-1]) / h, axis, -1)


def _column_weights(a: np.ndarray, h: float, axis: int, grid: str) -> tuple[np.ndarray, ...]:
    """Per point, along one axis: the scheme's diagonal entry and the sum of its squared
    off-diagonal entries in the point's column (for the rounding floor). A cell grid's outer
    faces couple to the boundary at half a cell (coefficient 2a); a vertex grid has none."""
    a1 = np.swapaxes(a, axis, -1)
    face = 2.0 * a1[..., :-1] * a1[..., 1:] / (a1[..., :-1] + a1[..., 1:])
    zero = np.zeros_like(a1[..., :1])
    first, last = (2.0 * a1[..., :1], 2.0 * a1[..., -1:]) if grid == "cell" else (zero, zero)
    left = np.concatenate([first, face], axis=-1)
    right = np.concatenate([face, last], axis=-1)
    off_left = np.concatenate([zero, face], axis=-1)
    off_right = np.concatenate([face, zero], axis=-1)
    diagonal = (left + right) / h**2
    off = (off_left**2 + off_right**2) / h**4
    return np.swapaxes(diagonal, axis, -1), np.swapaxes(off, axis, -1)


def operator(a: np.ndarray, u: np.ndarray, grid: str) -> np.ndarray:
    """-div(a grad u) of (B, n, n) float64 samples at the points the scheme defines it on:
    every cell for ``cell``, the (n - 2)^2 interior points for ``vertex``."""
    n = u.shape[-1]
    if grid == "cell":
        h = 1.0 / n
        return _face_flux_operator(a, u, h, -1) + _face_flux_operator(a, u, h, -2)
    h = 1.0 / (n - 1)
    out = np.zeros((*u.shape[:-2], n - 2, n - 2))
    for axis in (-1, -2):
        a1, u1 = np.swapaxes(a, axis, -1), np.swapaxes(u, axis, -1)
        face = 2.0 * a1[..., :-1] * a1[..., 1:] / (a1[..., :-1] + a1[..., 1:])
        flux = face * (u1[..., 1:] - u1[..., :-1]) / h
        div = -(flux[..., 1:] - flux[..., :-1]) / h  # (..., other, n - 2)
        div = np.swapaxes(div, axis, -1)
        out += div[..., 1:-1, :] if axis == -1 else div[..., :, 1:-1]
    return out


def residual(
    a: np.ndarray, u: np.ndarray, f: np.ndarray, grid: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: relative residual |L u - f| / |f|, its float32 rounding floor, and (vertex
    grids) max |u| on the boundary relative to max |u| (0 for cell grids).

    Arrays are (B, n, n) float32 as stored; the residual is computed in float64.
    """
    a64, u64, f64 = (np.asarray(x, dtype=np.float64) for x in (a, u, f))
    lu = operator(a64, u64, grid)
    inside = (slice(None), slice(1, -1), slice(1, -1)) if grid == "vertex" else (slice(None),) * 3
    rhs = f64[inside]
    norm = np.linalg.norm(rhs, axis=(1, 2))
    norm = np.where(norm > 0, norm, 1.0)
    rel = np.linalg.norm(lu - rhs, axis=(1, 2)) / norm
    floor = _rounding_floor(a64, u, f, grid, inside) / norm
    if grid == "vertex":
        edge = np.ones(u.shape[-2:], dtype=bool)
        edge[1:-1, 1:-1] = False
        peak = np.abs(u64).max(axis=(1, 2))
        boundary = np.abs(u64[:, edge]).max(axis=1) / np.where(peak > 0, peak, 1.0)
    else:
        boundary = np.zeros(u.shape[0])
    return rel, floor, boundary


def _rounding_floor(
    a: np.ndarray, u32: np.ndarray, f32: np.ndarray, grid: str, inside: tuple[slice, ...]
) -> np.ndarray:
    """|L du| + |df| for white rounding noise du, df of the stored float32 u and f.

    A column of L (the scheme's matrix) spreads a point's rounding error over the point and its
    neighbours, so E|L du|^2 = sum over points of |column|^2 ulp(u)^2 / 12 (the per-point
    analogue of the spectral check's rms symbol); on a vertex grid the boundary points' columns
    are counted whole, a slight overestimate where u is ~0 anyway.
    """
    var_u = np.spacing(np.abs(np.asarray(u32, np.float32))).astype(np.float64) ** 2 / 12.0
    var_f = np.spacing(np.abs(np.asarray(f32, np.float32))).astype(np.float64) ** 2 / 12.0
    n = a.shape[-1]
    h = 1.0 / n if grid == "cell" else 1.0 / (n - 1)
    d1, o1 = _column_weights(a, h, -1, grid)
    d2, o2 = _column_weights(a, h, -2, grid)
    column = (d1 + d2) ** 2 + o1 + o2
    du = np.sqrt((column * var_u).sum(axis=(1, 2)))
    df = np.sqrt(var_f[inside].sum(axis=(1, 2)))
    return du + df
