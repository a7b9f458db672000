"""Live viewer under a full-rate HEXITEC stream: refresh rate, ingest rate, lag, dropped frames.

A publisher process sends simulated frames (HEXITEC 80 x 80, Compton source, about 1 %
pixel occupancy) over ZMQ PUSH at 9,119 frames/s, one frame per message as odin-data
does. This process runs the real viewer window offscreen on a PULL socket for a fixed
time and samples, once a second, how many frames were sent and how many the viewer
has processed.

Printed:
- publish rate (achieved by the sender) and ingest rate (processed by the viewer),
  and their ratio: 1.00 means the viewer keeps up;
- lag = frames sent - frames processed, in frames and in seconds of detector time,
  at the start and at the end of the run: a lag that does not grow means no backlog;
- dropped frames (frame-number gaps seen by the PULL source) and corrupt messages;
- display refresh rate (timer ticks per second while flooded; target >= 10 Hz);
- baselines on the same frames: offline extraction + histogram throughput with no
  display and no socket (headroom = offline / 9,119 frames/s), and the "transport"
  mode, which only receives and counts frames: the viewer's ingest rate over the
  transport's says what the viewer costs beyond receiving.

With PUSH/PULL the sender blocks when the receiver's queues are full (lossless), so a
receiver slower than the target shows as a publish rate below the target and a lag
pinned near the two high-water marks (2 x 1000 frames), not as dropped frames.

Modes: transport, process (what `hexspec view URL` uses: source and processing in a
child process), thread (source and processing in a thread of the viewer's process).

Usage:  python benchmarks/bench_viewer.py [--seconds 20] [--rate 9119] [--runs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

import hexspec as hx

SHAPE = (80, 80)
POOL_FRAMES = 4000


def make_pool(seed=0):
    """Simulated Compton frames, photon rate chosen for about 1 % of pixels over threshold per frame."""
    sim = hx.sim.HexitecSimulator(hx.sim.ComptonSource(), detector=hx.HEXITEC, photon_rate_hz=4.6e5, seed=seed)
    batch, truth = sim.frames(POOL_FRAMES)
    return batch.frames, truth.gradients, truth.intercepts


def publisher(frames, rate_hz, sent, stop, ready):
    """Send frames cyclically with consecutive frame numbers, paced to ``rate_hz``.

    Binds a free loopback port and puts its endpoint on the ``ready`` queue.
    """
    from hexspec.drivers.zmq import ZmqPublisher
    pub = ZmqPublisher("tcp://127.0.0.1:*", socket_type="PUSH", frames_per_message=1)
    ready.put(pub.endpoint)
    n_pool = len(frames)
    chunk = max(1, int(rate_hz / 200))      # send in 5 ms chunks, sleeping between them
    t0 = time.perf_counter()
    n = 0
    while not stop.is_set():
        due = t0 + n / rate_hz
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        idx = (np.arange(n, n + chunk)) % n_pool
        pub.send(hx.FrameBatch(frames[idx], np.arange(n, n + chunk)))
        n += chunk
        sent.value = n
    pub.close()


def baseline_fps(frames, config):
    """Offline frames/s of extraction + histogram on the same frames (no socket, no display)."""
    ex = hx.EventExtractor(config, SHAPE)
    acc = hx.SpectrumAccumulator(config, SHAPE)
    batch = hx.FrameBatch(frames)
    ex(batch[:100])                          # compile / warm the kernels
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for part in batch.split(1000):
            acc.add(ex(part))
        times.append(time.perf_counter() - t)
    return len(frames) / statistics.median(times)


def run_viewer(endpoint, config, sent, seconds, mode):
    from pyqtgraph.Qt import QtCore, QtWidgets

    from hexspec.viewer import LiveProcessor
    from hexspec.viewer.subprocess_worker import SubprocessProcessor
    from hexspec.viewer.window import ViewerWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    url = f"{endpoint}?socket=pull"
    if mode == "transport":
        return drain(url, sent, seconds)
    if mode == "process":
        source = None
        proc = SubprocessProcessor(url, config, open_options={"timeout_s": None})
    else:
        source = hx.drivers.open_source(url, timeout_s=None)
        proc = LiveProcessor(source, config)
    win = ViewerWindow(proc, source_label=endpoint, refresh_hz=10.0)
    win.show()
    samples = []      # (t, frames sent, frames processed, refresh ticks)
    t0 = time.perf_counter()

    def sample():
        c = proc.counters()
        samples.append((time.perf_counter() - t0, sent.value, c["frames"], win.refresh_count))
        if samples[-1][0] >= seconds:
            app.quit()

    timer = QtCore.QTimer()
    timer.timeout.connect(sample)
    timer.start(1000)
    sample()
    app.exec()
    timer.stop()
    counters = proc.counters()
    win.close()
    if source is not None:
        source.close()
    return samples, counters


def drain(url, sent, seconds):
    """Baseline: receive and count frames, nothing else (what the transport alone sustains)."""
    source = hx.drivers.open_source(url, timeout_s=None)
    samples, frames = [], 0
    t0 = time.perf_counter()
    next_sample = 0.0
    for batch in source:
        frames += len(batch)
        now = time.perf_counter() - t0
        if now >= next_sample:
            samples.append((now, sent.value, frames, 0))
            next_sample += 1.0
            if now >= seconds:
                break
    source.close()
    return samples, {"dropped": source.stats.dropped, "corrupt": source.stats.corrupt}


def one_run(args, frames, config, run_index, mode):
    ctx = mp.get_context("spawn")
    sent, stop, ready = ctx.Value("q", 0), ctx.Event(), ctx.Queue()
    pub = ctx.Process(target=publisher, args=(frames, args.rate, sent, stop, ready), daemon=True)
    pub.start()
    endpoint = ready.get(timeout=60)
    try:
        samples, counters = run_viewer(endpoint, config, sent, args.seconds, mode)
    finally:
        stop.set()
        pub.join(10)
        if pub.is_alive():
            pub.terminate()
    return samples, counters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=9119.0, help="frames/s to publish (HEXITEC: 9118.87)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--modes", default="transport,process,thread",
                    help="comma-separated: transport (baseline: receive only, no viewer), process (viewer with "
                         "processing in a child process, what `hexspec view URL` uses), thread (processing in a thread)")
    args = ap.parse_args()

    print(f"simulating {POOL_FRAMES} frames (Compton source)...", flush=True)
    frames, gradients, intercepts = make_pool()
    config = hx.ProcessingConfig(threshold=80, gradients=gradients, intercepts=intercepts, charge_sharing="csd")
    ex = hx.extract_events(frames[:1000], config)
    occupancy = np.count_nonzero(frames > 80) / frames.size
    print(f"pool: {len(frames)} frames, occupancy {100 * occupancy:.2f} % of pixels over threshold, "
          f"{len(ex) / 1000:.1f} events/frame after CSD")
    base = baseline_fps(frames, config)
    print(f"baseline (offline extract + histogram, same frames): {base:,.0f} frames/s "
          f"= {base / args.rate:.1f} x the publish rate")

    results = {}
    for r in range(args.runs):
        for mode in args.modes.split(","):
            samples, counters = one_run(args, frames, config, r, mode)
            results.setdefault(mode, []).append(report(args, samples, counters, mode, r))
    print("\nsummary (median over runs):")
    for mode, rows in results.items():
        med = [statistics.median(x) for x in zip(*rows)]
        print(f"  {mode:7s}: publish {med[0]:,.0f}/s, ingest {med[1]:,.0f}/s, ingest/publish {med[1] / med[0]:.3f}, "
              f"ingest/target {med[1] / args.rate:.3f}, refresh {med[2]:.1f} Hz, end lag {med[3]:,.0f} frames "
              f"({1000 * med[3] / args.rate:.0f} ms), lag growth {med[4]:+,.0f} frames, dropped {med[5]:.0f}")


def report(args, samples, counters, mode, r):
    t = np.array([s[0] for s in samples])
    sent = np.array([s[1] for s in samples], dtype=float)
    done = np.array([s[2] for s in samples], dtype=float)
    ticks = np.array([s[3] for s in samples], dtype=float)
    # Skip the first 2 s (connection, kernel warm-up) when computing rates.
    k0 = min(2, len(t) - 2)
    span = t[-1] - t[k0]
    publish = (sent[-1] - sent[k0]) / span
    ingest = (done[-1] - done[k0]) / span
    refresh = (ticks[-1] - ticks[k0]) / span
    lag = sent - done
    print(f"\nrun {r + 1}, processing in a {mode}: {t[-1]:.0f} s, PUSH/PULL, {args.rate:,.0f} frames/s target")
    print("   t/s       sent   processed  lag/frames  lag/ms")
    for ti, si, di, li in zip(t, sent, done, lag):
        print(f"  {ti:5.1f}  {si:9,.0f}  {di:10,.0f}  {li:10,.0f}  {1000 * li / args.rate:7.1f}")
    print(f"  publish rate {publish:,.0f} frames/s, ingest rate {ingest:,.0f} frames/s, "
          f"ingest/publish {ingest / publish:.3f}")
    print(f"  lag after warm-up {lag[k0]:,.0f} frames ({1000 * lag[k0] / args.rate:.0f} ms), "
          f"at end {lag[-1]:,.0f} frames ({1000 * lag[-1] / args.rate:.0f} ms)")
    print(f"  dropped {counters['dropped']} frames, corrupt {counters['corrupt']} messages")
    print(f"  display refresh {refresh:.1f} Hz (target >= 10)")
    return publish, ingest, refresh, lag[-1], lag[-1] - lag[k0], counters["dropped"]


if __name__ == "__main__":
    main()
