"""s_parameter*: the windows as pz_window_au=(low, high) and the angle as theta_rad, the former
keywords low=, high= and theta= still accepted (DESIGN.md)."""

import math

import numpy as np
import pytest

import hexspec as hx
from hexspec import compton


def _flat_profile():
    # J = 1/16 per a.u. on -8..8: S = S_L / S_H = 2 low / (2 (high - low)) by hand
    edges = np.linspace(-8.0, 8.0, 161)
    return compton.ComptonProfile(edges, np.full(160, 1.0 / 16.0), np.full(160, 1e-3))


def test_pz_window_au_and_the_former_low_high_give_the_hand_value():
    prof = _flat_profile()
    assert compton.s_parameter(prof)[0] == pytest.approx(1.0 / 4.0, rel=1e-12)              # default (1, 5)
    assert compton.s_parameter(prof, pz_window_au=(0.5, 3.0))[0] == pytest.approx(0.5 / 2.5, rel=1e-12)
    assert compton.s_parameter(prof, low=0.5, high=3.0)[0] == pytest.approx(0.5 / 2.5, rel=1e-12)
    assert compton.s_parameter(prof, high=3.0)[0] == pytest.approx(1.0 / 2.0, rel=1e-12)   # low keeps its default
    with pytest.raises(hx.ConfigError, match="former names of pz_window_au"):
        compton.s_parameter(prof, pz_window_au=(0.5, 3.0), low=0.5)
    with pytest.raises(hx.ConfigError, match="pz_window_au"):
        compton.s_parameter(prof, pz_window_au=2.0)


def _cube():
    rng = np.random.default_rng(5)
    edges = np.arange(60.0, 120.0, 0.25)
    centers = 0.5 * (edges[1:] + edges[:-1])
    lam = 400.0 * np.exp(-0.5 * ((centers - 93.0) / 3.0) ** 2) + 2.0
    return hx.SpectralCube(rng.poisson(lam, (3, 4, centers.size)).astype(np.uint32), edges)


def test_the_maps_take_theta_rad_and_pz_window_au_under_either_name():
    cube = _cube()
    theta = np.full(cube.shape, math.radians(88.0))
    new = compton.s_parameter_map(cube, 115.0, theta_rad=theta, pz_window_au=(0.8, 4.0), min_counts=0)
    old = compton.s_parameter_map(cube, 115.0, theta=theta, low=0.8, high=4.0, min_counts=0)
    np.testing.assert_array_equal(new.s, old.s)
    assert new.pz_window_au == (0.8, 4.0)
    default = compton.s_parameter_map(cube, 115.0, theta, min_counts=0)
    assert default.pz_window_au == (1.0, 5.0)
    # the window changes S: a check that the keyword reaches the computation
    assert not np.allclose(default.s, new.s)
    b_new = compton.s_parameter_blocks(cube, 115.0, theta_rad=theta, block=(1, 2), pz_window_au=(0.8, 4.0), min_counts=0)
    b_old = compton.s_parameter_blocks(cube, 115.0, theta=theta, block=(1, 2), low=0.8, high=4.0, min_counts=0)
    np.testing.assert_array_equal(b_new.s, b_old.s)
    r_new = compton.s_parameter_region(cube, 115.0, theta_rad=theta, pz_window_au=(0.8, 4.0))
    r_old = compton.s_parameter_region(cube, 115.0, theta=theta, low=0.8, high=4.0)
    assert r_new == r_old
    with pytest.raises(hx.ConfigError, match="former name of theta_rad"):
        compton.s_parameter_map(cube, 115.0, theta, theta=theta)
    with pytest.raises(hx.ConfigError, match="theta_rad"):
        compton.s_parameter_map(cube, 115.0)
