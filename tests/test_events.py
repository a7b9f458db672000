"""Frames -> events: each stage against hand-worked cases and the plain-numpy references."""

import numpy as np
import pytest

import hexspec as hx
from hexspec.events import (calibrate_reference, csd_reference, extract_reference, next_frame_reference,
                            threshold_reference)


def frames_with(hits, shape=(8, 8), n=1):
    """Frames of zeros with {(frame, row, col): adu} set."""
    fr = np.zeros((n, *shape), np.uint16)
    for (f, r, c), v in hits.items():
        fr[f, r, c] = v
    return fr


def cfg(**kw):
    kw.setdefault("threshold", 10)
    kw.setdefault("next_frame", False)
    return hx.ProcessingConfig(**kw)


def as_set(ev):
    return {(int(f), int(r), int(c), round(float(e), 4), int(s))
            for f, r, c, e, s in zip(ev.frame, ev.row, ev.col, ev.energy, ev.size)}


# ------------------------------------------------------------------ threshold and calibration

def test_threshold_is_strictly_greater_than():
    fr = frames_with({(0, 1, 1): 10, (0, 2, 2): 11})
    ev = hx.extract_events(fr, cfg(threshold=10, charge_sharing="none"))
    assert as_set(ev) == {(0, 2, 2, 11.0, 1)}


def test_fractional_threshold_compares_with_the_value_itself():
    fr = frames_with({(0, 1, 1): 40, (0, 3, 3): 41})
    ev = hx.extract_events(fr, cfg(threshold=40.5, charge_sharing="none"))
    assert as_set(ev) == {(0, 3, 3, 41.0, 1)}


def test_per_pixel_threshold_map_applies_to_its_own_pixel():
    thr = np.full((8, 8), 100.0)
    thr[0, 0] = 5
    fr = frames_with({(0, 0, 0): 50, (0, 5, 5): 50, (0, 6, 1): 150})
    ev = hx.extract_events(fr, cfg(threshold=thr, charge_sharing="none"))
    assert {(r, c) for _, r, c, _, _ in as_set(ev)} == {(0, 0), (6, 1)}


def test_calibration_gives_adu_times_gradient_plus_intercept_per_pixel():
    g = np.full((8, 8), 0.025)
    g[3, 4] = 0.03
    c = np.full((8, 8), 1.5)
    c[3, 4] = -0.5
    fr = frames_with({(0, 3, 4): 2000, (0, 6, 6): 2000})
    ev = hx.extract_events(fr, cfg(gradients=g, intercepts=c, charge_sharing="none"))
    got = {(int(r), int(cc)): float(e) for r, cc, e in zip(ev.row, ev.col, ev.energy)}
    assert got[(3, 4)] == pytest.approx(2000 * 0.03 - 0.5, abs=1e-5)   # 59.5 keV
    assert got[(6, 6)] == pytest.approx(2000 * 0.025 + 1.5, abs=1e-5)  # 51.5 keV


# ------------------------------------------------------------------ next-frame correction

def test_next_frame_discards_a_repeat_hit_in_the_following_frame():
    fr = frames_with({(0, 2, 2): 500, (1, 2, 2): 40, (1, 5, 5): 300}, n=2)
    ev = hx.extract_events(fr, cfg(next_frame=True, charge_sharing="none"))
    assert as_set(ev) == {(0, 2, 2, 500.0, 1), (1, 5, 5, 300.0, 1)}


def test_next_frame_is_not_applied_across_a_gap_in_frame_numbers():
    fr = frames_with({(0, 2, 2): 500, (1, 2, 2): 400}, n=2)
    batch = hx.FrameBatch(fr, frame_numbers=[7, 9])
    ev = hx.extract_events(batch, cfg(next_frame=True, charge_sharing="none"))
    assert sorted(ev.frame.tolist()) == [7, 9]


def test_next_frame_uses_raw_hits_so_a_chain_of_three_keeps_only_the_first():
    fr = frames_with({(0, 4, 4): 500, (1, 4, 4): 500, (2, 4, 4): 500}, n=3)
    ev = hx.extract_events(fr, cfg(next_frame=True, charge_sharing="none"))
    assert ev.frame.tolist() == [0]


def test_next_frame_state_crosses_batch_boundaries():
    fr = frames_with({(0, 1, 1): 500, (1, 1, 1): 500, (1, 6, 6): 300}, n=2)
    ex = hx.EventExtractor(cfg(next_frame=True, charge_sharing="none"), (8, 8))
    first = ex(hx.FrameBatch(fr[:1], [0]))
    second = ex(hx.FrameBatch(fr[1:], [1]))
    assert len(first) == 1 and as_set(second) == {(1, 6, 6, 300.0, 1)}
    assert ex.stats["next_frame_removed"] == 1


