"""Am-241 energy calibration against per-pixel spectra with known gains, offsets and resolution.

The spectra are drawn here, photon by photon, from the Am-241 line list (energies and
intensities of PHYSICS.md 5 and the DDEP evaluation), with a Gaussian resolution of
known FWHM per pixel, a low-energy exponential tail on the photopeak, Cd/Te escape
peaks, a flat continuum and a noise peak at 0 ADU; they are independent of the code
under test.
"""

import numpy as np
import pytest

import hexspec as hx
from hexspec.calibration import am241
from hexspec.calibration.lines import AM241_GAMMA_KEV
from hexspec.errors import CalibrationError

from conftest import shared_file

LINES_KEV = np.array([59.5409, 26.3446, 33.196, 11.87, 13.9, 17.75, 20.8])
INTENSITY = np.array([35.92, 2.31, 0.126, 0.85, 13.2, 19.4, 4.9])
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def synthetic_am241_cube(shape=(12, 12), seed=0, photopeak_counts=2000, fwhm_kev=0.8, tail_fraction=0.15,
                         tail_kev=1.0, gain_spread=0.2, escape=0.08, continuum=0.05, noise_frames=20000,
                         bin_width_adu=4.0, dead=(), hot=(), low=(), low_factor=1 / 40, quadratic_kev_per_adu2=0.0,
                         gradients=None, intercepts=None):
    """ADU cube of an Am-241 flood and its truth (gradients, intercepts, FWHM, noise sigma in ADU).

    Gradients are uniform in 0.025 (1 +- gain_spread) keV/ADU, intercepts in 0..8 keV
    (or the given ``gradients`` and ``intercepts`` maps),
    FWHM in fwhm_kev (1 +- 0.15). ``dead`` pixels read only 0; ``hot`` pixels get 200
    extra counts per bin; ``low`` pixels get ``low_factor`` of the photons.
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    n = rows * cols
    gradient = 0.025 * (1 + gain_spread * rng.uniform(-1, 1, n))
    intercept = rng.uniform(0, 8, n)
    if gradients is not None:
        gradient = np.asarray(gradients, float).reshape(n)
    if intercepts is not None:
        intercept = np.asarray(intercepts, float).reshape(n)
    fwhm = fwhm_kev * (1 + 0.15 * rng.uniform(-1, 1, n))
    sigma_kev = fwhm / FWHM_PER_SIGMA
    photopeak_share = INTENSITY[0] / INTENSITY.sum() * (1 - continuum) * (1 - escape)
    mean_photons = np.full(n, photopeak_counts / photopeak_share)
    mean_photons[list(low)] *= low_factor
    pix = np.repeat(np.arange(n), rng.poisson(mean_photons))
    m = pix.size
    e = LINES_KEV[rng.choice(LINES_KEV.size, m, p=INTENSITY / INTENSITY.sum())]
    is_gamma = e == LINES_KEV[0]
    esc = is_gamma & (rng.random(m) < escape)
    cd = rng.random(m) < 0.5
    e[esc & cd] -= 23.17
    e[esc & ~cd] -= 27.47
    cont = rng.random(m) < continuum
    e[cont] = rng.uniform(3, 59.5, cont.sum())
    tail = is_gamma & ~esc & ~cont & (rng.random(m) < tail_fraction)
    e[tail] -= rng.exponential(tail_kev, tail.sum())
    e += rng.standard_normal(m) * sigma_kev[pix]
    if quadratic_kev_per_adu2:
        # E = q ADU^2 + g ADU + c solved for ADU
        q = quadratic_kev_per_adu2
        adu = (-gradient[pix] + np.sqrt(gradient[pix] ** 2 - 4 * q * (intercept[pix] - e))) / (2 * q)
    else:
        adu = (e - intercept[pix]) / gradient[pix]
    nb = int(np.ceil(1.5 * 66.0 / gradient.min() / bin_width_adu))
    counts = np.zeros((n, nb), np.uint32)
    b = np.floor(adu / bin_width_adu).astype(np.int64)
    ok = (b >= 0) & (b < nb)
    np.add.at(counts, (pix[ok], b[ok]), 1)
    noise_sigma_adu = sigma_kev / gradient
    for p in range(n):   # noise readings of the empty frames, clipped at 0 ADU like an offset-corrected readout
        noise = np.clip(np.round(rng.standard_normal(noise_frames) * noise_sigma_adu[p]), 0, None)
        counts[p] += np.bincount((noise / bin_width_adu).astype(np.int64), minlength=nb)[:nb].astype(np.uint32)
    for p in dead:
        counts[p] = 0
        counts[p, 0] = noise_frames
    for p in hot:
        counts[p] += rng.poisson(200, nb).astype(np.uint32)
    cube = hx.SpectralCube(counts.reshape(rows, cols, nb), bin_width_adu * np.arange(nb + 1.0), unit="ADU")
    truth = dict(gradients=gradient.reshape(shape), intercepts=intercept.reshape(shape), fwhm_kev=fwhm.reshape(shape),
                 noise_sigma_adu=noise_sigma_adu.reshape(shape))
    return cube, truth


DEAD, HOT, LOW = (5,), (17,), (30,)


@pytest.fixture(scope="module")
def calibrated():
    cube, truth = synthetic_am241_cube(dead=DEAD, hot=HOT, low=LOW)
    return cube, truth, hx.calibration.calibrate_am241(cube)


def healthy(cal):
    mask = np.ones(cal.shape, bool)
    for p in DEAD + HOT + LOW:
        mask.flat[p] = False
    return mask


# ------------------------------------------------------------------ accuracy

def test_gradients_recovered_within_half_a_percent(calibrated):
    cube, truth, cal = calibrated
    m = healthy(cal)
    assert np.all(cal.good[m])
    assert np.max(np.abs(cal.gradients[m] / truth["gradients"][m] - 1)) < 0.005


def test_intercepts_recovered_within_0p3_kev(calibrated):
    cube, truth, cal = calibrated
    m = healthy(cal)
    assert np.max(np.abs(cal.intercepts[m] - truth["intercepts"][m])) < 0.3


def test_fwhm_at_59_kev_recovered_within_10_percent(calibrated):
    cube, truth, cal = calibrated
    m = healthy(cal)
    assert np.median(cal.photopeak_counts[m]) == pytest.approx(2000, rel=0.05)   # core + tail
    assert np.max(np.abs(cal.fwhm_kev[m] / truth["fwhm_kev"][m] - 1)) < 0.10


def test_fwhm_uncertainty_matches_the_scatter(calibrated):
    cube, truth, cal = calibrated
    m = healthy(cal)
    pulls = (cal.fwhm_kev[m] - truth["fwhm_kev"][m]) / cal.fwhm_err_kev[m]
    assert 0.6 < np.std(pulls) < 1.6


def test_tail_fraction_of_the_photopeak_is_measured(calibrated):
    cube, truth, cal = calibrated
    assert np.median(cal.tail_fraction[healthy(cal)]) == pytest.approx(0.15, abs=0.03)


def test_every_line_lies_on_the_straight_line(calibrated):
    cube, truth, cal = calibrated
    m = healthy(cal)
    assert np.nanmax(np.abs(cal.residuals_kev[m])) < 0.3
    # all five lines are resolved and used in most pixels
    assert np.all(np.isfinite(cal.centroids_adu[m]).sum(axis=0) >= 0.9 * m.sum())


def test_quadratic_term_is_recovered():
    # 2e-7 keV/ADU^2 bends 59.54 keV by about 1 keV at 2400 ADU
    # 20,000 photopeak counts: the 26.34 keV centroid (about 1,300 counts) then pins the curvature to ~10 %
    cube, truth = synthetic_am241_cube(shape=(4, 4), seed=3, photopeak_counts=20000, quadratic_kev_per_adu2=2e-7)
    cal = hx.calibration.calibrate_am241(cube, quadratic=True)
    assert cal.good.sum() >= 15
    q = cal.quadratic[cal.good]
    assert np.median(q) == pytest.approx(2e-7, rel=0.1)
    assert np.all(np.abs(q / 2e-7 - 1) < 0.4)


# ------------------------------------------------------------------ robustness and flags

def test_dead_pixel_is_flagged_dead(calibrated):
    cube, truth, cal = calibrated
    assert cal.reasons.flat[DEAD[0]] & am241.DEAD
    assert not cal.good.flat[DEAD[0]]
    assert cal.gradients.flat[DEAD[0]] == 0.0


def test_hot_pixel_is_flagged_hot(calibrated):
    cube, truth, cal = calibrated
    assert cal.reasons.flat[HOT[0]] & am241.HOT
    assert not cal.good.flat[HOT[0]]


def test_pixel_with_few_counts_is_flagged_low_counts(calibrated):
    cube, truth, cal = calibrated
    assert cal.photopeak_counts.flat[LOW[0]] < 100
    assert cal.reasons.flat[LOW[0]] & am241.LOW_COUNTS


def test_reason_counts_name_every_rejection(calibrated):
    cube, truth, cal = calibrated
    counts = cal.reason_counts()
    assert counts["dead"] >= 1 and counts["hot"] >= 1 and counts["low_counts"] >= 1
    assert cal.n_good == cal.good.size - 3


def test_finds_photopeak_with_gain_spread_of_20_percent_and_300_counts():
    cube, truth = synthetic_am241_cube(shape=(8, 8), seed=7, photopeak_counts=300, gain_spread=0.2)
    cal = hx.calibration.calibrate_am241(cube)
    assert cal.good.sum() >= 62
    g = cal.good
    assert np.max(np.abs(cal.gradients[g] / truth["gradients"][g] - 1)) < 0.01


def test_low_count_pixels_borrow_the_tail_shape_of_well_exposed_ones():
    # half the pixels see 2,000 photopeak counts, the other half 150
    low = tuple(range(0, 144, 2))
    cube, truth = synthetic_am241_cube(shape=(12, 12), seed=4, noise_frames=500, low=low, low_factor=150 / 2000)
    cal = hx.calibration.calibrate_am241(cube, min_peak_counts=50)
    tied = cal.parameters["tied_tail"]
    assert tied["share"] == pytest.approx(0.15 / 0.85, abs=0.03)          # tail / Gaussian counts
    assert tied["beta_per_sigma"] == pytest.approx(1.0 / (0.8 / FWHM_PER_SIGMA), rel=0.2)   # 1 keV / 0.34 keV
    m = np.zeros(144, bool)
    m[list(low)] = True
    m = m.reshape(12, 12) & cal.good
    assert m.sum() >= 70
    assert np.max(np.abs(cal.gradients[m] / truth["gradients"][m] - 1)) < 0.005
    # 150 counts measure a width to about 1/sqrt(2 x 150) = 6 %
    assert np.median(np.abs(cal.fwhm_kev[m] / truth["fwhm_kev"][m] - 1)) < 0.08


def test_threshold_is_noise_centre_plus_five_noise_sigma(calibrated):
    cube, truth, cal = calibrated
    m = healthy(cal)
    assert np.all(cal.threshold_from_noise_peak[m])
    # the noise is centred at 0 ADU with the pixel's sigma: 5 sigma above it
    expected = 5 * truth["noise_sigma_adu"][m]
    assert np.median(np.abs(cal.threshold_adu[m] / expected - 1)) < 0.05
    assert np.max(np.abs(cal.threshold_adu[m] / expected - 1)) < 0.2


def test_threshold_map_masks_bad_pixels_at_the_adc_limit(calibrated):
    cube, truth, cal = calibrated
    thr = cal.thresholds()
    assert thr.flat[DEAD[0]] == 16383 and thr.flat[HOT[0]] == 16383
    assert np.all(thr[cal.good] < 200)


def test_cube_in_kev_is_refused():
    cube = hx.SpectralCube(np.ones((2, 2, 10), np.uint32), np.arange(11.0), unit="keV")
    with pytest.raises(CalibrationError, match="ADU"):
        hx.calibration.calibrate_am241(cube)


def test_cube_without_any_photopeak_is_refused():
    cube = hx.SpectralCube(np.zeros((3, 3, 100), np.uint32), 4.0 * np.arange(101.0), unit="ADU")
    with pytest.raises(CalibrationError, match="photopeak"):
        hx.calibration.calibrate_am241(cube)


# ------------------------------------------------------------------ the line fit against scipy and lmfit

@pytest.mark.parametrize("beta_adu", [3.0, 14.0, 300.0])
def test_tail_cdf_matches_scipy_exponnorm(beta_adu):
    """The tail is mu + N(0, sigma) - Exp(beta): its mirror image is scipy's exponnorm."""
    from scipy.stats import exponnorm, norm
    mu, sigma = 2400.0, 14.0
    x = np.linspace(mu - 60 * sigma, mu + 40 * sigma, 401)
    expected_tail = exponnorm.sf(-x, beta_adu / sigma, loc=-mu, scale=sigma)
    expected_gauss = norm.cdf(x, mu, sigma)
    got = np.array([am241._shape_cdfs(v, mu, sigma, beta_adu, True) for v in x])
    np.testing.assert_allclose(got[:, 0], expected_gauss, atol=1e-12)
    np.testing.assert_allclose(got[:, 1], expected_tail, atol=1e-9)



