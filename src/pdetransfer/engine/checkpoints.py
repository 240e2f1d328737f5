"""Self-describing checkpoints: what a model is, what it was trained on, and its weights.

A checkpoint is a ``torch.save`` dictionary of plain data and tensors only (it loads with
``weights_only=True``, so opening someone else's file cannot execute code):

``format``, ``format_version``, ``kind``
    ``"pdetransfer-checkpoint"``, :data:`FORMAT_VERSION`, and ``"model"`` (a finished run's
    best-validation weights, ``model.pt``) or ``"state"`` (resume state, ``state.pt``).
``pdetransfer_version``, ``torch_version``, ``created``
    Who wrote it and when (UTC, ISO 8601).
``model``
    :meth:`pdetransfer.engine.models.registry.ModelSpec.to_dict`: name, modes, width,
    in_channels, layers, architecture (a registry entry; a checkpoint without it, written
    before the registry, holds an FNO and is read as one), parameters.
``channels``, ``grid``
    The input layout the weights expect and the grid they were trained on.
``normalization``
    :meth:`pdetransfer.engine.models.normalization.Normalization.to_dict` -- reused by every
    fine-tune.
``trained_on``
    ``data`` and ``val`` (path, system, split, param_range, grid, n_samples, seed and, for
    ``data``, how many samples were ``used``), ``n_train``, ``seed``, and ``init`` (path and
    sha256 of the pre-trained checkpoint, or None).
``status``, ``divergence``, ``training``
    ``"completed"`` or ``"diverged"`` (with the step and reason), and the recipe and its
    outcome: the keys of ``train.json`` described in :mod:`pdetransfer.engine.training.run_files`
    (lr, epochs, batch_size, min_steps, steps, max_steps, stop_reason, best_step,
    best_val_rel_l2, val_every, ...), ``weights_from``, train_seconds, world_size, device, bf16.
``config``
    What determines the result (see :func:`pdetransfer.engine.training.plan.resolve_plan`); a
    rerun of ``train`` compares it to decide between "resume", "already finished" and "a
    different run is in the way".
``weights``
    The network's ``state_dict``, never wrapped (no DDP ``module.`` prefix).

A ``state`` checkpoint adds ``best_weights``, ``optimizer``, ``scheduler``, ``progress``
(epoch, batch, step, seconds), ``member`` (the run's own state:
:meth:`pdetransfer.engine.training.member.MemberState.to_state`, with the log rows so far) and
``rng``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from pdetransfer.atomic import atomic_path
from pdetransfer.engine.models.build import build_model
from pdetransfer.engine.models.normalization import CHANNELS, Normalization, NormalizedOperator
from pdetransfer.engine.models.registry import ARCHITECTURES, DEFAULT_ARCHITECTURE, ModelSpec
from pdetransfer.errors import UserError

FORMAT = "pdetransfer-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``payload`` atomically: a kill mid-write leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike[str], kind: str | None = "model") -> dict[str, Any]:
    """Read and validate a checkpoint; every way it can be wrong is one :class:`UserError`.

    ``kind`` is the kind required (``"model"`` or ``"state"``), or None for either.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"checkpoint {path} cannot be read (corrupt, truncated or not a torch file: "
            f"{reason[:120]})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is a torch file but not a pdetransfer checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {data.get('format_version')}, "
            f"this pdetransfer reads version {FORMAT_VERSION}"
        )
    if kind is not None and data.get("kind") != kind:
        wanted = "a finished run's model.pt" if kind == "model" else "a resume state.pt"
        raise UserError(f"checkpoint {path} is a {data.get('kind')!r} checkpoint, not {wanted}")
    channels = list(data.get("channels", []))
    if channels != list(CHANNELS) or data["model"].get("in_channels") != len(CHANNELS):
        raise UserError(
            f"checkpoint {path} expects input channels {channels}, but the data provides "
            f"the canonical {list(CHANNELS)}"
        )
    _name_architecture(data)
    architecture = data["model"]["architecture"]
    if architecture not in ARCHITECTURES:
        raise UserError(
            f"checkpoint {path} holds a model of architecture {architecture!r}, which this "
            f"pdetransfer does not know (registered: {', '.join(ARCHITECTURES)})"
        )
    return data


def _name_architecture(data: dict[str, Any]) -> None:
    """Give a checkpoint written before the registry its architecture, an FNO's, in its model
    and in its run identity, so that it loads, describes itself and compares as one."""
    data["model"].setdefault("architecture", DEFAULT_ARCHITECTURE)
    model = data.get("config", {}).get("model")
    if isinstance(model, dict):
        model.setdefault("architecture", DEFAULT_ARCHITECTURE)


