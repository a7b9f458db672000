"""odin-data's live view as it really is: its exact header, "float", "unknown" compression,
compressed frames, decimated views and several datasets on one socket (real ZMQ sockets)."""

import io
import json
import time

import h5py
import hdf5plugin
import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message
from hexspec.drivers import ZmqSource, open_source
from hexspec.drivers.zmq import decode_message

import hexspec as hx
from hexspec.errors import ProtocolError

#: The header bytes odin-data's C++ LiveViewPlugin sends for one 80x80 uint16 raw frame
#: (issue 14), byte for byte: no spaces, shape entries as strings.
ODIN_HEADER = (b'{"frame_num":0,"acquisition_id":"acq1","dtype":"uint16","dsize":12800,'
               b'"dataset":"raw_frames","compression":"none","shape":["80","80"]}')


def hexitec_frame(seed, shape=(80, 80)):
    rng = np.random.default_rng(seed)
    f = np.zeros(shape, np.uint16)
    hit = rng.random(shape) < 0.03
    f[hit] = rng.integers(1, 16000, hit.sum())
    return f


def header(frame_num, shape=(80, 80), dtype="uint16", dsize=None, compression="none", dataset="raw_frames"):
    itemsize = 4 if dtype in ("float", "float32") else 2
    return json.dumps({"frame_num": frame_num, "acquisition_id": "acq1", "dtype": dtype,
                       "dsize": int(np.prod(shape)) * itemsize if dsize is None else dsize,
                       "dataset": dataset, "compression": compression,
                       "shape": [str(s) for s in shape]}, separators=(",", ":")).encode()


@pytest.fixture
def push():
    """A bare PUSH socket on loopback (the sender) and a function opening a PULL source on it."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    opened = []

    def source(query="socket=pull&timeout=0.4"):
        src = open_source(f"tcp://127.0.0.1:{port}?{query}")
        opened.append(src)
        return src
    yield sock, source
    for s in opened:
        s.close()
    sock.close()


@pytest.fixture
def pub():
    """A bare PUB socket on loopback and a SUB source that has joined it."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    src = ZmqSource(f"tcp://127.0.0.1:{port}", "SUB", timeout_s=0.4)
    time.sleep(0.3)        # let the subscription reach the publisher (ZMQ's slow joiner)
    yield sock, src
    src.close()
    sock.close()


def test_the_exact_odin_header_decodes_pixel_exact():
    frame = hexitec_frame(0)
    assert len(ODIN_HEADER) == 134 and frame.nbytes == 12800
    h, frames = decode_message([ODIN_HEADER, frame.astype("<u2").tobytes()])
    assert frames.shape == (1, 80, 80) and frames.dtype == np.uint16
    np.testing.assert_array_equal(frames[0], frame)
    assert (h["frame_num"], h["acquisition_id"], h["dataset"], h["shape"]) == (0, "acq1", "raw_frames", [80, 80])


def test_odin_float_dtype_is_float32(push):
    sock, source = push
    src = source()
    frames = [hexitec_frame(k) for k in range(300)]
    for k, f in enumerate(frames):           # what HEXITEC's reorder plugin publishes
        sock.send_multipart([header(k, dtype="float", dataset="processed_frames"), f.astype("<f4").tobytes()])
    got = list(src)
    assert src.stats.corrupt == 0 and src.stats.frames == 300
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), np.stack(frames))


def test_unknown_compression_is_uncompressed_when_dsize_is_the_raw_size():
    frame = hexitec_frame(1)
    _, frames = decode_message([header(3, compression="unknown"), frame.tobytes()])
    np.testing.assert_array_equal(frames[0], frame)
    with pytest.raises(ProtocolError, match=r"expected prod\(shape \[80, 80\]\) \* 2 = 12800 bytes "
                                            r"\(compression 'unknown' is read as uncompressed only then\), found 6000"):
        decode_message([header(3, compression="unknown", dsize=6000), frame.tobytes()[:6000]])


def lz4_literal_block(data: bytes) -> bytes:
    """An LZ4 block holding ``data`` as one run of literals, written by hand from the LZ4
    block format (token 0xF0, length 15 + 255... + rest, the literals): valid LZ4 that no
    compressor library produced."""
    n = len(data) - 15
    length = b"\xff" * (n // 255) + bytes([n % 255])
    return b"\xf0" + length + data


def test_lz4_chunk_made_by_hand_decodes():
    frame = hexitec_frame(2)
    raw = frame.astype("<u2").tobytes()
    block = lz4_literal_block(raw)
    # HDF5 LZ4 filter chunk: total size (u64 BE), block size (u32 BE), then per block its size (u32 BE)
    chunk = len(raw).to_bytes(8, "big") + len(raw).to_bytes(4, "big") + len(block).to_bytes(4, "big") + block
    _, frames = decode_message([header(0, compression="LZ4", dsize=len(chunk)), chunk])
    np.testing.assert_array_equal(frames[0], frame)


def test_blosc_frame_made_by_hand_decodes():
    frame = hexitec_frame(3)
    raw = frame.astype("<u2").tobytes()
    # Blosc 1 frame stored as is (flags: 0x02 memcpyed): version 2, codec version 1, typesize 2,
    # nbytes, blocksize, cbytes (header included) as uint32 LE
    head = bytes([2, 1, 0x02, 2]) + len(raw).to_bytes(4, "little") + len(raw).to_bytes(4, "little") \
        + (len(raw) + 16).to_bytes(4, "little")
    _, frames = decode_message([header(0, compression="blosc", dsize=len(head) + len(raw)), head + raw])
    np.testing.assert_array_equal(frames[0], frame)


def filter_chunk(frame, opts):
    """The chunk an HDF5 filter stores for one frame: what odin-data sends compressed."""
    with h5py.File(io.BytesIO(), "w") as f:
        ds = f.create_dataset("x", data=frame, chunks=frame.shape, **opts)
        return ds.id.read_direct_chunk((0,) * frame.ndim)[1]


CODECS = {"blosc": lambda: hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.BITSHUFFLE),
          "LZ4": lambda: hdf5plugin.LZ4(), "BSLZ4": lambda: hdf5plugin.Bitshuffle(cname="lz4")}


