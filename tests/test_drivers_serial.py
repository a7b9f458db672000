"""Serial framing: pyserial loop://, a real pseudo-terminal pair, corrupted streams."""

import os
import struct
import threading
import zlib

import numpy as np
import pytest
import serial
from hexspec.drivers import SerialSource, SerialWriter, open_source
from hexspec.drivers.serial import FrameParser, encode_frame

import hexspec as hx

SYNC = bytes([0xEB, 0x90, 0x48, 0x58])


def hand_frame(number, rows, cols, encoding, payload, crc=None):
    """A frame built from FORMATS.md with struct and zlib, independently of the writer."""
    head = struct.pack("<IHHBBHI", number, rows, cols, encoding, 0, 0, len(payload))
    if crc is None:
        crc = zlib.crc32(head + payload)
    return SYNC + head + payload + struct.pack("<I", crc)


def dense(number, frame):
    return hand_frame(number, *frame.shape, 0, frame.astype("<u2").tobytes())


def frames_of(seed, n, shape=(4, 6)):
    return np.random.default_rng(seed).integers(0, 16000, (n,) + shape).astype(np.uint16)


def test_dense_frame_bytes_match_the_format():
    frame = frames_of(0, 1)[0]
    assert encode_frame(frame, 77, "dense") == dense(77, frame)


def test_sparse_frame_lists_index_value_pairs_of_nonzero_pixels():
    frame = np.zeros((4, 6), np.uint16)
    frame[1, 2], frame[3, 5] = 1234, 7
    expected = hand_frame(5, 4, 6, 1, struct.pack("<HHHH", 1 * 6 + 2, 1234, 3 * 6 + 5, 7))
    assert encode_frame(frame, 5, "sparse") == expected


def test_parser_decodes_hand_built_dense_and_sparse_frames():
    a = frames_of(1, 1)[0]
    b = np.zeros((4, 6), np.uint16)
    b[2, 3] = 999
    out = FrameParser().feed(dense(1, a) + hand_frame(2, 4, 6, 1, struct.pack("<HH", 15, 999)))
    assert [n for n, _ in out] == [1, 2]
    np.testing.assert_array_equal(out[0][1], a)
    np.testing.assert_array_equal(out[1][1], b)


def test_garbage_between_frames_is_skipped():
    a, b = frames_of(2, 2)
    parser = FrameParser()
    out = parser.feed(b"\x00\x13noise" + dense(1, a) + b"\xeb\x90garbage" + dense(2, b))
    assert [n for n, _ in out] == [1, 2]
    assert parser.corrupt == 0
    assert parser.skipped_bytes == 7 + 9


def test_bytes_arriving_one_at_a_time_give_the_same_frames():
    a, b = frames_of(3, 2)
    parser = FrameParser()
    out = []
    for byte in dense(1, a) + dense(2, b):
        out += parser.feed(bytes([byte]))
    assert [n for n, _ in out] == [1, 2]
    np.testing.assert_array_equal(out[1][1], b)


def test_flipped_bit_fails_the_crc_and_the_next_frame_is_found():
    a, b = frames_of(4, 2)
    bad = bytearray(dense(1, a))
    bad[30] ^= 0x10
    parser = FrameParser()
    out = parser.feed(bytes(bad) + dense(2, b))
    assert [n for n, _ in out] == [2]
    assert parser.corrupt == 1 and "CRC" in parser.last_error


def test_frame_cut_short_is_rejected_and_the_next_frame_is_found():
    a, b = frames_of(5, 2)
    parser = FrameParser()
    out = parser.feed(dense(1, a)[:35] + dense(2, b) + dense(3, a))
    assert [n for n, _ in out] == [2, 3]
    assert parser.corrupt == 1


def test_impossible_header_is_rejected():
    parser = FrameParser()
    out = parser.feed(hand_frame(1, 4, 6, 7, b"\x00" * 48) + dense(2, frames_of(6, 1)[0]))
    assert [n for n, _ in out] == [2]
    assert parser.corrupt == 1 and "encoding" in parser.last_error


def test_dense_payload_length_must_match_the_shape():
    parser = FrameParser()
    parser.feed(hand_frame(1, 4, 6, 0, b"\x00" * 46))
    assert parser.corrupt == 1 and "48" in parser.last_error


def test_sparse_index_outside_the_frame_is_rejected():
    parser = FrameParser()
    out = parser.feed(hand_frame(1, 4, 6, 1, struct.pack("<HH", 24, 5)))
    assert out == [] and parser.corrupt == 1


def test_frame_of_another_shape_than_expected_is_rejected():
    parser = FrameParser(shape=(4, 6))
    out = parser.feed(dense(1, np.zeros((6, 4), np.uint16)))
    assert out == [] and parser.corrupt == 1


def test_loop_url_round_trip_through_writer_and_source():
    link = serial.serial_for_url("loop://", timeout=0.05)
    frames = frames_of(7, 6)
    frames[2] = 0
    frames[2, 1, 1] = 42                      # sent sparse by the automatic choice
    SerialWriter(link).send(hx.FrameBatch(frames, np.arange(10, 16)))
    src = SerialSource(link, timeout_s=0.2)
    got = list(src)
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), frames)
    np.testing.assert_array_equal(np.concatenate([b.frame_numbers for b in got]), np.arange(10, 16))
    assert (src.stats.corrupt, src.stats.dropped) == (0, 0)


def test_corrupt_frame_counts_as_corrupt_and_as_dropped():
    link = serial.serial_for_url("loop://", timeout=0.05)
    a, b, c = frames_of(8, 3)
    bad = bytearray(dense(2, b))
    bad[-1] ^= 0xFF
    link.write(dense(1, a) + bytes(bad) + dense(3, c))
    src = SerialSource(link, timeout_s=0.2)
    got = list(src)
    assert [int(n) for g in got for n in g.frame_numbers] == [1, 3]
    assert (src.stats.corrupt, src.stats.dropped) == (1, 1)


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    name = os.ttyname(slave)
    yield master, name
    os.close(master)
    os.close(slave)


def test_pseudo_terminal_carries_full_size_frames(pty_pair):
    master, name = pty_pair
    frames = frames_of(9, 20, shape=(80, 80))
    src = open_source(f"serial://{name}?baud=3000000&timeout=0.5")    # opens the pty raw before writing
    writer = SerialWriter(os.fdopen(os.dup(master), "wb", buffering=0), encoding="dense")
    t = threading.Thread(target=writer.send, args=(hx.FrameBatch(frames, np.arange(20)),))
    t.start()
    got = list(src)
    t.join()
    src.close()
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), frames)
    assert src.stats.corrupt == 0


def test_partial_frame_left_when_the_link_goes_quiet_is_counted(pty_pair):
    master, name = pty_pair
    src = SerialSource(name, timeout_s=0.3)
    os.write(master, dense(1, frames_of(10, 1)[0]) + dense(2, frames_of(11, 1)[0])[:30])
    got = list(src)
    src.close()
    assert [int(n) for g in got for n in g.frame_numbers] == [1]
    assert src.stats.corrupt == 1


def test_opening_a_missing_port_names_it():
    with pytest.raises(hx.ProtocolError, match="/dev/does-not-exist"):
        open_source("serial:///dev/does-not-exist")
