"""The three PDE systems as parameter samplers on top of the one solver (docs/science.md).

| system    | D            | v       | omega | parameter (the "range")                         |
|-----------|--------------|---------|-------|-------------------------------------------------|
| poisson   | kappa K      | 0       | 0     | eigenvalue e of K ~ U(e1, e2)                   |
| advdiff   | (1-l) kappa K| l v_hat | 0     | Psi = |l v_hat.grad u| / |(1-l) kappa div(K grad u)| ~ U |
| helmholtz | kappa I      | 0       | omega | integer omega ~ U{o1..o2}, max|u| <= 2 enforced  |

K = R(theta) diag(1, e) R(theta)^T with theta ~ U(0, 2 pi); for advdiff e ~ U(1, 5) and
v_hat = (cos phi, sin phi), phi ~ U(0, 2 pi).

Reproducibility: every sample's randomness comes from a fixed number (``N_DRAWS``) of uniforms
taken at a fixed offset of a counter-addressable stream (PCG64 with ``advance``), keyed by the
dataset's derived seed and the attempt number (Helmholtz redraws rejected samples from the next
attempt's stream). Work is done in blocks whose boundaries depend only on the grid size, so the
arrays are bit-identical whatever chunk size or thread count the writer uses (BLAS results can
depend on a row's position within a batch, hence fixed blocks rather than arbitrary chunks).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from pdetransfer.data import solver, sources
from pdetransfer.errors import UserError

KAPPA = 0.01
COEFFICIENT_NAMES = ("D11", "D22", "D12", "v1", "v2", "omega")
PHYSICS_DRAWS = 4
N_DRAWS = sources.N_SOURCE_DRAWS + PHYSICS_DRAWS

ADVDIFF_E_RANGE = (1.0, 5.0)
ADVDIFF_PSI_MAX = 1000.0
# Root finding for SYS-2 works on t = l / (1 - l) in log space, bracketed here.
ADVDIFF_T_BRACKET = (1e-12, 1e12)
ADVDIFF_ROOT_TOLERANCE = 1e-12  # on log(Psi), i.e. relative error of the realised Psi
# |k| cut-off for root finding: beyond it the sources' Gaussian envelope leaves a relative
# energy below exp(-4 pi^2 sigma^2 32^2) ~ 1e-17; the stored Psi is recomputed from all modes.
ADVDIFF_ROOT_MODES = 32
HELMHOLTZ_MAX_ABS_U = 2.0
HELMHOLTZ_MAX_ATTEMPTS = 1000
BLOCK_POINTS = 2**20  # grid points per work block (64 samples at n = 128)
MAX_BLOCK = 256


@dataclass(frozen=True)
class SystemSpec:
    """What distinguishes a system in files and on the command line."""

    name: str
    param_name: str
    tensor_names: tuple[str, ...]  # the reference generator's per-system 'tensor' columns
    mean_free: bool  # SYS-1/2 sources are mean-free (their symbol vanishes at k = 0)
    allowed: str  # the allowed parameter range, as a phrase for error messages


SYSTEMS: dict[str, SystemSpec] = {
    "poisson": SystemSpec(
        "poisson", "e", ("D11", "D22", "D12"), True, "0 < LO < HI (the eigenvalue e > 0)"
    ),
    "advdiff": SystemSpec(
        "advdiff",
        "psi",
        ("D11", "D22", "D12", "v1", "v2"),
        True,
        f"0 < LO < HI <= {ADVDIFF_PSI_MAX:g} (the advection-to-diffusion ratio Psi)",
    ),
    "helmholtz": SystemSpec(
        "helmholtz",
        "omega",
        ("kappa", "omega"),
        False,
        "whole numbers 1 <= LO < HI (omega = 0 is the singular Poisson operator)",
    ),
}


# Systems that only imported files hold (:mod:`pdetransfer.data.importing`): nothing generates
# them, so they have no sampler and no range rule. Darcy is -div(a(x) grad u) = beta on the unit
# square with u = 0 on its boundary (PDEBench's 2D Darcy flow); "external" is any data whose
# operator pdetransfer does not know (no residual check).
IMPORTED_SYSTEMS: dict[str, SystemSpec] = {
    "darcy": SystemSpec("darcy", "beta", ("beta",), False, "beta > 0 (the constant forcing)"),
    "external": SystemSpec("external", "param", ("param",), False, "any finite range"),
}


def file_system(name: str) -> SystemSpec:
    """The spec of a system a dataset file may hold: generated or imported."""
    spec = SYSTEMS.get(name) or IMPORTED_SYSTEMS.get(name)
    if spec is None:
        known = ", ".join([*SYSTEMS, *IMPORTED_SYSTEMS])
        raise UserError(f"unknown system {name!r}; choose one of {known}")
    return spec


def get_system(name: str) -> SystemSpec:
    """The spec of a system by name, or a UserError listing the known ones."""
    try:
        return SYSTEMS[name]
    except KeyError:
        known = ", ".join(SYSTEMS)
        raise UserError(f"unknown system {name!r}; choose one of {known}") from None


def range_problem(system: str, lo: float, hi: float) -> str | None:
    """What is wrong with a parameter range for a system, as the end of a sentence, or None.

    The one rule behind both ``pdetransfer generate --range`` and the workflow's config check,
    so a config that passes the check never fails in the generate job.
    """
    spec = get_system(system)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "must be finite numbers"
    if lo >= hi:
        return f"needs LO smaller than HI, got {lo:g} >= {hi:g}"
    ok = {
        "poisson": lo > 0,
        "advdiff": lo > 0 and hi <= ADVDIFF_PSI_MAX,
        "helmholtz": lo >= 1 and lo.is_integer() and hi.is_integer(),
    }[system]
    return None if ok else f"is not allowed for {system}; it needs {spec.allowed}"


def validate_range(system: str, lo: float, hi: float) -> tuple[float, float]:
    """Check a parameter range against what the system allows; return it as floats."""
    problem = range_problem(system, lo, hi)
    if problem is not None:
        raise UserError(f"--range {float(lo):g} {float(hi):g} {problem}")
    return float(lo), float(hi)


def block_size(grid: int) -> int:
    """Samples per work block: a function of the grid size only (see module docstring)."""
    return max(1, min(MAX_BLOCK, BLOCK_POINTS // (grid * grid)))


def draw_uniforms(seed: int, attempt: int, indices: np.ndarray) -> np.ndarray:
    """The ``N_DRAWS`` uniforms of each listed sample for one attempt, (len(indices), N_DRAWS).

    Sample i always gets draws ``[i * N_DRAWS, (i + 1) * N_DRAWS)`` of the attempt's stream,
    whichever other samples are drawn alongside it (runs of consecutive indices are one jump
    and one bulk draw).
    """
    indices = np.asarray(indices, dtype=np.int64)
    out = np.empty((indices.size, N_DRAWS))
    if indices.size == 0:
        return out
    seq = np.random.SeedSequence(seed, spawn_key=(attempt,))
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    for run, rows in zip(
        np.split(indices, breaks), np.split(np.arange(indices.size), breaks), strict=True
    ):
        bits = np.random.PCG64(seq)
        bits.advance(int(run[0]) * N_DRAWS)  # one double consumes one 64-bit output
        out[rows] = np.random.Generator(bits).random((run.size, N_DRAWS))
    return out


def diffusion_tensor(theta: np.ndarray, e: np.ndarray) -> np.ndarray:
    """K = R(theta) diag(1, e) R(theta)^T, shape (B, 2, 2): eigenvalues 1 and e."""
    c, s = np.cos(theta), np.sin(theta)
    k = np.empty((theta.size, 2, 2))
    k[:, 0, 0] = c * c + e * s * s
    k[:, 1, 1] = s * s + e * c * c
    k[:, 0, 1] = k[:, 1, 0] = (1.0 - e) * c * s
    return k


@dataclass(frozen=True)
class Batch:
    """Generated samples, float64 (the writer casts fields to float32)."""

    f: np.ndarray  # (B, n, n)
    u: np.ndarray  # (B, n, n)
    tensor: np.ndarray  # (B, T) the reference layout
    coefficients: np.ndarray  # (B, 6) canonical [D11, D22, D12, v1, v2, omega]
    param: np.ndarray  # (B,) realised e, Psi or omega
    sparsity: np.ndarray  # (B,)
    attempts: np.ndarray  # (B,) draws used; > 1 only for rejected Helmholtz draws


def canonical(D: np.ndarray, v: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Canonical coefficient rows [D11, D22, D12, v1, v2, omega], (B, 6)."""
    return np.column_stack([D[:, 0, 0], D[:, 1, 1], D[:, 0, 1], v[:, 0], v[:, 1], omega])


