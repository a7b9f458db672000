"""Quantification of segmented volumes against values worked out by hand.

Tortuosity hand values use the finite-volume network of TauFactor's definition: unit
conductance between face-adjacent pore voxels, 2 to a Dirichlet face (half a voxel). A
pore path that is a chain of voxels therefore has resistance (links + 0.5 + 0.5), and
chains combine as series / parallel resistances. With total flux J (C = 1 -> 0) through
a box of N voxels along the axis and A voxels across, D_eff/D = J N / A and
tau = eps / (D_eff/D).
"""

import numpy as np
import pytest
import scipy.ndimage as ndi

from hexspec.errors import ConfigError
from hexspec.tomo import specific_surface_area, tortuosity
from hexspec.tomo.quantify import (particle_statistics, phase_volume_fractions, porosity_by_region,
                                   representative_volume, surface_area)


def tau_from_resistances(resistances, shape, pore_voxels):
    """tau of isolated pore networks of the given resistances (voxel units) in a box."""
    n_len, area = shape[0], shape[1] * shape[2]
    flux = sum(1.0 / r for r in resistances)
    return (pore_voxels / (n_len * area)) / (flux * n_len / area)


def test_straight_channels_give_tau_one_at_any_porosity():
    m = np.zeros((30, 12, 12), bool)
    m[:, ::3, ::2] = True
    r = tortuosity(m, axis=0)
    assert r.tau == pytest.approx(1.0, abs=1e-9)
    assert r.porosity == pytest.approx(m.mean())
    assert r.d_eff == pytest.approx(m.mean(), rel=1e-9)      # D eps / tau with D = 1
    # the same channels along x
    assert tortuosity(np.ascontiguousarray(m.transpose(1, 2, 0)), axis=2, d_bulk=2.5).d_eff == pytest.approx(
        2.5 * m.mean(), rel=1e-9)


def test_staggered_channel_tau_is_path_length_ratio_squared():
    # one voxel wide, steps down 5 voxels, jogs 3 voxels sideways, steps down again
    m = np.zeros((10, 6, 1), bool)
    m[0:5, 1, 0] = True
    m[4, 1:5, 0] = True
    m[4:10, 4, 0] = True
    n_path = int(m.sum())                      # 5 + 3 + 5 = 13 voxels, a chain of 12 links
    assert n_path == 13
    r = tortuosity(m, axis=0)
    # chain resistance = 12 links + 2 half links = 13 = n_path; tau = (n_path / N)^2
    assert r.tau == pytest.approx((n_path / 10) ** 2, rel=1e-8)
    assert r.tau == pytest.approx(tau_from_resistances([13.0], m.shape, n_path), rel=1e-8)


def test_branching_channel_matches_series_and_parallel_resistances():
    n_len = 16
    m = np.zeros((n_len, 3, 1), bool)
    k, j = 5, 11
    m[0:k + 1, 1, 0] = True          # inlet chain down the middle to the junction at z = k
    m[k, :, 0] = True                # junction bar
    m[k:j + 1, 0, 0] = True          # two branches at y = 0 and y = 2, separated by solid at y = 1
    m[k:j + 1, 2, 0] = True
    m[j, :, 0] = True                # rejoining bar
    m[j:, 1, 0] = True               # outlet chain
    inlet = 0.5 + k                  # face to node (k, 1)
    branch = 1 + (j - k) + 1         # (k,1)->(k,0) ... (j,0)->(j,1)
    outlet = (n_len - 1 - j) + 0.5
    resistance = inlet + branch / 2 + outlet
    r = tortuosity(m, axis=0)
    assert r.tau == pytest.approx(tau_from_resistances([resistance], m.shape, int(m.sum())), rel=1e-8)


def test_parallel_straight_and_staggered_channels():
    m = np.zeros((10, 8, 1), bool)
    m[:, 0, 0] = True                        # straight: resistance 10
    m[0:5, 3, 0] = True                      # staggered: 13 voxels, resistance 13
    m[4, 3:7, 0] = True
    m[4:10, 6, 0] = True
    r = tortuosity(m, axis=0)
    assert r.tau == pytest.approx(tau_from_resistances([10.0, 13.0], m.shape, int(m.sum())), rel=1e-8)


