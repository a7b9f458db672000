"""The recorder: frame source -> optional event extraction -> hexspec HDF5, losing nothing.

Guarantees (DESIGN.md, "Errors and data safety"):

- the file is written in SWMR mode and flushed at least every ``flush_interval_s``
  (1 s): a process killed at any moment leaves a file that opens and holds every
  frame and event up to the last flush;
- :func:`record` turns SIGINT and SIGTERM into a clean stop: the batch in hand is
  written, spectra and counters are stored and the file is closed;
- /entry/acquisition holds frames received, dropped (gaps in frame numbers) and
  corrupt messages, updated at every flush.

Raw frames are the heavy part (a HEXITEC at 9.1 kHz gives 117 MB/s of uint16). One
core deflates only 4,000-14,000 real 80x80 frames/s with zlib, so
:class:`FrameChunkWriter` compresses whole HDF5 chunks in worker threads (the
compressor releases the GIL) and stores them with direct chunk writes, in exactly the
format HDF5's shuffle + deflate filters read back. When the ``isal`` package (Intel
ISA-L) is installed its zlib-compatible compressor is used: ~5x faster than zlib at
level 1, with the same stream format, so any HDF5 reader decodes the file as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..config import ProcessingConfig
from ..errors import ProtocolError, WriteError
from ..eventlist import EventList
from ..frames import FrameBatch
from ..pipeline import Chain

log = logging.getLogger("hexspec.recorder")

try:        # optional accelerator: same zlib stream format, several times faster
    from isal import isal_zlib as _deflate
    DEFLATE_LIBRARY = "isal"
except ImportError:
    import zlib as _deflate
    DEFLATE_LIBRARY = "zlib"


def shuffle_deflate(block: np.ndarray, level: int) -> bytes:
    """Bytes HDF5's shuffle then deflate filters make of one chunk.

    The shuffle filter stores byte 0 of every element, then byte 1 of every element,
    and so on; deflate is zlib's format (HDF5 calls compress2). ISA-L has levels 0-3
    (its 0 is its fastest real compression, not "store"); zlib levels above 3 map to 3.
    """
    raw = np.ascontiguousarray(block).view(np.uint8).reshape(-1, block.dtype.itemsize)
    shuffled = np.ascontiguousarray(raw.T)
    if DEFLATE_LIBRARY == "isal":
        level = min(int(level), 3)
    return _deflate.compress(shuffled, level)


class FrameChunkWriter:
    """Append frames to a chunked (n, R, C) dataset, compressing chunks in parallel.

    Whole chunks go through :func:`shuffle_deflate` in a thread pool and are stored
    with ``write_direct_chunk``; frames that do not fill a chunk yet are written
    through HDF5 at each :meth:`flush` (and rewritten whole once the chunk fills), so
    a flush always leaves every frame appended so far in the file. The dataset's
    extent only grows over frames actually written, so a reader never sees frames
    that are not there yet.

    Parameters
    ----------
    data, numbers : h5py.Dataset
        ``/entry/frames/data`` (n, R, C) uint16 and ``/entry/frames/frame_number`` (n,).
    threads : int
        Compression threads.
    """

    def __init__(self, data, numbers, threads: int = 2):
        self.data, self.numbers = data, numbers
        self.chunk = data.chunks[0]
        self.frame_shape = data.shape[1:]
        # direct writes must reproduce the dataset's filters exactly; any other filter
        # setup is left to HDF5
        whole_frames = not data.fletcher32 and data.scaleoffset is None and data.chunks[1:] == data.shape[1:]
        gzip = data.compression == "gzip" and data.shuffle and whole_frames
        # hdf5plugin's filters (their name in the dataset's "compression" attribute, as
        # HexspecWriter writes it): chunks encoded through the filter itself, stored alike
        plugin = str(data.attrs.get("compression", "")) if whole_frames else ""
        plugin = plugin if plugin in ("bslz4", "blosc", "lz4") and data.compression not in ("gzip", "lzf", "szip") \
            else ""
        self.direct = gzip or bool(plugin)
        self.level = int(data.compression_opts or 4) if gzip else 0
        if gzip:
            self._encode = lambda block: shuffle_deflate(block, self.level)
        elif plugin:
            from ..io.compression import encode_chunk
            self._encode = lambda block: encode_chunk(plugin, block)
        self.written = data.shape[0]      # frames stored (extent of the dataset)
        self.appended = self.written      # frames handed to append()
        self._tail = np.empty((self.chunk,) + self.frame_shape, dtype=np.uint16)
        self._tail_numbers = np.empty(self.chunk, dtype=np.int64)
        self._tail_n = 0
        if self.written % self.chunk:
            # appending to a file whose last chunk is partial: continue that chunk
            start = self.written - self.written % self.chunk
            self._tail_n = self.written - start
            self._tail[:self._tail_n] = data[start:self.written]
            self._tail_numbers[:self._tail_n] = numbers[start:self.written]
        self._pool = ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix="hexspec-deflate") \
            if self.direct else None
        self._pending = deque()           # (chunk start, frame numbers, future) in file order
        self._max_pending = 2 * max(1, int(threads)) + 2

    def append(self, batch: FrameBatch) -> None:
        frames, numbers = batch.frames, batch.frame_numbers
        if frames.shape[1:] != self.frame_shape:
            raise ProtocolError(f"recorder: expected frames of shape {self.frame_shape}, found {frames.shape[1:]}")
        if not self.direct:
            n0 = self.data.shape[0]
            self.data.resize(n0 + len(frames), axis=0)
            self.data[n0:] = frames
            self.numbers.resize(n0 + len(frames), axis=0)
            self.numbers[n0:] = numbers
            self.appended = self.written = n0 + len(frames)
            return
        at, n = 0, len(frames)
        while at < n:
            if self._tail_n == 0 and n - at >= self.chunk:
                # a whole chunk straight from the batch: no copy
                block, block_numbers = frames[at:at + self.chunk], numbers[at:at + self.chunk]
                at += self.chunk
                self.appended += self.chunk
            else:
                take = min(self.chunk - self._tail_n, n - at)
                self._tail[self._tail_n:self._tail_n + take] = frames[at:at + take]
                self._tail_numbers[self._tail_n:self._tail_n + take] = numbers[at:at + take]
                self._tail_n += take
                at += take
                self.appended += take
                if self._tail_n < self.chunk:
                    break
                block, block_numbers = self._tail.copy(), self._tail_numbers.copy()
                self._tail_n = 0
            start = self.appended - self.chunk
            self._pending.append((start, block_numbers, self._pool.submit(self._encode, block)))
            self.drain(block=len(self._pending) > self._max_pending)

    def drain(self, block: bool = False) -> None:
        """Store compressed chunks that are ready (all of them, waiting, if ``block``)."""
        while self._pending and (block or self._pending[0][2].done()):
            start, block_numbers, future = self._pending.popleft()
            payload = future.result()
            end = start + self.chunk
            if self.data.shape[0] < end:
                self.data.resize(end, axis=0)
                self.numbers.resize(end, axis=0)
            self.data.id.write_direct_chunk((start,) + (0,) * len(self.frame_shape), payload)
            self.numbers[start:end] = block_numbers
            self.written = max(self.written, end)
            block = block and len(self._pending) > self._max_pending

    def flush(self) -> None:
        """Store every frame appended so far (whole chunks and the partial tail)."""
        if not self.direct:
            return
        while self._pending:
            self.drain(block=True)
        if self._tail_n:
            start = self.appended - self._tail_n
            end = self.appended
            if self.data.shape[0] < end:
                self.data.resize(end, axis=0)
                self.numbers.resize(end, axis=0)
            self.data[start:end] = self._tail[:self._tail_n]
            self.numbers[start:end] = self._tail_numbers[:self._tail_n]
            self.written = end

    def close(self) -> None:
        self.flush()
        if self._pool is not None:
            self._pool.shutdown()


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
        How often the cube is rewritten while recording (it is always written at
        close; events and frames are enough to rebuild it after a crash).
    compress_threads : int
        Threads compressing raw frames (gzip: chunks deflated here; the hdf5plugin
        filters compress inside HDF5).
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
                                        frame_compression=frame_compression)
        except BaseException:
            self._lock.release()
            raise
        self.path = self.writer.path
        entry = self.writer.f["entry"]
        self._frames = FrameChunkWriter(entry["frames/data"], entry["frames/frame_number"], compress_threads) \
            if raw else None
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
        self._last_flush = time.monotonic()
        self._last_spectra = self._last_flush
        self._last_check = self._last_flush
        self._check_gap_s = 0.0
        self._counters = {}
        self._closed = False
        # A flusher thread keeps the one-second promise while the caller is busy (a large
        # batch in the event kernels, a source simulating or receiving): file writes and
        # counters are guarded by _mutex, event extraction runs outside it.
        self._mutex = threading.RLock()
        self._stop_flusher = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="hexspec-flusher", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop_flusher.wait(0.1):
            with self._mutex:
                if self._closed or self.failed is not None:
                    return
                try:
                    self.flush_if_due()
                except WriteError:
                    return          # the next add() or close() reports it

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
        # the event kernels release the GIL and touch no file: the flusher may flush meanwhile
        events = self._chain.extract(batch) if self._extractor is not None and len(batch) else None
        with self._mutex, self._writing():
            return self._add(batch, stats, events)

    def reject(self, batch: FrameBatch, why: str) -> None:
        """Count a batch that cannot go into this file (frames of another shape) and skip it."""
        self.rejected += 1
        if self.rejected & (self.rejected - 1) == 0:
            log.warning("recorder: message #%d skipped: %s", self.rejected, why)
        self._counters["corrupt_messages"] = self._counters.get("corrupt_messages", 0) + 1

    def _add(self, batch, stats, events):
        if len(batch) == 0:
            return EventList.empty() if self._extractor is not None else None
        if self._frames is not None:
            self._frames.append(batch)
        if events is not None:
            if self.events:
                self.writer.write_events(events)
            if self._accumulator is not None:
                self._chain.accumulate(events)
            self.events_received += len(events)
        if self.first_frame < 0:
            self.first_frame = int(batch.frame_numbers[0])
        self.last_frame = int(batch.frame_numbers[-1])
        self.frames_received += len(batch)
        if stats is not None:
            self.update_counters(stats)
        if self._frames is not None:
            self._frames.drain()
        self.flush_if_due()
        return events

    def flush_if_due(self) -> None:
        """Flush if something is unflushed and the last flush is ``flush_interval_s`` old.

        Called after every batch and, through the source's ``idle_hook``, while the
        source waits, so data received just before a pause are flushed on time too.
        """
        with self._mutex:
            self._flush_if_due()

    def _flush_if_due(self) -> None:
        now = time.monotonic()
        # the longest recent wait between two calls (a batch being processed, a source
        # busy receiving): flushing when the next call could come too late keeps the gap
        # between flushes under flush_interval_s instead of overshooting by one batch
        self._check_gap_s = max(0.9 * self._check_gap_s, now - self._last_check)
        self._last_check = now
        if self._closed or self.frames_received == self.frames_flushed:
            return
        margin = min(1.25 * self._check_gap_s + self._flush_time_s, 0.5 * self.flush_interval_s)
        if now - self._last_flush + margin >= self.flush_interval_s:
            self.flush()

    _flush_time_s = 0.0

    def update_counters(self, stats) -> None:
        """Take dropped and corrupt counts from a source's SourceStats (plus what the recorder rejected)."""
        with self._mutex:
            self._counters.update(frames_dropped=stats.dropped, corrupt_messages=stats.corrupt + self.rejected)

    def flush(self) -> None:
        """Make everything recorded so far durable (a crash after this loses none of it)."""
        with self._mutex, self._writing():
            self._flush()

    def _flush(self) -> None:
        t0 = time.monotonic()
        if self._frames is not None:
            self._frames.flush()
        now = time.monotonic()
        if self._accumulator is not None and now - self._last_spectra >= self.spectra_interval_s:
            self._write_spectra()
            self._last_spectra = now
        self._write_counters()
        self.flushes += 1
        self._last_flush = time.monotonic()
        self._flush_time_s = max(0.9 * self._flush_time_s, self._last_flush - t0)
        if self.on_flush is not None:
            self.on_flush(self)

    def _write_spectra(self) -> None:
        """Rewrite the cube; cube_frames says how many frames it holds (stale when fewer than received)."""
        self.writer.write_spectra(self._accumulator.cube)
        self._counters["cube_frames"] = self.frames_received

    def _write_counters(self) -> None:
        """Write the acquisition counters and flush the file: everything so far is durable."""
        self.writer.set_acquisition(frames_received=self.frames_received, first_frame=self.first_frame,
                                    last_frame=self.last_frame, **self._counters)
        self.writer.flush()
        self.frames_flushed = self.frames_received
        self.events_flushed = self.events_received

    def close(self) -> None:
        """Write the spectra and counters and close the file. Idempotent."""
        self._stop_flusher.set()
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
                    if self._accumulator is not None:
                        self._write_spectra()
                    self._write_counters()
        finally:
            try:
                if self._extractor is not None:
                    self._extractor.close()
                if self._frames is not None and self._frames._pool is not None:
                    self._frames._pool.shutdown(cancel_futures=True)
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
