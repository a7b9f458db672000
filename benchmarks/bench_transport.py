"""Transport and recording throughput (issue targets: ZMQ >= 50,000 frames/s; recorder >= 9,119 frames/s).

Two measurements, each against a baseline measured in the same run on the same data:

1. ZMQ PUSH/PULL over loopback TCP: a publisher *process* sends simulated 80x80 frames
   with ZmqPublisher (k frames per message); this process receives them with
   ZmqSource (every header field validated, frames decoded into FrameBatch) and checks
   that none is lost. Baseline: bare pyzmq ``recv_multipart`` of the same messages with
   no decoding.
2. Recorder: simulated frames are fed at the HEXITEC frame rate (9118.87 Hz) for
   ``--seconds`` to :class:`hexspec.drivers.recorder.Recorder` storing raw frames and
   events in compressed HDF5. Printed: frames/s, MB/s in and on disk, lag behind the
   schedule (how long after a frame was due its batch had been recorded), peak RSS.
   Baseline: the same frames written through HDF5's own filters in one thread
   (HexspecWriter.write_frames), unpaced.

Run:  python benchmarks/bench_transport.py [--seconds 60] [--frames 500000] [--only zmq|record]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time

import numpy as np

RATE_HZ = 9118.87


def simulated_frames(n, seed=1):
    """``n`` realistic 80x80 frames (Am-241 at 3e5 photons/s, noise, hot pixels)."""
    import hexspec as hx
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), seed=seed)
    batch, _ = sim.frames(n)
    return batch.frames


def _publisher(endpoint_queue, n_frames, frames_per_message, seed):
    import hexspec as hx
    from hexspec.drivers import ZmqPublisher
    frames = simulated_frames(2048, seed)
    pub = ZmqPublisher("tcp://127.0.0.1:0", "PUSH", frames_per_message=frames_per_message)
    endpoint_queue.put(pub.endpoint)
    endpoint_queue.get()     # receiver connected
    sent = 0
    while sent < n_frames:
        k = min(len(frames), n_frames - sent)
        pub.send(hx.FrameBatch(frames[:k], np.arange(sent, sent + k)))
        sent += k
    pub.close()


def _start_publisher(n_frames, frames_per_message):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_publisher, args=(q, n_frames, frames_per_message, 1), daemon=True)
    proc.start()
    return proc, q, q.get(timeout=60)


def bench_zmq(n_frames, frames_per_message):
    import zmq
    from hexspec.drivers import ZmqSource

    # baseline: bare pyzmq, no validation or decoding
    proc, q, endpoint = _start_publisher(n_frames, frames_per_message)
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(endpoint)
    q.put("go")
    messages = -(-n_frames // frames_per_message)
    sock.recv_multipart(copy=False)
    t0 = time.perf_counter()
    for _ in range(messages - 1):
        sock.recv_multipart(copy=False)
    bare_s = time.perf_counter() - t0
    sock.close()
    proc.join()
    bare_rate = (n_frames - frames_per_message) / bare_s

    proc, q, endpoint = _start_publisher(n_frames, frames_per_message)
    src = ZmqSource(endpoint, "PULL", timeout_s=5.0, batch_frames=1000)
    q.put("go")
    it = iter(src)
    first = next(it)
    t0 = time.perf_counter()
    received = len(first)
    ok = bool(np.all(first.frame_numbers == np.arange(len(first))))
    expected_next = len(first)
    for batch in it:
        ok &= int(batch.frame_numbers[0]) == expected_next
        expected_next = int(batch.frame_numbers[-1]) + 1
        received += len(batch)
        if received >= n_frames:
            break
    dt = time.perf_counter() - t0
    src.close()
    proc.join()
    rate = (received - len(first)) / dt
    lost = n_frames - received
    print(f"ZMQ PUSH/PULL loopback, {frames_per_message} frames/message, {n_frames} frames of 80x80:")
    print(f"  hexspec ZmqSource (validated + decoded): {rate:12,.0f} frames/s  ({rate * 12800 / 1e6:,.0f} MB/s)")
    print(f"  baseline bare recv_multipart:            {bare_rate:12,.0f} frames/s")
    print(f"  ratio decoded/bare {rate / bare_rate:.2f}; ratio to the 50,000 frames/s target {rate / 50000:.2f}; "
          f"lost {lost}, dropped {src.stats.dropped}, corrupt {src.stats.corrupt}, in order {ok}")
    return rate


class PacedSource:
    """Cycles pre-simulated frames at ``rate_hz`` with consecutive frame numbers; records lag."""

    def __init__(self, frames, rate_hz, seconds):
        import hexspec as hx
        from hexspec.drivers import SourceStats
        self.hx = hx
        self.frames = frames
        self.rate_hz = rate_hz
        self.total = int(rate_hz * seconds) if rate_hz else None
        self.batch = max(1, int((rate_hz or 20 * 456) / 20))
        self.stats = SourceStats()
        self.name = "paced simulation"
        self.due = []

    def __iter__(self):
        t0 = time.monotonic()
        done = 0
        n = len(self.frames)
        while self.total is None or done < self.total:
            k = self.batch if self.total is None else min(self.batch, self.total - done)
            start = done % n
            k = min(k, n - start)
            due = t0 + (done + k) / self.rate_hz if self.rate_hz else time.monotonic()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            batch = self.hx.FrameBatch(self.frames[start:start + k], np.arange(done, done + k))
            done += k
            self.stats.frames = done
            self.due.append(due)
            yield batch


def bench_record(seconds, frames):
    import hexspec as hx
    from hexspec.drivers.recorder import Recorder
    from hexspec.io.hdf5 import HexspecWriter

    cfg = hx.ProcessingConfig(threshold=100.0)
    tmp = tempfile.mkdtemp(prefix="hexspec-bench-")

    # baseline: HDF5's own shuffle+deflate filters, one thread, unpaced, same frames
    n_base = min(len(frames), 4096)
    path = os.path.join(tmp, "baseline.h5")
    with HexspecWriter(path, (80, 80), frames=True, events=False, spectra=False) as w:
        t0 = time.perf_counter()
        for s in range(0, n_base, 512):
            w.write_frames(hx.FrameBatch(frames[s:s + 512], np.arange(s, min(s + 512, n_base))))
        w.flush()
        base_rate = n_base / (time.perf_counter() - t0)

    # unpaced: how fast can the recorder go
    path = os.path.join(tmp, "unpaced.h5")
    src = PacedSource(frames, None, 0)
    src.total = min(len(frames) * 4, 40000)
    with Recorder(path, (80, 80), cfg, "bench", raw=True, events=True, spectra=False) as rec:
        rec.add(hx.FrameBatch(frames[:64], np.arange(-64, 0)))       # compile the kernels first
        t0 = time.perf_counter()
        for batch in src:
            rec.add(batch)
        rec.flush()
        max_rate = src.total / (time.perf_counter() - t0)

    # paced at the HEXITEC frame rate
    path = os.path.join(tmp, "paced.h5")
    src = PacedSource(frames, RATE_HZ, seconds)
    lags = []
    with Recorder(path, (80, 80), cfg, "bench", raw=True, events=True, spectra=True) as rec:
        rec.add(hx.FrameBatch(frames[:64], np.arange(-64, 0)))
        t0 = time.perf_counter()
        for batch in src:
            rec.add(batch)
            lags.append(time.monotonic() - src.due[-1])
        rec.flush()
        dt = time.perf_counter() - t0
        n_events = rec.events_received
    size_mb = os.path.getsize(path) / 1e6
    rate = src.total / dt
    lags = np.array(lags)
    last_s = lags[-max(1, len(lags) // 10):]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Recorder, raw frames + events (+ spectra) to gzip-1/shuffle HDF5 (SWMR), 80x80 frames:")
    print(f"  paced at {RATE_HZ} Hz for {seconds:g} s: {src.total} frames in {dt:.1f} s = {rate:,.0f} frames/s, "
          f"{src.total * 12800 / dt / 1e6:,.0f} MB/s in, {size_mb / dt:,.1f} MB/s to disk ({size_mb:,.0f} MB), "
          f"{n_events:,} events")
    print(f"  lag behind schedule: median {np.median(lags) * 1e3:.0f} ms, max {lags.max() * 1e3:.0f} ms, "
          f"last 10% median {np.median(last_s) * 1e3:.0f} ms (a recorder falling behind shows a growing lag)")
    print(f"  unpaced recorder: {max_rate:,.0f} frames/s; baseline HDF5 filters in one thread: {base_rate:,.0f} frames/s; "
          f"ratio {max_rate / base_rate:.2f}; ratio to the 9,119 frames/s target {max_rate / 9119:.2f}")
    print(f"  peak RSS {rss_mb:,.0f} MB")
    for name in ("baseline.h5", "unpaced.h5", "paced.h5"):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="recorder run length (default 60)")
    ap.add_argument("--frames", type=int, default=500_000, help="frames sent over ZMQ (default 500,000)")
    ap.add_argument("--per-message", type=int, default=100, help="frames per ZMQ message (default 100)")
    ap.add_argument("--only", choices=("zmq", "record"))
    args = ap.parse_args()
    if args.only != "record":
        bench_zmq(args.frames, args.per_message)
        bench_zmq(min(args.frames, 100_000), 1)
    if args.only != "zmq":
        bench_record(args.seconds, simulated_frames(4096))


if __name__ == "__main__":
    main()
