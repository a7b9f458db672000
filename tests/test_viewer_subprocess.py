"""The viewer's child-process worker: a real source opened by URL in a child, cube in shared memory.

Expected cubes are built with plain numpy from the frames written to the file (no
charge-sharing handling, no next-frame correction: each value above the threshold is
one event of energy ADU).
"""

import numpy as np
import pytest

import hexspec as hx

pytest.importorskip("hexspec.drivers.files")
from hexspec.viewer.subprocess_worker import SubprocessProcessor

SHAPE = (12, 17)
BINS = hx.EnergyBins(0, 4096, 16)


def write_run(path, n_frames=300, seed=2):
    rng = np.random.default_rng(seed)
    hits = rng.random((n_frames, *SHAPE)) < 0.05
    frames = np.where(hits, rng.integers(100, 4000, size=hits.shape), 0).astype(np.uint16)
    frames.astype("<u2").tofile(path)
    return frames


def numpy_cube(frames, threshold=50):
    cube = np.zeros((*SHAPE, BINS.n), np.int64)
    f = frames.astype(np.float64)
    for r in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            v = f[:, r, c]
            cube[r, c] = np.histogram(v[v > threshold], bins=BINS.edges)[0]
    return cube


def config(**kw):
    base = dict(threshold=50, next_frame=False, charge_sharing="none", bins=BINS)
    base.update(kw)
    return hx.ProcessingConfig(**base)


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "run.bin"
    return path, write_run(path)


def finished(url, cfg):
    proc = SubprocessProcessor(url, cfg).start()
    assert proc.wait_until(lambda p: p.finished, timeout=60)
    assert proc.ready
    return proc


def test_child_process_cube_equals_numpy_histogram_of_the_file(run_file):
    path, frames = run_file
    proc = finished(f"file://{path}?shape={SHAPE[0]},{SHAPE[1]}", config())
    try:
        np.testing.assert_array_equal(proc.cube().counts, numpy_cube(frames))
        np.testing.assert_array_equal(proc.image(1000, 2000),
                                      numpy_cube(frames)[:, :, (BINS.centers >= 1000) & (BINS.centers < 2000)].sum(axis=2))
    finally:
        proc.stop()


def test_child_process_counters_match_the_file(run_file):
    path, frames = run_file
    proc = finished(f"file://{path}?shape={SHAPE[0]},{SHAPE[1]}", config())
    try:
        c = proc.counters()
        n_hits = int(np.count_nonzero(frames > 50))
        assert (c["frames"], c["events"], c["hits"], c["dropped"], c["corrupt"]) == (300, n_hits, n_hits, 0, 0)
        assert c["error"] is None
    finally:
        proc.stop()


def test_reset_from_the_display_zeroes_the_shared_cube(run_file):
    path, _ = run_file
    proc = finished(f"file://{path}?shape={SHAPE[0]},{SHAPE[1]}", config())
    try:
        proc.reset()
        assert proc.cube().counts.sum() == 0 and proc.counters()["frames"] == 0
    finally:
        proc.stop()


def test_a_source_that_cannot_be_opened_is_reported(tmp_path):
    proc = SubprocessProcessor(f"file://{tmp_path}/missing.bin", config()).start()
    try:
        assert proc.wait_until(lambda p: p.finished, timeout=60)
        proc.counters()
        assert proc.wait_until(lambda p: p.counters()["error"] is not None, timeout=10)
        assert "missing.bin" in proc.counters()["error"]
    finally:
        proc.stop()


def test_stop_ends_a_child_waiting_on_a_silent_socket(tmp_path):
    # A PULL socket with nobody sending: the child waits inside the source until stopped.
    # (A private ipc path, so no other test's sender can ever reach it.)
    proc = SubprocessProcessor(f"ipc://{tmp_path}/silent?socket=pull", config(), open_options={"timeout_s": None}).start()
    assert proc.wait_until(lambda p: p.running, timeout=30)
    proc.stop(timeout=10)
    assert not proc.running


SCRIPT = """
import sys, time
import hexspec as hx
from hexspec.viewer.subprocess_worker import SubprocessProcessor
if __name__ == "__main__":
    p = SubprocessProcessor(sys.argv[1], hx.ProcessingConfig(), open_options={"timeout_s": None})
    p.start()
    print(p._process.pid, flush=True)
    time.sleep(120)
"""


def test_the_child_ends_when_the_viewer_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    script = tmp_path / "viewer.py"
    script.write_text(SCRIPT)
    url = f"ipc://{tmp_path}/silent?socket=pull"
    viewer = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, text=True)
    try:
        child = int(viewer.stdout.readline())
        os.kill(viewer.pid, signal.SIGKILL)
        viewer.wait(10)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            # An exited child of a killed parent is reaped by init; until then it may linger as a zombie.
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"child {child} still running 30 s after the viewer was killed")
    finally:
        if viewer.poll() is None:
            viewer.kill()


REAL_FRAMES = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hexitec_2x2_raw_30frames.h5"


def test_real_2x2_module_frames_fill_a_160_by_160_cube_like_numpy_says():
    if not REAL_FRAMES.exists():
        pytest.skip(f"real data not found at {REAL_FRAMES}")
    h5py = pytest.importorskip("h5py")
    with h5py.File(REAL_FRAMES, "r") as f:
        raw = f["raw_frames"][...]
    bins = hx.EnergyBins(0, 16384, 16)
    cfg = hx.ProcessingConfig(threshold=200, next_frame=False, charge_sharing="none", bins=bins)
    proc = finished(f"file://{REAL_FRAMES}", cfg)
    try:
        assert proc.shape == (160, 160)
        values = raw.astype(np.float64)
        hit = (values > 200) & (values < 16384)      # above the last bin edge: overflow, not in the cube
        rows, cols = np.nonzero(hit)[1:]
        flat = (rows * 160 + cols) * bins.n + np.floor(values[hit] / 16).astype(np.int64)
        expected = np.bincount(flat, minlength=160 * 160 * bins.n).reshape(160, 160, bins.n)
        np.testing.assert_array_equal(proc.cube().counts, expected)
        assert proc.counters()["frames"] == raw.shape[0]
    finally:
        proc.stop()
