"""``pdetransfer check``: a dataset file's layout and its PDE residual against float32 rounding.

The residual of every sample is compared with the rounding floor of storing f and u in
float32, so a check passes exactly when the file holds what the solver computed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pdetransfer.data import solver, systems
from pdetransfer.data.datasets import (
    FLOOR_FACTOR,
    PARAM_TOLERANCE,
    READ_BLOCK,
    DatasetInfo,
    info_from,
    open_dataset,
    read_info,
    read_rows,
    regenerate_hint,
)
from pdetransfer.errors import UserError
from pdetransfer.progress import Progress

DEFAULT_TOLERANCE = 1e-6  # relative residual allowed on top of the rounding floor


@dataclass
class CheckReport:
    """Outcome of :func:`check_dataset`: ``failures`` empty means the file passed."""

    info: DatasetInfo
    residual: np.ndarray  # (N,) relative residual |L u - f| / |f|
    floor: np.ndarray  # (N,) its float32 rounding floor (see rounding_floor)
    params: np.ndarray  # (N,)
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def coefficients_from_tensor(system: str, tensor: np.ndarray) -> np.ndarray:
    """Canonical [D11, D22, D12, v1, v2, omega] rows from a system's reference 'tensor'."""
    out = np.zeros((tensor.shape[0], 6), dtype=tensor.dtype)
    if system == "helmholtz":
        out[:, 0] = out[:, 1] = tensor[:, 0]
        out[:, 5] = tensor[:, 1]
    else:
        out[:, : tensor.shape[1]] = tensor
    return out


