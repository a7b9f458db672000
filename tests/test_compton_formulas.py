"""Each Compton formula is written once and reached from numpy and numba code alike.

The numpy wrappers, the numba-compiled scalars and the per-pixel kernels are compared on
random input with closed forms written out here from PHYSICS.md eqs. (2)-(4).
"""

import math

import numpy as np
import pytest
from numba import njit
from scipy.optimize import brentq

from hexspec import compton
from hexspec.compton import binning, kinematics, windows

MC2 = 510.99895
MC_AU = 137.035999
RNG = np.random.default_rng(2026)
E2 = RNG.uniform(60.0, 114.0, 400)
THETA = RNG.uniform(0.3, 2.8, 400)
E1 = 115.0


def pz_closed_form(e2, e1, theta):
    # PHYSICS.md eq. (2), written independently
    cos_t = math.cos(theta)
    return MC_AU * (e2 - e1 + (e1 * e2 / MC2) * (1.0 - cos_t)) / math.sqrt(e1 ** 2 + e2 ** 2 - 2 * e1 * e2 * cos_t)


def test_numpy_and_numba_pz_agree_with_the_closed_form_of_eq_2():
    expected = np.array([pz_closed_form(e, E1, t) for e, t in zip(E2, THETA)])
    numpy_path = compton.pz_from_energy(E2, E1, THETA)
    numba_path = np.array([kinematics.pz_scalar(e, E1, math.cos(t)) for e, t in zip(E2, THETA)])
    assert np.allclose(numpy_path, expected, rtol=1e-12, atol=1e-12)
    assert np.array_equal(numba_path, numpy_path)


def test_numpy_and_numba_energy_from_pz_invert_eq_2_by_root_finding():
    pz = RNG.uniform(-30.0, 30.0, 40)
    th = THETA[:40]
    roots = np.array([brentq(lambda e: pz_closed_form(e, E1, t) - p, 20.0, E1 + 40.0, xtol=1e-13)
                      for p, t in zip(pz, th)])
    numba_path = np.array([kinematics.energy_from_pz_scalar(p, E1, math.cos(t)) for p, t in zip(pz, th)])
    assert np.allclose(compton.energy_from_pz(pz, E1, th), roots, rtol=0, atol=1e-9)
    assert np.allclose(numba_path, roots, rtol=0, atol=1e-9)


def test_impulse_factor_and_momentum_transfer_match_eq_3_on_both_paths():
    qc = np.sqrt(E1 ** 2 + E2 ** 2 - 2 * E1 * E2 * np.cos(THETA))
    assert np.allclose(compton.momentum_transfer_kev(E2, E1, THETA), qc, rtol=1e-14)
    assert np.allclose(compton.impulse_factor(E2, E1, THETA), (E1 / E2) * qc / MC2, rtol=1e-14)
    scalar = np.array([kinematics.impulse_factor_scalar(e, E1, math.cos(t)) for e, t in zip(E2, THETA)])
    assert np.allclose(scalar, (E1 / E2) * qc / MC2, rtol=1e-14)


def test_pz_per_kev_is_the_derivative_of_eq_2_and_gives_0_88_kev_per_au_at_90_degrees():
    h = 1e-4
    numeric = np.array([(pz_closed_form(e + h, E1, t) - pz_closed_form(e - h, E1, t)) / (2 * h) for e, t in zip(E2, THETA)])
    assert np.allclose(compton.pz_per_kev(E2, E1, THETA), numeric, rtol=1e-7)
    assert 1.0 / compton.pz_per_kev(compton.compton_energy(E1, math.pi / 2), E1, math.pi / 2) == pytest.approx(0.88, abs=0.01)
    ec = compton.compton_energy(E1, math.pi / 2)
    slope = (pz_closed_form(ec + h, E1, math.pi / 2) - pz_closed_form(ec - h, E1, math.pi / 2)) / (2 * h)
    assert compton.resolution_in_pz(0.8, E1, math.pi / 2) == pytest.approx(0.8 * slope, rel=1e-7)


