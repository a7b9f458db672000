"""Background processing for the live viewer: frames -> events -> spectral cube.

A :class:`LiveProcessor` owns one thread that iterates over a frame source and pushes
each batch through a :class:`hexspec.pipeline.Chain` (extract, then accumulate under the
display's lock). The display never touches the source: it reads
images, spectra and counters through short, locked methods, so a source that floods,
stalls or reconnects cannot freeze the window.

This module does not import Qt, so the processing half of the viewer is usable (and
testable) without a display.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ..config import ProcessingConfig
from ..cube import SpectralCube
from ..errors import ConfigError
from ..frames import FrameBatch, GapCounter
from ..pipeline import Chain
from .reduce import image_and_spectrum, window_bins

log = logging.getLogger(__name__)


def _source_counter(source, name):
    """Counter ``name`` from ``source.stats`` (a dict or an object), or None if it has none."""
    stats = getattr(source, "stats", None)
    if stats is None:
        return None
    value = stats.get(name) if isinstance(stats, dict) else getattr(stats, name, None)
    return None if value is None else int(value)


class LiveProcessor:
    """Accumulate a spectral cube from a frame source in a worker thread.

    Parameters
    ----------
    source : iterable of FrameBatch
        Any frame source: ``hexspec.drivers.open_source(url)``, a simulator generator,
        a list. If it has ``stats`` (frames, dropped, corrupt) those counters are
        reported; otherwise dropped frames are counted from frame-number gaps. It is
        closed (``close()``, if it has one) when the worker ends.
    config : ProcessingConfig
        Processing settings; replace them live with :meth:`set_config`.
    shape : (rows, cols), optional
        Detector shape; by default taken from the first batch.

    Notes
    -----
    Events are extracted outside the lock (the numba kernels release the GIL, so
    extraction overlaps with drawing); only the in-place histogram update and the
    display's reads take the lock, each for a few milliseconds.

    While paused, batches are still read from the source (so a detector stream does
    not back up) but are not accumulated; they are counted in ``frames_skipped``.
    """

    def __init__(self, source, config: ProcessingConfig | None = None, shape=None):
        self.source = source
        self.config = config if config is not None else ProcessingConfig()
        if not isinstance(self.config, ProcessingConfig):
            raise ConfigError(f"LiveProcessor: expected a ProcessingConfig, found {type(self.config).__name__}")
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = False
        self._pending_config = None
        self._thread = None
        self._chain = None
        self._extractor = None
        self._accumulator = None
        self.error = None          # message of the exception that ended the worker, if any
        self.finished = False      # the source is exhausted (or failed)
        self._reset_counters()
        if self.shape is not None:
            self._build(self.shape)

    # ----------------------------------------------------------------- control
    def start(self) -> "LiveProcessor":
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hexspec-live-processor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to end and wait up to ``timeout`` seconds for it.

        A source blocked inside its own read cannot be interrupted from here; the
        thread is a daemon, so it never keeps the program alive.
        """
        self._stop.set()
        wake = getattr(self.source, "stop", None)
        if wake is not None:
            try:
                wake()   # hexspec sources end their iteration at the next wake-up
            except Exception:
                log.exception("stopping the source failed")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, paused: bool = True) -> None:
        """Stop (True) or resume (False) accumulating; the source keeps being read."""
        self._paused = bool(paused)

    def reset(self) -> None:
        """Zero the cube and every counter; the elapsed time restarts."""
        with self._lock:
            if self._accumulator is not None:
                self._accumulator.reset()
            self._reset_counters()

    def set_config(self, config: ProcessingConfig) -> None:
        """Use new processing settings from the next batch on; accumulation restarts.

        Raises ConfigError now if a per-pixel map does not fit the known detector shape.
        """
        if not isinstance(config, ProcessingConfig):
            raise ConfigError(f"LiveProcessor.set_config: expected a ProcessingConfig, found {type(config).__name__}")
        if self.shape is not None:
            config.pixel_maps(self.shape)
        with self._lock:
            self._pending_config = config
            if self._accumulator is not None:
                # Show an empty cube at once, not when the next batch happens to arrive.
                self._accumulator.reset()
            self._reset_counters()

    def wait_until(self, predicate, timeout: float = 10.0, poll_s: float = 0.01) -> bool:
        """Poll ``predicate(self)`` until true or ``timeout`` s; returns its last value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self):
                return True
            time.sleep(poll_s)
        return bool(predicate(self))

    # ----------------------------------------------------------------- worker
    def _reset_counters(self):
        self._t0 = time.monotonic()
        self._frames = 0
        self._events = 0
        self._hits = 0
        self._batches = 0
        self._skipped = 0
        self._gaps = GapCounter()
        self._last_arrival = None
        # Source counters are cumulative over the source's life: remember where they stood.
        self._source_base = {k: (_source_counter(self.source, k) or 0) for k in ("dropped", "corrupt")}

    def _build(self, shape, config=None):
        config = self.config if config is None else config
        chain = Chain(config, shape)
        with self._lock:
            # Config, chain and cube change together, so a read never pairs a cube
            # with the bins of other settings.
            self.config, self._chain = config, chain
            self._extractor, self._accumulator = chain.extractor, chain.accumulator

    def _run(self):
        iterator = None
        try:
            iterator = iter(self.source)
            while not self._stop.is_set():
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                if self._stop.is_set():
                    break
                self._ingest(batch)
        except Exception as exc:   # a live display reports and stays up, whatever the source did
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("live processor stopped")
        finally:
            self.finished = True
            close = getattr(self.source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:   # closing a broken source must not hide why it broke
                    log.exception("closing the source failed")

    def _ingest(self, batch):
        if not isinstance(batch, FrameBatch):
            batch = FrameBatch(batch)
        n = len(batch)
        if n == 0:
            return
        if self.shape is None:
            self.shape = batch.shape
        if batch.shape != self.shape:
            # A source that changes shape mid-run is a misconfiguration upstream: count and skip.
            with self._lock:
                self._skipped += n
            log.warning("skipped %d frames of shape %s (detector is %s)", n, batch.shape, self.shape)
            return
        if self._pending_config is not None:
            with self._lock:
                config, self._pending_config = self._pending_config, None
            self._build(self.shape, config)
        if self._extractor is None:
            self._build(self.shape)
        self._gaps.count(batch.frame_numbers)
        if self._paused:
            with self._lock:
                self._skipped += n
            return
        chain = self._chain
        hits_before = chain.extractor.stats["hits"]
        events = chain.extract(batch)
        hits = chain.extractor.stats["hits"] - hits_before
        with self._lock:
            if chain is not self._chain or self._pending_config is not None:
                return   # settings changed while extracting: these events belong to the old ones
            chain.accumulate(events)
            self._frames += n
            self._events += len(events)
            self._hits += hits
            self._batches += 1
            self._last_arrival = time.monotonic()

    # ----------------------------------------------------------------- reads (display thread)
    @property
    def ready(self) -> bool:
        """True once the detector shape is known and a cube exists."""
        return self._accumulator is not None

    @property
    def unit(self) -> str:
        """Energy unit of the cube: "keV", or "ADU" without a calibration."""
        acc = self._accumulator
        return acc.unit if acc is not None else self.config.energy_unit

    @property
    def edges(self) -> np.ndarray:
        """Energy bin edges of the cube (keV, or ADU uncalibrated)."""
        acc = self._accumulator
        return (acc.bins if acc is not None else self.config.resolved_bins()).edges

    def image(self, emin=None, emax=None) -> np.ndarray:
        """Counts per pixel over bins whose centres lie in [emin, emax); (rows, cols) int64."""
        with self._lock:
            if self._accumulator is None:
                return None
            cube = self._accumulator.cube
            # Same bins as SpectralCube.image, but as a slice: no copy of the cube.
            lo, hi = window_bins(cube.edges, emin, emax)
            return cube.counts[:, :, lo:hi].sum(axis=2, dtype=np.int64)

    def image_and_spectrum(self, emin=None, emax=None):
        """(:meth:`image` over [emin, emax), :meth:`spectrum` of all pixels) in one pass; (None, None) before data."""
        with self._lock:
            if self._accumulator is None:
                return None, None
            cube = self._accumulator.cube
            return image_and_spectrum(cube.counts, *window_bins(cube.edges, emin, emax))

    def spectrum(self, mask=None) -> np.ndarray:
        """Counts per bin summed over ``mask`` (rows, cols) bool, or over all pixels."""
        with self._lock:
            if self._accumulator is None:
                return None
            return self._accumulator.cube.spectrum(mask)

    def pixel_spectrum(self, row: int, col: int) -> np.ndarray:
        """Counts per bin of one pixel (a copy)."""
        with self._lock:
            if self._accumulator is None:
                return None
            return self._accumulator.cube.counts[row, col].astype(np.int64)

    def cube(self) -> SpectralCube:
        """A copy of the accumulated cube, safe to keep, save or fit."""
        with self._lock:
            if self._accumulator is None:
                return None
            live = self._accumulator.cube
            return SpectralCube(live.counts.copy(), live.edges.copy(), unit=live.unit,
                                underflow=live.underflow, overflow=live.overflow)

    def counters(self) -> dict:
        """Totals since the last reset.

        Keys: frames (accumulated), events, hits, batches, frames_skipped (paused or
        wrong shape), dropped (source counter, else frame-number gaps), corrupt (source
        messages rejected), elapsed_s, occupancy (hits per pixel per frame),
        idle_s (seconds since the last batch, None before one), finished, error.
        """
        now = time.monotonic()
        with self._lock:
            frames, hits = self._frames, self._hits
            out = {
                "frames": frames, "events": self._events, "hits": hits, "batches": self._batches,
                "frames_skipped": self._skipped, "elapsed_s": now - self._t0,
                "idle_s": None if self._last_arrival is None else now - self._last_arrival,
            }
            gap_dropped, base = self._gaps.dropped, self._source_base
        dropped = _source_counter(self.source, "dropped")
        out["dropped"] = gap_dropped if dropped is None else dropped - base["dropped"]
        corrupt = _source_counter(self.source, "corrupt")
        out["corrupt"] = 0 if corrupt is None else corrupt - base["corrupt"]
        npix = self.shape[0] * self.shape[1] if self.shape else 0
        out["occupancy"] = hits / (frames * npix) if frames and npix else 0.0
        out["finished"] = self.finished
        out["error"] = self.error
        return out
