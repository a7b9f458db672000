"""ZMQ frame stream: real sockets on loopback, publisher in this and in another process."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import zmq
from hexspec.drivers import ZmqPublisher, ZmqSource, open_source

import hexspec as hx


def pattern_frames(first, n, shape=(8, 10)):
    """Frame k holds k + pixel index (mod 65536): any decoding slip shows."""
    pix = np.arange(shape[0] * shape[1]).reshape(shape)
    return np.stack([(first + k + pix) % 65536 for k in range(n)]).astype(np.uint16)


def header(frame_num=0, shape=("8", "10"), dtype="uint16", dsize=None, **extra):
    itemsize = {"uint8": 1, "uint16": 2, "uint32": 4, "float32": 4}.get(dtype, 2)
    h = {"frame_num": frame_num, "acquisition_id": "t", "dtype": dtype,
         "dsize": int(np.prod([int(s) for s in shape])) * itemsize if dsize is None else dsize,
         "dataset": "raw_frames", "compression": "none", "shape": list(shape)}
    h.update(extra)
    return json.dumps(h).encode()


@pytest.fixture
def push_pull():
    """A bare PUSH socket bound on loopback and a PULL ZmqSource connected to it."""
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    src = ZmqSource(f"tcp://127.0.0.1:{port}", "PULL", timeout_s=0.3, shape=(8, 10))
    yield push, src
    src.close()
    push.close()


def test_push_pull_delivers_every_frame_with_its_number():
    frames = pattern_frames(100, 50)
    with ZmqPublisher("tcp://127.0.0.1:0", "PUSH") as pub:
        src = open_source(pub.endpoint + "?socket=pull&timeout=0.5")
        pub.send(hx.FrameBatch(frames, np.arange(100, 150)))
        got = list(src)
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), frames)
    np.testing.assert_array_equal(np.concatenate([b.frame_numbers for b in got]), np.arange(100, 150))
    assert (src.stats.frames, src.stats.dropped, src.stats.corrupt) == (50, 0, 0)


def test_batched_message_carries_consecutive_numbers_from_the_first():
    frames = pattern_frames(7, 12)
    with ZmqPublisher("tcp://127.0.0.1:0", "PUSH", frames_per_message=5) as pub:
        src = ZmqSource(pub.endpoint, "PULL", timeout_s=0.5)
        pub.send(hx.FrameBatch(frames, np.arange(7, 19)))
        got = list(src)
    assert pub.messages_sent == 3      # 5 + 5 + 2 frames
    np.testing.assert_array_equal(np.concatenate([b.frame_numbers for b in got]), np.arange(7, 19))
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), frames)


def test_publisher_header_follows_the_odin_live_view_format():
    ctx = zmq.Context.instance()
    with ZmqPublisher("tcp://127.0.0.1:0", "PUSH", acquisition_id="run42") as pub:
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVTIMEO, 5000)
        pull.connect(pub.endpoint)
        pub.send(hx.FrameBatch(pattern_frames(3, 1), [3]))
        parts = pull.recv_multipart()
        pull.close()
    h = json.loads(parts[0])
    assert h == {"frame_num": 3, "acquisition_id": "run42", "dtype": "uint16", "dsize": 160,
                 "dataset": "raw_frames", "compression": "none", "shape": ["8", "10"]}
    assert parts[1] == pattern_frames(3, 1)[0].astype("<u2").tobytes()


def test_gap_in_frame_numbers_is_counted_as_dropped():
    with ZmqPublisher("tcp://127.0.0.1:0", "PUSH") as pub:
        src = ZmqSource(pub.endpoint, "PULL", timeout_s=0.5)
        pub.send(hx.FrameBatch(pattern_frames(0, 10), np.arange(0, 10)))
        pub.send(hx.FrameBatch(pattern_frames(15, 5), np.arange(15, 20)))   # 10..14 never sent
        list(src)
    assert (src.stats.frames, src.stats.dropped) == (15, 5)


def test_frame_numbers_restarting_with_a_new_acquisition_are_not_dropped(push_pull):
    push, src = push_pull
    for fn, acq in ((50, "a"), (51, "a"), (0, "b"), (1, "b")):
        push.send_multipart([header(fn, acquisition_id=acq), pattern_frames(fn, 1).tobytes()])
    got = list(src)
    assert sum(len(b) for b in got) == 4
    assert src.stats.dropped == 0


def test_shape_given_as_integers_is_accepted(push_pull):
    push, src = push_pull
    push.send_multipart([header(4, shape=[8, 10]), pattern_frames(4, 1).tobytes()])
    (batch,) = list(src)
    np.testing.assert_array_equal(batch.frames, pattern_frames(4, 1))


def test_whole_valued_float32_frames_become_uint16(push_pull):
    push, src = push_pull
    push.send_multipart([header(0, dtype="float32"), pattern_frames(0, 1).astype("<f4").tobytes()])
    (batch,) = list(src)
    assert batch.frames.dtype == np.uint16
    np.testing.assert_array_equal(batch.frames, pattern_frames(0, 1))


GOOD = pattern_frames(9, 1).tobytes()
BAD_MESSAGES = {
    "one part": [header(1)],
    "three parts": [header(1), GOOD, b"extra"],
    "json that does not parse": [b'{"frame_num": 1, "dtype": ', GOOD],
    "header not utf-8": [b"\xff\xfe\x00", GOOD],
    "header not an object": [b"[1, 2]", GOOD],
    "unknown dtype": [header(1, dtype="complex64", dsize=160), GOOD],
    "dsize not matching shape": [header(1, dsize=158), GOOD],
    "payload shorter than dsize": [header(1), GOOD[:-2]],
    "shape that does not fit the detector": [header(1, shape=("10", "8")), GOOD],
    "shape that is not a number": [header(1, shape=("8", "ten"), dsize=160), GOOD],
    "negative frame number": [header(-1), GOOD],
    "compressed payload": [header(1, compression="blosc"), GOOD],
    "fractional float values": [header(1, dtype="float32"), np.full(80, 0.5, "<f4").tobytes()],
}


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_bad_message_is_counted_and_skipped_and_the_stream_goes_on(push_pull, kind):
    push, src = push_pull
    push.send_multipart(BAD_MESSAGES[kind])
    push.send_multipart([header(9), GOOD])
    got = list(src)
    assert src.stats.corrupt == 1
    assert src.stats.last_error
    assert [int(n) for b in got for n in b.frame_numbers] == [9]
    np.testing.assert_array_equal(got[0].frames, pattern_frames(9, 1))


def test_source_ends_after_its_receive_timeout_when_nothing_comes():
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    with ZmqSource(f"tcp://127.0.0.1:{port}", "PULL", timeout_s=0.2) as src:
        assert list(src) == []
    push.close(0)


def test_stop_ends_a_source_that_waits_without_timeout():
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    src = ZmqSource(f"tcp://127.0.0.1:{port}", "PULL", timeout_s=None)
    timer = threading.Timer(0.3, src.stop)
    timer.start()
    assert list(src) == []
    src.close()
    push.close(0)


PUBLISHER_SCRIPT = """
import sys, time
import numpy as np
import hexspec as hx
from hexspec.drivers import ZmqPublisher
pub = ZmqPublisher(sys.argv[1], "PUB")
pix = np.arange(80).reshape(8, 10)
k = 0
deadline = time.monotonic() + 20
while time.monotonic() < deadline:          # until the subscriber has had enough and we are killed
    pub.send(hx.FrameBatch(((k + pix) % 65536).astype(np.uint16)[None], [k]))
    k += 1
    time.sleep(0.002)
