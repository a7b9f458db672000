"""Compton kinematics (PHYSICS.md eqs. 1-2) and the pinhole geometry (section 3)."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from hexspec import compton
from hexspec.detector import HEXITEC

MC2 = 510.99895
MC_AU = 137.035999


def test_compton_energy_of_115_kev_at_90_degrees_is_93_8738_kev():
    # PHYSICS.md eq. (1) reference number
    assert compton.compton_energy(115.0, math.pi / 2) == pytest.approx(93.8738, abs=5e-5)


def test_compton_energy_at_zero_angle_is_the_incident_energy():
    assert compton.compton_energy(115.0, 0.0) == pytest.approx(115.0, abs=1e-12)


def test_pz_is_zero_at_the_compton_energy_for_any_angle():
    theta = np.radians([60.0, 86.2, 90.0, 93.8, 150.0])
    ec = compton.compton_energy(115.0, theta)
    assert np.allclose(compton.pz_from_energy(ec, 115.0, theta), 0.0, atol=1e-10)


def _pz_from_energy_conservation(e2, e1, theta):
    """p_z from E1 + mc^2 = E2 + sqrt(m^2c^4 + |p + q|^2 c^2), p along -q, p^2 neglected (solved numerically)."""
    qc = math.sqrt(e1 * e1 + e2 * e2 - 2 * e1 * e2 * math.cos(theta))

    def mismatch(pz_kev):   # pz_kev = p_z c in keV; |p + q|^2 ~ q^2 - 2 q p_z
        return e1 + MC2 - e2 - math.sqrt(MC2 ** 2 + qc * qc - 2 * qc * pz_kev)

    return brentq(mismatch, -60.0, 60.0, xtol=1e-14) / MC2 * MC_AU


@pytest.mark.parametrize("e2", [88.0, 92.5, 93.8738, 95.0, 99.0])
def test_pz_matches_energy_conservation_worked_independently(e2):
    theta = math.pi / 2
    assert compton.pz_from_energy(e2, 115.0, theta) == pytest.approx(_pz_from_energy_conservation(e2, 115.0, theta), abs=1e-9)


def test_pz_by_hand_for_95_kev_at_90_degrees():
    # (95 - 115 + 115*95/510.99895) / sqrt(115^2 + 95^2) * 137.036, worked on paper:
    # 115*95/510.99895 = 21.37969; numerator 1.37969; sqrt(22250) = 149.1643; ratio 0.0092494 -> 1.26750 a.u.
    assert compton.pz_from_energy(95.0, 115.0, math.pi / 2) == pytest.approx(1.26750, abs=2e-4)


def test_one_atomic_unit_is_about_0_88_kev_near_the_compton_peak():
    de = compton.energy_from_pz(0.5, 115.0, math.pi / 2) - compton.energy_from_pz(-0.5, 115.0, math.pi / 2)
    assert de == pytest.approx(0.88, abs=0.01)


def test_energy_from_pz_inverts_pz_from_energy_over_arrays_and_angles():
    rng = np.random.default_rng(3)
    theta = np.radians(rng.uniform(80, 100, size=(5, 7)))
    pz = rng.uniform(-30, 30, size=(5, 7))
    e2 = compton.energy_from_pz(pz, 115.0, theta)
    assert np.allclose(compton.pz_from_energy(e2, 115.0, theta), pz, atol=1e-9)


def test_pz_from_energy_inverts_energy_from_pz():
    e2 = np.linspace(70.0, 112.0, 50)
    pz = compton.pz_from_energy(e2, 115.0, math.radians(91.0))
    assert np.allclose(compton.energy_from_pz(pz, 115.0, math.radians(91.0)), e2, atol=1e-9)


def test_theta_from_peak_energy_inverts_compton_energy():
    theta = np.radians(np.linspace(70, 110, 9))
    assert np.allclose(compton.theta_from_peak_energy(compton.compton_energy(115.0, theta), 115.0), theta, atol=1e-10)


def test_theta_map_spans_86_2_to_93_8_degrees_across_the_detector():
    theta = np.degrees(compton.PinholeGeometry().theta_map())
    # edge pixel centres at u = +-9.875 mm, nearest row v = 0.125 mm, d2 = 150 mm:
    # 90 -+ atan(9.875 / sqrt(150^2 + 0.125^2)) = 86.23 / 93.77 degrees
    edge = math.degrees(math.atan(9.875 / math.hypot(150.0, 0.125)))
    assert theta.shape == (80, 80)
    assert theta.min() == pytest.approx(90 - edge, abs=1e-9)
    assert theta.max() == pytest.approx(90 + edge, abs=1e-9)


def test_theta_grows_against_the_beam_along_columns_and_is_symmetric_in_rows():
    theta = compton.PinholeGeometry().theta_map()
    assert np.all(np.diff(theta[40]) < 0)                 # u along the beam grows with column: cos theta grows
    assert np.allclose(theta, theta[::-1, :])              # v enters squared


def test_single_angle_misplaces_edge_pixels_by_about_1_3_au():
    # PHYSICS.md section 3: a single theta shifts p_z by up to +-1.3 a.u. at the detector edges
    theta = compton.PinholeGeometry().theta_map()
    ec_edge = compton.compton_energy(115.0, theta[40, [0, -1]])
    shift = compton.pz_from_energy(ec_edge, 115.0, math.pi / 2)
    assert np.abs(shift).max() == pytest.approx(1.3, abs=0.1)
    assert shift[0] * shift[1] < 0


def test_sample_coordinates_are_inverted_and_scaled_by_d1_over_d2():
    g = compton.PinholeGeometry(d1_mm=160.0, d2_mm=150.0, detector=HEXITEC)
    x, y = g.sample_coordinates()
    # pixel (row 0, col 79): u = +9.875 mm, v = -9.875 mm -> sample (-10.533, +10.533) mm
    assert x[0, 79] == pytest.approx(-9.875 * 160 / 150)
    assert y[0, 79] == pytest.approx(9.875 * 160 / 150)