# ------------------------------------------------------------------ charge sharing, hand-built cases

def test_isolated_hit_is_kept_by_every_mode():
    fr = frames_with({(0, 4, 4): 300})
    for mode in ("none", "csd", "csa"):
        assert as_set(hx.extract_events(fr, cfg(charge_sharing=mode))) == {(0, 4, 4, 300.0, 1)}


def test_csd_discards_both_pixels_of_a_shared_pair():
    fr = frames_with({(0, 4, 4): 300, (0, 4, 5): 200, (0, 0, 7): 100})
    assert as_set(hx.extract_events(fr, cfg(charge_sharing="csd"))) == {(0, 0, 7, 100.0, 1)}


def test_csd_treats_a_diagonal_neighbour_as_shared():
    fr = frames_with({(0, 4, 4): 300, (0, 5, 5): 200})
    assert len(hx.extract_events(fr, cfg(charge_sharing="csd"))) == 0


def test_csa_sums_a_shared_pair_into_the_pixel_of_larger_energy():
    fr = frames_with({(0, 4, 4): 200, (0, 4, 5): 300})
    assert as_set(hx.extract_events(fr, cfg(charge_sharing="csa"))) == {(0, 4, 5, 500.0, 2)}


def test_csa_merges_an_l_shaped_triple_into_one_event_of_size_three():
    fr = frames_with({(0, 3, 3): 100, (0, 4, 3): 250, (0, 4, 4): 120})
    assert as_set(hx.extract_events(fr, cfg(charge_sharing="csa"))) == {(0, 4, 3, 470.0, 3)}


def test_max_cluster_size_drops_larger_clusters_and_keeps_pairs():
    fr = frames_with({(0, 3, 3): 100, (0, 4, 3): 250, (0, 4, 4): 120, (0, 0, 6): 50, (0, 0, 7): 60})
    ev = hx.extract_events(fr, cfg(charge_sharing="csa", max_cluster_size=2))
    assert as_set(ev) == {(0, 0, 7, 110.0, 2)}


def test_two_photons_two_pixels_apart_are_separate_with_window_3_and_shared_with_window_5():
    fr = frames_with({(0, 4, 2): 300, (0, 4, 4): 200})
    assert as_set(hx.extract_events(fr, cfg(charge_sharing="csd", window=3))) == {(0, 4, 2, 300.0, 1), (0, 4, 4, 200.0, 1)}
    assert len(hx.extract_events(fr, cfg(charge_sharing="csd", window=5))) == 0
    assert as_set(hx.extract_events(fr, cfg(charge_sharing="csa", window=5))) == {(0, 4, 2, 500.0, 2)}


def test_csa_chains_hits_transitively():
    # (4,1)-(4,3) are two apart, each one apart from (4,2): one cluster of three
    fr = frames_with({(0, 4, 1): 100, (0, 4, 2): 90, (0, 4, 3): 95})
    assert as_set(hx.extract_events(fr, cfg(charge_sharing="csa"))) == {(0, 4, 1, 285.0, 3)}


def test_hits_at_the_detector_edges_and_corners_are_handled_without_wrapping():
    # a pair across the corner (0,7)-(1,7) and a hit at (7,0) whose "wrapped" neighbour (6,7) is also hit
    fr = frames_with({(0, 0, 7): 300, (0, 1, 7): 100, (0, 7, 0): 200, (0, 6, 7): 150})
    ev = hx.extract_events(fr, cfg(charge_sharing="csd"))
    assert as_set(ev) == {(0, 7, 0, 200.0, 1), (0, 6, 7, 150.0, 1)}
    ev = hx.extract_events(fr, cfg(charge_sharing="csa"))
    assert as_set(ev) == {(0, 0, 7, 400.0, 2), (0, 7, 0, 200.0, 1), (0, 6, 7, 150.0, 1)}


