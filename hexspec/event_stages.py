"""The stages of frames -> events, each a small numba function beside its numpy reference.

One frame passes through them in this order (hexspec.events._extract_kernel is the loop
that runs them over a batch, fused: one pass over the frame memory, then work
proportional to the hits only):

==========================  ==============================  ===========================
stage                       numba                           numpy reference
==========================  ==============================  ===========================
threshold scan              :func:`scan_hits`               :func:`threshold_reference`
acquisition restart         :func:`restart_if_backwards`    (in next_frame_reference)
next-frame + calibration    :func:`keep_and_calibrate`      :func:`next_frame_reference`,
                                                            :func:`calibrate_reference`
output growth               :func:`grow_output`             (array concatenation)
no charge sharing           :func:`emit_all`                (every kept hit)
charge-sharing discrim.     :func:`csd_frame`               :func:`csd_reference`
charge-sharing addition     :func:`csa_frame`               :func:`csa_reference`
histogram step              :func:`queue_increments`,       hexspec.spectra.histogram_reference
                            :func:`apply_increments`
prefetch                    :func:`prefetch_pending`, and   (no result: only timing)
                            two lines in each hit loop
==========================  ==============================  ===========================

The numba stages are plain ``@njit`` functions that the fused loop
(hexspec.events._extract_frames) calls once per frame; LLVM inlines the small ones, and a
call of the others costs far less than the frame's work. They are not numba
``inline="always"``: numba then counts references to every array argument of an inlined
stage, once per frame, each count an atomic instruction that also waits for the frame's
outstanding stores, and the stages written that way (the output arrays passed as one
tuple) measured 5-7% slower than the single-body kernel they replaced
(benchmarks/bench_events.py --against). For the same reason no stage takes or returns a
tuple of arrays or a view of one frame of the batch. Each stage can be called alone,
which is how tests/test_event_stages.py checks it against its reference on random input.

Charge-sharing handling is order-independent: whether a hit is kept, and which
cluster it joins, depends only on the set of hits in its frame, never on the raster
order in which pixels are visited (unlike the raster-order windows of existing tools).

Prefetch: while the hits of frame f are processed, the hit loops also ask the CPU to
load frame f+1, a few cache lines per hit (a cursor advancing two lines per raw hit
and one per kept hit, about three lines per hit in all: one 80x80 frame is 200 lines,
so at ~1% occupancy most of the next frame is requested before its scan starts).
Otherwise the memory sits idle during the hit work and the scan then waits for DRAM:
measured 1.2-1.3x faster for the whole kernel over the benchmark's 256 MB of frames.
A burst of prefetches for the whole frame at once was no faster: it fills the
CPU's queue of outstanding misses and stalls. The kept-hit loops likewise prefetch
the cube counters of the previous frame's events (one per hit), which are incremented
at the end of the frame (see :func:`queue_increments`). A prefetch never faults, so
the empty cube of a run without histogram is harmless.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._simd import LINE_U16, MASK_LANES, cttz64, gt_mask64, prefetch, prefetch_write
from .eventlist import EventList

MODE_NONE, MODE_CSD, MODE_CSA = 0, 1, 2

#: "no hit yet": no frame number can be one after it
NEVER = np.iinfo(np.int64).min

#: every stage (see the module docstring for why not inline="always")
stage = njit(cache=True, nogil=True)
#: an index known to be >= 0, as unsigned: numba tests a signed index for a negative value
#: (to count from the end) on every access
U = np.uint64


# ----------------------------------------------------------------------------- threshold

@stage
def scan_hits(frames, start, thr, hits):
    """Indices of pixels with frame > thr into ``hits`` (in raster order); returns their number.

    The frame is frames[start:start + rows * cols] of a flat uint16 array (a whole batch,
    so that the fused loop makes no view of each frame: numba counts references to
    views), ``thr`` is flat (rows * cols,) uint16. ``hits`` needs room for one more entry
    than there are pixels. Blocks of 64 pixels are compared as one vector
    operation giving a bit mask (hexspec._simd), and only the set bits are visited. The
    first two bits of every block are extracted without branches (a store that is not
    counted is overwritten later); the loop runs only for blocks with three or more hits.
    At ~1% occupancy whether a block has a hit is a coin toss, so the branches this
    removes were mispredicted half the time: measured 2x faster over the benchmark's
    frames than testing each block.
    """
    n = thr.shape[0]
    nb = n // MASK_LANES
    nh = 0
    one = np.uint64(1)
    for b in range(nb):
        base = b * MASK_LANES
        m = gt_mask64(frames, start + base, thr, base)   # U below: see csd_frame
        hits[U(nh)] = base + np.int64(cttz64(m))
        nh += m != 0
        m &= m - one
        hits[U(nh)] = base + np.int64(cttz64(m))
        nh += m != 0
        m &= m - one
        while m != 0:
            hits[U(nh)] = base + np.int64(cttz64(m))
            nh += 1
            m &= m - one
    for i in range(nb * MASK_LANES, n):
        if frames[start + i] > thr[i]:
            hits[U(nh)] = i
            nh += 1
    return nh


def threshold_reference(frames, threshold):
    """Hit mask (n, rows, cols): value > threshold (scalar or (rows, cols) map)."""
    return np.asarray(frames) > np.asarray(threshold, dtype=np.float64)


# ----------------------------------------------------------------------------- next frame

@stage
def restart_if_backwards(last_hit, state, fnum):
    """Start a new frame numbered ``fnum``: a number that does not increase means the
    detector restarted its acquisition (odin-data resets frame_num to 0), so the
    previous frame's hits no longer precede this one. ``state[0]`` is the last number seen."""
    if fnum <= state[0]:
        for p in range(last_hit.shape[0]):   # not last_hit[:]: a slice is a view numba counts references to
            last_hit[p] = NEVER
    state[0] = fnum


