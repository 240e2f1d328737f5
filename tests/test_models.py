"""The FNO: parameter counts against the closed form, the spectral layer against rfft2, grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdetransfer.engine.models.build import count_parameters
from pdetransfer.engine.models.fno import FNO, SpectralConv2d
from pdetransfer.engine.models.normalization import (
    CHANNELS,
    Normalization,
    NormalizedOperator,
    source_norm,
)
from pdetransfer.engine.models.registry import PRESETS, parameter_count, parse_model
from pdetransfer.errors import UserError

# The paper's table (4 input channels): ~67K, ~1.06M, ~16.8M, ~268M.
PAPER_SIZES = {"xs": 67e3, "s": 1.06e6, "m": 16.8e6, "l": 268e6}


@pytest.mark.parametrize("name", ["xs", "s", "m"])
def test_preset_parameter_count_matches_closed_form(name: str) -> None:
    spec = parse_model(name, len(CHANNELS))
    assert count_parameters(FNO(spec)) == parameter_count(spec.modes, spec.width, 7)


def test_large_preset_counted_without_allocating() -> None:
    # 268M parameters are 1 GB of float32: build on the meta device, which stores no data.
    spec = parse_model("l", len(CHANNELS))
    with torch.device("meta"):
        model = FNO(spec)
    assert count_parameters(model) == spec.parameters == parameter_count(32, 128, 7)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_match_the_paper_sizes(name: str) -> None:
    modes, width = PRESETS[name]
    assert parameter_count(modes, width, in_channels=4) == pytest.approx(
        PAPER_SIZES[name], rel=0.01
    )


def test_parse_model_accepts_modes_width_and_rejects_junk() -> None:
    spec = parse_model(" 6, 24 ", 7)
    assert (spec.name, spec.modes, spec.width) == ("6,24", 6, 24)
    for bad in ["huge", "6", "6,24,2", "0,8", "a,b"]:
        with pytest.raises(UserError, match="--model"):
            parse_model(bad, 7)


def _reference_spectral(layer: SpectralConv2d, x: torch.Tensor) -> torch.Tensor:
    """The textbook FNO layer: rfft2, multiply the two kept corners, irfft2."""
    n = x.shape[-1]
    m = min(layer.modes, n // 2)
    w = torch.complex(layer.weight[0], layer.weight[1]).to(torch.complex128)  # (ky, kx, i, o)
    rows = torch.cat([torch.arange(m), torch.arange(2 * layer.modes - m, 2 * layer.modes)])
    w = w[:m][:, rows]
    spec = torch.fft.rfft2(x)
    out = torch.zeros(x.shape[0], layer.out_channels, n, n // 2 + 1, dtype=spec.dtype)
    out[:, :, :m, :m] = torch.einsum("bixy,yxio->boxy", spec[:, :, :m, :m], w[:, :m])
    out[:, :, -m:, :m] = torch.einsum("bixy,yxio->boxy", spec[:, :, -m:, :m], w[:, m:])
    return torch.fft.irfft2(out, s=(n, n))


@pytest.mark.parametrize(("n", "modes"), [(16, 4), (16, 8), (32, 5), (8, 6)])
def test_spectral_conv_equals_rfft2_reference(n: int, modes: int) -> None:
    torch.manual_seed(0)
    layer = SpectralConv2d(3, 5, modes).double()
    x = torch.randn(2, 3, n, n, dtype=torch.float64)
    expected = _reference_spectral(layer, x)
    assert torch.allclose(layer(x), expected, atol=1e-12, rtol=1e-10)


def test_spectral_conv_keeps_only_low_modes() -> None:
    # A pure high-frequency input (beyond the kept modes) must map to zero.
    layer = SpectralConv2d(1, 1, 4).double()
    grid = torch.arange(32, dtype=torch.float64) / 32
    x = torch.cos(2 * torch.pi * 9 * grid)[None, None, :, None].expand(1, 1, 32, 32)
    assert layer(x).abs().max() < 1e-12


@pytest.mark.parametrize("n", [32, 64, 128])
def test_model_runs_on_study_grids(n: int) -> None:
    model = FNO(parse_model("xs", 7))
    out = model(torch.randn(1, 7, n, n))
    assert out.shape == (1, 1, n, n)
    assert torch.isfinite(out).all()


def test_small_preset_trains_at_grid_128() -> None:
    model = FNO(parse_model("s", 7))
    model(torch.randn(1, 7, 128, 128)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _operator() -> NormalizedOperator:
    torch.manual_seed(1)
    norm = Normalization(0.25, (0.01, 0.02, 0.005, 0.5, 0.5, 4.0))
    return NormalizedOperator(FNO(parse_model("2,4", 7)), norm).double()


def test_operator_builds_canonical_normalised_channels() -> None:
    op = _operator()
    f = torch.randn(3, 8, 8, dtype=torch.float64)
    c = torch.tensor([[0.01, 0.02, 0.005, 0.5, -0.5, 4.0]] * 3, dtype=torch.float64)
    x, scale = op.inputs(f, c)
    assert x.shape == (3, 7, 8, 8)
    assert torch.allclose(scale, source_norm(f) / 0.25)
    assert torch.allclose(source_norm(x[:, 0]), torch.full((3,), 0.25, dtype=torch.float64))
    assert torch.allclose(x[:, 1:, 3, 5], torch.tensor([1.0, 1, 1, 1, -1, 1]).double())


def test_operator_is_linear_in_the_source_scale() -> None:
    # Scaling f scales the prediction exactly: the source normalisation is undone on output.
    op = _operator()
    f = torch.randn(2, 8, 8, dtype=torch.float64)
    c = torch.rand(2, 6, dtype=torch.float64)
    assert torch.allclose(op(3.0 * f, c), 3.0 * op(f, c), atol=1e-12)


def test_normalization_rejects_bad_statistics() -> None:
    with pytest.raises(UserError, match="coefficient scales"):
        Normalization(1.0, (1.0, 1.0))
    with pytest.raises(UserError, match="finite and positive"):
        Normalization(0.0, (1.0,) * 6)
    stats = {"source_norm_median": 1.0, "coefficient_abs_median": [1.0] * 6, "channels": ["f"]}
    with pytest.raises(UserError, match="canonical"):
        Normalization.from_stats(stats, "stats.json")


def test_source_norm_is_the_stats_definition() -> None:
    from pdetransfer.data import stats

    f = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float32)
    assert np.allclose(source_norm(torch.from_numpy(f)).numpy(), stats.source_norm(f), rtol=1e-6)