def test_charge_sharing_does_not_depend_on_pixel_visiting_order():
    """Flipping the frames flips the events: the result depends on positions, not raster order."""
    rng = np.random.default_rng(3)
    # distinct values in every frame, so the "largest energy" pixel of a cluster is never a tie
    values = np.stack([rng.permutation(np.arange(20, 20 + 256)) for _ in range(20)]).reshape(20, 16, 16)
    fr = ((rng.random((20, 16, 16)) < 0.08) * values).astype(np.uint16)
    for mode in ("csd", "csa"):
        c = cfg(charge_sharing=mode)
        ev = hx.extract_events(fr, c)
        flipped = hx.extract_events(fr[:, ::-1, ::-1].copy(), c)
        unflip = hx.EventList(flipped.frame, 15 - flipped.row.astype(int), 15 - flipped.col.astype(int),
                              flipped.energy, flipped.size)
        assert len(ev) > 20
        assert ev.sorted() == unflip.sorted()


# ------------------------------------------------------------------ kernels against the numpy reference

@pytest.mark.parametrize("mode", ["none", "csd", "csa"])
@pytest.mark.parametrize("window", [3, 5])
@pytest.mark.parametrize("next_frame", [True, False])
def test_kernel_matches_numpy_reference_on_random_frames(mode, window, next_frame):
    rng = np.random.default_rng(["none", "csd", "csa"].index(mode) * 4 + window * 2 + int(next_frame))
    shape = (int(rng.integers(5, 30)), int(rng.integers(5, 30)))
    fr = ((rng.random((40, *shape)) < 0.06) * rng.integers(1, 5000, (40, *shape))).astype(np.uint16)
    grad = rng.uniform(0.02, 0.03, shape)
    icpt = rng.uniform(-1, 3, shape)
    thr = rng.uniform(0, 60, shape)
    c = hx.ProcessingConfig(threshold=thr, gradients=grad, intercepts=icpt, charge_sharing=mode, window=window,
                            next_frame=next_frame, max_cluster_size=2 if mode == "csa" and window == 3 else None)
    got = hx.extract_events(fr, c).sorted()
    want = extract_reference(fr, c).sorted()
    assert len(got) == len(want) > 0
    assert got == want


@pytest.mark.parametrize("window", [3, 5])
def test_csa_matches_the_reference_with_large_clusters_and_tied_energies(window):
    # Three possible ADU values and up to 50% occupancy: clusters that merge in many
    # steps, and many ties for the largest energy (the reference takes the first pixel in
    # raster order, numpy's argmax).
    rng = np.random.default_rng(window)
    for occupancy in (0.05, 0.2, 0.5):
        fr = ((rng.random((100, 17, 13)) < occupancy) * rng.choice([50, 60, 70], (100, 17, 13))).astype(np.uint16)
        for max_size in (None, 2, 5):
            c = cfg(threshold=10, gradients=0.5, charge_sharing="csa", window=window, next_frame=False,
                    max_cluster_size=max_size)
            got, want = hx.extract_events(fr, c).sorted(), extract_reference(fr, c).sorted()
            assert len(want) > 0 and got == want
            if occupancy == 0.5 and max_size is None:
                assert want.size.max() >= 8


@pytest.mark.parametrize("occupancy", [0.0, 0.01, 0.05, 0.5, 1.0])
def test_hits_found_at_every_occupancy_and_block_boundary(occupancy):
    # The scan works on 64-pixel blocks with a branch-free path for the first two hits of
    # a block; shapes below and around multiples of 64 exercise the tail, dense frames
    # the blocks with many hits. Expected: numpy's nonzero of value > threshold map.
    rng = np.random.default_rng(int(occupancy * 100))
    for shape in [(1, 1), (3, 21), (8, 8), (7, 64), (9, 65), (80, 80), (13, 127)]:
        fr = ((rng.random((3, *shape)) < occupancy) * rng.integers(100, 5000, (3, *shape))).astype(np.uint16)
        thr = rng.integers(0, 100, shape)
        ev = hx.extract_events(fr, cfg(threshold=thr, charge_sharing="none")).sorted()
        f, r, c = np.nonzero(fr > thr)
        assert ev.frame.tolist() == f.tolist() and ev.row.tolist() == r.tolist() and ev.col.tolist() == c.tolist()
        assert ev.energy.tolist() == fr[f, r, c].astype(np.float32).tolist()


