"""Training losses: per-sample terms, averaged over the global batch.

``sse`` (the study's default, as in the paper)
    Each sample's sum of squared errors over the grid, in the units of ``u``. Samples with a
    large solution norm dominate it: in the advection-diffusion data the top 10% of samples
    carry most of ``sum ||u||^2``.
``rel_l2`` (as neuraloperator trains)
    Each sample's ``||u_pred - u||_2 / ||u||_2``, the metric the study reports, so every sample
    weighs the same.

Both are a mean over samples of a per-sample term, which is what makes data-parallel training
exact for either: each process sums its share's terms and divides by the *global* batch size
(see :meth:`pdetransfer.engine.training.loop.Trainer._losses`).
"""

from __future__ import annotations

import torch

LOSSES = ("sse", "rel_l2")

#: How many times its first value a training loss may grow before the run counts as diverged.
#: SSE is quadratic in the error and rel_l2 linear, so both thresholds mean the same thing: an
#: error amplitude 1000x that of the first step, which no run that recovers ever reaches.
EXPLOSION = {"sse": 1e6, "rel_l2": 1e3}


def per_sample_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss term of every sample of a batch, shape ``(batch,)``, in float32."""
    squared = (prediction.float() - target).square().sum(dim=(1, 2))
    if kind == "sse":
        return squared
    if kind == "rel_l2":
        return squared.sqrt() / target.square().sum(dim=(1, 2)).sqrt()
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def relative_l2(u_pred: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||u_pred - u||_2 / ||u||_2`` over the grid, in float64."""
    err = (u_pred.double() - u.double()).square().sum(dim=(-2, -1)).sqrt()
    return err / u.double().square().sum(dim=(-2, -1)).sqrt()
