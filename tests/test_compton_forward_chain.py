"""The forward model with the detector response, on spectra that went through the whole chain.

Truth comes from the simulator: raw frames of an Am-241 flood calibrate a small simulated
detector; raw frames of a cathode of known Li content go through event extraction with
charge-sharing discrimination (the calibration's gains, its bad pixels switched off) into
a keV cube, as `hexspec calibrate` and `hexspec process --calibration` do. The response
parts are checked against closed forms.
"""

import dataclasses
import math

import numpy as np
import pytest
from scipy.special import erfc, erfcx, ndtr

import hexspec as hx
from hexspec import compton, compton_forward
from hexspec.detector_response import DetectorResponse, full_neighbourhood, previous_hit_probability

# the size of benchmarks/bench_pulls.py; on a 20 x 40 detector the forward model comes out
# about 0.3 low (not understood yet), on 40 x 80 within its errors
DET = hx.DetectorSpec(rows=40, cols=80)
DETECTOR_SEED = 7


def emg_tail_cdf(x, sigma, beta):
    """CDF of N(0, sigma) minus Exp(beta), closed form (as in calibration/am241/lineshape.py)."""
    a = x / beta + 0.5 * (sigma / beta) ** 2
    z = (sigma / beta + x / sigma) / math.sqrt(2.0)
    with np.errstate(over="ignore"):
        tail = np.where(z < 0, np.exp(np.minimum(a, 700)) * erfc(z), np.exp(a - z * z) * erfcx(np.maximum(z, 0)))
    return ndtr(x / sigma) + 0.5 * tail


def test_without_threshold_the_line_shape_is_the_calibrations_exponential_tail():
    # numerical convolution of the loss distribution against the closed-form CDF of the Am-241 fit
    r = DetectorResponse(fwhm_kev=0.8, tail_fraction=0.3, tail_length_kev=1.7)
    d, cdf = r.line_cdf()
    s = 0.8 / (2 * math.sqrt(2 * math.log(2)))
    want = 0.7 * ndtr(d / s) + 0.3 * emg_tail_cdf(d, s, 1.7)
    assert np.max(np.abs(cdf - want)) < 2e-3
    assert abs(cdf[-1] - 1.0) < 1e-3


def test_sharing_survival_matches_the_edge_strip_formula_below_the_k_edges():
    # at 20 keV no Cd/Te K fluorescence: an event survives when no neighbour gets T / E of the
    # cloud, i.e. the cloud centre stays sigma z(T/E) from each edge: (1 - 2 sigma z)^2 of the pixel
    r = DetectorResponse(fwhm_kev=0.01, threshold_kev=2.0, cloud_fwhm_um=40.0)
    loss, dens, kept = r.sharing(20.0)
    sigma_px = 40.0e-3 / (2 * math.sqrt(2 * math.log(2))) / 0.25
    z = 1.2815515655446004                                      # Phi^-1(1 - 2/20)
    assert abs(kept - (1 - 2 * sigma_px * z) ** 2) < 0.01, kept
    assert abs(np.sum(dens) * (loss[1] - loss[0]) - kept) < 1e-9
    # losses to one neighbour stay under T; only corners (two or three neighbours) reach beyond
    beyond = np.sum(dens[loss > 2.05]) * (loss[1] - loss[0]) / kept
    assert 0 < beyond < 0.05


def test_full_neighbourhood_drops_the_border_and_the_neighbours_of_bad_pixels():
    good = np.ones((6, 7), bool)
    good[3, 3] = False
    inner = full_neighbourhood(good)
    assert not inner[0].any() and not inner[:, -1].any()
    assert not inner[2:5, 2:5].any()
    assert inner[1, 1] and inner[4, 5]
    assert inner.sum() == 4 * 5 - 9


@pytest.fixture(scope="module")
def calibration():
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), detector=DET, photons_per_frame=32, seed=99,
                                  detector_seed=DETECTOR_SEED)
    spectra = hx.calibration.FrameSpectra(DET.shape)
    # 200,000 frames (about 2,000 photons per pixel), as bench_pulls: with 80,000 some pixels
    # kept gains 0.5-3.5 keV off at 100 keV, which the forward model rightly reads as a wider line
    for _ in range(20):
        batch, _ = sim.frames(10_000)
        spectra.add(batch)
    return hx.calibration.calibrate_am241(spectra.cube)


