"""Compton profiles J(p_z) (PHYSICS.md eq. 3) and S-parameters (eq. 4).

Spectra come from an independent forward model: for a Gaussian J of width sigma the
counts per unit E2 are (E2/E1)(mc^2/(q c)) J(p_z(E2)) (the impulse approximation of
eq. 3), integrated over each bin numerically. S of a Gaussian J has the closed form
S = erf(1/(sigma sqrt 2)) / (erf(5/(sigma sqrt 2)) - erf(1/(sigma sqrt 2))).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import erf
from scipy.stats import norm

import hexspec as hx
from hexspec import compton

E1 = 115.0
MC2 = 510.99895


def gaussian_s(sigma, low=1.0, high=5.0):
    a = erf(low / (sigma * math.sqrt(2)))
    return a / (erf(high / (sigma * math.sqrt(2))) - a)


def impulse_counts(edges, sigma, theta, total=1e6, sub=64):
    """Expected counts per energy bin of a Gaussian J through the impulse cross-section (trapezoid, sub-sampled)."""
    lo, hi = edges[:-1, None], edges[1:, None]
    t = np.linspace(0.0, 1.0, sub + 1)[None, :]
    e2 = lo + (hi - lo) * t
    c = math.cos(theta)
    # p_z written out here from eq. (2), independently of the library
    qc = np.sqrt(E1 ** 2 + e2 ** 2 - 2 * E1 * e2 * c)
    pz = 137.035999 * (e2 - E1 + E1 * e2 * (1 - c) / MC2) / qc
    dens = (e2 / E1) * (MC2 / qc) * norm.pdf(pz, scale=sigma)
    counts = np.trapezoid(dens, e2, axis=1) if hasattr(np, "trapezoid") else np.trapz(dens, e2, axis=1)
    return total * counts


def jacobian_counts(edges, sigma, theta, total=1e6):
    """Counts per bin when the counts per unit p_z are a Gaussian: differences of its CDF at the bin edges."""
    c = math.cos(theta)
    qc = np.sqrt(E1 ** 2 + edges ** 2 - 2 * E1 * edges * c)
    pz = 137.035999 * (edges - E1 + E1 * edges * (1 - c) / MC2) / qc
    return total * np.diff(norm.cdf(pz, scale=sigma))


EDGES = np.arange(80.0, 110.0001, 0.05)


@pytest.mark.parametrize("sigma", [0.8, 1.3, 2.0])
def test_s_of_gaussian_impulse_profile_matches_erf_closed_form(sigma):
    counts = impulse_counts(EDGES, sigma, math.pi / 2)
    s, _ = compton.s_parameter(compton.profile(EDGES, counts, E1, math.pi / 2))
    assert s == pytest.approx(gaussian_s(sigma), rel=5e-4)


def test_s_of_gaussian_counts_per_pz_matches_closed_form_with_jacobian_factor():
    counts = jacobian_counts(EDGES, 1.1, math.radians(88.0))
    s, _ = compton.s_parameter(compton.profile(EDGES, counts, E1, math.radians(88.0), factor="jacobian"))
    assert s == pytest.approx(gaussian_s(1.1), rel=5e-4)


def test_custom_windows_match_closed_form():
    counts = impulse_counts(EDGES, 1.3, math.pi / 2)
    s, _ = compton.s_parameter(compton.profile(EDGES, counts, E1, math.pi / 2), low=0.5, high=3.0)
    assert s == pytest.approx(gaussian_s(1.3, 0.5, 3.0), rel=1e-3)


def test_impulse_profile_of_gaussian_recovers_gaussian_density():
    counts = impulse_counts(EDGES, 1.3, math.pi / 2)
    prof = compton.profile(EDGES, counts, E1, math.pi / 2, pz_range=(-8, 8))
    mid = np.abs(prof.pz) < 4
    # the Gaussian's mass outside +-8 a.u. is negligible, so unit normalisation = the pdf
    assert np.allclose(prof.J[mid], norm.pdf(prof.pz[mid], scale=1.3), rtol=2e-3, atol=1e-4)


def test_profile_is_normalised_to_the_given_integral():
    counts = impulse_counts(EDGES, 1.3, math.pi / 2)
    prof = compton.profile(EDGES, counts, E1, math.pi / 2, normalization=43.6)
    assert np.sum(prof.J * prof.widths) == pytest.approx(43.6, rel=1e-12)


def test_integrate_counts_whole_bins_and_the_overlapping_part_of_cut_bins():
    edges = np.arange(-2.0, 6.0001, 1.0)
    prof = compton.ComptonProfile(edges, np.full(8, 0.7), np.zeros(8))
    # constant J: 0.7 per a.u. over [0.25, 3.5]
    assert prof.integrate(0.25, 3.5) == pytest.approx(0.7 * 3.25, rel=1e-12)


def test_integrate_is_exact_for_a_profile_linear_across_bins():
    edges = np.arange(-2.0, 6.0001, 1.0)
    mids = 0.5 * (edges[1:] + edges[:-1])
    prof = compton.ComptonProfile(edges, 1.0 + 0.5 * mids, np.zeros(8))   # bin averages of 1 + p/2
    # integral of 1 + p/2 over [0.3, 2.7] = 2.4 + (2.7^2 - 0.3^2) / 4 = 4.2
    assert prof.integrate(0.3, 2.7) == pytest.approx(4.2, rel=1e-12)


def test_s_does_not_depend_on_where_bin_edges_fall():
    s_values = []
    for offset in (0.0, 0.03, 0.11, 0.17):
        edges = np.arange(80.0 + offset, 108.0, 0.25)
        counts = impulse_counts(edges, 1.3, math.pi / 2)
        s_values.append(compton.s_parameter(compton.profile(edges, counts, E1, math.pi / 2))[0])
    assert np.ptp(s_values) < 2e-3 * gaussian_s(1.3)


def test_s_error_matches_the_scatter_of_poisson_repeats():
    edges = np.arange(85.0, 103.0, 0.25)
    lam = impulse_counts(edges, 1.3, math.pi / 2, total=20000)
    rng = np.random.default_rng(11)
    s, err = [], []
    for _ in range(400):
        v, e = compton.s_parameter(compton.profile(edges, rng.poisson(lam), E1, math.pi / 2))
        s.append(v)
        err.append(e)
    assert np.std(s) == pytest.approx(np.mean(err), rel=0.1)


def test_array_background_is_subtracted_and_its_variance_counted():
    counts = impulse_counts(EDGES, 1.3, math.pi / 2)
    flat = np.full(counts.size, 50.0)
    prof = compton.profile(EDGES, counts + flat, E1, math.pi / 2, background=flat, background_var=flat)
    s, err = compton.s_parameter(prof)
    s0, err0 = compton.s_parameter(compton.profile(EDGES, counts, E1, math.pi / 2))
    assert s == pytest.approx(s0, rel=1e-12)
    assert err > err0


def test_fitted_background_error_propagates_as_the_derivative_of_s():
    edges = np.arange(85.0, 103.0, 0.25)
    counts = impulse_counts(edges, 1.3, math.pi / 2, total=50000) + 0.25 * 40.0
    center = compton.compton_energy(E1, math.pi / 2)

    def s_with(b0, b0_err):
        bg = SimpleNamespace(b0=b0, b1=0.0, center=center, b0_err=b0_err, b1_err=0.0)
        return compton.s_parameter(compton.profile(edges, counts, E1, math.pi / 2, background=bg))

    _, err_no_bg_error = s_with(40.0, 0.0)
    _, err = s_with(40.0, 3.0)
    h = 0.01
    ds_db0 = (s_with(40.0 + h, 0.0)[0] - s_with(40.0 - h, 0.0)[0]) / (2 * h)
    assert err == pytest.approx(math.hypot(err_no_bg_error, ds_db0 * 3.0), rel=1e-4)


def test_resolution_is_reported_in_atomic_units():
    counts = impulse_counts(EDGES, 1.3, math.pi / 2)
    prof = compton.profile(EDGES, counts, E1, math.pi / 2, resolution_fwhm_kev=0.8)
    assert prof.resolution_fwhm_au == pytest.approx(0.8 / 0.88, rel=0.02)   # 1 a.u. ~ 0.88 keV


def test_symmetrise_averages_mirror_bins():
    prof = compton.ComptonProfile(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), np.array([1.0, 2.0, 4.0, 3.0]),
                                  np.array([0.1, 0.1, 0.1, 0.1]))
    sym = compton.symmetrise(prof)
    assert np.allclose(sym.J, [2.0, 3.0, 3.0, 2.0])
    assert np.allclose(sym.J_err, 0.1 / math.sqrt(2))


def test_difference_of_narrow_minus_wide_profile_is_positive_at_zero_and_integrates_to_zero():
    narrow = compton.profile(EDGES, impulse_counts(EDGES, 1.0, math.pi / 2), E1, math.pi / 2, pz_range=(-8, 8))
    wide = compton.profile(EDGES, impulse_counts(EDGES, 1.5, math.pi / 2), E1, math.pi / 2, pz_range=(-8, 8))
    diff = compton.difference(narrow, wide)
    at_zero = np.argmin(np.abs(diff.pz))
    expected = norm.pdf(0, scale=1.0) - norm.pdf(0, scale=1.5)
    assert diff.J[at_zero] == pytest.approx(expected, rel=0.02)
    assert np.sum(diff.J * diff.widths) == pytest.approx(0.0, abs=1e-9)


def test_difference_errors_add_in_quadrature():
    a = compton.ComptonProfile(np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.5]), np.array([0.03, 0.04]))
    b = compton.ComptonProfile(np.array([0.0, 1.0, 2.0]), np.array([0.6, 0.4]), np.array([0.04, 0.03]))
    d = compton.difference(a, b)
    assert np.allclose(d.J, [-0.1, 0.1])
    assert np.allclose(d.J_err, [0.05, 0.05])


# --------------------------------------------------------------------------- maps

def geometry_cube(sigma=1.3, total=4000.0, shape=(6, 10), seed=None):
    """A cube whose pixels each see the pinhole geometry's own theta (expected counts, or Poisson)."""
    det = hx.DetectorSpec(rows=shape[0], cols=shape[1], pitch_mm=2.0)    # +-10 mm like a HEXITEC
    theta = compton.PinholeGeometry(detector=det).theta_map()
    edges = np.arange(80.0, 110.0001, 0.25)
    counts = np.empty(shape + (edges.size - 1,))
    for r in range(shape[0]):
        for c in range(shape[1]):
            counts[r, c] = impulse_counts(edges, sigma, theta[r, c], total=total)
    if seed is not None:
        counts = np.random.default_rng(seed).poisson(counts).astype(np.uint32)
    return hx.SpectralCube(counts, edges), theta


