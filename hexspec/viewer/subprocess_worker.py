"""Processing for the live viewer in a child process, for full-rate detector streams.

:class:`~hexspec.viewer.processor.LiveProcessor` runs the source in a thread of the
viewer's own process. At 9 kHz the source's per-message Python work (receiving and
validating odin-data messages) then competes with the display for the interpreter
lock, and the refresh rate suffers. :class:`SubprocessProcessor` opens the source by
URL in a child process instead: the child reads, extracts events and histograms them
into a cube in shared memory; the display reads that cube directly. Both classes offer
the same methods, so the window works with either.

Shared state: a small array of counters and flags, one lock (held by the child while
it adds a batch, by the display while it reads), a cube in a shared-memory block
created by the child (a new block when new settings change the bins) and announced
on a queue.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from multiprocessing import shared_memory

import numpy as np

from ..config import ProcessingConfig
from ..cube import SpectralCube
from ..errors import ConfigError
from ..frames import GapCounter
from .processor import LiveProcessor
from .reduce import image_and_spectrum, window_bins

log = logging.getLogger(__name__)

# Slots of the shared counter array (float64: exact for counts up to 2**53).
(FRAMES, EVENTS, HITS, BATCHES, SKIPPED, GAP_DROPPED, SRC_DROPPED, SRC_CORRUPT, HAS_SRC_STATS,
 T0, LAST_ARRIVAL, PAUSED, STOP, FINISHED, DROPPED_BASE, CORRUPT_BASE) = range(16)
N_SLOTS = 16


class SubprocessProcessor:
    """Accumulate a spectral cube from a source URL in a child process.

    Parameters
    ----------
    url : str
        Source URL for :func:`hexspec.drivers.open_source` (opened in the child).
    config : ProcessingConfig
    open_options : dict, optional
        Keyword arguments for ``open_source`` (e.g. ``shape``, ``timeout_s``).

    Same methods and counters as :class:`~hexspec.viewer.processor.LiveProcessor`.
    """

    def __init__(self, url: str, config: ProcessingConfig | None = None, open_options: dict | None = None):
        self.url = url
        self.config = config if config is not None else ProcessingConfig()
        if not isinstance(self.config, ProcessingConfig):
            raise ConfigError(f"SubprocessProcessor: expected a ProcessingConfig, found {type(self.config).__name__}")
        # spawn, not fork: forking a process that runs Qt and threads is unsafe.
        ctx = mp.get_context("spawn")
        self._lock = ctx.Lock()
        raw = ctx.RawArray("d", N_SLOTS)
        self._shared = np.frombuffer(raw, dtype=np.float64)
        self._shared[T0] = time.monotonic()
        self._shared[LAST_ARRIVAL] = math.nan
        self._config_queue = ctx.Queue()
        self._info_queue = ctx.Queue()
        self._process = ctx.Process(
            target=_child_main, name="hexspec-view-worker", daemon=True,
            args=(url, dict(open_options or {}), self.config, raw, self._lock, self._config_queue, self._info_queue,
                  os.getpid()))
        self._blocks = []            # shared-memory blocks attached (the last one is current)
        self._counts = None
        self._edges = None
        self._unit = None
        self.shape = None
        self.error = None
        self._started = False

    # ----------------------------------------------------------------- control
    def start(self) -> "SubprocessProcessor":
        if not self._started:
            self._started = True
            self._process.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the child to end; terminate it if it has not within ``timeout`` s; free the cube."""
        self._shared[STOP] = 1.0
        if self._started:
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(1.0)
        self._poll_info()
        self._counts = None
        for block in self._blocks:
            _release(block)
        self._blocks = []

    @property
    def running(self) -> bool:
        return self._started and self._process.is_alive()

    @property
    def finished(self) -> bool:
        return bool(self._shared[FINISHED]) or (self._started and not self._process.is_alive())

    @property
    def paused(self) -> bool:
        return bool(self._shared[PAUSED])

    def pause(self, paused: bool = True) -> None:
        self._shared[PAUSED] = 1.0 if paused else 0.0

    def reset(self) -> None:
        with self._lock:
            if self._counts is not None:
                self._counts[...] = 0
            self._reset_counters()

    def _reset_counters(self):
        s = self._shared
        s[[FRAMES, EVENTS, HITS, BATCHES, SKIPPED, GAP_DROPPED]] = 0.0
        s[DROPPED_BASE], s[CORRUPT_BASE] = s[SRC_DROPPED], s[SRC_CORRUPT]
        s[T0] = time.monotonic()
        s[LAST_ARRIVAL] = math.nan

    def set_config(self, config: ProcessingConfig) -> None:
        """Use new settings from the child's next batch on; accumulation restarts now."""
        if not isinstance(config, ProcessingConfig):
            raise ConfigError(f"SubprocessProcessor.set_config: expected a ProcessingConfig, found {type(config).__name__}")
        if self.shape is not None:
            config.pixel_maps(self.shape)
        self.config = config
        self._config_queue.put(config)
        self.reset()

    wait_until = LiveProcessor.wait_until

    # ----------------------------------------------------------------- news from the child
    def _poll_info(self):
        while True:
            try:
                kind, *payload = self._info_queue.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            if kind == "error":
                self.error = payload[0]
            elif kind == "cube":
                name, shape, edges, unit = payload
                try:
                    block = shared_memory.SharedMemory(name=name)
                except FileNotFoundError:
                    continue    # already replaced by a newer cube
                counts = np.ndarray((shape[0], shape[1], len(edges) - 1), dtype=np.uint32, buffer=block.buf)
                with self._lock:
                    old = self._blocks
                    self._blocks = [block]
                    self._counts, self._edges, self._unit, self.shape = counts, np.asarray(edges), unit, tuple(shape)
                for b in old:
                    _release(b)

    # ----------------------------------------------------------------- reads
    @property
    def ready(self) -> bool:
        self._poll_info()
        return self._counts is not None

    @property
    def unit(self) -> str:
        return self._unit if self._unit is not None else self.config.energy_unit

    @property
    def edges(self) -> np.ndarray:
        return self._edges if self._edges is not None else self.config.resolved_bins().edges

    def image(self, emin=None, emax=None):
        self._poll_info()
        with self._lock:
            if self._counts is None:
                return None
            lo, hi = window_bins(self._edges, emin, emax)
            return self._counts[:, :, lo:hi].sum(axis=2, dtype=np.int64)

    def image_and_spectrum(self, emin=None, emax=None):
        self._poll_info()
        with self._lock:
            if self._counts is None:
                return None, None
            return image_and_spectrum(self._counts, *window_bins(self._edges, emin, emax))

    def spectrum(self, mask=None):
        self._poll_info()
        with self._lock:
            if self._counts is None:
                return None
            if mask is None:
                return self._counts.sum(axis=(0, 1), dtype=np.int64)
            return self._counts[np.asarray(mask, dtype=bool)].sum(axis=0, dtype=np.int64)

    def pixel_spectrum(self, row: int, col: int):
        self._poll_info()
        with self._lock:
            if self._counts is None:
                return None
            return self._counts[row, col].astype(np.int64)

    def cube(self) -> SpectralCube:
        self._poll_info()
        with self._lock:
            if self._counts is None:
                return None
            return SpectralCube(self._counts.copy(), self._edges.copy(), unit=self._unit)

    def counters(self) -> dict:
        self._poll_info()
        now = time.monotonic()
        with self._lock:
            s = self._shared.copy()
        frames, hits = int(s[FRAMES]), int(s[HITS])
        npix = self.shape[0] * self.shape[1] if self.shape else 0
        if s[HAS_SRC_STATS]:
            dropped = int(s[SRC_DROPPED] - s[DROPPED_BASE])
        else:
            dropped = int(s[GAP_DROPPED])
        return {
            "frames": frames, "events": int(s[EVENTS]), "hits": hits, "batches": int(s[BATCHES]),
            "frames_skipped": int(s[SKIPPED]), "elapsed_s": now - s[T0],
            "idle_s": None if math.isnan(s[LAST_ARRIVAL]) else now - s[LAST_ARRIVAL],
            "dropped": dropped, "corrupt": int(s[SRC_CORRUPT] - s[CORRUPT_BASE]),
            "occupancy": hits / (frames * npix) if frames and npix else 0.0,
            "finished": self.finished, "error": self.error,
        }


