"""One batched spectral solver for the constant-coefficient operator of all three systems.

    L u = -div(D grad u) + v . grad u - omega u = f     on the periodic unit square,

with Fourier symbol ``4 pi^2 k^T D k + 2 pi i v . k - omega``. SYS-1 (Poisson), SYS-2
(advection-diffusion) and SYS-3 (Helmholtz) are parameter choices of (D, v, omega), so there is
one solver, not three. Everything is float64 and batched: f is (B, n, n), D (B, 2, 2), v (B, 2),
omega (B,). The last array axis is x and the one before it y (see :mod:`pdetransfer.data.sources`).

Discrete conventions (they make the solve and :func:`apply_operator` exact inverses on the grid):

- The grid's Nyquist wavenumber n/2 has no sign, so odd derivatives (the advection term and the
  mixed D12 term) use wavenumber 0 there, the standard choice that keeps the symbol Hermitian,
  i.e. the operator real. Even derivatives use (n/2)^2.
- Where the symbol is zero (k = 0 for SYS-1/2; a grid eigenvalue for a resonant omega), the
  solution's mode is set to 0 and the source's matching mode is projected out: the solver
  returns the u with ``L u = P f``, P removing those modes. "Zero" means below
  ``ZERO_TOLERANCE`` times the symbol's scale for that sample, since round-off makes an exact
  zero such as ``4 pi^2 kappa |k|^2 - omega`` come out as 1e-16 instead of 0.
"""

from __future__ import annotations

import functools

import numpy as np

ZERO_TOLERANCE = 1e-13


