"""Read-ahead: a thread that reads and decompresses batches ahead of the event kernel.

Reading a compressed frame file costs as much CPU as the kernel (HDF5 decompresses
every chunk), and both hold the CPU in turn when run one after the other. The kernel
releases the GIL (numba ``nogil``) and so do HDF5's filters inside h5py's reads for most
of their time, so a reader thread that runs ahead overlaps the two on two cores.

The queue between them is bounded in bytes (and optionally in batches), so memory
stays bounded whatever the file size: the reader waits while the queue is full.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["ReadAhead", "DEFAULT_MAX_BYTES"]

#: Bytes of batches held ahead of the consumer: 64 MB is ~10,000 80x80 frames, enough to
#: ride out the jitter of either side without holding a file in memory.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def _nbytes(item) -> int:
    frames = getattr(item, "frames", None)
    if frames is not None:
        return int(frames.nbytes)
    return sum(int(getattr(item, k).nbytes) for k in ("frame", "row", "col", "energy", "size") if hasattr(item, k))


class ReadAhead:
    """Iterate ``source`` in a background thread, up to ``max_bytes`` ahead of the consumer.

    Parameters
    ----------
    source : iterable
        Of FrameBatch (or EventList); iterated in the reader thread only.
    max_bytes : int
        Largest number of bytes of batches waiting in the queue (one batch is always
        allowed, however large).
    max_batches : int, optional
        Also bound the queue in batches.

    Exceptions raised by the source reach the consumer at the batch where they
    happened, after every batch before it. :meth:`close` (or leaving a ``with`` block,
    or abandoning the iteration) stops the reader and closes the source. Attributes of
    the source (``stats``, ``shape``, ``name``) are forwarded.
    """

    def __init__(self, source, max_bytes: int = DEFAULT_MAX_BYTES, max_batches: int | None = None):
        self.source = source
        self.max_bytes = max(1, int(max_bytes))
        self.max_batches = None if max_batches is None else max(1, int(max_batches))
        self._queue = deque()
        self._bytes = 0
        self._done = False
        self._error = None
        self._stop = False
        self._cond = threading.Condition()
        self._thread = None
        self.peak_bytes = 0           # most bytes ever queued (tests check the bound)

    def __getattr__(self, name):
        # only called for names not found on self: forward stats, shape, name, ...
        if name.startswith("_") or name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def _full(self) -> bool:
        if not self._queue:
            return False
        if self.max_batches is not None and len(self._queue) >= self.max_batches:
            return True
        return self._bytes >= self.max_bytes

    def _read(self) -> None:
        try:
            for item in self.source:
                size = _nbytes(item)
                with self._cond:
                    while self._full() and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    self._queue.append((item, size))
                    self._bytes += size
                    self.peak_bytes = max(self.peak_bytes, self._bytes)
                    self._cond.notify_all()
        except BaseException as exc:      # handed to the consumer, raised there
            with self._cond:
                self._error = exc
        finally:
            close = getattr(self.source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __iter__(self):
        if self._thread is not None:
            raise RuntimeError("ReadAhead: a source can be iterated once")
        self._thread = threading.Thread(target=self._read, name="hexspec-readahead", daemon=True)
        self._thread.start()
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._done:
                        self._cond.wait()
                    if self._queue:
                        item, size = self._queue.popleft()
                        self._bytes -= size
                        self._cond.notify_all()
                    elif self._error is not None:
                        raise self._error
                    else:
                        return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader thread (it closes the source) and drop what is queued."""
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._bytes = 0
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
