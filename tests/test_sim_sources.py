"""Photon sources of the simulator: Am-241 line intensities, Compton energy distribution."""

import math

import numpy as np
import pytest
import xraylib

from hexspec.compton import PinholeGeometry, energy_from_pz, pz_from_energy
from hexspec.detector import DetectorSpec
from hexspec.errors import ConfigError
from hexspec.sim import Am241Source, ComptonSource

MC2_KEV = 510.99895


def test_am241_line_ratio_follows_the_emission_probabilities():
    # DDEP: 59.5409 keV 35.92 photons per 100 decays, 26.3446 keV 2.31
    energy = Am241Source(continuum_fraction=0.0).sample(400_000, np.random.default_rng(0))
    n59 = np.sum(energy == 59.5409)
    n26 = np.sum(energy == 26.3446)
    ratio = n59 / n26
    assert ratio == pytest.approx(35.92 / 2.31, rel=4 * math.sqrt(1 / n59 + 1 / n26))


def test_am241_continuum_fraction_and_range():
    energy = Am241Source(continuum_fraction=0.2, continuum_kev=(3.0, 50.0)).sample(100_000, np.random.default_rng(1))
    lines = np.isin(energy, [59.5409, 26.3446, 33.196, 11.87, 13.9, 17.75, 20.8])
    assert np.mean(~lines) == pytest.approx(0.2, abs=0.005)
    assert energy[~lines].min() >= 3.0 and energy[~lines].max() <= 50.0


def _cathode_profile(pz_au, li_content):
    """J_cathode(p_z) = (1-x) J_Li + 0.8 J_Ni + 0.1 J_Mn + 0.1 J_Co + 2 J_O straight from xraylib."""
    weights = {3: li_content, 28: 0.8, 25: 0.1, 27: 0.1, 8: 2.0}
    return np.array([sum(w * xraylib.ComptonProfile(z, abs(float(p))) for z, w in weights.items()) for p in pz_au])


def _expected_pz_density(pz_au, e1_kev, theta_rad, li_content):
    """Counts per unit p_z from eq. (3): J (E2/E1)(mc^2/(q c)) dE2/dp_z (derivative by central differences)."""
    e2 = energy_from_pz(pz_au, e1_kev, theta_rad)
    de2_dpz = (energy_from_pz(pz_au + 1e-4, e1_kev, theta_rad) - energy_from_pz(pz_au - 1e-4, e1_kev, theta_rad)) / 2e-4
    qc = np.sqrt(e1_kev ** 2 + e2 ** 2 - 2 * e1_kev * e2 * np.cos(theta_rad))
    return _cathode_profile(pz_au, li_content) * (e2 / e1_kev) * (MC2_KEV / qc) * de2_dpz


def _compton_only(li_content, detector=DetectorSpec(1, 1), **kw):
    return ComptonSource(li_content=li_content, geometry=PinholeGeometry(detector=detector, **kw),
                         elastic_fraction=0, tungsten_fraction=0, lead_fraction=0,
                         detector_fluorescence_fraction=0, background_fraction=0)


@pytest.mark.parametrize("li_content", [0.0, 1.0])
def test_compton_energies_follow_the_impulse_cross_section_of_the_cathode(li_content):
    e1_kev, n = 115.0, 300_000
    src = _compton_only(li_content)
    theta = float(src.theta_rad[0, 0])
    assert theta == pytest.approx(math.pi / 2)
    e2 = src.sample(n, np.random.default_rng(3))
    pz = pz_from_energy(e2, e1_kev, theta)
    edges = np.arange(-8.0, 8.01, 0.5)
    counts, _ = np.histogram(pz, edges)
    # expected counts: the density integrated over each bin, normalised over the sampled range (|p_z| <= 60)
    fine = np.linspace(-60, 60, 24001)
    dens = _expected_pz_density(fine, e1_kev, theta, li_content)
    cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    expected = n * np.diff(np.interp(edges, fine, cdf)) / cdf[-1]
    chi2 = np.sum((counts - expected) ** 2 / expected)
    dof = len(counts)
    assert chi2 < dof + 5 * math.sqrt(2 * dof)


def test_li_content_map_sets_the_valence_fraction_pixel_by_pixel():
    # Two pixels side by side: 1-x = 0 and 1-x = 1. The fraction of photons with |p_z| < 1 a.u.
    # (valence-dominated) must match free-atom theory in each.
    e1_kev = 115.0
    src = _compton_only(np.array([[0.0, 1.0]]), detector=DetectorSpec(1, 2))
    rng = np.random.default_rng(5)
    fine = np.linspace(-60, 60, 24001)
    for col, li in ((0, 0.0), (1, 1.0)):
        theta = float(src.theta_rad[0, col])
        e2 = src.sample_pixels(np.full(200_000, col), rng)
        got = np.mean(np.abs(pz_from_energy(e2, e1_kev, theta)) < 1.0)
        dens = _expected_pz_density(fine, e1_kev, theta, li)
        expected = np.trapezoid(dens * (np.abs(fine) < 1.0), fine) / np.trapezoid(dens, fine)
        assert got == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / 200_000))


def test_compton_source_uses_the_pinhole_theta_per_pixel():
    src = ComptonSource()
    np.testing.assert_allclose(src.theta_rad, PinholeGeometry().theta_map())


def test_compton_source_rejects_li_content_outside_0_to_1():
    with pytest.raises(ConfigError, match="li_content"):
        ComptonSource(li_content=1.5)


def test_compton_source_rejects_a_map_of_the_wrong_shape():
    with pytest.raises(ConfigError, match=r"shape \(80, 80\)"):
        ComptonSource(li_content=np.ones((10, 10)))
