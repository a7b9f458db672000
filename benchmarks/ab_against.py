"""Old against new in one interleaved run: the same workload timed on an earlier commit and on this tree.

The earlier commit and this tree's HEAD (commit first) are both unpacked with ``git
archive`` into temporary folders, so that the two sides start alike (the same import
paths, numba caches of their own: an old-against-HEAD run of identical code measured
0.64-0.92 when this side ran from the working tree instead); each round runs the
workload in a fresh Python process on the old tree and on HEAD (the order alternating), each process warming up (numba compilation or cache load) and then timing
``--repeats`` calls. The printed ratio is t_old / t_new per round (above 1: this tree is
faster), as the median and the range over the rounds, so that the machine's drift over
minutes cancels within a round.

Workloads (the data generators come from this tree's benchmarks and tests, so both sides
fit the same numbers):
  fit     fit_cube of the 80 x 80 cube of bench_fit.py, least squares and Poisson ML;
  am241   calibrate_am241 of a synthetic Am-241 cube (tests/test_calibration_am241.py);
  events  the event chain of bench_events.py (csd, csa, none; 1 and 2 threads).

    python benchmarks/ab_against.py REF {fit,am241,events} [--rounds 7] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# folders that pyproject.toml maps into the hexspec package (package-dir)
_MAPPED = ("drivers", "calibration", "sim")

_PRELUDE = f"""
import json, statistics, sys, time
sys.path[:0] = [{str(ROOT / 'benchmarks')!r}, {str(ROOT / 'tests')!r}]
import numpy as np
import hexspec as hx

def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
"""

WORKLOADS = {
    "fit": """
from bench_fit import simulated_cube
from hexspec import fit
cube = simulated_cube()
out = {}
for method in ("ls", "ml"):
    fit.fit_cube(cube, (79.0, 109.0), method=method)
    out["fit_cube " + method] = median_time(lambda: fit.fit_cube(cube, (79.0, 109.0), method=method), REPEATS)
""",
    "am241": """
from test_calibration_am241 import synthetic_am241_cube
small, _ = synthetic_am241_cube(shape=(3, 3), seed=2, noise_frames=200)
hx.calibration.calibrate_am241(small)
cube, _ = synthetic_am241_cube(shape=(40, 40), seed=1, noise_frames=2000)
out = {"calibrate_am241 40x40": median_time(lambda: hx.calibration.calibrate_am241(cube), REPEATS)}
""",
    "events": """
from bench_events import Chain, make_frames
frames = make_frames(20000)
bins = hx.EnergyBins(0, 200, 0.2)
out = {}
for mode in ("none", "csd", "csa"):
    cfg = hx.ProcessingConfig(threshold=100, gradients=0.05, intercepts=0.5, charge_sharing=mode, bins=bins)
    for threads in (1, 2):
        Chain(frames[:2000], cfg, threads=threads)()
        run = Chain(frames, cfg, threads=threads)
        def once():
            run.reset()
            run()
        out[f"{mode}, {threads} thread{'s' if threads > 1 else ''}"] = median_time(once, REPEATS)
""",
}


def unpack(ref: str, into: Path) -> Path:
    """This repository at commit ``ref`` as a folder importable with PYTHONPATH."""
    archive = into / "tree.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), ref], check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    for name in _MAPPED:
        if (tree / name).is_dir() and not (tree / "hexspec" / name).exists():
            (tree / "hexspec" / name).symlink_to(tree / name, target_is_directory=True)
    return tree


def run_once(workload: str, tree: Path | None, repeats: int) -> dict:
    """Median seconds per case of one fresh process (``tree`` None: this working tree)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    code = _PRELUDE + f"REPEATS = {repeats}\n" + WORKLOADS[workload] + "\nprint('RESULT ' + json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree or ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"ab_against: the {workload} workload failed on {tree or ROOT}:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][7:])


def compare(ref: str, workload: str, rounds: int, repeats: int) -> dict:
    """{case: [t_old / t_new per round]}; prints one line per case."""
    with tempfile.TemporaryDirectory(prefix="hexspec-ab-") as tmp:
        (Path(tmp) / "old").mkdir()
        (Path(tmp) / "new").mkdir()
        tree = unpack(ref, Path(tmp) / "old")
        head = unpack("HEAD", Path(tmp) / "new")
        run_once(workload, tree, 1)       # each tree's numba cache, outside the rounds
        run_once(workload, head, 1)
        ratios: dict[str, list[float]] = {}
        for k in range(rounds):
            order = [tree, head] if k % 2 == 0 else [head, tree]
            res = {("old" if t is tree else "new"): run_once(workload, t, repeats) for t in order}
            for case, t_new in res["new"].items():
                ratios.setdefault(case, []).append(res["old"][case] / t_new)
    print(f"{workload}: t_old / t_new ({ref} vs HEAD; above 1: HEAD faster), {rounds} rounds of "
          f"{repeats} repeats, median (range)")
    for case, r in ratios.items():
        print(f"  {case:28s} {statistics.median(r):5.2f}  ({min(r):.2f}-{max(r):.2f})")
    return ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ref", help="the earlier commit (e.g. main, or a hash)")
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    compare(args.ref, args.workload, args.rounds, args.repeats)


if __name__ == "__main__":
    main()
