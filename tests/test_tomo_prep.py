"""Projection pre-processing: flat/dark, -log, zingers, stripes, rotation centre, 360->180, Paganin."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hexspec.errors import CalibrationError, ConfigError
from hexspec.tomo import prep

N = 127                                  # odd: skimage's axis (N // 2) is the slice centre


@pytest.fixture(scope="module")
def phantom_sino():
    """Shepp-Logan phantom (N x N) and its skimage radon sinogram (angles, N), axis at column N // 2."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import radon, resize
    image = resize(shepp_logan_phantom(), (N, N), order=1, anti_aliasing=False)
    theta_deg = np.arange(180) * 1.0
    return image, radon(image, theta_deg, circle=True).T.astype(np.float32), np.deg2rad(theta_deg)


def test_normalize_matches_hand_values_and_sets_dead_pixels_to_one():
    proj = np.array([[[60.0, 10.0, 5.0]]])           # (1 angle, 1 row, 3 cols)
    flat = np.array([[[110.0, 10.0, 30.0]]] * 3)
    dark = np.array([[[10.0, 10.0, 0.0]]] * 3)
    out = prep.normalize(proj, flat, dark)
    np.testing.assert_allclose(out[0, 0], [0.5, 1.0, 5.0 / 30.0], rtol=1e-6)   # col 1: flat == dark -> dead


def test_normalize_takes_the_median_of_flat_frames_so_one_zinger_frame_does_not_matter():
    proj = np.full((1, 1, 2), 50.0)
    flat = np.array([[[100.0, 100.0]], [[100.0, 5000.0]], [[100.0, 100.0]]])
    np.testing.assert_allclose(prep.normalize(proj, flat)[0, 0], [0.5, 0.5])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_minus_log_never_returns_nan_or_inf(values):
    out = prep.minus_log(values)
    assert np.all(np.isfinite(out))
    assert out.max() <= -np.log(prep.MIN_TRANSMISSION) + 1e-4


def test_minus_log_is_exact_for_ordinary_transmissions():
    t = np.array([1.0, 0.5, np.exp(-3.0)])
    np.testing.assert_allclose(prep.minus_log(t), [0.0, np.log(2.0), 3.0], rtol=1e-6)


def test_zinger_is_replaced_by_its_neighbourhood():
    rng = np.random.default_rng(3)
    img = 100 + rng.normal(0, 1, (1, 40, 40)).astype(np.float32)
    img[0, 20, 20] = 400.0
    out = prep.remove_zingers(img, threshold=0.1)
    assert abs(out[0, 20, 20] - 100) < 5
    untouched = np.ones((40, 40), bool)
    untouched[18:23, 18:23] = False
    np.testing.assert_array_equal(out[0][untouched], img[0][untouched])


def test_numba_sorting_stripe_removal_equals_algotoms():
    from algotom.prep.removal import remove_stripe_based_sorting
    rng = np.random.default_rng(4)
    # distinct values: with ties, the two sorts may order equal values differently
    sino = (rng.permutation(90 * 70).reshape(90, 70) / 100.0).astype(np.float32)
    np.testing.assert_allclose(prep.remove_stripes(sino, "sorting"), remove_stripe_based_sorting(sino, 21),
                               rtol=0, atol=1e-6)


STRIPES = {20: 0.5, 45: -0.3, 80: 0.4, 81: 0.4, 100: 0.6}


def _striped(sino):
    stripe = np.zeros(sino.shape[1], np.float32)
    for c, v in STRIPES.items():
        stripe[c] = v
    return sino + stripe[None, :]


def test_masked_stripe_removal_cuts_stripes_at_least_threefold_and_leaves_clean_data_alone(phantom_sino):
    _, sino, _ = phantom_sino
    np.testing.assert_array_equal(prep.remove_stripes(sino, "masked"), sino)
    out = prep.remove_stripes(_striped(sino), "masked")
    residual = (out - sino).mean(axis=0)
    for c, v in STRIPES.items():
        assert abs(residual[c]) < abs(v) / 3, (c, residual[c])
    ratios = [abs(residual[c] / v) for c, v in STRIPES.items()]
    assert np.mean(ratios) < 0.15          # on average more than sixfold


@pytest.mark.parametrize("method", ["sorting", "filtering", "all"])
def test_algotom_methods_by_name_cut_a_stripe_in_a_noisy_sinogram(method):
    from scipy import ndimage as ndi
    rng = np.random.default_rng(5)
    base = ndi.gaussian_filter(rng.random((180, 128)), (4, 8)).astype(np.float32) * 10 + 1
    noisy = base + rng.normal(0, 0.01, base.shape).astype(np.float32)
    striped = noisy.copy()
    striped[:, 60] += 0.2
    out = prep.remove_stripes(striped, method)
    assert abs((out - noisy)[:, 60].mean()) < 0.2 / 3