@stage
def calibrated(value, gain, offset):
    """Energy of one raw value, E = ADU * gain + offset in float64, rounded to float32 once,
    as stored, so cluster sums match the reference."""
    return np.float64(np.float32(np.float64(value) * gain + offset))


@stage
def keep_and_calibrate(frames, start, hits, nh, last_hit, fnum, use_next, cal, energy, nxt, pf, pf_last):
    """Next-frame correction and calibration in one pass over the ``nh`` raw hits.

    ``last_hit`` (rows * cols, int64) holds the frame number of each pixel's latest raw
    hit, so "hit in the previous consecutive frame" is the single test
    last_hit[p] == fnum - 1, with no per-frame clearing. Kept hits are compacted to the
    front of ``hits``, their energies (``cal`` rows: gain, offset) into ``energy``; the
    frame is frames[start:] as in :func:`scan_hits`. Returns (kept, prefetch cursor).
    Each raw hit asks for two lines of ``nxt`` at the cursor ``pf`` (clamped to ``pf_last``).

    Written without branches on the data (the store always happens, the count advances
    only for kept hits): at ~1% occupancy mispredictions would cost more than the work.
    """
    nk = 0
    for i in range(nh):
        p = U(hits[i])   # U: see csd_frame
        repeat = use_next and last_hit[p] == fnum - 1
        last_hit[p] = fnum
        prefetch(nxt, pf)
        prefetch(nxt, min(pf + LINE_U16, pf_last))
        pf = min(pf + 2 * LINE_U16, pf_last)
        hits[U(nk)] = p
        energy[U(nk)] = calibrated(frames[U(start) + p], cal[p, 0], cal[p, 1])
        nk += 1 - repeat
    return nk, pf


def next_frame_reference(hits, frame_numbers, prev_hits=None, prev_frame_number=None):
    """Hits left after discarding those also hit in the previous consecutive frame."""
    hits = np.asarray(hits, dtype=bool)
    fn = np.asarray(frame_numbers, dtype=np.int64)
    prev = np.empty_like(hits)
    prev[1:] = hits[:-1]
    prev[0] = prev_hits if prev_hits is not None else False
    prev_fn = np.empty_like(fn)
    prev_fn[1:] = fn[:-1]
    prev_fn[0] = prev_frame_number if prev_frame_number is not None else fn[0] - 2
    consecutive = (fn == prev_fn + 1)[:, None, None]
    return hits & ~(prev & consecutive)


