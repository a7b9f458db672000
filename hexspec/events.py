"""Frames to photon events: threshold, next-frame correction, calibration, charge sharing.

:class:`EventExtractor` runs the stages of :mod:`hexspec.event_stages` fused in one
numba loop per batch (``_extract_kernel``: one pass over the frame memory, then work
proportional to the hits only), with the next-frame state carried across batches and,
when given an accumulator, the histogram step inside the same loop. The numpy
references of the stages (``threshold_reference`` ... ``extract_reference``) are
re-exported here; the tests compare the whole chain and each stage against them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from ._simd import LINE_U16
from .config import ProcessingConfig
from .errors import ConfigError, FormatError
from .event_stages import (MODE_CSA, MODE_CSD, MODE_NONE, NEVER, apply_increments, calibrate_reference,
                           csa_frame, csa_reference, csd_frame, csd_reference, emit_all, grow_output,
                           keep_and_calibrate, neighbourhood, next_frame_reference, pixel_tables,
                           prefetch_pending, queue_increments, restart_if_backwards, scan_hits,
                           threshold_reference)
from .eventlist import EventList
from .frames import FrameBatch

_MODES = {"none": MODE_NONE, "csd": MODE_CSD, "csa": MODE_CSA}

# Indices into the statistics vector the kernel fills.
STAT_HITS, STAT_NEXT_FRAME, STAT_SHARED, STAT_TOO_LARGE, STAT_EVENTS = range(5)
STAT_NAMES = ("hits", "next_frame_removed", "shared_removed", "clusters_too_large", "events")


# ----------------------------------------------------------------------------- the fused loop

_NO_HIST = (np.empty(0, np.uint32), 1, 0.0, 1.0)   # kernel arguments for "no histogram"
_NO_FLOW = np.zeros(2, np.int64)


@njit(cache=True, nogil=True)
def _extract_kernel(frames, frame_numbers, rows, cols, thr, rowcol, cal,
                    last_hit, state, use_next, mode, half, max_size, stats,
                    out_frame, out_row, out_col, out_energy, out_size,
                    counts, nbins, hist_start, hist_inv, flow):
    """Process a batch of flat frames (n, rows*cols) into event arrays: the stages of
    hexspec.event_stages, frame by frame (``_extract_frames``).

    Events are written into the ``out_*`` arrays; when they are full, larger ones are
    allocated. Returns the arrays written last and the number of events in them.
    ``rowcol`` and ``cal`` are the per-pixel tables of ``pixel_tables``. The next-frame
    state ``last_hit`` and ``state`` (see ``keep_and_calibrate``) is updated in place so
    it crosses batch boundaries; ``stats`` accumulates the STAT_* counters.

    Histogram (when ``counts``, a flat (pixels * nbins) uint32 cube, is not empty): each
    frame's events are queued and counted at the end of the next frame, whose hit loops
    prefetch their counters (``queue_increments``). Threads each get a cube of their own
    (SpectrumAccumulator.histogram_target).
    """
    nframes, npix = frames.shape
    back, label, pw = neighbourhood(rows, cols, half)
    scratch = (np.empty(npix + 1, np.int32),     # hits (+1: see scan_hits)
               np.empty(npix, np.float64),       # their energies
               np.empty(npix, np.int32),         # their padded positions (charge sharing)
               np.zeros(npix + 1, np.uint8),     # csd: shared; entry npix is a sink for branch-free writes
               np.empty(npix, np.int32),         # csa: union-find parent, cluster size, best pixel, energy sum
               np.empty(npix, np.int32),
               np.empty(npix, np.int32),
               np.empty(npix, np.float64))
    pending = np.zeros(npix if counts.shape[0] > 0 else 1, np.int64)   # cube indices of the last frame's events
    f = nout = npend = pf = 0
    nk = -1
    flat = frames.reshape(-1)
    while True:
        f, nout, npend, nk, pf = _extract_frames(flat, npix, frame_numbers, f, nk, pf, cols, thr, rowcol, cal,
                                                 last_hit, state, use_next, mode, half, max_size, stats,
                                                 back, label, pw, scratch,
                                                 out_frame, out_row, out_col, out_energy, out_size, nout,
                                                 counts, nbins, hist_start, hist_inv, flow, pending, npend)
        if f == nframes:
            break
        out_frame, out_row, out_col, out_energy, out_size = grow_output(out_frame, out_row, out_col, out_energy,
                                                                        out_size, nout, nk)
    apply_increments(counts, pending, npend)
    stats[STAT_EVENTS] += nout
    return out_frame, out_row, out_col, out_energy, out_size, nout


@njit(cache=True, nogil=True)
def _extract_frames(flat, npix, frame_numbers, f, nk, pf, cols, thr, rowcol, cal, last_hit, state, use_next,
                    mode, half, max_size, stats, back, label, pw, scratch,
                    out_frame, out_row, out_col, out_energy, out_size, nout,
                    counts, nbins, hist_start, hist_inv, flow, pending, npend):
    """The loop of _extract_kernel: frames f, f+1, ... until the end of the batch, or until
    a frame whose ``nk`` kept hits do not fit in the ``out_*`` arrays. Returns (the next
    frame, events written, pending cube increments, nk, prefetch cursor): nk is -1 at the
    end of the batch; otherwise the caller grows the arrays and calls again with the
    frame, nk and cursor returned, and the loop goes on from that frame's charge-sharing
    stage. ``flat`` is the batch of frames as one flat array: frame f starts at f * npix.

    The arrays stay the same within the loop (they grow in the caller), and no frame is
    taken as a view: numba counts references to an array variable that a loop may
    reassign, to every view, and to every array argument of an inlined function, at every
    pass; each count is an atomic instruction, which also waits for the frame's
    outstanding stores. With the stages inlined, the output arrays in a tuple grown inside
    the loop and a view per frame, the split kernel measured 0.93-0.99x the single-body
    one it replaced; this loop, with the unsigned indices of the stages, 1.07-1.30x
    (CPU time, benchmarks/bench_events.py --against).
    """
    nframes = frame_numbers.shape[0]
    hits, energy, qpos, shared, parent, csize, best, esum = scratch
    do_hist = counts.shape[0] > 0
    cap = out_frame.shape[0]
    while f < nframes:
        fnum = frame_numbers[f]
        # the prefetch cursor runs over the next frame (the last frame: itself), to the
        # last position that stays in it
        pf_last = min(f + 1, nframes - 1) * npix + max(npix - LINE_U16, 0)
        last_pend = max(npend - 1, 0)
        if nk < 0:   # not resumed
            start = f * npix
            restart_if_backwards(last_hit, state, fnum)
            nh = scan_hits(flat, start, thr, hits)
            nk, pf = keep_and_calibrate(flat, start, hits, nh, last_hit, fnum, use_next, cal, energy,
                                        flat, min(f + 1, nframes - 1) * npix, pf_last)
            stats[STAT_HITS] += nh
            stats[STAT_NEXT_FRAME] += nh - nk
            prefetch_pending(counts, pending, nk, npend)
            if nout + nk > cap:
                return f, nout, npend, nk, pf
        nout0 = nout
        if mode == MODE_NONE:
            nout, pf = emit_all(hits, nk, energy, rowcol, fnum, out_frame, out_row, out_col, out_energy, out_size,
                                nout, flat, pf, pf_last, counts, pending, last_pend)
        elif mode == MODE_CSD:
            nout, pf, nshared = csd_frame(hits, nk, energy, rowcol, fnum, back, label, pw, half, qpos, shared,
                                          out_frame, out_row, out_col, out_energy, out_size,
                                          nout, flat, pf, pf_last, counts, pending, last_pend)
            stats[STAT_SHARED] += nshared
        else:
            nout, pf, merged, dropped = csa_frame(hits, nk, energy, rowcol, fnum, back, label, pw, half, qpos,
                                                  parent, csize, best, esum, max_size,
                                                  out_frame, out_row, out_col, out_energy, out_size,
                                                  nout, flat, pf, pf_last, counts, pending, last_pend)
            stats[STAT_SHARED] += merged
            stats[STAT_TOO_LARGE] += dropped
        if do_hist:
            apply_increments(counts, pending, npend)
            npend = queue_increments(out_row, out_col, out_energy, nout0, nout, cols, nbins, hist_start, hist_inv,
                                     pending, flow)
        nk = -1
        f += 1
    return f, nout, npend, nk, pf


@njit(cache=True, nogil=True)
def _prime_state(frame, thr, last_hit, state, fnum):
    """Set the next-frame state as if ``frame`` (number fnum) had just been processed."""
    hits = np.empty(frame.shape[0] + 1, np.int32)
    nh = scan_hits(frame, 0, thr, hits)
    for i in range(nh):
        last_hit[hits[i]] = fnum
    state[0] = fnum


# ----------------------------------------------------------------------------- public API

class EventExtractor:
    """Streaming frames -> events with state carried across batches.

    Parameters
    ----------
    config : ProcessingConfig
    shape : (rows, cols)
        Detector shape; per-pixel maps in ``config`` must match it.
    threads : int
        Worker threads. With more than one, each batch is split into frame chunks
        processed concurrently (the kernels release the GIL); the result is identical
        to the single-threaded one, events in frame order.

    Calling the extractor with a FrameBatch (or an (n, rows, cols) array) returns an
    EventList. ``stats`` counts hits, next-frame removals, hits removed as shared,
    clusters dropped as too large, and events, over the extractor's lifetime.
    """

    def __init__(self, config: ProcessingConfig, shape, threads: int = 1):
        if not isinstance(config, ProcessingConfig):
            raise ConfigError(f"EventExtractor: expected a ProcessingConfig, found {type(config).__name__}")
        self.config = config
        self.shape = (int(shape[0]), int(shape[1]))
        self.thr, self.gain, self.offset = config.pixel_maps(self.shape)
        self._rowcol, self._cal = pixel_tables(self.shape[0], self.shape[1], self.gain, self.offset)
        npix = self.shape[0] * self.shape[1]
        self.threads = max(1, int(threads))
        self._mode = _MODES[config.charge_sharing]
        self._half = config.cluster_window // 2
        self._max_size = config.max_cluster_size or 0
        self._last_hit = np.full(npix, NEVER, np.int64)
        self._state = np.full(1, NEVER, np.int64)
        self._stats = np.zeros(len(STAT_NAMES), np.int64)
        self.frames_seen = 0
        self._pool = None
        self._kernel = _extract_kernel   # benchmarks/bench_events.py --against swaps in an earlier one

    @property
    def stats(self) -> dict:
        d = dict(zip(STAT_NAMES, (int(v) for v in self._stats)))
        d["frames"] = self.frames_seen
        return d

    def reset(self) -> None:
        """Forget the previous frame (next-frame state) and zero the statistics."""
        self._last_hit[:] = NEVER
        self._state[:] = NEVER
        self._stats[:] = 0
        self.frames_seen = 0

    def _as_flat(self, batch):
        if not isinstance(batch, FrameBatch):
            batch = FrameBatch(batch)
        if batch.shape != self.shape:
            raise FormatError(f"EventExtractor: expected frames of shape {self.shape}, found {batch.shape}")
        return batch, batch.frames.reshape(len(batch), self.shape[0] * self.shape[1])

    def _run(self, flat, fnums, last_hit, state, stats, hist=None, flow=None, capacity=None):
        """The kernel over ``flat``: returns (output arrays, number of events in them).
        The arrays are allocated for ``capacity`` events (default: this many frames' worth)."""
        counts, nbins, start, inv = hist if hist is not None else _NO_HIST
        out = _new_output(capacity if capacity is not None else self._capacity(flat.shape[0]))
        *out, n = self._kernel(flat, fnums, self.shape[0], self.shape[1], self.thr, self._rowcol, self._cal,
                               last_hit, state, self.config.next_frame, self._mode,
                               self._half, self._max_size, stats, *out,
                               counts, nbins, start, inv, flow if flow is not None else _NO_FLOW)
        return out, n

    def _capacity(self, nframes):
        # Size the output for the event rate of the frames processed so far (plus a
        # margin) so the kernel rarely has to grow its arrays.
        if self.frames_seen > 0 and self._stats[STAT_EVENTS] > 0:
            per_frame = self._stats[STAT_EVENTS] / self.frames_seen
            return int(nframes * per_frame * 1.25) + 64
        return nframes * 16

    def __call__(self, batch, accumulator=None) -> EventList:
        """Events of ``batch``; with ``accumulator`` (a SpectrumAccumulator) they are also
        histogrammed into it, inside the kernel (see _extract_kernel), exactly as
        ``accumulator.add(events)`` would."""
        batch, flat = self._as_flat(batch)
        n = len(batch)
        if self.threads == 1 or n < 2 * self.threads:
            hist = accumulator.histogram_target(self.shape) if accumulator is not None else None
            flow = np.zeros(2, np.int64)
            out, n_events = self._run(flat, batch.frame_numbers, self._last_hit, self._state, self._stats, hist, flow)
            events = EventList(*(a[:n_events] for a in out))
            flows = [flow]
        else:
            parts, flows = self._run_parallel(flat, batch.frame_numbers, accumulator)
            events = _join(parts)
        self.frames_seen += n   # after the kernel: _capacity needs the rate of the frames before
        if accumulator is not None:
            accumulator.add_counted(len(events), sum(flows))
        return events

    def _run_parallel(self, flat, fnums, accumulator=None):
        # Threads rather than prange: each chunk yields a variable number of events,
        # which a prange loop cannot return without a second counting pass. With an
        # accumulator, each thread increments a cube of its own (histogram_target's parts).
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1)   # the caller is the other thread
        n = flat.shape[0]
        bounds = np.linspace(0, n, self.threads + 1).astype(int)
        chunks = []   # (state, stats) of each chunk
        futures = []
        for k in range(self.threads):
            s, e = bounds[k], bounds[k + 1]
            if k == 0:
                state = (self._last_hit, self._state)
            else:
                # a chunk needs only the raw hits of the frame before it
                state = (np.full_like(self._last_hit, NEVER), np.full(1, NEVER, np.int64))
                _prime_state(flat[s - 1], self.thr, *state, fnums[s - 1])
            stats = np.zeros_like(self._stats)
            flow = np.zeros(2, np.int64)
            hist = accumulator.histogram_target(self.shape, part=k) if accumulator is not None else None
            chunks.append((state, stats, flow, hist))
            if k > 0:
                futures.append(self._pool.submit(self._run, flat[s:e], fnums[s:e], *state, stats, hist, flow))
        # The calling thread works on the first chunk itself rather than waiting: one thread
        # fewer to wake per batch (measured 1.35x -> 1.47x two-thread speed-up for csd).
        # Its output has room for the whole batch, so the other chunks' events can be
        # appended to it (_join) instead of all being copied into new arrays.
        (state, stats, flow, hist), e = chunks[0], bounds[1]
        first = self._run(flat[:e], fnums[:e], *state, stats, hist, flow, capacity=self._capacity(n))
        results = [first] + [f.result() for f in futures]
        for _, stats, _, _ in chunks:
            self._stats += stats
        last = chunks[-1][0]
        if last[0] is not self._last_hit:
            self._last_hit[:] = last[0]
            self._state[:] = last[1]
        return results, [c[2] for c in chunks]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _new_output(capacity):
    """Event arrays (frame, row, col, energy, size) for ``capacity`` events."""
    return (np.empty(capacity, np.int64), np.empty(capacity, np.uint16), np.empty(capacity, np.uint16),
            np.empty(capacity, np.float32), np.empty(capacity, np.uint8))


