"""K FNOs of one cell as one batched model: FNO layers with a member axis on every weight.

The learning rates x seeds of one cell (pretrain, size, downstream, N, mode) share the
architecture, the grid, the batch size and the normalisation, so their K training steps can
be one step of a model whose every weight carries a leading member axis: ``(K, B, C, n, n)``
inputs give ``(K, B, 1, n, n)`` outputs, member ``k`` seeing only its own weights and its own
samples. Wrapped in :class:`~pdetransfer.engine.models.normalization.NormalizedOperator` (which
treats every leading axis as batch), it maps ``(K, B, n, n)`` sources and ``(K, B, 6)``
coefficients to ``(K, B, n, n)`` predictions in physical units.

Why layers with a member axis rather than the generic ``torch.func`` ensemble
(:class:`~pdetransfer.engine.models.packed.FunctionalEnsemble`: stacked parameters +
``functional_call`` + ``vmap`` over the plain :class:`~pdetransfer.engine.models.fno.FNO`): both
were timed for a whole training step (forward, backward, the same optimiser) on one CPU
thread, K = 4, batch 8 and 32, sizes xs and s, grids 32 and 64
(``benchmarks/results/packing_model.json``, ``packed_vs_vmap``): the member-axis layers were
faster at every point, by 1.04x to 1.44x: here the member axis folds into the batch of the
very same ``bmm``/``baddbmm`` calls, whereas vmap puts its batching rules (and the reshapes
they need) around each of the FNO's batched-matmul and broadcast ops. They also keep
plain ``nn.Parameter`` weights, so autocast, DDP, ``state_dict`` and the optimiser need
nothing from ``torch.func``. Nothing is written twice: the truncated DFT and the spectral
weight blocks are :mod:`~pdetransfer.engine.models.fno`' own, and the layer graph is
:meth:`FNO.forward <pdetransfer.engine.models.fno.FNO.forward>` itself.

Where packing pays is measured by ``benchmarks/packing_model.py``; :func:`packing_pays` is the
rule derived from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pdetransfer.engine.models.fno import _DFT, FNO, spectral_blocks
from pdetransfer.engine.models.packed import PackedNetwork, shared_spec, stacked
from pdetransfer.engine.models.registry import ModelSpec


class EnsemblePointwise(nn.Module):
    """K 1x1 convolutions: member ``k`` maps its channels with ``weight[k]`` and ``bias[k]``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (K, out, in)
        self.bias = nn.Parameter(bias)  # (K, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch, cin, nx, ny = x.shape
        cout = self.weight.shape[1]
        # One baddbmm over (member, sample), as Pointwise does over samples: weights and
        # biases are repeated over the batch (copies of weights, small) rather than the
        # activations permuted to (K, C, B * n * n) (large).
        weight = self.weight.repeat_interleave(batch, 0)
        bias = self.bias.repeat_interleave(batch, 0)[:, :, None].expand(-1, -1, nx * ny)
        out = torch.baddbmm(bias, weight, x.reshape(members * batch, cin, nx * ny))
        return out.view(members, batch, cout, nx, ny)


