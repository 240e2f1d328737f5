"""``pdetransfer evaluate``: test-set metrics of a checkpoint (zero-shot included).

Zero-shot evaluation is simply this command applied to a pre-trained checkpoint on the
downstream test set. Several checkpoints (a packed cell's members) are evaluated one after
another in one process on the test data read once, each into its own metrics file, exactly as
its own ``pdetransfer evaluate`` would write it (only the timing, ``seconds``, differs).
``metrics.json`` has ``"status": "ok"``, or ``"diverged"`` for a run that diverged in training
(every metric null, the model not run). Per sample, with ``e = u_pred - u`` on the grid:

``rel_l2``
    ``||e||_2 / ||u||_2``, the study's metric; summarised as mean (the headline number),
    median and standard deviation (population, ddof = 0) over the test samples.
``nrmse``
    Root-mean-square error over all samples and grid points divided by the root-mean-square
    of the true solutions, pooled -- large-amplitude samples weigh more than in ``rel_l2_mean``.
``max_abs_error``
    Largest ``|e|`` anywhere in the test set, in the units of ``u``.
``rel_l2_band_low`` / ``_mid`` / ``_high``
    The error restricted to a band of integer wavenumbers ``|k| = sqrt(kx^2 + ky^2)`` (``k``
    periods across the unit square, the same for every grid): low ``0 <= |k| < 4``, mid
    ``4 <= |k| < 12``, high ``|k| >= 12`` (the PDEBench split), each divided by the full
    ``||u||_2`` so that per sample the squares of the three add up to ``rel_l2^2``; averaged
    over samples. They show whether a model misses the large scales or the fine detail.
``rel_l2_per_sample``
    Every test sample's ``rel_l2`` in test-set order (files in the order given): what the
    study's intervals resample (:mod:`pdetransfer.study.statistics`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path, write_json
from pdetransfer.data.datasets import DatasetInfo
from pdetransfer.engine.checkpoints import build_operator, check_grid, load_checkpoint, sha256_file
from pdetransfer.engine.fields import FieldSet, file_record, load_fields, read_infos
from pdetransfer.engine.losses import relative_l2
from pdetransfer.engine.models.normalization import NormalizedOperator
from pdetransfer.engine.runtime.devices import resolve_device
from pdetransfer.errors import UserError
from pdetransfer.progress import Progress

#: Wavenumber bands of the band errors: name -> [lowest |k|, first |k| above the band).
BANDS: dict[str, tuple[float, float]] = {"low": (0, 4), "mid": (4, 12), "high": (12, math.inf)}
DEFAULT_PREDICTIONS = 8
#: The metrics of :func:`summarize` (besides ``n_samples``), in its order.
METRICS = (
    "rel_l2_mean",
    "rel_l2_median",
    "rel_l2_std",
    "nrmse",
    "max_abs_error",
    *(f"rel_l2_band_{name}" for name in BANDS),
)


@torch.no_grad()
def predict(
    operator: NormalizedOperator,
    fields: FieldSet,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, u_pred)`` batch by batch, ``u_pred`` as float32 on the CPU."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        f, c, _ = fields.batch(chunk)
        with autocast:
            u_pred = operator(f.to(device), c.to(device))
        yield chunk, u_pred.float().cpu()


def relative_l2_sums(
    operator: NormalizedOperator,
    fields: FieldSet,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
) -> tuple[float, int]:
    """Sum of the per-sample relative L2 errors over ``indices``, and their number."""
    total = 0.0
    for chunk, u_pred in predict(operator, fields, indices, batch_size, device, bf16):
        total += float(relative_l2(u_pred, fields.u[chunk]).sum())
    return total, len(indices)


def sample_errors(u_pred: torch.Tensor, u: torch.Tensor) -> dict[str, np.ndarray]:
    """All per-sample quantities the metrics are built from (see the module docstring)."""
    err = u_pred.double() - u.double()
    n_x, n_y = err.shape[-2:]
    u_sq = u.double().square().sum(dim=(-2, -1))
    out = {
        "rel_l2": (err.square().sum(dim=(-2, -1)) / u_sq).sqrt(),
        "err_sq": err.square().sum(dim=(-2, -1)),
        "u_sq": u_sq,
        "points": torch.full_like(u_sq, n_x * n_y),
        "max_abs": err.abs().amax(dim=(-2, -1)),
    }
    # Parseval: sum over the grid of e^2 = sum over modes of |e_hat|^2 / (nx ny).
    power = torch.fft.fft2(err).abs().square() / (n_x * n_y)
    kx = torch.fft.fftfreq(n_x, d=1.0 / n_x, dtype=torch.float64)
    ky = torch.fft.fftfreq(n_y, d=1.0 / n_y, dtype=torch.float64)
    radius = torch.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2)
    for name, (lo, hi) in BANDS.items():
        mask = (radius >= lo) & (radius < hi)
        out[f"band_{name}"] = ((power * mask).sum(dim=(-2, -1)) / u_sq).sqrt()
    return {k: v.numpy() for k, v in out.items()}


def summarize(per_sample: dict[str, np.ndarray]) -> dict[str, float | int]:
    """Metrics of a test set from :func:`sample_errors` output (possibly concatenated)."""
    rel = per_sample["rel_l2"]
    metrics: dict[str, float | int] = {
        "rel_l2_mean": float(rel.mean()),
        "rel_l2_median": float(np.median(rel)),
        "rel_l2_std": float(rel.std()),
        "nrmse": float(math.sqrt(per_sample["err_sq"].sum() / per_sample["u_sq"].sum())),
        "max_abs_error": float(per_sample["max_abs"].max()),
    }
    for name in BANDS:
        metrics[f"rel_l2_band_{name}"] = float(per_sample[f"band_{name}"].mean())
    metrics["n_samples"] = len(rel)
    return metrics


class SharedTestSet:
    """The test files of one ``evaluate`` command, each read when a checkpoint first needs it.

    With several checkpoints a file, once read, is kept for the next ones: a packed cell's
    members share one read of the test set. With one checkpoint nothing is kept, so memory
    holds one file at a time, as it always did.
    """

    def __init__(self, infos: list[DatasetInfo], keep: bool) -> None:
        self.infos = infos
        self.keep = keep
        self._read: dict[int, FieldSet] = {}

    def fields(self, index: int) -> FieldSet:
        """The samples of file ``index`` (in ``--data`` order)."""
        if index in self._read:
            return self._read[index]
        fields = load_fields([self.infos[index]])
        if self.keep:
            self._read[index] = fields
        return fields


def check_outputs(checkpoints: Sequence[str], outs: Sequence[str], predictions: str | None) -> None:
    """Refuse --out lists that do not pair one metrics file with each checkpoint.

    The pairing is by position, so a count mismatch or a repeated file would silently
    attribute one member's metrics to another (or overwrite them).
    """
    if len(checkpoints) != len(outs):
        raise UserError(
            f"--checkpoint names {len(checkpoints)} checkpoint(s) but --out {len(outs)} "
            "file(s); give one --out per --checkpoint, in the same order"
        )
    seen: set[str] = set()
    for out in outs:
        if os.path.abspath(out) in seen:
            raise UserError(f"--out {out} is given twice; each checkpoint needs its own file")
        seen.add(os.path.abspath(out))
    if predictions and len(checkpoints) > 1:
        raise UserError(
            f"--predictions holds one checkpoint's predictions but --checkpoint names "
            f"{len(checkpoints)}; evaluate the checkpoint whose predictions you want alone"
        )


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``pdetransfer evaluate`` was asked to do, parsed and checked once.

    ``outs[k]`` is ``checkpoints[k]``'s metrics file; ``n_predictions`` is how many test
    samples ``predictions`` holds (0 without a predictions file).
    """

    checkpoints: tuple[str, ...]
    data: tuple[str, ...]
    outs: tuple[str, ...]
    threads: int | None
    device: str
    batch_size: int
    predictions: Path | None
    n_predictions: int
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvaluateConfig:
        """Check the ``evaluate`` subcommand's arguments; one :class:`UserError` each."""
        check_outputs(args.checkpoint, args.out, args.predictions)
        if args.n_predictions is not None and not args.predictions:
            raise UserError("--n-predictions needs --predictions to say where to write them")
        if args.n_predictions is not None and args.n_predictions < 1:
            raise UserError(f"--n-predictions must be at least 1, got {args.n_predictions}")
        if args.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.threads is not None and args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        n_predictions = 0
        if args.predictions:
            n_predictions = args.n_predictions or DEFAULT_PREDICTIONS
        return cls(
            checkpoints=tuple(args.checkpoint),
            data=tuple(args.data),
            outs=tuple(args.out),
            threads=args.threads,
            device=args.device,
            batch_size=args.batch_size,
            predictions=Path(args.predictions) if args.predictions else None,
            n_predictions=n_predictions,
            quiet=args.quiet,
        )


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``pdetransfer evaluate``: each --checkpoint's metrics JSON at its --out, in order.

    The checkpoints are evaluated one at a time, so memory does not grow with their number
    (a packed cell's members are evaluated by one job with one run's memory); a checkpoint
    that cannot be evaluated stops the command with the checkpoints before it written.
    """
    config = EvaluateConfig.from_args(args)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    test = SharedTestSet(read_infos(config.data, None), keep=len(config.checkpoints) > 1)
    # Resolved when the first checkpoint that runs needs it: a diverged one runs no model, so
    # a cell of diverged members needs no device, as their separate evaluations did not.
    device = functools.cache(functools.partial(resolve_device, config.device))
    count = len(config.checkpoints)
    for k, (path, out) in enumerate(zip(config.checkpoints, config.outs, strict=True)):
        label = "evaluate" if count == 1 else f"evaluate {k + 1}/{count}"
        evaluate_checkpoint(config, path, out, test, device, label)
    return 0


def evaluate_checkpoint(
    config: EvaluateConfig,
    path: str,
    out: str,
    test: SharedTestSet,
    device: Callable[[], torch.device],
    label: str,
) -> None:
    """Write the metrics of one checkpoint to ``out`` (and ``--predictions``, if asked for)."""
    started = time.perf_counter()
    checkpoint = load_checkpoint(path, "model")
    for info in test.infos:
        check_grid(checkpoint, path, int(info.grid))
    if checkpoint.get("status") == "diverged":
        _write_diverged(config, path, out, checkpoint, test, started)
        return
    operator = build_operator(checkpoint, path).to(device()).eval()

    parts, per_file, kept = [], [], []
    total = sum(int(info.n_samples) for info in test.infos)
    with Progress(total, label, unit="sample", enabled=not config.quiet) as progress:
        for index, info in enumerate(test.infos):
            fields = test.fields(index)
            errors: list[dict[str, np.ndarray]] = []
            indices = torch.arange(len(fields))
            for chunk, u_pred in predict(operator, fields, indices, config.batch_size, device()):
                errors.append(sample_errors(u_pred, fields.u[chunk]))
                room = config.n_predictions - sum(len(k[0]) for k in kept)
                if room > 0:
                    take = chunk[:room]
                    kept.append(
                        (
                            fields.f[take],
                            fields.u[take],
                            u_pred[:room],
                            fields.coefficients[take],
                            errors[-1]["rel_l2"][:room],
                        )
                    )
                progress.update(len(chunk))
            joined = {k: np.concatenate([e[k] for e in errors]) for k in errors[0]}
            parts.append(joined)
            per_file.append({**file_record(info), **summarize(joined)})

    everything = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    metrics = {
        "status": "ok",
        **summarize(everything),
        # Per sample in test-set order, so the tables can bootstrap over test samples.
        "rel_l2_per_sample": [float(e) for e in everything["rel_l2"]],
        "data": [os.fspath(p) for p in config.data],
        "files": per_file,
        "bands": {name: [lo, None if math.isinf(hi) else hi] for name, (lo, hi) in BANDS.items()},
        "checkpoint": _identity(checkpoint, path),
        "device": str(device()),
        "seconds": time.perf_counter() - started,
        "pdetransfer_version": __version__,
        "torch_version": str(torch.__version__),
    }
    write_json(out, metrics)
    if config.predictions is not None:
        _write_predictions(config.predictions, kept, metrics)


def _write_diverged(
    config: EvaluateConfig,
    path: str,
    out: str,
    checkpoint: dict[str, Any],
    test: SharedTestSet,
    started: float,
) -> None:
    """Metrics of a diverged run: status and reason, every metric null; the model is not run.

    A diverged run is a result of its learning rate (see
    :mod:`pdetransfer.engine.training.command`), so its metrics file exists and says so;
    aggregation skips it when choosing a learning rate. ``--predictions`` gets the first test
    samples with NaN predictions, for the same reason.
    """
    nulls: dict[str, Any] = {key: None for key in METRICS}
    infos = test.infos
    total = sum(int(info.n_samples) for info in infos)
    metrics = {
        "status": "diverged",
        "divergence": checkpoint["divergence"]["reason"],
        **nulls,
        "rel_l2_per_sample": None,
        "n_samples": total,
        "data": [os.fspath(p) for p in config.data],
        "files": [
            {**file_record(info), **nulls, "n_samples": int(info.n_samples)} for info in infos
        ],
        "bands": {name: [lo, None if math.isinf(hi) else hi] for name, (lo, hi) in BANDS.items()},
        "checkpoint": _identity(checkpoint, path),
        "device": None,
        "seconds": time.perf_counter() - started,
        "pdetransfer_version": __version__,
        "torch_version": str(torch.__version__),
    }
    write_json(out, metrics)
    if config.predictions is not None:
        fields = test.fields(0)
        take = torch.arange(min(len(fields), config.n_predictions))
        nan = torch.full_like(fields.u[take], math.nan)
        kept = [(fields.f[take], fields.u[take], nan, fields.coefficients[take], nan[:, 0, 0])]
        _write_predictions(config.predictions, kept, metrics)


def _identity(checkpoint: dict[str, Any], path: str) -> dict[str, Any]:
    model = checkpoint["model"]
    return {
        "path": os.fspath(path),
        "sha256": sha256_file(path),
        "model": model["name"],
        "architecture": model["architecture"],
        "modes": model["modes"],
        "width": model["width"],
        "parameters": model["parameters"],
        "trained_on": checkpoint["trained_on"],
    }


def _write_predictions(
    path: Path, kept: list[tuple[torch.Tensor, ...]], metrics: dict[str, Any]
) -> None:
    """The first test samples with their predictions, for the workflow's gallery plot."""
    f, u, u_pred, coefficients, rel = (
        np.concatenate([np.asarray(part[i]) for part in kept]) for i in range(5)
    )
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        out.create_dataset("f", data=f.astype(np.float32))
        out.create_dataset("u", data=u.astype(np.float32))
        out.create_dataset("u_pred", data=u_pred.astype(np.float32))
        out.create_dataset("coefficients", data=coefficients.astype(np.float32))
        out.create_dataset("rel_l2", data=rel.astype(np.float64))
        out.attrs["checkpoint"] = metrics["checkpoint"]["path"]
        out.attrs["checkpoint_sha256"] = metrics["checkpoint"]["sha256"]
        out.attrs["data"] = json.dumps(metrics["data"])
        out.attrs["pdetransfer_version"] = __version__