def test_unknown_stripe_method_is_refused_by_name():
    with pytest.raises(ConfigError, match="sorting"):
        prep.remove_stripes(np.ones((4, 4)), "wavelets")


def _shifted(sino, shift):
    """The sinogram on a detector 120 px wider, the axis at column N // 2 + 60 + shift."""
    out = np.zeros((sino.shape[0], sino.shape[1] + 120), np.float32)
    out[:, 60 + shift:60 + shift + sino.shape[1]] = sino
    return out, N // 2 + 60 + shift


@pytest.mark.parametrize("shift", [0, 60, -60])
def test_centre_is_found_to_half_a_pixel_even_60_px_off_the_middle(phantom_sino, shift):
    _, sino, theta = phantom_sino
    wide, true = _shifted(sino, shift)
    result = prep.find_center(wide, theta)
    assert abs(result.center_px - true) <= 0.5
    assert 0.3 < result.confidence <= 1


def test_centre_between_pixels_is_found_to_half_a_pixel(phantom_sino):
    from scipy import ndimage as ndi
    _, sino, theta = phantom_sino
    wide, true = _shifted(sino, 40)
    wide = ndi.shift(wide, (0, 0.5), order=3, mode="constant")
    assert abs(prep.find_center(wide, theta).center_px - (true + 0.5)) <= 0.5


def test_algotoms_default_window_misses_a_centre_60_px_off(phantom_sino):
    # why the whole-range search: algotom's find_center_vo looks within width/16 of the middle
    from algotom.prep.calculation import find_center_vo
    _, sino, theta = phantom_sino
    wide, true = _shifted(sino, 60)
    assert abs(find_center_vo(wide) - true) > 5


def test_centre_outside_the_range_searched_is_refused_with_a_message(phantom_sino):
    _, sino, theta = phantom_sino
    wide, true = _shifted(sino, 60)
    with pytest.raises(CalibrationError, match="--center"):
        prep.find_center(wide, theta, start=20, stop=true - 40)


def test_noise_gives_a_low_centre_confidence(phantom_sino):
    _, sino, theta = phantom_sino
    noise = np.random.default_rng(6).random(sino.shape).astype(np.float32)
    clean = prep.find_center(sino, theta).confidence
    assert prep.find_center(noise, theta).confidence < clean / 2


def test_360_offset_axis_scan_converts_to_a_180_scan_that_reconstructs(phantom_sino):
    from skimage.transform import radon
    from hexspec.tomo import rec
    image, _, _ = phantom_sino
    theta_deg = np.arange(360) * 1.0
    full = radon(image, theta_deg, circle=True).T.astype(np.float32)          # axis at N // 2
    # offset axis: the detector sees the axis and 20 columns left of it plus everything right of it
    half = full[:, N // 2 - 20:]
    sino180, center = prep.convert_360_to_180(half, 20.0)
    assert sino180.shape[0] == 181
    recon = rec.reconstruct(sino180[:180], np.deg2rad(np.arange(180) * 1.0), center=center,
                            ring_removal=False, take_log=False)[0]
    n = recon.shape[0]
    c = int(round(center))
    lo = (n - 1) // 2 - N // 2
    crop = recon[lo:lo + N, lo:lo + N] if c == (n - 1) // 2 else None
    assert crop is not None and crop.shape == image.shape
    inside = np.hypot(*(np.mgrid[:N, :N] - N // 2)) < 0.9 * N / 2
    err = np.sqrt(np.mean((crop - image)[inside] ** 2))
    # the same phantom seen whole over 180 degrees, reconstructed directly, sets the scale
    direct = rec.reconstruct(full[:180], np.deg2rad(theta_deg[:180]), center=N // 2, ring_removal=False,
                             take_log=False)[0]
    err_direct = np.sqrt(np.mean((direct - image)[inside] ** 2))
    assert err < 1.3 * err_direct, (err, err_direct)


def test_paganin_damps_a_spatial_frequency_as_its_formula_says():
    pixel_mm, z_mm, e_kev, db = 0.001, 100.0, 20.0, 500.0
    n = 64
    period_px = 8
    x = np.arange(n)
    img = 0.8 + 0.1 * np.cos(2 * np.pi * x / period_px)[None, :] * np.ones((n, 1))
    out = prep.paganin_filter(img, pixel_mm, z_mm, e_kev, db, pad=0)
    lam_mm = 12.398419843320026e-7 / e_kev
    q = 1.0 / (period_px * pixel_mm)                           # cycles per mm
    expected = 0.1 / (1 + np.pi * lam_mm * z_mm * db * q ** 2)
    amplitude = (out[n // 2].max() - out[n // 2].min()) / 2
    np.testing.assert_allclose(amplitude, expected, rtol=1e-3)
    np.testing.assert_allclose(out.mean(), 0.8, rtol=1e-5)    # zero frequency passes unchanged
