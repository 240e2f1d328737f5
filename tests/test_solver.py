"""The batched spectral solver: manufactured solutions, zero modes, operator consistency."""

from __future__ import annotations

import numpy as np
import pytest

from pdetransfer.data import solver

KAPPA = 0.01


def _modes(rng: np.random.Generator, n: int, count: int, with_constant: bool):
    """Random integer wavenumbers (below Nyquist) with cos/sin amplitudes."""
    ks = rng.integers(-n // 2 + 1, n // 2, size=(count, 2))
    ks = ks[np.any(ks != 0, axis=1)]
    if with_constant:
        ks = np.vstack([ks, [0, 0]])
    return ks, rng.normal(size=len(ks)), rng.normal(size=len(ks))


def _manufactured(n, D, v, omega, ks, a, b):
    """u = sum a cos(2 pi k.x) + b sin(2 pi k.x) and f = L u, analytically, on the grid.

    For theta = 2 pi k.x: L cos = (4 pi^2 k.D.k - omega) cos - 2 pi v.k sin and
    L sin = (4 pi^2 k.D.k - omega) sin + 2 pi v.k cos.
    """
    x = np.arange(n) / n
    X, Y = np.meshgrid(x, x)  # last axis is x
    u = np.zeros((n, n))
    f = np.zeros((n, n))
    for (kx, ky), ca, cb in zip(ks, a, b, strict=True):
        theta = 2 * np.pi * (kx * X + ky * Y)
        diag = 4 * np.pi**2 * (D[0, 0] * kx**2 + D[1, 1] * ky**2 + 2 * D[0, 1] * kx * ky) - omega
        adv = 2 * np.pi * (v[0] * kx + v[1] * ky)
        u += ca * np.cos(theta) + cb * np.sin(theta)
        f += ca * (diag * np.cos(theta) - adv * np.sin(theta))
        f += cb * (diag * np.sin(theta) + adv * np.cos(theta))
    return u, f


def _spd(rng, count):
    theta = rng.uniform(0, 2 * np.pi, count)
    e = rng.uniform(0.5, 5, count)
    c, s = np.cos(theta), np.sin(theta)
    D = np.empty((count, 2, 2))
    D[:, 0, 0] = c * c + e * s * s
    D[:, 1, 1] = s * s + e * c * c
    D[:, 0, 1] = D[:, 1, 0] = (1 - e) * c * s
    return KAPPA * D


@pytest.mark.parametrize("system", ["poisson", "advdiff", "helmholtz", "unified"])
def test_manufactured_solutions(system):
    rng = np.random.default_rng(7)
    n, batch = 32, 4
    D = _spd(rng, batch)
    v = np.zeros((batch, 2))
    omega = np.zeros(batch)
    if system == "advdiff":
        phi = rng.uniform(0, 2 * np.pi, batch)
        v = 0.6 * np.column_stack([np.cos(phi), np.sin(phi)])
        D *= 0.4
    elif system == "helmholtz":
        D = np.broadcast_to(KAPPA * np.eye(2), (batch, 2, 2)).copy()
        omega = rng.integers(1, 11, batch).astype(float)
    elif system == "unified":
        v = rng.normal(size=(batch, 2))
        omega = rng.uniform(-3, 3, batch) + 0.123  # generic: never exactly resonant
    us, fs = [], []
    for i in range(batch):
        ks, a, b = _modes(rng, n, 6, with_constant=system in ("helmholtz", "unified"))
        u, f = _manufactured(n, D[i], v[i], omega[i], ks, a, b)
        us.append(u)
        fs.append(f)
    u_true, f = np.array(us), np.array(fs)
    u = solver.solve(f, D, v, omega)
    assert np.abs(u - u_true).max() < 1e-10 * np.abs(u_true).max()
    lu = solver.apply_operator(u_true, D, v, omega)
    assert np.abs(lu - f).max() < 1e-10 * np.abs(f).max()


def test_zero_mode_is_projected_out_for_poisson():
    rng = np.random.default_rng(1)
    n = 16
    f = rng.normal(size=(2, n, n)) + 3.0  # a source with a mean
    D = _spd(rng, 2)
    u = solver.solve(f, D, np.zeros((2, 2)), np.zeros(2))
    assert np.abs(u.mean(axis=(1, 2))).max() < 1e-14
    residual = solver.apply_operator(u, D, np.zeros((2, 2)), np.zeros(2)) - (
        f - f.mean(axis=(1, 2), keepdims=True)
    )
    assert np.abs(residual).max() < 1e-10


def test_resonant_mode_is_zeroed_and_projected():
    """omega exactly on a grid eigenvalue: that mode of u is 0 and f's mode is projected out."""
    n = 16
    omega = np.array([4 * np.pi**2 * KAPPA * 5.0])  # |k|^2 = 5: k = (1, 2), (2, 1), ...
    D = KAPPA * np.eye(2)[None]
    v = np.zeros((1, 2))
    zero = solver.zero_modes(n, D, v, omega)[0]
    kx, ky, _, _ = solver.wavenumbers(n)
    assert np.array_equal(zero, np.broadcast_to(kx**2 + ky**2 == 5, zero.shape))
    x = np.arange(n) / n
    X, Y = np.meshgrid(x, x)
    resonant = np.cos(2 * np.pi * (X + 2 * Y))
    other = np.sin(2 * np.pi * 3 * X)
    u = solver.solve((resonant + other)[None], D, v, omega)[0]
    expected = other / (4 * np.pi**2 * KAPPA * 9 - omega[0])
    assert np.abs(u - expected).max() < 1e-12


def test_solve_inverts_apply_operator_including_nyquist():
    """White noise has Nyquist content: odd-derivative terms must keep the operator real."""
    rng = np.random.default_rng(3)
    n, batch = 16, 3
    u = rng.normal(size=(batch, n, n))
    D = _spd(rng, batch)
    v = rng.normal(size=(batch, 2))
    omega = rng.uniform(0.5, 2.0, batch) + 0.01
    f = solver.apply_operator(u, D, v, omega)
    assert np.abs(solver.solve(f, D, v, omega) - u).max() < 1e-10


def test_spectrum_scale_is_folded_into_the_solve():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(3, 16, 16))
    D, v, omega = _spd(rng, 3), rng.normal(size=(3, 2)), np.full(3, 0.37)
    scale = np.array([2.0, 0.5, 10.0])
    u = solver.solve_spectrum(np.fft.rfft2(f), D, v, omega, scale=scale)
    assert np.allclose(u, solver.solve(f / scale[:, None, None], D, v, omega), atol=1e-13)


def test_symbol_is_real_without_advection_and_rejects_bad_shapes():
    D = KAPPA * np.eye(2)[None]
    assert solver.symbol(8, D, np.zeros((1, 2)), np.zeros(1)).dtype == np.float64
    assert solver.symbol(8, D, np.ones((1, 2)), np.zeros(1)).dtype == np.complex128
    with pytest.raises(ValueError):
        solver.symbol(8, D, np.zeros(2), np.zeros(1))
    with pytest.raises(ValueError):
        solver.solve(np.zeros((1, 8, 9)), D, np.zeros((1, 2)), np.zeros(1))


def test_spectral_norm_is_the_grid_norm():
    x = np.random.default_rng(5).normal(size=(3, 16, 16))
    assert np.allclose(solver.spectral_norm(np.fft.rfft2(x)), np.linalg.norm(x, axis=(1, 2)))