def _operator_parts(coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """D (B, 2, 2), v (B, 2), omega (B,) in float64 from canonical rows."""
    c = coefficients.astype(np.float64)
    D = np.empty((c.shape[0], 2, 2))
    D[:, 0, 0], D[:, 1, 1] = c[:, 0], c[:, 1]
    D[:, 0, 1] = D[:, 1, 0] = c[:, 2]
    return D, c[:, 3:5], c[:, 5]


def realised_psi(u_hat: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """SYS-2's Psi = |v . grad u| / |div(D grad u)| per sample, from u's rfft2 and the stored
    canonical coefficients (norms by Parseval)."""
    D, v, omega = _operator_parts(coefficients)
    n, zero = u_hat.shape[-2], np.zeros_like(omega)
    advection = solver.symbol(n, np.zeros_like(D), v, zero) * u_hat
    diffusion = solver.symbol(n, D, np.zeros_like(v), zero) * u_hat
    return solver.spectral_norm(advection) / solver.spectral_norm(diffusion)


def rounding_floor(f32: np.ndarray, u32: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """The relative residual that float32 storage alone causes, per sample.

    Rounding u to float32 adds white noise du with variance ulp(u)^2 / 12 per point, and L
    (symbol ``sym``) amplifies white noise by the rms of its symbol over the grid (Parseval),
    which grows like n^2: |L du| = rms|symbol| |du|. Adding f's own rounding gives the floor
    below which no stored sample's residual |L u - f| / |f| can be; measured residuals of
    correct data sit within about 10% of it.
    """
    n = u32.shape[-1]
    rms = np.sqrt((np.abs(sym) ** 2 * solver.parseval_weights(n)).sum(axis=(1, 2))) / n
    du = np.sqrt((np.spacing(np.abs(u32)).astype(np.float64) ** 2).sum(axis=(1, 2)) / 12.0)
    df = np.sqrt((np.spacing(np.abs(f32)).astype(np.float64) ** 2).sum(axis=(1, 2)) / 12.0)
    return (rms * du + df) / np.linalg.norm(f32.astype(np.float64), axis=(1, 2))


def spectral_residual(
    f32: np.ndarray, u32: np.ndarray, coefficients: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: relative residual |L u - f| / |f| of the periodic operator with constant
    canonical ``coefficients`` (B, 6), and its float32 rounding floor (f, u as stored)."""
    D, v, omega = _operator_parts(coefficients)
    f_hat = np.fft.rfft2(f32.astype(np.float64))
    u_hat = np.fft.rfft2(u32.astype(np.float64))
    sym = solver.symbol(f32.shape[-1], D, v, omega)
    residual = solver.spectral_norm(sym * u_hat - f_hat) / solver.spectral_norm(f_hat)
    return residual, rounding_floor(f32, u32, sym)


def check_dataset(
    path: str | Path, tolerance: float = DEFAULT_TOLERANCE, progress: bool = True
) -> CheckReport:
    """Validate layout, attributes and physics of a dataset file.

    Physics: every sample's relative residual |L u - f| / |f| with the stored canonical
    coefficients must be at most ``FLOOR_FACTOR`` times its float32 rounding floor plus
    ``tolerance`` (the floor grows like n^2, ~1e-4 at n = 128, so a fixed bound would either
    fail correct high-resolution data or miss errors at low resolution); the parameter lies in
    its range and agrees with the coefficients (for advdiff, with u itself); the reference
    tensor matches the canonical coefficients; SYS-1/2 sources are mean-free; SYS-3 has
    max|u| <= 2 and a correct omega histogram.
    """
    path = Path(path)
    failures: list[str] = []
    with open_dataset(path) as h5:
        info = info_from(h5, path)
        spec = systems.SYSTEMS[info.system]
        residual = np.empty(info.n_samples)
        floor = np.empty(info.n_samples)
        params = np.empty(info.n_samples)
        bar = Progress(info.n_samples, f"check {path.name}", unit="samples", enabled=progress)
        with bar:
            for start in range(0, info.n_samples, READ_BLOCK):
                stop = min(start + READ_BLOCK, info.n_samples)
                rows = slice(start, stop)
                fields = read_rows(h5["fields"], start, stop, path)
                coefficients = read_rows(h5["coefficients"], start, stop, path)
                tensor = read_rows(h5["tensor"], start, stop, path)
                params[rows] = read_rows(h5["param"], start, stop, path)
                f, u = fields[:, 0].astype(np.float64), fields[:, 1].astype(np.float64)
                u_hat = np.fft.rfft2(u)
                residual[rows], floor[rows] = spectral_residual(
                    fields[:, 0], fields[:, 1], coefficients
                )
                problems = _check_block(spec, f, u, u_hat, coefficients, tensor, params[rows], info)
                failures.extend(f"samples {start}..{stop - 1}: {p}" for p in problems)
                bar.update(stop - start)
        if spec.name == "helmholtz":
            failures.extend(_check_histogram(h5.attrs, params))
    bad = np.flatnonzero(~(residual <= FLOOR_FACTOR * floor + tolerance))
    if bad.size:
        worst = bad[np.argmax(residual[bad] / floor[bad])]
        failures.insert(
            0,
            f"{bad.size} samples have a residual above {FLOOR_FACTOR:g} x float32 floor + "
            f"{tolerance:g}, e.g. sample {worst}: {residual[worst]:.3g} (floor "
            f"{floor[worst]:.3g})",
        )
    return CheckReport(info=info, residual=residual, floor=floor, params=params, failures=failures)


def _check_block(
    spec: systems.SystemSpec,
    f: np.ndarray,
    u: np.ndarray,
    u_hat: np.ndarray,
    coefficients: np.ndarray,
    tensor: np.ndarray,
    param: np.ndarray,
    info: DatasetInfo,
) -> list[str]:
    """Checks of one slab other than the residual; returns problem descriptions."""
    problems = []
    if not (np.isfinite(f).all() and np.isfinite(u).all()):
        problems.append("non-finite values in fields")
    if not np.array_equal(coefficients_from_tensor(spec.name, tensor), coefficients):
        problems.append("'tensor' and 'coefficients' disagree")
    lo, hi = info.param_range
    slack = PARAM_TOLERANCE * max(abs(lo), abs(hi))
    if param.min() < lo - slack or param.max() > hi + slack:
        problems.append(f"{spec.param_name} outside [{lo:g}, {hi:g}]")
    if spec.mean_free and np.abs(f.mean(axis=(1, 2))).max() > 1e-6:
        problems.append("source not mean-free")
    if spec.name == "poisson":
        e = (coefficients[:, 0].astype(np.float64) + coefficients[:, 1]) / systems.KAPPA - 1.0
        if not np.allclose(e, param, rtol=1e-4, atol=1e-4):
            problems.append("e disagrees with the diffusion tensor's trace")
    elif spec.name == "advdiff":
        if not np.allclose(realised_psi(u_hat, coefficients), param, rtol=1e-4):
            problems.append("psi disagrees with the one recomputed from u")
    else:
        if not np.array_equal(param, coefficients[:, 5]) or np.any(param != np.round(param)):
            problems.append("omega is not the whole number stored in the coefficients")
        if np.abs(u).max() > systems.HELMHOLTZ_MAX_ABS_U * (1 + 1e-6):
            problems.append(f"max|u| exceeds {systems.HELMHOLTZ_MAX_ABS_U:g}")
    return problems


def _check_histogram(attrs: h5py.AttributeManager, params: np.ndarray) -> list[str]:
    if "omega_values" not in attrs or "omega_counts" not in attrs:
        return ["omega histogram attributes missing"]
    values, counts = np.unique(params.astype(np.int64), return_counts=True)
    if not (
        np.array_equal(values, attrs["omega_values"])
        and np.array_equal(counts, attrs["omega_counts"])
    ):
        return ["omega histogram attributes disagree with the stored omegas"]
    return []


def check_command(args: argparse.Namespace) -> int:
    """``pdetransfer check``: exit 0 if the file passes, 1 if it fails, 2 if unreadable."""
    if args.tolerance is not None and not args.tolerance >= 0:
        raise UserError(f"--tolerance must be non-negative, got {args.tolerance}")
    if read_info(args.file).imported:
        # import_check builds on this module's residual, hence imported here, not above
        from pdetransfer.data.import_check import check_imported, print_report

        imported = check_imported(args.file, args.tolerance)
        print_report(imported)
        return 0 if imported.ok else 1
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    report = check_dataset(args.file, tolerance)
    info = report.info
    worst = int(np.argmax(report.residual))
    ratio = report.residual / report.floor
    print(
        f"{info.path}: {info.system}, {info.param_name} in [{info.param_range[0]:g}, "
        f"{info.param_range[1]:g}], {info.split}, {info.n_samples} samples on "
        f"{info.grid}x{info.grid}, seed {info.seed} (base {info.base_seed})"
    )
    print(
        f"  relative residual |Lu - f|/|f|: max {report.residual[worst]:.3g} (sample {worst}), "
        f"median {np.median(report.residual):.3g}"
    )
    print(
        f"  residual / float32 rounding floor: max {ratio.max():.3g}, median "
        f"{np.median(ratio):.3g} (allowed {FLOOR_FACTOR:g} x floor + {tolerance:g})"
    )
    print(f"  {info.param_name}: min {report.params.min():.6g}, max {report.params.max():.6g}")
    if info.system == "helmholtz":
        pairs = zip(info.attrs["omega_values"], info.attrs["omega_counts"], strict=True)
        print("  omega histogram: " + ", ".join(f"{v}:{c}" for v, c in pairs))
        print(f"  rejected draws (max|u| > 2): {info.attrs['n_rejected']}")
    print_verdict(
        report.failures,
        f"if the file was damaged after it was\n  written, {regenerate_hint(info.path)}",
    )
    return 0 if report.ok else 1


def print_verdict(failures: list[str], remedy: str) -> None:
    """The end of a check report: each failure, then OK, or FAILED with what to do."""
    for failure in failures:
        print(f"  FAIL {failure}")
    if failures:
        print(f"  FAILED ({len(failures)} problems); {remedy}")
    else:
        print("  OK")