def _release(block):
    try:
        block.close()
    except BufferError:
        pass        # a numpy view still points into it; the mapping goes with the process
    try:
        block.unlink()
    except FileNotFoundError:
        pass


# ============================================================================ child process

def _child_main(url, open_options, config, raw, lock, config_queue, info_queue, parent):
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's to handle
    shared = np.frombuffer(raw, dtype=np.float64)
    from ..drivers import open_source
    try:
        source = open_source(url, **open_options)
    except Exception as exc:
        info_queue.put(("error", f"{type(exc).__name__}: {exc}"))
        shared[FINISHED] = 1.0
        return
    worker = _ChildWorker(source, config, shared, lock, config_queue, info_queue)

    def watch_stop():
        # The source may wait for data inside its own loop; stop() ends that loop. A
        # viewer killed outright cannot ask, so its disappearance counts as asking.
        while not shared[STOP] and not shared[FINISHED]:
            if os.getppid() != parent:
                shared[STOP] = 1.0
                break
            time.sleep(0.05)
        stop = getattr(source, "stop", None)
        if stop is not None:
            stop()
    threading.Thread(target=watch_stop, daemon=True).start()
    try:
        for batch in source:
            if shared[STOP]:
                break
            worker.ingest(batch)
    except Exception as exc:    # reported to the display, which stays up
        info_queue.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        worker.update_source_counters()
        shared[FINISHED] = 1.0
        try:
            source.close()
        except Exception:
            log.exception("closing the source failed")
        worker.close()