def chain_cube(cal, li, photons, seed, det=DET, stats=None):
    geom = compton.PinholeGeometry(detector=det)
    sim = hx.sim.HexitecSimulator(hx.sim.ComptonSource(li_content=li, geometry=geom), detector=det,
                                  photons_per_frame=0.01 * det.n_pixels, seed=seed, detector_seed=DETECTOR_SEED)
    cfg = hx.ProcessingConfig(threshold=np.where(cal.good, 0.0, 16383.0), gradients=cal.gradients,
                              intercepts=cal.intercepts, charge_sharing="csd", bins=hx.EnergyBins(0.0, 200.0, 0.25))
    extractor, acc = hx.EventExtractor(cfg, shape=det.shape), hx.SpectrumAccumulator(cfg, det.shape)
    frames = int(photons / (0.01 * det.n_pixels))
    for start in range(0, frames, 20_000):
        acc.add(extractor(sim.frames(min(20_000, frames - start))[0]))
    if stats is not None:
        stats.update(extractor.stats)
    return acc.cube, geom.theta_map()


@pytest.mark.slow
def test_forward_model_through_the_chain_recovers_the_li_content_api_and_cli(calibration, tmp_path, capsys):
    from hexspec.cli import main
    from hexspec.io import hdf5

    cal = calibration
    cube, theta = chain_cube(cal, 0.65, 2_000_000, seed=5)
    response = DetectorResponse.from_calibration(cal)
    assert 4.0 < response.threshold_kev < 5.2                   # simulator intercept 4.5 keV + half an ADU
    inner = full_neighbourhood(cal.good)
    fwd = compton_forward.fit_li_blocks(cube, 115.0, theta, block=(40, 80), mask=inner, response=response)
    assert fwd.ok.all()
    assert abs(fwd.li[0, 0] - 0.65) < 3 * fwd.li_err[0, 0], (fwd.li, fwd.li_err)
    assert 0.03 < fwd.li_err[0, 0] < 0.1
    assert fwd.deviance_per_dof[0, 0] < 2.5
    # the Gaussian line shape alone is far off on the same spectrum (what the response fixes)
    gauss = compton_forward.fit_li_blocks(cube, 115.0, theta, block=(40, 80), mask=inner,
                                          resolution_fwhm_kev=response.fwhm_kev)
    assert abs(gauss.li[0, 0] - 0.65) > 10 * gauss.li_err[0, 0]

    # the command line: a calibration file as `hexspec calibrate` writes it, the cube as `process` does
    hdf5.write_results(tmp_path / "cal.h5", "calibration", cal.arrays(), cal.attrs())
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    assert main(["sparam", str(tmp_path / "cube.h5"), "--block", "40", "80", "--forward-model",
                 "--calibration", str(tmp_path / "cal.h5"), "-o", str(tmp_path / "s.h5")]) == 0
    res, attrs = hdf5.read_results(tmp_path / "s.h5", "lithium_forward")
    assert attrs["line_shape"].startswith("Am-241 calibration")
    np.testing.assert_allclose(res["li"], fwd.li, atol=1e-6)
    np.testing.assert_allclose(res["li_err"], fwd.li_err, rtol=1e-6)
    assert "forward model: 1-x for 1 of 1 blocks (median error" in capsys.readouterr().out


@pytest.mark.slow
def test_pulls_of_the_forward_model_through_the_chain(calibration):
    # 8 seeds x 4 blocks of 20 x 40 pixels: 32 pulls; their mean has a standard error of
    # 0.18 and their width of 0.13 when the errors are right (the Gaussian line shape
    # gives pulls of -10 to -40)
    # The response as the measurement needs it: the detector's next-frame spill (1%, the
    # simulator's default) and the occupancy of the frame before, from the extractor's counts.
    cal = calibration
    response = DetectorResponse.from_calibration(cal, spill_probability=0.01)
    inner = full_neighbourhood(cal.good)
    pulls = []
    for seed in range(8):
        li = 0.2 + 0.6 * seed / 7
        stats = {}
        cube, theta = chain_cube(cal, li, 1_000_000, seed=100 + seed, stats=stats)
        p_prev = round(previous_hit_probability(stats, int(cal.good.sum())), 4)
        fwd = compton_forward.fit_li_blocks(cube, 115.0, theta, block=(20, 40), mask=inner,
                                            response=dataclasses.replace(response, previous_hit_probability=p_prev))
        assert fwd.ok.all()
        pulls.extend(((fwd.li - li) / fwd.li_err).ravel())
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.6, pulls
    assert 0.65 < pulls.std(ddof=1) < 1.45, pulls


