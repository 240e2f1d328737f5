"""Models from their specification, for every registered architecture.

:func:`build_model` is the one place a network is constructed (training, checkpoints and
evaluation all call it), and :func:`build_packed` the one place K of them become one packed
model: the architecture's own member-axis implementation where the registry names one, else
the generic :class:`~pdetransfer.engine.models.packed.FunctionalEnsemble`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch
from torch import nn

from pdetransfer.engine.models.packed import FunctionalEnsemble, PackedNetwork
from pdetransfer.engine.models.registry import ModelSpec, entry


def _load(reference: str) -> type:
    """The class a registry entry names as ``"module:Class"``."""
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised network of ``spec`` (torch's global RNG draws its weights)."""
    return _load(entry(spec.architecture).network)(spec)


def packed_class(spec: ModelSpec, wrapped: bool = False) -> type[PackedNetwork]:
    """How K networks of ``spec``'s architecture are packed into one model.

    The architecture's member-axis implementation mirrors its own network class only; a
    network wrapped in something else (``wrapped``: adapters,
    :mod:`pdetransfer.engine.models.trainable`) is packed by ``torch.func``.
    """
    packed = entry(spec.architecture).packed
    return FunctionalEnsemble if packed is None or wrapped else _load(packed)


def build_packed(networks: Sequence[nn.Module]) -> PackedNetwork:
    """The K ``networks`` (one spec) as one model with a member axis (see ``packed_class``);
    each packed weight trains if the members' own weight does."""
    spec = networks[0].spec
    wrapped = type(networks[0]) is not _load(entry(spec.architecture).network)
    packed = packed_class(spec, wrapped)(networks)  # type: ignore[arg-type]
    frozen = {name for name, p in networks[0].named_parameters() if not p.requires_grad}
    for name, p in packed.member_parameters().items():
        p.requires_grad_(name not in frozen)
    return packed


def count_parameters(model: nn.Module) -> int:
    """Trainable real numbers of an instantiated model (complex entries count twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def meta_parameter_count(spec: ModelSpec) -> int:
    """The parameter count of ``spec``'s network built on the ``meta`` device (no memory, no
    weights drawn): for architectures whose closed form is another library's to change."""
    with torch.device("meta"):
        return count_parameters(build_model(spec))