def _uniform(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * u


def sample_poisson(uniforms: np.ndarray, grid: int, e_range: tuple[float, float]) -> Batch:
    """SYS-1: -div(kappa K grad u) = f with e ~ U(e_range)."""
    src = sources.make_sources(uniforms[:, : sources.N_SOURCE_DRAWS], grid, mean_free=True)
    physics = uniforms[:, sources.N_SOURCE_DRAWS :]
    theta = 2.0 * np.pi * physics[:, 0]
    e = _uniform(physics[:, 1], *e_range)
    D = KAPPA * diffusion_tensor(theta, e)
    v = np.zeros((e.size, 2))
    omega = np.zeros(e.size)
    u = solver.solve_spectrum(src.spectrum, D, v, omega, scale=src.scale)
    tensor = np.column_stack([D[:, 0, 0], D[:, 1, 1], D[:, 0, 1]])
    return Batch(src.field, u, tensor, canonical(D, v, omega), e, src.sparsity, _ones(e.size))


@functools.lru_cache(maxsize=8)
def _root_modes(grid: int) -> np.ndarray:
    """The modes SYS-2's root finding uses, |k| <= ADVDIFF_ROOT_MODES, as indices into the
    flattened rfft2 modes without the zero mode (flat index 0)."""
    kx, ky, _, _ = solver.wavenumbers(grid)
    keep = np.broadcast_to(kx**2 + ky**2 <= ADVDIFF_ROOT_MODES**2, (grid, grid // 2 + 1))
    return np.flatnonzero(keep.ravel()[1:])


def advection_ratio(t: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Psi for ``t = l / (1 - l)`` per sample, from per-mode a = diffusion symbol of kappa K,
    b = advection symbol of v_hat (imaginary part), w = weighted |f_hat|^2, all (B, M).

    By Parseval, with u_hat = f_hat / ((1-l) a + i l b),
    Psi^2 = sum w t^2 b^2 / (a^2 + t^2 b^2) / sum w a^2 / (a^2 + t^2 b^2).
    Every mode must have a > 0: leave out the zero mode, which carries no solution.
    """
    t2b2 = (t**2)[:, None] * b**2
    inverse = 1.0 / (a**2 + t2b2)
    advection = (w * t2b2 * inverse).sum(axis=1)
    diffusion = (w * a**2 * inverse).sum(axis=1)
    return np.sqrt(advection / diffusion)


def find_advection_t(a: np.ndarray, b: np.ndarray, w: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The t = l / (1 - l) realising each target Psi, (B,), by bracketed Newton on log t.

    In s = log t each mode's advective share is r = sigmoid(2 s - c) with c = log(a^2 / b^2),
    so Psi^2 = sum w r / sum w (1 - r) is strictly increasing in s (every r is), and log Psi is a
    smooth, nearly linear function of s: Newton converges in a few steps. Steps that would
    leave the current bracket fall back to bisection, so convergence is guaranteed.
    """
    with np.errstate(divide="ignore"):
        c = 2.0 * (np.log(np.abs(a)) - np.log(np.abs(b)))  # +inf where b = 0: never advective
    log_target = np.log(target)
    lo = np.full(target.size, math.log(ADVDIFF_T_BRACKET[0]))
    hi = np.full(target.size, math.log(ADVDIFF_T_BRACKET[1]))
    # Small-t asymptote Psi ~ t sqrt(sum w b^2/a^2 / sum w) as the starting point.
    slope = np.sqrt((w * np.exp(-c)).sum(axis=1) / w.sum(axis=1))
    s = np.clip(log_target - np.log(slope), lo, hi)
    active = np.arange(target.size)
    for _ in range(200):
        g, dg = _log_ratio_and_slope(s[active], c[active], w[active], log_target[active])
        converged = np.abs(g) <= ADVDIFF_ROOT_TOLERANCE
        if converged.all():
            return np.exp(s)
        keep = ~converged
        active, g, dg = active[keep], g[keep], dg[keep]
        lo[active] = np.where(g < 0, s[active], lo[active])
        hi[active] = np.where(g > 0, s[active], hi[active])
        newton = s[active] - g / dg
        inside = (newton > lo[active]) & (newton < hi[active])
        s[active] = np.where(inside, newton, 0.5 * (lo[active] + hi[active]))
    raise RuntimeError(
        f"advection ratio root finding did not converge for {active.size} samples "
        f"(targets {np.exp(log_target[active][:3])})"
    )


def _log_ratio_and_slope(
    s: np.ndarray, c: np.ndarray, w: np.ndarray, log_target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """g = log Psi(s) - log target and dg/ds, per sample."""
    x = 2.0 * s[:, None] - c
    z = np.exp(-np.abs(x))  # one exponential, never overflowing
    p = 1.0 / (1.0 + z)
    positive = x >= 0
    r = np.where(positive, p, z * p)  # advective share of each mode, sigmoid(x)
    q = np.where(positive, z * p, p)  # diffusive share, 1 - r without cancellation
    adv = (w * r).sum(axis=1)
    dif = (w * q).sum(axis=1)
    mixed = (w * r * q).sum(axis=1)
    g = 0.5 * (np.log(adv) - np.log(dif)) - log_target
    dg = mixed * (1.0 / adv + 1.0 / dif)  # d(0.5 log(adv/dif))/ds, since dr/ds = 2 r q
    return g, dg


def reachable_psi(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The largest Psi the root finder can realise for each sample, (B,), from its root modes.

    Psi is bounded when a source mode has no advection (b = 0, e.g. the grid's Nyquist modes,
    where odd derivatives vanish), so on a coarse grid large targets can be out of reach.
    """
    return advection_ratio(np.full(a.shape[0], ADVDIFF_T_BRACKET[1]), a, b, w)


def _check_reachable(
    a: np.ndarray, b: np.ndarray, w: np.ndarray, target: np.ndarray, grid: int
) -> None:
    """Refuse targets beyond :func:`reachable_psi` (the root finder would not converge)."""
    reachable = reachable_psi(a, b, w)
    short = np.flatnonzero(target > reachable)
    if short.size:
        i = short[0]
        raise UserError(
            f"advdiff Psi {target[i]:.4g} cannot be reached on a {grid}x{grid} grid, where this "
            f"source allows at most {reachable[i]:.4g} (its Nyquist modes carry no advection); "
            "use a finer grid or a lower range"
        )


def _advdiff_parts(
    uniforms: np.ndarray, grid: int
) -> tuple[sources.SourceBatch, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SYS-2's source, diffusion tensor, direction and per-mode symbols a, b and weights w.

    Per mode: a = symbol of -div(kappa K grad), b = symbol of v_hat . grad / i, w = |f_hat|^2
    with its Parseval multiplicity; flat index 0 is the zero mode (a = b = 0), left out.
    """
    src = sources.make_sources(uniforms[:, : sources.N_SOURCE_DRAWS], grid, mean_free=True)
    physics = uniforms[:, sources.N_SOURCE_DRAWS :]
    theta = 2.0 * np.pi * physics[:, 0]
    e = _uniform(physics[:, 1], *ADVDIFF_E_RANGE)
    phi = 2.0 * np.pi * physics[:, 2]
    size = e.size
    diffusion = KAPPA * diffusion_tensor(theta, e)
    direction = np.column_stack([np.cos(phi), np.sin(phi)])
    parts = solver.symbol(grid, diffusion, direction, np.zeros(size)).reshape(size, -1)[:, 1:]
    w = (np.abs(src.spectrum) ** 2 * solver.parseval_weights(grid)).reshape(size, -1)[:, 1:]
    return src, diffusion, direction, parts.real, parts.imag, w


def advdiff_target(uniforms: np.ndarray, psi_range: tuple[float, float]) -> np.ndarray:
    """Each sample's target Psi ~ U(psi_range), from its draws."""
    return _uniform(uniforms[:, sources.N_SOURCE_DRAWS + 3], *psi_range)


def advdiff_reach(
    seed: int, grid: int, n_samples: int, psi_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Target Psi and :func:`reachable_psi` of a dataset's first ``n_samples`` samples (its
    derived seed), exactly as the sampler computes them: lets a config be checked before any
    data are generated (a target above its reachable Psi makes generation fail)."""
    uniforms = draw_uniforms(seed, 0, np.arange(n_samples))
    _, _, _, a, b, w = _advdiff_parts(uniforms, grid)
    flat = _root_modes(grid)
    return advdiff_target(uniforms, psi_range), reachable_psi(a[:, flat], b[:, flat], w[:, flat])


def sample_advdiff(uniforms: np.ndarray, grid: int, psi_range: tuple[float, float]) -> Batch:
    """SYS-2: -div((1-l) kappa K grad u) + l v_hat . grad u = f, l chosen per sample so that the
    realised Psi equals a target drawn from U(psi_range)."""
    src, diffusion, direction, a, b, w = _advdiff_parts(uniforms, grid)
    target = advdiff_target(uniforms, psi_range)
    size = target.size
    flat = _root_modes(grid)
    a_root, b_root, w_root = a[:, flat], b[:, flat], w[:, flat]
    _check_reachable(a_root, b_root, w_root, target, grid)
    t = find_advection_t(a_root, b_root, w_root, target)
    psi = advection_ratio(t, a, b, w)
    if not np.allclose(psi, target, rtol=1e-9, atol=0):  # the truncation above is that safe
        raise RuntimeError(f"realised Psi {psi} misses its targets {target}")
    D = diffusion / (1.0 + t)[:, None, None]  # (1 - l) kappa K, with 1 - l = 1 / (1 + t)
    v = direction * (t / (1.0 + t))[:, None]  # l v_hat
    omega = np.zeros(size)
    u = solver.solve_spectrum(src.spectrum, D, v, omega, scale=src.scale)
    tensor = np.column_stack([D[:, 0, 0], D[:, 1, 1], D[:, 0, 1], v[:, 0], v[:, 1]])
    return Batch(src.field, u, tensor, canonical(D, v, omega), psi, src.sparsity, _ones(size))


def sample_helmholtz_once(
    uniforms: np.ndarray, grid: int, omega_range: tuple[float, float]
) -> Batch:
    """SYS-3 without rejection: -kappa lap u - omega u = f, omega ~ U{o1..o2}."""
    src = sources.make_sources(uniforms[:, : sources.N_SOURCE_DRAWS], grid, mean_free=False)
    lo, hi = int(omega_range[0]), int(omega_range[1])
    count = hi - lo + 1
    pick = np.minimum((uniforms[:, sources.N_SOURCE_DRAWS] * count).astype(np.int64), count - 1)
    omega = (lo + pick).astype(np.float64)
    size = omega.size
    D = np.broadcast_to(KAPPA * np.eye(2), (size, 2, 2)).copy()
    v = np.zeros((size, 2))
    u = solver.solve_spectrum(src.spectrum, D, v, omega, scale=src.scale)
    tensor = np.column_stack([np.full(size, KAPPA), omega])
    return Batch(src.field, u, tensor, canonical(D, v, omega), omega, src.sparsity, _ones(size))


def _ones(size: int) -> np.ndarray:
    return np.ones(size, dtype=np.int64)


class Sampler:
    """Generates any block of a dataset's samples, deterministically from (seed, index)."""

    def __init__(self, system: str, param_range: tuple[float, float], grid: int, seed: int):
        self.spec = get_system(system)
        self.param_range = validate_range(system, *param_range)
        self.grid = grid
        self.seed = seed

    def blocks(self, n_samples: int) -> list[tuple[int, int]]:
        """The fixed work blocks [start, stop) covering n_samples."""
        step = block_size(self.grid)
        return [(s, min(s + step, n_samples)) for s in range(0, n_samples, step)]

    def block(self, start: int, stop: int) -> Batch:
        """Samples [start, stop), solved as one batch."""
        indices = np.arange(start, stop)
        uniforms = draw_uniforms(self.seed, 0, indices)
        if self.spec.name == "poisson":
            return sample_poisson(uniforms, self.grid, self.param_range)
        if self.spec.name == "advdiff":
            return sample_advdiff(uniforms, self.grid, self.param_range)
        return self._helmholtz(indices, uniforms)

    def _helmholtz(self, indices: np.ndarray, uniforms: np.ndarray) -> Batch:
        """Reject and redraw (source and omega) every sample with max|u| > 2, as the reference
        generator did; attempt k of a sample reads its draws from the k-th stream."""
        batch = sample_helmholtz_once(uniforms, self.grid, self.param_range)
        attempts = np.ones(indices.size, dtype=np.int64)
        pending = np.flatnonzero(np.abs(batch.u).max(axis=(1, 2)) > HELMHOLTZ_MAX_ABS_U)
        attempt = 1
        while pending.size:
            if attempt >= HELMHOLTZ_MAX_ATTEMPTS:
                lo, hi = self.param_range
                raise UserError(
                    f"helmholtz range {lo:g} {hi:g}: sample {indices[pending[0]]} had max|u| > "
                    f"{HELMHOLTZ_MAX_ABS_U:g} in {HELMHOLTZ_MAX_ATTEMPTS} draws; the range is "
                    "too close to resonance"
                )
            retry = sample_helmholtz_once(
                draw_uniforms(self.seed, attempt, indices[pending]), self.grid, self.param_range
            )
            for name in ("f", "u", "tensor", "coefficients", "param", "sparsity"):
                getattr(batch, name)[pending] = getattr(retry, name)
            attempts[pending] += 1
            pending = pending[np.abs(retry.u).max(axis=(1, 2)) > HELMHOLTZ_MAX_ABS_U]
            attempt += 1
        return dataclasses.replace(batch, attempts=attempts)