def test_window_weights_integrate_a_linear_density_exactly_for_any_window():
    # J = 1 + p/2 given as bin averages on uneven bins: the linear sub-bin reconstruction is exact for it
    edges = np.cumsum(np.r_[-6.0, RNG.uniform(0.2, 0.6, 30)])
    mids = 0.5 * (edges[1:] + edges[:-1])
    density = 1.0 + 0.5 * mids
    for lo, hi in RNG.uniform(edges[2], edges[-3], (20, 2)):
        lo, hi = min(lo, hi), max(lo, hi)
        exact = (hi - lo) + 0.25 * (hi * hi - lo * lo)
        assert compton.window_weights(edges, lo, hi) @ density == pytest.approx(exact, rel=1e-12, abs=1e-12)


@njit
def _kernel_window_weights(pe, lo, hi):
    w = np.zeros(pe.shape[0] - 1)
    binning.add_window_weights(pe, lo, hi, w)
    return w


def test_kernel_window_coefficients_equal_the_numpy_profile_route():
    edges = np.arange(80.0, 110.0001, 0.25)
    for theta in (1.2, math.pi / 2, 1.9):
        pz_edges, kappa = compton.bin_weights(edges, E1, theta, "impulse")
        # numpy route of eq. (3): density per a.u. = counts * kappa / dp, kappa = (dp/dE)(E1/E2)(q c/mc^2)
        e2 = 0.5 * (edges[1:] + edges[:-1])
        qc = np.sqrt(E1 ** 2 + e2 ** 2 - 2 * E1 * e2 * math.cos(theta))
        assert np.allclose(kappa, np.diff(pz_edges) / np.diff(edges) * (E1 / e2) * qc / MC2, rtol=1e-13)
        g = kappa / np.diff(pz_edges)
        m = edges.size - 1
        cl, ch, fl, fh = (np.zeros(m) for _ in range(4))
        windows.pixel_window_coefficients(edges, 0, E1, math.cos(theta), 1.0, 5.0, True, cl, ch, fl, fh)
        wl = compton.window_weights(pz_edges, -1.0, 1.0)
        wh = compton.window_weights(pz_edges, -5.0, -1.0) + compton.window_weights(pz_edges, 1.0, 5.0)
        assert np.allclose(cl, wl * g, rtol=1e-12, atol=1e-15)
        assert np.allclose(ch, wh * g, rtol=1e-12, atol=1e-15)
        assert np.array_equal(_kernel_window_weights(pz_edges, -1.0, 1.0), wl)
        # raw-count fractions: whole bins inside |p_z| < 1 count fully
        inside = (pz_edges[:-1] >= -1.0) & (pz_edges[1:] <= 1.0)
        assert np.allclose(fl[inside], 1.0) and inside.sum() > 3


def test_straight_background_per_bin_is_its_integral_over_the_bin():
    a = RNG.uniform(80.0, 100.0, 50)
    b = a + RNG.uniform(0.1, 1.0, 50)
    b0, b1, c = 3.0, -0.2, 93.9
    exact = b0 * (b - a) + 0.5 * b1 * ((b - c) ** 2 - (a - c) ** 2)
    assert np.allclose(binning.linear_background_counts(a, b, b0, b1, c), exact, rtol=1e-12)


def test_window_table_columns_are_named_and_complete():
    assert windows.N_COLUMNS == len(windows.COLUMNS) == 7
    names = dict(zip(windows.COLUMNS, range(7)))
    assert (names["s_low"], names["s_high"], names["counts_low"], names["counts_high"]) == (
        windows.S_LOW, windows.S_HIGH, windows.COUNTS_LOW, windows.COUNTS_HIGH)
    # S and its error from one row: S_L = 2, S_H = 8, var 0.04 / 0.16, no covariance
    row = np.array([2.0, 8.0, 0.04, 0.16, 0.0, 100.0, 400.0])
    s, err = windows.ratio(row)
    assert s == pytest.approx(0.25)
    assert err == pytest.approx(0.25 * math.hypot(0.2 / 2.0, 0.4 / 8.0), rel=1e-12)