"""


def test_subscriber_receives_from_a_publisher_in_another_process():
    ctx = zmq.Context.instance()
    probe = ctx.socket(zmq.PUB)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER_SCRIPT, endpoint])
    try:
        src = open_source(endpoint + "?socket=sub&timeout=10&frames=40&batch=8")
        got = list(src)
    finally:
        proc.kill()
        proc.wait()
    numbers = np.concatenate([b.frame_numbers for b in got])
    frames = np.concatenate([b.frames for b in got])
    assert len(numbers) == 40
    pix = np.arange(80).reshape(8, 10)
    for n, f in zip(numbers, frames):        # each frame decoded intact, whatever was missed while joining
        np.testing.assert_array_equal(f, (n + pix) % 65536)


PUSHER_SCRIPT = """
import os, sys
import numpy as np
import hexspec as hx
from hexspec.drivers import ZmqPublisher
pub = ZmqPublisher("tcp://127.0.0.1:0", "PUSH", frames_per_message=50)
print(pub.endpoint, flush=True)
sys.stdin.readline()                          # the receiver is connected
pix = np.arange(6400).reshape(80, 80)
frames = ((np.arange(3000)[:, None, None] + pix) % 65536).astype(np.uint16)   # 38 MB: more than socket buffers hold
pub.send(hx.FrameBatch(frames))
pub.close()
os._exit(0)                                   # abrupt exit: only what close() waited for gets out
"""


def test_close_delivers_every_queued_message_before_the_process_exits():
    proc = subprocess.Popen([sys.executable, "-c", PUSHER_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        endpoint = proc.stdout.readline().strip()
        src = ZmqSource(endpoint, "PULL", timeout_s=5.0, hwm=10, max_frames=3000)   # small queue: data waits in the sender
        proc.stdin.write("go\n")
        proc.stdin.flush()
        numbers = np.concatenate([b.frame_numbers for b in src])
    finally:
        proc.kill()
        proc.wait()
    np.testing.assert_array_equal(numbers, np.arange(3000))
