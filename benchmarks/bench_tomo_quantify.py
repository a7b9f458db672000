"""Benchmark: tortuosity of a 200^3 random pore volume, hexspec against TauFactor.

Target (issue 12): tau within 0.5% of an over-converged solution, in at most half of
TauFactor's CPU time on the same volume. The volume is a Gaussian-blurred random field
(sigma 2 voxels, fixed seed) thresholded to 40% porosity, saved as .npy. Each solve runs
in its own child process (so peak RSS is that solve's), alternating hexspec and
TauFactor; figures are medians with ranges over the repeats, and the CPU-time ratio is
taken within each pair, so that the load of a shared machine cancels as far as it can.

TauFactor (1.2, PyTorch on CPU) is a benchmark peer, not a dependency: install it in a
separate environment and give its interpreter:

    python -m venv /tmp/venv-taufactor && /tmp/venv-taufactor/bin/pip install torch taufactor
    python benchmarks/bench_tomo_quantify.py --taufactor-python /tmp/venv-taufactor/bin/python

(or set TAUFACTOR_PYTHON). Without it, only hexspec is timed.

    python benchmarks/bench_tomo_quantify.py [--size 200] [--repeats 3] [--reference-rtol 1e-10]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

CHILD_HEXSPEC = r"""
import json, resource, sys, time
import numpy as np
from hexspec.tomo.diffusion import tortuosity
mask = np.load(sys.argv[1]).astype(bool)
rtol = float(sys.argv[2])
c0, w0 = time.process_time(), time.perf_counter()
r = tortuosity(mask, axis=0, rtol=rtol)
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
print(json.dumps({"tau": r.tau, "cpu_s": cpu, "wall_s": wall, "iterations": r.iterations,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CHILD_TAUFACTOR = r"""
import json, resource, sys, time
import numpy as np
import taufactor as tf
img = np.load(sys.argv[1]).astype(np.uint8)
c0, w0 = time.process_time(), time.perf_counter()
s = tf.Solver(img, device="cpu")
tau = float(np.ravel(s.solve(verbose=False))[0])
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
print(json.dumps({"tau": tau, "cpu_s": cpu, "wall_s": wall, "iterations": int(s.iter),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def pore_volume(size, porosity=0.4, sigma=2.0, seed=0):
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.standard_normal((size, size, size)), sigma)
    return f < np.quantile(f, porosity)


def run_child(python, code, *args):
    out = subprocess.run([python, "-c", code, *map(str, args)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values, fmt="{:.3g}"):
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rtol", type=float, default=1e-6, help="hexspec's default stopping tolerance")
    p.add_argument("--reference-rtol", type=float, default=1e-10, help="the over-converged reference solve")
    p.add_argument("--taufactor-python", default=os.environ.get("TAUFACTOR_PYTHON"),
                   help="interpreter of an environment with taufactor and torch (or TAUFACTOR_PYTHON)")
    args = p.parse_args()

    mask = pore_volume(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pores.npy"
        np.save(path, mask.astype(np.uint8))
        print(f"volume {args.size}^3, porosity {mask.mean():.4f}, Gaussian field sigma 2, seed 0")
        ref = run_child(sys.executable, CHILD_HEXSPEC, path, args.reference_rtol)
        print(f"over-converged reference (multigrid-CG to rtol {args.reference_rtol:g}): tau = {ref['tau']:.6f} "
              f"({ref['iterations']} iterations)")
        peer = args.taufactor_python
        if peer and not Path(peer).exists():
            print(f"TauFactor interpreter {peer} not found: timing hexspec only")
            peer = None
        if not peer:
            print("TauFactor not given (--taufactor-python or TAUFACTOR_PYTHON): timing hexspec only")
        ours, theirs = [], []
        for i in range(args.repeats):
            ours.append(run_child(sys.executable, CHILD_HEXSPEC, path, args.rtol))
            print(f"  hexspec   run {i + 1}: tau {ours[-1]['tau']:.6f}, cpu {ours[-1]['cpu_s']:.1f} s, "
                  f"wall {ours[-1]['wall_s']:.1f} s, peak {ours[-1]['peak_rss_mb']:.0f} MB", flush=True)
            if peer:
                theirs.append(run_child(peer, CHILD_TAUFACTOR, path))
                print(f"  TauFactor run {i + 1}: tau {theirs[-1]['tau']:.6f}, cpu {theirs[-1]['cpu_s']:.1f} s, "
                      f"wall {theirs[-1]['wall_s']:.1f} s, peak {theirs[-1]['peak_rss_mb']:.0f} MB", flush=True)

    def rel_err(runs):
        return [abs(r["tau"] - ref["tau"]) / ref["tau"] * 100 for r in runs]

    print()
    print(f"{'solver':<10} {'tau':>10} {'error vs ref %':>16} {'cpu s':>20} {'wall s':>20} {'peak MB':>18}")
    for name, runs in (("hexspec", ours), ("TauFactor", theirs)):
        if runs:
            print(f"{name:<10} {statistics.median(r['tau'] for r in runs):>10.5f} "
                  f"{summary(rel_err(runs)):>16} {summary([r['cpu_s'] for r in runs]):>20} "
                  f"{summary([r['wall_s'] for r in runs]):>20} {summary([r['peak_rss_mb'] for r in runs], '{:.0f}'):>18}")
    worst = max(rel_err(ours))
    print(f"\nhexspec error against the over-converged solve: at most {worst:.4f}% (target 0.5%): "
          + ("met" if worst <= 0.5 else "NOT met"))
    if theirs:
        cpu_ratio = [t["cpu_s"] / o["cpu_s"] for o, t in zip(ours, theirs)]
        wall_ratio = [t["wall_s"] / o["wall_s"] for o, t in zip(ours, theirs)]
        print(f"TauFactor / hexspec CPU time: {summary(cpu_ratio, '{:.2f}')}x (target >= 2): "
              + ("met" if statistics.median(cpu_ratio) >= 2 else "NOT met"))
        print(f"TauFactor / hexspec wall time: {summary(wall_ratio, '{:.2f}')}x")


if __name__ == "__main__":
    main()