def calibrate_reference(frames, gradients, intercepts):
    """Energies (n, rows, cols) float32: ADU * gradient + intercept, evaluated in float64."""
    e = np.asarray(frames).astype(np.float64) * np.asarray(gradients, np.float64) + np.asarray(intercepts, np.float64)
    return e.astype(np.float32)


# ----------------------------------------------------------------------------- output

@stage
def grow_output(of, orow, ocol, oe, osz, nout, nk):
    """The event arrays (frame, row, col, energy, size), with room for ``nk`` more after
    the first ``nout``: the same arrays, or larger ones holding their events."""
    cap = of.shape[0]
    if nout + nk <= cap:
        return of, orow, ocol, oe, osz
    while nout + nk > cap:
        cap = max(2 * cap, 1024)
    nf = np.empty(cap, np.int64)
    nrow = np.empty(cap, np.uint16)
    ncol = np.empty(cap, np.uint16)
    ne = np.empty(cap, np.float32)
    nsz = np.empty(cap, np.uint8)
    nf[:nout] = of[:nout]
    nrow[:nout] = orow[:nout]
    ncol[:nout] = ocol[:nout]
    ne[:nout] = oe[:nout]
    nsz[:nout] = osz[:nout]
    return nf, nrow, ncol, ne, nsz


@stage
def write_event(of, orow, ocol, oe, osz, nout, fnum, rc, energy, size):
    """Write one event at position ``nout`` of the output arrays; ``rc`` is the pixel's
    (row << 16) | col entry of :func:`pixel_tables`. The stages write every place in
    turn and advance ``nout`` by whether the event counts (branch-free)."""
    o = U(nout)
    of[o] = fnum
    orow[o] = rc >> 16
    ocol[o] = rc & 0xFFFF
    oe[o] = energy
    osz[o] = size


@stage
def emit_all(hits, nk, energy, rowcol, fnum, of, orow, ocol, oe, osz, nout, nxt, pf, pf_last, counts, pending,
             last_pend):
    """No charge-sharing handling: every kept hit is an event. Returns (events, cursor)."""
    for i in range(nk):
        prefetch(nxt, pf)
        pf = min(pf + LINE_U16, pf_last)
        prefetch_write(counts, pending[min(i, last_pend)])
        write_event(of, orow, ocol, oe, osz, nout, fnum, rowcol[U(hits[i])], energy[i], 1)   # U: see csd_frame
        nout += 1
    return nout, pf


# ----------------------------------------------------------------------------- charge sharing

@njit(cache=True, nogil=True)
def neighbourhood(rows, cols, half):
    """Scratch for the charge-sharing stages of a (rows, cols) detector and a cluster
    window of half-width ``half``: (back, label, pw).

    ``label`` maps padded pixels to positions in the hit list (-1: no hit); it is padded
    by ``half`` on every side so neighbour lookups need no bounds checks, and ``pw`` is its
    row length. ``back`` holds the padded-index offsets of the backward half of the
    window (rows above, and the same row to the left): hits come out of the scan in
    raster order, so each pair of hits within a window of each other is found once, from
    the later hit, by looking only there.
    """
    pw = cols + 2 * half
    back = np.empty((2 * half + 1) * half + half, np.int32)
    k = 0
    for dr in range(-half, 1):
        for dc in range(-half, half + 1):
            if dr < 0 or dc < 0:
                back[k] = dr * pw + dc
                k += 1
    label = np.full((rows + 2 * half) * pw, -1, np.int32)
    return back, label, pw


@stage
def padded_position(rc, half, pw):
    return ((rc >> 16) + half) * pw + (rc & 0xFFFF) + half


