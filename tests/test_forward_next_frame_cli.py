"""`hexspec process` stores the event extractor's counters; `sparam --forward-model` builds its response from them."""

import numpy as np
import pytest

import hexspec as hx
from hexspec import compton, compton_forward
from hexspec.cli import main
from hexspec.commands.process import read_extractor_stats, save_extractor_stats
from hexspec.detector_response import DetectorResponse, full_neighbourhood
from hexspec.io import gige_bin, hdf5


def test_process_stores_the_extractor_counters_worked_out_by_hand(tmp_path):
    # 50 frames of 80 x 80: pixel (10, 10) reads 500 ADU in frames 3, 4 and 5 (the next-frame
    # correction drops 4 and 5), pixels (20, 20) and (20, 21) share a hit in frame 7 (csd
    # removes both), pixel (40, 40) has one clean hit in frame 9; threshold 100 ADU
    fr = np.zeros((50, 80, 80), np.uint16)
    fr[3:6, 10, 10] = 500
    fr[7, 20, 20:22] = 300
    fr[9, 40, 40] = 800
    fr[11, 50, 50] = 60                                        # under the threshold: not a hit
    path = tmp_path / "frames.bin"
    gige_bin.write_gige_bin(path, fr)
    out = tmp_path / "cube.h5"
    assert main(["process", str(path), "-o", str(out), "--threshold", "100", "--gradients", "0.03",
                 "--intercepts", "0.5", "--charge-sharing", "csd", "-q"]) == 0
    stats = read_extractor_stats(out)
    assert stats == {"hits": 6, "next_frame_removed": 2, "shared_removed": 2, "clusters_too_large": 0,
                     "events": 2, "frames": 50}
    # re-histogramming the events keeps the counters of their extraction
    again = tmp_path / "again.h5"
    assert main(["process", str(out), "-o", str(again), "--bins", "0", "200", "0.5", "-q"]) == 0
    assert read_extractor_stats(again) == stats


def test_a_cube_without_counters_reads_as_none(tmp_path):
    hdf5.write_cube(tmp_path / "old.h5", hx.SpectralCube(np.zeros((2, 2, 4), np.uint32), np.arange(5.0)))
    assert read_extractor_stats(tmp_path / "old.h5") is None


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    """A 12 x 16 detector's Am-241 calibration as `hexspec calibrate` writes it (small: the plumbing is tested)."""
    det = hx.DetectorSpec(rows=12, cols=16)
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), detector=det, photons_per_frame=6, seed=3, detector_seed=4,
                                  dead_pixels=0, hot_pixels=0)
    spectra = hx.calibration.FrameSpectra(det.shape)
    for _ in range(6):
        spectra.add(sim.frames(10_000)[0])
    cal = hx.calibration.calibrate_am241(spectra.cube)
    path = tmp_path_factory.mktemp("cal") / "cal.h5"
    hdf5.write_results(path, "calibration", cal.arrays(), cal.attrs())
    return path, cal, det


def test_sparam_forward_model_takes_the_next_frame_terms_from_the_stored_counters(tmp_path, calibration_file, capsys):
    cal_path, cal, det = calibration_file
    geom = compton.PinholeGeometry(detector=det)
    src = hx.sim.ComptonSource(li_content=0.5, geometry=geom, background=False)
    rng = np.random.default_rng(8)
    edges = np.arange(0.0, 200.0001, 0.25)
    n = 300_000
    pix = rng.integers(0, det.n_pixels, n)
    e = src.sample_pixels(pix, rng) + rng.normal(0.0, 0.3, n)
    b = np.searchsorted(edges, e) - 1
    counts = np.bincount(pix * (edges.size - 1) + b, minlength=det.n_pixels * (edges.size - 1))
    cube = hx.SpectralCube(counts.reshape(12, 16, -1).astype(np.uint32), edges)
    stats = {"hits": 400_000, "next_frame_removed": 9_000, "shared_removed": 0, "clusters_too_large": 0,
             "events": 300_000, "frames": 150_000}
    good = int(cal.good.sum())
    p_prev = 400_000 / (150_000 * good)                        # hits per live pixel and frame
    spill = (9_000 - 400_000 * p_prev) / 400_000               # removals beyond chance, per hit

    old, new = tmp_path / "old.h5", tmp_path / "new.h5"
    hdf5.write_cube(old, cube)
    hdf5.write_cube(new, cube)
    save_extractor_stats(new, stats)
    args = ["--block", "12", "16", "--forward-model", "--calibration", str(cal_path), "-q"]
    assert main(["sparam", str(new), *args, "-o", str(tmp_path / "s_new.h5")]) == 0
    assert main(["sparam", str(old), *args, "-o", str(tmp_path / "s_old.h5")]) == 0
    err = capsys.readouterr().err
    assert err.count("no event-extractor counters") == 1 and "old.h5" in err

    res_new, attrs_new = hdf5.read_results(tmp_path / "s_new.h5", "lithium_forward")
    res_old, attrs_old = hdf5.read_results(tmp_path / "s_old.h5", "lithium_forward")
    assert attrs_new["previous_hit_probability"] == pytest.approx(p_prev, rel=1e-12)
    assert attrs_new["spill_probability"] == pytest.approx(spill, rel=1e-12)
    assert "previous_hit_probability" not in attrs_old and attrs_old["spill_probability"] == 0.0
    # the same fit as the API with that response (from the calibration itself: the file holds all it needs)
    for res, kw in ((res_new, dict(previous_hit_probability=p_prev, spill_probability=spill)), (res_old, {})):
        fwd = compton_forward.fit_li_blocks(cube, 115.0, geom.theta_map(), block=(12, 16),
                                            mask=full_neighbourhood(cal.good),
                                            response=DetectorResponse.from_calibration(cal, **kw))
        np.testing.assert_allclose(res["li"], fwd.li, rtol=1e-9)
    assert res_new["li"][0, 0] != res_old["li"][0, 0]

    # the detector's known spill share overrides the estimate
    assert main(["sparam", str(new), *args, "--spill-probability", "0.01", "-o", str(tmp_path / "s_k.h5")]) == 0
    assert hdf5.read_results(tmp_path / "s_k.h5", "lithium_forward")[1]["spill_probability"] == 0.01
    assert main(["sparam", str(new), "--spill-probability", "0.01", "-o", str(tmp_path / "s_x.h5")]) != 0
