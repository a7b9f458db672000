"""hexspec.parallel on a real Dask LocalCluster: the serial result bit for bit, chunk
boundaries exact, resume after a cancelled run, bad files named while the others finish."""

import json

import h5py
import numpy as np
import pytest

import hexspec as hx
from hexspec import parallel
from hexspec.cli import main
from hexspec.io import hdf5

distributed = pytest.importorskip("distributed")

SHAPE = (16, 16)
CFG = hx.ProcessingConfig(threshold=200.0, bins=hx.EnergyBins(0, 4000, 20))
BATCH, CHUNK = 50, 200
GAPS = 5 + 3 + 2          # frame numbers skipped in the files below (see run_files)


def sim_frames(seed, n):
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), detector=hx.DetectorSpec(*SHAPE, 0.25, 9118.87),
                                  photon_rate_hz=2e6, seed=seed)
    return sim.frames(n)[0].frames


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    """Three files of one run, 1350 frames: a hexspec file (bslz4) with gaps of 5 frames at a
    chunk boundary (index 200) and 3 inside a chunk; a gzip one numbered on from it, so the
    next-frame state must cross the file boundary, with a gap of 2 at its index 400; a .bin
    file (numbered from 0 again)."""
    d = tmp_path_factory.mktemp("run")
    a, b, c = sim_frames(1, 600), sim_frames(2, 450), sim_frames(3, 300)
    na = np.arange(600, dtype=np.int64)
    na[200:] += 5
    na[250:] += 3
    nb = na[-1] + 1 + np.arange(450, dtype=np.int64)
    nb[400:] += 2
    paths = [d / "a.h5", d / "b.h5", d / "c.bin"]
    for path, frames, numbers, comp in ((paths[0], a, na, "bslz4"), (paths[1], b, nb, "gzip")):
        with hdf5.HexspecWriter(path, SHAPE, frames=True, events=False, spectra=False, frame_compression=comp) as w:
            w.write_frames(hx.FrameBatch(frames, numbers))
    c.astype("<u2").tofile(paths[2])
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def client():
    # threads here keep the module fast; the CLI test below runs worker processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def serial(run_files):
    return parallel.serial(run_files, CFG, batch_frames=BATCH, shape=SHAPE)


def assert_same(res, ref):
    np.testing.assert_array_equal(res.cube.counts, ref.cube.counts)
    assert res.cube.counts.dtype == ref.cube.counts.dtype
    np.testing.assert_array_equal(res.cube.edges, ref.cube.edges)
    assert (res.cube.underflow, res.cube.overflow, res.cube.unit) == (ref.cube.underflow, ref.cube.overflow,
                                                                      ref.cube.unit)
    a, b = res.stats.to_dict(), ref.stats.to_dict()
    a.pop("elapsed_s"), b.pop("elapsed_s")
    assert a == b
    assert res.extractor_stats == ref.extractor_stats


def test_serial_reference_counts_what_the_files_hold(serial):
    assert serial.stats.frames == 1350
    assert serial.stats.frames_dropped == GAPS
    assert serial.stats.first_frame == 0 and serial.stats.last_frame == 299
    assert serial.cube.counts.sum() + serial.cube.underflow + serial.cube.overflow == serial.stats.events


def test_parallel_equals_serial_bit_for_bit(run_files, serial, client):
    res = parallel.process_files(run_files, CFG, client=client, chunk_frames=CHUNK, batch_frames=BATCH)
    assert res.chunks == 3 + 3 + 2 and res.failed == {}
    assert_same(res, serial)


def test_an_existing_cluster_by_address_gives_the_same_result(run_files, serial, client):
    calls = []
    res = parallel.process_files(run_files, CFG, scheduler=client.scheduler.address, chunk_frames=CHUNK,
                                 batch_frames=BATCH, progress=lambda *a: calls.append(a))
    assert_same(res, serial)
    done, total, rate, link = calls[-1]
    assert done == total == 1350 and rate > 0
    assert link is None or link.startswith("http")


def test_chunks_that_ignored_the_frame_before_them_would_differ(run_files, serial):
    # what the boundary reads buy: chunks processed from a cold state disagree with serial
    chunks, shape, _ = parallel.plan_chunks(run_files, CHUNK, BATCH, SHAPE)
    cold = [parallel.process_chunk(parallel.Chunk(c.index, c.path, c.start, c.stop, None), CFG, shape, BATCH)
            for c in chunks]
    total = parallel._sum(*cold)
    assert total.extractor["next_frame_removed"] < serial.extractor_stats["next_frame_removed"]
    assert total.frames_dropped < GAPS     # the gap of 5 sits at a chunk boundary
    warm = parallel._sum(*(parallel.process_chunk(c, CFG, shape, BATCH) for c in chunks))
    assert warm.extractor["next_frame_removed"] == serial.extractor_stats["next_frame_removed"]
    assert warm.frames_dropped == GAPS