def test_spill_matrix_spreads_a_line_uniformly_in_the_kept_fraction():
    # a line of N counts at 100 keV, spill probability p: p N / 100 counts per keV below it
    # (the kept fraction is uniform), (1 - p) N plus half a bin's share in its own bin
    r = DetectorResponse(spill_probability=0.02)
    lo = np.arange(0.0, 120.0, 0.5)
    hi = lo + 0.5
    c = np.zeros(lo.size)
    c[200] = 1000.0                                           # bin 100.0-100.5 keV
    new = r.spill_matrix(lo, hi) @ c
    centre = 100.25
    np.testing.assert_allclose(new[:200], 0.02 * 1000.0 / centre * 0.5, rtol=1e-12)
    assert new[200] == pytest.approx(0.98 * 1000.0 + 0.02 * 1000.0 * 0.25 / centre)
    assert np.all(new[201:] == 0)
    assert new.sum() == pytest.approx(1000.0 * (1 - 0.02 + 0.02 * 100.25 / centre), rel=1e-12)


def test_previous_hit_probability_is_hits_per_live_pixel_and_frame():
    from hexspec.detector_response import previous_hit_probability
    assert previous_hit_probability({"hits": 600, "frames": 100, "next_frame_removed": 9}, 400) == pytest.approx(0.015)
    with pytest.raises(hx.errors.ConfigError, match="frames and hits"):
        previous_hit_probability({"hits": 0, "frames": 0}, 400)


class _MonoSource:
    """Photons of one energy on every pixel (a mono-energetic line for the line shape)."""

    def __init__(self, energy_kev):
        self.energy_kev = energy_kev

    def sample_pixels(self, pixel, rng):
        return np.full(pixel.size, self.energy_kev)


@pytest.mark.slow
def test_line_through_the_chain_keeps_shared_events_whose_neighbour_the_next_frame_correction_dropped(calibration):
    # The next-frame correction drops a hit whose pixel was hit in the frame before, and it
    # runs before charge-sharing discrimination: a neighbour that took 14-20 keV of a 100 keV
    # photon then goes unseen and the event is counted with that loss. Charge sharing alone
    # cannot lose that much (corners lose up to about 3 T = 14 keV, with rejection beyond T
    # per neighbour; escape peaks start at 23 keV), so without this term the response
    # predicted ~30 times too few counts there.
    from hexspec.detector_response import previous_hit_probability
    cal = calibration
    sim = hx.sim.HexitecSimulator(_MonoSource(100.0), detector=DET, photons_per_frame=0.01 * DET.n_pixels, seed=21,
                                  detector_seed=DETECTOR_SEED, next_frame_probability=0.0)
    cfg = hx.ProcessingConfig(threshold=np.where(cal.good, 0.0, 16383.0), gradients=cal.gradients,
                              intercepts=cal.intercepts, charge_sharing="csd", bins=hx.EnergyBins(0.0, 200.0, 0.25))
    extractor, acc = hx.EventExtractor(cfg, shape=DET.shape), hx.SpectrumAccumulator(cfg, DET.shape)
    for _ in range(3):
        acc.add(extractor(sim.frames(10_000)[0]))
    y = acc.cube.counts[full_neighbourhood(cal.good)].sum(axis=0).astype(np.float64)
    lo, hi = acc.cube.edges[:-1], acc.cube.edges[1:]
    p_prev = previous_hit_probability(extractor.stats, int(cal.good.sum()))
    assert 0.008 < p_prev < 0.02                                 # 1 % occupancy, clusters of ~2.5 hits
    band = (lo >= 80.0) & (hi <= 86.0)                            # losses 14-20 keV
    peak = (lo >= 97.0) & (hi <= 103.0)
    for p, lo_ratio, hi_ratio in ((p_prev, 0.85, 1.15), (0.0, 0.0, 0.2)):
        mu = DetectorResponse.from_calibration(cal, previous_hit_probability=p).matrix(
            np.array([100.0, 100.02]), lo, hi)[0]
        ratio = (y[band].sum() / y[peak].sum()) / (mu[band].sum() / mu[peak].sum())
        # the data side: about 250 counts in the band
        assert lo_ratio < 1.0 / ratio < hi_ratio, (p, ratio, y[band].sum())


