"""`hexspec sparam`: S maps (and Li maps) from a cube file."""

import math

import numpy as np
import pytest
from scipy.special import erf
from scipy.stats import norm

import hexspec as hx
from hexspec.calibration.lithium import LithiumCalibration
from hexspec.cli import main
from hexspec.io import hdf5

E1, MC2 = 115.0, 510.99895
EDGES = np.arange(0.0, 200.0001, 0.25)


def gaussian_profile_cube(sigma=1.3, theta=math.pi / 2, shape=(3, 4), total=2e5, seed=1):
    """Counts per bin of a Gaussian J through the impulse cross-section of eq. (3), sub-sampled per bin."""
    sub = np.linspace(0, 1, 33)[None, :]
    e2 = EDGES[:-1, None] + 0.25 * sub
    c = math.cos(theta)
    qc = np.sqrt(E1 ** 2 + e2 ** 2 - 2 * E1 * e2 * c)
    pz = 137.035999 * (e2 - E1 + E1 * e2 * (1 - c) / MC2) / qc
    dens = (e2 / E1) * (MC2 / qc) * norm.pdf(pz, scale=sigma)
    lam = total * np.trapezoid(dens, e2, axis=1)
    counts = np.random.default_rng(seed).poisson(np.broadcast_to(lam, shape + lam.shape)).astype(np.uint32)
    return hx.SpectralCube(counts, EDGES)


def gaussian_s(sigma):
    a = erf(1 / (sigma * math.sqrt(2)))
    return a / (erf(5 / (sigma * math.sqrt(2))) - a)


def test_sparam_with_one_angle_recovers_the_closed_form_s(tmp_path):
    hdf5.write_cube(tmp_path / "cube.h5", gaussian_profile_cube())
    rc = main(["sparam", str(tmp_path / "cube.h5"), "--theta", "90", "--no-background", "-o", str(tmp_path / "s.h5"), "-q"])
    assert rc == 0
    arrays, attrs = hdf5.read_results(tmp_path / "s.h5", "s_parameter")
    assert arrays["ok"].all()
    pull = (arrays["s"] - gaussian_s(1.3)) / arrays["s_err"]
    assert np.all(np.abs(pull) < 4)
    assert attrs["low_au"] == 1.0 and attrs["high_au"] == 5.0
    assert (tmp_path / "s.png").exists() and (tmp_path / "s_profile.png").exists()


def test_sparam_converts_s_to_li_with_a_calibration(tmp_path):
    hdf5.write_cube(tmp_path / "cube.h5", gaussian_profile_cube())
    cal = LithiumCalibration.fit([1.2, 1.3], [0.2, 0.9], s_err=[0.001, 0.001])
    cal.save(tmp_path / "cal.json")
    rc = main(["sparam", str(tmp_path / "cube.h5"), "--theta", "90", "--no-background", "--lithium-cal",
               str(tmp_path / "cal.json"), "-o", str(tmp_path / "s.h5"), "-q"])
    assert rc == 0
    s, _ = hdf5.read_results(tmp_path / "s.h5", "s_parameter")
    li, _ = hdf5.read_results(tmp_path / "s.h5", "lithium")
    assert np.allclose(li["li"], 7.0 * s["s"] - 8.2)           # the line through (1.2, 0.2) and (1.3, 0.9)
    assert np.all(li["li_err"] > 7.0 * s["s_err"])             # map error plus calibration error


def test_sparam_of_blocks_recovers_the_closed_form_s_with_smaller_errors(tmp_path):
    hdf5.write_cube(tmp_path / "cube.h5", gaussian_profile_cube(shape=(4, 6), total=5e4))
    assert main(["sparam", str(tmp_path / "cube.h5"), "--theta", "90", "--no-background", "--block", "2", "3",
                 "-o", str(tmp_path / "s.h5"), "-q"]) == 0
    arrays, attrs = hdf5.read_results(tmp_path / "s.h5", "s_parameter")
    assert arrays["s"].shape == (2, 2) and arrays["ok"].all() and list(attrs["block"]) == [2, 3]
    assert np.all(np.abs(arrays["s"] - gaussian_s(1.3)) < 4 * arrays["s_err"])
    assert main(["sparam", str(tmp_path / "cube.h5"), "--theta", "90", "--no-background",
                 "-o", str(tmp_path / "p.h5"), "-q"]) == 0
    single, _ = hdf5.read_results(tmp_path / "p.h5", "s_parameter")
    # six pixels per block: the error shrinks by about sqrt(6)
    assert np.median(arrays["s_err"]) == pytest.approx(np.median(single["s_err"]) / np.sqrt(6), rel=0.15)


def test_sparam_theta_from_fits_needs_fits(tmp_path, capsys):
    hdf5.write_cube(tmp_path / "cube.h5", gaussian_profile_cube(shape=(1, 1)))
    rc = main(["sparam", str(tmp_path / "cube.h5"), "--theta-from-fits", "-o", str(tmp_path / "s.h5")])
    assert rc == 1
    assert "--theta-from-fits needs peak fits" in capsys.readouterr().err


def test_sparam_uses_fitted_background_from_a_fit_file(tmp_path):
    cube = gaussian_profile_cube()
    cube.counts += np.uint32(30)                              # flat background, 120 counts per keV
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    assert main(["fit", str(tmp_path / "cube.h5"), "--window", "86", "102", "-o", str(tmp_path / "fits.h5"), "-q"]) == 0
    rc = main(["sparam", str(tmp_path / "cube.h5"), "--theta", "90", "--fits", str(tmp_path / "fits.h5"),
               "--background", "peak-fit", "-o", str(tmp_path / "s.h5"), "-q"])
    assert rc == 0
    arrays, attrs = hdf5.read_results(tmp_path / "s.h5", "s_parameter")
    fits, _ = hdf5.read_results(tmp_path / "fits.h5", "peak_fit")
    assert attrs["background"] == "fitted linear background"
    assert np.all(np.abs(fits["b0"] - 120.0) < 4 * fits["b0_err"])
    # with the background removed, S is the Gaussian profile's own (closed form), not diluted by it
    assert arrays["ok"].all()
    assert np.all(np.abs(arrays["s"] - gaussian_s(1.3)) < 4 * arrays["s_err"])


def test_sparam_leaves_out_pixels_whose_background_fit_failed(tmp_path):
    cube = gaussian_profile_cube()
    cube.counts += np.uint32(30)
    cube.counts[0, 0] = 0                                    # nothing to fit in one pixel
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    rc = main(["sparam", str(tmp_path / "cube.h5"), "--theta", "90", "--fit-window", "86", "102",
               "--background", "peak-fit", "-o", str(tmp_path / "s.h5"), "-q"])
    assert rc == 0
    arrays, _ = hdf5.read_results(tmp_path / "s.h5", "s_parameter")
    assert not arrays["ok"][0, 0] and np.isnan(arrays["s"][0, 0])
    assert arrays["ok"].sum() == cube.counts.shape[0] * cube.counts.shape[1] - 1