def random_medium(shape, porosity=0.45, sigma=1.5, seed=3):
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return f < np.quantile(f, porosity)


def test_random_medium_multigrid_matches_direct_solve():
    m = random_medium((24, 20, 20))
    direct = tortuosity(m, axis=0, solver="direct")
    amg = tortuosity(m, axis=0)
    assert 1.05 < direct.tau < 10
    assert amg.tau == pytest.approx(direct.tau, rel=1e-5)
    assert amg.flux_mismatch < 1e-4
    lateral = tortuosity(m, axis=2, rtol=1e-9)
    assert lateral.tau == pytest.approx(tortuosity(m, axis=2, solver="direct").tau, rel=1e-7)


def test_non_percolating_pores_are_reported_and_excluded():
    m = np.zeros((12, 10, 10), bool)
    m[:, 2, 2] = True                        # 12 voxels through
    m[4:7, 6:8, 6:8] = True                  # isolated blob: 12 voxels
    m[0:5, 8, 1] = True                      # dead end open to the inlet face: 5 voxels
    r = tortuosity(m, axis=0)
    assert r.non_percolating_fraction == pytest.approx(17 / 29)
    assert r.percolating_porosity == pytest.approx(12 / m.size)
    # all pores count in eps (TauFactor's VF); only the channel carries flux 1/12
    assert r.tau == pytest.approx(tau_from_resistances([12.0], m.shape, 29), rel=1e-9)


def test_no_percolating_path_gives_infinite_tau():
    m = np.zeros((10, 6, 6), bool)
    m[0:4, 2, 2] = True
    m[6:10, 2, 2] = True
    r = tortuosity(m, axis=0)
    assert r.tau == float("inf") and r.d_eff == 0.0 and r.non_percolating_fraction == 1.0


def test_bad_input_is_one_clear_error():
    with pytest.raises(ConfigError, match="3-D"):
        tortuosity(np.zeros((4, 4), bool))
    with pytest.raises(ConfigError, match="axis"):
        tortuosity(np.ones((4, 4, 4), bool), axis=3)


def ball_mask(n, r):
    z, y, x = np.indices((n, n, n)) - n / 2 + 0.5
    return z * z + y * y + x * x <= r * r


def test_sphere_surface_area_against_4_pi_r_squared():
    r, n = 15, 40
    s = ball_mask(n, r)
    exact = 4 * np.pi * r ** 2
    # smoothed marching cubes: within 2%
    mc = surface_area(s, spacing=1.0, method="marching_cubes")
    assert mc.area == pytest.approx(exact, rel=0.02)
    assert mc.method == "marching_cubes"
    # voxel faces: |nx| + |ny| + |nz| averages 3/2 over a sphere, so 1.5x within 3%
    faces = surface_area(s, method="faces")
    assert faces.area / exact == pytest.approx(1.5, rel=0.03)
    # specific surface area per total volume, with the voxel size in mm
    h = 0.002
    assert specific_surface_area(s, spacing=h) == pytest.approx(mc.area * h ** 2 / (n ** 3 * h ** 3), rel=1e-6)


