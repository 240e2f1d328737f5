"""The three systems as samplers: ranges, residuals, SYS-2's Psi, SYS-3's rejection."""

from __future__ import annotations

import numpy as np
import pytest

from pdetransfer.data import solver, systems
from pdetransfer.errors import UserError

GRID = 32


def _operator(coefficients):
    D = np.empty((coefficients.shape[0], 2, 2))
    D[:, 0, 0], D[:, 1, 1] = coefficients[:, 0], coefficients[:, 1]
    D[:, 0, 1] = D[:, 1, 0] = coefficients[:, 2]
    return D, coefficients[:, 3:5], coefficients[:, 5]


def _relative_residual(batch):
    D, v, omega = _operator(batch.coefficients)
    r = solver.apply_operator(batch.u, D, v, omega) - batch.f
    return np.linalg.norm(r, axis=(1, 2)) / np.linalg.norm(batch.f, axis=(1, 2))


@pytest.mark.parametrize(
    ("system", "lo", "hi"),
    [("poisson", 0.5, 2.5), ("poisson", 2.5, 7.5), ("advdiff", 0.2, 1), ("helmholtz", 1, 10)],
)
def test_accepted_ranges(system, lo, hi):
    assert systems.validate_range(system, lo, hi) == (lo, hi)


@pytest.mark.parametrize(
    ("system", "lo", "hi", "phrase"),
    [
        ("poisson", 5, 1, "smaller than HI"),
        ("poisson", 2, 2, "smaller than HI"),
        ("poisson", 0, 5, "not allowed for poisson"),
        ("poisson", -1, 5, "not allowed for poisson"),
        ("poisson", 1, float("inf"), "finite"),
        ("advdiff", 0, 1, "not allowed for advdiff"),
        ("advdiff", 1, 5000, "not allowed for advdiff"),
        ("helmholtz", 0, 10, "not allowed for helmholtz"),
        ("helmholtz", 1.5, 10, "not allowed for helmholtz"),
        ("helmholtz", 1, 9.5, "not allowed for helmholtz"),
        ("heat", 1, 2, "unknown system"),
    ],
)
def test_rejected_ranges(system, lo, hi, phrase):
    with pytest.raises(UserError, match=phrase):
        systems.validate_range(system, lo, hi)


def test_draws_are_addressed_by_sample_index():
    whole = systems.draw_uniforms(11, 0, np.arange(12))
    assert np.array_equal(systems.draw_uniforms(11, 0, np.array([3, 4, 9])), whole[[3, 4, 9]])
    assert not np.array_equal(systems.draw_uniforms(11, 1, np.arange(12)), whole)
    assert not np.array_equal(systems.draw_uniforms(12, 0, np.arange(12)), whole)


def test_blocks_depend_on_the_grid_only():
    sampler = systems.Sampler("poisson", (1, 5), 128, 0)
    assert sampler.blocks(150) == [(0, 64), (64, 128), (128, 150)]
    assert systems.block_size(32) == 256 and systems.block_size(1024) == 1


def test_poisson_samples():
    batch = systems.Sampler("poisson", (2.5, 7.5), GRID, 5).block(0, 16)
    assert _relative_residual(batch).max() < 1e-10
    assert batch.param.min() >= 2.5 and batch.param.max() <= 7.5
    D, v, omega = _operator(batch.coefficients)
    eigen = np.linalg.eigvalsh(D / systems.KAPPA)
    assert np.allclose(eigen[:, 0], 1.0) and np.allclose(eigen[:, 1], batch.param)
    assert np.array_equal(batch.tensor, batch.coefficients[:, :3])
    assert not v.any() and not omega.any()
    assert np.abs(batch.f.mean(axis=(1, 2))).max() < 1e-15
    assert np.abs(batch.u.mean(axis=(1, 2))).max() < 1e-15


