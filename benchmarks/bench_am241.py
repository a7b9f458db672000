"""Am-241 calibration of 6,400 pixels (one 80 x 80 module): time and accuracy.

Target (issue): at most 10 s for 6,400 pixels on the 2-core reference machine.

Measured in one run on the same synthetic cube (2,000 photopeak counts per pixel,
+-20 % gain spread, 4-ADU bins; generator from tests/test_calibration_am241.py):
- hexspec.calibration.calibrate_am241 on all 6,400 pixels (median of 3 runs after a
  warm-up call that compiles or loads the numba kernels);
- baseline: lmfit (the library a per-pixel script would use) fitting the same
  photopeak model in the photopeak window of 20 pixels, extrapolated to 6,400 pixels
  and to the photopeak alone (the calibration fits five lines per pixel).
Prints the ratio and the recovered-versus-true accuracy.

Run: python benchmarks/bench_am241.py [--pixels-side 80] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hexspec as hx  # noqa: E402
from test_calibration_am241 import synthetic_am241_cube  # noqa: E402


def lmfit_photopeak_seconds(cube, truth, n_pixels):
    """Seconds per pixel for an lmfit fit of Gaussian + tail + linear background in the photopeak window."""
    import lmfit
    from scipy.special import erfc

    def model(x, a_g, a_t, b0, b1, mu, sigma, beta):
        g = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        t = np.exp((x - mu) / beta + sigma ** 2 / (2 * beta ** 2)) * erfc(((x - mu) / sigma + sigma / beta) / np.sqrt(2)) / (2 * beta)
        return a_g * g + a_t * t + b0 + b1 * (x - mu)

    m = lmfit.Model(model)
    centers = cube.centers
    flat = cube.counts.reshape(-1, cube.counts.shape[2])
    g = truth["gradients"].ravel()
    c = truth["intercepts"].ravel()
    t0 = time.perf_counter()
    for p in range(n_pixels):
        lo, hi = (54.5 - c[p]) / g[p], (62.0 - c[p]) / g[p]
        sel = (centers >= lo) & (centers < hi)
        y = flat[p, sel].astype(float)
        x = centers[sel]
        mu0 = (59.54 - c[p]) / g[p]
        s0 = 0.34 / g[p]
        params = m.make_params(a_g=y.sum() * 4 * 0.8, a_t=y.sum() * 4 * 0.2, b0=1, b1=0, mu=mu0, sigma=s0, beta=2 * s0)
        params["sigma"].min = 0.2 * s0
        params["beta"].min = 0.3 * s0
        m.fit(y, params, x=x, weights=1 / np.sqrt(np.maximum(y, 1)))
    return (time.perf_counter() - t0) / n_pixels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels-side", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    side = args.pixels_side

    t0 = time.perf_counter()
    cube, truth = synthetic_am241_cube(shape=(side, side), seed=1, noise_frames=2000)
    print(f"synthetic cube {side} x {side} pixels, {cube.counts.shape[2]} bins, {int(cube.counts.sum()):,} counts "
          f"({time.perf_counter() - t0:.1f} s to draw)")

    small, _ = synthetic_am241_cube(shape=(3, 3), seed=2, noise_frames=200)
    t0 = time.perf_counter()
    hx.calibration.calibrate_am241(small)
    print(f"warm-up (numba compile or cache load): {time.perf_counter() - t0:.1f} s")

    times = []
    cal = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cal = hx.calibration.calibrate_am241(cube)
        times.append(time.perf_counter() - t0)
    t_cal = statistics.median(times)
    n = side * side
    print(f"calibrate_am241, {n} pixels: median {t_cal:.2f} s over {args.repeats} runs "
          f"({', '.join(f'{t:.2f}' for t in times)} s); target <= 10 s for 6,400 pixels")

    per_pixel = lmfit_photopeak_seconds(cube, truth, 20)
    t_lmfit = per_pixel * n
    print(f"lmfit baseline, photopeak only: {per_pixel * 1e3:.1f} ms per pixel -> {t_lmfit:.1f} s for {n} pixels")
    print(f"speed-up over lmfit (photopeak only, vs all five lines here): {t_lmfit / t_cal:.0f}x")

    g = cal.good
    print(cal.summary())
    print(f"good pixels {cal.n_good} of {n}; rejected {cal.reason_counts()}")
    dg = np.abs(cal.gradients[g] / truth["gradients"][g] - 1)
    dc = np.abs(cal.intercepts[g] - truth["intercepts"][g])
    df = np.abs(cal.fwhm_kev[g] / truth["fwhm_kev"][g] - 1)
    print(f"gradient |rel. error|: median {np.median(dg):.2e}, max {dg.max():.2e} (required < 5e-3)")
    print(f"intercept |error|: median {np.median(dc):.3f} keV, max {dc.max():.3f} keV (required < 0.3)")
    print(f"FWHM |rel. error|: median {np.median(df):.3f}, max {df.max():.3f} (required < 0.10)")


if __name__ == "__main__":
    main()
