"""A live recording survives whatever one message does (issue 17, items 4, 6, 8, 9).

Real ZMQ sockets on loopback, pyserial's loop:// link and a real pseudo-terminal."""

import json
import os
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import zmq
from hexspec.drivers import SerialSource, ZmqSource
from hexspec.drivers.recorder import record

import hexspec as hx
from hexspec.io import hdf5

SYNC = bytes([0xEB, 0x90, 0x48, 0x58])
SHAPE = (8, 10)


def pattern(first, n, shape=SHAPE):
    """Frame k holds k + pixel index (mod 65536)."""
    pix = np.arange(shape[0] * shape[1]).reshape(shape)
    return np.stack([(first + k + pix) % 65536 for k in range(n)]).astype(np.uint16)


def message(frame_num, frame, **override):
    """Two parts of an odin-data live-view message, built from FORMATS.md by hand."""
    h = {"frame_num": frame_num, "acquisition_id": "t", "dtype": "uint16", "dsize": frame.size * 2,
         "dataset": "raw_frames", "compression": "none", "shape": [str(s) for s in frame.shape]}
    h.update(override)
    return [json.dumps(h).encode(), frame.astype("<u2").tobytes()]


HOSTILE = {
    # 20,000 levels fit in the 64 KiB header limit and exceed Python's recursion limit
    "deeply nested JSON": [b'{"frame_num": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", b"\0" * 160],
    "superscript digit in shape": None,
    "5000-digit shape": None,
    "shape whose product wraps": None,
    "shape beyond int64": None,
    "frame_num beyond int64": None,
    "frame_num 2^63": None,
    "dtype as a list": None,
    "dtype as a dict": None,
}


def hostile_messages():
    f = pattern(0, 1)[0]
    out = dict(HOSTILE)
    out["superscript digit in shape"] = message(5, f, shape=["\u00b2", "10"])
    out["5000-digit shape"] = message(5, f, shape=["9" * 5000, "10"])
    out["shape whose product wraps"] = message(5, f, shape=[str(2 ** 32), str(2 ** 32)], dsize=0)
    out["shape beyond int64"] = message(5, f, shape=[str(10 ** 30), "80"])
    out["frame_num beyond int64"] = message(10 ** 30, f)
    out["frame_num 2^63"] = message(2 ** 63, f)
    out["dtype as a list"] = message(5, f, dtype=["uint16"])
    out["dtype as a dict"] = message(5, f, dtype={"a": 1})
    return out


@pytest.fixture
def pusher():
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDHWM, 100_000)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    yield push, f"tcp://127.0.0.1:{port}"
    push.close()


def test_hostile_zmq_headers_are_counted_and_skipped_and_the_recording_keeps_every_good_frame(tmp_path, pusher):
    push, endpoint = pusher
    bad = hostile_messages()
    good = pattern(0, 20)
    src = ZmqSource(endpoint, "PULL", timeout_s=1.0, batch_frames=4)
    for k in range(10):
        push.send_multipart(message(k, good[k]))
    for parts in bad.values():
        push.send_multipart(parts)
    for k in range(10, 20):
        push.send_multipart(message(k, good[k]))
    result = record(src, tmp_path / "r.h5", raw=True, events=False, spectra=False)
    assert (result.frames, result.corrupt) == (20, len(bad))
    got = hdf5.read_frames(tmp_path / "r.h5")
    np.testing.assert_array_equal(got.frames, good)
    np.testing.assert_array_equal(got.frame_numbers, np.arange(20))
    assert hdf5.read_acquisition(tmp_path / "r.h5")["corrupt_messages"] == len(bad)


def test_a_valid_zmq_frame_of_another_shape_is_counted_and_skipped(tmp_path, pusher):
    push, endpoint = pusher
    good = pattern(0, 12)
    src = ZmqSource(endpoint, "PULL", timeout_s=1.0)
    for k in range(12):
        push.send_multipart(message(k, good[k]))
        if k == 5:
            push.send_multipart(message(100, np.full((2, 2), 7, np.uint16)))
    result = record(src, tmp_path / "r.h5", raw=True, events=False, spectra=False)
    assert (result.frames, result.corrupt) == (12, 1)
    np.testing.assert_array_equal(hdf5.read_frames(tmp_path / "r.h5").frames, good)


def test_a_batch_of_another_shape_reaching_the_recorder_is_counted_and_skipped(tmp_path):
    good = pattern(0, 30)
    batches = [hx.FrameBatch(good[:10], np.arange(10)), hx.FrameBatch(np.zeros((3, 2, 2), np.uint16), np.arange(3)),
               hx.FrameBatch(good[10:], np.arange(10, 30))]
    result = record(iter(batches), tmp_path / "r.h5", raw=True, events=False, spectra=False)
    assert (result.frames, result.corrupt) == (30, 1)
    np.testing.assert_array_equal(hdf5.read_frames(tmp_path / "r.h5").frames, good)