class _ChildWorker:
    """The child's half: frames -> events -> shared cube, with the counters."""

    def __init__(self, source, config, shared, lock, config_queue, info_queue):
        self.source = source
        self.config = config
        self.shared = shared
        self.lock = lock
        self.config_queue = config_queue
        self.info_queue = info_queue
        self.shape = None
        self.extractor = None
        self.block = None
        self.gaps = GapCounter()
        self.flow = np.zeros(2, np.int64)
        shared[HAS_SRC_STATS] = 1.0 if getattr(source, "stats", None) is not None else 0.0

    def _build(self):
        from ..pipeline import Chain
        # the extract stage of a chain; its accumulate stage is the shared-memory cube here
        self.chain = Chain(self.config, self.shape, accumulate=False)
        self.extractor = self.chain.extractor
        self.bins = self.config.resolved_bins()
        rows, cols = self.shape
        block = shared_memory.SharedMemory(create=True, size=rows * cols * self.bins.n * 4)
        counts = np.ndarray((rows, cols, self.bins.n), dtype=np.uint32, buffer=block.buf)
        counts[...] = 0
        old = self.block
        self.block, self.counts = block, counts
        self.counts_flat = counts.reshape(-1, self.bins.n)
        # The display attaches and unlinks; the child only drops its own mapping of the old block.
        self.info_queue.put(("cube", block.name, self.shape, self.bins.edges, self.config.energy_unit))
        if old is not None:
            try:
                old.close()
            except BufferError:
                pass

    def update_source_counters(self):
        stats = getattr(self.source, "stats", None)
        if stats is not None:
            self.shared[SRC_DROPPED] = float(getattr(stats, "dropped", 0))
            self.shared[SRC_CORRUPT] = float(getattr(stats, "corrupt", 0))

    def ingest(self, batch):
        from ..frames import FrameBatch
        from ..spectra import histogram_events
        if not isinstance(batch, FrameBatch):
            batch = FrameBatch(batch)
        n = len(batch)
        self.update_source_counters()
        if n == 0:
            return
        if self.shape is None:
            self.shape = batch.shape
        if batch.shape != self.shape:
            with self.lock:
                self.shared[SKIPPED] += n
            return
        new_config = None
        while True:
            try:
                new_config = self.config_queue.get_nowait()
            except queue.Empty:
                break
        if new_config is not None:
            self.config = new_config
            self._build()
        elif self.extractor is None:
            self._build()
        dropped = self.gaps.count(batch.frame_numbers)
        if self.shared[PAUSED]:
            with self.lock:
                self.shared[SKIPPED] += n
                self.shared[GAP_DROPPED] += dropped
            return
        hits_before = self.extractor.stats["hits"]
        events = self.chain.extract(batch)
        hits = self.extractor.stats["hits"] - hits_before
        with self.lock:
            histogram_events(events.row, events.col, events.energy, self.shape[1], self.bins.start, self.bins.width,
                             self.counts_flat, self.flow)
            s = self.shared
            s[FRAMES] += n
            s[EVENTS] += len(events)
            s[HITS] += hits
            s[BATCHES] += 1
            s[GAP_DROPPED] += dropped
            s[LAST_ARRIVAL] = time.monotonic()

    def close(self):
        if self.block is not None:
            self.counts = self.counts_flat = None
            try:
                self.block.close()
            except BufferError:
                pass
