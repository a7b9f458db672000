"""Each numba stage of frames -> events, called alone, against its numpy reference on random input."""

import numpy as np
import pytest

import hexspec as hx
from hexspec.event_stages import (NEVER, apply_increments, calibrate_reference, csa_frame, csa_reference, csd_frame,
                                  csd_reference, emit_all, grow_output, keep_and_calibrate, neighbourhood,
                                  next_frame_reference, pixel_tables, prefetch_pending,
                                  queue_increments, restart_if_backwards, scan_hits, threshold_reference)
from hexspec.spectra import histogram_reference

NO_COUNTS = np.zeros(0, np.uint32)   # no histogram: the prefetches that name it are harmless
NO_PENDING = np.zeros(1, np.int64)


def random_frames(rng, n, rows, cols, occupancy):
    frames = np.zeros((n, rows, cols), np.uint16)
    hit = rng.random(frames.shape) < occupancy
    frames[hit] = rng.integers(1, 4000, int(hit.sum()))
    frames[~hit] = rng.integers(0, 60, int((~hit).sum()))   # noise below the thresholds
    return frames


def output(capacity):
    return (np.zeros(capacity, np.int64), np.zeros(capacity, np.uint16), np.zeros(capacity, np.uint16),
            np.zeros(capacity, np.float32), np.zeros(capacity, np.uint8))


def kept_hits(rng, rows, cols, occupancy):
    """A frame's kept hits as the scan leaves them: raster-ordered pixel indices and energies."""
    p = np.flatnonzero(rng.random(rows * cols) < occupancy).astype(np.int32)
    e = rng.integers(1, 200, p.size).astype(np.float32).astype(np.float64)   # ties happen
    return p, e


@pytest.mark.parametrize("shape", [(80, 80), (7, 9), (10, 13)])
def test_threshold_scan_finds_exactly_the_pixels_above_their_threshold(shape):
    rng = np.random.default_rng(shape[1])
    rows, cols = shape
    frames = random_frames(rng, 20, rows, cols, 0.05)
    thr = rng.integers(40, 200, shape).astype(np.uint16)
    hits = np.empty(rows * cols + 1, np.int32)
    expected = threshold_reference(frames, thr)
    flat = frames.reshape(-1)   # the scan reads frame f of the batch at offset f * rows * cols
    for f in range(len(frames)):
        nh = scan_hits(flat, f * rows * cols, thr.reshape(-1), hits)
        assert hits[:nh].tolist() == np.flatnonzero(expected[f]).tolist()


def test_next_frame_and_calibration_match_their_references_across_gaps_and_a_restart():
    rng = np.random.default_rng(1)
    rows, cols = 9, 11
    frames = random_frames(rng, 40, rows, cols, 0.3)   # dense, so repeats are common
    fnums = np.r_[np.arange(0, 10), np.arange(12, 22), np.arange(0, 20)]   # a gap, then a restart at 0
    thr = np.full(rows * cols, 60, np.uint16)
    gain, offset = rng.uniform(0.03, 0.07, rows * cols), rng.uniform(-1, 1, rows * cols)
    _, cal = pixel_tables(rows, cols, gain, offset)
    want = next_frame_reference(threshold_reference(frames, 60), fnums)
    want_e = calibrate_reference(frames, gain.reshape(rows, cols), offset.reshape(rows, cols))
    last_hit, state = np.full(rows * cols, NEVER, np.int64), np.full(1, NEVER, np.int64)
    hits, energy = np.empty(rows * cols + 1, np.int32), np.empty(rows * cols, np.float64)
    removed = 0
    for f in range(len(frames)):
        flat = frames[f].reshape(-1)
        restart_if_backwards(last_hit, state, fnums[f])
        nh = scan_hits(flat, 0, thr, hits)
        nk, _ = keep_and_calibrate(flat, 0, hits, nh, last_hit, fnums[f], True, cal, energy, flat, 0, 0)
        removed += nh - nk
        assert hits[:nk].tolist() == np.flatnonzero(want[f]).tolist()
        assert energy[:nk].tolist() == want_e[f].reshape(-1)[hits[:nk]].astype(np.float64).tolist()
    assert removed > 50   # the data did exercise the correction


def test_without_next_frame_every_hit_is_kept_and_the_state_still_advances():
    rng = np.random.default_rng(2)
    flat = random_frames(rng, 1, 5, 5, 0.5)[0].reshape(-1)
    _, cal = pixel_tables(5, 5, np.ones(25), np.zeros(25))
    last_hit, hits, energy = np.full(25, 6, np.int64), np.empty(26, np.int32), np.empty(25)
    nh = scan_hits(flat, 0, np.full(25, 60, np.uint16), hits)
    nk, _ = keep_and_calibrate(flat, 0, hits, nh, last_hit, 7, False, cal, energy, flat, 0, 0)
    assert nk == nh > 0 and set(np.flatnonzero(last_hit == 7)) == set(hits[:nh].tolist())


def test_a_frame_number_that_does_not_increase_forgets_the_previous_hits():
    last_hit, state = np.array([4, 5, NEVER]), np.array([5])
    restart_if_backwards(last_hit, state, 6)
    assert last_hit.tolist() == [4, 5, NEVER] and state[0] == 6
    restart_if_backwards(last_hit, state, 0)
    assert last_hit.tolist() == [NEVER] * 3 and state[0] == 0


def test_output_growth_keeps_the_events_written_so_far():
    out = output(3)
    for k, a in enumerate(out):
        a[:] = [k + 1, k + 2, k + 3]
    same = grow_output(*out, 1, 2)
    assert all(a is b for a, b in zip(same, out))
    grown = grow_output(*out, 3, 2000)
    assert grown[0].shape[0] >= 2003 and [g.dtype for g in grown] == [a.dtype for a in out]
    assert [g[:3].tolist() for g in grown] == [a.tolist() for a in out]


