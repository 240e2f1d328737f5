"""The Fourier Neural Operator of the study: the ``"fno"`` entry of the model registry.

The architecture of docs/science.md (after Li et al. 2021, as used by Subramanian et al.):
a pointwise lift from the input channels to width ``w``, four Fourier layers (spectral
convolution over the lowest ``m`` modes plus a pointwise linear skip, GELU after all but the
last), and a pointwise head ``w -> 2w -> GELU -> 1``. Only the network lives here: its size
presets and closed-form parameter count are in :mod:`pdetransfer.engine.models.registry`, the
canonical input channels and their normalisation in
:mod:`pdetransfer.engine.models.normalization`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pdetransfer.engine.models.registry import ModelSpec


class SpectralConv2d(nn.Module):
    """Fourier-space linear map on the lowest ``modes`` modes of a periodic 2-D field.

    The layer computes ``irfft2(W . rfft2(x))`` where ``W`` mixes channels independently for
    each kept mode ``(kx, ky)``, ``kx`` in ``[-m, m)`` and ``ky`` in ``[0, m)``; every other
    mode is zeroed. Because only ``2m x m`` of the ``n x (n/2 + 1)`` modes survive, the forward
    and inverse transforms are evaluated as dense real matrix products restricted to those
    modes (a truncated DFT) instead of full FFTs: it does no work on discarded modes and runs
    on BLAS, which measured 1.4-2x faster on CPU than ``rfft2``/``irfft2`` for the study's
    sizes (``benchmarks/train_step.py``), with identical results up to float rounding. The
    channel mixing is likewise one batched real matmul with the complex weights written as
    ``[[Re, Im], [-Im, Re]]`` blocks, faster on CPU than complex einsum.

    Grids too coarse for ``modes`` (``n < 2m``) use the lowest ``n // 2`` modes of the same
    weights, so a checkpoint can still be evaluated on them.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        # [real/imag, ky in [0, m), kx in [0, m) then [-m, 0), in, out]; the reference FNO's
        # uniform initialisation of complex weights.
        self.weight = nn.Parameter(
            scale * torch.rand(2, modes, 2 * modes, in_channels, out_channels)
        )
        self._dft_cache: dict[tuple[int, int, int, torch.dtype, torch.device], _DFT] = {}

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nx, ny = x.shape[-2:]
        m = min(self.modes, nx // 2, ny // 2)
        dft = self._dft(nx, ny, m, x.dtype, x.device)
        spec = dft.analyse(x)  # (modes, B, [Re C | Im C])
        out = torch.bmm(spec, spectral_blocks(self.weight, m))  # (modes, B, [Re C' | Im C'])
        return dft.synthesise(out, self.out_channels)

    def _dft(self, nx: int, ny: int, m: int, dtype: torch.dtype, device: torch.device) -> _DFT:
        key = (nx, ny, m, dtype, device)
        if key not in self._dft_cache:
            self._dft_cache[key] = _DFT.build(nx, ny, m, dtype, device)
        return self._dft_cache[key]


@dataclass(frozen=True)
class _DFT:
    """Real matrices of the truncated 2-D DFT and its inverse for one grid and mode count."""

    fwd_y: torch.Tensor  # (ny, 2m): y -> [Re | Im] over ky in [0, m)
    fwd_x: torch.Tensor  # (2nx, 4m): [Re | Im] over x -> [Re | Im] over kx in [-m, m)
    inv_x: torch.Tensor  # (4m, 2nx): the inverse of fwd_x's map, unnormalised
    inv_y: torch.Tensor  # (2m, ny): [Re | Im] over ky -> y, with irfft's 1/(nx ny) and 2x

    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """Kept modes of ``x`` ``(B, C, nx, ny)`` as ``(2m * m, B, [Re C | Im C])``."""
        batch, cin, nx, _ = x.shape
        m = self.fwd_y.shape[1] // 2
        # Forward transform, y first: [Re | Im] over ky, then x -> kx on each (ky, Re/Im).
        a = x @ self.fwd_y  # (B, C, nx, 2m)
        a = a.view(batch, cin, nx, 2, m).permute(0, 1, 4, 3, 2).reshape(batch, cin, m, 2 * nx)
        spec = a @ self.fwd_x  # (B, C, ky, [Re kx | Im kx])
        spec = spec.view(batch, cin, m, 2, 2 * m).permute(2, 4, 0, 3, 1)
        return spec.reshape(2 * m * m, batch, 2 * cin)

    def synthesise(self, out: torch.Tensor, cout: int) -> torch.Tensor:
        """The field ``(B, C', nx, ny)`` of kept modes ``(2m * m, B, [Re C' | Im C'])``."""
        batch = out.shape[1]
        m = self.fwd_y.shape[1] // 2
        nx = self.inv_x.shape[1] // 2
        out = out.view(m, 2 * m, batch, 2, cout).permute(2, 4, 0, 3, 1)
        out = out.reshape(batch, cout, m, 4 * m)  # (B, C', ky, [Re kx | Im kx])
        # Inverse transform: kx -> x, then ky -> y taking the real part (irfft's convention).
        z = out @ self.inv_x  # (B, C', ky, [Re x | Im x])
        z = z.view(batch, cout, m, 2, nx).permute(0, 1, 4, 3, 2).reshape(batch, cout, nx, 2 * m)
        return z @ self.inv_y

    @staticmethod
    def build(nx: int, ny: int, m: int, dtype: torch.dtype, device: torch.device) -> _DFT:
        f64 = torch.float64
        ky = torch.arange(m, dtype=f64)
        kx = torch.cat([torch.arange(m), torch.arange(-m, 0)]).to(f64)
        ang_y = 2 * math.pi * torch.outer(torch.arange(ny, dtype=f64), ky) / ny  # (ny, m)
        ang_x = 2 * math.pi * torch.outer(torch.arange(nx, dtype=f64), kx) / nx  # (nx, 2m)
        cy, sy = torch.cos(ang_y), torch.sin(ang_y)
        cx, sx = torch.cos(ang_x), torch.sin(ang_x)
        # A real signal's half spectrum stands for its mirror image too: irfft counts each
        # ky > 0 twice and only the real part of ky = 0 (ky = n/2 is never kept, m <= n/2).
        twice = torch.full((m, 1), 2.0, dtype=f64)
        twice[0] = 1.0
        mats = (
            torch.cat([cy, -sy], 1),
            torch.cat([torch.cat([cx, -sx], 1), torch.cat([sx, cx], 1)], 0),
            torch.cat([torch.cat([cx.T, sx.T], 1), torch.cat([-sx.T, cx.T], 1)], 0),
            torch.cat([twice * cy.T, -twice * sy.T], 0) / (nx * ny),
        )
        return _DFT(*(t.to(device=device, dtype=dtype).contiguous() for t in mats))


def spectral_blocks(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Real ``[[Re, Im], [-Im, Re]]`` channel-mixing blocks of spectral weights, per kept mode.

    ``weight`` is ``(..., 2, modes, 2 * modes, in, out)`` (any leading axes, e.g. ensemble
    members); the result is ``(..., 2m * m, 2 in, 2 out)`` for the lowest ``m <= modes`` modes.
    """
    modes = weight.shape[-4]
    if m < modes:
        kx = torch.cat([torch.arange(m), torch.arange(2 * modes - m, 2 * modes)])
        weight = weight[..., :m, kx.to(weight.device), :, :]
    re = weight[..., 0, :, :, :, :].flatten(-4, -3)  # (..., modes, in, out)
    im = weight[..., 1, :, :, :, :].flatten(-4, -3)
    return torch.cat([torch.cat([re, im], -1), torch.cat([-im, re], -1)], -2)


class Pointwise(nn.Module):
    """A 1x1 convolution (the same linear map of channels at every grid point).

    Written as one batched matmul over the flattened grid rather than ``nn.Conv2d``: on CPU
    the oneDNN 1x1 convolution and its backward measured 10-25% slower per training step of the
    whole FNO, and the pointwise layers are a large share of it. Initialised like ``Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, nx, ny = x.shape
        out = torch.baddbmm(
            self.bias[None, :, None].expand(batch, -1, nx * ny),
            self.weight.expand(batch, -1, -1),
            x.flatten(2),
        )
        return out.view(batch, self.weight.shape[0], nx, ny)


class FNO(nn.Module):
    """Fourier Neural Operator: lift, Fourier layers with 1x1 skips, two-layer pointwise head."""

    def __init__(self, spec: ModelSpec, out_channels: int = 1) -> None:
        super().__init__()
        self.spec = spec
        width = spec.width
        self.lift = Pointwise(spec.in_channels, width)
        self.spectral = nn.ModuleList(
            SpectralConv2d(width, width, spec.modes) for _ in range(spec.layers)
        )
        self.skips = nn.ModuleList(Pointwise(width, width) for _ in range(spec.layers))
        self.head = nn.Sequential(
            Pointwise(width, 2 * width), nn.GELU(), Pointwise(2 * width, out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, nx, ny)`` inputs to ``(B, out_channels, nx, ny)``."""
        x = self.lift(x)
        last = len(self.spectral) - 1
        for i, (spectral, skip) in enumerate(zip(self.spectral, self.skips, strict=True)):
            x = spectral(x) + skip(x)
            if i < last:
                x = F.gelu(x)
        return self.head(x)
