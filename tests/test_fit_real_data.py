"""Peak fits on real detector frames: the injected test pulses of a 2x2-module HEXITEC (ADU)."""

import numpy as np
import pytest

import hexspec as hx
from hexspec import fit

from conftest import shared_file


@pytest.fixture(scope="module")
def pulse_spectrum():
    path = shared_file("hexitec_2x2_raw_30frames.h5")
    frames = hx.io.read_odin(path)["raw_frames"]
    edges = np.arange(3600.0, 5200.001, 20.0)
    counts, _ = np.histogram(frames, bins=edges)
    values = frames[(frames > 3700) & (frames < 5100)].astype(np.float64)
    return edges, counts, values


def test_batched_fit_agrees_with_lmfit_on_the_real_test_pulse_peak(pulse_spectrum):
    edges, counts, _ = pulse_spectrum
    single = fit.fit_peak(edges, counts, window=(3700, 5100))
    cube = fit.fit_cube(hx.SpectralCube(counts[None, None, :], edges, unit="ADU"), (3700, 5100))
    assert single.ok and cube.ok[0, 0]
    for name in ("center", "fwhm", "area"):
        assert abs(getattr(cube, name)[0, 0] - getattr(single, name)) < 0.1 * getattr(single, name + "_err")


def test_fitted_test_pulse_centre_lies_at_the_median_pulse_height(pulse_spectrum):
    edges, counts, values = pulse_spectrum
    f = fit.fit_peak(edges, counts, window=(3700, 5100))
    # the pulses (about 8000 values near 4365 ADU) are the only thing in this window
    assert abs(f.center - np.median(values)) < 0.1 * f.fwhm
    assert f.area == pytest.approx(values.size, rel=0.05)