def test_plan_reads_no_frames(run_files, monkeypatch):
    from hexspec.io import framefile
    monkeypatch.setattr(framefile, "iter_frame_file", lambda *a, **k: pytest.fail("planning read frames"))
    monkeypatch.setattr(framefile, "iter_frame_range", lambda *a, **k: pytest.fail("planning read frames"))
    chunks, shape, failed = parallel.plan_chunks(run_files, 175, BATCH, SHAPE)
    assert shape == SHAPE and failed == {}
    assert [(c.start, c.stop) for c in chunks] == [(0, 200), (200, 400), (400, 600), (0, 200), (200, 400),
                                                   (400, 450), (0, 200), (200, 300)]
    assert chunks[3].prev == (run_files[0], 599) and chunks[0].prev is None


def test_cancelled_run_resumes_to_the_same_result(run_files, serial, client, tmp_path):
    manifest = tmp_path / "out.h5.manifest.json"
    seen = []

    def cancel_after_two_groups(done, total, rate, link):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        parallel.process_files(run_files, CFG, client=client, chunk_frames=CHUNK, batch_frames=BATCH,
                               manifest=manifest, group_chunks=2, progress=cancel_after_two_groups)
    stored = json.loads(manifest.read_text())
    assert 0 < len(stored["done"]) < 8
    with h5py.File(str(manifest) + ".partial.h5", "r") as f:
        assert json.loads(f.attrs["result"])["chunks"] == stored["done"]
    # without resume=True an unfinished run is not overwritten
    with pytest.raises(hx.errors.ConfigError, match="--resume"):
        parallel.process_files(run_files, CFG, client=client, chunk_frames=CHUNK, batch_frames=BATCH, manifest=manifest)
    # another config does not continue it
    with pytest.raises(hx.errors.ConfigError, match="differs in config"):
        parallel.process_files(run_files, CFG.replace(threshold=300.0), client=client, chunk_frames=CHUNK,
                               batch_frames=BATCH, manifest=manifest, resume=True)
    res = parallel.process_files(run_files, CFG, client=client, chunk_frames=CHUNK, batch_frames=BATCH,
                                 manifest=manifest, resume=True)
    assert res.resumed == len(stored["done"])
    assert_same(res, serial)
    assert not manifest.exists() and not (tmp_path / "out.h5.manifest.json.partial.h5").exists()


def test_missing_and_corrupt_files_are_named_and_the_others_finish(run_files, client, tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 4000)          # HDF5 magic, then nothing usable
    damaged = tmp_path / "damaged.h5"
    frames = sim_frames(4, 200)
    with hdf5.HexspecWriter(damaged, SHAPE, frames=True, events=False, spectra=False, frame_chunk=50,
                            frame_compression="gzip") as w:
        w.write_frames(hx.FrameBatch(frames))
    with h5py.File(damaged, "r") as f:
        info = f["entry/frames/data"].id.get_chunk_info(3)      # frames 150-199
    with open(damaged, "r+b") as fh:
        fh.seek(info.byte_offset + 4)
        fh.write(b"\xff" * 64)
    paths = [run_files[0], str(tmp_path / "missing.h5"), str(junk), str(damaged), run_files[1]]
    res = parallel.process_files(paths, CFG, client=client, chunk_frames=CHUNK, batch_frames=BATCH)
    assert set(res.failed) == {paths[1], paths[2], paths[3]}
    assert "no such file" in res.failed[paths[1]]
    assert "junk.h5" in res.failed[paths[2]]
    assert "frames 150-199" in res.failed[paths[3]]
    # the good files are all there; the damaged file's one chunk (200 frames) is left out whole
    assert res.stats.frames == 600 + 450
    assert res.chunks == 3 + 1 + 3


@pytest.mark.slow
def test_cli_workers_on_worker_processes_equal_the_serial_command(run_files, tmp_path):
    par, ser = tmp_path / "par.h5", tmp_path / "ser.h5"
    common = ["--threshold", "200", "--bins", "0", "4000", "20", "--shape", "16", "16", "--batch-size", str(BATCH),
              "--quiet"]
    assert main(["process", *run_files, "-o", str(par), "--workers", "2", "--chunk-frames", str(CHUNK), *common]) == 0
    assert main(["process", *run_files, "-o", str(ser), "--spectra", *common]) == 0
    a, b = hdf5.read_cube(par), hdf5.read_cube(ser)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert (a.underflow, a.overflow) == (b.underflow, b.overflow)
    qa, qb = hdf5.read_acquisition(par), hdf5.read_acquisition(ser)
    for k in ("frames_received", "frames_dropped", "first_frame", "last_frame"):
        assert qa[k] == qb[k]
    assert qa["frames_dropped"] == GAPS
    assert not (tmp_path / "par.h5.manifest.json").exists()


