"""Recorder flush gaps under CPU load: does every flush complete within a second of the previous one?

A child process records a paced stream of simulated 80x80 frames (raw frames, events and
the spectral cube, as `hexspec record --raw --events --spectra` does) while ``--load``
busy processes (``python -c 'while 1: pass'``) compete for the CPU. Every flush's
completion time is taken from the recorder's ``on_flush`` callback; a gap is the time
between two successive completions (the promise: at most ``flush_interval_s`` = 1 s).

The baseline is another version of hexspec measured in the same run, on the same frames,
interleaved with the current one (``--baseline-rev``, a git revision, extracted with
``git archive`` into a temporary directory). Printed per version and load: the median and
range over the repeats of each run's longest gap and median gap, the number of gaps over
1 s, and the ratio current / baseline of the longest gaps.

Run:  python benchmarks/bench_flush.py [--baseline-rev main] [--load 0 6 12] [--repeats 3] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def child(frames_path: str, seconds: float, rate_hz: float, out_dir: str) -> None:
    """Record for ``seconds`` and print the flush completion times as JSON (runs in the child)."""
    import hexspec as hx
    from hexspec.drivers.recorder import record

    pool = np.load(frames_path)
    batch = max(1, int(rate_hz / 20))
    usable = len(pool) // batch * batch
    cfg = hx.ProcessingConfig(threshold=100.0)   # ADU: the default bins make a cube of 80 x 80 x 1024
    # warm-up: numba kernels loaded from the cache before the clock starts
    record(iter([hx.FrameBatch(pool[:batch], np.arange(batch))]), os.path.join(out_dir, "warm.h5"), cfg, raw=True,
           events=True, spectra=True)

    def source():
        t0, k = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            due = t0 + k / rate_hz
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            i = k % usable
            yield hx.FrameBatch(pool[i:i + batch], np.arange(k, k + batch))
            k += batch

    times = []
    result = record(source(), os.path.join(out_dir, "run.h5"), cfg, raw=True, events=True, spectra=True,
                    on_flush=lambda rec: times.append(time.monotonic()))
    print(json.dumps({"flush_times": times, "frames": result.frames}))


def extract(rev: str, into: Path) -> Path:
    """A source tree of ``rev`` importable as hexspec (the drivers, calibration and sim folders linked in)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for sub in ("drivers", "calibration", "sim"):
        link = into / "hexspec" / sub
        if not link.exists():
            link.symlink_to(into / sub)
    return into


def run_once(tree: Path, frames_path: str, load: int, seconds: float, rate_hz: float) -> dict:
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(load)]
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            env = dict(os.environ, PYTHONPATH=str(tree))
            r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                                "import bench_flush; bench_flush.child(*sys.argv[2:3], float(sys.argv[3]), "
                                "float(sys.argv[4]), sys.argv[5])",
                                str(Path(__file__).parent), frames_path, str(seconds), str(rate_hz), out_dir],
                               cwd=str(tree), env=env, capture_output=True, text=True, timeout=20 * seconds + 300)
            load_avg = os.getloadavg()[0]
    finally:
        for p in busy:
            p.kill()
            p.wait()
    if r.returncode != 0:
        raise SystemExit(f"child failed:\n{r.stderr}")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    gaps = np.diff(got["flush_times"])
    return {"max": float(gaps.max()), "median": float(np.median(gaps)), "over": int((gaps > 1.0).sum()),
            "flushes": len(got["flush_times"]), "loadavg": load_avg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-rev", default=None, help="git revision measured as the baseline (e.g. main)")
    ap.add_argument("--load", type=int, nargs="+", default=[0, 6], help="busy processes during the runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0, help="recording time of one run")
    ap.add_argument("--rate", type=float, default=3000.0, help="frames per second fed to the recorder")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the busy processes of a run in progress are killed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    import hexspec as hx
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), seed=1)
        frames_path = str(tmp / "frames.npy")
        np.save(frames_path, sim.frames(1500)[0].frames)
        versions = {"current": REPO}
        if args.baseline_rev:
            base = tmp / "baseline"
            base.mkdir()
            versions = {"baseline": extract(args.baseline_rev, base), "current": REPO}
        results = {(v, n): [] for v in versions for n in args.load}
        for rep in range(args.repeats):
            for n in args.load:
                for v, tree in versions.items():      # interleaved: both versions see the same drift
                    res = run_once(tree, frames_path, n, args.seconds, args.rate)
                    results[(v, n)].append(res)
                    print(f"  repeat {rep + 1} load {n} {v:8s}: max gap {res['max']:.3f} s, median {res['median']:.3f} s, "
                          f"{res['over']} over 1 s of {res['flushes'] - 1} (load average {res['loadavg']:.1f})",
                          flush=True)

    print(f"\nflush gaps, {args.rate:g} frames/s for {args.seconds:g} s per run, {args.repeats} runs: "
          "median [min - max] over runs")
    for n in args.load:
        for v in versions:
            rs = results[(v, n)]
            mx, md = [r["max"] for r in rs], [r["median"] for r in rs]
            loads = [r["loadavg"] for r in rs]
            print(f"load {n:2d} ({np.median(loads):4.1f}) {v:8s}: longest gap {np.median(mx):.3f} [{min(mx):.3f} - "
                  f"{max(mx):.3f}] s, median gap {np.median(md):.3f} [{min(md):.3f} - {max(md):.3f}] s, "
                  f"gaps over 1 s: {sum(r['over'] for r in rs)}")
        if "baseline" in versions:
            ratio = [c["max"] / b["max"] for c, b in zip(results[("current", n)], results[("baseline", n)])]
            print(f"load {n:2d} longest gap current / baseline: {np.median(ratio):.2f} "
                  f"[{min(ratio):.2f} - {max(ratio):.2f}]")


if __name__ == "__main__":
    main()
