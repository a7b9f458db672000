"""The viewer's processing half (no display): worker thread, counters, ROI masks.

Expected cubes are built here with plain numpy from the frames themselves: with
charge-sharing handling and next-frame correction off, every pixel value above the
threshold is one event of energy ADU * gradient + intercept.
"""

import threading

import numpy as np
import pytest

import hexspec as hx
from hexspec.viewer import LiveProcessor, polygon_mask, rect_mask

SHAPE = (12, 17)   # not square, so a transposed axis shows


def make_batches(n_batches=4, frames_per_batch=50, occupancy=0.05, seed=1, first_frame=0):
    """Random sparse frames: hits with ADU values 100..4000, zeros elsewhere."""
    rng = np.random.default_rng(seed)
    out = []
    fn = first_frame
    for _ in range(n_batches):
        hits = rng.random((frames_per_batch, *SHAPE)) < occupancy
        frames = np.where(hits, rng.integers(100, 4000, size=hits.shape), 0).astype(np.uint16)
        out.append(hx.FrameBatch(frames, np.arange(fn, fn + frames_per_batch)))
        fn += frames_per_batch
    return out


def plain_config(**kw):
    base = dict(threshold=50, next_frame=False, charge_sharing="none", bins=hx.EnergyBins(0, 4096, 16))
    base.update(kw)
    return hx.ProcessingConfig(**base)


def numpy_cube(batches, edges, threshold=50, gradient=1.0, intercept=0.0):
    frames = np.concatenate([b.frames for b in batches]).astype(np.float64)
    cube = np.zeros((*SHAPE, len(edges) - 1), dtype=np.int64)
    for r in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            v = frames[:, r, c]
            energy = v[v > threshold] * gradient + intercept
            cube[r, c] = np.histogram(energy, bins=edges)[0]
    return cube


def run_to_end(source, config):
    proc = LiveProcessor(source, config).start()
    assert proc.wait_until(lambda p: p.finished, timeout=30)
    return proc


def test_accumulated_cube_equals_numpy_histogram_of_the_frames():
    batches = make_batches()
    cfg = plain_config()
    proc = run_to_end(batches, cfg)
    expected = numpy_cube(batches, cfg.bins.edges)
    np.testing.assert_array_equal(proc.cube().counts, expected)


def test_counters_count_frames_events_and_hits_of_every_batch():
    batches = make_batches()
    proc = run_to_end(batches, plain_config())
    c = proc.counters()
    n_hits = sum(int(np.count_nonzero(b.frames > 50)) for b in batches)
    assert (c["frames"], c["events"], c["hits"], c["batches"]) == (200, n_hits, n_hits, 4)
    assert c["occupancy"] == pytest.approx(n_hits / (200 * SHAPE[0] * SHAPE[1]))


def test_image_over_a_window_sums_the_bins_whose_centres_lie_inside():
    batches = make_batches()
    cfg = plain_config()
    proc = run_to_end(batches, cfg)
    expected = numpy_cube(batches, cfg.bins.edges)
    centres = cfg.bins.centers
    inside = (centres >= 1000) & (centres < 2000)
    np.testing.assert_array_equal(proc.image(1000, 2000), expected[:, :, inside].sum(axis=2))
    np.testing.assert_array_equal(proc.image(), expected.sum(axis=2))


def test_calibrated_energies_fill_kev_bins():
    batches = make_batches(n_batches=2)
    cfg = plain_config(gradients=0.25, intercepts=1.0, bins=hx.EnergyBins(0, 1100, 0.5))
    proc = run_to_end(batches, cfg)
    assert proc.unit == "keV"
    expected = numpy_cube(batches, cfg.bins.edges, gradient=0.25, intercept=1.0)
    np.testing.assert_array_equal(proc.cube().counts, expected)


def test_frame_number_gaps_count_as_dropped_when_the_source_has_no_counters():
    batches = make_batches(n_batches=3, frames_per_batch=10)
    # Lose frames 10..14 (a gap between batches) and frame 25 (a hole inside a batch).
    second = batches[1]
    batches[1] = hx.FrameBatch(second.frames[5:], second.frame_numbers[5:])
    third = batches[2]
    keep = np.r_[0:5, 6:10]
    batches[2] = hx.FrameBatch(third.frames[keep], third.frame_numbers[keep])
    proc = run_to_end(batches, plain_config())
    assert proc.counters()["dropped"] == 6


class CountingSource:
    """A source with transfer counters, as hexspec.drivers sources have."""

    def __init__(self, batches, dropped, corrupt):
        self.batches = batches
        self.stats = hx.drivers.SourceStats(dropped=dropped, corrupt=corrupt) if hasattr(hx.drivers, "SourceStats") \
            else type("Stats", (), {"dropped": dropped, "corrupt": corrupt})()
        self.closed = False

    def __iter__(self):
        yield from self.batches
        self.stats.dropped += 7
        self.stats.corrupt += 3

    def close(self):
        self.closed = True


def test_source_counters_are_reported_relative_to_the_start():
    source = CountingSource(make_batches(n_batches=1), dropped=100, corrupt=10)
    proc = run_to_end(source, plain_config())
    c = proc.counters()
    assert (c["dropped"], c["corrupt"]) == (7, 3)


def test_source_is_closed_when_it_ends():
    source = CountingSource(make_batches(n_batches=1), dropped=0, corrupt=0)
    run_to_end(source, plain_config())
    assert source.closed


