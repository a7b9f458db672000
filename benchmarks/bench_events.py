"""Frames -> events -> spectra throughput against a memory-scan floor and a numpy baseline.

Prints, from one run on the same data:
  (a) the fused numba chain threshold + next-frame + calibration + csd (and csa) + histogram
      (1000 bins), single-threaded, in frames/s;
  (b) the memory-scan floor: numpy summing the same uint16 frames;
  (c) a straightforward vectorised numpy/scipy implementation of the same chain
      (hexspec.events.extract_reference + histogram_reference);
  the threaded variant on all cores, next to its ceiling: independent single-threaded
  chains run at once on equal shares of the frames, with no coordination at all; what
  two threads of plain integer work gain on this machine; and the peak resident memory
  of `hexspec process` over a large raw frame file (default 4 GB; --big-file-gb 0 skips it).

Targets (issue): (a) >= 250,000 frames/s, (a)/(b) time ratio <= 1.6, (a) >= 10x (c),
threaded >= 1.7x (a) on 2 cores, peak RSS < 1 GB for a 4 GB file.

    python benchmarks/bench_events.py [--frames 20000] [--repeat 9] [--big-file-gb 4]

No loss against an earlier kernel: ``--against REF`` compiles the ``_extract_kernel`` of
commit REF beside this tree's (or commit ``--new``'s), in one process, and a second copy
of the new one as a control; the same extractor (this tree's EventExtractor and
SpectrumAccumulator, only the kernel swapped) then runs with each kernel in turn, one
1,000-frame batch per pass. Per case (mode none / csd / csa, with and without the
histogram, next-frame on and off, 1 and 2 threads) it prints t_old / t_new (above 1: the
new kernel is faster) and t_control / t_new (which must come out 1.00), as the median and
range over the rounds. What makes the ratio fair on a shared machine:

- the kernels' passes interleave, so drift falls on all alike; the order of the three
  runs through all six permutations, round after round;
- CPU time of the process (``--clock cpu``), which leaves out the time other processes
  hold the cores; a round's ratio is the median over the batches of the two kernels'
  times on the same batch, so a pass disturbed all the same shifts it little;
- every round builds new extractors and accumulators (where the arrays lie changes the
  speed by a few percent), and ``--processes`` fresh processes pool their rounds (each
  loads the machine code at other addresses).

The single-body kernel before it was split into stages is the parent of the first commit
of hexspec/event_stages.py:

    python benchmarks/bench_events.py --against "$(git log --reverse --format=%h -- hexspec/event_stages.py | head -1)~1"

(benchmarks/ab_against.py REF events times the two trees in alternating fresh processes
instead: each side then has a process of its own, and the ratio varies more.)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import os
import types
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from numba import njit

import hexspec as hx
from hexspec.events import extract_reference
from hexspec.spectra import histogram_reference


def make_frames(n, shape=(80, 80), occupancy=0.01, seed=0):
    """About 1% occupancy, half of the hits in horizontally shared pairs."""
    rng = np.random.default_rng(seed)
    npix = shape[0] * shape[1]
    hits = int(round(occupancy * npix))
    singles, pairs = hits // 2, hits // 4
    fr = np.zeros((n, npix), np.uint16)
    f = np.arange(n)[:, None]
    idx = rng.integers(0, npix, (n, singles + pairs))
    fr[f, idx] = rng.integers(2000, 4000, idx.shape)
    partner = idx[:, singles:] + 1
    partner[partner % shape[1] == 0] -= 2          # stay on the same row
    fr[f, partner] = rng.integers(200, 2000, partner.shape)
    return fr.reshape(n, *shape)


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class Chain:
    """The full chain over ``frames`` in batches: extraction + histogram into one accumulator.

    Extractor and accumulator are built once, outside the timed region, as in a long
    acquisition: a fresh 25 MB cube would otherwise add its first-touch page faults
    (a one-off cost of a few ms) to every timed pass over 20,000 frames.
    """

    def __init__(self, frames, cfg, threads=1, batch=1000):
        self.ex = hx.EventExtractor(cfg, frames.shape[1:], threads=threads)
        self.acc = hx.SpectrumAccumulator(cfg, frames.shape[1:])
        self.acc.reset()   # writes every page of the cube once
        fn = np.arange(len(frames))
        self.batches = [hx.FrameBatch(frames[s:s + batch], fn[s:s + batch]) for s in range(0, len(frames), batch)]

    def reset(self):
        self.ex.reset()
        self.acc.reset()

    def __call__(self):
        for b in self.batches:
            self.ex(b, accumulator=self.acc)
        return self.acc


def chain(frames, cfg, threads=1, batch=1000):
    c = Chain(frames, cfg, threads, batch)
    c()
    c.ex.close()
    return c.acc


class IndependentChains:
    """The ceiling of any threaded variant: one single-threaded Chain per core, each on its
    own equal share of the frames, run at once with no coordination (the result is not one
    cube, and the next-frame state does not cross the shares)."""

    def __init__(self, frames, cfg, threads):
        bounds = np.linspace(0, len(frames), threads + 1).astype(int)
        self.chains = [Chain(frames[bounds[k]:bounds[k + 1]], cfg) for k in range(threads)]
        self.pool = ThreadPoolExecutor(threads - 1)

    def reset(self):
        for c in self.chains:
            c.reset()

    def __call__(self):
        jobs = [self.pool.submit(c) for c in self.chains[1:]]
        self.chains[0]()
        for j in jobs:
            j.result()


@njit(nogil=True, cache=True)
def _alu_work(n):
    """Six independent integer recurrences: limited by the core's execution units."""
    a, b, c = np.uint64(1), np.uint64(2), np.uint64(3)
    d, e, f = np.uint64(4), np.uint64(5), np.uint64(6)
    for i in range(n):
        k = np.uint64(i)
        a = a * np.uint64(3) + k
        b = b ^ (b >> np.uint64(3)) ^ k
        c = c + (c << np.uint64(1)) + np.uint64(7)
        d = d * np.uint64(5) + np.uint64(1)
        e = e ^ (e << np.uint64(5)) ^ k
        f = f + k * np.uint64(9)
    return a + b + c + d + e + f


