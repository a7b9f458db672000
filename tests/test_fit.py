"""Peak fits (PHYSICS.md section 4): shapes, lmfit single fits, batched cube fits.

Spectra are drawn by an independent generator: expected counts per bin = bin width *
(A [eta L + (1-eta) G] + b0 + b1 (E - c)) at the bin centre, with L and G written out
below from their textbook definitions, then Poisson noise.
"""

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import voigt_profile

import hexspec as hx
from hexspec import fit

EDGES = np.arange(80.0, 110.0001, 0.2)
X = 0.5 * (EDGES[1:] + EDGES[:-1])
BW = np.diff(EDGES)
WINDOW = (84.0, 104.0)
TRUE = dict(center=93.9, fwhm=2.0, area=20000.0, eta=0.4, b0=200.0, b1=-3.0)


def expected_counts(center, fwhm, area, eta, b0, b1, x=X, bw=BW):
    gauss = math.sqrt(4 * math.log(2) / math.pi) / fwhm * np.exp(-4 * math.log(2) * (x - center) ** 2 / fwhm ** 2)
    lorentz = (1 / math.pi) * (fwhm / 2) / ((x - center) ** 2 + (fwhm / 2) ** 2)
    return bw * (area * (eta * lorentz + (1 - eta) * gauss) + b0 + b1 * (x - center))


def poisson_cube(n_pix, seed, **params):
    p = {**TRUE, **params}
    lam = expected_counts(**p)
    counts = np.random.default_rng(seed).poisson(np.broadcast_to(lam, (n_pix, 1, lam.size))).astype(np.uint32)
    return hx.SpectralCube(counts, EDGES)


def test_shapes_have_unit_area_and_the_given_fwhm():
    for shape in (fit.gaussian_shape, fit.lorentzian_shape):
        area = quad(lambda e: shape(e, 93.9, 1.7), -np.inf, 93.9)[0] + quad(lambda e: shape(e, 93.9, 1.7), 93.9, np.inf)[0]
        assert area == pytest.approx(1.0, rel=1e-8)
        peak = shape(93.9, 93.9, 1.7)
        assert shape(93.9 + 0.85, 93.9, 1.7) == pytest.approx(peak / 2, rel=1e-12)
        assert shape(93.9 - 0.85, 93.9, 1.7) == pytest.approx(peak / 2, rel=1e-12)


def test_pseudo_voigt_adds_the_linear_background_around_the_centre():
    e = np.array([90.0, 93.9, 97.0])
    assert np.allclose(fit.pseudo_voigt(e, 93.9, 2.0, 0.0, 0.3, 5.0, 0.5), 5.0 + 0.5 * (e - 93.9))


def test_fit_peak_recovers_the_generating_parameters_within_errors():
    cube = poisson_cube(1, seed=1)
    f = fit.fit_peak(X, cube.counts[0, 0], window=WINDOW)
    assert f.ok
    for name in ("center", "fwhm", "area", "eta"):
        assert abs(getattr(f, name) - TRUE[name]) < 4 * getattr(f, name + "_err"), name
    assert 0.7 < f.redchi < 1.4
    assert f.result.params["center"].value == f.center    # the lmfit result stays available


def test_fit_peak_accepts_bin_edges():
    counts = poisson_cube(1, seed=2).counts[0, 0]
    a = fit.fit_peak(EDGES, counts, window=WINDOW)
    b = fit.fit_peak(X, counts, window=WINDOW)
    assert a.center == pytest.approx(b.center, rel=1e-9)


def test_fit_cube_pull_distributions_have_unit_width():
    peaks = fit.fit_cube(poisson_cube(400, seed=3), WINDOW, eta="free")
    assert peaks.ok.all()
    for name in ("center", "fwhm", "area", "eta"):
        pull = (getattr(peaks, name) - TRUE[name]) / getattr(peaks, name + "_err")
        assert abs(pull.mean()) < 0.2, name
        assert 0.85 < pull.std() < 1.15, name


def test_fit_cube_agrees_with_lmfit_pixel_by_pixel_within_a_tenth_of_a_standard_error():
    cube = poisson_cube(12, seed=4)
    peaks = fit.fit_cube(cube, WINDOW, eta="free")
    for k in range(12):
        f = fit.fit_peak(X, cube.counts[k, 0], window=WINDOW)
        for name in ("center", "fwhm", "area"):
            assert abs(getattr(peaks, name)[k, 0] - getattr(f, name)) < 0.1 * getattr(f, name + "_err"), (k, name)


def test_fit_cube_uncertainties_agree_with_lmfit():
    cube = poisson_cube(4, seed=5)
    peaks = fit.fit_cube(cube, WINDOW, eta="free")
    for k in range(4):
        f = fit.fit_peak(X, cube.counts[k, 0], window=WINDOW)
        for name in ("center_err", "fwhm_err", "area_err", "eta_err"):
            assert getattr(peaks, name)[k, 0] == pytest.approx(getattr(f, name), rel=0.01), (k, name)


