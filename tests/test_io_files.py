"""hexspec HDF5, calibration text maps, GigE .bin and odin-data files."""

import h5py
import numpy as np
import pytest

import hexspec as hx
from hexspec.io import calfiles, gige_bin, hdf5, odin
from tests.conftest import shared_file


def random_events(n, shape=(6, 7), seed=0):
    rng = np.random.default_rng(seed)
    return hx.EventList(np.sort(rng.integers(0, 1000, n)), rng.integers(0, shape[0], n), rng.integers(0, shape[1], n),
                        rng.uniform(0, 150, n), rng.integers(1, 4, n))


def test_hdf5_round_trip_of_events_cube_frames_config_and_counters(tmp_path):
    cfg = hx.ProcessingConfig(threshold=np.full((6, 7), 80.0), gradients=0.025, bins=hx.EnergyBins(0, 150, 1))
    ev = random_events(5000)
    cube = hx.SpectralCube.from_events(ev, cfg.bins, (6, 7))
    frames = hx.FrameBatch(np.random.default_rng(1).integers(0, 4000, (30, 6, 7)), np.arange(100, 130))
    path = tmp_path / "run.h5"
    with hdf5.HexspecWriter(path, (6, 7), config=cfg, source="sim://", frames=True) as w:
        w.write_events(ev[:2000])
        w.write_events(ev[2000:])
        w.write_frames(frames)
        w.write_spectra(cube)
        w.set_acquisition(frames_received=30, frames_dropped=2, first_frame=100, last_frame=129)
    assert hdf5.read_events(path) == ev
    back = hx.SpectralCube.load(path)
    np.testing.assert_array_equal(back.counts, cube.counts)
    np.testing.assert_array_equal(back.edges, cube.edges)
    got = hdf5.read_frames(path)
    np.testing.assert_array_equal(got.frames, frames.frames)
    np.testing.assert_array_equal(got.frame_numbers, frames.frame_numbers)
    assert hdf5.read_config(path) == cfg
    acq = hdf5.read_acquisition(path)
    assert (acq["frames_received"], acq["frames_dropped"], acq["first_frame"], acq["source"]) == (30, 2, 100, "sim://")
    with h5py.File(path) as f:   # self-describing: NeXus classes and units
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/spectra"].attrs["signal"] == "counts"
        assert f["entry/events/energy"].attrs["units"] == "keV"
        assert f["entry/events/energy"].compression == "gzip"


def test_writer_appends_to_an_existing_file(tmp_path):
    ev = random_events(300)
    path = tmp_path / "a.h5"
    with hdf5.HexspecWriter(path, (6, 7), spectra=False) as w:
        w.write_events(ev[:100])
    with hdf5.HexspecWriter(path, (6, 7), mode="a") as w:
        w.write_events(ev[100:])
    assert hdf5.read_events(path) == ev


def test_swmr_file_can_be_read_while_it_is_being_written(tmp_path):
    path = tmp_path / "live.h5"
    ev = random_events(1000)
    w = hdf5.HexspecWriter(path, (6, 7), swmr=True, spectra=False)
    w.write_events(ev[:400])
    w.flush()
    assert len(hdf5.read_events(path)) == 400
    w.write_events(ev[400:])
    w.close()
    assert hdf5.read_events(path) == ev


def test_cube_written_with_non_uniform_edges_loads_back(tmp_path):
    cube = hx.SpectralCube(np.ones((2, 2, 3), np.uint32), [0, 1, 3, 7], unit="ADU")
    cube.save(tmp_path / "c.h5")
    back = hx.SpectralCube.load(tmp_path / "c.h5")
    np.testing.assert_array_equal(back.edges, [0, 1, 3, 7])
    assert back.unit == "ADU"


def test_results_group_round_trip(tmp_path):
    path = tmp_path / "r.h5"
    hdf5.write_results(path, "fit", {"center": np.arange(4.0).reshape(2, 2)}, {"window_kev": [88.0, 100.0], "model": "pseudo_voigt"})
    arrays, attrs = hdf5.read_results(path, "fit")
    np.testing.assert_array_equal(arrays["center"], [[0, 1], [2, 3]])
    assert attrs["model"] == "pseudo_voigt" and list(attrs["window_kev"]) == [88.0, 100.0]
    with pytest.raises(hx.FormatError, match="expected /entry/results/sparam"):
        hdf5.read_results(path, "sparam")


