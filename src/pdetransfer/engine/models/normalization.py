"""The canonical 7-channel input and the normalisation that belongs to the model.

Every system is fed to the network in one layout, ``f, D11, D22, D12, v1, v2, omega`` (a
coefficient a system lacks is a zero channel), so one checkpoint can be fine-tuned on another
system or take all three at once. The normalisation follows the reference study:

* each sample's source is divided by ``s_i = rms(f_i) / median_rms`` (``median_rms`` over the
  pre-training set); the PDE is linear in ``f``, so the network predicts ``u_i / s_i`` and its
  output is multiplied back by ``s_i`` -- exact, and it keeps every input at unit scale;
* each coefficient channel is divided by its pre-training median magnitude;
* targets are never normalised.

The statistics are part of the model: they are computed once on the pre-training set, stored in
every checkpoint and reused unchanged by fine-tuning and evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pdetransfer.errors import UserError

#: The canonical input channels, in order; datasets store the last six as ``coefficients``.
CHANNELS: tuple[str, ...] = ("f", "D11", "D22", "D12", "v1", "v2", "omega")
COEFFICIENTS: tuple[str, ...] = CHANNELS[1:]


@dataclass(frozen=True)
class Normalization:
    """The two statistics of the normalisation, as computed by :mod:`pdetransfer.data.stats`."""

    source_norm_median: float
    coefficient_abs_median: tuple[float, ...]

    def __post_init__(self) -> None:
        scales = (self.source_norm_median, *self.coefficient_abs_median)
        if len(self.coefficient_abs_median) != len(COEFFICIENTS):
            raise UserError(
                f"normalisation has {len(self.coefficient_abs_median)} coefficient scales, "
                f"expected {len(COEFFICIENTS)} ({', '.join(COEFFICIENTS)})"
            )
        if not all(math.isfinite(v) and v > 0 for v in scales):
            raise UserError(f"normalisation scales must be finite and positive, got {scales}")

    @classmethod
    def from_stats(cls, stats: dict[str, object], origin: str) -> Normalization:
        """Take the statistics out of a stats dictionary (``pdetransfer stats`` output).

        ``origin`` names where the dictionary came from, for the error message.
        """
        channels = stats.get("channels")
        if channels is not None and list(channels) != list(CHANNELS):  # type: ignore[call-overload]
            raise UserError(
                f"{origin} describes channels {channels}, not the canonical {list(CHANNELS)}"
            )
        try:
            return cls(
                float(stats["source_norm_median"]),  # type: ignore[arg-type]
                tuple(float(v) for v in stats["coefficient_abs_median"]),  # type: ignore[attr-defined]
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{origin} lacks valid normalisation statistics ({err})") from None

    def to_dict(self) -> dict[str, object]:
        """Plain-data form stored in checkpoints (same keys as the stats file)."""
        return {
            "source_norm_median": self.source_norm_median,
            "coefficient_abs_median": list(self.coefficient_abs_median),
            "channels": list(CHANNELS),
        }


def source_norm(f: torch.Tensor) -> torch.Tensor:
    """RMS of each sample's source over the grid, the definition ``pdetransfer.data.stats`` uses."""
    return f.square().mean(dim=(-2, -1)).sqrt()


class NormalizedOperator(nn.Module):
    """The model as the study uses it: ``(f, coefficients) -> u`` in physical units.

    Builds the normalised 7-channel input, runs the network (of any registered architecture,
    :mod:`pdetransfer.engine.models.registry`) and undoes the per-sample source scaling on the
    output. The statistics are non-persistent buffers: they follow the module to the GPU but
    are not in its ``state_dict``, because checkpoints store them as plain numbers next to the
    network weights (readable without torch by ``pdetransfer info``).

    Every sample is treated on its own, so any leading axes ride along: ``network`` may be a
    packed model (:class:`~pdetransfer.engine.models.packed.PackedNetwork`), which takes and
    returns a member axis in front of the batch (``(K, B, n, n)`` sources give
    ``(K, B, n, n)`` predictions).
    """

    def __init__(self, network: nn.Module, normalization: Normalization) -> None:
        super().__init__()
        if network.spec.in_channels != len(CHANNELS):
            raise UserError(
                f"the model takes {network.spec.in_channels} input channels, "
                f"the canonical layout has {len(CHANNELS)}"
            )
        self.network = network
        self.normalization = normalization
        self.register_buffer(
            "source_norm_median",
            torch.tensor(normalization.source_norm_median, dtype=torch.float32),
            persistent=False,
        )
        self.register_buffer(
            "coefficient_scale",
            torch.tensor(normalization.coefficient_abs_median, dtype=torch.float32),
            persistent=False,
        )

    def inputs(
        self, f: torch.Tensor, coefficients: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised network input ``(..., 7, n, n)`` and each sample's source scale ``(...)``.

        A zero source (which has the zero solution) gets scale 1 rather than a division by 0.
        Coefficients are per-sample constants ``(..., 6)``, broadcast to planes, or spatially
        varying fields ``(..., 6, n, n)`` (imported data such as Darcy's a(x)), used as they are.
        """
        scale = source_norm(f) / self.source_norm_median
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        nx, ny = f.shape[-2:]
        if coefficients.dim() == f.dim() + 1:
            coeffs = coefficients / self.coefficient_scale[:, None, None]
        else:
            coeffs = (coefficients / self.coefficient_scale)[..., None, None]
            coeffs = coeffs.expand(*coeffs.shape[:-2], nx, ny)
        x = torch.cat([(f / scale[..., None, None]).unsqueeze(-3), coeffs], -3)
        return x, scale

    def forward(self, f: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """Predict ``u`` ``(..., n, n)`` from sources ``(..., n, n)`` and coefficients
        ``(..., 6)`` or ``(..., 6, n, n)``."""
        x, scale = self.inputs(f, coefficients)
        return self.network(x)[..., 0, :, :].float() * scale[..., None, None]