def test_s_map_with_theta_per_pixel_is_uniform_and_a_single_theta_is_not():
    cube, theta = geometry_cube()
    per_pixel = compton.s_parameter_map(cube, E1, theta, min_counts=0)
    single = compton.s_parameter_map(cube, E1, math.pi / 2, min_counts=0)
    assert np.allclose(per_pixel.s, gaussian_s(1.3), rtol=3e-3)
    assert np.max(np.abs(single.s - gaussian_s(1.3))) > 0.1 * gaussian_s(1.3)


def test_s_map_kernel_matches_the_profile_route_pixel_by_pixel():
    cube, theta = geometry_cube(seed=5)
    peaks_like = SimpleNamespace(
        ok=np.ones(cube.shape, bool), b0=np.full(cube.shape, 3.0), b1=np.full(cube.shape, -0.2),
        center=compton.compton_energy(E1, theta), b0_err=np.full(cube.shape, 0.5), b1_err=np.full(cube.shape, 0.05))
    smap = compton.s_parameter_map(cube, E1, theta, background=peaks_like, min_counts=0)
    for r, c in [(0, 0), (3, 4), (5, 9)]:
        bg = SimpleNamespace(b0=3.0, b1=-0.2, center=peaks_like.center[r, c], b0_err=0.5, b1_err=0.05)
        s, err = compton.s_parameter(compton.profile(cube.edges, cube.counts[r, c], E1, theta[r, c], background=bg))
        assert smap.s[r, c] == pytest.approx(s, rel=1e-10)
        assert smap.s_err[r, c] == pytest.approx(err, rel=1e-8)


