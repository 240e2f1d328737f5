"""The configuration of one ``pdetransfer train`` call, parsed and checked once.

The command line becomes a frozen :class:`TrainConfig` as the command starts; the plan, the
members, the trainer and the checkpoint header read it instead of the parsed arguments. Every
value is parsed once and checked once, here, in a sentence that names its flag: a learning rate
goes from its text to a float, which is what the optimiser, the run's identity and
``train.json`` then use, and its text is kept only where the user spelled it, in the run
directory that ``--out-pattern`` names after it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from pdetransfer.engine.models.normalization import CHANNELS
from pdetransfer.engine.models.registry import ModelSpec, parse_model
from pdetransfer.engine.models.trainable import Trainable
from pdetransfer.errors import UserError


@dataclass(frozen=True)
class MemberSpec:
    """One (learning rate, seed) of the call and its run directory."""

    lr: float
    seed: int
    out: Path


@dataclass(frozen=True)
class TrainConfig:
    """What ``pdetransfer train`` was asked to do (see ``pdetransfer train --help``).

    ``members`` are the (learning rate, seed) runs of the call, learning rate major; ``model``
    is ``--model`` of ``--architecture`` resolved for the canonical input channels.
    """

    data: tuple[str, ...]
    val: tuple[str, ...]
    model: ModelSpec
    members: tuple[MemberSpec, ...]
    init: str | None
    stats: str | None
    trainable: Trainable
    n_train: int | None
    epochs: int
    min_steps: int
    max_steps: int | None
    patience: int | None
    val_every: int | None
    val_share: float
    min_val_checks: int
    loss: str
    batch_size: int
    threads: int | None
    device: str
    bf16: bool
    checkpoint_every: int
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        """Parse and check the ``train`` subcommand's arguments; one :class:`UserError` each."""
        members = _members(args)
        _check_counts(args)
        if args.init and args.stats:
            raise UserError(
                "--stats cannot be combined with --init: a fine-tune reuses the pre-trained "
                "checkpoint's normalisation"
            )
        return cls(
            data=tuple(args.data),
            val=tuple(args.val),
            model=parse_model(args.model, len(CHANNELS), args.architecture),
            members=members,
            init=args.init,
            stats=args.stats,
            trainable=_trainable(args),
            n_train=args.n_train,
            epochs=args.epochs,
            min_steps=args.min_steps,
            max_steps=args.max_steps,
            patience=args.patience,
            val_every=args.val_every,
            val_share=args.val_share,
            min_val_checks=args.min_val_checks,
            loss=args.loss,
            batch_size=args.batch_size,
            threads=args.threads,
            device=args.device,
            bf16=args.bf16,
            checkpoint_every=args.checkpoint_every,
            quiet=args.quiet,
        )


def _members(args: argparse.Namespace) -> tuple[MemberSpec, ...]:
    """The members asked for, learning rate major; refuses ambiguous or clashing outputs."""
    lrs: list[str] = [str(v) for v in args.lr]
    seeds: list[int] = list(args.seed)
    values = []
    for text in lrs:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--lr takes numbers, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"--lr must be positive, got {text}")
        values.append(value)
    if len(set(values)) < len(values) or len(set(seeds)) < len(seeds):
        raise UserError("--lr and --seed must not repeat a value")
    pattern = args.out_pattern
    if (args.out is None) == (pattern is None):
        raise UserError("give exactly one of --out (one run) and --out-pattern (several)")
    if pattern is None:
        if len(lrs) * len(seeds) > 1:
            raise UserError(
                "several --lr or --seed values need --out-pattern with {lr} and {seed}, "
                "e.g. --out-pattern 'runs/lr{lr}/s{seed}'"
            )
        return (MemberSpec(values[0], seeds[0], Path(args.out)),)
    for key, count in (("{lr}", len(lrs)), ("{seed}", len(seeds))):
        if count > 1 and key not in pattern:
            raise UserError(
                f"--out-pattern {pattern!r} lacks {key}, so runs would share a directory"
            )
    return tuple(
        MemberSpec(value, seed, Path(pattern.replace("{lr}", text).replace("{seed}", str(seed))))
        for text, value in zip(lrs, values, strict=True)
        for seed in seeds
    )


def _trainable(args: argparse.Namespace) -> Trainable:
    """The rule for which parameters train; the partial rules adapt a pre-trained model."""
    if args.trainable != "all" and not args.init:
        raise UserError(f"--trainable {args.trainable} adapts a pre-trained model: give --init")
    return Trainable(args.trainable, args.lora_rank if args.trainable == "lora" else None)


def _check_counts(args: argparse.Namespace) -> None:
    """The numeric flags' ranges (``None``: the flag was not given)."""
    checks = [
        *(
            (value is None or value >= 1, f"{flag} must be at least 1, got {value}")
            for flag, value in (
                ("--epochs", args.epochs),
                ("--batch-size", args.batch_size),
                ("--n-train", args.n_train),
                ("--threads", args.threads),
                ("--patience", args.patience),
                ("--max-steps", args.max_steps),
                ("--val-every", args.val_every),
                ("--min-val-checks", args.min_val_checks),
            )
        ),
        (args.min_steps >= 0, f"--min-steps must not be negative, got {args.min_steps}"),
        (0 < args.val_share < 1, f"--val-share must lie between 0 and 1, got {args.val_share}"),
        (args.checkpoint_every >= 0, "--checkpoint-every must not be negative"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