@pytest.mark.parametrize("mode", ["none", "csd", "csa"])
def test_output_that_fills_partway_through_a_batch_grows_without_losing_or_repeating_events(mode):
    # Room for one event at first: the frame loop stops at the first frame whose kept hits
    # do not fit, the kernel grows the arrays and the loop goes on from that frame's
    # charge-sharing stage, at least once after the first frame (dense 8 x 8 frames,
    # against growth by doubling from 1,024 places).
    # The events and the histogram must be those of the reference chain.
    from hexspec.events import _new_output
    from hexspec.spectra import histogram_reference
    rng = np.random.default_rng(["none", "csd", "csa"].index(mode))
    fr = ((rng.random((400, 8, 8)) < 0.4) * rng.integers(20, 4000, (400, 8, 8))).astype(np.uint16)
    c = cfg(charge_sharing=mode, next_frame=True, gradients=0.05, bins=hx.EnergyBins(0, 100, 1.0))
    ex, acc = hx.EventExtractor(c, (8, 8)), hx.SpectrumAccumulator(c, (8, 8))
    flat = fr.reshape(400, 64)
    target = acc.histogram_target((8, 8))
    flow = np.zeros(2, np.int64)
    out, n = ex._run(flat, np.arange(400), ex._last_hit, ex._state, ex._stats, target, flow, capacity=1)
    got = hx.EventList(*(a[:n] for a in out))
    want = extract_reference(fr, c)
    assert n > 1024 and out[0].shape[0] >= 2048   # it did grow partway through
    assert got.sorted() == want.sorted()
    counts, under, over = histogram_reference(want.row, want.col, want.energy, (8, 8), c.bins)
    assert np.array_equal(target.counts.reshape(counts.shape), counts) and flow.tolist() == [under, over]


def test_stage_references_agree_with_hand_values():
    fr = np.array([[[5, 20], [30, 0]], [[25, 0], [31, 1]]], np.uint16)
    hits = threshold_reference(fr, 10)
    assert hits.tolist() == [[[False, True], [True, False]], [[True, False], [True, False]]]
    assert next_frame_reference(hits, [0, 1]).tolist() == [[[False, True], [True, False]], [[True, False], [False, False]]]
    assert calibrate_reference(fr[:1], 0.5, 1.0)[0].tolist() == [[3.5, 11.0], [16.0, 1.0]]
    pair = np.zeros((1, 4, 4), bool)
    pair[0, 1, 1] = pair[0, 1, 2] = pair[0, 3, 3] = True
    assert np.argwhere(csd_reference(pair, 3)).tolist() == [[0, 3, 3]]


def test_threaded_extraction_equals_single_threaded_including_state():
    rng = np.random.default_rng(11)
    n = 4301
    fr = ((rng.random((n, 20, 20)) < 0.03) * rng.integers(20, 4000, (n, 20, 20))).astype(np.uint16)
    c = cfg(charge_sharing="csa", next_frame=True)
    one = hx.EventExtractor(c, (20, 20), threads=1)
    two = hx.EventExtractor(c, (20, 20), threads=2)
    for part in (slice(0, 150), slice(150, 2750), slice(2750, n)):
        batch = hx.FrameBatch(fr[part], np.arange(n)[part])
        a, b = one(batch), two(batch)
        assert a == b
    assert one.stats == two.stats and one.stats["next_frame_removed"] > 100
    two.close()


def test_wrong_frame_shape_for_the_extractor_names_both_shapes():
    ex = hx.EventExtractor(cfg(), (8, 8))
    with pytest.raises(hx.FormatError, match=r"expected frames of shape \(8, 8\), found \(8, 9\)"):
        ex(np.zeros((2, 8, 9), np.uint16))


def test_map_of_the_wrong_shape_is_a_config_error_naming_the_expected_shape():
    with pytest.raises(hx.ConfigError, match=r"expected a map of shape \(8, 8\).*found \(4, 4\)"):
        hx.EventExtractor(cfg(gradients=np.ones((4, 4))), (8, 8))


def test_chunk_outputs_are_joined_in_order_in_place_or_by_concatenation():
    from hexspec.events import _join, _new_output

    def part(capacity, frames):
        out = _new_output(capacity)
        for k, f in enumerate(frames):
            for a, v in zip(out, (f, f % 7, f % 5, f * 0.5, 1)):
                a[k] = v
        return out, len(frames)

    first = part(5, [0, 1, 2])
    ev = _join([first, part(4, [3, 4])])   # room for all five: appended to the first arrays
    assert ev.frame.tolist() == [0, 1, 2, 3, 4] and ev.energy.tolist() == [0, 0.5, 1, 1.5, 2]
    assert np.shares_memory(ev.frame, first[0][0])
    ev = _join([part(5, [0, 1, 2]), part(3, [3, 4, 5])])   # no room: concatenated
    assert ev.frame.tolist() == [0, 1, 2, 3, 4, 5] and ev.row.tolist() == [0, 1, 2, 3, 4, 5]