def _die_at_second_chunk():
    """Run in one worker process: its second chunk kills the process (SIGKILL, as the
    kernel's OOM killer or a node failure would), whatever it holds then is lost."""
    import os
    import signal

    import hexspec.parallel as par
    orig = par.process_chunk
    calls = []

    def chunk_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(*args, **kwargs)
    par.process_chunk = chunk_then_die     # the client's tasks name the function by module and name
    return os.getpid()


@pytest.mark.slow
def test_worker_killed_mid_run_costs_only_its_chunks(run_files, serial):
    import os
    import sys

    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import this test module
    client, cluster = parallel._client(2, None, processes=True)
    try:
        client.wait_for_workers(2)
        victim = sorted(client.scheduler_info()["workers"])[0]
        pid = client.run(_die_at_second_chunk, workers=[victim])[victim]
        res = parallel.process_files(run_files, CFG, client=client, chunk_frames=100, batch_frames=BATCH,
                                     shape=SHAPE, group_chunks=2)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)                   # the worker process really died mid-run
        assert res.chunks == 14 and not res.failed
        assert_same(res, serial)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        client.close()
        cluster.close()


def test_events_of_every_chunk_merge_into_the_serial_event_list(run_files, client, serial, tmp_path):
    """Each task stores its chunk's events; merged in run order they are the serial run's
    events, element for element (not merely the same set)."""
    events_dir = tmp_path / "ev"
    res = parallel.process_files(run_files, CFG, client=client, chunk_frames=CHUNK, batch_frames=BATCH, shape=SHAPE,
                                 events_dir=events_dir)
    assert_same(res, serial)
    merged = hx.EventList.concatenate(parallel.load_chunk_events(events_dir, i) for i in res.done_chunks)
    from hexspec import pipeline
    chain = pipeline.Chain(CFG, SHAPE)      # the serial loop, one batch after the other
    expect = hx.EventList.concatenate(chain.feed(b) for b in parallel.iter_files(run_files, BATCH, SHAPE,
                                                                                read_ahead=False))
    assert len(merged) == serial.stats.events == len(expect)
    assert merged == expect


@pytest.mark.slow
def test_cli_events_with_workers_equal_the_serial_command(run_files, tmp_path):
    par, ser = tmp_path / "par.h5", tmp_path / "ser.h5"
    common = ["--threshold", "200", "--bins", "0", "4000", "20", "--shape", "16", "16", "--batch-size", str(BATCH),
              "--quiet", "--events"]
    assert main(["process", *run_files, "-o", str(par), "--workers", "2", "--chunk-frames", str(CHUNK), *common]) == 0
    assert main(["process", *run_files, "-o", str(ser), *common]) == 0
    with h5py.File(par, "r") as a, h5py.File(ser, "r") as b:
        for name in ("frame", "row", "col", "energy", "size"):
            np.testing.assert_array_equal(a[f"entry/events/{name}"][()], b[f"entry/events/{name}"][()])
        assert a["entry/events/frame"].shape[0] > 1000
    np.testing.assert_array_equal(hdf5.read_cube(par).counts, hdf5.read_cube(ser).counts)
    assert not (tmp_path / "par.h5.events.d").exists()


def test_chunk_results_cross_processes_unchanged():
    """What Dask pickles between workers: a mostly empty cube goes as its non-zero bins,
    a full one as it is; both come back identical, dtype and shape included."""
    import pickle
    rng = np.random.default_rng(5)
    sparse = np.zeros((6, 5, 40), np.uint32)
    sparse.reshape(-1)[rng.choice(1200, 30, replace=False)] = rng.integers(1, 2 ** 32 - 1, 30, dtype=np.uint32)
    dense = rng.integers(1, 9, (6, 5, 40)).astype(np.uint32)
    for counts in (sparse, dense, np.zeros((6, 5, 40), np.uint32), None):
        r = parallel.ChunkResult(chunks=[3, 4], counts=counts, underflow=2, frames=7, first=(3, 10), last=(4, 99),
                                 extractor={"hits": 5})
        back = pickle.loads(pickle.dumps(r))
        assert back.chunks == [3, 4] and back.underflow == 2 and back.first == (3, 10) and back.extractor == {"hits": 5}
        if counts is None:
            assert back.counts is None
        else:
            assert back.counts.dtype == np.uint32 and back.counts.shape == (6, 5, 40)
            np.testing.assert_array_equal(back.counts, counts)
    assert len(pickle.dumps(parallel.ChunkResult(chunks=[], counts=sparse))) < sparse.nbytes / 5
