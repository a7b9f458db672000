"""Benchmark: batched numba peak fits of a whole cube against lmfit per pixel, and S maps.

Targets (issue: spectral physics): fit_cube of an 80 x 80 cube with 1000 bins and a
window of about 150 bins in at most 0.5 s and at least 100x faster than lmfit per
pixel (lmfit timed on a sample of pixels and scaled to the cube); s_parameter_map of
80 x 80 in at most 0.2 s. Every figure is the median of several runs in this process,
on the same simulated data, after a warm-up call (numba compilation excluded).

    python benchmarks/bench_fit.py [--repeats 7] [--lmfit-sample 40]
"""

import argparse
import statistics
import time

import numpy as np

import hexspec as hx
from hexspec import compton, fit


def simulated_cube(rows=80, cols=80, seed=0):
    """1000 bins of 0.2 keV; a pseudo-Voigt Compton peak varying across the detector, linear background."""
    edges = np.arange(0.0, 200.0001, 0.2)
    x = 0.5 * (edges[1:] + edges[:-1])
    rng = np.random.default_rng(seed)
    theta = compton.PinholeGeometry(detector=hx.DetectorSpec(rows=rows, cols=cols)).theta_map()
    center = compton.compton_energy(115.0, theta)[..., None]
    fwhm, eta = 2.3, 0.6
    area = rng.uniform(3000, 6000, (rows, cols))[..., None]
    lam = 0.2 * (fit.pseudo_voigt(x, center, fwhm, area, eta, 0.0, 0.0) + 20.0 - 0.3 * (x - center))
    return hx.SpectralCube(rng.poisson(np.clip(lam, 0, None)).astype(np.uint32), edges)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--lmfit-sample", type=int, default=40)
    args = ap.parse_args()

    cube = simulated_cube()
    window = (79.0, 109.0)
    nbins_window = int(np.count_nonzero((cube.centers >= window[0]) & (cube.centers <= window[1])))
    npix = cube.shape[0] * cube.shape[1]
    peaks = fit.fit_cube(cube, window)           # warm-up: compile or load the numba cache
    t_cube = median_time(lambda: fit.fit_cube(cube, window), args.repeats)

    rng = np.random.default_rng(1)
    sample = [(int(r), int(c)) for r, c in zip(rng.integers(0, 80, args.lmfit_sample), rng.integers(0, 80, args.lmfit_sample))]
    fit.fit_peak(cube.centers, cube.counts[0, 0], window=window)     # warm-up
    t0 = time.perf_counter()
    worst = {"center": 0.0, "fwhm": 0.0, "area": 0.0}
    for r, c in sample:
        f = fit.fit_peak(cube.centers, cube.counts[r, c], window=window)
        for k in worst:
            worst[k] = max(worst[k], abs(getattr(peaks, k)[r, c] - getattr(f, k)) / getattr(f, k + "_err"))
    t_lmfit_pixel = (time.perf_counter() - t0) / len(sample)
    t_lmfit_cube = t_lmfit_pixel * npix

    theta = compton.PinholeGeometry().theta_map()
    compton.s_parameter_map(cube, 115.0, theta, background=peaks)     # warm-up
    t_s = median_time(lambda: compton.s_parameter_map(cube, 115.0, theta, background=peaks), args.repeats)

    print(f"cube {cube.shape[0]}x{cube.shape[1]}, {cube.counts.shape[2]} bins, window {window} keV = {nbins_window} bins; "
          f"{int(peaks.ok.sum())} of {npix} pixels fitted ok")
    print(f"fit_cube (numba, all pixels)      median {t_cube:8.3f} s   target <= 0.5 s   {'PASS' if t_cube <= 0.5 else 'FAIL'}")
    print(f"lmfit fit_peak per pixel          mean over {len(sample)} pixels {1e3 * t_lmfit_pixel:8.2f} ms "
          f"-> {t_lmfit_cube:8.1f} s for the cube")
    ratio = t_lmfit_cube / t_cube
    print(f"speed-up fit_cube / lmfit         {ratio:8.0f} x   target >= 100 x   {'PASS' if ratio >= 100 else 'FAIL'}")
    print("agreement with lmfit on the sample (max |numba - lmfit| / lmfit standard error): "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    print(f"s_parameter_map 80x80 (theta per pixel, fitted background) median {t_s:8.4f} s   target <= 0.2 s   "
          f"{'PASS' if t_s <= 0.2 else 'FAIL'}")


if __name__ == "__main__":
    main()
