"""Reading frame files per compression, against gzip level 1 on the same simulated frames.

Writes the same simulated HEXITEC frames (the simulator's Am-241 scene, 80 x 80) once
per compression hexspec offers, then reads each file whole in batches of 1000 frames
(hexspec.io.framefile.iter_frame_file, the reader `hexspec process` uses), the files
taken in turn within each repeat so that load on a shared machine hits them alike.
Prints, per compression, the file size over gzip's and the read speed over gzip's
(median and range over the repeats), with the reader's default decoding threads and on
one core (decode_threads=0; gzip is always decoded inside HDF5, on one core), plus
frames/s for scale.

Target (issue 14): bslz4 reads >= 5x faster than gzip level 1, at a size <= 1.5x gzip's.
With --real, the same on the real 2x2-module frames of ../shared/data (tiled), whose
occupancy differs from the simulator's.

    python benchmarks/bench_io.py [--frames 20000] [--repeat 7] [--real]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import hexspec as hx
from hexspec.io import chunkread, framefile, hdf5

REAL = Path(os.environ.get("HEXSPEC_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "hexitec_2x2_raw_30frames.h5"


def simulated(n, seed=0):
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), seed=seed)
    return np.concatenate([sim.frames(min(5000, n - s))[0].frames for s in range(0, n, 5000)])


def write(path, frames, name):
    with hdf5.HexspecWriter(path, frames.shape[1:], frames=True, events=False, spectra=False,
                            frame_compression=name) as w:
        for s in range(0, len(frames), 5000):
            w.write_frames(hx.FrameBatch(frames[s:s + 5000], np.arange(s, min(s + 5000, len(frames)))))


def read_all(path, decode_threads=None):
    n = 0
    for b in framefile.iter_frame_file(path, 1000, decode_threads=decode_threads):
        n += len(b)
    return n


def bench(frames, repeat, label):
    names = framefile.COMPRESSIONS
    with tempfile.TemporaryDirectory() as d:
        paths = {k: Path(d) / f"{k}.h5" for k in names}
        sizes = {}
        for k in names:
            write(paths[k], frames, k)
            sizes[k] = os.path.getsize(paths[k])
            read_all(paths[k])                       # warm the page cache and the filters
        times = {k: [] for k in names}
        times1 = {k: [] for k in names}      # decoded in the reading thread: per core
        for _ in range(repeat):
            for k in names:
                t = time.perf_counter()
                read_all(paths[k])
                times[k].append(time.perf_counter() - t)
                t = time.perf_counter()
                read_all(paths[k], 0)
                times1[k].append(time.perf_counter() - t)
    n = len(frames)
    occ = float(np.mean(frames > 0))
    print(f"\n{label}: {n} frames of {frames.shape[1]}x{frames.shape[2]}, {occ:.2%} of pixels non-zero, "
          f"{repeat} repeats (speed ratio: gzip time / its time, per repeat)")
    print(f"decode threads: {chunkread.DEFAULT_DECODE_THREADS} (reader default) and 0 (one core); "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'compression':12s} {'size MB':>9s} {'size/gzip':>10s} {'speed/gzip median [range]':>28s} "
          f"{'one core':>20s} {'frames/s (median)':>18s}")
    for k in names:
        ratios = [g / t for g, t in zip(times["gzip"], times[k])]
        ratios1 = [g / t for g, t in zip(times1["gzip"], times1[k])]
        print(f"{k:12s} {sizes[k] / 1e6:9.1f} {sizes[k] / sizes['gzip']:10.2f} "
              f"{statistics.median(ratios):12.2f} [{min(ratios):.2f}-{max(ratios):.2f}]     "
              f"{statistics.median(ratios1):6.2f} [{min(ratios1):.2f}-{max(ratios1):.2f}] "
              f"{n / statistics.median(times[k]):18,.0f}")
    return sizes, times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--real", action="store_true", help="also the real frames of ../shared/data, tiled")
    args = ap.parse_args()
    bench(simulated(args.frames), args.repeat, "simulated Am-241 frames (hexspec simulate)")
    if args.real:
        if not REAL.exists():
            print(f"\n{REAL} is absent: real-frame figures skipped")
        else:
            raw = hx.io.read_odin(REAL)["raw_frames"]
            reps = max(1, args.frames * 6400 // raw[0].size // len(raw))
            bench(np.concatenate([raw] * reps), args.repeat, f"real 2x2-module frames ({REAL.name}, x{reps})")


if __name__ == "__main__":
    main()
