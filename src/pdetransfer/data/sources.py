"""Random Gaussian-bump sources, built for a whole batch with small matrix products.

A source is a sum of up to 144 Gaussians ``exp(-|x - c|^2 / (2 sigma^2))``, sigma = 1/32, with
centres on a 12 x 12 grid of spacing 2 sigma centred at (0.5, 0.5) (docs/science.md). Each bump is on
with probability ``1 - s`` (sparsity ``s`` drawn from {0.2, 0.4, 0.6, 0.8}) with amplitude
U(1e-3, 1); at least one is on.

Conventions and decisions:

- Arrays are ``f[..., j, i]`` = value at ``(x, y) = (i / n, j / n)``: the last axis is x, as in
  the reference generator (``np.meshgrid(x, y)``), so its users read our files the same way.
- The domain is the periodic unit square, so each bump is a *periodic* Gaussian evaluated at
  the minimum-image distance. The outermost centres sit 5 sigma from the boundary; without
  wrapping, their tails (e^-12.5 ~ 4e-6) would make f discontinuous across the periodic
  boundary. The minimum-image cut sits 16 sigma away, where the Gaussian is e^-128 ~ 3e-56,
  below float64 resolution relative to the peak, so the result is smooth to machine precision.
- Everything is defined in physical coordinates. The normalising maximum is taken on a fixed
  reference grid (``REFERENCE_GRID`` = 128, the paper's resolution; see ``reference_max``)
  rather than on the
  generation grid, so the same draw at n = 32, 64, 128 is the same function sampled at
  different resolutions (at n = 128 this is exactly "divided by its max"; grids whose points
  are a subset of the reference grid have max <= 1). The mean-free variant subtracts the grid
  mean, which equals the continuous mean up to aliasing, a relative error below
  exp(-2 pi^2 sigma^2 n^2) (< 3e-9 for n >= 32), and keeps f exactly consistent with u.
- A bump is separable, ``g_i(y) g_j(x)``, so a batch of sources is ``G^T A G`` with A the
  (B, 12, 12) amplitude matrices and G the (12, n) table of 1-D profiles; its 2-D DFT is
  likewise ``Gf^T A Gh`` with the 1-D DFTs of the profiles (evaluated with real products). The
  generator never needs a forward FFT of the source.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SIGMA = 1.0 / 32.0
BUMPS_PER_AXIS = 12
SPACING = 2.0 * SIGMA
CENTRE = 0.5
SPARSITIES = (0.2, 0.4, 0.6, 0.8)
AMPLITUDE_RANGE = (1e-3, 1.0)
REFERENCE_GRID = 128

N_BUMPS = BUMPS_PER_AXIS * BUMPS_PER_AXIS
# Uniform draws one source consumes: sparsity, on/off per bump, amplitude per bump.
N_SOURCE_DRAWS = 1 + 2 * N_BUMPS


def centres() -> np.ndarray:
    """The 12 centre coordinates along one axis (the same along x and y)."""
    offsets = np.arange(BUMPS_PER_AXIS) - (BUMPS_PER_AXIS - 1) / 2.0
    return CENTRE + SPACING * offsets


def grid_points(n: int) -> np.ndarray:
    """The n grid coordinates ``j / n`` of the periodic unit interval."""
    return np.arange(n) / n


@functools.lru_cache(maxsize=8)
def profiles(n: int) -> np.ndarray:
    """Periodic 1-D Gaussian profiles, shape (12, n): row k is bump k sampled on the grid."""
    d = grid_points(n)[None, :] - centres()[:, None]
    d = np.mod(d + 0.5, 1.0) - 0.5  # minimum-image distance on the unit circle
    table = np.exp(-(d**2) / (2.0 * SIGMA**2))
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=8)
def _spectral_operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Real operands whose products give the rfft2 of ``G^T A G`` as interleaved (re, im) pairs.

    With ``Gf`` the full 1-D DFT of the profiles (y axis) and ``Gh`` the half one (x axis),
    ``rfft2(G^T A G) = Gf^T A Gh``. Splitting real and imaginary parts,
    ``[Re Gf^T A | Im Gf^T A] @ [[Re Gh, Im Gh], [-Im Gh, Re Gh]]`` with the result columns
    interleaved (re, im) per frequency is that spectrum laid out as complex128 in memory: a
    real matrix product yields it with no copy and no FFT.
    """
    full = np.fft.fft(profiles(n), axis=1)  # (12, n)
    half = full[:, : n // 2 + 1]  # (12, n//2+1)
    left = np.stack([full.real.T, full.imag.T])  # (2, n, 12)
    right = np.empty((2 * BUMPS_PER_AXIS, 2 * half.shape[1]))
    right[:BUMPS_PER_AXIS, 0::2] = half.real
    right[BUMPS_PER_AXIS:, 0::2] = -half.imag
    right[:BUMPS_PER_AXIS, 1::2] = half.imag
    right[BUMPS_PER_AXIS:, 1::2] = half.real
    for array in (left, right):
        array.setflags(write=False)
    return left, right


def amplitudes_from_uniforms(uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn (B, N_SOURCE_DRAWS) uniforms in [0, 1) into amplitudes (B, 12, 12) and sparsity (B,).

    Column 0 picks the sparsity, columns 1..144 switch bumps on (``u < 1 - s``), columns
    145..288 give the amplitudes. Deriving everything from a fixed number of uniforms lets the
    generator jump straight to any sample's draws, which makes datasets independent of how
    they are chunked. If no bump is on (probability 0.8^144 ~ 1e-14), the bump closest to
    being switched on (smallest ``u``) is, so no extra draw is needed.
    """
    if uniforms.ndim != 2 or uniforms.shape[1] != N_SOURCE_DRAWS:
        raise ValueError(f"expected uniforms of shape (B, {N_SOURCE_DRAWS}), got {uniforms.shape}")
    choice = np.minimum((uniforms[:, 0] * len(SPARSITIES)).astype(np.int64), len(SPARSITIES) - 1)
    sparsity = np.asarray(SPARSITIES)[choice]
    switch = uniforms[:, 1 : 1 + N_BUMPS]
    on = switch < (1.0 - sparsity)[:, None]
    none_on = ~on.any(axis=1)
    if none_on.any():
        rows = np.flatnonzero(none_on)
        on[rows, np.argmin(switch[rows], axis=1)] = True
    lo, hi = AMPLITUDE_RANGE
    amplitude = lo + (hi - lo) * uniforms[:, 1 + N_BUMPS :]
    amplitudes = np.where(on, amplitude, 0.0).reshape(-1, BUMPS_PER_AXIS, BUMPS_PER_AXIS)
    return amplitudes, sparsity


def gaussian_sum(amplitudes: np.ndarray, n: int) -> np.ndarray:
    """Unnormalised sum of bumps on the n x n grid, (B, n, n) float64; rows are y, columns x.

    ``G^T A[b] G`` as a stacked matmul: one small GEMM per sample, so a sample's values do not
    depend on which other samples share the batch.
    """
    table = profiles(n)
    return np.matmul(np.matmul(table.T, amplitudes), table)


def gaussian_sum_spectrum(amplitudes: np.ndarray, n: int) -> np.ndarray:
    """``numpy.fft.rfft2(gaussian_sum(amplitudes, n))`` (B, n, n//2+1), computed without an FFT."""
    left, right = _spectral_operands(n)
    b = amplitudes.shape[0]
    parts = np.matmul(left[None], amplitudes[:, None])  # (B, 2, n, 12): Re, Im of Gf^T A
    stacked = parts.transpose(0, 2, 1, 3).reshape(b, n, 2 * BUMPS_PER_AXIS)
    return np.matmul(stacked, right).view(np.complex128)


@functools.lru_cache(maxsize=1)
def _reference_box() -> tuple[np.ndarray, np.ndarray]:
    """Reference-grid indices inside the square of centres, and the profiles there.

    A positive sum of Gaussians takes its grid maximum inside the box spanned by the centres:
    stepping a grid point towards the box brings it closer to every centre along that axis.
    (Periodic images across the boundary are >= 10 sigma away from the box edge, ~1e-22.)
    Searching only the box's 89 x 89 of the 128 x 128 points halves the cost.
    """
    c = centres()
    x = grid_points(REFERENCE_GRID)
    inside = np.flatnonzero((x >= c[0] - 1e-12) & (x <= c[-1] + 1e-12))
    table = np.ascontiguousarray(profiles(REFERENCE_GRID)[:, inside])
    table.setflags(write=False)
    return inside, table


def reference_max(amplitudes: np.ndarray, field: np.ndarray | None = None) -> np.ndarray:
    """Per-sample max of the bump sum on the fixed reference grid, shape (B,).

    ``field`` (the sum on a grid whose size is a multiple of REFERENCE_GRID) is reused when
    given, since the reference grid's points are then a subset of its points.
    """
    inside, table = _reference_box()
    if field is not None and field.shape[-1] % REFERENCE_GRID == 0:
        step = field.shape[-1] // REFERENCE_GRID
        box = slice(inside[0] * step, inside[-1] * step + 1, step)
        return field[:, box, box].max(axis=(1, 2))
    return np.matmul(np.matmul(table.T, amplitudes), table).max(axis=(1, 2))


@dataclass(frozen=True)
class SourceBatch:
    """A batch of sources on an n x n grid.

    ``spectrum`` is the rfft2 of the *unnormalised* bump sum; the source is
    ``field = sum / scale - offset``, so the solver divides the spectrum by ``scale`` (and the
    offset only touches the zero mode, which SYS-1/2's symbol removes anyway).
    """

    field: np.ndarray  # (B, n, n) float64, the normalised source f
    spectrum: np.ndarray  # (B, n, n//2+1) complex128, rfft2 of the unnormalised sum
    scale: np.ndarray  # (B,) the reference-grid maximum the sum is divided by
    sparsity: np.ndarray  # (B,)


def make_sources(uniforms: np.ndarray, n: int, mean_free: bool) -> SourceBatch:
    """Sources from uniforms (see :func:`amplitudes_from_uniforms`): max-normalised, optionally
    mean-free (SYS-1/2), with the spectrum the solver needs."""
    amplitudes, sparsity = amplitudes_from_uniforms(uniforms)
    field = gaussian_sum(amplitudes, n)
    scale = reference_max(amplitudes, field)
    np.divide(field, scale[:, None, None], out=field)
    if mean_free:
        field -= field.mean(axis=(1, 2), keepdims=True)
    spectrum = gaussian_sum_spectrum(amplitudes, n)
    return SourceBatch(field=field, spectrum=spectrum, scale=scale, sparsity=sparsity)
