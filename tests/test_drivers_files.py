"""File and simulator sources opened by URL, and URL handling."""

import h5py
import numpy as np
import pytest
from hexspec.drivers import FrameSource, open_source

import hexspec as hx
from tests.conftest import shared_file


def collect(src):
    batches = list(src)
    return (np.concatenate([b.frames for b in batches]), np.concatenate([b.frame_numbers for b in batches]))


def test_bin_file_frames_come_back_in_order(tmp_path):
    frames = np.random.default_rng(0).integers(0, 9000, (25, 6, 8)).astype("<u2")
    path = tmp_path / "run.bin"
    frames.tofile(path)
    with open_source(f"file://{path}?shape=6,8&batch=10") as src:
        got, numbers = collect(src)
    np.testing.assert_array_equal(got, frames)
    np.testing.assert_array_equal(numbers, np.arange(25))
    assert src.stats.frames == 25


def test_replay_at_a_rate_delivers_the_same_frames(tmp_path):
    frames = np.random.default_rng(1).integers(0, 9000, (12, 4, 4)).astype("<u2")
    path = tmp_path / "run.bin"
    frames.tofile(path)
    got, _ = collect(open_source(f"file://{path}?shape=4,4&rate=400"))
    np.testing.assert_array_equal(got, frames)


def test_bin_file_with_asic_order_is_reordered(tmp_path):
    # older firmware: within each 80-pixel row, raw index i holds column 20 * (i % 4) + i // 4
    true = np.arange(2 * 80, dtype=np.uint16).reshape(1, 2, 80)
    raw = np.empty_like(true)
    for i in range(80):
        raw[0, :, i] = true[0, :, 20 * (i % 4) + i // 4]
    path = tmp_path / "old.bin"
    raw.astype("<u2").tofile(path)
    got, _ = collect(open_source(f"file://{path}?shape=2,80&reorder=1"))
    np.testing.assert_array_equal(got, true)


def test_real_odin_file_replays_all_raw_frames():
    path = shared_file("hexitec_2x2_raw_30frames.h5")
    with h5py.File(path, "r") as f:
        expected = f["raw_frames"][()]
    got, numbers = collect(open_source(f"file://{path}?batch=7"))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(numbers, np.arange(30))


def test_hexspec_file_replays_frames_with_their_numbers(tmp_path):
    from hexspec.io.hdf5 import HexspecWriter
    frames = np.random.default_rng(2).integers(0, 9000, (9, 5, 7)).astype(np.uint16)
    path = tmp_path / "rec.h5"
    with HexspecWriter(path, (5, 7), frames=True, events=False, spectra=False) as w:
        w.write_frames(hx.FrameBatch(frames, np.arange(40, 49)))
    got, numbers = collect(open_source(f"file://{path}"))
    np.testing.assert_array_equal(got, frames)
    np.testing.assert_array_equal(numbers, np.arange(40, 49))


def test_hdf5_file_of_another_shape_than_asked_is_an_error():
    path = shared_file("hexitec_2x2_raw_30frames.h5")
    with pytest.raises(hx.FormatError, match=r"\(80, 80\).*\(160, 160\)"):
        open_source(f"file://{path}?shape=80,80")


def test_frames_option_stops_the_source():
    path = shared_file("hexitec_2x2_raw_30frames.h5")
    _, numbers = collect(open_source(f"file://{path}?frames=11&batch=4"))
    np.testing.assert_array_equal(numbers, np.arange(11))


def test_sources_follow_the_frame_source_protocol(tmp_path):
    path = tmp_path / "a.bin"
    np.zeros((2, 80, 80), "<u2").tofile(path)
    src = open_source(f"file://{path}")
    assert isinstance(src, FrameSource)
    src.close()


def test_sim_source_numbers_frames_consecutively_across_batches():
    got, numbers = collect(open_source("sim://?source=am241&seed=4&frames=30&batch=8&shape=16,16"))
    assert got.shape == (30, 16, 16)
    np.testing.assert_array_equal(numbers, np.arange(30))


def test_sim_source_with_the_same_seed_gives_the_same_frames():
    a, _ = collect(open_source("sim://?seed=5&frames=20&shape=16,16"))
    b, _ = collect(open_source("sim://?seed=5&frames=20&shape=16,16"))
    c, _ = collect(open_source("sim://?seed=6&frames=20&shape=16,16"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sim_source_matches_the_simulator_it_wraps():
    got, _ = collect(open_source("sim://?source=am241&seed=8&frames=10&shape=16,16"))
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), detector=hx.DetectorSpec(16, 16), seed=8)
    np.testing.assert_array_equal(got, sim.frames(10)[0].frames)


@pytest.mark.parametrize("url, message", [
    ("nothing-like-a-url", "expected a URL"),
    ("gopher://host", "unknown scheme"),
    ("tcp://127.0.0.1:5020?colour=red", "unknown option"),
    ("tcp://127.0.0.1:5020?socket=req", "sub' or 'pull"),
    ("sim://?source=cobalt", "am241"),
    ("sim://?rate=-5", "positive"),
    ("tcp://127.0.0.1:5020?timeout=soon", "seconds"),
])
def test_bad_urls_are_config_errors_naming_the_problem(url, message):
    with pytest.raises(hx.ConfigError, match=message):
        open_source(url)
