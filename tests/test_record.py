"""The recorder: frames, events and counters in hexspec HDF5; clean stop on signals; kill -9 safety."""

import json
import os
import signal
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
import pytest
import zmq
from hexspec.drivers import ZmqSource
from hexspec.drivers.recorder import Recorder, record

import hexspec as hx
from hexspec.cli import main
from hexspec.io import hdf5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sparse_frames(first, n, shape=(16, 16)):
    """Frame k: zero except one pixel (k mod pixels) holding 200 + k mod 60000 ADU."""
    out = np.zeros((n,) + shape, np.uint16)
    k = np.arange(first, first + n)
    out.reshape(n, -1)[np.arange(n), k % (shape[0] * shape[1])] = 200 + k % 60000
    return out


def noisy_frames(seed, n, shape=(16, 16)):
    return np.random.default_rng(seed).integers(0, 300, (n,) + shape).astype(np.uint16)


CFG = hx.ProcessingConfig(threshold=250.0, bins=hx.EnergyBins(0, 400, 4))


def test_frames_written_in_parallel_chunks_read_back_exactly(tmp_path):
    frames = noisy_frames(0, 300)
    path = tmp_path / "r.h5"
    with Recorder(path, (16, 16), CFG, raw=True, events=False, spectra=False) as rec:
        at = 0
        for n in (30, 50, 1, 150, 69):       # chunks of 64 filled across batches and flushes
            rec.add(hx.FrameBatch(frames[at:at + n], np.arange(at, at + n) + 1000))
            rec.flush()
            at += n
    got = hdf5.read_frames(path)
    np.testing.assert_array_equal(got.frames, frames)
    np.testing.assert_array_equal(got.frame_numbers, np.arange(1000, 1300))


def test_direct_chunks_hold_the_bytes_hdf5_filters_would_store(tmp_path):
    frames = noisy_frames(1, 64)
    with Recorder(tmp_path / "r.h5", (16, 16), CFG, raw=True, events=False, spectra=False,
                  frame_compression="gzip") as rec:
        rec.add(hx.FrameBatch(frames))
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("d", data=frames, chunks=(64, 16, 16), compression="gzip", compression_opts=1, shuffle=True)
    with h5py.File(tmp_path / "r.h5", "r") as a, h5py.File(tmp_path / "plain.h5", "r") as b:
        ours = a["entry/frames/data"]
        assert (ours.compression, ours.shuffle) == ("gzip", True)
        mask_a, chunk_a = ours.id.read_direct_chunk((0, 0, 0))
        mask_b, chunk_b = b["d"].id.read_direct_chunk((0, 0, 0))
    assert mask_a == mask_b == 0
    assert zlib.decompress(chunk_a) == zlib.decompress(chunk_b)


def test_recorded_events_and_spectra_equal_one_shot_extraction(tmp_path):
    frames = noisy_frames(2, 200)
    batch = hx.FrameBatch(frames, np.arange(200))
    path = tmp_path / "r.h5"
    with Recorder(path, (16, 16), CFG, events=True, spectra=True) as rec:
        for part in batch.split(37):
            rec.add(part)
    expected = hx.extract_events(batch, CFG)
    assert hdf5.read_events(path) == expected
    cube = hdf5.read_cube(path)
    np.testing.assert_array_equal(cube.counts, hx.SpectralCube.from_events(expected, CFG.bins, (16, 16)).counts)


def test_acquisition_group_counts_frames_gaps_and_corrupt_messages(tmp_path):
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    src = ZmqSource(f"tcp://127.0.0.1:{port}", "PULL", timeout_s=0.5)
    pix = sparse_frames(0, 20)
    for k in list(range(10)) + list(range(15, 20)):          # 10..14 missing
        head = {"frame_num": k, "acquisition_id": "", "dtype": "uint16", "dsize": 512,
                "dataset": "raw_frames", "compression": "none", "shape": ["16", "16"]}
        push.send_multipart([json.dumps(head).encode(), pix[k].tobytes()])
        if k == 3:
            push.send_multipart([b"not json", pix[k].tobytes()])
    result = record(src, tmp_path / "r.h5", CFG, raw=True)
    push.close(0)
    acq = hdf5.read_acquisition(tmp_path / "r.h5")
    assert (acq["frames_received"], acq["frames_dropped"], acq["corrupt_messages"]) == (15, 5, 1)
    assert (acq["first_frame"], acq["last_frame"]) == (0, 19)
    assert (result.frames, result.dropped, result.corrupt) == (15, 5, 1)