def test_region_s_with_one_theta_equals_s_of_the_summed_spectrum():
    cube, _ = geometry_cube(seed=2)
    mask = np.zeros(cube.shape, bool)
    mask[1:4, 2:7] = True
    s, err = compton.s_parameter_region(cube, E1, math.radians(89.0), mask=mask)
    s_sum, err_sum = compton.s_parameter(compton.profile(cube.edges, cube.spectrum(mask), E1, math.radians(89.0)))
    assert s == pytest.approx(s_sum, rel=1e-10)
    assert err == pytest.approx(err_sum, rel=1e-8)


def test_s_map_flags_pixels_below_min_counts():
    cube, theta = geometry_cube(total=4000.0)
    cube.counts[2, 3] = 0
    smap = compton.s_parameter_map(cube, E1, theta, min_counts=100)
    assert not smap.ok[2, 3] and np.isnan(smap.s[2, 3])
    assert smap.ok.sum() == smap.ok.size - 1


def test_attenuation_factor_scales_s_and_its_error():
    cube, theta = geometry_cube(seed=1)
    plain = compton.s_parameter_map(cube, E1, theta)
    corrected = compton.s_parameter_map(cube, E1, theta, attenuation_factor=compton.ATTENUATION_CORRECTION[1])
    assert np.allclose(corrected.s, 1.015 * plain.s)
    assert np.allclose(corrected.s_err, 1.015 * plain.s_err)


