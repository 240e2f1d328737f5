"""Which parameters a run trains: the rules the study's modes name (``trainable`` in
:mod:`pdetransfer.modes`), for every registered architecture.

- ``all``: every weight (pre-training, fine-tuning, training from scratch).
- ``head``: only the output projection, the modules the architecture's registry entry names
  as ``head`` (the FNO's ``head.0``, ``w -> 2w``, and ``head.2``, ``2w -> 1``, weights and
  biases); the lift and the Fourier layers stay as pre-trained.
- ``lora``: rank-``r`` updates of the weights the registry entry lists as ``adapted`` (the
  FNO's spectral weights and pointwise skip weights of every Fourier layer; biases, lift and
  head stay as pre-trained). Each update starts at zero, so step 0 is the pre-trained model.

**How a spectral update is factorised.** A Fourier layer holds a complex ``w x w`` matrix
``W_k`` for each of its ``2m^2`` retained modes. Low rank *per retained mode*
(``dW_k = U_k V_k``) costs ``8 m^2 w r`` reals per layer, ``2r / w`` of the layer itself
(half of it for the xs width at rank 4): not parameter-efficient at the study's widths. One
update *shared across modes* (``dW_k = U V``) cannot change how the layer weighs one
frequency against another, which is what a new PDE or coefficient range changes. The update
used here shares the channel factors and gives each mode its own mixing of them:
``dW_k = U diag(c_k) V`` with complex ``U`` (``w x r``), ``V`` (``r x w``) and ``c_k``
(``r``), the CP form in which TFNO factorises the spectral weights themselves. It is rank
``r`` at every mode, costs ``4 r (w + m^2)`` reals per layer, and lets the modes move
independently within a shared ``r``-dimensional channel subspace. ``V`` starts at zero (the
update is zero), ``c_k`` at one (every mode starts with the same mix, which training then
separates) and ``U`` uniformly like a pointwise layer's weight, drawn from the run's seed.
A pointwise weight ``W`` (``out x in``) gets the usual ``dW = B A``, ``B`` zero.

A ``lora`` run trains the network wrapped in :class:`LoRA`, whose parameters are the frozen
base (``base.<name>``) and the factors (``updates.<i>.<factor>``); its ``state.pt`` keeps
them apart, so a resumed run continues the factors. What it *publishes* (``model.pt``) is the
merged network, ``W + dW`` under the network's own parameter names (:meth:`Trainable.export`):
it evaluates, is inspected and can be fine-tuned further like any other checkpoint, and its
header records the rule, the rank and, as for every fine-tune, the base's path and sha256.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from pdetransfer.engine.models.registry import TRAINABLE_RULES as RULES
from pdetransfer.engine.models.registry import entry
from pdetransfer.errors import UserError


class MatrixUpdate(nn.Module):
    """``dW = B A`` of an ``(out, in)`` weight: ``A`` drawn like the weight, ``B`` zero."""

    def __init__(self, shape: torch.Size, rank: int) -> None:
        super().__init__()
        out, cin = shape
        bound = 1.0 / math.sqrt(cin)
        self.down = nn.Parameter(torch.empty(rank, cin).uniform_(-bound, bound))
        self.up = nn.Parameter(torch.zeros(out, rank))

    def forward(self) -> torch.Tensor:
        return self.up @ self.down


class SpectralUpdate(nn.Module):
    """``dW_k = U diag(c_k) V`` of spectral weights ``(2, m, 2m, in, out)`` (real and imaginary
    parts first, as :class:`~pdetransfer.engine.models.fno.SpectralConv2d` stores them); every
    factor likewise holds its real and imaginary parts in front, and the complex products are
    written out in real arithmetic (so autocast and ``vmap`` need nothing complex)."""

    def __init__(self, shape: torch.Size, rank: int) -> None:
        super().__init__()
        _, ky, kx, cin, cout = shape
        bound = 1.0 / math.sqrt(cin)
        self.inner = nn.Parameter(torch.empty(2, cin, rank).uniform_(-bound, bound))  # U
        self.mix = nn.Parameter(torch.stack([torch.ones(ky, kx, rank), torch.zeros(ky, kx, rank)]))
        self.outer = nn.Parameter(torch.zeros(2, rank, cout))  # V

    def forward(self) -> torch.Tensor:
        (ur, ui), (cr, ci), (vr, vi) = self.inner, self.mix, self.outer
        # U diag(c_k): (ky, kx, in, r), then times V: (ky, kx, in, out).
        ucr = ur * cr[:, :, None, :] - ui * ci[:, :, None, :]
        uci = ur * ci[:, :, None, :] + ui * cr[:, :, None, :]
        return torch.stack([ucr @ vr - uci @ vi, ucr @ vi + uci @ vr])


UPDATES: dict[str, type[nn.Module]] = {"matrix": MatrixUpdate, "spectral": SpectralUpdate}


class LoRA(nn.Module):
    """A network with frozen weights plus zero-initialised low-rank updates of some of them
    (the architecture's ``adapted`` weights); its forward is the network's with ``W + dW``."""

    def __init__(self, network: nn.Module, rank: int) -> None:
        super().__init__()
        self.spec = network.spec
        self.base = network.requires_grad_(False)
        rules = entry(self.spec.architecture).adapted
        self.targets: list[str] = []
        updates = []
        for name, weight in network.named_parameters():
            kind = next((k for pattern, k in rules if re.fullmatch(pattern, name)), None)
            if kind is not None:
                self.targets.append(name)
                updates.append(UPDATES[kind](weight.shape, rank))
        if not updates:
            raise UserError(f"architecture {self.spec.architecture!r} names no weights to adapt")
        self.updates = nn.ModuleList(updates)

    def weights(self) -> dict[str, torch.Tensor]:
        """The network's parameters with every adapted weight replaced by ``W + dW``."""
        weights = dict(self.base.named_parameters())
        for name, update in zip(self.targets, self.updates, strict=True):
            weights[name] = weights[name] + update()
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.weights(), (x,))

    @torch.no_grad()
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The plain network's ``state_dict`` with the updates merged into its weights."""
        state = self.base.state_dict()
        return {**state, **{k: v.detach().clone() for k, v in self.weights().items()}}


