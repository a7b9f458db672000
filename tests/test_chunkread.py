"""Frames decoded from whole stored chunks in threads (hexspec.io.chunkread) equal the
frames written, for every compression, batch size and range, and a damaged chunk is
named, not a crash."""

import h5py
import hdf5plugin
import numpy as np
import pytest

import hexspec as hx
from hexspec.errors import FormatError
from hexspec.io import chunkread, framefile, hdf5


@pytest.fixture(autouse=True)
def small_chunks_decoded_directly(monkeypatch):
    # the files here are small; real ones have chunks above the size limit
    monkeypatch.setattr(chunkread, "MIN_DIRECT_CHUNK_BYTES", 0)


def frames(n=333, shape=(24, 20), seed=3):
    rng = np.random.default_rng(seed)
    hit = rng.random((n,) + shape) < 0.05
    return np.where(hit, rng.integers(1, 9000, (n,) + shape), rng.integers(0, 3, (n,) + shape)).astype(np.uint16)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = tmp_path_factory.mktemp("chunkread")
    fr = frames()
    paths = {}
    for comp in framefile.COMPRESSIONS:
        p = d / f"{comp}.h5"
        with hdf5.HexspecWriter(p, fr.shape[1:], frames=True, events=False, spectra=False, frame_chunk=16,
                                frame_compression=comp) as w:
            w.write_frames(hx.FrameBatch(fr, np.arange(len(fr), dtype=np.int64) + 40))
        paths[comp] = p
    return fr, paths


@pytest.mark.parametrize("comp", framefile.COMPRESSIONS)
@pytest.mark.parametrize("threads", [0, 3])
def test_every_compression_reads_back_exactly(written, comp, threads):
    fr, paths = written
    with h5py.File(paths[comp], "r") as f:
        expect = {"bslz4": "bslz4", "blosc": "blosc", "none": "none"}.get(comp)
        assert chunkread.direct_codec(f["entry/frames/data"]) == expect
    for batch in (100, 16, 7, 1000):    # across, on and inside the 16-frame stored chunks
        got = list(framefile.iter_frame_file(paths[comp], batch, decode_threads=threads))
        assert [len(b) for b in got][:-1] == [batch] * (len(got) - 1)
        np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), fr)
        np.testing.assert_array_equal(np.concatenate([b.frame_numbers for b in got]), np.arange(len(fr)) + 40)
        part = list(framefile.iter_frame_range(paths[comp], 21, 310, batch, decode_threads=threads))
        np.testing.assert_array_equal(np.concatenate([b.frames for b in part]), fr[21:310])


def test_odin_file_with_other_block_size_and_one_frame_chunks(tmp_path):
    """odin-data writes one frame per chunk, bitshuffle's default block size."""
    fr = frames(70, (16, 16))
    p = tmp_path / "odin.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("raw_frames", data=fr, chunks=(1, 16, 16), **hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    got = list(framefile.iter_frame_file(p, 32, decode_threads=2))
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), fr)
    np.testing.assert_array_equal(np.concatenate([b.frame_numbers for b in got]), np.arange(70))


def test_unwritten_chunks_read_as_hdf5_fills_them(tmp_path):
    p = tmp_path / "sparse.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("raw_frames", shape=(40, 8, 8), dtype=np.uint16, chunks=(10, 8, 8), fillvalue=7,
                              **hdf5plugin.Blosc(cname="lz4"))
        ds[20:30] = 3                      # chunks 0, 1 and 3 never written
    got = np.concatenate([b.frames for b in framefile.iter_frame_file(p, 15, decode_threads=2)])
    expect = np.full((40, 8, 8), 7, np.uint16)
    expect[20:30] = 3
    np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize("comp", ["bslz4", "blosc"])
def test_damaged_chunk_is_named(tmp_path, comp):
    fr = frames(64, (16, 16))
    p = tmp_path / f"bad_{comp}.h5"
    with hdf5.HexspecWriter(p, (16, 16), frames=True, events=False, spectra=False, frame_chunk=16,
                            frame_compression=comp) as w:
        w.write_frames(hx.FrameBatch(fr))
    with h5py.File(p, "r") as f:
        info = f["entry/frames/data"].id.get_chunk_info(2)        # frames 32-47
    with open(p, "r+b") as fh:
        fh.seek(info.byte_offset + 24)
        fh.write(b"\xff" * (info.size - 24))
    it = framefile.iter_frame_range(p, 0, 64, 16, shape=(16, 16), decode_threads=2)
    np.testing.assert_array_equal(next(it).frames, fr[:16])
    np.testing.assert_array_equal(next(it).frames, fr[16:32])
    with pytest.raises(FormatError, match="frames 32-47"):
        next(it)


def test_bitshuffle_block_size_past_the_chunk_is_an_error_not_a_stray_read(tmp_path):
    fr = frames(32, (16, 16))
    p = tmp_path / "bad_block.h5"
    with hdf5.HexspecWriter(p, (16, 16), frames=True, events=False, spectra=False, frame_chunk=16,
                            frame_compression="bslz4") as w:
        w.write_frames(hx.FrameBatch(fr))
    with h5py.File(p, "r") as f:
        info = f["entry/frames/data"].id.get_chunk_info(1)
    with open(p, "r+b") as fh:
        fh.seek(info.byte_offset + 12)         # the first LZ4 block's stored size
        fh.write((0x7FFFFFF0).to_bytes(4, "big"))
    with pytest.raises(FormatError, match="frames 16-31.*blocks do not add up"):
        list(framefile.iter_frame_range(p, 0, 32, 16, shape=(16, 16), decode_threads=2))


def test_chunks_of_a_few_frames_are_left_to_hdf5(tmp_path, monkeypatch):
    monkeypatch.setattr(chunkread, "MIN_DIRECT_CHUNK_BYTES", 256 * 1024)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        one = f.create_dataset("one", shape=(100, 80, 80), dtype=np.uint16, chunks=(1, 80, 80),
                               **hdf5plugin.Bitshuffle(cname="lz4"))
        many = f.create_dataset("many", shape=(100, 80, 80), dtype=np.uint16, chunks=(64, 80, 80),
                                **hdf5plugin.Bitshuffle(cname="lz4"))
        assert chunkread.direct_codec(one) is None          # 12.8 KB: h5py reads it faster
        assert chunkread.direct_codec(many) == "bslz4"     # 819 KB: decoded in threads