def test_without_charge_sharing_every_kept_hit_is_an_event():
    rng = np.random.default_rng(3)
    rows, cols = 6, 70
    rowcol, _ = pixel_tables(rows, cols, np.ones(rows * cols), np.zeros(rows * cols))
    p, e = kept_hits(rng, rows, cols, 0.1)
    out = output(p.size + 2)
    nout, _ = emit_all(p, p.size, e, rowcol, 42, *out, 2, p.astype(np.uint16), 0, 0, NO_COUNTS, NO_PENDING, 0)
    assert nout == p.size + 2
    assert out[1][2:nout].tolist() == (p // cols).tolist() and out[2][2:nout].tolist() == (p % cols).tolist()
    assert out[3][2:nout].tolist() == e.astype(np.float32).tolist() and set(out[0][2:nout]) == {42}


@pytest.mark.parametrize("cluster_window", [3, 5])
def test_csd_stage_keeps_the_hits_of_the_reference_and_leaves_its_scratch_clean(cluster_window):
    rng = np.random.default_rng(cluster_window)
    rows, cols, half = 17, 23, cluster_window // 2
    rowcol, _ = pixel_tables(rows, cols, np.ones(rows * cols), np.zeros(rows * cols))
    back, label, pw = neighbourhood(rows, cols, half)
    qpos, shared = np.empty(rows * cols, np.int32), np.zeros(rows * cols + 1, np.uint8)
    total_shared = 0
    for _ in range(30):
        p, e = kept_hits(rng, rows, cols, 0.04)
        mask = np.zeros((1, rows, cols), bool)
        mask.reshape(-1)[p] = True
        want = np.flatnonzero(csd_reference(mask, cluster_window))
        out = output(p.size)
        nout, _, nshared = csd_frame(p, p.size, e, rowcol, 0, back, label, pw, half, qpos, shared,
                                     *out, 0, p.astype(np.uint16), 0, 0, NO_COUNTS, NO_PENDING, 0)
        got = out[1][:nout].astype(int) * cols + out[2][:nout]
        assert got.tolist() == want.tolist() and nshared == p.size - want.size
        assert (label == -1).all() and not shared[:-1].any()
        total_shared += nshared
    assert total_shared > 0


@pytest.mark.parametrize("cluster_window,max_size", [(3, 0), (3, 2), (5, 0), (5, 3)])
def test_csa_stage_sums_the_clusters_of_the_reference(cluster_window, max_size):
    rng = np.random.default_rng(10 * cluster_window + max_size)
    rows, cols, half = 15, 21, cluster_window // 2
    npix = rows * cols
    rowcol, _ = pixel_tables(rows, cols, np.ones(npix), np.zeros(npix))
    back, label, pw = neighbourhood(rows, cols, half)
    scratch = [np.empty(npix, np.int32) for _ in range(4)] + [np.empty(npix, np.float64)]
    qpos, parent, csize, best, esum = scratch
    merged_total = 0
    for f in range(30):
        p, e = kept_hits(rng, rows, cols, 0.08)
        mask, energy = np.zeros((1, rows, cols), bool), np.zeros((1, rows, cols), np.float32)
        mask.reshape(-1)[p], energy.reshape(-1)[p] = True, e
        want = csa_reference(mask, energy, [f], cluster_window, max_size or None)
        out = output(p.size)
        nout, _, merged, _ = csa_frame(p, p.size, e, rowcol, f, back, label, pw, half, qpos, parent, csize, best,
                                       esum, max_size, *out, 0, p.astype(np.uint16), 0, 0, NO_COUNTS, NO_PENDING, 0)
        got = hx.EventList(*(a[:nout] for a in out))
        assert got == want
        assert (label == -1).all()
        merged_total += merged
    assert merged_total > 0


def test_histogram_step_counts_what_the_reference_counts_with_under_and_overflow():
    rng = np.random.default_rng(4)
    rows, cols, bins = 4, 5, hx.EnergyBins(10.0, 50.0, 0.5)
    n = 3000
    row, col = rng.integers(0, rows, n).astype(np.uint16), rng.integers(0, cols, n).astype(np.uint16)
    energy = rng.uniform(0.0, 60.0, n).astype(np.float32)
    energy[:3] = [np.nan, 10.0, 50.0]   # not a number (overflow), the first edge, the end (overflow)
    want, under, over = histogram_reference(row, col, energy, (rows, cols), bins)
    counts, flow = np.zeros(rows * cols * bins.n, np.uint32), np.zeros(2, np.int64)
    pending = np.empty(n, np.int64)
    for lo in range(0, n, 700):   # in pieces, as frame by frame
        hi = min(lo + 700, n)
        m = queue_increments(row, col, energy, lo, hi, cols, bins.n, bins.start, 1.0 / bins.width, pending, flow)
        apply_increments(counts, pending, m)
    assert np.array_equal(counts.reshape(rows, cols, bins.n), want)
    assert flow.tolist() == [under, over] and over >= 2


def test_prefetching_the_pending_counters_changes_nothing():
    counts, pending = np.arange(10, dtype=np.uint32), np.array([3, 9, 0], np.int64)
    prefetch_pending(counts, pending, 0, 3)   # a hint to the memory system only
    prefetch_pending(NO_COUNTS, pending, 0, 3)   # even into an empty cube: a prefetch never faults
    assert counts.tolist() == list(range(10)) and pending.tolist() == [3, 9, 0]
