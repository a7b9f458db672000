"""The read-ahead wrapper: same batches in the same order, bounded queue, errors in place."""

import threading
import time

import numpy as np
import pytest

import hexspec as hx
from hexspec.errors import FormatError
from hexspec.io.readahead import ReadAhead


def batches(n, frames=10, shape=(4, 5)):
    for k in range(n):
        yield hx.FrameBatch(np.full((frames,) + shape, k, np.uint16), np.arange(k * frames, (k + 1) * frames))


def test_yields_every_batch_in_order_from_another_thread():
    seen_threads = set()

    def source():
        for b in batches(50):
            seen_threads.add(threading.current_thread().name)
            yield b
    got = list(ReadAhead(source()))
    assert [int(b.frames[0, 0, 0]) for b in got] == list(range(50))
    assert seen_threads == {"hexspec-readahead"}


def test_queue_never_holds_more_than_the_byte_bound():
    one = 10 * 4 * 5 * 2                         # bytes of one batch
    ra = ReadAhead(batches(40), max_bytes=3 * one)
    it = iter(ra)
    next(it)
    time.sleep(0.2)                              # let the reader run as far as it may
    assert ra._bytes <= 3 * one
    rest = list(it)
    assert len(rest) == 39
    assert ra.peak_bytes <= 3 * one


def test_batch_bound():
    ra = ReadAhead(batches(20), max_batches=2)
    it = iter(ra)
    next(it)
    time.sleep(0.1)
    assert len(ra._queue) <= 2
    assert len(list(it)) == 19


def test_error_reaches_the_consumer_after_the_batches_before_it():
    def source():
        yield from batches(3)
        raise FormatError("f.h5: frames 30-39 cannot be read")
    got = []
    with pytest.raises(FormatError, match="frames 30-39"):
        for b in ReadAhead(source()):
            got.append(b)
    assert len(got) == 3


def test_abandoned_iteration_stops_the_reader_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from batches(10_000)
        finally:
            closed.set()
    ra = ReadAhead(source(), max_batches=4)
    for k, _ in enumerate(ra):
        if k == 2:
            break
    ra.close()
    assert closed.wait(2.0)
    assert not ra._thread.is_alive()
