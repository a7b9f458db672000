"""Energy bins, histogramming, the streaming accumulator and the spectral cube."""

import numpy as np
import pytest

import hexspec as hx
from hexspec.spectra import histogram_reference


def test_energy_bins_edges_centres_and_count():
    b = hx.EnergyBins(0, 200, 0.25)
    assert b.n == 800
    assert b.edges[0] == 0 and b.edges[-1] == 200 and b.edges[1] == 0.25
    assert b.centers[0] == 0.125 and b.centers[-1] == 199.875


def test_energy_bins_reject_nonpositive_width_and_reversed_range():
    with pytest.raises(hx.ConfigError, match="width must be positive"):
        hx.EnergyBins(0, 10, 0)
    with pytest.raises(hx.ConfigError, match="stop must exceed start"):
        hx.EnergyBins(10, 0, 1)


def test_histogram_puts_edges_in_the_upper_bin_and_counts_under_and_overflow():
    bins = hx.EnergyBins(10, 20, 1)
    ev = hx.EventList(frame=[0] * 7, row=[0, 0, 0, 1, 1, 0, 1], col=[0, 0, 1, 1, 1, 0, 0],
                      energy=[9.999, 10.0, 10.999, 11.0, 19.999, 20.0, np.nan])
    cube = hx.SpectralCube.from_events(ev, bins, shape=(2, 2))
    assert cube.counts[0, 0, 0] == 1          # 10.0 -> bin 0
    assert cube.counts[0, 1, 0] == 1          # 10.999 -> bin 0
    assert cube.counts[1, 1, 1] == 1          # 11.0 -> bin 1
    assert cube.counts[1, 1, 9] == 1          # 19.999 -> last bin
    assert cube.counts.sum() == 4
    assert (cube.underflow, cube.overflow) == (1, 2)   # 9.999 below; 20.0 and NaN above


def test_numba_histogram_matches_numpy_reference_on_random_events():
    rng = np.random.default_rng(5)
    n = 50_000
    ev = hx.EventList(np.zeros(n), rng.integers(0, 7, n), rng.integers(0, 9, n), rng.uniform(-5, 130, n).astype(np.float32))
    bins = hx.EnergyBins(0, 120, 0.37)
    cube = hx.SpectralCube.from_events(ev, bins, shape=(7, 9))
    counts, under, over = histogram_reference(ev.row, ev.col, ev.energy, (7, 9), bins)
    np.testing.assert_array_equal(cube.counts, counts)
    assert (cube.underflow, cube.overflow) == (under, over)


def test_accumulator_result_does_not_depend_on_batch_sizes():
    rng = np.random.default_rng(9)
    fr = ((rng.random((500, 12, 10)) < 0.05) * rng.integers(20, 3000, (500, 12, 10))).astype(np.uint16)
    cfg = hx.ProcessingConfig(threshold=10, gradients=0.03, charge_sharing="csa", bins=hx.EnergyBins(0, 100, 0.5))
    whole = hx.SpectrumAccumulator(cfg, (12, 10))
    whole.add(hx.extract_events(fr, cfg))
    pieces = hx.SpectrumAccumulator(cfg, (12, 10))
    ex = hx.EventExtractor(cfg, (12, 10))
    bounds = [0, 1, 2, 50, 173, 174, 400, 500]
    for s, e in zip(bounds[:-1], bounds[1:]):
        pieces.add(ex(hx.FrameBatch(fr[s:e], np.arange(s, e))))
    np.testing.assert_array_equal(whole.cube.counts, pieces.cube.counts)
    assert whole.cube.counts.sum() > 1000


def test_cube_image_and_spectrum_sum_the_right_bins_and_pixels():
    counts = np.arange(2 * 3 * 4, dtype=np.uint32).reshape(2, 3, 4)
    cube = hx.SpectralCube(counts, [0, 1, 2, 3, 4])
    # bins with centres in [1, 3): centres 1.5 and 2.5 -> bins 1 and 2
    np.testing.assert_array_equal(cube.image(1, 3), counts[:, :, 1] + counts[:, :, 2])
    assert cube.image().sum() == counts.sum()
    mask = np.array([[True, False, False], [False, False, True]])
    np.testing.assert_array_equal(cube.spectrum(mask), counts[0, 0] + counts[1, 2])
    with pytest.raises(hx.ConfigError, match=r"mask of shape \(2, 3\)"):
        cube.spectrum(np.ones((3, 3), bool))


def test_events_outside_the_detector_are_rejected_by_the_accumulator():
    acc = hx.SpectrumAccumulator(hx.ProcessingConfig(), (4, 4))
    with pytest.raises(hx.ConfigError, match="outside a 4 x 4 detector"):
        acc.add(hx.EventList([0], [4], [0], [100.0]))


