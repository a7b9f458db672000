"""Detector response of the simulator: charge cloud, sharing, counting statistics, readout."""

import math

import numpy as np
import pytest
import xraylib
from scipy import integrate
from scipy.special import erf

import hexspec as hx
from hexspec.detector import DetectorSpec
from hexspec.sim import HexitecSimulator, cloud_fwhm_um, pixel_fractions
from hexspec.sim.fastrandom import new_state
from hexspec.sim.response import _cloud, _isotropic_direction, deposit_reference

PITCH_UM = 250.0


class LineSource:
    """Monoenergetic photons: lets a test predict every reading."""

    def __init__(self, energy_kev):
        self.energy_kev = energy_kev

    def sample_pixels(self, pixel_index, rng):
        return np.full(np.shape(pixel_index)[0], float(self.energy_kev))


def quiet_detector(**kw):
    """Ideal readout: no noise, no spreads, no defects, no escape, no spill; overridable."""
    opts = dict(noise_fwhm_kev=0.0, noise_spread=0.0, gradient_spread=0.0, intercept_kev=0.0,
                intercept_spread_kev=0.0, dead_pixels=0, hot_pixels=0, escape=False, next_frame_probability=0.0,
                cloud_fwhm_um=0.0)
    opts.update(kw)
    return opts


def test_cloud_fwhm_matches_hand_calculation_for_reference_conditions():
    # r0 = 0.1477 * 18 + 14.66 = 17.3186 um; kT/e = 8.617333e-5 * 291.15 = 0.0250893 V;
    # 1.15 * 2000 um * sqrt(2 * 0.0250893 / 1200) = 14.8730 um  ->  32.1916 um
    assert cloud_fwhm_um(2.0, 1200.0, 18.0) == pytest.approx(32.1916, abs=2e-4)


def _gaussian_pixel_integral(x, y, sigma, r, c):
    """Charge of a unit Gaussian at (x, y) inside pixel (r, c), by 2-D quadrature (pixel units)."""
    lo_x, hi_x = max(c, x - 9 * sigma), min(c + 1, x + 9 * sigma)
    lo_y, hi_y = max(r, y - 9 * sigma), min(r + 1, y + 9 * sigma)
    if lo_x >= hi_x or lo_y >= hi_y:
        return 0.0
    norm = 1.0 / (2 * math.pi * sigma * sigma)
    val, _ = integrate.dblquad(lambda yy, xx: norm * math.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma * sigma)),
                               lo_x, hi_x, lo_y, hi_y, epsabs=1e-11, epsrel=1e-9)
    return val


