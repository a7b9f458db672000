"""Simulator throughput: 80x80 Compton-source frames at 1 % occupancy on one core.

Prints, from one run:
  (a) HexitecSimulator.frames in frames/s, photons/s and hit pixels/s (CPU time of this
      single-threaded process, median of --repeat runs; wall-clock alongside);
  (b) the same photons read out by the plain-numpy reference (hexspec.sim.response.
      deposit_reference: erf split, pile-up, noise, gain; no K escape, no spill),
      timed on the same data: ratio (a) / (b);
  (c) the memory floor: allocating and zero-filling the same frames;
  and the ratios to the 50,000 frames/s target and to the real detector (9118.87 Hz),
  plus the fraction of photons whose charge is shared at the default settings;
  (d) the call as a user makes it, source and simulator built inside the timing:
      HexitecSimulator(ComptonSource(e1_kev=115.0, li_content=0.5), photon_rate_hz=584e3,
      seed=3).frames(20000), wall clock, on all CPUs and on one thread, the two interleaved
      (median and range of --repeat runs each), their ratio and the check that both give the
      same frames; the first build of a source's tables in a process is timed apart.

    python benchmarks/bench_sim.py [--frames 20000] [--batch 1000] [--repeat 5] [--occupancy 0.01] [--only-user-call]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import hexspec as hx
from hexspec.sim import ComptonSource, HexitecSimulator
from hexspec.sim.response import FWHM_PER_SIGMA, deposit_reference

TARGET_FPS = 50_000


def photons_for_occupancy(occupancy, seed=0):
    """Mean photons per frame giving the wanted fraction of non-zero pixels (two-step secant)."""
    guess = occupancy * hx.HEXITEC.n_pixels / 1.5
    for _ in range(3):
        batch, _ = HexitecSimulator(ComptonSource(), photons_per_frame=guess, seed=seed).frames(4000)
        measured = np.count_nonzero(batch.frames) / batch.frames.size
        guess *= occupancy / measured
    return guess


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--occupancy", type=float, default=0.01)
    ap.add_argument("--only-user-call", action="store_true", help="run (d) only")
    args = ap.parse_args()
    if not args.only_user_call:
        per_frame_parts(args)
    user_call(args)


def user_call(args):
    import os
    import hashlib

    from hexspec.sim import sources

    sources._proposal_tables.cache_clear()
    w0 = time.perf_counter()
    ComptonSource(e1_kev=115.0, li_content=0.5)
    cold = time.perf_counter() - w0

    def call(threads):
        sim = HexitecSimulator(ComptonSource(e1_kev=115.0, li_content=0.5), photon_rate_hz=584e3, seed=3,
                               threads=threads)
        return sim.frames(args.frames)

    call(1)   # compile / load kernels
    walls = {1: [], None: []}
    cpus = {1: [], None: []}
    digests = set()
    occupancy = 0.0
    for _ in range(args.repeat):
        for threads in (None, 1):
            (batch, _), c, w = timed(lambda: call(threads))
            walls[threads].append(w)
            cpus[threads].append(c)
            digests.add(hashlib.sha1(batch.frames.tobytes()).hexdigest())
            occupancy = np.count_nonzero(batch.frames) / batch.frames.size
            del batch
    fps = {k: sorted(args.frames / np.array(v)) for k, v in walls.items()}
    n_cpu = os.cpu_count()
    print(f"(d) HexitecSimulator(ComptonSource(e1_kev=115.0, li_content=0.5), photon_rate_hz=584e3, seed=3)"
          f".frames({args.frames}), {occupancy:.2%} occupancy, wall clock, {args.repeat} interleaved runs:")
    for k, label in ((None, f"all {n_cpu} CPUs"), (1, "one thread")):
        v = fps[k]
        c = sorted(args.frames / np.array(cpus[k]))
        print(f"  {label:>12}: {statistics.median(v):,.0f} frames/s (range {v[0]:,.0f}-{v[-1]:,.0f}), "
              f"{statistics.median(v) / TARGET_FPS:.2f} of the {TARGET_FPS:,} target; per CPU-second of the "
              f"process {statistics.median(c):,.0f} (range {c[0]:,.0f}-{c[-1]:,.0f})")
    print(f"  threads / one thread: {statistics.median(fps[None]) / statistics.median(fps[1]):.2f}x; "
          f"same frames in every run: {len(digests) == 1}; "
          f"first ComptonSource of a process (tables built): {cold * 1e3:.0f} ms, not in the runs above")
    print("  (on a machine shared with other jobs the wall clock says little; frames per CPU-second of the "
          "threaded run, times the idle CPUs, bounds what a quiet machine gives)")


def per_frame_parts(args):
    per_frame = photons_for_occupancy(args.occupancy)
    sim = HexitecSimulator(ComptonSource(), photons_per_frame=per_frame, seed=1)
    sim.frames(10)   # compile / load kernels

    cpu, wall, photons, hits = [], [], 0, 0
    for _ in range(args.repeat):
        c = w = 0.0
        photons = hits = 0
        for _ in range(args.frames // args.batch):
            (batch, truth), dc, dw = timed(lambda: sim.frames(args.batch))
            c += dc
            w += dw
            photons += len(truth.photons)
            hits += np.count_nonzero(batch.frames)
        cpu.append(c)
        wall.append(w)
    n = (args.frames // args.batch) * args.batch
    t_cpu, t_wall = statistics.median(cpu), statistics.median(wall)
    fps = n / t_cpu
    print(f"simulator, 80x80 Compton, {hits / (n * 6400):.2%} occupancy ({per_frame:.1f} photons/frame incident), "
          f"batches of {args.batch}:")
    print(f"  (a) {fps:,.0f} frames/s (CPU time, median of {args.repeat}; wall clock {n / t_wall:,.0f}), "
          f"{photons / t_cpu:,.0f} photons/s absorbed, {hits / t_cpu:,.0f} hit pixels/s")

    # (b) numpy reference on the photons of one batch
    batch, truth = HexitecSimulator(ComptonSource(), photons_per_frame=per_frame, seed=2).frames(args.batch)
    p = truth.photons
    sigma_px = truth.cloud_fwhm_um / FWHM_PER_SIGMA / (hx.HEXITEC.pitch_mm * 1e3)
    noise = truth.noise_fwhm_kev / FWHM_PER_SIGMA
    rng = np.random.default_rng(0)
    ref_t = []
    for _ in range(args.repeat):
        _, dc, _ = timed(lambda: deposit_reference(p.frame - batch.frame_numbers[0], p.col + p.x, p.row + p.y,
                                                   p.energy_kev, len(batch), batch.shape, sigma_px,
                                                   truth.gradients, truth.intercepts, noise, rng))
        ref_t.append(dc)
    ref_fps = args.batch / statistics.median(ref_t)
    print(f"  (b) numpy reference readout of the same photons (no sampling, escape or spill): {ref_fps:,.0f} frames/s"
          f"  -> (a)/(b) = {fps / ref_fps:.1f}x")

    floor_t = []
    for _ in range(args.repeat):
        _, dc, _ = timed(lambda: np.zeros((args.batch, 80, 80), np.uint16).fill(0))
        floor_t.append(dc)
    floor_fps = args.batch / statistics.median(floor_t)
    print(f"  (c) memory floor, allocate + zero the frames: {floor_fps:,.0f} frames/s -> (a)/(c) = {fps / floor_fps:.2f}")
    print(f"  ratio to the {TARGET_FPS:,} frames/s target: {fps / TARGET_FPS:.2f}; "
          f"to the real detector ({hx.HEXITEC.frame_rate_hz} Hz): {fps / hx.HEXITEC.frame_rate_hz:.1f}x")

    _, truth = HexitecSimulator(ComptonSource(), seed=0).frames(5000)
    _, am = HexitecSimulator(hx.sim.Am241Source(), seed=0).frames(5000)
    print(f"shared photons at default settings (>= {5.0} keV in two or more pixels; cloud FWHM "
          f"{truth.cloud_fwhm_um:.1f} um): Compton {truth.shared_fraction:.1%} "
          f"(K escape out of the pixel {np.mean(truth.photons.escaped):.1%}), Am-241 {am.shared_fraction:.1%}")


if __name__ == "__main__":
    main()
