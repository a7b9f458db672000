"""`hexspec fit` on a real hexspec HDF5 cube file."""

import math

import numpy as np

import hexspec as hx
from hexspec.cli import main
from hexspec.io import hdf5

EDGES = np.arange(0.0, 200.0001, 0.25)


def peak_cube(shape=(4, 5), center=93.9, fwhm=2.2, area=30000.0, b0=100.0, seed=0):
    x = 0.5 * (EDGES[1:] + EDGES[:-1])
    g = math.sqrt(4 * math.log(2) / math.pi) / fwhm * np.exp(-4 * math.log(2) * (x - center) ** 2 / fwhm ** 2)
    lam = 0.25 * (area * g + b0)
    counts = np.random.default_rng(seed).poisson(np.broadcast_to(lam, shape + lam.shape)).astype(np.uint32)
    return hx.SpectralCube(counts, EDGES)


def test_fit_command_writes_peak_maps_and_a_png(tmp_path, capsys):
    cube = peak_cube()
    cube.counts[0, 0] = 0                    # an empty pixel must come back flagged
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    rc = main(["fit", str(tmp_path / "cube.h5"), "--window", "86", "102", "-o", str(tmp_path / "fits.h5")])
    assert rc == 0
    arrays, attrs = hdf5.read_results(tmp_path / "fits.h5", "peak_fit")
    ok = arrays["ok"].astype(bool)
    assert not ok[0, 0] and ok.sum() == ok.size - 1
    assert np.all(np.abs(arrays["center"][ok] - 93.9) < 4 * arrays["center_err"][ok])
    assert np.all(np.abs(arrays["fwhm"][ok] - 2.2) < 4 * arrays["fwhm_err"][ok])
    assert list(attrs["window_kev"]) == [86.0, 102.0]
    assert (tmp_path / "fits.png").stat().st_size > 1000
    assert "19 of 20 pixels fitted ok" in capsys.readouterr().out


def test_fit_command_reports_a_missing_file_without_traceback(tmp_path, capsys):
    rc = main(["fit", str(tmp_path / "nope.h5"), "--window", "86", "102", "-o", str(tmp_path / "f.h5")])
    assert rc == 1
    assert "no such file" in capsys.readouterr().err


def test_fit_command_rejects_a_reversed_window(tmp_path, capsys):
    hdf5.write_cube(tmp_path / "cube.h5", peak_cube(shape=(1, 1)))
    rc = main(["fit", str(tmp_path / "cube.h5"), "--window", "102", "86", "-o", str(tmp_path / "f.h5")])
    assert rc == 1
    assert "EMIN < EMAX" in capsys.readouterr().err
