"""Am-241 calibration end to end: simulated raw frames with known per-pixel truth.

The simulator (hexspec.sim) draws the photons of an Am-241 flood, their absorption,
escape, charge sharing and noise, and converts them to ADU with per-pixel gradients
and intercepts it reports as truth; the calibration must recover them from the frames.
"""

import numpy as np
import pytest

import hexspec as hx
from hexspec.calibration import am241

pytestmark = pytest.mark.slow

SHAPE = (12, 12)


@pytest.fixture(scope="module")
def simulated():
    sim = pytest.importorskip("hexspec.sim")
    det = hx.DetectorSpec(rows=SHAPE[0], cols=SHAPE[1])
    # about 2,000 photopeak counts per pixel in 200,000 frames; 10 % gain spread
    s = sim.HexitecSimulator(sim.Am241Source(), detector=det, photons_per_frame=6.75, noise_fwhm_kev=0.8, seed=0,
                             gradient_spread=0.1)
    spectra = hx.calibration.FrameSpectra(SHAPE)
    for _ in range(40):
        batch, truth = s.frames(5000)
        spectra.add(batch)
    cal = hx.calibration.calibrate_am241(spectra.cube)
    return truth, cal


def test_simulated_photopeak_holds_about_2000_counts(simulated):
    truth, cal = simulated
    assert 1500 < np.nanmedian(cal.photopeak_counts[cal.good]) < 2500


def test_simulated_gradients_recovered_within_half_a_percent(simulated):
    truth, cal = simulated
    g = cal.good
    assert g.sum() >= SHAPE[0] * SHAPE[1] - 8
    assert np.max(np.abs(cal.gradients[g] / truth.gradients[g] - 1)) < 0.005


def test_simulated_intercepts_recovered_within_0p3_kev(simulated):
    truth, cal = simulated
    g = cal.good
    assert np.max(np.abs(cal.intercepts[g] - truth.intercepts[g])) < 0.3


def test_simulated_fwhm_recovered_within_10_percent(simulated):
    truth, cal = simulated
    g = cal.good
    rel = np.abs(cal.fwhm_kev[g] / truth.noise_fwhm_kev[g] - 1)
    # without charge-sharing correction, small charge losses to neighbours widen the
    # photopeak a little beyond the electronic noise, so allow the statistical tail
    assert np.median(rel) < 0.05
    assert np.mean(rel < 0.10) >= 0.95


def test_simulated_dead_pixels_are_flagged_dead(simulated):
    truth, cal = simulated
    assert truth.dead.sum() >= 1
    assert np.all(cal.reasons[truth.dead] & am241.DEAD)


def test_simulated_hot_pixels_are_flagged_hot(simulated):
    truth, cal = simulated
    assert truth.hot.sum() >= 1
    assert np.all(cal.reasons[truth.hot] & am241.HOT)
    assert not np.any(cal.good[truth.hot | truth.dead])


def test_simulated_calibration_turns_frames_into_59_54_kev_photons(simulated):
    truth, cal = simulated
    sim = pytest.importorskip("hexspec.sim")
    det = hx.DetectorSpec(rows=SHAPE[0], cols=SHAPE[1])
    s = sim.HexitecSimulator(sim.Am241Source(), detector=det, photons_per_frame=6.75, noise_fwhm_kev=0.8, seed=0,
                             gradient_spread=0.1)
    batch, _ = s.frames(20000)
    cfg = cal.to_config(hx.ProcessingConfig(threshold=0, next_frame=False, charge_sharing="csd"), threshold=True)
    ev = hx.extract_events(batch, cfg)
    cube = hx.SpectralCube.from_events(ev, hx.EnergyBins(50, 70, 0.1), SHAPE)
    spectrum = cube.spectrum()
    peak_kev = cube.centers[np.argmax(spectrum)]
    assert peak_kev == pytest.approx(59.54, abs=0.1)
