"""``pdetransfer check`` of an imported file: layout, values, provenance and the PDE residual.

The residual of imported data belongs to the grid the source's solver used, so the import
computes it there (before any downsampling) and stores it per sample; this check judges it as
generated data are judged (at most ``FLOOR_FACTOR`` times its float32 rounding floor plus a
tolerance, the import's ``residual_tolerance`` unless ``--tolerance`` is given) and, when
nothing was downsampled, recomputes it from the file itself, which must give the same numbers.
Where the operator or the boundary is not known, the file says why and the check reports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pdetransfer.data import darcy, systems
from pdetransfer.data.check import print_verdict, spectral_residual
from pdetransfer.data.datasets import (
    FLOOR_FACTOR,
    PARAM_TOLERANCE,
    READ_BLOCK,
    DatasetInfo,
    info_from,
    open_dataset,
    read_rows,
)
from pdetransfer.errors import UserError

PROVENANCE = (
    "source_format",
    "source_path",
    "source_sha256",
    "source_keys",
    "source_grid",
    "downsample",
    "conversions",
    "residual_check",
)
RESIDUALS = ("source_residual", "source_residual_floor", "source_boundary")
BOUNDARY_TOLERANCE = 1e-6  # vertex grids: max |u| on the boundary relative to max |u|


@dataclass
class ImportReport:
    """Outcome of :func:`check_imported`; ``failures`` empty means the file passed."""

    info: DatasetInfo
    method: str
    tolerance: float
    skipped: str | None
    recomputed: bool
    residual: np.ndarray = field(default_factory=lambda: np.zeros(0))
    floor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boundary: np.ndarray = field(default_factory=lambda: np.zeros(0))
    params: np.ndarray = field(default_factory=lambda: np.zeros(0))
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def check_imported(path: str | Path, tolerance: float | None = None) -> ImportReport:
    """Validate an imported dataset file (see the module docstring)."""
    path = Path(path)
    with open_dataset(path) as h5:
        info = info_from(h5, path)
        missing = [key for key in PROVENANCE if key not in h5.attrs]
        if missing or "source_rows" not in h5:
            what = missing[0] if missing else "source_rows"
            raise UserError(
                f"{path} is an imported dataset without its provenance ({what}); import it again"
            )
        attrs = info.attrs
        check = json.loads(attrs["residual_check"])
        report = ImportReport(
            info,
            check["method"],
            float(check["tolerance"] if tolerance is None else tolerance),
            check["skipped"],
            recomputed=False,
        )
        n = info.n_samples
        report.params = read_rows(h5["param"], 0, n, path)
        if report.skipped is None:
            report.residual, report.floor, report.boundary = (
                read_rows(h5[name], 0, n, path) for name in RESIDUALS
            )
        recomputed = []
        for start in range(0, n, READ_BLOCK):
            stop = min(start + READ_BLOCK, n)
            fields = read_rows(h5["fields"], start, stop, path)
            if info.coefficient_fields:
                coefficients = read_rows(h5["coefficient_fields"], start, stop, path)
            else:
                coefficients = read_rows(h5["coefficients"], start, stop, path)
            if not (np.isfinite(fields).all() and np.isfinite(coefficients).all()):
                report.failures.append(f"samples {start}..{stop - 1}: non-finite values")
            if info.system == "darcy":
                beta = report.params[start:stop, None, None].astype(np.float32)
                if not np.array_equal(fields[:, 0], np.broadcast_to(beta, fields[:, 0].shape)):
                    report.failures.append(f"samples {start}..{stop - 1}: f is not beta")
            if report.skipped is None and int(attrs["downsample"]) == 1:
                recomputed.append(_residual(info, fields, coefficients))
    if recomputed:
        again = np.concatenate(recomputed)
        report.recomputed = True
        if not np.allclose(again, report.residual, rtol=1e-9, atol=0):
            report.failures.append(
                "the residual recomputed from this file differs from the one the import stored"
            )
    report.failures.extend(_judge(report))
    return report


def _residual(info: DatasetInfo, fields: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    f, u = fields[:, 0], fields[:, 1]
    if info.system in systems.SYSTEMS:
        return spectral_residual(f, u, coefficients)[0]
    a = coefficients[:, 0]
    if a.ndim == 1:
        a = np.broadcast_to(a[:, None, None], u.shape)
    layout = darcy.layout(np.asarray(info.attrs["x"]), np.asarray(info.attrs["y"]))
    assert layout is not None  # the import checked it
    return darcy.residual(a, u, f, layout)[0]


def _judge(report: ImportReport) -> list[str]:
    failures = []
    lo, hi = report.info.param_range
    slack = PARAM_TOLERANCE * max(abs(lo), abs(hi), 1e-300)
    params = report.params
    if params.size and (params.min() < lo - slack or params.max() > hi + slack):
        failures.append(f"{report.info.param_name} outside [{lo:g}, {hi:g}]")
    if report.skipped is not None:
        return failures
    allowed = FLOOR_FACTOR * report.floor + report.tolerance
    bad = np.flatnonzero(~(report.residual <= allowed))
    if bad.size:
        worst = bad[np.argmax(report.residual[bad] / report.floor[bad])]
        failures.insert(
            0,
            f"{bad.size} samples have a residual above {FLOOR_FACTOR:g} x float32 floor + "
            f"{report.tolerance:g}, e.g. sample {worst}: {report.residual[worst]:.3g} (floor "
            f"{report.floor[worst]:.3g}); if the source's solver uses another discretisation, "
            "accept its residual with source.residual_tolerance",
        )
    if report.boundary.size and report.boundary.max() > BOUNDARY_TOLERANCE + report.tolerance:
        failures.append(
            f"u on the boundary reaches {report.boundary.max():.3g} of max |u| (Dirichlet u = 0)"
        )
    return failures


def print_report(report: ImportReport) -> None:
    """The check's text report (the workflow keeps it as ``*.check.txt``)."""
    info, attrs = report.info, report.info.attrs
    lo, hi = info.param_range
    grid, source_grid = info.grid, int(attrs["source_grid"])
    print(
        f"{info.path}: {info.system}, {info.param_name} in [{lo:g}, {hi:g}], {info.split}, "
        f"{info.n_samples} samples on {grid}x{grid}, imported ({attrs['source_format']}) from "
        f"{attrs['source_path']}"
    )
    verified = "verified against the config" if attrs.get("checksum_verified") else "recorded"
    print(f"  source sha256 {attrs['source_sha256']} ({verified})")
    print(
        f"  source grid {source_grid}x{source_grid}, downsampled by {attrs['downsample']}; "
        f"keys {attrs['source_keys']}"
    )
    for step in json.loads(attrs["conversions"]):
        print(f"  converted: {step}")
    if report.skipped is not None:
        print(f"  residual not checked: {report.skipped}")
    else:
        worst = int(np.argmax(report.residual))
        ratio = report.residual / report.floor
        print(
            f"  relative residual |Lu - f|/|f| on the source grid ({report.method}, "
            f"{source_grid}x{source_grid}): max {report.residual[worst]:.3g} (sample {worst}), "
            f"median {np.median(report.residual):.3g}"
        )
        print(
            f"  residual / float32 rounding floor: max {ratio.max():.3g}, median "
            f"{np.median(ratio):.3g} (allowed {FLOOR_FACTOR:g} x floor + {report.tolerance:g})"
        )
        if report.boundary.any():
            print(f"  max |u| on the boundary / max |u|: {report.boundary.max():.3g}")
        if report.recomputed:
            print("  residual recomputed from this file (it is on the source grid)")
        else:
            print("  residual computed at import (this file is downsampled from the source grid)")
    print(f"  {info.param_name}: min {report.params.min():.6g}, max {report.params.max():.6g}")
    print_verdict(report.failures, "fix the source, then import it again")
