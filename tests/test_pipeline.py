"""pipeline.run: the one streaming loop, its counters and its HDF5 sink."""

import numpy as np
import pytest

import hexspec as hx
from hexspec import pipeline
from hexspec.io import hdf5


def batches(frames, numbers, size):
    for s in range(0, len(frames), size):
        yield hx.FrameBatch(frames[s:s + size], numbers[s:s + size])


def test_run_counts_gaps_in_frame_numbers_as_dropped_frames():
    fr = np.zeros((6, 4, 4), np.uint16)
    numbers = np.array([10, 11, 14, 15, 16, 20])    # 2 missing after 11, 3 after 16
    res = pipeline.run(batches(fr, numbers, 2), hx.ProcessingConfig())
    st = res.stats
    assert (st.frames, st.frames_dropped, st.first_frame, st.last_frame) == (6, 5, 10, 20)


def test_run_equals_one_shot_extraction_and_histogram():
    rng = np.random.default_rng(2)
    fr = ((rng.random((300, 10, 12)) < 0.03) * rng.integers(20, 4000, (300, 10, 12))).astype(np.uint16)
    cfg = hx.ProcessingConfig(threshold=10, gradients=0.04, charge_sharing="csa")
    res = pipeline.run(batches(fr, np.arange(300), 37), cfg)
    ev = hx.extract_events(fr, cfg)
    np.testing.assert_array_equal(res.cube.counts, hx.SpectralCube.from_events(ev, cfg.resolved_bins(), (10, 12)).counts)
    assert res.stats.events == len(ev)


def test_hdf5_sink_stores_frames_events_spectra_and_counters(tmp_path):
    rng = np.random.default_rng(3)
    fr = ((rng.random((50, 6, 6)) < 0.05) * rng.integers(20, 4000, (50, 6, 6))).astype(np.uint16)
    cfg = hx.ProcessingConfig(threshold=10)
    sink = pipeline.HDF5Sink(tmp_path / "o.h5", (6, 6), cfg, source="test", frames=True)
    res = pipeline.run(batches(fr, np.arange(50), 8), cfg, sinks=[sink])
    np.testing.assert_array_equal(hdf5.read_frames(tmp_path / "o.h5").frames, fr)
    assert hdf5.read_events(tmp_path / "o.h5") == hx.extract_events(fr, cfg)
    np.testing.assert_array_equal(hdf5.read_cube(tmp_path / "o.h5").counts, res.cube.counts)
    assert hdf5.read_acquisition(tmp_path / "o.h5")["frames_received"] == 50


def test_event_source_without_a_shape_is_a_clear_error():
    with pytest.raises(hx.ConfigError, match="needs the detector shape"):
        pipeline.run([hx.EventList([0], [0], [0], [1.0])], hx.ProcessingConfig())


def test_empty_batches_give_no_events_and_no_error():
    ex = hx.EventExtractor(hx.ProcessingConfig(), (4, 5))
    assert len(ex(np.zeros((0, 4, 5), np.uint16))) == 0
    fr = np.zeros((3, 4, 5), np.uint16)
    fr[2, 1, 1] = 100
    res = pipeline.run([hx.FrameBatch(fr[:0]), hx.FrameBatch(fr, [0, 1, 2])], hx.ProcessingConfig(threshold=10))
    assert (res.stats.frames, res.stats.events) == (3, 1)


def test_max_frames_stops_the_run():
    fr = np.zeros((100, 4, 4), np.uint16)
    res = pipeline.run(batches(fr, np.arange(100), 30), hx.ProcessingConfig(), max_frames=45)
    assert res.stats.frames == 45