@njit(nogil=True, cache=True)
def _latency_work(n):
    """One dependent multiply-add chain: limited by latency, leaves the units mostly idle."""
    a = np.uint64(1)
    for _ in range(n):
        a = a * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
    return a


def thread_scaling(fn, n, threads, repeat=5):
    """Median speed-up of ``threads`` threads each running fn(n) over one thread running it once."""
    fn(10)
    ratios = []
    with ThreadPoolExecutor(threads - 1) as pool:
        for _ in range(repeat):
            t = time.perf_counter()
            fn(n)
            one = time.perf_counter() - t
            t = time.perf_counter()
            jobs = [pool.submit(fn, n) for _ in range(threads - 1)]
            fn(n)
            for j in jobs:
                j.result()
            ratios.append(threads * one / (time.perf_counter() - t))
    return statistics.median(ratios)


def numpy_chain(frames, cfg):
    ev = extract_reference(frames, cfg)
    return histogram_reference(ev.row, ev.col, ev.energy, frames.shape[1:], cfg.bins)


# The child reports its own peak resident memory (VmHWM, which starts afresh at exec):
# getrusage(RUSAGE_CHILDREN) would also count this process's pages, which a child
# started with vfork shares until it execs.
_CHILD = """
import sys
from hexspec.cli import main
code = main(sys.argv[2:])
with open("/proc/self/status") as fh:
    peak_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
with open(sys.argv[1], "w") as out:
    out.write(str(peak_kb))
sys.exit(code)
"""


def big_file_rss(gb):
    """Peak RSS (MB) of `hexspec process` over a raw file of ``gb`` gigabytes."""
    block = make_frames(2000, seed=1)
    nblocks = int(gb * 1e9 // block.nbytes)
    with tempfile.TemporaryDirectory(dir=os.environ.get("HEXSPEC_BENCH_TMP")) as d:
        path = os.path.join(d, "big.bin")
        with open(path, "wb") as fh:
            for _ in range(nblocks):
                fh.write(block.tobytes())
        size_gb = os.path.getsize(path) / 1e9
        peak_file = os.path.join(d, "peak_kb")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", _CHILD, peak_file, "process", path, "-o", os.path.join(d, "out.h5"),
                        "--threshold", "100", "--gradients", "0.05", "--spectra", "--quiet"], check=True,
                       stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        with open(peak_file) as fh:
            peak_mb = int(fh.read()) / 1024
        return size_gb, nblocks * len(block), dt, peak_mb


# The threaded variant synchronises its threads once per batch (and then joins their events),
# so its speed-up depends on the batch size; both are printed (the single-threaded chain
# runs 1,000-frame batches, its fastest).
THREADED_BATCHES = (4000, 10000)


# ----------------------------------------------------------------------------- old against new

_ROOT = Path(__file__).resolve().parents[1]
_KERNEL_FILES = ("events.py", "event_stages.py", "_simd.py")