def test_maximum_likelihood_removes_the_low_count_bias_of_weighted_least_squares():
    low = dict(area=400.0, b0=5.0, b1=0.0)
    cube = poisson_cube(400, seed=6, **low)
    ls = fit.fit_cube(cube, WINDOW, min_counts=0)
    ml = fit.fit_cube(cube, WINDOW, method="ml", min_counts=0)
    good = ls.ok & ml.ok
    assert good.sum() > 350
    ml_area_bias = np.mean(ml.area[good] - 400.0) / np.mean(ml.area_err[good])
    ls_area_bias = np.mean(ls.area[good] - 400.0) / np.mean(ls.area_err[good])
    assert abs(ml_area_bias) < 0.15
    assert ls_area_bias < -0.3          # Neyman weights 1/max(y,1) pull low-count fits down


def test_maximum_likelihood_cube_fit_agrees_with_lmfit():
    cube = poisson_cube(5, seed=7, area=600.0, b0=5.0, b1=0.0)
    peaks = fit.fit_cube(cube, WINDOW, method="ml", min_counts=0, eta="free")
    for k in range(5):
        f = fit.fit_peak(X, cube.counts[k, 0], window=WINDOW, method="ml")
        for name in ("center", "fwhm", "area"):
            assert abs(getattr(peaks, name)[k, 0] - getattr(f, name)) < 0.1 * getattr(f, name + "_err"), (k, name)


def test_fit_cube_flags_pixels_with_too_few_counts_and_leaves_them_empty():
    cube = poisson_cube(3, seed=8)
    cube.counts[1] = 0
    cube.counts[1, 0, 100] = 3
    peaks = fit.fit_cube(cube, WINDOW, min_counts=50)
    assert not peaks.ok[1, 0] and peaks.status[1, 0] == 2 and np.isnan(peaks.center[1, 0])
    assert peaks.ok[0, 0] and peaks.ok[2, 0]


def test_fit_cube_flags_a_pixel_without_a_peak():
    flat = np.random.default_rng(9).poisson(np.full((1, 1, X.size), 40.0)).astype(np.uint32)
    peaks = fit.fit_cube(hx.SpectralCube(flat, EDGES), WINDOW)
    assert not peaks.ok[0, 0]


def test_gaussian_model_fixes_the_lorentz_fraction_at_zero():
    cube = poisson_cube(1, seed=10, eta=0.0)
    f = fit.fit_peak(X, cube.counts[0, 0], window=WINDOW, model="gaussian")
    peaks = fit.fit_cube(cube, WINDOW, model="gaussian")
    assert f.eta == 0.0 and np.isnan(f.eta_err)
    assert peaks.eta[0, 0] == 0.0
    assert abs(f.fwhm - 2.0) < 4 * f.fwhm_err


def test_voigt_fit_recovers_the_fwhm_of_voigt_data():
    sigma, gamma = 0.6, 0.4
    lam = BW * (20000.0 * voigt_profile(X - 93.9, sigma, gamma) + 200.0)
    counts = np.random.default_rng(11).poisson(lam)
    f = fit.fit_peak(X, counts, window=WINDOW, model="voigt")
    # Olivero-Longbothum FWHM of the generating Voigt, worked out here
    f_g, f_l = 2 * sigma * math.sqrt(2 * math.log(2)), 2 * gamma
    true_fwhm = 0.5346 * f_l + math.sqrt(0.2166 * f_l ** 2 + f_g ** 2)
    assert abs(f.fwhm - true_fwhm) < 4 * f.fwhm_err


def test_background_counts_of_peak_maps_reproduce_the_fitted_line():
    peaks = fit.fit_cube(poisson_cube(2, seed=12), WINDOW)
    bg = peaks.background_counts(EDGES)
    expected = BW * (peaks.b0[0, 0] + peaks.b1[0, 0] * (X - peaks.center[0, 0]))
    assert np.allclose(bg[0, 0], expected)


def test_peak_maps_round_trip_through_a_dict():
    peaks = fit.fit_cube(poisson_cube(2, seed=13), WINDOW)
    again = fit.PeakMaps.from_dict(peaks.to_dict(), {"window_kev": list(WINDOW)})
    assert np.array_equal(again.center, peaks.center) and np.array_equal(again.ok, peaks.ok)


def test_fit_peak_rejects_an_unknown_model_and_a_too_narrow_window():
    counts = poisson_cube(1, seed=14).counts[0, 0]
    with pytest.raises(hx.ConfigError, match="model"):
        fit.fit_peak(X, counts, window=WINDOW, model="sinc")
    with pytest.raises(hx.ConfigError, match="bins"):
        fit.fit_peak(X, counts, window=(93.0, 93.5))
