"""Frequency-domain diffusion impedance against the analytic straight-channel solution."""

import numpy as np
import pytest

from hexspec.errors import ConfigError
from hexspec.tomo.diffusion import impedance, save_nyquist_png, straight_channel_impedance, tortuosity


def channels(n_len=40):
    m = np.zeros((n_len, 8, 8), bool)
    m[:, ::2, ::2] = True                    # 16 of 64 columns: eps = 0.25
    return m


def analytic(omega_ratio, eps):
    """Z~ = tanh(kL) / (eps kL), kL = sqrt(i omega/omega_c), written out from C = sinh(k(L-x))/sinh(kL)."""
    kl = np.sqrt(1j * omega_ratio)
    flux = eps * kl * np.cosh(kl) / np.sinh(kl)      # J L / (A D) for C(0) = 1, C(L) = 0
    return 1.0 / flux


def test_straight_channels_match_the_finite_line_solution():
    m = channels(40)
    spec = impedance(m, axis=0, d_bulk=1.0, voxel_size_mm=1.0, n_frequencies=15)
    # default range stops where the diffusion length is 4 voxels: (N/4)^2 = 100
    assert spec.omega_ratio.max() == pytest.approx(100.0)
    exact = analytic(spec.omega_ratio, 0.25)
    # discretisation error grows as (k h)^2 / 12: under 1% at |k| h = 0.25
    np.testing.assert_allclose(spec.z_norm, exact, rtol=0.01)
    np.testing.assert_allclose(straight_channel_impedance(spec.omega_ratio, 0.25), exact, rtol=1e-12)
    assert spec.low_frequency_limit == pytest.approx(1 / 0.25, rel=1e-3)   # tau / eps with tau = 1
    # the high-frequency end approaches the 45-degree Warburg line
    hi = spec.z_norm[-1]
    assert np.degrees(np.arctan2(-hi.imag, hi.real)) == pytest.approx(45.0, abs=2.0)


def test_omega_c_is_d_over_l_squared_in_physical_units():
    m = channels(20)
    spec = impedance(m, axis=0, frequencies_hz=[0.001, 0.01], d_bulk=2e-4, voxel_size_mm=0.005)
    length_mm = 20 * 0.005
    assert spec.omega_c_rad_s == pytest.approx(2e-4 / length_mm ** 2)
    np.testing.assert_allclose(spec.omega_ratio, 2 * np.pi * np.array([0.001, 0.01]) / spec.omega_c_rad_s)
    np.testing.assert_allclose(spec.z_norm, analytic(spec.omega_ratio, 0.25), rtol=0.01)


def test_low_frequency_limit_of_a_random_medium_is_tau_over_eps(tmp_path):
    import scipy.ndimage as ndi
    rng = np.random.default_rng(4)
    f = ndi.gaussian_filter(rng.standard_normal((20, 14, 14)), 1.2)
    m = f < np.quantile(f, 0.45)
    spec = impedance(m, axis=0, frequencies_hz=np.array([1e-6]), d_bulk=1.0)
    t = tortuosity(m, axis=0, solver="direct")
    assert spec.z_norm[0].real == pytest.approx(t.tau / t.porosity, rel=1e-4)
    png = tmp_path / "nyquist.png"
    save_nyquist_png(impedance(m, axis=0, n_frequencies=6), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_pore_path_is_refused():
    m = np.zeros((10, 4, 4), bool)
    m[:4, 1, 1] = True
    with pytest.raises(ConfigError, match="no pore path"):
        impedance(m)