def test_block_s_equals_region_s_of_that_block():
    cube, theta = geometry_cube(seed=4)
    blocks = compton.s_parameter_blocks(cube, E1, theta, block=(3, 5), min_counts=0)
    mask = np.zeros(cube.shape, bool)
    mask[3:6, 5:10] = True
    s, err = compton.s_parameter_region(cube, E1, theta, mask=mask)
    assert blocks.s.shape == (2, 2)
    assert blocks.s[1, 1] == pytest.approx(s, rel=1e-12)
    assert blocks.s_err[1, 1] == pytest.approx(err, rel=1e-10)


def test_region_profile_with_theta_per_pixel_recovers_the_gaussian():
    cube, theta = geometry_cube()
    prof = compton.region_profile(cube, E1, theta, pz_edges=np.arange(-6.0, 6.0001, 0.25))
    s, _ = compton.s_parameter(prof)
    assert s == pytest.approx(gaussian_s(1.3), rel=3e-3)


def test_region_profile_kernel_matches_the_numpy_profile_route_for_one_pixel():
    cube, theta = geometry_cube(seed=6)
    peaks_like = SimpleNamespace(
        ok=np.ones(cube.shape, bool), b0=np.full(cube.shape, 2.0), b1=np.full(cube.shape, 0.1),
        center=compton.compton_energy(E1, theta), b0_err=np.full(cube.shape, 0.4), b1_err=np.full(cube.shape, 0.02))
    grid = np.arange(-6.0, 6.0001, 0.3)
    mask = np.zeros(cube.shape, bool)
    mask[4, 7] = True
    kernel = compton.region_profile(cube, E1, theta, mask=mask, pz_edges=grid, background=peaks_like, normalization=None)
    bg = SimpleNamespace(b0=2.0, b1=0.1, center=peaks_like.center[4, 7], b0_err=0.4, b1_err=0.02)
    reference = compton.profile(cube.edges, cube.counts[4, 7], E1, theta[4, 7], background=bg,
                                normalization=None).rebin(grid)
    assert np.allclose(kernel.J, reference.J, rtol=1e-9, atol=1e-12)
    # the kernel's per-bin variance keeps the background errors coherent over the old bins of a new bin
    assert np.allclose(kernel.J_err, reference.J_err, rtol=1e-9)


def test_s_map_rejects_a_theta_map_of_the_wrong_shape():
    cube, _ = geometry_cube()
    with pytest.raises(hx.ConfigError, match="theta"):
        compton.s_parameter_map(cube, E1, np.zeros((3, 3)))