@pytest.mark.parametrize("fwhm_um", [8.0, 32.19, 60.0])
@pytest.mark.parametrize("x, y", [(1.5, 1.5), (1.03, 1.5), (1.97, 1.04), (1.01, 1.99)])
def test_charge_split_kernel_matches_quadrature_of_the_gaussian_cloud(fwhm_um, x, y):
    sigma = fwhm_um / (2 * math.sqrt(2 * math.log(2))) / PITCH_UM
    pix = np.zeros(18, np.int64)
    kev = np.zeros(18)
    n = _cloud(x, y, 1.0, 1.0 / (sigma * math.sqrt(2.0)), 3, 3, 0.0, pix, kev, 0)
    got = np.zeros(9)
    np.add.at(got, pix[:n], kev[:n])
    expected = np.array([_gaussian_pixel_integral(x, y, sigma, r, c) for r in range(3) for c in range(3)])
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_k_photon_directions_are_uniform_on_the_sphere():
    # Isotropic emission: every component uniform on [-1, 1] (Archimedes), the azimuth uniform, unit length.
    from scipy import stats
    state = new_state(np.random.default_rng(5))
    d = np.array([_isotropic_direction(state) for _ in range(20000)])
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    for k in range(3):
        assert stats.kstest(d[:, k], stats.uniform(-1.0, 2.0).cdf).pvalue > 1e-3
    phi = np.arctan2(d[:, 1], d[:, 0])
    assert stats.kstest(phi, stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3
    # octants equally likely (independence of the signs)
    octant = (d > 0).astype(int) @ np.array([1, 2, 4])
    assert stats.chisquare(np.bincount(octant, minlength=8)).pvalue > 1e-3


def test_numpy_reference_split_matches_quadrature():
    sigma = 0.06
    got = pixel_fractions(1.02, 0.97, sigma, (3, 3))
    expected = np.array([[_gaussian_pixel_integral(1.02, 0.97, sigma, r, c) for c in range(3)] for r in range(3)])
    np.testing.assert_allclose(got, expected, atol=1e-8)


def _shared_fraction_by_integration(energy_kev, sigma_px, share_min_kev, m=1200):
    """Fraction of uniformly placed photons whose charge puts >= share_min_kev in two or more pixels.

    Midpoint-rule integration over positions in a pixel, with erf fractions from scipy
    (independent of the simulator's tabulated erfc).
    """
    t = (np.arange(m) + 0.5) / m
    edges = np.array([-1.0, 0.0, 1.0, 2.0])
    f = 0.5 * np.diff(erf((edges[None, :] - t[:, None]) / (sigma_px * math.sqrt(2))), axis=1)   # (m, 3)
    big = energy_kev * f[:, None, :, None] * f[None, :, None, :] >= share_min_kev           # (x, y, col, row)
    return float(np.mean(big.sum(axis=(2, 3)) > 1))


@pytest.mark.parametrize("fwhm_um", [15.0, 32.19, 60.0])
def test_shared_fraction_matches_integration_over_photon_positions(fwhm_um):
    energy_kev, share_min_kev = 60.0, 5.0
    flux = np.zeros((20, 20))
    flux[1:-1, 1:-1] = 1.0   # no border pixels: every photon has all its neighbours
    sim = HexitecSimulator(LineSource(energy_kev), detector=DetectorSpec(20, 20), photons_per_frame=20.0, seed=4,
                           flux=flux, share_min_kev=share_min_kev, **quiet_detector(cloud_fwhm_um=fwhm_um))
    _, truth = sim.frames(3000)
    n = len(truth.photons)
    sigma_px = fwhm_um / (2 * math.sqrt(2 * math.log(2))) / PITCH_UM
    expected = _shared_fraction_by_integration(energy_kev, sigma_px, share_min_kev)
    assert truth.shared_fraction == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n))


def test_absorbed_photon_counts_per_frame_are_poisson_with_the_absorbed_mean():
    energy_kev, per_frame, n_frames = 60.0, 3.0, 20000
    sim = HexitecSimulator(LineSource(energy_kev), photons_per_frame=per_frame, seed=11, **quiet_detector())
    _, truth = sim.frames(n_frames)
    counts = np.bincount(truth.photons.frame, minlength=n_frames)
    # Absorption in 2 mm of Cd0.9Zn0.1Te (5.78 g/cm3) from xraylib: a thinned Poisson is Poisson.
    mu_per_mm = xraylib.CS_Total_CP("Cd0.9Zn0.1Te", energy_kev) * 5.78 / 10.0
    mean = per_frame * (1.0 - math.exp(-mu_per_mm * 2.0))
    assert counts.mean() == pytest.approx(mean, abs=4 * math.sqrt(mean / n_frames))
    # variance / mean of a Poisson is 1 with standard error about sqrt(2 / n)
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=4 * math.sqrt(2.0 / n_frames))


def test_same_seed_gives_bit_identical_frames_and_truth():
    a = HexitecSimulator(hx.sim.ComptonSource(), seed=123)
    b = HexitecSimulator(hx.sim.ComptonSource(), seed=123)
    for _ in range(2):
        (ba, ta), (bb, tb) = a.frames(300), b.frames(300)
        assert np.array_equal(ba.frames, bb.frames)
        assert np.array_equal(ta.photons.energy_kev, tb.photons.energy_kev)
        assert np.array_equal(ta.photons.x, tb.photons.x)
    assert np.array_equal(a.gradients, b.gradients)


def test_frames_do_not_depend_on_how_the_run_is_split_into_calls():
    whole, truth = HexitecSimulator(hx.sim.ComptonSource(), seed=77).frames(2500)
    sim = HexitecSimulator(hx.sim.ComptonSource(), seed=77)
    parts = [sim.frames(k) for k in (1, 300, 1023, 1, 700, 475)]
    assert np.array_equal(np.concatenate([b.frames for b, _ in parts]), whole.frames)
    for name, whole_field in truth.photons.as_dict().items():   # every field, as each call copies its pieces
        assert np.array_equal(np.concatenate([getattr(t.photons, name) for _, t in parts]), whole_field), name
    assert sum(t.n_incident for _, t in parts) == truth.n_incident