def test_frames_received_before_a_pause_are_flushed_while_the_source_waits(tmp_path):
    import threading
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    src = ZmqSource(f"tcp://127.0.0.1:{port}", "PULL", timeout_s=8.0)
    path = tmp_path / "r.h5"
    worker = threading.Thread(target=record, args=(src, path, CFG), kwargs={"raw": True, "events": False,
                                                                               "spectra": False})
    worker.start()
    frames = sparse_frames(0, 10)
    head = {"frame_num": 0, "acquisition_id": "", "dtype": "uint16", "dsize": 10 * 512,
            "dataset": "raw_frames", "compression": "none", "shape": [10, 16, 16]}
    push.send_multipart([json.dumps(head).encode(), frames.tobytes()])
    stored = 0
    deadline = time.monotonic() + 6.0            # well inside the source's 8 s wait
    while stored < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
        if path.exists():
            try:
                with h5py.File(path, "r", swmr=True, locking=False) as f:
                    stored = f["entry/frames/data"].shape[0]
            except (OSError, KeyError):
                pass
    recording = worker.is_alive()
    src.stop()
    worker.join()
    push.close(0)
    assert recording and stored == 10
    np.testing.assert_array_equal(hdf5.read_frames(path).frames, frames)


def test_source_that_delivers_nothing_is_an_error_and_writes_no_file(tmp_path):
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    with pytest.raises(hx.ProtocolError, match="no frames"):
        record(ZmqSource(f"tcp://127.0.0.1:{port}", "PULL", timeout_s=0.2), tmp_path / "r.h5")
    push.close(0)
    assert not (tmp_path / "r.h5").exists()


def test_record_command_stores_raw_frames_of_a_file_source(tmp_path):
    frames = sparse_frames(0, 150)
    src = tmp_path / "in.bin"
    frames.astype("<u2").tofile(src)
    out = tmp_path / "out.h5"
    assert main(["record", f"file://{src}?shape=16,16", "-o", str(out), "--raw", "--quiet"]) == 0
    np.testing.assert_array_equal(hdf5.read_frames(out).frames, frames)
    with h5py.File(out, "r") as f:
        assert "events" not in f["entry"] and "spectra" not in f["entry"]


def test_record_command_stores_events_and_spectra_by_default(tmp_path):
    out = tmp_path / "out.h5"
    assert main(["record", "sim://?seed=2&frames=100&shape=16,16", "-o", str(out), "--threshold", "100",
                 "--quiet"]) == 0
    with h5py.File(out, "r") as f:
        assert {"events", "spectra"} <= set(f["entry"]) and "frames" not in f["entry"]
    assert hdf5.read_acquisition(out)["frames_received"] == 100


def _start_recorder(tmp_path, n_frames, rate):
    frames = sparse_frames(0, n_frames)
    src = tmp_path / "in.bin"
    frames.astype("<u2").tofile(src)
    out = tmp_path / "out.h5"
    cmd = [sys.executable, "-m", "hexspec.cli", "record", f"file://{src}?shape=16,16&rate={rate}", "-o", str(out),
           "--raw", "--events", "--threshold", "100", "-v"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    return proc, frames, out


def _wait_for_flushes(proc, count, limit_s=60):
    deadline = time.monotonic() + limit_s
    seen = []
    while len(seen) < count and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("flushed"):
            seen.append(int(line.split()[1]))
    return seen


def _kill_9_after_flushes(tmp_path, count):
    proc, frames, out = _start_recorder(tmp_path, 40_000, 1000)
    flushed = _wait_for_flushes(proc, count)
    assert len(flushed) == count and flushed[-1] > 0
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # lines written before the kill but not read yet also count
    flushed += [int(line.split()[1]) for line in proc.stderr.read().splitlines() if line.startswith("flushed")]
    proc.stderr.close()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return frames, out, flushed[-1]


@pytest.mark.slow
def test_kill_9_leaves_a_readable_file_with_every_frame_up_to_the_last_flush(tmp_path):
    frames, out, last_flush = _kill_9_after_flushes(tmp_path, 3)
    # a file written in SWMR mode and never closed opens with swmr=True (HDF5's rule for it)
    with h5py.File(out, "r", swmr=True) as f:
        stored = f["entry/frames/data"][()]
        numbers = f["entry/frames/frame_number"][()]
        event_frames = f["entry/events/frame"][()]
    n = min(len(stored), len(numbers))
    assert n >= last_flush
    np.testing.assert_array_equal(numbers[:n], np.arange(n))
    np.testing.assert_array_equal(stored[:n], frames[:n])
    # one pixel above threshold per frame: one event per frame, in order
    np.testing.assert_array_equal(event_frames[:last_flush], np.arange(last_flush))


@pytest.mark.slow
def test_hexspec_readers_open_a_file_left_by_kill_9(tmp_path):
    frames, out, last_flush = _kill_9_after_flushes(tmp_path, 2)
    got = hdf5.read_frames(out)
    assert len(got) >= last_flush
    np.testing.assert_array_equal(got.frames, frames[:len(got)])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_recording_and_closes_the_file_cleanly(tmp_path, sig):
    proc, frames, out = _start_recorder(tmp_path, 40_000, 1000)
    assert len(_wait_for_flushes(proc, 1)) == 1
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert f"stopped by signal {signal.Signals(sig).name}" in stdout
    acq = hdf5.read_acquisition(out)
    got = hdf5.read_frames(out)
    assert acq["end_time"] and len(got) == acq["frames_received"] > 0
    np.testing.assert_array_equal(got.frames, frames[:len(got)])
    assert len(hdf5.read_events(out)) == len(got)     # every frame has exactly one pixel above threshold