def check_grid(checkpoint: dict[str, Any], path: str | os.PathLike[str], grid: int) -> None:
    """Refuse data on another grid than the checkpoint was trained on.

    The FNO runs on any grid, but the study never transfers across resolutions; a mismatch
    means files of two different study configurations were mixed up.
    """
    if int(checkpoint["grid"]) != grid:
        raise UserError(
            f"checkpoint {path} was trained on a {checkpoint['grid']}x{checkpoint['grid']} "
            f"grid but the data is {grid}x{grid}"
        )


def build_operator(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> NormalizedOperator:
    """The model a checkpoint describes, with its normalisation and its (best) weights."""
    network = build_model(ModelSpec.from_dict(checkpoint["model"]))
    try:
        network.load_state_dict(checkpoint["weights"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(
            f"checkpoint {path} has weights that do not fit its model ({first})"
        ) from None
    normalization = Normalization.from_stats(checkpoint["normalization"], f"checkpoint {path}")
    return NormalizedOperator(network, normalization)


def unwrapped_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``module``'s weights without any DDP wrapper's ``module.`` prefix."""
    inner = (
        module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
    )
    return {k: v.detach().to("cpu", copy=True) for k, v in inner.state_dict().items()}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file: the identity of a checkpoint in metrics and fine-tunes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Everything in a checkpoint except tensors and optimiser internals, as plain JSON data."""
    skip = {"weights", "best_weights", "optimizer", "scheduler", "rng"}
    return {k: v for k, v in checkpoint.items() if k not in skip}


def info_command(args: argparse.Namespace) -> int:
    """``pdetransfer info CKPT``: print what a checkpoint says about itself."""
    checkpoint = load_checkpoint(args.checkpoint, kind=None)
    summary = describe(checkpoint)
    summary["path"] = os.fspath(args.checkpoint)
    summary["sha256"] = sha256_file(args.checkpoint)
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(_text(summary))
    return 0


def _text(s: dict[str, Any]) -> str:
    model, training, trained = s["model"], s.get("training", {}), s["trained_on"]
    norm = s["normalization"]
    lines = [
        f"checkpoint   {s['path']} ({s['kind']}, format {s['format_version']})",
        f"sha256       {s['sha256']}",
        f"model        {model['name']} ({model['architecture']}): "
        f"{ARCHITECTURES[model['architecture']].describe(ModelSpec.from_dict(model))}, "
        f"{model['parameters']:,} parameters",
        f"input        {', '.join(s['channels'])} on a {s['grid']}x{s['grid']} grid",
        f"normalised   source rms median {norm['source_norm_median']:.6g}; coefficient "
        "medians " + ", ".join(f"{v:.4g}" for v in norm["coefficient_abs_median"]),
    ]
    for record in trained["data"]:
        lines.append("trained on   " + _file_line(record))
    for record in trained["val"]:
        lines.append("validated on " + _file_line(record))
    init = trained.get("init")
    lines.append(
        f"init         {init['path']} (sha256 {init['sha256'][:12]})"
        if init
        else "init         none (from scratch)"
    )
    rule = s.get("trainable")
    if rule and rule["rule"] != "all":
        rank = f" rank {rule['rank']}" if rule.get("rank") else ""
        merged = ", merged into these weights" if rule.get("weights") == "merged" else ""
        lines.append(
            f"trainable    {rule['rule']}{rank}: {rule['parameters']:,} parameters trained{merged}"
        )
    if "progress" in s:
        p = s["progress"]
        lines.append(f"progress     epoch {p['epoch']}, batch {p['batch']}, step {p['step']}")
    if training:
        lines.append(
            f"training     lr {training['lr']:g}, {training['epochs_run']} epochs, "
            f"batch {training['batch_size']}, {training['steps']} steps, seed {trained['seed']}, "
            f"stopped by {training.get('stop_reason')}"
        )
        if training.get("best_step") is not None:
            lines.append(
                f"best val     rel-L2 {training['best_val_rel_l2']:.4g} at step "
                f"{training['best_step']} ({training['train_seconds']:.1f} s of training)"
            )
    if s.get("status") == "diverged":
        lines.append(f"DIVERGED     {s['divergence']['reason']}")
    lines.append(
        f"written by   pdetransfer {s['pdetransfer_version']}, torch {s['torch_version']}, "
        f"{s['created']}"
    )
    return "\n".join(lines) + "\n"


def _file_line(record: dict[str, Any]) -> str:
    lo, hi = record["param_range"]
    used = f"{record['used']} of " if "used" in record else ""
    return (
        f"{record['path']}: {record['system']} ({lo:g}, {hi:g}) {record['split']}, "
        f"{used}{record['n_samples']} samples, seed {record['seed']}"
    )