@dataclass(frozen=True)
class Trainable:
    """A rule of :data:`RULES` and its options (``rank``: of the ``lora`` rule's updates)."""

    rule: str = "all"
    rank: int | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise UserError(f"--trainable {self.rule!r} is not a rule ({', '.join(RULES)})")
        if self.rule == "lora" and (self.rank is None or self.rank < 1):
            raise UserError(f"--trainable lora needs --lora-rank of at least 1, got {self.rank}")

    @property
    def wraps(self) -> bool:
        """Whether :meth:`prepare` wraps the network (so it is packed by ``torch.func``)."""
        return self.rule == "lora"

    def identity(self) -> dict[str, object] | None:
        """What a run's identity and checkpoint header record of the rule (None for ``all``,
        so runs written before the rules existed keep their identity)."""
        if self.rule == "all":
            return None
        return {"rule": self.rule, **({"rank": self.rank} if self.rule == "lora" else {})}

    def prepare(self, network: nn.Module) -> nn.Module:
        """The network to train (``network`` itself, or wrapped), its frozen parameters with
        ``requires_grad`` off."""
        if self.wraps:
            return LoRA(network, self.rank)  # type: ignore[arg-type]
        if self.rule == "head":
            heads = entry(network.spec.architecture).head  # type: ignore[union-attr]
            if not heads:
                raise UserError(
                    f"architecture {network.spec.architecture!r} names no output layers for"  # type: ignore[union-attr]
                    " --trainable head"
                )
            for name, p in network.named_parameters():
                p.requires_grad_(any(name.startswith(f"{h}.") for h in heads))
        return network

    def export(
        self, network: nn.Module, weights: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """A trained member's weights (of :meth:`prepare`'s network) as the plain network's
        ``state_dict``, the form every ``model.pt`` holds; ``network`` is a scratch copy of
        the prepared network (its weights are overwritten)."""
        if isinstance(network, LoRA):
            network.load_state_dict(weights)
            return network.merged_state_dict()
        return weights


def trainable_names(network: nn.Module) -> list[str]:
    """Names of the parameters that train, in the network's order."""
    return [name for name, p in network.named_parameters() if p.requires_grad]


def count_trainable(network: nn.Module) -> int:
    """Trainable real numbers of a prepared network (complex entries count twice)."""
    return sum(
        p.numel() * (2 if p.is_complex() else 1) for p in network.parameters() if p.requires_grad
    )