def test_photopeak_fit_ratio_is_one_for_a_pure_gaussian_and_above_one_with_sharing():
    # no charge cloud: the raw photopeak is the noise Gaussian, which the calibration's fit
    # recovers exactly from noiseless counts; with the 32 um cloud the edge-strip losses
    # widen the fitted core
    from hexspec.detector_noise import photopeak_fit_ratio
    point = DetectorResponse(fwhm_kev=0.8, threshold_kev=4.6, cloud_fwhm_um=0.0)
    assert photopeak_fit_ratio(point, 0.8 / 2.3548, 0.027, None) == pytest.approx(1.0, abs=2e-4)
    cloud = DetectorResponse(fwhm_kev=0.8, threshold_kev=4.6)
    assert 1.01 < photopeak_fit_ratio(cloud, 0.8 / 2.3548, 0.027, None) < 1.05


@pytest.mark.slow
def test_response_noise_and_scale_errors_match_the_simulated_detector(calibration):
    # truth from the simulator: its noise FWHMs and gains. The calibration's photopeak FWHM
    # runs about 2 % above the noise (charge sharing in the raw photopeak, less the low-count
    # bias of the fit); the response's noise is within 0.5 % in rms. The energy-scale errors
    # of the calibration at 94 keV (extrapolated from lines below 60 keV) have pulls of
    # width about 1 over the variance the response takes from the line fits' covariance.
    from hexspec.detector_noise import scale_variance_coefficients
    cal = calibration
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), detector=DET, photons_per_frame=32, seed=99,
                                  detector_seed=DETECTOR_SEED)
    good = cal.good
    true_rms = np.sqrt(np.mean(sim.noise_fwhm_kev[good] ** 2))
    cal_rms = np.sqrt(np.mean(cal.fwhm_kev[good] ** 2))
    r = DetectorResponse.from_calibration(cal)
    model_rms = np.sqrt(np.mean(np.square(r.fwhm_samples_kev)))
    assert cal_rms / true_rms > 1.01                            # what the response used before
    assert model_rms / true_rms == pytest.approx(1.0, abs=0.005), (model_rms, true_rms)

    coef = scale_variance_coefficients(lambda k: getattr(cal, k, None), good)
    g, c = cal.gradients[good], cal.intercepts[good]
    # the calibration's errors, to the 0.05 % its weights differ by (they take the previous pass's gradient)
    np.testing.assert_allclose(coef[:, 2] * g ** 2, cal.gradient_err[good] ** 2, rtol=2e-3)     # slope variance
    np.testing.assert_allclose(coef @ np.array([1.0, 0, 0]) + coef[:, 1] * c + coef[:, 2] * c * c,
                               cal.intercept_err[good] ** 2, rtol=2e-3)                        # at 0 ADU
    e = 94.0
    err = (e - sim.intercepts[good]) / sim.gradients[good] * g + c - e
    pulls = err / np.sqrt(coef @ np.array([1.0, e, e * e]))
    assert 0.85 < np.std(pulls) < 1.15, np.std(pulls)
    # their mean is about +0.17 (a common offset of about 0.014 keV at 94 keV, not in the response)
    assert abs(np.mean(pulls)) < 0.3


def test_sharing_loss_density_keeps_its_mean_on_any_grid_step():
    # the Monte Carlo's losses go onto a grid; flooring them to the point below lost half a
    # step per event (0.025 keV of mean loss at a 0.05 keV step: a shift of the whole line)
    r = DetectorResponse(fwhm_kev=0.8, threshold_kev=4.6)
    means = []
    for step in (0.05, 0.01, 0.001):
        loss, dens, kept = r.sharing(100.0, step)
        means.append(np.sum(dens * step * loss) / kept)
    assert means[0] == pytest.approx(means[2], abs=2e-4) and means[1] == pytest.approx(means[2], abs=2e-4), means