def _join(parts) -> EventList:
    """One EventList from the (arrays, count) outputs of consecutive chunks: appended to
    the first chunk's arrays when they have room (copying only the later chunks' events),
    else concatenated."""
    total = sum(n for _, n in parts)
    first, n0 = parts[0]
    if first[0].shape[0] >= total:
        pos = n0
        for arrays, n in parts[1:]:
            for dst, src in zip(first, arrays):
                dst[pos:pos + n] = src[:n]
            pos += n
        return EventList(*(a[:total] for a in first))
    return EventList(*(np.concatenate([arrays[k][:n] for arrays, n in parts]) for k in range(5)))


def extract_events(batch, config: ProcessingConfig, threads: int = 1) -> EventList:
    """One-shot frames -> events (no state before the first frame).

    Parameters
    ----------
    batch : FrameBatch or array_like (n, rows, cols) of uint16 ADU
    config : ProcessingConfig
    threads : int
        Worker threads (see :class:`EventExtractor`).
    """
    if not isinstance(batch, FrameBatch):
        batch = FrameBatch(batch)
    ex = EventExtractor(config, batch.shape, threads=threads)
    try:
        return ex(batch)
    finally:
        ex.close()


# ----------------------------------------------------------------------------- numpy reference
# The stages' references are in hexspec.event_stages; this chains them.

def extract_reference(frames, config: ProcessingConfig, frame_numbers=None) -> EventList:
    """The whole chain in plain numpy, for tests and the baseline benchmark."""
    frames = np.asarray(frames)
    n, rows, cols = frames.shape
    fn = np.arange(n) if frame_numbers is None else np.asarray(frame_numbers)
    thr = config.threshold
    hits = threshold_reference(frames, thr)
    kept = next_frame_reference(hits, fn) if config.next_frame else hits
    grad = 1.0 if config.gradients is None else config.gradients
    icpt = 0.0 if config.intercepts is None else config.intercepts
    energy = calibrate_reference(frames, grad, icpt)
    if config.charge_sharing == "csa":
        return csa_reference(kept, energy, fn, config.cluster_window, config.max_cluster_size)
    if config.charge_sharing == "csd":
        kept = csd_reference(kept, config.cluster_window)
    f, r, c = np.nonzero(kept)
    return EventList(fn[f], r, c, energy[f, r, c])