@pytest.mark.parametrize("name", CODECS)
def test_compressed_messages_are_decoded_not_counted_corrupt(push, name):
    sock, source = push
    src = source()
    frames = [hexitec_frame(10 + k) for k in range(20)]
    for k, f in enumerate(frames):
        chunk = filter_chunk(f, CODECS[name]())
        assert len(chunk) < f.nbytes
        sock.send_multipart([header(k, compression=name, dsize=len(chunk)), chunk])
    got = list(src)
    assert (src.stats.corrupt, src.stats.frames) == (0, 20)
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), np.stack(frames))


def test_compressed_payload_claiming_another_size_is_refused_before_decoding():
    frame = hexitec_frame(4)
    chunk = bytearray(filter_chunk(frame, hdf5plugin.Bitshuffle(cname="lz4")))
    chunk[0:8] = (1 << 40).to_bytes(8, "big")          # claims a terabyte
    with pytest.raises(ProtocolError, match=r"bslz4 data of 1099511627776 bytes, the header's shape \[80, 80\] "
                                            r"of uint16 is 12800 bytes"):
        decode_message([header(0, compression="BSLZ4", dsize=len(chunk)), bytes(chunk)])
    garbage = b"\x00\x00\x00\x00\x00\x00\x32\x00" + b"\x00\x00\x20\x00" + b"\x13" * 40
    with pytest.raises(ProtocolError, match="do not decode"):
        decode_message([header(0, compression="LZ4", dsize=len(garbage)), garbage])


def test_decimated_live_view_reports_not_sent_frames_not_drops(pub):
    sock, src = pub
    # per_second: 2 at 9118.87 frames/s: every 4559th frame reaches the live view
    numbers = [0, 4559, 9118, 13677, 18236, 22795]
    for n in numbers:
        sock.send_multipart([header(n), hexitec_frame(n).tobytes()])
    got = list(src)
    assert sum(len(b) for b in got) == 6
    assert src.stats.dropped == 0
    assert src.stats.not_sent == 22795 + 1 - 6 == 22790


def test_viewer_shows_no_dropped_frames_for_a_decimated_view(pub):
    from hexspec.viewer.processor import LiveProcessor
    sock, src = pub
    proc = LiveProcessor(src, hx.ProcessingConfig(threshold=100.0)).start()
    for n in range(0, 50 * 30, 50):       # frame_frequency: 50
        sock.send_multipart([header(n), hexitec_frame(n).tobytes()])
    assert proc.wait_until(lambda p: p.counters()["frames"] == 30, timeout=10)
    c = proc.counters()
    proc.stop()
    assert c["dropped"] == 0                      # the window colours "dropped" red when non-zero
    assert src.stats.not_sent == 29 * 49


def test_full_rate_sub_stream_still_counts_real_drops(pub):
    sock, src = pub
    numbers = [n for n in range(60) if n not in (20, 21, 22)]
    for n in numbers:
        sock.send_multipart([header(n), hexitec_frame(n).tobytes()])
    list(src)
    assert (src.stats.dropped, src.stats.not_sent) == (3, 0)


def test_gaps_in_a_pull_pipeline_are_losses(push):
    sock, source = push
    src = source()
    for n in range(0, 500, 50):
        sock.send_multipart([header(n), hexitec_frame(n).tobytes()])
    list(src)
    assert (src.stats.dropped, src.stats.not_sent) == (9 * 49, 0)


def test_several_datasets_on_one_socket_never_mix(push):
    sock, source = push

    def send_both(k):
        f = hexitec_frame(k)
        sock.send_multipart([header(k, dtype="float", dataset="processed_frames"), (f.astype("<f4") + 1).tobytes()])
        sock.send_multipart([header(k, dataset="raw_frames"), f.tobytes()])
    src = source()
    for k in range(10):
        send_both(k)
    got = np.concatenate([b.frames for b in src])
    # the first processed frame came before any raw frame; from then on raw_frames only
    assert len(got) == 11 and src.stats.filtered == 9
    np.testing.assert_array_equal(got[1:], np.stack([hexitec_frame(k) for k in range(10)]))
    # PUSH shares messages between its peers: wait until it has seen the first receiver go
    # (on a loaded machine that takes a moment), or part of the next ten would go to it
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    src.close()
    assert monitor.poll(10_000), "the PUSH socket never saw the first receiver disconnect"
    recv_monitor_message(monitor)
    sock.disable_monitor()
    monitor.close()
    chosen = source("socket=pull&timeout=0.4&dataset=processed_frames")
    for k in range(10):
        send_both(k)
    got = np.concatenate([b.frames for b in chosen])
    assert chosen.stats.filtered == 10
    np.testing.assert_array_equal(got, np.stack([hexitec_frame(k) + 1 for k in range(10)]))
