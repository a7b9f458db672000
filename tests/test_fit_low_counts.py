"""Peak fits at low counts: the Lorentz fraction tied to the summed spectrum, and named status codes."""

import numpy as np

import hexspec as hx
from hexspec import fit
from test_fit import EDGES, TRUE, WINDOW, X, poisson_cube

LOW = dict(area=120.0, b0=1.5, b1=0.0)


def test_eta_the_data_cannot_fix_is_tied_to_the_summed_spectrum_instead_of_a_bound():
    cube = poisson_cube(300, seed=21, **LOW)
    free = fit.fit_cube(cube, WINDOW, method="ml", eta="free")
    tied = fit.fit_cube(cube, WINDOW, method="ml")                 # eta="auto"
    at_bound = (free.eta[free.ok] <= 1e-9) | (free.eta[free.ok] >= 1 - 1e-9)
    assert at_bound.mean() > 0.12                                  # free eta piles up on 0 and 1
    # the tied value is lmfit's fit of the summed spectrum (an independent fitter, eta free)
    summed = fit.fit_peak(X, cube.counts.sum(axis=(0, 1)), window=WINDOW, method="ml")
    assert abs(tied.eta_tied - summed.eta) < 0.2 * summed.eta_err + 1e-3
    assert abs(tied.eta_tied - TRUE["eta"]) < 4 * summed.eta_err
    assert np.all(tied.eta[tied.ok] == tied.eta_tied)
    # with eta held at the right value the width is no longer dragged around by it
    for maps in (free, tied):
        assert maps.ok.mean() > 0.8
    pull = (tied.fwhm[tied.ok] - TRUE["fwhm"]) / tied.fwhm_err[tied.ok]
    pull_free = (free.fwhm[free.ok] - TRUE["fwhm"]) / free.fwhm_err[free.ok]
    assert abs(np.median(pull)) < 0.3 and 0.7 < np.std(pull) < 1.3
    assert np.std(pull) < np.std(pull_free)


def test_every_failed_fit_says_why():
    cube = poisson_cube(4, seed=22)
    counts = cube.counts.copy()
    counts[1, 0] = 0                                               # nothing in the window
    counts[2, 0] = np.random.default_rng(3).poisson(30.0, counts.shape[2])   # flat: no peak
    peaks = fit.fit_cube(hx.SpectralCube(counts, EDGES), WINDOW)
    assert peaks.ok[0, 0] and peaks.status[0, 0] == 0
    assert peaks.status[1, 0] == 2 and "too few counts" in fit.FIT_STATUS[2]
    assert not peaks.ok[2, 0] and peaks.status[2, 0] in (3, 4, 5)
    assert set(np.unique(peaks.status)) <= set(fit.FIT_STATUS)
    assert np.array_equal(peaks.ok, peaks.status == 0)


def test_fit_cli_without_any_fit_exits_non_zero_with_advice_and_writes_nothing(tmp_path, capsys):
    from hexspec.cli import main
    from hexspec.io import hdf5

    hdf5.write_cube(tmp_path / "cube.h5", poisson_cube(6, seed=23, area=20.0, b0=0.2, b1=0.0))
    rc = main(["fit", str(tmp_path / "cube.h5"), "--window", "84", "104", "-o", str(tmp_path / "f.h5")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no pixel fitted ok" in err and "(status 2)" in err and "counts per pixel" in err and "--block" in err
    assert not (tmp_path / "f.h5").exists() and not (tmp_path / "f.png").exists()


def test_fit_cli_blocks_fit_the_summed_spectra(tmp_path, capsys):
    from hexspec.cli import main
    from hexspec.io import hdf5

    cube = poisson_cube(6, seed=24, area=150.0, b0=2.0, b1=0.0)
    cube = hx.SpectralCube(cube.counts.reshape(2, 3, -1), EDGES)
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    assert main(["fit", str(tmp_path / "cube.h5"), "--window", "84", "104", "--block", "2", "3", "--eta", "free",
                 "-o", str(tmp_path / "f.h5")]) == 0
    arrays, attrs = hdf5.read_results(tmp_path / "f.h5", "peak_fit")
    assert arrays["center"].shape == (1, 1) and list(attrs["block"]) == [2, 3]
    one = fit.fit_peak(X, cube.counts.sum(axis=(0, 1)), window=WINDOW)      # lmfit, the summed spectrum
    assert abs(arrays["center"][0, 0] - one.center) < 0.05 * one.center_err
    assert "counts per pixel in the window" in capsys.readouterr().out