def test_frames_do_not_depend_on_the_number_of_threads():
    # 4,100 frames: four whole blocks of 1,024 and part of a fifth, spills crossing every block edge
    runs = []
    for threads in (1, 2, 3):
        sim = HexitecSimulator(hx.sim.ComptonSource(), photons_per_frame=20.0, seed=5, next_frame_probability=0.3,
                               threads=threads)
        runs.append([sim.frames(k) for k in (2100, 2000)])
    for other in runs[1:]:
        for (ba, ta), (bb, tb) in zip(runs[0], other):
            assert np.array_equal(ba.frames, bb.frames)
            for name, field in ta.photons.as_dict().items():
                assert np.array_equal(field, getattr(tb.photons, name)), name
            assert (ta.n_incident, ta.noise_only_hits, ta.hot_hits) == (tb.n_incident, tb.noise_only_hits, tb.hot_hits)
    first, _ = runs[0][0]
    # frame 1,024 starts a block: it holds its photons' charge like any other frame
    assert np.count_nonzero(first.frames[1024]) > 10


def test_different_seeds_give_different_frames():
    a, _ = HexitecSimulator(hx.sim.Am241Source(), seed=1).frames(50)
    b, _ = HexitecSimulator(hx.sim.Am241Source(), seed=2).frames(50)
    assert not np.array_equal(a.frames, b.frames)


def test_successive_calls_continue_the_frame_numbering():
    sim = HexitecSimulator(hx.sim.Am241Source(), seed=0, first_frame=100)
    b1, t1 = sim.frames(10)
    b2, t2 = sim.frames(5)
    assert b1.frame_numbers.tolist() == list(range(100, 110))
    assert b2.frame_numbers.tolist() == list(range(110, 115))
    assert t2.photons.frame.min() >= 110 and t2.photons.frame.max() <= 114


def test_pile_up_adds_the_energies_of_photons_in_one_pixel():
    energy_kev, gradient = 20.0, 0.027
    flux = np.zeros((3, 3))
    flux[1, 1] = 1.0
    sim = HexitecSimulator(LineSource(energy_kev), detector=DetectorSpec(3, 3), photons_per_frame=1.5, seed=5,
                           flux=flux, gradient_kev_per_adu=gradient, **quiet_detector())
    batch, truth = sim.frames(2000)
    k = np.bincount(truth.photons.frame, minlength=2000)
    assert k.max() >= 3   # the test must see pile-up
    expected_adu = np.floor(k * energy_kev / gradient + 0.5)
    np.testing.assert_array_equal(batch.frames[:, 1, 1], expected_adu)


def test_values_clip_at_the_14_bit_adc_limit():
    sim = HexitecSimulator(LineSource(600.0), detector=DetectorSpec(4, 4), photons_per_frame=2.0, seed=1,
                           **quiet_detector())
    batch, truth = sim.frames(200)
    assert batch.frames.max() == 16383
    assert truth.clipped > 0


def test_dead_pixels_read_zero_and_hot_pixels_fire():
    sim = HexitecSimulator(hx.sim.Am241Source(), detector=DetectorSpec(10, 10), photons_per_frame=1.0, seed=2,
                           dead_pixels=2, hot_pixels=1, hot_probability=0.5)
    batch, truth = sim.frames(2000)
    hits_at_dead = np.isin(truth.photons.row.astype(int) * 10 + truth.photons.col, np.flatnonzero(truth.dead)).sum()
    assert hits_at_dead > 20   # photons did land there
    assert truth.dead.sum() == 2 and truth.hot.sum() == 1
    assert np.all(batch.frames[:, truth.dead] == 0)
    fired = np.mean(batch.frames[:, truth.hot] > 0)
    # about 1 % of frames also hold a photon at that pixel
    assert fired == pytest.approx(0.5, abs=0.05)


def test_next_frame_spill_splits_a_photon_between_two_frames():
    energy_kev, gradient = 40.0, 0.025
    flux = np.zeros((3, 3))
    flux[1, 1] = 1.0
    sim = HexitecSimulator(LineSource(energy_kev), detector=DetectorSpec(3, 3), photons_per_frame=0.01, seed=8,
                           flux=flux, gradient_kev_per_adu=gradient,
                           **quiet_detector(next_frame_probability=1.0))
    batch, truth = sim.frames(20000)
    frames = truth.photons.frame
    isolated = frames[(np.diff(frames, prepend=-10) > 2) & (np.diff(frames, append=10 ** 9) > 2)]
    isolated = isolated[isolated < 19999]
    assert len(isolated) > 50
    assert truth.photons.spilled.all()
    both = batch.frames[isolated, 1, 1].astype(int) + batch.frames[isolated + 1, 1, 1].astype(int)
    # two readings, each rounded to the nearest ADU
    assert np.all(np.abs(both - energy_kev / gradient) <= 1)
    assert np.mean(batch.frames[isolated + 1, 1, 1] > 0) > 0.9


