"""Compressed HDF5 chunks written without holding up a flush: raw frames, event columns, the cube.

The recorder must make what it received durable at least once a second, whatever the
load. What made single flushes slow was compression done inside the flush, holding
the GIL: HDF5 deflating the partial last chunk of every event column at each
``H5Fflush``, and the 26 MB spectral cube deflated whole every 10 s. The writers here
move that work out of the flush:

- whole chunks are compressed in worker threads as soon as they fill (the compressors
  release the GIL) and stored with direct chunk writes, in exactly the format HDF5's
  filters read back;
- the partial last chunk of each event column is compressed at a flush in those
  threads too, and is small: the recorder's event chunks are short (a flush compresses
  at most one of them per column). Storing it unfiltered would spare even that, but an
  SWMR writer never reuses the file space of a rewritten chunk, so a file would grow by
  the raw tail at every flush;
- the cube is copied at a chosen moment and compressed in a thread of its own; its
  chunks are stored once ready, between flushes (``cube_frames`` in /entry/acquisition
  says how many frames the stored cube holds).

When the ``isal`` package (Intel ISA-L) is installed its zlib-compatible compressor is
used: ~5x faster than zlib at level 1, with the same stream format.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ProtocolError
from ..frames import FrameBatch

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
    pool : concurrent.futures.Executor, optional
        Compress in this pool (shared with other writers; not shut down by :meth:`close`)
        instead of one of ``threads`` threads of its own.
    """

    def __init__(self, data, numbers, threads: int = 2, pool=None):
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
        self._own_pool = pool is None and self.direct
        self._pool = (pool or ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix="hexspec-deflate")) \
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
        if self._own_pool:
            self._pool.shutdown()


def gzip_codec(ds):
    """A function encoding one chunk of ``ds`` as its filters would, or None if they cannot be reproduced.

    Only gzip (+ shuffle) without checksums or scale-offset is reproduced here; other
    filter setups are left to HDF5.
    """
    if ds.chunks is None or ds.compression != "gzip" or ds.fletcher32 or ds.scaleoffset is not None:
        return None
    level = int(ds.compression_opts or 4)
    if ds.shuffle:
        return lambda block: shuffle_deflate(block, level)
    if DEFLATE_LIBRARY == "isal":
        level = min(level, 3)
    return lambda block: _deflate.compress(np.ascontiguousarray(block), level)


class EventChunkWriter:
    """Append event columns (``/entry/events/*``, 1-D, one chunk length) with a bounded flush.

    Whole chunks are compressed in ``pool`` and stored by direct writes as they fill; at
    :meth:`flush` the partial last chunk of each column (padded with zeros) is compressed
    in ``pool`` too, so a flush compresses at most one chunk per column, without the GIL.

    Parameters
    ----------
    columns : dict of str -> h5py.Dataset
        The event fields (frame, row, col, energy, size), all of one length and chunk.
    pool : concurrent.futures.Executor
        Where chunks are compressed.
    counter : h5py.Dataset, optional
        A scalar updated with the number of events stored (``events_written``).
    """

    def __init__(self, columns: dict, pool, counter=None):
        self.columns = dict(columns)
        first = next(iter(self.columns.values()))
        self.chunk = first.chunks[0]
        codecs = {name: gzip_codec(ds) for name, ds in self.columns.items()}
        if any(ds.chunks != (self.chunk,) or ds.shape != first.shape for ds in self.columns.values()) \
                or any(c is None for c in codecs.values()):
            codecs = None           # not the layout HexspecWriter makes: let HDF5 do it all
        self._codecs = codecs
        self._pool = pool
        self._counter = counter
        self.written = first.shape[0]       # events stored (extent of the datasets)
        self.appended = self.written        # events handed to append()
        self._tail = {name: np.zeros(self.chunk, ds.dtype) for name, ds in self.columns.items()}
        self._tail_n = self.written % self.chunk
        if self._tail_n:            # continuing a partial last chunk
            for name, ds in self.columns.items():
                self._tail[name][:self._tail_n] = ds[self.written - self._tail_n:self.written]
        self._pending = deque()             # (chunk start, {name: future}) in file order

    def append(self, events) -> None:
        """Add an EventList (its fields named like the columns)."""
        n = len(events)
        if n == 0:
            return
        arrays = {name: np.asarray(getattr(events, name)) for name in self.columns}
        if self._codecs is None:
            n0 = self.written
            for name, ds in self.columns.items():
                ds.resize(n0 + n, axis=0)
                ds[n0:] = arrays[name]
            self.appended = self.written = n0 + n
            self._count()
            return
        at = 0
        while at < n:
            take = min(self.chunk - self._tail_n, n - at)
            for name, a in arrays.items():
                self._tail[name][self._tail_n:self._tail_n + take] = a[at:at + take]
            self._tail_n += take
            at += take
            self.appended += take
            if self._tail_n < self.chunk:
                break
            start = self.appended - self.chunk
            jobs = {name: self._pool.submit(self._codecs[name], t.copy()) for name, t in self._tail.items()}
            self._pending.append((start, jobs))
            self._tail_n = 0
        self.drain()

    def drain(self, block: bool = False) -> None:
        """Store the compressed chunks that are ready (all of them, waiting, if ``block``)."""
        while self._pending and (block or all(f.done() for f in self._pending[0][1].values())):
            start, jobs = self._pending.popleft()
            payloads = {name: f.result() for name, f in jobs.items()}
            self._store(start, start + self.chunk, payloads)

    def _store(self, start, end, payloads):
        for name, ds in self.columns.items():
            if ds.shape[0] < end:
                ds.resize(end, axis=0)
            ds.id.write_direct_chunk((start,), payloads[name])
        self.written = max(self.written, end)

    def flush(self) -> None:
        """Store every event appended so far (the partial last chunk too)."""
        if self._codecs is None:
            return
        if self._tail_n:
            start, n = self.appended - self._tail_n, self._tail_n
            jobs = {}
            for name, t in self._tail.items():
                block = t.copy()
                block[n:] = 0       # a stored chunk is always whole; HDF5 shows only the part inside the extent
                jobs[name] = self._pool.submit(self._codecs[name], block)
        self.drain(block=True)
        if self._tail_n:
            self._store(start, self.appended, {name: f.result() for name, f in jobs.items()})

    def store_count(self) -> None:
        """Write the number of events stored into the counter; call it once the events are flushed to
        the file, so that the counter never acknowledges events that did not reach the disk."""
        self._count()

    def _count(self):
        if self._counter is not None:
            self._counter[()] = self.written