def test_photopeak_fit_agrees_with_lmfit():
    """The numba Poisson fit and an lmfit least-squares fit of the same model find the same peak."""
    lmfit = pytest.importorskip("lmfit")
    from scipy.special import erfc
    rng = np.random.default_rng(11)
    mu, sigma, beta = 2400.0, 14.0, 40.0
    n = 20000
    x = mu + sigma * rng.standard_normal(n)
    tail = rng.random(n) < 0.2
    x[tail] -= rng.exponential(beta, tail.sum())
    x = np.concatenate([x, rng.uniform(2200, 2500, 3000)])
    edges = np.arange(2200.0, 2500.0 + 1, 4.0)
    counts, _ = np.histogram(x, edges)
    centers = 0.5 * (edges[1:] + edges[:-1])

    def model(x, a_g, a_t, bl, bh, mu, sigma, beta):
        # densities x bin width (bins are narrow against sigma)
        g = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        t = np.exp((x - mu) / beta + sigma ** 2 / (2 * beta ** 2)) * erfc(((x - mu) / sigma + sigma / beta) / np.sqrt(2)) / (2 * beta)
        frac = (x - 2200.0) / 300.0
        return 4.0 * (a_g * g + a_t * t + bl * (1 - frac) + bh * frac)

    m = lmfit.Model(model)
    params = m.make_params(a_g=15000, a_t=4000, bl=10, bh=10, mu=2395, sigma=12, beta=30)
    res = m.fit(counts, params, x=centers, weights=1 / np.sqrt(np.maximum(counts, 1)))

    p = np.array([15000, 4000, 10, 10, 2395, 12, 30.0])
    lo = np.array([0, 0, 0, 0, 2200, 1, 3.0])
    hi = np.array([1e6, 1e6, 1e6, 1e6, 2500, 100, 500.0])
    err = np.empty(7)
    ok, _ = am241.fit_line_window(edges, counts.astype(float), p, lo, hi, np.ones(7, bool), True, 100, err)
    assert ok
    assert p[4] == pytest.approx(res.params["mu"].value, abs=0.5 * res.params["mu"].stderr)
    assert p[5] == pytest.approx(res.params["sigma"].value, rel=0.02)
    assert err[4] == pytest.approx(res.params["mu"].stderr, rel=0.2)
    # and both find the truth
    assert p[4] == pytest.approx(mu, abs=4 * err[4])
    assert p[5] == pytest.approx(sigma, abs=4 * err[5])


