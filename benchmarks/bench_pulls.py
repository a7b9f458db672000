"""Pulls of the two routes to Li content 1 - x over simulated seeds: (recovered - true) / error.

Each seed draws a uniform cathode of a different Li content from the simulator's photon
source (hexspec.sim.ComptonSource: free-atom profiles at each pixel's angle, lines,
elastic line and flat background), smears the energies with a 0.8 keV FWHM Gaussian
resolution and bins them per pixel of a 40 x 80 detector (the detector chain itself is
left out: its charge-sharing losses are not part of either model). Both routes work on
2 x 2 blocks of 20 x 40 pixels:

- forward model: hexspec.compton_forward.fit_li_blocks fits 1 - x to each block's spectrum;
- S route: S with the sideband background (hexspec.compton.s_parameter_blocks), turned into
  1 - x by the free-atom theory of the same blocks (S is a ratio of two linear functions of
  1 - x, inverted exactly; its slope carries the S error into 1 - x).

Prints the mean and width (standard deviation) of the pulls of each route; both should have
mean within 0.3 and width within 0.8-1.25. Run: python benchmarks/bench_pulls.py [--seeds 20]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import hexspec as hx
from hexspec import compton, compton_forward
from hexspec.detector import DetectorSpec

EDGES = np.arange(0.0, 200.0001, 0.25)
E1 = 115.0
FWHM = 0.8
BLOCK = (20, 40)


def sample_cube(src, n, rng):
    rows, cols = src.shape
    pix = rng.integers(0, rows * cols, n)
    e = src.sample_pixels(pix, rng) + rng.normal(0.0, FWHM / compton_forward.FWHM_PER_SIGMA, n)
    b = np.searchsorted(EDGES, e) - 1
    good = (b >= 0) & (b < EDGES.size - 1)
    nb = EDGES.size - 1
    counts = np.bincount(pix[good] * nb + b[good], minlength=rows * cols * nb)
    return hx.SpectralCube(counts.reshape(rows, cols, nb).astype(np.uint32), EDGES)


def theory_windows(theta, shape):
    """Noiseless S_L, S_H sums per block for 1 - x = 0 and the change per unit 1 - x."""
    t_li, t_host = compton_forward.templates(EDGES, E1, theta.ravel(), FWHM)
    out = []
    for li in (0.0, 1.0):
        cube = hx.SpectralCube((li * t_li + t_host).reshape(shape + (-1,)), EDGES)
        m = compton.s_parameter_blocks(cube, E1, theta, block=BLOCK, min_counts=0)
        out.append((m.s_low, m.s_high))
    (l0, h0), (l1, h1) = out
    return l0, h0, l1 - l0, h1 - h0


def li_from_s(s, s_err, l0, h0, dl, dh):
    li = (l0 - s * h0) / (s * dh - dl)
    dli_ds = (-h0 * (s * dh - dl) - (l0 - s * h0) * dh) / (s * dh - dl) ** 2
    return li, np.abs(dli_ds) * s_err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--photons", type=int, default=1_500_000, help="photons per seed (default 1.5e6)")
    args = ap.parse_args()
    det = DetectorSpec(rows=40, cols=80)
    geom = compton.PinholeGeometry(detector=det)
    theta = geom.theta_map()
    windows = theory_windows(theta, det.shape)
    pulls = {"forward model": [], "S route": []}
    errors = {"forward model": [], "S route": []}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        li_true = float(rng.uniform(0.1, 0.9))
        src = hx.sim.ComptonSource(e1_kev=E1, li_content=li_true, geometry=geom)
        cube = sample_cube(src, args.photons, rng)
        fwd = compton_forward.fit_li_blocks(cube, E1, theta, block=BLOCK, resolution_fwhm_kev=FWHM)
        smap = compton.s_parameter_blocks(cube, E1, theta, block=BLOCK, background="sideband",
                                          resolution_fwhm_kev=FWHM)
        li_s, li_s_err = li_from_s(smap.s, smap.s_err, *windows)
        for name, li, err in (("forward model", fwd.li, fwd.li_err), ("S route", li_s, li_s_err)):
            pulls[name].extend(((li - li_true) / err).ravel().tolist())
            errors[name].extend(err.ravel().tolist())
        print(f"seed {seed:2d}: 1-x true {li_true:.3f}; forward {np.round(fwd.li.ravel(), 3)} "
              f"+- {np.median(fwd.li_err):.3f}; S route {np.round(li_s.ravel(), 3)} +- {np.median(li_s_err):.3f}",
              flush=True)
    print(f"\n{args.seeds} seeds x {np.prod(windows[0].shape)} blocks of {BLOCK[0]}x{BLOCK[1]} pixels, "
          f"{args.photons:.3g} photons per seed, {time.perf_counter() - t0:.0f} s")
    for name, p in pulls.items():
        p = np.asarray(p)
        n = p.size
        print(f"{name:14s}: pull mean {p.mean():+.3f} (+- {p.std(ddof=1) / math.sqrt(n):.3f}), "
              f"width {p.std(ddof=1):.3f} (+- {p.std(ddof=1) / math.sqrt(2 * (n - 1)):.3f}), n = {n}, "
              f"median error of 1-x {np.median(errors[name]):.3f}; "
              f"{'within' if abs(p.mean()) < 0.3 and 0.8 < p.std(ddof=1) < 1.25 else 'OUTSIDE'} "
              f"mean < 0.3 and 0.8 < width < 1.25")


if __name__ == "__main__":
    main()