class CubeWriter:
    """Rewrite ``/entry/spectra/counts`` from snapshots compressed in a thread of its own.

    :meth:`snapshot` copies the cube (the only part done by the caller) and queues its
    compression; :meth:`store` writes the compressed chunks once they are ready (a few
    direct chunk writes, no compression). Nothing waits for the compressor: a snapshot
    taken while the previous one is still compressing is skipped.

    Parameters
    ----------
    counts : h5py.Dataset
        (rows, cols, nbins) uint32, chunked.
    underflow, overflow : h5py.Dataset
        Scalars stored with each snapshot.
    """

    def __init__(self, counts, underflow, overflow):
        self.counts, self.underflow, self.overflow = counts, underflow, overflow
        self._codec = gzip_codec(counts)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hexspec-cube") if self._codec is not None else None
        self._job = None                  # (frames, underflow, overflow, future or array)
        self._job_lock = threading.Lock() # snapshot() and store() run in different threads
        self.stored_frames = None         # frames the stored cube holds (None: none stored yet)

    @property
    def busy(self) -> bool:
        return self._job is not None

    def snapshot(self, cube, frames: int) -> bool:
        """Copy ``cube`` (a SpectralCube of ``frames`` frames) and start compressing it; False if busy."""
        if self._job is not None:
            return False
        counts = np.array(cube.counts, dtype=self.counts.dtype, copy=True)
        work = self._pool.submit(self._encode, counts) if self._pool is not None else counts
        with self._job_lock:
            self._job = (int(frames), int(cube.underflow), int(cube.overflow), work)
        return True

    def _encode(self, counts):
        chunks = self.counts.chunks
        out = []
        for offset in itertools.product(*(range(0, n, c) for n, c in zip(counts.shape, chunks))):
            block = counts[tuple(slice(o, o + c) for o, c in zip(offset, chunks))]
            if block.shape != chunks:       # an edge chunk is stored whole, padded
                whole = np.zeros(chunks, counts.dtype)
                whole[tuple(slice(0, s) for s in block.shape)] = block
                block = whole
            out.append((offset, self._codec(block)))
        return out

    def store(self, wait: bool = False):
        """Write the snapshot if its compression is done (or ``wait``); return its frame count, else None."""
        with self._job_lock:
            job = self._job
            if job is None or not (wait or isinstance(job[3], np.ndarray) or job[3].done()):
                return None
            self._job = None
        frames, under, over, work = job
        if isinstance(work, np.ndarray):
            self.counts[...] = work
        else:
            for offset, payload in work.result():
                self.counts.id.write_direct_chunk(offset, payload)
        self.underflow[()] = under
        self.overflow[()] = over
        self.stored_frames = frames
        return frames

    def close(self) -> None:
        """Drop a snapshot not stored yet and stop the compressor. Idempotent."""
        with self._job_lock:
            self._job = None
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