def test_reading_a_file_that_is_not_hexspec_names_what_was_found(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["foo"] = 1
    with pytest.raises(hx.FormatError, match=r"expected a hexspec HDF5 file with an /entry group, found groups \['foo'\]"):
        hdf5.read_events(p)
    with pytest.raises(hx.FormatError, match="no such file"):
        hdf5.read_cube(tmp_path / "missing.h5")


# ------------------------------------------------------------------ calibration text maps

@pytest.mark.parametrize("layout", ["matrix", "column"])
def test_calibration_map_round_trip_in_both_layouts(tmp_path, layout):
    m = np.random.default_rng(2).uniform(0.02, 0.03, (5, 8))
    calfiles.write_map(tmp_path / "m.txt", m, layout=layout)
    np.testing.assert_allclose(calfiles.read_map(tmp_path / "m.txt", (5, 8)), m, rtol=1e-8)


def test_transposed_calibration_matrix_is_refused(tmp_path):
    np.savetxt(tmp_path / "m.txt", np.ones((8, 5)))
    with pytest.raises(hx.FormatError, match="expected a 5 x 8 matrix.*found a 8 x 5 matrix"):
        calfiles.read_map(tmp_path / "m.txt", (5, 8))


def test_non_integer_cube_counts_are_refused_rather_than_truncated(tmp_path):
    cube = hx.SpectralCube(np.full((2, 2, 3), 0.5), [0, 1, 2, 3])
    with pytest.raises(hx.FormatError, match="must be whole numbers"):
        cube.save(tmp_path / "c.h5")


def test_spectra_only_file_gives_a_clear_error_for_events(tmp_path):
    hx.SpectralCube(np.ones((2, 2, 3), np.uint32), [0, 1, 2, 3]).save(tmp_path / "c.h5")
    with pytest.raises(hx.FormatError, match="expected /entry/events"):
        list(hdf5.iter_events(tmp_path / "c.h5"))


def test_calibration_map_with_a_wrong_count_names_the_expected_shape(tmp_path):
    np.savetxt(tmp_path / "m.txt", np.ones(39))
    with pytest.raises(hx.FormatError, match="expected 40 values for a 5 x 8 detector, found 39"):
        calfiles.read_map(tmp_path / "m.txt", (5, 8))


def test_real_160x480_calibration_maps_read_with_plausible_values():
    g = calfiles.read_map(shared_file("hexitec_2x6_gradients.txt"), (160, 480))
    c = calfiles.read_map(shared_file("hexitec_2x6_intercepts.txt"), (160, 480))
    t = calfiles.read_map(shared_file("hexitec_2x6_thresholds.txt"), (160, 480))
    calibrated = g > 0
    assert calibrated.mean() > 0.5
    # PHYSICS.md 5: typical gradient 0.02-0.03 keV/ADU
    assert 0.015 < np.median(g[calibrated]) < 0.035
    assert np.all(np.isfinite(c)) and np.all(t >= 0)
    cfg = hx.ProcessingConfig(threshold=t, gradients=g, intercepts=c)
    thr, grad, icpt = cfg.pixel_maps((160, 480))
    assert grad.shape == (160 * 480,)


# ------------------------------------------------------------------ GigE .bin and odin-data

def test_gige_bin_round_trip_and_partial_file_error(tmp_path):
    fr = np.random.default_rng(4).integers(0, 16383, (7, 4, 6)).astype(np.uint16)
    p = tmp_path / "f.bin"
    gige_bin.write_gige_bin(p, fr)
    np.testing.assert_array_equal(gige_bin.read_gige_bin(p, (4, 6)).frames, fr)
    with open(p, "ab") as fh:
        fh.write(b"\x01\x02\x03")
    with pytest.raises(hx.FormatError, match=r"339 bytes is not a whole number of 4x6 uint16 frames \(48 bytes each\): 7 frames and 3 bytes left over"):
        gige_bin.read_gige_bin(p, (4, 6))
    assert len(gige_bin.read_gige_bin(p, (4, 6), allow_partial=True)) == 7


def test_gige_bin_is_little_endian():
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "f.bin")
        with open(p, "wb") as fh:
            fh.write(bytes([0x34, 0x12]) + bytes(2 * 79) + bytes(2 * 80 * 79))
        assert gige_bin.read_gige_bin(p).frames[0, 0, 0] == 0x1234


def test_asic_reorder_follows_the_firmware_rule(tmp_path):
    # raw index i of an 80-pixel row holds column 20 * (i % 4) + i // 4
    raw = np.arange(80, dtype=np.uint16)[None, None, :].repeat(2, axis=1)
    p = tmp_path / "r.bin"
    gige_bin.write_gige_bin(p, raw)
    fr = gige_bin.read_gige_bin(p, (2, 80), reorder=True).frames[0, 0]
    assert fr[0] == 0 and fr[20] == 1 and fr[40] == 2 and fr[60] == 3 and fr[1] == 4 and fr[79] == 79
    np.testing.assert_array_equal(np.sort(fr), np.arange(80))


def test_real_odin_file_gives_160x160_frames_with_test_pulses():
    p = shared_file("hexitec_2x2_raw_30frames.h5")
    data = odin.read_odin(p)
    assert data["raw_frames"].shape == (30, 160, 160) and data["raw_frames"].dtype == np.uint16
    batches = list(odin.iter_odin_frames(p, batch_size=8))
    assert [len(b) for b in batches] == [8, 8, 8, 6]
    np.testing.assert_array_equal(np.concatenate([b.frames for b in batches]), data["raw_frames"])


def test_real_frames_processed_match_the_numpy_reference_and_show_the_test_pulse_peak():
    from hexspec.events import extract_reference
    fr = odin.read_odin(shared_file("hexitec_2x2_raw_30frames.h5"))["raw_frames"]
    cfg = hx.ProcessingConfig(threshold=200, charge_sharing="none", next_frame=True, bins=hx.EnergyBins(0, 8000, 20))
    ev = hx.extract_events(fr, cfg)
    assert ev.sorted() == extract_reference(fr, cfg).sorted()
    spec = hx.SpectralCube.from_events(ev, cfg.bins, (160, 160)).spectrum()
    centres = cfg.bins.centers
    peak = centres[np.argmax(np.where(centres > 1000, spec, 0))]
    assert 4000 < peak < 4600    # injected test pulses near 4300 ADU (data README)