@functools.lru_cache(maxsize=16)
def wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer wavenumbers in rfft2 layout: ``kx`` (1, n//2+1), ``ky`` (n, 1), and the same with
    the Nyquist wavenumber set to 0 for odd derivatives (``kx_odd``, ``ky_odd``)."""
    if n < 2 or n % 2:
        raise ValueError(f"grid size must be even, got {n}")
    ky = np.fft.fftfreq(n, d=1.0 / n)[:, None]
    kx = np.fft.rfftfreq(n, d=1.0 / n)[None, :]
    ky_odd = np.where(np.abs(ky) == n // 2, 0.0, ky)
    kx_odd = np.where(np.abs(kx) == n // 2, 0.0, kx)
    for array in (kx, ky, kx_odd, ky_odd):
        array.setflags(write=False)
    return kx, ky, kx_odd, ky_odd


@functools.lru_cache(maxsize=16)
def parseval_weights(n: int) -> np.ndarray:
    """(1, n//2+1) multiplicity of each rfft column in the full spectrum: 2 for columns that
    stand for a conjugate pair, 1 for the x = 0 and Nyquist columns."""
    weights = np.full((1, n // 2 + 1), 2.0)
    weights[0, 0] = weights[0, -1] = 1.0
    weights.setflags(write=False)
    return weights


def spectral_norm(x_hat: np.ndarray) -> np.ndarray:
    """Grid L2 norm sqrt(sum x^2) of each real field from its rfft2 (B, n, n//2+1) (Parseval),
    so norms of derivatives need no inverse FFT."""
    n = x_hat.shape[-2]
    power = x_hat.real**2 + x_hat.imag**2
    return np.sqrt((power * parseval_weights(n)).sum(axis=(-2, -1))) / n


def _coefficients(
    D: np.ndarray, v: np.ndarray, omega: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the per-sample coefficients: D (B, 2, 2), v (B, 2), omega (B,) as float64."""
    D = np.asarray(D, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    omega = np.asarray(omega, dtype=np.float64)
    if D.ndim != 3 or D.shape[1:] != (2, 2):
        raise ValueError(f"D must have shape (B, 2, 2), got {D.shape}")
    b = D.shape[0]
    if v.shape != (b, 2) or omega.shape != (b,):
        raise ValueError(f"v must be ({b}, 2) and omega ({b},), got {v.shape} and {omega.shape}")
    return D, v, omega


@functools.lru_cache(maxsize=16)
def _symbol_bases(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient symbol tables, so a batch's symbol is one small matrix product.

    ``real`` (4, n*(n//2+1)) holds the real part's response to [D11, D22, D12, omega];
    ``full`` (6, 2*n*(n//2+1)) adds [v1, v2] and interleaves (re, im) per mode, which is the
    memory layout of complex128: ``coef @ full`` viewed as complex is the complex symbol.
    """
    kx, ky, kx_odd, ky_odd = wavenumbers(n)
    shape = (n, n // 2 + 1)
    four_pi2 = 4.0 * np.pi**2
    real = np.stack(
        [
            np.broadcast_to(four_pi2 * kx**2, shape),
            np.broadcast_to(four_pi2 * ky**2, shape),
            np.broadcast_to(2.0 * four_pi2 * kx_odd * ky_odd, shape),
            np.full(shape, -1.0),
        ]
    ).reshape(4, -1)
    imag = np.stack(
        [
            np.broadcast_to(2.0 * np.pi * kx_odd, shape),
            np.broadcast_to(2.0 * np.pi * ky_odd, shape),
        ]
    ).reshape(2, -1)
    full = np.zeros((6, 2 * real.shape[1]))
    full[:4, 0::2] = real
    full[4:, 1::2] = imag
    for array in (real, full):
        array.setflags(write=False)
    return real, full


def symbol(
    n: int,
    D: np.ndarray,
    v: np.ndarray,
    omega: np.ndarray,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """The operator's Fourier symbol on the rfft2 grid, (B, n, n//2+1), times ``scale`` (B,).

    Real (float64) when every v is zero, complex128 otherwise; only the symmetric part of D
    matters (``k^T D k``).
    """
    D, v, omega = _coefficients(D, v, omega)
    coef = np.column_stack([D[:, 0, 0], D[:, 1, 1], 0.5 * (D[:, 0, 1] + D[:, 1, 0]), omega])
    advective = bool(np.any(v))
    if advective:
        coef = np.column_stack([coef, v])
    if scale is not None:
        coef *= np.asarray(scale, dtype=np.float64)[:, None]
    real, full = _symbol_bases(n)
    shape = (coef.shape[0], n, n // 2 + 1)
    if advective:
        return (coef @ full).view(np.complex128).reshape(shape)
    return (coef @ real).reshape(shape)


def _symbol_scale(n: int, D: np.ndarray, v: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Per-sample bound on the symbol's terms over the grid, (B, 1, 1): the yardstick for zero."""
    D, v, omega = _coefficients(D, v, omega)
    k = n / 2.0
    diffusion = 4.0 * np.pi**2 * k**2 * np.abs(D).sum(axis=(1, 2))
    advection = 2.0 * np.pi * k * np.abs(v).sum(axis=1)
    return (diffusion + advection + np.abs(omega))[:, None, None]


def zero_modes(n: int, D: np.ndarray, v: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Boolean (B, n, n//2+1): the modes where the symbol vanishes (up to round-off)."""
    return np.abs(symbol(n, D, v, omega)) <= ZERO_TOLERANCE * _symbol_scale(n, D, v, omega)


def inverse_symbol(
    n: int,
    D: np.ndarray,
    v: np.ndarray,
    omega: np.ndarray,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """``1 / (scale * symbol)`` with 0 where the symbol vanishes: the solution operator.

    ``scale`` (B,) folds a per-sample division of the source (its normalisation) into the
    symbol's construction instead of another pass over the grid.
    """
    sym = symbol(n, D, v, omega, scale)
    threshold = ZERO_TOLERANCE * _symbol_scale(n, D, v, omega)
    if scale is not None:
        threshold = threshold * np.abs(np.asarray(scale, dtype=np.float64))[:, None, None]
    zero = np.abs(sym) <= threshold
    sym[zero] = 1.0
    np.reciprocal(sym, out=sym)
    sym[zero] = 0.0
    return sym


def solve_spectrum(
    f_hat: np.ndarray,
    D: np.ndarray,
    v: np.ndarray,
    omega: np.ndarray,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Solve ``L u = P (f / scale)`` given ``f_hat = rfft2(f)`` of shape (B, n, n//2+1)."""
    n = f_hat.shape[-2]
    if f_hat.ndim != 3 or f_hat.shape[-1] != n // 2 + 1:
        raise ValueError(f"f_hat must be an rfft2 spectrum (B, n, n//2+1), got {f_hat.shape}")
    u_hat = f_hat * inverse_symbol(n, D, v, omega, scale)
    return np.fft.irfft2(u_hat, s=(n, n))


def solve(f: np.ndarray, D: np.ndarray, v: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Solve ``-div(D grad u) + v . grad u - omega u = P f`` for a batch f of shape (B, n, n).

    Returns u (B, n, n) float64; where the symbol is zero, u's mode is 0 and f's is projected
    out (P), so for SYS-1/2 u is mean-free.
    """
    f = _batch_of_fields(f)
    return solve_spectrum(np.fft.rfft2(f), D, v, omega)


def apply_operator(u: np.ndarray, D: np.ndarray, v: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """``L u`` evaluated spectrally (exact on the grid), for residual checks; (B, n, n)."""
    u = _batch_of_fields(u)
    n = u.shape[-1]
    return np.fft.irfft2(np.fft.rfft2(u) * symbol(n, D, v, omega), s=(n, n))


def _batch_of_fields(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[1] % 2:
        raise ValueError(f"expected a batch of square even grids (B, n, n), got {x.shape}")
    return x