# ------------------------------------------------------------------ plumbing

def test_calibration_plugs_into_processing_config(calibrated):
    cube, truth, cal = calibrated
    cfg = hx.ProcessingConfig(gradients=cal.gradients, intercepts=cal.intercepts, threshold=10,
                              next_frame=False, charge_sharing="none")
    p = np.flatnonzero(cal.good.ravel())[0]
    r, c = divmod(p, cal.shape[1])
    frame = np.zeros(cal.shape, np.uint16)
    true_adu = (AM241_GAMMA_KEV - truth["intercepts"][r, c]) / truth["gradients"][r, c]
    frame[r, c] = int(round(true_adu))
    ev = hx.extract_events(frame, cfg)
    assert len(ev) == 1
    assert ev.energy[0] == pytest.approx(AM241_GAMMA_KEV, abs=0.1)


def test_calibrated_spectrum_peaks_at_59_54_kev(calibrated):
    cube, truth, cal = calibrated
    edges, counts = hx.calibration.calibrated_spectrum(cube, cal)
    hi = edges[:-1] > 40
    peak = edges[:-1][hi][np.argmax(counts[hi])] + 0.05
    assert peak == pytest.approx(AM241_GAMMA_KEV, abs=0.1)


def test_text_maps_round_trip(calibrated, tmp_path):
    cube, truth, cal = calibrated
    hx.calibration.write_map(tmp_path / "g.txt", cal.gradients)
    hx.calibration.write_map(tmp_path / "c.txt", cal.intercepts, layout="column")
    np.testing.assert_allclose(hx.calibration.read_map(tmp_path / "g.txt", cal.shape), cal.gradients, rtol=1e-8)
    np.testing.assert_allclose(hx.calibration.read_map(tmp_path / "c.txt", cal.shape), cal.intercepts, rtol=1e-8, atol=1e-12)