@stage
def csd_frame(hits, nk, energy, rowcol, fnum, back, label, pw, half, qpos, shared,
              of, orow, ocol, oe, osz, nout, nxt, pf, pf_last, counts, pending, last_pend):
    """Charge-sharing discrimination: keep only hits with no other hit in their cluster
    window. Returns (events, cursor, hits removed as shared).

    One pass labels each hit and marks both ends of every backward link as shared
    (branch-free: a missing neighbour writes the sink entry ``shared[npix]``); the second
    emits the unshared hits and clears the scratch (``label``, ``shared``) for the next frame.
    """
    # Indices that cannot be negative are cast to unsigned (U): numba then leaves out its
    # test for a negative index, three instructions on every access of these loops.
    sink = shared.shape[0] - 1
    nback = back.shape[0]
    for i in range(nk):
        q = padded_position(rowcol[U(hits[i])], half, pw)
        qpos[i] = q
        label[U(q)] = i
        prefetch(nxt, pf)
        pf = min(pf + LINE_U16, pf_last)
        prefetch_write(counts, pending[min(i, last_pend)])
        any_found = False
        for k in range(nback):
            j = label[U(q + back[k])]
            found = j >= 0
            any_found |= found
            shared[U(j if found else sink)] = 1
        shared[i] |= any_found
    nshared = 0
    for i in range(nk):
        s = shared[i]
        write_event(of, orow, ocol, oe, osz, nout, fnum, rowcol[U(hits[i])], energy[i], 1)
        nout += 1 - s
        nshared += s
        shared[i] = 0
        label[U(qpos[i])] = -1
    return nout, pf, nshared


def csd_reference(kept, cluster_window=3):
    """Keep only hits with no other hit in their cluster window (box sum of hits equal to one)."""
    from scipy.ndimage import uniform_filter
    kept = np.asarray(kept, dtype=bool)
    w = cluster_window
    box = np.rint(uniform_filter(kept.astype(np.float64), size=(1, w, w), mode="constant") * w * w)
    return kept & (box == 1)


@njit(cache=True, nogil=True)
def find_root(parent, k):
    """Root of ``k`` in the union-find forest ``parent``, halving the path on the way."""
    while parent[k] != k:
        parent[k] = parent[parent[k]]
        k = parent[k]
    return k


@stage
def csa_frame(hits, nk, energy, rowcol, fnum, back, label, pw, half, qpos, parent, csize, best, esum, max_size,
              of, orow, ocol, oe, osz, nout, nxt, pf, pf_last, counts, pending, last_pend):
    """Charge-sharing addition: each cluster of hits within a cluster window of one
    another becomes one event at its largest-energy pixel, with the summed energy.
    Returns (events, cursor, hits merged into others, clusters dropped as larger than
    ``max_size`` (0: no limit)).

    Union-find in which every root is the smallest member: links always point to a
    smaller position, so parent[i] <= i and one increasing pass (the emission loop)
    finishes the compression. Each root carries its cluster's size, energy sum and
    largest-energy pixel, merged when clusters join. The sums are of float32 energies
    (24 significant bits) in float64 (53 bits): exact in any order while a cluster's
    energies lie within a factor 2**20 of each other (clusters of up to 512 pixels), so
    they equal the reference's sum whatever order either adds them in.
    """
    nback = back.shape[0]
    for i in range(nk):   # U: see csd_frame
        q = padded_position(rowcol[U(hits[i])], half, pw)
        qpos[i] = q
        label[U(q)] = i
        prefetch(nxt, pf)
        pf = min(pf + LINE_U16, pf_last)
        prefetch_write(counts, pending[min(i, last_pend)])
        parent[i] = i
        csize[i] = 1
        esum[i] = energy[i]
        best[i] = i
        for k in range(nback):
            j = label[U(q + back[k])]
            if j >= 0:
                a = find_root(parent, i)
                b = find_root(parent, j)
                if a != b:
                    lo, hi = min(a, b), max(a, b)
                    parent[hi] = lo
                    csize[lo] += csize[hi]
                    esum[lo] += esum[hi]
                    # the larger energy; on a tie the first pixel in raster order,
                    # as the reference's argmax, so the result is position-defined
                    bl, bh = best[lo], best[hi]
                    if energy[bh] > energy[bl] or (energy[bh] == energy[bl] and bh < bl):
                        best[lo] = bh
    # emit each cluster at its largest-energy pixel, in raster order of that pixel
    # (the store always happens; the count advances only for emitted clusters)
    merged = 0
    dropped = 0
    for i in range(nk):
        label[U(qpos[i])] = -1
        root = parent[U(parent[i])]   # parent[i] < i is already final
        parent[i] = root
        n_in = csize[U(root)]
        is_best = best[U(root)] == i
        too_large = max_size > 0 and n_in > max_size
        write_event(of, orow, ocol, oe, osz, nout, fnum, rowcol[U(hits[i])], esum[U(root)], min(n_in, 255))
        nout += is_best and not too_large
        merged += (n_in - 1) if is_best else 0
        dropped += is_best and too_large
    return nout, pf, merged, dropped


