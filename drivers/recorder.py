"""The recorder: frame source -> optional event extraction -> hexspec HDF5, losing nothing.

Guarantees (DESIGN.md, "Errors and data safety"):

- the file is written in SWMR mode and flushed at least every ``flush_interval_s``
  (1 s): a process killed at any moment leaves a file that opens and holds every
  frame and event up to the last flush;
- :func:`record` turns SIGINT and SIGTERM into a clean stop: the batch in hand is
  written, spectra and counters are stored and the file is closed;
- /entry/acquisition holds frames received, dropped (gaps in frame numbers) and
  corrupt messages, updated at every flush.

Compression never runs inside a flush: the chunk writers of :mod:`.chunks` compress in
worker threads and store chunks directly, and :mod:`.flushing` decides when to flush,
from a thread of its own, early enough to keep the promise under load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..config import ProcessingConfig
from ..errors import ProtocolError, WriteError
from ..eventlist import EventList
from ..frames import FrameBatch
from ..pipeline import Chain
# the chunk writers lived here; their names stay importable from this module
from .chunks import DEFLATE_LIBRARY, CubeWriter, EventChunkWriter, FrameChunkWriter, shuffle_deflate  # noqa: F401
from .flushing import FlushSchedule, FlusherThread

log = logging.getLogger("hexspec.recorder")

#: Events per chunk of a recording: every flush compresses and rewrites the partial last
#: chunk of each event column, so short chunks keep a flush short (and the file space an
#: SWMR writer leaves behind for each rewrite small); 16384 events still read fast.
EVENT_CHUNK = 16384


class Recorder:
    """Write frames, events and spectra of a live stream to a hexspec HDF5 file.

    Parameters
    ----------
    path : str or Path
    shape : (rows, cols)
    config : ProcessingConfig, optional
        Event extraction and binning (default ``ProcessingConfig()``).
    source : str
        Source URL stored in /entry/acquisition.
    raw, events, spectra : bool
        What to store: raw frames, photon events, the per-pixel spectral cube.
    flush_interval_s : float
        Longest time between flushes (at most 1 s is what the recorder promises).
    spectra_interval_s : float
        How often the cube is copied while recording, to be compressed in the
        background and stored by a later flush (/entry/acquisition/cube_frames says
        how many frames the stored cube holds). It is always written at close; events
        and frames are enough to rebuild it after a crash.
    compress_threads : int
        Threads compressing chunks of raw frames and events (the cube has a thread of
        its own).
    frame_compression : {"bslz4", "blosc", "lz4", "gzip", "none"}
        Filter of the raw frames (:func:`hexspec.io.compression.frame_compression`).
    on_flush : callable, optional
        Called as ``on_flush(recorder)`` after every flush.
    lock : OutputLock, optional
        The exclusive lock on ``path`` if the caller took it already (before connecting
        to its source); otherwise the recorder takes one. Released by :meth:`close`.

    Raises
    ------
    ConfigError
        If another process holds the lock on ``path``.
    WriteError
        From any method, when the file cannot be written (disk full, I/O error): the
        file is then left exactly as the last flush made it.
    """

    def __init__(self, path, shape, config: ProcessingConfig | None = None, source: str = "",
                 raw: bool = False, events: bool = True, spectra: bool = True, flush_interval_s: float = 1.0,
                 spectra_interval_s: float = 10.0, compress_threads: int = 2, on_flush=None, lock=None,
                 frame_compression: str = "blosc"):
        from ..io.hdf5 import HexspecWriter
        from ..io.outputs import OutputLock
        self._lock = lock if lock is not None else OutputLock(path)
        self.failed = None
        self.rejected = 0
        self.config = config or ProcessingConfig()
        self.shape = (int(shape[0]), int(shape[1]))
        self.raw, self.events, self.spectra = raw, events, spectra
        self.flush_interval_s = float(flush_interval_s)
        self.spectra_interval_s = float(spectra_interval_s)
        self.on_flush = on_flush
        try:
            self.writer = HexspecWriter(path, self.shape, config=self.config, source=source, frames=raw,
                                        events=events, spectra=spectra, swmr=True,
                                        frame_compression=frame_compression, event_chunk=EVENT_CHUNK)
        except BaseException:
            self._lock.release()
            raise
        self.path = self.writer.path
        entry = self.writer.f["entry"]
        self._pool = ThreadPoolExecutor(max(1, int(compress_threads)), thread_name_prefix="hexspec-deflate")
        self._frames = FrameChunkWriter(entry["frames/data"], entry["frames/frame_number"], pool=self._pool) \
            if raw else None
        self._events = None
        if events:
            from ..io.hdf5 import EVENT_FIELDS
            self._events = EventChunkWriter({name: entry["events"][name] for name, _ in EVENT_FIELDS}, self._pool,
                                            entry["acquisition/events_written"])
        self._cube = CubeWriter(entry["spectra/counts"], entry["spectra/underflow"], entry["spectra/overflow"]) \
            if spectra else None
        # the extract and accumulate stages of a processing chain; the file is its sink
        self._chain = Chain(self.config, self.shape, accumulate=spectra) if (events or spectra) else None
        self._extractor = None if self._chain is None else self._chain.extractor
        self._accumulator = None if self._chain is None else self._chain.accumulator
        self.frames_received = 0
        self.events_received = 0
        self.first_frame = -1
        self.last_frame = -1
        self.frames_flushed = 0
        self.events_flushed = 0
        self.flushes = 0
        self._last_snapshot = time.monotonic()
        self._counters = {}
        self._written_counters = {}
        self._closed = False
        # File writes and counters are guarded by _mutex; event extraction and histogramming
        # run outside it (only the receiving thread touches the chain). A flusher thread
        # keeps the one-second promise while the receiving thread is busy or not scheduled.
        self._mutex = threading.RLock()
        self.schedule = FlushSchedule(self.flush_interval_s)
        self._flusher = FlusherThread(self.schedule, self._flush_from_thread)
        self._flusher.start()

    @property
    def flush_times(self) -> list:
        """Completion times (time.monotonic, s) of the recent flushes, oldest first."""
        return list(self.schedule.times)

    @property
    def longest_flush_gap_s(self) -> float:
        """Longest time between the completions of two successive flushes so far (s)."""
        return self.schedule.longest_gap_s

    def _flush_from_thread(self, started: float) -> bool:
        with self._mutex:
            if self._closed or self.failed is not None:
                self._flusher.stop()
                return False
            if self.frames_received == self.frames_flushed or not self.schedule.due():
                return False
            try:
                with self._writing():
                    self._flush(started)
            except WriteError:
                self._flusher.stop()    # the next add() or close() reports it
                return False
            return True

    # -- write errors ---------------------------------------------------------------------
    def _fail(self, exc) -> WriteError:
        """Freeze the file as the last flush left it and say so in one line.

        After a failed write HDF5 holds metadata it could not store; closing the file
        normally would try again (and h5py has been seen to crash doing so). Pointing
        the library's file descriptor at /dev/null lets every later write and the close
        succeed harmlessly while the file on disk keeps the state of the last flush.
        """
        if self.failed is None:
            self.failed = exc
            with contextlib.suppress(Exception):
                fd = self.writer.f.id.get_vfd_handle()
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
            log.info("recorder: writing %s failed: %s", self.path, exc)
        why = getattr(exc, "strerror", None) or str(exc).split(" (", 1)[0]
        if "errno = 28" in str(exc) or getattr(exc, "errno", None) == 28:
            why = "No space left on device"
        elif "errno = 27" in str(exc) or getattr(exc, "errno", None) == 27:
            why = "File too large"
        return WriteError(f"{self.path}: write failed after {self.frames_received} frames ({why}); the file keeps "
                          f"the {self.frames_flushed} frames flushed before; `hexspec recover {self.path}` "
                          "makes it a plain HDF5 file")

    @contextlib.contextmanager
    def _writing(self):
        if self.failed is not None:
            raise self._fail(self.failed)
        try:
            yield
        except (OSError, RuntimeError, ValueError) as exc:
            if isinstance(exc, WriteError):
                raise
            raise self._fail(exc) from None

    def add(self, batch: FrameBatch, stats=None) -> EventList | None:
        """Record one batch; ``stats`` (the source's SourceStats) updates the counters.

        Returns the batch's events (None when neither events nor spectra are recorded).
        """
        if batch.shape != self.shape:
            raise ProtocolError(f"recorder: expected frames of shape {self.shape}, found {batch.shape}")
        if self.failed is not None:
            raise self._fail(self.failed)
        if self._flusher.error is not None:
            raise self._flusher.error
        # extraction and histogramming touch no file (and the kernels release the GIL):
        # the flusher may flush meanwhile
        events = EventList.empty() if self._extractor is not None else None
        if self._extractor is not None and len(batch):
            events = self._chain.extract(batch)
            if self._accumulator is not None:
                self._chain.accumulate(events)
        with self._mutex, self._writing():
            self._add(batch, stats, events)
        if self._cube is not None and time.monotonic() - self._last_snapshot >= self.spectra_interval_s \
                and not self._cube.busy:
            # copied here, in the thread that fills the cube, then compressed in the
            # background; stored by a later flush (cube_frames says which frames it holds)
            self._cube.snapshot(self._accumulator.cube, self.frames_received)
            self._last_snapshot = time.monotonic()
        return events

    def reject(self, batch: FrameBatch, why: str) -> None:
        """Count a batch that cannot go into this file (frames of another shape) and skip it."""
        self.rejected += 1
        if self.rejected & (self.rejected - 1) == 0:
            log.warning("recorder: message #%d skipped: %s", self.rejected, why)
        self._counters["corrupt_messages"] = self._counters.get("corrupt_messages", 0) + 1

    def _add(self, batch, stats, events):
        if len(batch) == 0:
            return
        if self._frames is not None:
            self._frames.append(batch)
        if events is not None:
            if self._events is not None:
                self._events.append(events)
            self.events_received += len(events)
        if self.first_frame < 0:
            self.first_frame = int(batch.frame_numbers[0])
        self.last_frame = int(batch.frame_numbers[-1])
        self.frames_received += len(batch)
        if stats is not None:
            self.update_counters(stats)
        if self._frames is not None:
            self._frames.drain()
        self._flush_if_due()

    def flush_if_due(self) -> None:
        """Flush if something is unflushed and the schedule says a flush must start.

        Called after every batch and, through the source's ``idle_hook``, while the
        source waits; the flusher thread does the same on its own (:mod:`.flushing`).
        """
        with self._mutex:
            self._flush_if_due()

    def _flush_if_due(self) -> None:
        if self._closed or self.frames_received == self.frames_flushed:
            return
        if self.schedule.due():
            self.flush()

    def update_counters(self, stats) -> None:
        """Take dropped and corrupt counts from a source's SourceStats (plus what the recorder rejected)."""
        with self._mutex:
            self._counters.update(frames_dropped=stats.dropped, corrupt_messages=stats.corrupt + self.rejected)

    def flush(self) -> None:
        """Make everything recorded so far durable (a crash after this loses none of it)."""
        started = time.monotonic()
        with self._mutex, self._writing():
            self._flush(started)

    def _flush(self, started: float) -> None:
        """Store frames, events, a ready cube snapshot and the counters, then flush the file.

        Nothing here compresses more than the tail of the raw frames: whole chunks were
        compressed in the background, the events' last chunk is stored unfiltered.
        """
        if self._frames is not None:
            self._frames.flush()
        if self._events is not None:
            self._events.flush()
        if self._cube is not None:
            stored = self._cube.store()
            if stored is not None:
                self._counters["cube_frames"] = stored
        # The data first, then the counters that acknowledge it: a write that fails in the
        # data flush (disk full) leaves the previous flush's counters in the file, never
        # counters that claim frames whose numbers did not reach the disk.
        self.writer.flush()
        if self._events is not None:
            self._events.store_count()
        self._write_counters()
        self.flushes += 1
        self.schedule.done(started, time.monotonic())
        if self.on_flush is not None:
            self.on_flush(self)

    def _write_counters(self) -> None:
        """Write the acquisition counters and flush the file: everything so far is durable."""
        counters = dict(frames_received=self.frames_received, first_frame=self.first_frame,
                        last_frame=self.last_frame, **self._counters)
        # only what changed: each dataset write costs a GIL hand-over when threads compete
        changed = {k: v for k, v in counters.items() if self._written_counters.get(k) != v}
        self.writer.set_acquisition(**changed)
        self._written_counters.update(changed)
        self.writer.flush()
        self.frames_flushed = self.frames_received
        self.events_flushed = self.events_received

    def close(self) -> None:
        """Write the spectra and counters and close the file. Idempotent."""
        self._flusher.stop()
        with self._mutex:
            if self._closed:
                return
            self._closed = True
        if self._flusher is not threading.current_thread():
            self._flusher.join()
        try:
            if self.failed is None:      # otherwise the file stays as the last flush left it (see _fail)
                with self._writing():
                    if self._frames is not None:
                        self._frames.close()
                    if self._events is not None:
                        self._events.flush()
                        self._events.store_count()
                    if self._cube is not None:
                        self._cube.close()          # a snapshot still compressing is not needed now
                        self.writer.write_spectra(self._accumulator.cube)
                        self._counters["cube_frames"] = self.frames_received
                    self._write_counters()
        finally:
            try:
                if self._extractor is not None:
                    self._extractor.close()
                if self._cube is not None:
                    self._cube.close()
                self._pool.shutdown(cancel_futures=True)
                if self.failed is None:
                    self.writer.close()
                else:
                    with contextlib.suppress(Exception):   # writes go to /dev/null now (see _fail)
                        # no end_time: looking it up can need metadata HDF5 would now read back
                        # from /dev/null, where it waits for ever (seen with uncompressed and
                        # Blosc frames); closing needs no reads
                        self.writer._closed = True
                        self.writer.f.close()
            finally:
                self._lock.release()

    @property
    def cube(self):
        return None if self._accumulator is None else self._accumulator.cube

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class RecordResult:
    """What a recording stored."""

    path: str
    frames: int
    events: int
    dropped: int
    corrupt: int
    elapsed_s: float
    stopped_by: str       # "end of source", "signal SIGINT", ...


class _StopOnSignals:
    """SIGINT/SIGTERM ask the source to stop instead of killing the process.

    A second signal of either kind raises KeyboardInterrupt, for a user who really
    wants out; the recorder's ``finally`` still closes the file.
    """

    def __init__(self, source):
        self.source = source
        self.signal_name = ""
        self._previous = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGTERM:
            from ..shutdown import TERMINATED     # the command then exits without a slow teardown
            TERMINATED.set()
        if self.signal_name:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        stop = getattr(self.source, "stop", None) or self.source.close
        stop()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def record(source, path, config: ProcessingConfig | None = None, shape=None, raw: bool = False,
           events: bool = True, spectra: bool = True, source_name: str = "", progress=None,
           flush_interval_s: float = 1.0, on_flush=None, compress_threads: int = 2, lock=None,
           frame_compression: str = "blosc") -> RecordResult:
    """Record every batch of ``source`` into ``path`` until the source ends or a signal stops it.

    Parameters
    ----------
    source : FrameSource
        What :func:`~hexspec.drivers.open_source` returns (anything iterable over
        FrameBatch works; ``stats`` and ``stop`` are used when present).
    path : str or Path
        Output hexspec HDF5 file, created when the first batch arrives (the detector
        shape comes from the data unless ``shape`` is given).
    config, raw, events, spectra, flush_interval_s, on_flush, compress_threads, frame_compression
        See :class:`Recorder`.
    shape : (rows, cols), optional
    source_name : str
        Stored as the acquisition's source (default: the source's name or URL).
    progress : callable, optional
        Called as ``progress(recorder, source_stats)`` after every batch.
    lock : OutputLock, optional
        A lock on ``path`` taken by the caller (e.g. before opening the source); by
        default one is taken here, before the first batch is read.

    A batch of frames of another shape than the file's is counted as a corrupt
    message and skipped; the recording goes on.

    Raises
    ------
    ProtocolError
        If the source ended before delivering a single frame.
    ConfigError
        If another process is writing ``path``.
    WriteError
        If the file cannot be written (disk full...): the recording stops and the file
        keeps every frame flushed before.
    """
    from ..io.outputs import OutputLock
    name = source_name or getattr(source, "name", None) or getattr(source, "endpoint", "") or ""
    stats = getattr(source, "stats", None)
    recorder = None
    t0 = time.monotonic()
    guard = _StopOnSignals(source)
    try:
        lock = lock if lock is not None else OutputLock(path)
    except BaseException:
        source_close = getattr(source, "close", None)
        if source_close is not None:
            source_close()
        raise

    def start(frame_shape):
        rec = Recorder(path, frame_shape, config, str(name), raw, events, spectra, flush_interval_s,
                       compress_threads=compress_threads, on_flush=on_flush, lock=lock,
                       frame_compression=frame_compression)
        if hasattr(source, "idle_hook"):
            source.idle_hook = rec.flush_if_due
        return rec

    try:
        with guard:
            if shape is not None:
                recorder = start(shape)
            for batch in source:
                if recorder is None:
                    recorder = start(batch.shape)
                elif batch.shape != recorder.shape:
                    first = int(batch.frame_numbers[0]) if len(batch) else -1
                    recorder.reject(batch, f"expected frames of shape {recorder.shape}, found {batch.shape} "
                                           f"(frame {first})")
                    continue
                recorder.add(batch, stats)
                if progress is not None:
                    progress(recorder, stats)
    finally:
        try:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        finally:
            if recorder is not None:
                if stats is not None:
                    recorder.update_counters(stats)
                recorder.close()
            else:
                lock.release()
    if recorder is None:
        why = f" ({stats.corrupt} corrupt messages; last: {stats.last_error})" if stats is not None and stats.corrupt else ""
        raise ProtocolError(f"{name or 'source'}: no frames received before the source ended{why}; nothing recorded")
    return RecordResult(str(recorder.path), recorder.frames_received, recorder.events_received,
                        stats.dropped if stats is not None else 0,
                        (stats.corrupt if stats is not None else 0) + recorder.rejected,
                        time.monotonic() - t0, f"signal {guard.signal_name}" if guard.signal_name else "end of source")