def kernel_copy(ref=None, salt=""):
    """The ``_extract_kernel`` of commit ``ref`` (None: of this working tree), compiled
    apart from the one hexspec imports (and from other copies of other ``salt``).

    The kernel's modules (_KERNEL_FILES, as far as ``ref`` has them) are written into a
    folder named by their content, kept so numba's cache serves later runs, and imported
    as a package whose other modules (config, frames, ...) are this tree's.
    """
    files = {}
    for fname in _KERNEL_FILES:
        if ref is None:
            path = _ROOT / "hexspec" / fname
            if path.exists():
                files[fname] = path.read_bytes()
        else:
            show = subprocess.run(["git", "-C", str(_ROOT), "show", f"{ref}:hexspec/{fname}"], capture_output=True)
            if show.returncode == 0:
                files[fname] = show.stdout
    name = "_hexspec_kernel_" + hashlib.sha1(b"".join(files[f] for f in sorted(files))).hexdigest()[:12] + salt
    folder = Path(tempfile.gettempdir()) / "hexspec-bench-kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        if not ((folder / fname).exists() and (folder / fname).read_bytes() == text):
            (folder / fname).write_bytes(text)
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(folder)]
        sys.modules[name] = pkg
        for sub in ("config", "errors", "eventlist", "frames", "event_stages", "_simd"):
            if sub + ".py" not in files:
                sys.modules[f"{name}.{sub}"] = importlib.import_module(f"hexspec.{sub}")
    return importlib.import_module(f"{name}.events")._extract_kernel


class Passes:
    """One case of the comparison: an extractor (and accumulator, with the histogram) per
    kernel, each pass running one kernel over some of the frames in 1,000-frame batches."""

    def __init__(self, frames, cfg, kernels, threads, hist):
        self.frames, self.cfg, self.kernels, self.threads, self.hist = frames, cfg, kernels, threads, hist
        fn = np.arange(len(frames))
        self.batches = [hx.FrameBatch(frames[s:s + 1000], fn[s:s + 1000]) for s in range(0, len(frames), 1000)]
        self.runs = []
        self.fresh()

    def fresh(self, order=None):
        """New extractors and accumulators, built in ``order`` of the kernels (new memory:
        where the arrays lie changes the speed by a few percent, alike for every kernel on
        average over the rounds)."""
        self.close()
        runs = [None] * len(self.kernels)
        for k in order if order is not None else range(len(self.kernels)):
            ex = hx.EventExtractor(self.cfg, self.frames.shape[1:], threads=self.threads)
            ex._kernel = self.kernels[k]
            acc = hx.SpectrumAccumulator(self.cfg, self.frames.shape[1:]) if self.hist else None
            if acc is not None:
                acc.reset()   # first-touch page faults outside the timing
            runs[k] = (ex, acc)
        self.runs = runs

    def time(self, k, batches, clock=time.process_time):
        ex, acc = self.runs[k]
        ex.reset()
        t = clock()
        for b in batches:
            ex(b, accumulator=acc)
        return clock() - t

    def events(self, k, batches):
        ex, acc = self.runs[k]
        ex.reset()
        if acc is not None:
            acc.reset()
        out = [ex(b, accumulator=acc) for b in batches]
        return out, (None if acc is None else acc.cube.counts.copy())

    def close(self):
        for ex, _ in self.runs:
            ex.close()


