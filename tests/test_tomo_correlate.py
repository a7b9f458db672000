"""Depth regions, area averaging and the pixel correlation of Li content with porosity."""

import numpy as np
import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("skimage")

from hexspec.errors import ConfigError
from hexspec.tomo.correlate import (area_sum, correlate, depth_regions, porosity_maps, region_bounds,
                                    weighted_linear_fit)


def test_depth_regions_split_the_electrode_thickness_into_equal_parts():
    mask = np.zeros((20, 4, 4), bool)
    mask[2:17] = True          # 15 slices of electrode
    labels, bounds = depth_regions(mask, 3)
    assert bounds == [(2, 7), (7, 12), (12, 17)]
    assert [(labels == k).sum() for k in (1, 2, 3)] == [80, 80, 80]
    assert labels[:2].max() == 0 and labels[17:].max() == 0


def test_area_sum_handles_fractional_pixels_by_overlap():
    img = np.arange(16, dtype=float).reshape(4, 4)
    # 1 mm pixels into 1.5 mm pixels: the first coarse pixel holds all of (0,0), half of
    # (0,1) and (1,0), a quarter of (1,1)
    out = area_sum(img, 1.0, 1.5)
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(0 + 0.5 * 1 + 0.5 * 4 + 0.25 * 5)
    assert area_sum(np.ones((9, 9)), 0.1, 0.3).ravel() == pytest.approx(np.full(9, 9.0))


def test_porosity_maps_average_pores_over_each_coarse_column_and_turn_the_image():
    vol = np.zeros((6, 6, 6), bool)
    vol[:, :3, :3] = True       # pores fill the top-left 3x3 columns
    elec = np.ones_like(vol)
    por, frac, _ = porosity_maps(vol, elec, voxel_size_mm=0.1, n_regions=2, pixel_mm=0.3, inverted=False)
    assert por.shape == (2, 2, 2)
    assert por[0] == pytest.approx(np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert frac == pytest.approx(np.ones((2, 2, 2)))
    turned, _, _ = porosity_maps(vol, elec, voxel_size_mm=0.1, n_regions=2, pixel_mm=0.3, inverted=True)
    assert turned[0] == pytest.approx(np.array([[0.0, 0.0], [0.0, 1.0]]))


def test_weighted_fit_matches_numpy_polyfit_with_weights():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 50)
    err = rng.uniform(0.05, 0.2, 50)
    y = 0.3 - 0.8 * x + rng.normal(0, err)
    fit = weighted_linear_fit(x, y, err)
    slope, intercept = np.polyfit(x, y, 1, w=1 / err)
    assert (fit.slope, fit.intercept) == pytest.approx((slope, intercept), rel=1e-9)
    # band at x = 0 is the intercept's error
    assert fit.band(0.0) == pytest.approx(fit.intercept_err)


def test_too_few_points_for_a_line_is_one_clear_error():
    with pytest.raises(ConfigError, match="at least 3 points"):
        weighted_linear_fit([0.1, 0.2], [1, 2], [0.1, 0.1])
    with pytest.raises(ConfigError, match="fewer than the 3 regions"):
        region_bounds(np.ones((2, 3, 3), bool), 3)


def test_correlation_recovers_a_known_linear_relation_of_li_with_porosity():
    """Li = 0.9 - 1.2 porosity per pixel, measured with noise, against an XCT volume of vertical
    pore channels (an exact number of pore voxels under each pixel), seen through an inverted,
    shifted pinhole image: the fitted slope agrees with the truth within its error."""
    rng = np.random.default_rng(7)
    n, sub, depth = 40, 8, 12                       # 40x40 Compton pixels of 8x8 voxels, 12 slices
    yy, xx = np.mgrid[0:n, 0:n] / n
    field = 0.1 + 0.25 * (0.5 + 0.5 * np.sin(5 * xx + 2 * yy) * np.cos(3 * yy))
    n_pore = np.round(field * sub * sub).astype(int)
    field = n_pore / (sub * sub)                    # the porosity each pixel really has
    columns = np.zeros((n * sub, n * sub), bool)
    for (r, c), m in np.ndenumerate(n_pore):
        cell = np.zeros(sub * sub, bool)
        cell[rng.permutation(sub * sub)[:m]] = True
        columns[r * sub:(r + 1) * sub, c * sub:(c + 1) * sub] = cell.reshape(sub, sub)
    pores = np.broadcast_to(columns, (depth,) + columns.shape)
    electrode = np.ones_like(pores)
    shape = (48, 48)
    shift = (2, -3)
    # pinhole image: turned by 180 degrees, centred on the detector, then shifted by whole pixels
    image_por = np.full(shape, np.nan)
    image_por[4:44, 4:44] = field[::-1, ::-1]
    image_por = np.roll(image_por, shift, axis=(0, 1))
    inside = np.isfinite(image_por)
    compton = rng.poisson(np.where(inside, 3000 * (1 - image_por), 50.0)).astype(float)
    slope_true, intercept_true, li_sigma = -1.2, 0.9, 0.04
    li = np.where(inside, intercept_true + slope_true * image_por + rng.normal(0, li_sigma, shape), np.nan)
    li_err = np.full(shape, li_sigma)
    s = np.where(inside, 1.0, np.nan)
    result = correlate(pores, electrode, 0.2667 / sub, compton, s, np.full(shape, 0.01), li, li_err,
                       n_regions=3, pixel_mm=0.2667, transform="translation", tortuosity=False)
    fit = result.fit
    assert fit.n == 3 * 1600
    assert fit.slope_err < 0.05
    assert abs(fit.slope - slope_true) < 3 * fit.slope_err
    assert abs(fit.intercept - intercept_true) < 3 * fit.intercept_err
    assert fit.chi2 / fit.dof == pytest.approx(1.0, abs=0.1)
    for row in result.regions:
        assert row.registration.shift_px == pytest.approx(shift, abs=0.2)
        assert row.porosity == pytest.approx(field.mean(), abs=1e-12)
        assert row.li == pytest.approx(intercept_true + slope_true * field.mean(), abs=4 * row.li_err)
