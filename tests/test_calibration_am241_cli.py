"""`hexspec calibrate am241`: inputs of every kind, outputs (HDF5, text maps, PNG, summary line)."""

import h5py
import numpy as np
import pytest

import hexspec as hx
from hexspec.cli import main
from hexspec.io.hdf5 import read_calibration

from conftest import shared_file
from test_calibration_am241 import synthetic_am241_cube


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_am241_cube(shape=(6, 6), seed=5, dead=(3,))


def run_cli(*argv):
    return main(["calibrate", "am241", *map(str, argv), "--quiet"])


def test_cli_from_adu_cube_writes_hdf5_text_maps_and_png(synthetic, tmp_path, capsys):
    cube, truth = synthetic
    src = tmp_path / "am241_cube.h5"
    cube.save(src)
    out = tmp_path / "calib.h5"
    assert run_cli(src, "-o", out) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("FWHM at 59.54 keV: ") and line.endswith("over 35 good pixels")
    cal = read_calibration(out)
    good = cal["good"].astype(bool)
    assert good.sum() == 35 and not good.flat[3]
    np.testing.assert_allclose(cal["gradients"][good], truth["gradients"][good], rtol=0.005)
    # the HEXITEC text maps hold the same numbers
    g_txt = hx.calibration.read_map(tmp_path / "calib_gradients.txt", (6, 6))
    c_txt = hx.calibration.read_map(tmp_path / "calib_intercepts.txt", (6, 6))
    t_txt = hx.calibration.read_map(tmp_path / "calib_thresholds.txt", (6, 6))
    np.testing.assert_allclose(g_txt, cal["gradients"], rtol=1e-8)
    np.testing.assert_allclose(c_txt, cal["intercepts"], rtol=1e-8, atol=1e-12)
    assert t_txt.flat[3] == 16383
    assert (tmp_path / "calib.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_output_plugs_into_processing_options(synthetic, tmp_path):
    cube, truth = synthetic
    src = tmp_path / "cube.h5"
    cube.save(src)
    out = tmp_path / "calib.h5"
    assert run_cli(src, "-o", out, "--no-png") == 0
    from hexspec.commands.common import config_from_args

    class Args:
        calibration = str(out)
        config = None
    cfg = config_from_args(Args(), shape=(6, 6))
    assert cfg.calibrated and cfg.gradients.shape == (6, 6)
    with h5py.File(out, "r") as f:
        res = f["entry/results/calibration"]
        assert res.attrs["method"] == "am241"
        assert "reason_bits" in res.attrs and res["reasons"].shape == (6, 6)
        assert f["entry"].attrs["program"] == "hexspec"


def am241_frames(n_frames=60000, gradient=0.025, intercept=4.0, seed=0):
    """2 x 2 frames in which 10 % of readings are Am-241 photons (Gaussian 0.8 keV FWHM), the rest 0."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n_frames, 2, 2), np.uint16)
    lines = np.array([59.5409, 26.3446, 13.9, 17.75, 20.8])
    weights = np.array([0.45, 0.04, 0.17, 0.26, 0.08])
    hit = rng.random(frames.shape) < 0.1
    e = lines[rng.choice(5, hit.sum(), p=weights)] + rng.normal(0, 0.34, hit.sum())
    frames[hit] = np.round((e - intercept) / gradient).astype(np.uint16)
    return frames


@pytest.mark.parametrize("charge_sharing", ["none", "csd"])
def test_cli_from_odin_frames(tmp_path, charge_sharing):
    """Raw frames in the odin-data layout, histogrammed directly or through event extraction."""
    src = tmp_path / "odin.h5"
    with h5py.File(src, "w") as f:
        f["raw_frames"] = am241_frames()
    out = tmp_path / "c.h5"
    assert run_cli(src, "-o", out, "--no-png", "--charge-sharing", charge_sharing) == 0
    cal = read_calibration(out)
    np.testing.assert_allclose(cal["gradients"], 0.025, rtol=0.005)
    np.testing.assert_allclose(cal["intercepts"], 4.0, atol=0.3)


def test_cli_from_events_in_adu(tmp_path):
    frames = am241_frames(seed=1)
    n, r, c = np.nonzero(frames)
    path = tmp_path / "events.h5"
    from hexspec.io.hdf5 import HexspecWriter
    with HexspecWriter(path, (2, 2), config=hx.ProcessingConfig(), events=True, spectra=False) as w:
        w.write_events(hx.EventList(n, r, c, frames[n, r, c].astype(np.float32)))
    out = tmp_path / "c.h5"
    assert run_cli(path, "-o", out, "--no-png") == 0
    cal = read_calibration(out)
    np.testing.assert_allclose(cal["gradients"], 0.025, rtol=0.005)


@pytest.mark.slow
def test_cli_on_real_160x160_frames_without_am241_reports_no_good_pixel(tmp_path, capsys):
    """Real odin-data frames (test pulses, no Am-241): the command reads them, writes its files, and says it failed."""
    src = shared_file("hexitec_2x2_raw_30frames.h5")
    out = tmp_path / "real.h5"
    assert run_cli(src, "-o", out, "--no-png") == 1
    assert "no pixel" in capsys.readouterr().err
    assert hx.calibration.read_map(tmp_path / "real_gradients.txt", (160, 160)).shape == (160, 160)


def test_cli_refuses_events_already_in_kev(tmp_path, capsys):
    path = tmp_path / "kev.h5"
    cfg = hx.ProcessingConfig(gradients=0.025, intercepts=4.0)
    from hexspec.io.hdf5 import HexspecWriter
    with HexspecWriter(path, (2, 2), config=cfg, events=True, spectra=False) as w:
        w.write_events(hx.EventList([0], [0], [0], [59.5]))
    assert run_cli(path, "-o", tmp_path / "c.h5") == 1
    assert "ADU" in capsys.readouterr().err


def test_cli_from_simulated_hexspec_frames(tmp_path):
    """Frames of the simulator in the hexspec layout; the simulator's true maps are the reference."""
    sim = pytest.importorskip("hexspec.sim")
    from hexspec.io.hdf5 import HexspecWriter
    det = hx.DetectorSpec(rows=4, cols=4)
    s = sim.HexitecSimulator(sim.Am241Source(), detector=det, photons_per_frame=1.0, seed=3,
                             dead_pixels=0, hot_pixels=0)
    path = tmp_path / "frames.h5"
    with HexspecWriter(path, (4, 4), frames=True, events=False, spectra=False) as w:
        for _ in range(15):
            batch, truth = s.frames(5000)
            w.write_frames(batch)
    out = tmp_path / "c.h5"
    assert run_cli(path, "-o", out, "--no-png") == 0
    cal = read_calibration(out)
    good = cal["good"].astype(bool)
    assert good.sum() >= 15
    np.testing.assert_allclose(cal["gradients"][good], truth.gradients[good], rtol=0.005)
    np.testing.assert_allclose(cal["intercepts"][good], truth.intercepts[good], atol=0.3)