class EnsembleSpectralConv(nn.Module):
    """K spectral convolutions sharing one truncated DFT of all members' samples.

    The transforms carry no weights, so they run once over the ``K * B`` fields; only the
    channel mixing is per member, as one ``bmm`` over (member, mode) pairs.
    """

    def __init__(self, weight: torch.Tensor, modes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (K, 2, modes, 2 * modes, in, out)
        self.modes = modes
        self._dft_cache: dict[tuple[int, int, int, torch.dtype, torch.device], _DFT] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch, cin, nx, ny = x.shape
        cout = self.weight.shape[-1]
        m = min(self.modes, nx // 2, ny // 2)
        key = (nx, ny, m, x.dtype, x.device)
        if key not in self._dft_cache:
            self._dft_cache[key] = _DFT.build(nx, ny, m, x.dtype, x.device)
        dft = self._dft_cache[key]
        spec = dft.analyse(x.reshape(members * batch, cin, nx, ny))  # (M, K * B, 2 cin)
        kept = spec.shape[0]
        spec = spec.view(kept, members, batch, 2 * cin).transpose(0, 1)
        blocks = spectral_blocks(self.weight, m).reshape(members * kept, 2 * cin, 2 * cout)
        out = torch.bmm(spec.reshape(members * kept, batch, 2 * cin), blocks)
        out = out.view(members, kept, batch, 2 * cout).transpose(0, 1)
        out = dft.synthesise(out.reshape(kept, members * batch, 2 * cout), cout)
        return out.view(members, batch, cout, nx, ny)


class EnsembleFNO(PackedNetwork):
    """K FNOs of one specification with stacked weights, built from K ordinary FNOs: the
    FNO's registered packed implementation.

    Parameter names and order are those of :class:`~pdetransfer.engine.models.fno.FNO`
    (``lift.weight``, ``spectral.0.weight``, ..., ``head.2.bias``), each with the member axis
    in front, so member ``k``'s ``state_dict`` is a slice and an optimiser over
    ``parameters()`` sees them in the order a separate run's optimiser does.
    """

    def __init__(self, networks: Sequence[FNO]) -> None:
        super().__init__()
        spec = shared_spec(networks)
        self.spec = spec

        def weights(name: str) -> torch.Tensor:
            return stacked(networks, name)

        self.lift = EnsemblePointwise(weights("lift.weight"), weights("lift.bias"))
        self.spectral = nn.ModuleList(
            EnsembleSpectralConv(weights(f"spectral.{i}.weight"), spec.modes)
            for i in range(spec.layers)
        )
        self.skips = nn.ModuleList(
            EnsemblePointwise(weights(f"skips.{i}.weight"), weights(f"skips.{i}.bias"))
            for i in range(spec.layers)
        )
        self.head = nn.Sequential(
            EnsemblePointwise(weights("head.0.weight"), weights("head.0.bias")),
            nn.GELU(),
            EnsemblePointwise(weights("head.2.weight"), weights("head.2.bias")),
        )
        names = [name for name, _ in networks[0].named_parameters()]
        if [name for name, _ in self.named_parameters()] != names:
            raise RuntimeError("EnsembleFNO's parameters no longer mirror FNO's")

    def member_parameters(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters())

    @classmethod
    def pays(cls, spec: ModelSpec, members: int, batch: int, grid: int) -> bool:
        """:func:`packing_pays`, measured for these layers."""
        return packing_pays(members, batch, grid, spec.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(K, B, in_channels, nx, ny)`` to ``(K, B, out_channels, nx, ny)``."""
        # The FNO's own layer graph; every layer it calls here carries the member axis.
        return FNO.forward(self, x)  # type: ignore[arg-type]


def packing_pays(members: int, batch: int, grid: int, width: int, retained: bool = True) -> bool:
    """Whether one training step of ``members`` packed runs costs no more CPU time than their
    separate steps, by the measurements of ``benchmarks/results/packing_model.json``.

    Measured on one CPU thread (K = 4, 10; batch 8, 32; grids 32, 64; widths 16 and 32, the
    xs and s presets), packing paid for the xs width up to 1.24x and stayed within the
    measurement noise of parity at every xs point once freed memory is retained
    (:func:`~pdetransfer.engine.runtime.allocator.retain_freed_memory`, ``retained=True``); without
    that, page faults on the ensemble's large activations made it up to 2.6x slower beyond
    ~1.3M activation floats. At width 32 it was 0.69x to 1.02x, so it is not packed. The
    per-step comparison leaves out what packing saves besides: K - 1 process start-ups
    (``startup_cpu_s``, ~1.4 s of CPU each), data loads and validation passes.

    The rule: pack when ``members * batch * width * grid**2`` (one layer's activations) is
    at most the limit measured for the nearest measured width at or above ``width`` (the
    widest measured one's beyond it); sizes never measured are not packed.
    """
    limits = PACKING_LIMITS["retain" if retained else "default"]
    widths = sorted(limits)
    nearest = next((w for w in widths if w >= width), widths[-1])
    return members * batch * width * grid * grid <= limits[nearest]


#: ``derived_limits_by_width`` of ``benchmarks/results/packing_model.json`` per allocator
#: mode: model width -> largest activation count packed no slower (0: never packed).
PACKING_LIMITS: dict[str, dict[int, int]] = {
    "default": {16: 1_310_720, 32: 0},
    "retain": {16: 20_971_520, 32: 0},
}