def test_spilled_charge_crosses_call_boundaries():
    energy_kev, gradient = 40.0, 0.025
    flux = np.zeros((3, 3))
    flux[1, 1] = 1.0
    sim = HexitecSimulator(LineSource(energy_kev), detector=DetectorSpec(3, 3), photons_per_frame=0.3, seed=9,
                           flux=flux, gradient_kev_per_adu=gradient,
                           **quiet_detector(next_frame_probability=1.0))
    readings, photons = [], 0
    for _ in range(400):   # one frame per call: every spill must cross a call boundary
        batch, truth = sim.frames(1)
        readings.append(int(batch.frames[0, 1, 1]))
        photons += len(truth.photons)
    last, last_truth = sim.frames(1)   # receives the spill of call 400
    readings.append(int(last.frames[0, 1, 1]))
    total_kev = np.sum(readings) * gradient
    # rounding: half an ADU per reading; the last call's own photons are partly read in it
    tolerance = len(readings) * 0.5 * gradient + len(last_truth.photons) * energy_kev
    assert abs(total_kev - photons * energy_kev) <= tolerance


def test_kernel_readout_matches_the_numpy_reference_within_one_adu():
    shape = (12, 12)
    sim = HexitecSimulator(LineSource(30.0), detector=DetectorSpec(*shape), photons_per_frame=6.0, seed=13,
                           gradient_spread=0.05, intercept_kev=1.0, intercept_spread_kev=0.3,
                           **{k: v for k, v in quiet_detector(cloud_fwhm_um=32.19).items()
                              if k not in ("gradient_spread", "intercept_kev", "intercept_spread_kev")})
    batch, truth = sim.frames(500)
    p = truth.photons
    frame = p.frame - batch.frame_numbers[0]
    sigma_px = 32.19 / (2 * math.sqrt(2 * math.log(2))) / PITCH_UM
    ref = deposit_reference(frame, p.col + p.x, p.row + p.y, p.energy_kev, len(batch), shape, sigma_px,
                            truth.gradients, truth.intercepts)
    diff = np.abs(batch.frames.astype(int) - ref.astype(int))
    assert diff.max() <= 1
    assert np.count_nonzero(ref) > 1000


def test_noise_only_readings_follow_the_gaussian_tail_above_the_intercept():
    from scipy.stats import norm
    intercept_kev, gradient, fwhm = 0.6, 0.025, 0.8
    shape = (20, 20)
    sim = HexitecSimulator(LineSource(60.0), detector=DetectorSpec(*shape), photons_per_frame=0.0, seed=6,
                           **quiet_detector(noise_fwhm_kev=fwhm, intercept_kev=intercept_kev,
                                            gradient_kev_per_adu=gradient))
    batch, truth = sim.frames(5000)
    # a pixel without charge reads > 0 ADU when its noise exceeds intercept + half an ADU step
    p = norm.sf((intercept_kev + 0.5 * gradient) / (fwhm / (2 * math.sqrt(2 * math.log(2)))))
    expected = p * shape[0] * shape[1] * len(batch)
    got = np.count_nonzero(batch.frames)
    assert got == truth.noise_only_hits
    assert got == pytest.approx(expected, abs=5 * math.sqrt(expected))
    # the values are the tail: E = ADU * gradient + intercept sits above the intercept
    values = batch.frames[batch.frames > 0] * gradient + intercept_kev
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    tail_mean = sigma * norm.pdf((intercept_kev + 0.5 * gradient) / sigma) / p   # mean of N(0, s) above the cut
    assert values.mean() == pytest.approx(tail_mean, abs=0.02)


def test_flux_map_places_photons_only_where_it_is_positive():
    flux = np.zeros((80, 80))
    flux[:, :40] = 1.0
    sim = HexitecSimulator(hx.sim.ComptonSource(flux=flux), seed=3, escape=False, cloud_fwhm_um=0.0)
    batch, truth = sim.frames(300)
    assert len(truth.photons) > 1000
    assert truth.photons.col.max() < 40
    assert np.count_nonzero(batch.frames[:, :, 40:][:, ~truth.hot[:, 40:]]) == 0