def test_real_160x480_maps_load_into_a_processing_config():
    g = hx.calibration.read_map(shared_file("hexitec_2x6_gradients.txt"), (160, 480))
    c = hx.calibration.read_map(shared_file("hexitec_2x6_intercepts.txt"), (160, 480))
    t = hx.calibration.read_map(shared_file("hexitec_2x6_thresholds.txt"), (160, 480))
    # values read independently, one per line
    raw = np.array(shared_file("hexitec_2x6_gradients.txt").read_text().split(), float)
    assert raw.size == 76800 and g[1, 2] == raw[482] and g[159, 479] == raw[-1]
    assert np.count_nonzero(g == 0) == np.count_nonzero(raw == 0)
    cfg = hx.ProcessingConfig(gradients=g, intercepts=c, threshold=t)
    thr, grad, icpt = cfg.pixel_maps((160, 480))
    assert grad.shape == (76800,) and thr.min() == 80
    assert 0.02 < np.median(g[g > 0]) < 0.03


def test_recovers_the_real_2x6_maps_from_spectra_drawn_with_them():
    """A 10 x 12 patch of the real system's gradients and intercepts as the truth."""
    g = hx.calibration.read_map(shared_file("hexitec_2x6_gradients.txt"), (160, 480))
    c = hx.calibration.read_map(shared_file("hexitec_2x6_intercepts.txt"), (160, 480))
    rows, cols = np.nonzero(g > 0)
    r0, c0 = rows[len(rows) // 2], cols[len(cols) // 2]
    patch_g, patch_c = g[r0:r0 + 10, c0:c0 + 12], c[r0:r0 + 10, c0:c0 + 12]
    assert np.all(patch_g > 0)
    cube, truth = synthetic_am241_cube(shape=(10, 12), seed=9, noise_frames=2000, gradients=patch_g, intercepts=patch_c)
    cal = hx.calibration.calibrate_am241(cube)
    assert cal.good.all()
    assert np.max(np.abs(cal.gradients / patch_g - 1)) < 0.005
    assert np.max(np.abs(cal.intercepts - patch_c)) < 0.3


def test_real_maps_refuse_the_wrong_shape():
    with pytest.raises(hx.FormatError, match="160 x 160"):
        hx.calibration.read_map(shared_file("hexitec_2x6_gradients.txt"), (160, 160))


def test_cube_from_frames_counts_every_pixel_value():
    frames = np.zeros((3, 2, 2), np.uint16)
    frames[:, 0, 1] = [5, 9, 400]
    cube = hx.calibration.cube_from_frames(frames, bin_width_adu=4.0, max_adu=512)
    assert cube.unit == "ADU" and cube.counts.shape == (2, 2, 128)
    assert cube.counts[0, 1, 1] == 1 and cube.counts[0, 1, 2] == 1 and cube.counts[0, 1, 100] == 1
    assert cube.counts[0, 0, 0] == 3 and cube.counts.sum() == 12


def test_cube_from_events_in_adu():
    ev = hx.EventList([0, 0, 1], [0, 1, 1], [1, 0, 0], [10.0, 2000.0, 2001.0])
    cube = hx.calibration.cube_from_events(ev, (2, 2), bin_width_adu=4.0, max_adu=4096)
    assert cube.counts[0, 1, 2] == 1 and cube.counts[1, 0, 500] == 2


def test_lithium_calibration_is_loaded_lazily_or_reported_missing():
    import hexspec.calibration as cal
    try:
        cls = cal.LithiumCalibration
    except AttributeError as exc:
        assert "lithium" in str(exc)
    else:
        assert cls.__name__ == "LithiumCalibration" and cls.__module__ == "hexspec.calibration.lithium"
