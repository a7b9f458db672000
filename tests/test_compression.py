"""Compressed frame files: every compression round-trips bit-exact, is recorded in the file,
and files written by other software with the hdf5plugin filters (odin-data's layout) read."""

import resource
import signal
import subprocess
import sys

import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import error_lines

import hexspec as hx
from hexspec.cli import main
from hexspec.drivers.files import FileSource
from hexspec.errors import ConfigError
from hexspec.io import framefile, hdf5


def frames_with_hits(seed, n, shape=(12, 10)):
    """Mostly zero frames with a few hits of up to 14 bits, like HEXITEC's, and some noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n,) + shape, np.uint16)
    mask = rng.random(out.shape) < 0.05
    out[mask] = rng.integers(1, 16384, mask.sum())
    out[:, 0, 0] = 65535            # the full uint16 range must survive too
    return out


# HDF5 filter ids the file must name (HDF Group registry): the written filter is real
FILTER_ID = {"bslz4": 32008, "blosc": 32001, "lz4": 32004, "gzip": 1}


@pytest.mark.parametrize("name", framefile.COMPRESSIONS)
def test_every_compression_round_trips_bit_exact_and_is_recorded(tmp_path, name):
    frames = frames_with_hits(1, 150)
    numbers = np.arange(150, dtype=np.int64) * 3 + 7
    path = tmp_path / f"{name}.h5"
    with hdf5.HexspecWriter(path, (12, 10), frames=True, events=False, spectra=False, frame_chunk=16,
                            frame_compression=name) as w:
        for s in range(0, 150, 40):
            w.write_frames(hx.FrameBatch(frames[s:s + 40], numbers[s:s + 40]))
    got = hdf5.read_frames(path)
    assert got.frames.dtype == np.uint16
    np.testing.assert_array_equal(got.frames, frames)
    np.testing.assert_array_equal(got.frame_numbers, numbers)
    back = np.concatenate([b.frames for b in framefile.iter_frame_file(path, 64)])
    np.testing.assert_array_equal(back, frames)
    with h5py.File(path, "r") as f:
        ds = f["entry/frames/data"]
        ids = [ds.id.get_create_plist().get_filter(i)[0] for i in range(ds.id.get_create_plist().get_nfilters())]
        assert (FILTER_ID[name] in ids) if name != "none" else ids == []
        assert ds.attrs["compression"] == name
        assert f["entry/acquisition"].attrs["frame_compression"] == name
    assert framefile.file_compression(path) == name


def test_compressed_files_are_smaller_than_raw(tmp_path):
    frames = frames_with_hits(2, 200)
    sizes = {}
    for name in framefile.COMPRESSIONS:
        with hdf5.HexspecWriter(tmp_path / f"{name}.h5", (12, 10), frames=True, events=False, spectra=False,
                                frame_chunk=50, frame_compression=name) as w:
            w.write_frames(hx.FrameBatch(frames))
        with h5py.File(tmp_path / f"{name}.h5", "r") as f:
            sizes[name] = f["entry/frames/data"].id.get_storage_size()
    assert sizes["none"] == frames.nbytes
    for name in ("bslz4", "blosc", "lz4", "gzip"):
        assert sizes[name] < 0.5 * frames.nbytes, (name, sizes)


def test_unknown_compression_is_refused_before_a_file_is_made(tmp_path):
    with pytest.raises(ConfigError, match="expected one of bslz4, blosc, lz4, gzip, none, found 'zip'"):
        hdf5.HexspecWriter(tmp_path / "x.h5", (4, 4), frames=True, frame_compression="zip")
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("make", [lambda: hdf5plugin.Bitshuffle(cname="lz4"), lambda: hdf5plugin.Blosc(cname="zstd"),
                                  lambda: hdf5plugin.LZ4()], ids=["bslz4", "blosc-zstd", "lz4"])
def test_odin_layout_file_written_by_h5py_and_hdf5plugin_reads(tmp_path, make):
    # what odin-data's frame processor writes: raw_frames at the root, one frame per chunk
    frames = frames_with_hits(3, 60, shape=(16, 24))
    path = tmp_path / "odin.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw_frames", data=frames, chunks=(1, 16, 24), **make())
    assert framefile.frame_file_kind(path) == "odin"
    with FileSource(path, batch_frames=25) as src:
        got = np.concatenate([b.frames for b in src])
    np.testing.assert_array_equal(got, frames)
    np.testing.assert_array_equal(hx.io.read_odin(path)["raw_frames"], frames)
    # and it processes: the events are those of the frames held in memory
    cfg = hx.ProcessingConfig(threshold=5000, next_frame=False, charge_sharing="none",
                              bins=hx.EnergyBins(0, 16384, 64))
    out = tmp_path / "out.h5"
    assert main(["process", str(path), "-o", str(out), "--threshold", "5000", "--no-next-frame",
                 "--charge-sharing", "none", "--bins", "0", "16384", "64", "--events", "--quiet"]) == 0
    expected = (frames > 5000).sum()
    assert len(hdf5.read_events(out)) == expected
    assert expected == len(hx.extract_events(frames, cfg))


def test_simulate_and_record_write_the_compression_asked_for(tmp_path):
    sim = tmp_path / "sim.h5"
    assert main(["simulate", "-n", "40", "-o", str(sim), "--shape", "16", "16", "--compression", "blosc",
                 "--quiet"]) == 0
    assert framefile.file_compression(sim) == "blosc"
    default = tmp_path / "default.h5"
    assert main(["simulate", "-n", "10", "-o", str(default), "--shape", "16", "16", "--quiet"]) == 0
    assert framefile.file_compression(default) == "blosc"
    rec = tmp_path / "rec.h5"
    assert main(["record", f"file://{sim}", "-o", str(rec), "--raw", "--compression", "gzip", "--quiet"]) == 0
    assert framefile.file_compression(rec) == "gzip"
    np.testing.assert_array_equal(hdf5.read_frames(rec).frames, hdf5.read_frames(sim).frames)
    rec2 = tmp_path / "rec2.h5"
    assert main(["record", f"file://{sim}", "-o", str(rec2), "--raw", "--quiet"]) == 0
    assert framefile.file_compression(rec2) == "blosc"
    np.testing.assert_array_equal(hdf5.read_frames(rec2).frames, hdf5.read_frames(sim).frames)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["blosc", "none"])
def test_record_stops_with_one_line_when_the_file_cannot_grow(tmp_path, name):
    # a write failing under RLIMIT_FSIZE used to leave the recorder waiting for ever in its
    # close (HDF5 reading metadata back from /dev/null) for these compressions
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
    out = tmp_path / "full.h5"
    r = subprocess.run([sys.executable, "-m", "hexspec.cli", "record", "sim://?seed=1&frames=20000&shape=80,80",
                        "--raw", "-q", "--compression", name, "-o", str(out)], capture_output=True, text=True,
                       timeout=90, preexec_fn=limit)
    assert r.returncode == 1
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "write failed" in lines[0] and "File too large" in lines[0], r.stderr
    assert framefile.file_compression(out) == name
