"""Property-based fuzzing of everything that reads untrusted bytes (issue 17).

Whatever the input, a decoder either returns well-formed data or raises the project's
own error naming the problem (HexspecError); nothing else escapes, and nothing is
allocated from a size that was not checked."""

import json
import struct
import zlib

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hexspec as hx
from hexspec.drivers.serial import FrameParser
from hexspec.drivers.zmq import decode_message
from hexspec.errors import HexspecError, ProtocolError
from hexspec.io import hdf5, odin

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True) \
    | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=12)
sizes = st.one_of(st.integers(-5, 2 ** 66), st.text(max_size=8), st.sampled_from(["80", "\u00b2", "9" * 40, " 8 "]))


@st.composite
def odin_headers(draw):
    """Headers near the real format: every field drawn from plausible and hostile values."""
    h = {"frame_num": draw(st.integers(-3, 2 ** 64) | json_values),
         "dtype": draw(st.sampled_from(["uint8", "uint16", "uint32", "float32", "int8", "complex64"]) | json_values),
         "shape": draw(st.lists(sizes, min_size=0, max_size=4) | json_values),
         "dsize": draw(st.integers(-1, 2 ** 40) | json_values),
         "compression": draw(st.sampled_from(["none", "", "lz4"]) | json_values),
         "acquisition_id": draw(json_values)}
    for key in draw(st.sets(st.sampled_from(sorted(h)), max_size=2)):
        del h[key]
    return h


def _one_line(exc) -> bool:
    """A user-facing error is one non-empty line (the CLI prints it as it is)."""
    text = str(exc)
    return bool(text.strip()) and "\n" not in text


@FAST
@given(header=odin_headers(), payload=st.binary(max_size=512))
def test_zmq_decoder_returns_consistent_frames_or_a_protocol_error(header, payload):
    try:
        h, frames = decode_message([json.dumps(header).encode(), payload])
    except ProtocolError:
        return
    assert frames.dtype == np.uint16 and frames.ndim == 3
    assert 0 <= h["frame_num"] < 2 ** 63
    itemsize = {"uint8": 1, "uint16": 2, "uint32": 4, "float32": 4}[h["dtype"]]
    assert frames.size * itemsize == len(payload) == h["dsize"]


@FAST
@given(first=st.binary(max_size=300), second=st.binary(max_size=64))
def test_zmq_decoder_survives_arbitrary_bytes_in_both_parts(first, second):
    try:
        decode_message([first, second])
    except ProtocolError as exc:
        assert _one_line(exc)


def frame_bytes(number, frame):
    head = struct.pack("<IHHBBHI", number, frame.shape[0], frame.shape[1], 0, 0, 0, frame.nbytes)
    payload = frame.astype("<u2").tobytes()
    return b"\xeb\x90\x48\x58" + head + payload + struct.pack("<I", zlib.crc32(head + payload))


@FAST
@given(noise=st.lists(st.binary(max_size=60) | st.just(b"\xeb\x90\x48\x58") | st.builds(
           lambda r, c, e, n: b"\xeb\x90\x48\x58" + struct.pack("<IHHBBHI", 1, r, c, e, 0, 0, n),
           st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 3), st.integers(0, 2 ** 32 - 1)),
           max_size=6),
       cuts=st.lists(st.integers(1, 400), max_size=8), seed=st.integers(0, 2 ** 16))
def test_serial_parser_finds_every_good_frame_behind_any_noise(noise, cuts, seed):
    frames = np.random.default_rng(seed).integers(0, 65535, (3, 4, 6)).astype(np.uint16)
    stream = b"".join(noise) + b"".join(frame_bytes(k, frames[k]) for k in range(3))
    parser = FrameParser(shape=(4, 6))
    got, at = [], 0
    for c in cuts + [len(stream)]:
        got += parser.feed(stream[at:at + c])
        at += c
    got += parser.finish()
    # noise may hold a false header that swallows nothing good: all three frames come out, in order
    assert [n for n, _ in got][-3:] == [0, 1, 2]
    np.testing.assert_array_equal(np.stack([f for _, f in got[-3:]]), frames)
    assert parser.buffered == 0 and parser.corrupt >= 0


@FAST
@given(options=st.dictionaries(st.sampled_from(["threshold", "gradients", "intercepts", "next_frame",
                                                "charge_sharing", "window", "max_cluster_size", "bins",
                                                "unknown"]), json_values, max_size=4))
def test_config_loader_accepts_or_names_the_bad_option(tmp_path_factory, options):
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_text(json.dumps(options))
    try:
        hx.ProcessingConfig.from_file(path).pixel_maps((4, 4))   # a map of another shape is a ConfigError too
    except HexspecError as exc:
        assert _one_line(exc)


@FAST
@given(text=st.text(max_size=200))
def test_config_loader_survives_any_toml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(text)
    try:
        hx.ProcessingConfig.from_file(path)
    except HexspecError as exc:
        assert _one_line(exc)


h5_shapes = st.lists(st.integers(0, 40), min_size=0, max_size=4).map(tuple) | st.sampled_from(
    [(16, 16, 10 ** 9), (10 ** 6, 10 ** 6), (10 ** 8, 80, 80)])
h5_dtypes = st.sampled_from(["u1", "u2", "u4", "i8", "f4", "f8", "S4"])


@SLOW
@given(shape=h5_shapes, dtype=h5_dtypes, edges=st.integers(0, 50), group=st.sampled_from(["spectra", "events", "frames"]))
def test_hdf5_readers_return_data_or_a_format_error(tmp_path_factory, shape, dtype, edges, group):
    path = tmp_path_factory.mktemp("h5") / "x.h5"
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs["program"] = "hexspec"
        g = e.create_group(group)
        big = int(np.prod(shape, dtype=np.float64)) > 10 ** 6
        kw = dict(chunks=tuple(max(1, min(s, 8)) for s in shape)) if big and len(shape) else {}
        names = {"spectra": ["counts"], "events": ["frame", "row", "col", "energy", "size"],
                 "frames": ["data", "frame_number"]}[group]
        for name in names:
            g.create_dataset(name, shape=shape, dtype=dtype, **kw)
        if group == "spectra":
            g["energy_edges"] = np.linspace(0, 1, edges)
        raw = f.create_dataset("raw_frames", shape=shape, dtype=dtype, **kw)
        del raw
    for reader in (hdf5.read_cube, hdf5.read_events, hdf5.read_frames, hdf5.count_frames, odin.read_odin):
        try:
            reader(path)
        except HexspecError as exc:
            assert _one_line(exc), reader.__name__
