"""neuraloperator's FNO and TFNO: the ``"neuralop_fno"`` and ``"neuralop_tfno"`` registry entries.

They come with the optional extra (``pip install -e '.[neuralop]'``), imported only when such a
model is built, so the project runs without it. Each wraps the library's model with its own
defaults (lifting and projection MLPs, channel MLPs, a grid positional embedding, TFNO's Tucker
factorisation) and the spec's sizes: ``width`` hidden channels, ``layers`` Fourier blocks, and
``modes`` read as this project's FNO reads it, ``modes`` per direction on each side of zero, so
the library's ``n_modes`` is ``2 * modes`` on each axis and both FNOs obey the same grid rule.
Checkpoints hold the wrapper's ``state_dict`` and the spec, like every other architecture, so
they reload without the library's own checkpoint functions.

Their parameter count is the built network's, on the ``meta`` device
(:func:`pdetransfer.engine.models.build.meta_parameter_count`): a closed form would restate
the library's internals, which are its to change.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from pdetransfer.engine.models.registry import ModelSpec
from pdetransfer.errors import UserError


def _library_model(spec: ModelSpec, name: str) -> nn.Module:
    """The library's model ``name`` of ``spec``'s sizes, or one sentence on how to install it."""
    try:
        models = importlib.import_module("neuralop.models")
    except ImportError:
        raise UserError(
            f"architecture {spec.architecture!r} needs neuraloperator; install it with "
            "pip install -e '.[neuralop]'"
        ) from None
    return getattr(models, name)(
        n_modes=(2 * spec.modes, 2 * spec.modes),
        in_channels=spec.in_channels,
        out_channels=1,
        hidden_channels=spec.width,
        n_layers=spec.layers,
    )


class NeuralopFNO(nn.Module):
    """neuraloperator's ``FNO`` behind the registry's ``Class(spec)`` interface."""

    library_class = "FNO"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.model = _library_model(spec, self.library_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, n, n)`` to ``(B, 1, n, n)``."""
        return self.model(x)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The weights only: the library adds its constructor's arguments under
        ``"_metadata"`` (functions and classes among them, which a ``weights_only`` load
        refuses, and which the spec already determines)."""
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state


class NeuralopTFNO(NeuralopFNO):
    """neuraloperator's ``TFNO`` (Tucker-factorised spectral weights)."""

    library_class = "TFNO"