def ab_rounds(passes, pairs, rounds, span, clock):
    """t_a / t_b per round for each (a, b) kernel-index pair in ``pairs``.

    A round runs every kernel over all the frames, ``span`` batches per pass, passes of the
    kernels alternating; each kernel starts on a different part of the frames, so no pass
    finds its frames still in the cache from the pass before. The order of the kernels
    runs through all its permutations, round after round. A round's ratio is the median over the parts of the frames of
    the two kernels' times on that part: a pass slowed by another process on the machine
    then shifts it little. ``clock`` is time.process_time (CPU time of all threads, which
    leaves out the time other processes hold the cores) or time.perf_counter (wall time).
    """
    nb = len(passes.batches)
    nk = len(passes.runs)
    chunks = [passes.batches[s:s + span] for s in range(0, nb, span)]
    nc = len(chunks)
    orders = list(itertools.permutations(range(nk)))
    ratios = {pair: [] for pair in pairs}
    for r in range(rounds):
        t = np.zeros((nk, nc))
        order = orders[r % len(orders)]
        passes.fresh(order)
        for c in range(nc):
            for pos, k in enumerate(order):
                part = (c + pos * nc // nk) % nc
                t[k, part] = passes.time(k, chunks[part], clock)
        for a, b in pairs:
            ratios[a, b].append(float(np.median(t[a] / t[b])))
    return ratios


def against(ref, nframes, rounds, threads_list, modes, clock="cpu", quiet=False, new_ref=None):
    """{case: {"old/new": [t_old / t_new per round], "control": [t_copy / t_new]}}, printed
    unless ``quiet`` (see the module docstring). The new kernel is this tree's, or that of
    commit ``new_ref``."""
    import hexspec.events as new_events
    new = new_events._extract_kernel if new_ref is None else kernel_copy(new_ref)
    # the control: the new kernel's modules again, imported and compiled apart
    kernels = (kernel_copy(ref), new, kernel_copy(new_ref, salt="_control"))
    frames = make_frames(nframes)
    bins = hx.EnergyBins(0, 200, 0.2)
    results = {}
    for threads in threads_list:
        for mode in modes:
            for hist in (True, False):
                for nxt in (True, False):
                    cfg = hx.ProcessingConfig(threshold=100, gradients=0.05, intercepts=0.5, charge_sharing=mode,
                                              bins=bins, next_frame=nxt)
                    passes = Passes(frames, cfg, kernels, threads, hist)
                    warm = passes.batches[:2]
                    (ev_old, c_old), (ev_new, c_new) = passes.events(0, warm), passes.events(1, warm)
                    passes.events(2, warm)
                    same = all(np.array_equal(getattr(a, f), getattr(b, f))
                               for a, b in zip(ev_old, ev_new) for f in ("frame", "row", "col", "energy", "size"))
                    assert same and (c_old is None or np.array_equal(c_old, c_new)), "old and new kernels disagree"
                    r = ab_rounds(passes, [(0, 1), (2, 1)], rounds, span=1,
                                  clock=time.process_time if clock == "cpu" else time.perf_counter)
                    passes.close()
                    case = f"{mode}, hist {'on' if hist else 'off'}, next-frame {'on' if nxt else 'off'}, {threads}t"
                    results[case] = {"old/new": r[0, 1], "control": r[2, 1]}
                    if not quiet:
                        print_ratios(case, results[case])
    return results


def print_ratios(case, ratios):
    print(f"{case:34s} " + "  ".join(f"{statistics.median(v):5.3f} ({min(v):.3f}-{max(v):.3f})"
                                     for v in ratios.values()), flush=True)


def against_in_processes(args):
    """``against`` in ``args.processes`` fresh processes one after the other (each loads
    the machine code anew, at other addresses), the rounds of all pooled."""
    pooled = {}
    with tempfile.TemporaryDirectory() as d:
        for k in range(args.processes):
            out = os.path.join(d, f"{k}.json")
            subprocess.run([sys.executable, __file__, "--against", args.against, "--frames", str(args.frames),
                            "--rounds", str(args.rounds), "--clock", args.clock, "--processes", "1",
                            *(["--new", args.new] if args.new else []),
                            "--json", out, "--threads", *map(str, args.threads), "--modes", *args.modes],
                           check=True)
            with open(out) as fh:
                for case, r in json.load(fh).items():
                    for name, v in r.items():
                        pooled.setdefault(case, {}).setdefault(name, []).extend(v)
    return pooled




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--big-file-gb", type=float, default=4.0)
    ap.add_argument("--against", metavar="REF", help="instead: the kernel of commit REF against this tree's, interleaved")
    ap.add_argument("--rounds", type=int, default=12, help="with --against: rounds per case and process (default 12)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="with --against (default 1 2)")
    ap.add_argument("--modes", nargs="+", default=["none", "csd", "csa"], help="with --against")
    ap.add_argument("--processes", type=int, default=3, help="with --against: fresh processes, one after "
                    "the other, whose rounds are pooled (default 3)")
    ap.add_argument("--new", metavar="REF", help="with --against: the new kernel from commit REF instead of this tree")
    ap.add_argument("--json", help=argparse.SUPPRESS)   # with --against: write the ratios here instead
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="with --against: CPU time of the process (default; on a shared machine it leaves out "
                         "the time others hold the cores) or wall time")
    args = ap.parse_args()
    if args.against:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(against(args.against, args.frames, args.rounds, args.threads, args.modes, args.clock,
                                  quiet=True, new_ref=args.new), fh)
            return
        new = args.new or "this tree"
        print(f"t_old / t_new ({args.against} against {new}; above 1: {new} faster), and the control "
              f"(a second compilation of the new kernel against it): {args.frames} frames, "
              f"{args.processes} processes x {args.rounds} rounds, {args.clock} time, median (range) over the rounds")
        print(f"{'case':34s} {'old/new':>22s} {'control':>22s}")
        if args.processes > 1:
            for case, r in against_in_processes(args).items():
                print_ratios(case, r)
        else:
            against(args.against, args.frames, args.rounds, args.threads, args.modes, args.clock, new_ref=args.new)
        return

    frames = make_frames(args.frames)
    flat = frames.reshape(len(frames), -1)
    bins = hx.EnergyBins(0, 200, 0.2)   # 1000 bins
    cfgs = {m: hx.ProcessingConfig(threshold=100, gradients=0.05, intercepts=0.5, charge_sharing=m, bins=bins)
            for m in ("csd", "csa")}
    hits = np.count_nonzero(flat[:1000] > 100) / 1000
    print(f"data: {len(frames)} frames of 80x80 uint16, {hits:.1f} hits/frame ({hits / 6400:.2%} occupancy), "
          f"{frames.nbytes / 1e6:.0f} MB; median of {args.repeat} runs; {os.cpu_count()} cores")
    threads = os.cpu_count() or 2
    for cfg in cfgs.values():   # compile (or load the cache) before timing
        chain(frames[:2000], cfg)
        chain(frames[:2000], cfg, threads=threads)

    # The machine's speed drifts by tens of percent over seconds, so every repeat runs all
    # variants back to back and ratios are the median of per-repeat ratios: drift common
    # to a repeat cancels. Absolute rates are medians over repeats.
    runners = {}
    for mode, cfg in cfgs.items():
        runners[mode, 1] = Chain(frames, cfg)
        for batch in THREADED_BATCHES:
            runners[mode, threads, batch] = Chain(frames, cfg, threads=threads, batch=batch)
        runners[mode, "independent"] = IndependentChains(frames, cfg, threads)
    times = {key: [] for key in runners}
    times["floor"] = []
    for _ in range(args.repeat):
        for key, run in runners.items():
            run.reset()
            t = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t)
        t = time.perf_counter()
        flat.sum()
        times["floor"].append(time.perf_counter() - t)
    n = len(frames)
    t_floor = np.array(times["floor"])
    print(f"(b) numpy sum of the frames (memory-scan floor): {n / np.median(t_floor):12,.0f} frames/s")
    for mode, cfg in cfgs.items():
        t_a = np.array(times[mode, 1])
        nsub = min(n, 2000)
        t_c = timed(lambda: numpy_chain(frames[:nsub], cfg), max(1, args.repeat // 3)) * n / nsub
        print(f"(a) numba chain, {mode}, 1 thread:              {n / np.median(t_a):12,.0f} frames/s "
              f"(target >= 250,000; fastest repeat {n / t_a.min():,.0f})")
        print(f"    (a)/(b) time ratio:                        {np.median(t_a / t_floor):12.2f}   (target <= 1.6)")
        print(f"(c) numpy/scipy chain, {mode}:                  {n / t_c:12,.0f} frames/s; "
              f"(a) is {t_c / np.median(t_a):.1f}x faster (target >= 10)")
        for batch in THREADED_BATCHES:
            t_p = np.array(times[mode, threads, batch])
            print(f"    {threads} threads, {mode}, batches of {batch:>6,}:    {n / np.median(t_p):12,.0f} frames/s; "
                  f"{np.median(t_a / t_p):.2f}x one thread (target >= 1.7)")
        t_i = np.array(times[mode, "independent"])
        print(f"    ceiling: {threads} independent chains at once:  {n / np.median(t_i):12,.0f} frames/s; "
              f"{np.median(t_a / t_i):.2f}x one thread")
    # the numba and numpy chains agree on these data (a cheap guard that the timing compares like with like)
    acc = chain(frames[:500], cfgs["csd"])
    ref, _, _ = numpy_chain(frames[:500], cfgs["csd"])
    assert np.array_equal(acc.cube.counts, ref), "numba and numpy chains disagree"
    if threads > 1:
        # No memory traffic here: what the cores themselves give two threads at the moment
        # (on a shared virtual machine, less than 2x at times, most for the integer work).
        alu = thread_scaling(_alu_work, 100_000_000, threads)
        latency = thread_scaling(_latency_work, 50_000_000, threads)
        print(f"machine: {threads} threads of independent integer work run {alu:.2f}x one thread's rate, "
              f"of one latency-bound chain {latency:.2f}x")
    if args.big_file_gb > 0:
        size_gb, n, dt, rss_mb = big_file_rss(args.big_file_gb)
        print(f"hexspec process over a {size_gb:.2f} GB raw file ({n:,} frames): {dt:.1f} s "
              f"({n / dt:,.0f} frames/s including start-up, reading and writing), "
              f"peak RSS {rss_mb:.0f} MB (target < 1024 MB)")


if __name__ == "__main__":
    main()
