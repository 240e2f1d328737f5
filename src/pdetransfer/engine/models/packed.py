"""K networks of one specification as one model: the member axis every packed model has.

A packed model maps ``(K, B, C, n, n)`` to ``(K, B, 1, n, n)``, member ``k`` seeing only its
own weights and samples, and holds every weight as one tensor with the member axis in front,
so :class:`~pdetransfer.engine.training.ensemble_adam.EnsembleAdam` steps all members in one
pass and member ``k``'s weights are a slice. :class:`PackedNetwork` is what the training loop
relies on: the members' weights under the network's own parameter names and order (so a
member's ``state_dict`` loads into a plain network, and an optimiser over ``parameters()`` sees
them in the order a separate run's does), and :meth:`PackedNetwork.keep_members`, which drops
members that have stopped so that a pack computes its running members only.

:class:`FunctionalEnsemble` packs any network with ``torch.func`` (its parameters stacked,
``functional_call`` of one network vmapped over the member axis); an architecture may register
faster layers with a member axis instead (the FNO's
:class:`~pdetransfer.engine.models.fno_ensemble.EnsembleFNO`, which also says why they are
faster).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from pdetransfer.engine.models.registry import ModelSpec
from pdetransfer.errors import UserError


class PackedNetwork(nn.Module):
    """Base of packed models: member slices of the stacked weights, by the network's names."""

    spec: ModelSpec

    def member_parameters(self) -> dict[str, torch.Tensor]:
        """The stacked ``(K, ...)`` weights under the network's parameter names, in its order."""
        raise NotImplementedError

    @classmethod
    def pays(cls, spec: ModelSpec, members: int, batch: int, grid: int) -> bool:
        """Whether a packed training step costs no more CPU time than the members' separate
        steps. Only measured implementations may say so: unmeasured ones are not packed on
        the CPU (on a GPU a pack always pays, see :mod:`pdetransfer.engine.training.cell`)."""
        return False

    @property
    def members(self) -> int:
        """Number of members K."""
        return int(next(iter(self.member_parameters().values())).shape[0])

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s weights as the network's ``state_dict`` (CPU copies)."""
        self._check_member(member)
        return {
            name: p[member].detach().to("cpu", copy=True)
            for name, p in self.member_parameters().items()
        }

    @torch.no_grad()
    def load_member(self, member: int, state: dict[str, torch.Tensor]) -> None:
        """Overwrite member ``member``'s weights with a network's ``state_dict``."""
        self._check_member(member)
        params = self.member_parameters()
        if set(state) != set(params):
            raise UserError(
                f"weights for ensemble member {member} do not fit the model "
                f"(keys {sorted(set(state) ^ set(params))} differ)"
            )
        for name, p in params.items():
            p[member].copy_(state[name])

    @torch.no_grad()
    def keep_members(self, rows: Sequence[int]) -> None:
        """Keep only the members at ``rows`` (in that order) and drop the others, in place.

        A pack calls this when members stop, so that its forward and backward passes cover
        the running members only. Every stacked weight (every parameter of a packed model has
        the member axis) is replaced by a new parameter of its gathered rows: new objects
        rather than new data, because autograd remembers a parameter's shape for as long as an
        earlier step's graph lives; an optimiser must take up :meth:`parameters` again. Member
        ``rows[i]`` becomes member ``i`` with the very same numbers, so each kept member
        computes exactly what it computed before.
        """
        if not rows or any(not 0 <= r < self.members for r in rows) or len(set(rows)) < len(rows):
            raise IndexError(f"cannot keep members {list(rows)} of an ensemble of {self.members}")
        for name, p in list(self.named_parameters()):
            owner, _, leaf = name.rpartition(".")
            kept = p.detach().index_select(0, torch.tensor(rows, device=p.device))
            setattr(self.get_submodule(owner), leaf, nn.Parameter(kept, p.requires_grad))

    def _check_member(self, member: int) -> None:
        if not 0 <= member < self.members:
            raise IndexError(f"member {member} of an ensemble of {self.members}")


def shared_spec(networks: Sequence[nn.Module]) -> ModelSpec:
    """The one specification of the members; refuses an empty or mixed list."""
    if not networks:
        raise UserError("an ensemble needs at least one member network")
    spec = networks[0].spec
    for network in networks:
        if network.spec != spec:
            raise UserError(f"ensemble members must share one model, got {network.spec} and {spec}")
    return spec  # type: ignore[return-value]


def stacked(networks: Sequence[nn.Module], name: str) -> torch.Tensor:
    """Parameter ``name`` of every member, stacked along a new member axis in front."""
    return torch.stack([dict(n.named_parameters())[name].detach() for n in networks])


class FunctionalEnsemble(PackedNetwork):
    """K networks of any architecture: stacked parameters and ``vmap`` of ``functional_call``.

    The network is kept once, as a template on the ``meta`` device (outside the module tree,
    so it owns no weights here); each member's forward is that network run on its slice of
    the stacked parameters. Networks with buffers are refused: the loop neither stacks nor
    saves them, so running statistics would be shared by the members or lost.
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.spec = shared_spec(networks)
        if any(True for _ in networks[0].buffers()):
            raise UserError(
                f"a {self.spec.architecture} network has buffers, which the torch.func ensemble "
                "cannot pack; register a packed implementation for it"
            )
        self._names = [name for name, _ in networks[0].named_parameters()]
        self.stacked = nn.ParameterList(
            nn.Parameter(stacked(networks, name)) for name in self._names
        )
        self._template = (copy.deepcopy(networks[0]).to("meta"),)  # a tuple: not a submodule

    def member_parameters(self) -> dict[str, torch.Tensor]:
        return dict(zip(self._names, self.stacked, strict=True))

    def train(self, mode: bool = True) -> FunctionalEnsemble:
        """Switch the template too: it is outside the module tree, and its mode is the one
        the members run in (dropout and the like)."""
        super().train(mode)
        self._template[0].train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(K, B, in_channels, nx, ny)`` to ``(K, B, out_channels, nx, ny)``."""
        (network,) = self._template

        def one(params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(network, params, (inputs,))

        return vmap(one)(self.member_parameters(), x)


class LoopedEnsemble(FunctionalEnsemble):
    """K networks on stacked parameters run one member after another, for networks that
    ``vmap`` cannot batch (neuraloperator's spectral layers write in place into a tensor made
    inside the forward). It saves no time over separate runs; it lets such networks train
    packed like every other architecture, with the same weights and checkpoints."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(K, B, in_channels, nx, ny)`` to ``(K, B, out_channels, nx, ny)``."""
        (network,) = self._template
        params = self.member_parameters()
        return torch.stack(
            [
                functional_call(network, {name: p[k] for name, p in params.items()}, (x[k],))
                for k in range(x.shape[0])
            ]
        )