def test_phase_fractions_and_porosity_by_region_of_a_phantom():
    shape = (18, 8, 8)
    labels = np.zeros(shape, np.uint8)
    labels[3:15] = 2                              # electrode slices 3-14: three regions of 4 slices
    labels[3:7, :, :4] = 1                        # region 1: half the columns are pore -> 0.5
    labels[7:11, :2, :] = 1                       # region 2: 2 of 8 rows -> 0.25
    labels[11:15, 0, 0:8:2] = 1                   # region 3: 4 of 64 columns -> 0.0625
    reg = porosity_by_region(labels == 1, labels > 0, n_regions=3, axis=0)
    np.testing.assert_array_equal(reg.bounds, [[3, 7], [7, 11], [11, 15]])
    np.testing.assert_allclose(reg.porosity, [0.5, 0.25, 0.0625])
    assert reg.maps.shape == (3, 8, 8)
    np.testing.assert_allclose(reg.maps[0][:, :4], 1.0)
    np.testing.assert_allclose(reg.maps[0][:, 4:], 0.0)
    fr = phase_volume_fractions(labels, {"pore": 1, "solid": 2})
    assert fr["pore"] == pytest.approx((4 * 8 * 4 + 4 * 2 * 8 + 4 * 4) / (12 * 64))


def test_region_porosity_ignores_pores_outside_the_electrode_and_refuses_too_many_regions():
    el = np.zeros((6, 4, 4), bool)
    el[1:5] = True
    pores = np.zeros_like(el)
    pores[0] = True                               # outside the electrode
    pores[1:3, 0, 0] = True
    reg = porosity_by_region(pores, el, n_regions=2)
    np.testing.assert_allclose(reg.porosity, [2 / 32, 0.0])
    assert np.isnan(porosity_by_region(pores, el & (np.indices(el.shape)[2] > 0), 2).maps[0][0, 0])
    with pytest.raises(ConfigError, match="regions"):
        porosity_by_region(pores, el, n_regions=5)


def test_rev_of_a_periodic_medium_settles_at_its_period():
    z, y, x = np.indices((32, 32, 32))
    m = ((z // 2 + y // 2 + x // 2) % 2) == 0     # period 4: any 4^3 cube holds exactly half
    rev = representative_volume(m, sizes=[1, 2, 3, 4, 8, 12, 16, 24], tolerance=0.01)
    assert rev.reference == 0.5
    assert rev.settled_size == 4
    np.testing.assert_allclose(rev.values[3:], 0.5)


def test_rev_of_a_random_medium_settles():
    # correlation length ~2 voxels: small cubes scatter, cubes of 32 and more agree within 5%
    m = random_medium((80, 80, 80), porosity=0.4, sigma=1.0, seed=5)
    rev = representative_volume(m, sizes=[4, 8, 16, 32, 48, 64, 80], tolerance=0.05)
    assert rev.reference == pytest.approx(0.4, abs=1e-3)       # the whole volume: 40% by construction
    assert rev.settled_size is not None and 4 < rev.settled_size <= 48
    assert abs(rev.values[0] - 0.4) > 0.02                     # the smallest cube is not representative
    big = rev.sizes >= rev.settled_size
    np.testing.assert_allclose(rev.values[big], 0.4, rtol=0.05)


def test_sphericity_of_a_sphere_and_a_cube():
    s = ball_mask(30, 10)
    p = particle_statistics(s)
    assert p.label.size == 1
    assert p.volume[0] == pytest.approx(4 / 3 * np.pi * 10 ** 3, rel=0.02)
    assert p.sphericity[0] == pytest.approx(1.0, abs=0.03)
    c = np.zeros((30, 30, 30), bool)
    c[5:25, 5:25, 5:25] = True
    # a cube's sphericity is (pi/6)^(1/3) = 0.806; the smoothing rounds its edges a little
    assert 0.80 < particle_statistics(c).sphericity[0] < 0.88
    two = s.copy()
    two[:3, :3, :3] = True                          # a small particle cut by the box
    p2 = particle_statistics(two, min_voxels=8)
    assert p2.label.size == 2 and p2.touches_border.tolist() == [True, False]


def test_public_names_stay_functions_after_their_modules_are_imported():
    # a submodule named like a public function would replace it in hexspec.tomo on import
    import hexspec.tomo as tomo
    import hexspec.tomo.diffusion  # noqa: F401
    import hexspec.tomo.particles  # noqa: F401
    import hexspec.tomo.quantify  # noqa: F401
    for name in ("tortuosity", "specific_surface_area", "impedance"):
        assert callable(getattr(tomo, name)), name