def test_zmq_refuses_a_message_part_bigger_than_its_limit_before_buffering_it(pusher):
    push, endpoint = pusher
    src = ZmqSource(endpoint, "PULL", timeout_s=0.8, max_message_bytes=1 << 16)
    assert src._socket.getsockopt(zmq.MAXMSGSIZE) == (1 << 16) + (1 << 16)
    time.sleep(0.2)
    push.send_multipart(message(0, np.zeros((1024, 1024), np.uint16)))     # 2 MiB payload
    got = list(src)
    src.close()
    assert got == [] and src.stats.messages == 0 and src.stats.bytes == 0


def test_queue_bytes_bounds_the_receive_queue(pusher):
    _, endpoint = pusher
    src = ZmqSource(endpoint, "PULL", hwm=10_000, max_message_bytes=1 << 20, queue_bytes=64 << 20)
    assert src._socket.getsockopt(zmq.RCVHWM) == 64
    src.close()


# -- item 6: stopping a PULL recording delivers what was already queued --------------------

def test_stopping_a_pull_recording_stores_the_messages_already_queued(tmp_path, pusher):
    push, endpoint = pusher
    n = 3000
    frames = pattern(0, n)
    src = ZmqSource(endpoint, "PULL", timeout_s=5.0, batch_frames=100, hwm=100_000)
    time.sleep(0.2)
    for k in range(n):
        push.send_multipart(message(k, frames[k]))
    time.sleep(0.5)        # all of them now wait in the receiver's queue: the sender counts them as sent

    def stop_after_first(recorder, stats):
        src.stop()

    result = record(src, tmp_path / "r.h5", raw=True, events=False, spectra=False, progress=stop_after_first)
    assert result.frames + result.dropped == n
    stored = hdf5.read_frames(tmp_path / "r.h5")
    assert len(stored) == result.frames
    np.testing.assert_array_equal(stored.frames, frames[:len(stored)])


# -- serial: items 4 and 9 ------------------------------------------------------------------

def hand_frame(number, rows, cols, encoding, payload):
    head = struct.pack("<IHHBBHI", number, rows, cols, encoding, 0, 0, len(payload))
    return SYNC + head + payload + struct.pack("<I", zlib.crc32(head + payload))


def dense(number, frame):
    return hand_frame(number, *frame.shape, 0, frame.astype("<u2").tobytes())


def send_later(link, data):
    """Write all of ``data`` from a thread (loop:// and pseudo-terminals hold only a few kB)."""
    def run():
        view = memoryview(data)
        while view.nbytes:
            n = link.write(view) if hasattr(link, "write") else os.write(link, view)
            view = view[view.nbytes if n is None else n:]
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def false_header(rows, cols, encoding, length):
    """A sync word and a plausible header, then nothing of what it promises."""
    return SYNC + struct.pack("<IHHBBHI", 999, rows, cols, encoding, 0, 0, length)


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def sparse(number, frame):
    index = np.flatnonzero(frame)
    pairs = np.stack([index, frame.reshape(-1)[index]], axis=1).astype("<u2")
    return hand_frame(number, *frame.shape, 1, pairs.tobytes())


def test_good_frames_behind_a_false_sparse_header_are_all_stored(tmp_path, pty_pair):
    # 30 sparse frames (2 kB in all) then silence: far less than the 25,600 bytes the false header claims
    master, name = pty_pair
    frames = np.zeros((30, 80, 80), np.uint16)
    for k in range(30):
        frames[k].reshape(-1)[[k, 100 + k, 6000 + k]] = [500 + k, 900, 1200]
    src = SerialSource(name, timeout_s=0.5)
    send_later(master, false_header(80, 80, 1, 25_600) + b"".join(sparse(k, frames[k]) for k in range(30)))
    result = record(src, tmp_path / "r.h5", raw=True, events=False, spectra=False)
    assert (result.frames, result.corrupt) == (30, 1)
    np.testing.assert_array_equal(hdf5.read_frames(tmp_path / "r.h5").frames, frames)


def test_a_false_dense_header_of_32_mb_does_not_hold_good_frames_back(pty_pair):
    master, name = pty_pair
    frames = pattern(0, 5, (80, 80))
    src = SerialSource(name, timeout_s=30)
    send_later(master, false_header(4096, 4096, 0, 4096 * 4096 * 2) + b"".join(dense(k, frames[k]) for k in range(5)))
    t0 = time.monotonic()
    got = next(iter(src))          # delivered long before the 30 s timeout or 32 MB
    assert time.monotonic() - t0 < 5
    src.close()
    np.testing.assert_array_equal(got.frames, frames[:len(got)])
    assert src.stats.corrupt == 1


def test_a_valid_serial_frame_of_another_shape_is_counted_and_skipped_on_a_pty(tmp_path, pty_pair):
    master, name = pty_pair
    frames = pattern(0, 20, (16, 16))
    data = b"".join(dense(k, frames[k]) for k in range(10)) + dense(77, np.ones((2, 2), np.uint16)) \
        + b"".join(dense(k, frames[k]) for k in range(10, 20))
    src = SerialSource(name, timeout_s=0.5)
    send_later(master, data)
    result = record(src, tmp_path / "r.h5", raw=True, events=False, spectra=False)
    assert (result.frames, result.corrupt) == (20, 1)
    np.testing.assert_array_equal(hdf5.read_frames(tmp_path / "r.h5").frames, frames)