def test_from_events_accepts_a_config_and_takes_its_bins_and_unit():
    ev = hx.EventList([0, 0], [0, 1], [0, 0], [100.0, 5000.0])
    cube = hx.SpectralCube.from_events(ev, hx.ProcessingConfig(), shape=(2, 1))   # uncalibrated: ADU bins
    assert cube.unit == "ADU" and cube.counts.shape == (2, 1, 1024)
    assert cube.counts[0, 0, 100 // 16] == 1 and cube.counts[1, 0, 5000 // 16] == 1
    with pytest.raises(hx.ConfigError, match="expected EnergyBins or a ProcessingConfig"):
        hx.SpectralCube.from_events(ev, None, shape=(2, 1))


def test_rebin_merges_adjacent_bins_and_counts_the_dropped_tail_as_overflow():
    cube = hx.SpectralCube(np.arange(7, dtype=np.uint32).reshape(1, 1, 7), np.arange(8.0))
    r = cube.rebin(3)
    assert r.counts[0, 0].tolist() == [0 + 1 + 2, 3 + 4 + 5]
    assert r.edges.tolist() == [0, 3, 6] and r.overflow == 6
    with pytest.raises(hx.ConfigError, match="whole factor from 1 to 7"):
        cube.rebin(0)


@pytest.mark.parametrize("threads", [1, 2])
def test_histogramming_inside_the_extractor_equals_adding_the_events_afterwards(threads):
    rng = np.random.default_rng(21)
    fr = ((rng.random((400, 9, 11)) < 0.05) * rng.integers(20, 4000, (400, 9, 11))).astype(np.uint16)
    cfg = hx.ProcessingConfig(threshold=10, gradients=0.04, charge_sharing="csa", bins=hx.EnergyBins(5, 120, 0.5))
    fused, separate = hx.SpectrumAccumulator(cfg, (9, 11)), hx.SpectrumAccumulator(cfg, (9, 11))
    ex1, ex2 = hx.EventExtractor(cfg, (9, 11), threads=threads), hx.EventExtractor(cfg, (9, 11))
    for s in range(0, 400, 100):
        batch = hx.FrameBatch(fr[s:s + 100], np.arange(s, s + 100))
        a = ex1(batch, accumulator=fused)
        b = ex2(batch)
        separate.add(b)
        assert a == b
    np.testing.assert_array_equal(fused.cube.counts, separate.cube.counts)
    assert (fused.underflow, fused.overflow, fused.n_events) == (separate.underflow, separate.overflow, separate.n_events)
    assert fused.underflow > 0 and fused.overflow > 0
    ex1.close()


def test_two_threads_histogramming_into_a_tiny_cube_lose_no_count():
    # 2 x 3 pixels and 2 bins: two threads sharing one cube would increment the same few
    # counters all the time (plain increments would lose counts). The cube read after
    # each batch, and after a reset, holds exactly the counts of the frames so far.
    rng = np.random.default_rng(5)
    fr = rng.integers(0, 200, (40_000, 2, 3)).astype(np.uint16)
    cfg = hx.ProcessingConfig(threshold=0, next_frame=False, charge_sharing="none", bins=hx.EnergyBins(0, 200, 100))
    acc = hx.SpectrumAccumulator(cfg, (2, 3))
    ex = hx.EventExtractor(cfg, (2, 3), threads=2)

    def expected(frames):
        kept = frames > 0
        return np.stack([(kept & (frames < 100)).sum(axis=0), (frames >= 100).sum(axis=0)], axis=-1)

    for s in range(0, len(fr), 20_000):
        ex(hx.FrameBatch(fr[s:s + 20_000], np.arange(s, s + 20_000)), accumulator=acc)
        np.testing.assert_array_equal(acc.cube.counts, expected(fr[:s + 20_000]))
    assert acc.n_events == (fr > 0).sum() and acc.underflow == 0 and acc.overflow == 0
    acc.reset()
    assert acc.cube.counts.sum() == 0
    ex(hx.FrameBatch(fr[:20_000], np.arange(50_000, 70_000)), accumulator=acc)
    np.testing.assert_array_equal(acc.cube.counts, expected(fr[:20_000]))
    ex.close()


def test_accumulator_filled_by_several_threads_equals_one_thread():
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(8)
    n = 60_000
    ev = hx.EventList(np.zeros(n), rng.integers(0, 13, n), rng.integers(0, 7, n), rng.uniform(-10, 130, n))
    cfg = hx.ProcessingConfig(gradients=1.0, bins=hx.EnergyBins(0, 120, 0.3))
    one, three = hx.SpectrumAccumulator(cfg, (13, 7)), hx.SpectrumAccumulator(cfg, (13, 7))
    one.add(ev)
    with ThreadPoolExecutor(3) as pool:
        three.add(ev, pool=pool, parts=3)
    counts, under, over = histogram_reference(ev.row, ev.col, ev.energy, (13, 7), cfg.bins)
    np.testing.assert_array_equal(three.cube.counts, counts)
    np.testing.assert_array_equal(one.cube.counts, counts)
    assert (three.underflow, three.overflow) == (under, over) and under > 0 and over > 0
