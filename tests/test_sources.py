"""Gaussian-bump sources: the definition, the separable/spectral builds, normalisation."""

from __future__ import annotations

import numpy as np

from pdetransfer.data import sources


def _uniforms(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, sources.N_SOURCE_DRAWS))


def _by_definition(amplitudes: np.ndarray, n: int) -> np.ndarray:
    """Loop over the 144 bumps of one source with periodic (minimum-image) distances."""
    x = np.arange(n) / n
    c = 0.5 + (2 / 32) * (np.arange(12) - 5.5)
    out = np.zeros((n, n))
    for i in range(12):  # y index
        for j in range(12):  # x index
            dy = (x - c[i] + 0.5) % 1.0 - 0.5
            dx = (x - c[j] + 0.5) % 1.0 - 0.5
            r2 = dy[:, None] ** 2 + dx[None, :] ** 2
            out += amplitudes[i, j] * np.exp(-r2 / (2 * (1 / 32) ** 2))
    return out


def test_centres_spacing_and_sigma():
    c = sources.centres()
    assert np.allclose(np.diff(c), 1 / 16) and np.isclose(c.mean(), 0.5)
    assert sources.SIGMA == 1 / 32 and sources.N_BUMPS == 144


def test_separable_build_matches_the_definition():
    amplitudes, _ = sources.amplitudes_from_uniforms(_uniforms(0, 2))
    built = sources.gaussian_sum(amplitudes, 32)
    for b in range(2):
        assert np.abs(built[b] - _by_definition(amplitudes[b], 32)).max() < 1e-13


def test_spectrum_is_the_rfft2_of_the_field():
    amplitudes, _ = sources.amplitudes_from_uniforms(_uniforms(1, 3))
    for n in (16, 48):
        field = sources.gaussian_sum(amplitudes, n)
        spectrum = sources.gaussian_sum_spectrum(amplitudes, n)
        assert np.abs(spectrum - np.fft.rfft2(field)).max() < 1e-12 * np.abs(spectrum).max()


def test_bumps_wrap_around_the_periodic_boundary():
    """The first centre is 5/32 from x = 0: points at equal distance on either side agree."""
    table = sources.profiles(64)  # grid 1/64, centre 0 at 10/64
    c0 = 10
    for d in (12, 20, 30):
        assert np.isclose(table[0, c0 + d], table[0, (c0 - d) % 64], rtol=1e-14, atol=0)


def test_max_normalised_and_mean_free():
    u = _uniforms(2, 4)
    plain = sources.make_sources(u, 128, mean_free=False)
    assert np.allclose(plain.field.max(axis=(1, 2)), 1.0, rtol=0, atol=1e-15)
    centred = sources.make_sources(u, 128, mean_free=True)
    assert np.abs(centred.field.mean(axis=(1, 2))).max() < 1e-15
    # Same function up to the constant, and the spectrum scaled by 1 / scale is f's (k != 0).
    shift = plain.field - centred.field
    assert np.allclose(shift, shift[:, :1, :1], atol=1e-14)
    f_hat = np.fft.rfft2(centred.field)
    scaled = centred.spectrum / centred.scale[:, None, None]
    assert np.abs((f_hat - scaled)[:, 1:, :]).max() < 1e-10


def test_same_draw_is_the_same_function_at_every_resolution():
    u = _uniforms(3, 3)
    fine = sources.make_sources(u, 128, mean_free=False).field
    for n in (32, 64):
        coarse = sources.make_sources(u, n, mean_free=False).field
        step = 128 // n
        assert np.abs(coarse - fine[:, ::step, ::step]).max() < 1e-14
        assert coarse.max() <= 1.0 + 1e-15
    fine_centred = sources.make_sources(u, 128, mean_free=True).field
    coarse_centred = sources.make_sources(u, 32, mean_free=True).field
    assert np.abs(coarse_centred - fine_centred[:, ::4, ::4]).max() < 1e-8  # aliasing only


def test_sparsity_amplitudes_and_at_least_one_on():
    u = _uniforms(4, 4000)
    amplitudes, sparsity = sources.amplitudes_from_uniforms(u)
    assert set(np.unique(sparsity)) == set(sources.SPARSITIES)
    on = amplitudes > 0
    assert amplitudes[on].min() >= 1e-3 and amplitudes.max() < 1.0
    for s in sources.SPARSITIES:
        fraction = on[sparsity == s].mean()
        assert abs(fraction - (1 - s)) < 0.01
    none = np.full((1, sources.N_SOURCE_DRAWS), 0.99)
    none[0, 0] = 0.99  # sparsity 0.8: a bump is on only if its switch < 0.2
    none[0, 1 + 17] = 0.5  # the switch closest to turning on
    amplitudes, _ = sources.amplitudes_from_uniforms(none)
    assert np.count_nonzero(amplitudes) == 1 and amplitudes.reshape(-1)[17] > 0