def csa_reference(kept, energy, frame_numbers, cluster_window=3, max_cluster_size=None):
    """Clusters by connected components of the 'within the cluster window' graph (scipy.sparse.csgraph).

    Returns an EventList in (frame, row, col) order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    half = cluster_window // 2
    out = []
    for f in range(kept.shape[0]):
        r, c = np.nonzero(kept[f])
        if r.size == 0:
            continue
        e = energy[f][r, c].astype(np.float64)
        near = (np.abs(r[:, None] - r[None, :]) <= half) & (np.abs(c[:, None] - c[None, :]) <= half)
        i, j = np.nonzero(near)
        ncomp, lab = connected_components(coo_matrix((np.ones(i.size), (i, j)), shape=(r.size, r.size)), directed=False)
        for k in range(ncomp):
            members = np.flatnonzero(lab == k)
            if max_cluster_size is not None and members.size > max_cluster_size:
                continue
            top = members[np.argmax(e[members])]   # argmax takes the first (raster order) on ties
            out.append((frame_numbers[f], r[top], c[top], e[members].sum(), members.size))
    if not out:
        return EventList.empty()
    a = np.array(out, dtype=np.float64)
    return EventList(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4]).sorted()


# ----------------------------------------------------------------------------- histogram

@stage
def queue_increments(out_row, out_col, out_energy, lo, hi, cols, nbins, hist_start, hist_inv, pending, flow):
    """Cube indices of events lo..hi-1 into ``pending`` (returns how many); under- and
    overflow into ``flow``. The binning is exactly that of
    hexspec.spectra.histogram_events. Branch-free: whether an event is in range is data.

    The increments wait until the end of the next frame (:func:`apply_increments`),
    while whose hit loops prefetch their counters (:func:`prefetch_pending`): a 25 MB
    cube misses the caches on nearly every event, so incrementing at once would wait
    for DRAM each time. Measured against histogramming the returned events afterwards
    (bucketed, see hexspec.spectra): 1.01-1.07x faster single-threaded, 1.2x with two
    threads, which need no second pass over the events.
    """
    m = 0
    under = 0
    over = 0
    for k in range(lo, hi):
        x = (np.float64(out_energy[k]) - hist_start) * hist_inv
        inside = (x >= 0.0) & (x < nbins)
        below = x < 0.0
        idx = (np.int64(out_row[k]) * cols + np.int64(out_col[k])) * nbins + (int(x) if inside else 0)
        pending[U(m)] = idx   # U: see csd_frame
        m += inside
        under += below
        over += not (inside or below)   # above the range, or not a number
    flow[0] += under
    flow[1] += over
    return m


@stage
def apply_increments(counts, pending, n):
    """Add one count at each of the first ``n`` cube indices in ``pending``."""
    for k in range(n):
        counts[U(pending[k])] += 1   # U: see csd_frame


@stage
def prefetch_pending(counts, pending, lo, hi):
    """Ask for the cube counters pending[lo:hi] (those the kept-hit loop will not reach)."""
    for i in range(lo, hi):
        prefetch_write(counts, pending[i])


# ----------------------------------------------------------------------------- tables

@njit(cache=True, nogil=True)
def pixel_tables(rows, cols, gain, offset):
    """Per-pixel tables laid out so one hit touches few cache lines: row and column packed
    in one word (no integer division per hit), gain and intercept side by side."""
    npix = rows * cols
    rowcol = np.empty(npix, np.uint32)
    cal = np.empty((npix, 2), np.float64)
    for p in range(npix):
        r = p // cols
        rowcol[p] = (r << 16) | (p - r * cols)
        cal[p, 0] = gain[p]
        cal[p, 1] = offset[p]
    return rowcol, cal
