"""A recording killed with kill -9 is made whole by `hexspec recover` (issue 17, item 7)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from hexspec.cli import main
from hexspec.io import hdf5

HEXSPEC = [sys.executable, "-m", "hexspec.cli"]


@pytest.fixture(scope="module")
def killed_recording(tmp_path_factory):
    """A record run with frames, events and spectra, killed with SIGKILL after 3 s."""
    path = tmp_path_factory.mktemp("kill9") / "run.h5"
    proc = subprocess.Popen(HEXSPEC + ["record", "sim://?seed=5&shape=16,16&rate=3000", "-o", str(path),
                                       "--raw", "--events", "--spectra", "--threshold", "100", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (path.exists() and path.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return path


@pytest.mark.slow
def test_a_killed_recording_is_recovered_in_place_keeping_every_frame(killed_recording, tmp_path):
    path = tmp_path / "run.h5"
    shutil.copy(killed_recording, path)
    with pytest.raises(OSError):
        h5py.File(path, "r")                  # the SWMR mark: plain readers refuse the file
    frames = hdf5.read_frames(path)           # what the last flush kept (read as a SWMR reader)
    events = hdf5.read_events(path)
    assert len(frames) > 0 and len(events) > 0
    assert main(["recover", str(path)]) == 0
    with h5py.File(path, "r") as f:           # now a plain HDF5 file
        acq = {k: f["entry/acquisition"][k][()] for k in ("frames_received", "cube_frames", "last_frame")}
        counts = f["entry/spectra/counts"][...]
        edges = f["entry/spectra/energy_edges"][...]
        np.testing.assert_array_equal(f["entry/frames/data"][...], frames.frames)
        np.testing.assert_array_equal(f["entry/frames/frame_number"][...], frames.frame_numbers)
    assert acq["frames_received"] == len(frames) == acq["cube_frames"]
    assert acq["last_frame"] == frames.frame_numbers[-1]
    # the cube is the histogram of the stored events, worked out here with numpy
    expected = np.zeros_like(counts)
    inside = (events.energy >= edges[0]) & (events.energy < edges[-1])
    b = np.searchsorted(edges, events.energy[inside], side="right") - 1
    np.add.at(expected, (events.row[inside], events.col[inside], b), 1)
    np.testing.assert_array_equal(counts, expected)
    if shutil.which("h5ls"):
        assert subprocess.run(["h5ls", "-r", str(path)], capture_output=True).returncode == 0
    assert main(["recover", str(path)]) == 0       # a second time: nothing to do, nothing changes
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/spectra/counts"][...], counts)


def test_recover_refuses_a_file_a_recorder_is_writing(tmp_path, capsys):
    from hexspec.drivers.recorder import Recorder
    import hexspec as hx
    path = tmp_path / "live.h5"
    with Recorder(path, (8, 8), hx.ProcessingConfig(threshold=10.0)) as rec:
        rec.add(hx.FrameBatch(np.zeros((5, 8, 8), np.uint16)))
        assert main(["recover", str(path)]) == 1
    assert "another process is writing" in capsys.readouterr().err