def _psi_from_solution(batch):
    D, v, _ = _operator(batch.coefficients)
    zero = np.zeros(len(D))
    advection = solver.apply_operator(batch.u, np.zeros_like(D), v, zero)
    diffusion = solver.apply_operator(batch.u, D, np.zeros_like(v), zero)
    return np.linalg.norm(advection, axis=(1, 2)) / np.linalg.norm(diffusion, axis=(1, 2))


@pytest.mark.parametrize("psi_range", [(0.2, 1.0), (1.0, 2.0), (20.0, 40.0)])
def test_advdiff_realises_psi_in_range(psi_range):
    batch = systems.Sampler("advdiff", psi_range, GRID, 8).block(0, 24)
    assert _relative_residual(batch).max() < 1e-10
    psi = _psi_from_solution(batch)
    assert np.allclose(psi, batch.param, rtol=1e-9)
    lo, hi = psi_range
    assert psi.min() >= lo * (1 - 1e-6) and psi.max() <= hi * (1 + 1e-6)
    # D = (1 - l) kappa K with K's eigenvalues 1 and e in (1, 5), v = l v_hat, l in (0, 1).
    D, v, omega = _operator(batch.coefficients)
    lam = np.linalg.norm(v, axis=1)
    eigen = np.linalg.eigvalsh(D) / ((1 - lam) * systems.KAPPA)[:, None]
    assert np.allclose(eigen[:, 0], 1.0) and np.all((eigen[:, 1] >= 1) & (eigen[:, 1] <= 5))
    assert np.all((lam > 0) & (lam < 1)) and not omega.any()
    assert np.array_equal(batch.tensor, batch.coefficients[:, :5])


def test_advection_root_finder_hits_random_targets():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.1, 10, size=(50, 40))
    b = rng.normal(size=(50, 40))
    w = rng.uniform(0, 1, size=(50, 40)) ** 4
    target = 10 ** rng.uniform(-2, 2.5, size=50)
    t = systems.find_advection_t(a, b, w, target)
    assert np.allclose(systems.advection_ratio(t, a, b, w), target, rtol=1e-10)


def test_helmholtz_rejects_and_redraws():
    sampler = systems.Sampler("helmholtz", (1, 4), GRID, 3)
    batch = sampler.block(0, 40)
    assert _relative_residual(batch).max() < 1e-10
    assert np.abs(batch.u).max(axis=(1, 2)).max() <= systems.HELMHOLTZ_MAX_ABS_U
    assert set(np.unique(batch.param)) <= {1.0, 3.0, 4.0}  # omega = 2 sits on a resonance
    assert np.array_equal(batch.tensor[:, 1], batch.param)
    assert np.all(batch.tensor[:, 0] == systems.KAPPA)
    redrawn = np.flatnonzero(batch.attempts > 1)
    assert redrawn.size > 0
    # A redrawn sample is attempt k's draw for that index, whatever the other samples were.
    i = redrawn[0]
    k = batch.attempts[i] - 1
    alone = systems.sample_helmholtz_once(
        systems.draw_uniforms(sampler.seed, int(k), np.array([i])), GRID, (1, 4)
    )
    assert np.array_equal(alone.f[0], batch.f[i]) and alone.param[0] == batch.param[i]


def test_helmholtz_gives_up_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(systems, "HELMHOLTZ_MAX_ABS_U", 1e-6)
    monkeypatch.setattr(systems, "HELMHOLTZ_MAX_ATTEMPTS", 3)
    with pytest.raises(UserError, match="too close to resonance"):
        systems.Sampler("helmholtz", (1, 3), 16, 0).block(0, 2)


def test_advdiff_explains_psi_beyond_a_coarse_grid():
    """At n = 32 the Nyquist modes (no odd derivatives) cap Psi near 50-80 for these sources."""
    with pytest.raises(UserError, match="cannot be reached on a 32x32 grid"):
        systems.Sampler("advdiff", (500, 1000), GRID, 1).block(0, 4)
    assert systems.Sampler("advdiff", (500, 1000), 64, 1).block(0, 4).param.min() >= 500
