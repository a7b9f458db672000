"""Simulated spectra after the real processing chain with the true calibration."""

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

import hexspec as hx
from hexspec.compton import compton_energy
from hexspec.sim import Am241Source, ComptonSource, HexitecSimulator

FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def _events(sim, n_frames):
    batch, truth = sim.frames(n_frames)
    cfg = hx.ProcessingConfig(threshold=0, gradients=truth.gradients, intercepts=truth.intercepts,
                              charge_sharing="csd")
    return hx.extract_events(batch, cfg).energy.astype(np.float64)


def _fit_gaussian(energy_kev, lo, hi, width=0.05):
    """(centre, FWHM) of a Gaussian on a flat background fitted to the histogram in [lo, hi]."""
    counts, edges = np.histogram(energy_kev, np.arange(lo, hi + width / 2, width))
    x = 0.5 * (edges[1:] + edges[:-1])

    def model(e, area, centre, sigma, bg):
        return area * width / (sigma * math.sqrt(2 * math.pi)) * np.exp(-0.5 * ((e - centre) / sigma) ** 2) + bg

    p0 = (counts.sum(), x[np.argmax(counts)], 0.35, counts.min())
    p, _ = curve_fit(model, x, counts, p0=p0, sigma=np.sqrt(np.maximum(counts, 1)))
    return p[1], abs(p[2]) * FWHM_PER_SIGMA


@pytest.fixture(scope="module")
def ideal_am241_energies():
    # Point charges, no K escape, uniform noise: every line must come out as a clean Gaussian.
    sim = HexitecSimulator(Am241Source(), noise_fwhm_kev=0.8, noise_spread=0.0, cloud_fwhm_um=0.0, escape=False,
                           seed=21)
    return _events(sim, 15000)


@pytest.mark.parametrize("line_kev", [59.5409, 26.3446, 13.9, 17.75, 20.8])
def test_am241_lines_come_out_at_their_energies_with_the_true_calibration(ideal_am241_energies, line_kev):
    centre, _ = _fit_gaussian(ideal_am241_energies, line_kev - 1.5, line_kev + 1.5)
    assert centre == pytest.approx(line_kev, abs=0.02)


@pytest.mark.parametrize("line_kev", [59.5409, 17.75])
def test_am241_line_width_equals_the_noise_fwhm(ideal_am241_energies, line_kev):
    _, fwhm = _fit_gaussian(ideal_am241_energies, line_kev - 1.5, line_kev + 1.5)
    # noise 0.8 keV FWHM plus ADC rounding (gradient / sqrt(12) = 0.008 keV sigma): negligible
    assert fwhm == pytest.approx(0.8, rel=0.04)


@pytest.fixture(scope="module")
def default_am241_energies():
    return _events(HexitecSimulator(Am241Source(), seed=22), 15000)


def test_am241_peak_stays_at_59_5_kev_with_charge_sharing_and_escape(default_am241_energies):
    # The charge-sharing tail sits below the peak; fit the peak's upper part only.
    centre, fwhm = _fit_gaussian(default_am241_energies, 59.0, 60.5)
    assert centre == pytest.approx(59.5409, abs=0.1)
    assert 0.6 < fwhm < 1.1


@pytest.mark.parametrize("escape_kev", [59.5409 - 23.11, 59.5409 - 27.38])
def test_cd_and_te_escape_peaks_appear_below_the_59_5_kev_line(default_am241_energies, escape_kev):
    # escape energies: 59.54 keV minus the intensity-weighted K-alpha of Cd (23.11) and Te (27.38)
    e = default_am241_energies
    peak = np.sum(np.abs(e - escape_kev) < 0.6)
    side = 0.5 * (np.sum(np.abs(e - (escape_kev - 1.8)) < 0.6) + np.sum(np.abs(e - (escape_kev + 1.8)) < 0.6))
    assert peak > 2 * side + 5 * math.sqrt(side)


def test_escape_peaks_vanish_without_k_fluorescence():
    e = _events(HexitecSimulator(Am241Source(), seed=23, escape=False, cloud_fwhm_um=0.0), 6000)
    near = np.sum(np.abs(e - (59.5409 - 23.11)) < 0.6)
    side = np.sum(np.abs(e - (59.5409 - 23.11 - 1.8)) < 0.6)
    assert near < side + 5 * math.sqrt(side + 1)


def test_compton_peak_sits_at_the_compton_energy_of_the_pixel_angle():
    src = ComptonSource(e1_kev=115.0, li_content=0.5)
    sim = HexitecSimulator(src, seed=24, photon_rate_hz=6e5)
    batch, truth = sim.frames(8000)
    cfg = hx.ProcessingConfig(threshold=0, gradients=truth.gradients, intercepts=truth.intercepts)
    ev = hx.extract_events(batch, cfg)
    # pixels within 0.2 degrees of 90 degrees: E_C = 93.87 keV (eq. 1)
    near90 = np.abs(truth.theta_rad - math.pi / 2) < math.radians(0.2)
    e = ev.energy[near90[ev.row, ev.col]].astype(np.float64)
    counts, edges = np.histogram(e, np.arange(88.0, 100.0, 0.25))
    smooth = np.convolve(counts, np.ones(5) / 5, mode="same")
    mode = 0.5 * (edges[1:] + edges[:-1])[np.argmax(smooth)]
    assert mode == pytest.approx(float(compton_energy(115.0, math.pi / 2)), abs=0.4)