def test_reset_zeroes_the_cube_and_counters():
    proc = run_to_end(make_batches(), plain_config())
    proc.reset()
    c = proc.counters()
    assert proc.cube().counts.sum() == 0
    assert (c["frames"], c["events"], c["dropped"]) == (0, 0, 0)


def gated(batches):
    """Yield each batch only after the test releases it."""
    go = threading.Semaphore(0)

    def gen():
        for b in batches:
            go.acquire()
            yield b
    return gen(), go


def test_paused_batches_are_read_but_not_accumulated():
    batches = make_batches(n_batches=3, frames_per_batch=20)
    source, go = gated(batches)
    proc = LiveProcessor(source, plain_config()).start()
    go.release()
    assert proc.wait_until(lambda p: p.counters()["frames"] == 20)
    proc.pause(True)
    go.release()
    assert proc.wait_until(lambda p: p.counters()["frames_skipped"] == 20)
    proc.pause(False)
    go.release()
    assert proc.wait_until(lambda p: p.finished)
    expected = numpy_cube([batches[0], batches[2]], plain_config().bins.edges)
    np.testing.assert_array_equal(proc.cube().counts, expected)
    assert proc.counters()["frames"] == 40


def test_new_settings_apply_from_the_next_batch_and_restart_accumulation():
    batches = make_batches(n_batches=2, frames_per_batch=30)
    source, go = gated(batches)
    proc = LiveProcessor(source, plain_config()).start()
    go.release()
    assert proc.wait_until(lambda p: p.counters()["frames"] == 30)
    proc.set_config(plain_config(threshold=2000))
    go.release()
    assert proc.wait_until(lambda p: p.finished)
    expected = numpy_cube([batches[1]], plain_config().bins.edges, threshold=2000)
    np.testing.assert_array_equal(proc.cube().counts, expected)


def test_a_failing_source_is_reported_and_the_processor_ends():
    def broken():
        yield make_batches(n_batches=1)[0]
        raise hx.ProtocolError("connection lost at frame 50")

    proc = run_to_end(broken(), plain_config())
    assert "connection lost at frame 50" in proc.counters()["error"]
    assert proc.counters()["frames"] == 50


def test_stop_ends_an_endless_source():
    batch = make_batches(n_batches=1)[0]

    def endless():
        while True:
            yield batch

    proc = LiveProcessor(endless(), plain_config()).start()
    assert proc.wait_until(lambda p: p.counters()["frames"] > 0)
    proc.stop(timeout=5)
    assert not proc.running


def test_batches_of_another_shape_are_skipped_and_counted():
    good = make_batches(n_batches=1, frames_per_batch=10)[0]
    odd = hx.FrameBatch(np.ones((4, 3, 3), np.uint16) * 500, np.arange(10, 14))
    proc = run_to_end([good, odd], plain_config())
    c = proc.counters()
    assert (c["frames"], c["frames_skipped"]) == (10, 4)


# ----------------------------------------------------------------------------- ROI masks

def test_rect_mask_selects_pixels_whose_centres_lie_inside():
    # x from 1.0 to 3.0 covers columns 1 and 2; y from 0.6 to 1.6 holds only row 1's centre (1.5).
    mask = rect_mask((4, 5), 1.0, 0.6, 2.0, 1.0)
    expected = np.zeros((4, 5), bool)
    expected[1, 1:3] = True
    np.testing.assert_array_equal(mask, expected)


def test_rect_mask_with_negative_size_extends_back_from_the_corner():
    np.testing.assert_array_equal(rect_mask((4, 5), 3.0, 2.0, -2.0, -2.0), rect_mask((4, 5), 1.0, 0.0, 2.0, 2.0))


def test_polygon_mask_of_a_right_triangle():
    # Triangle (0,0), (4.2,0), (0,4.2): centre (c+0.5, r+0.5) inside when c + r + 1 < 4.2
    # (no centre lies on the hypotenuse, so the answer does not hinge on edge rules).
    mask = polygon_mask((4, 4), [[0, 0], [4.2, 0], [0, 4.2]])
    r, c = np.mgrid[0:4, 0:4]
    np.testing.assert_array_equal(mask, (r + c + 1) < 4.2)


def test_polygon_mask_needs_three_vertices():
    with pytest.raises(hx.ConfigError, match="at least 3"):
        polygon_mask((4, 4), [[0, 0], [1, 1]])


# ----------------------------------------------------------------------------- display reductions

def test_one_pass_image_and_spectrum_match_numpy_sums():
    from hexspec.viewer.reduce import image_and_spectrum
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 1000, size=(7, 9, 50)).astype(np.uint32)
    image, spectrum = image_and_spectrum(counts, 12, 31)
    np.testing.assert_array_equal(image, counts[:, :, 12:31].astype(np.int64).sum(axis=2))
    np.testing.assert_array_equal(spectrum, counts.astype(np.int64).sum(axis=(0, 1)))


def test_window_bins_select_the_bins_whose_centres_lie_in_the_window():
    from hexspec.viewer.reduce import window_bins
    edges = np.arange(0.0, 10.5, 0.5)        # centres 0.25, 0.75, ..., 9.75
    # [2.0, 3.6): centres 2.25, 2.75, 3.25 -> bins 4, 5, 6.
    assert window_bins(edges, 2.0, 3.6) == (4, 7)
    assert window_bins(edges) == (0, 20)
