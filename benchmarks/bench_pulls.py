"""Pulls of the two routes to Li content 1 - x over simulated seeds: (recovered - true) / error.

Default (through the full chain, as `hexspec process` and `hexspec sparam` see it): one
simulated 40 x 80 detector (hexspec.sim.HexitecSimulator, fixed detector seed) is
calibrated once with an Am-241 flood (raw frames -> calibrate_am241); each seed then
measures a uniform cathode of a different Li content (ComptonSource) as raw frames, which
go through EventExtractor (charge-sharing discrimination, next-frame rejection, the
calibration's gains, its bad pixels switched off) and SpectrumAccumulator into a cube.
Both routes work on 2 x 2 blocks of 20 x 40 pixels:

- forward model: hexspec.compton_forward.fit_li_blocks with the detector response of
  the Am-241 calibration (hexspec.detector_response.DetectorResponse.from_calibration),
  on the pixels whose eight neighbours are all good (full_neighbourhood), with the
  next-frame correction's two effects: neighbours hit in the previous frame cannot reject a
  shared event (probability from the measurement's own hits per pixel and frame), and the
  detector's known 1 % of spilled pulses read a uniform fraction of their energy
  (``--old-response`` leaves both out, for comparison);
- S route: S with the sideband background (hexspec.compton.s_parameter_blocks) turned into
  1 - x by a flat field (LithiumCalibrationMap, common slope) from two references of known
  Li content (0 and 1), simulated afresh for each seed on the same detector and processed
  the same way (fresh references keep the seeds' pulls independent; their errors are
  propagated into 1 - x).

``--smeared`` is the older, faster check without the detector: simulator photons smeared
by a 0.8 keV FWHM Gaussian, forward model with the Gaussian line shape, S route through the
free-atom theory of the same blocks.

Prints, per route, the mean and width (standard deviation) of the pulls (both should have
mean within 0.3 and width within 0.8-1.25), the median error of 1 - x per block and the mean
bias. Run: python benchmarks/bench_pulls.py [--seeds 20] [--smeared]
"""

from __future__ import annotations

import argparse
import dataclasses
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
SPILL = 0.01          # the simulated detector's next-frame probability (its default), known to the forward model


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


def run_smeared(args):
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
        cube = sample_cube(src, args.photons or 1_500_000, rng)
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
          f"{args.photons or 1_500_000:.3g} photons per seed, smeared source photons, {time.perf_counter() - t0:.0f} s")
    summary(pulls, errors, {k: [] for k in pulls})


def summary(pulls, errors, biases):
    for name, p in pulls.items():
        p = np.asarray(p)
        n = p.size
        sd = p.std(ddof=1)
        line = (f"{name:14s}: pull mean {p.mean():+.3f} (+- {sd / math.sqrt(n):.3f}), width {sd:.3f} "
                f"(+- {sd / math.sqrt(2 * (n - 1)):.3f}), n = {n}; median error of 1-x per block "
                f"{np.median(errors[name]):.3f}")
        if len(biases[name]):
            b = np.asarray(biases[name])
            line += f"; mean bias of 1-x {b.mean():+.4f} +- {b.std(ddof=1) / math.sqrt(b.size):.4f}"
        ok = abs(p.mean()) < 0.3 and 0.8 < sd < 1.25
        print(line + f"; {'within' if ok else 'OUTSIDE'} mean < 0.3 and 0.8 < width < 1.25")


# ------------------------------------------------------------------ through the full chain

def calibrate_detector(det, detector_seed, frames, photons_per_frame):
    """Am-241 flood of the detector as raw frames -> per-pixel calibration (as `hexspec calibrate`)."""
    sim = hx.sim.HexitecSimulator(hx.sim.Am241Source(), detector=det, photons_per_frame=photons_per_frame,
                                  seed=10_000 + detector_seed, detector_seed=detector_seed)
    spectra = hx.calibration.FrameSpectra(det.shape)
    for start in range(0, frames, 10_000):
        batch, _ = sim.frames(min(10_000, frames - start))
        spectra.add(batch)
    return hx.calibration.calibrate_am241(spectra.cube)


def chain_cube(source, cal, det, photons, photons_per_frame, seed, detector_seed, stats=None):
    """Raw frames of ``source`` -> events (csd, next-frame) -> keV cube, as `hexspec process --calibration`.

    ``stats`` (a dict, optional) receives the event extractor's counts (hits per frame).
    """
    sim = hx.sim.HexitecSimulator(source, detector=det, photons_per_frame=photons_per_frame, seed=seed,
                                  detector_seed=detector_seed, next_frame_probability=SPILL)
    # the calibration's rejected pixels are switched off with a threshold at the top of the ADC
    cfg = hx.ProcessingConfig(threshold=np.where(cal.good, 0.0, 16383.0), gradients=cal.gradients,
                              intercepts=cal.intercepts, charge_sharing="csd", bins=hx.EnergyBins(0.0, 200.0, 0.25))
    extractor = hx.EventExtractor(cfg, shape=det.shape)
    acc = hx.SpectrumAccumulator(cfg, det.shape)
    frames = int(math.ceil(photons / photons_per_frame))
    for start in range(0, frames, 10_000):
        batch, _ = sim.frames(min(10_000, frames - start))
        acc.add(extractor(batch))
    if stats is not None:
        stats.update(extractor.stats)
    return acc.cube


def run_chain(args):
    from hexspec.calibration.lithium import LithiumCalibrationMap
    from hexspec.detector_response import DetectorResponse, full_neighbourhood, previous_hit_probability

    det = DetectorSpec(rows=40, cols=80)
    geom = compton.PinholeGeometry(detector=det)
    theta = geom.theta_map()
    photons = args.photons or 2_000_000
    ppf = 0.01 * det.n_pixels                       # 1 % occupancy, as in a Compton measurement
    t0 = time.perf_counter()
    cal = calibrate_detector(det, args.detector_seed, 200_000, ppf)
    response = DetectorResponse.from_calibration(cal, free_slope=args.free_slope,
                                                 spill_probability=0.0 if args.old_response else SPILL)
    inner = full_neighbourhood(cal.good)
    print(f"Am-241 calibration: {cal.summary()}; tail share {np.nanmedian(cal.tail_fraction):.3f}, length "
          f"{np.nanmedian(cal.tail_length_kev):.2f} keV; threshold {response.threshold_kev:.2f} keV; forward model on "
          f"{int(inner.sum())} of {det.n_pixels} pixels ({time.perf_counter() - t0:.0f} s)", flush=True)
    names = ("forward model", "S route")
    pulls, errors, biases = ({k: [] for k in names} for _ in range(3))
    deviance = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        li_true = float(rng.uniform(0.1, 0.9))
        stats = {}
        cube = chain_cube(hx.sim.ComptonSource(e1_kev=E1, li_content=li_true, geometry=geom), cal, det, photons,
                          ppf, 2 * seed + 1, args.detector_seed, stats)
        # the measurement's own occupancy (rounded so that the response's Monte Carlo is reused across seeds)
        p_prev = 0.0 if args.old_response else round(previous_hit_probability(stats, int(cal.good.sum())), 4)
        fwd = compton_forward.fit_li_blocks(cube, E1, theta, block=BLOCK, mask=inner,
                                            response=dataclasses.replace(response, previous_hit_probability=p_prev))
        deviance.extend(fwd.deviance_per_dof.ravel().tolist())
        s_opts = dict(block=BLOCK, background="sideband", resolution_fwhm_kev=response.fwhm_kev)
        refs = [compton.s_parameter_blocks(
            chain_cube(hx.sim.ComptonSource(e1_kev=E1, li_content=li, geometry=geom), cal, det,
                       args.reference_factor * photons, ppf, 100_000 + 2 * seed + k, args.detector_seed),
            E1, theta, **s_opts) for k, li in enumerate((0.0, 1.0))]
        lcal = LithiumCalibrationMap.fit([r.s for r in refs], [r.s_err for r in refs], [0.0, 1.0], block=BLOCK)
        lmap = lcal.apply(compton.s_parameter_blocks(cube, E1, theta, **s_opts))
        for name, li, err in (("forward model", fwd.li, fwd.li_err), ("S route", lmap.li, lmap.li_err)):
            pulls[name].extend(((li - li_true) / err).ravel().tolist())
            errors[name].extend(err.ravel().tolist())
            biases[name].extend((li - li_true).ravel().tolist())
        print(f"seed {seed:2d}: 1-x true {li_true:.3f}; forward {np.round(fwd.li.ravel(), 3)} +- "
              f"{np.median(fwd.li_err):.3f} (deviance/dof {np.median(fwd.deviance_per_dof):.2f}); S route "
              f"{np.round(lmap.li.ravel(), 3)} +- {np.median(lmap.li_err):.3f}", flush=True)
    print(f"\n{args.seeds} seeds x {BLOCK and fwd.li.size} blocks of {BLOCK[0]}x{BLOCK[1]} pixels through the chain "
          f"(frames -> events -> spectra), {photons:.3g} photons per seed, references {args.reference_factor}x that, "
          f"{time.perf_counter() - t0:.0f} s; forward-model deviance/dof median {np.median(deviance):.2f}; response "
          f"{'without' if args.old_response else 'with'} the next-frame terms (last p_prev {p_prev}, spill "
          f"{response.spill_probability})")
    summary(pulls, errors, biases)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--photons", type=int, default=None,
                    help="photons per seed (default 2e6 through the chain, 1.5e6 smeared)")
    ap.add_argument("--smeared", action="store_true", help="smeared source photons instead of the detector chain")
    ap.add_argument("--reference-factor", type=float, default=2.0,
                    help="chain: photons of each reference over those of a measurement (default 2)")
    ap.add_argument("--free-slope", action="store_true", help="chain: free the slope of ln efficiency in the forward fit")
    ap.add_argument("--detector-seed", type=int, default=7)
    ap.add_argument("--old-response", action="store_true",
                    help="chain: leave the next-frame correction's effects (dropped neighbours, spill) out of the response")
    args = ap.parse_args()
    (run_smeared if args.smeared else run_chain)(args)


if __name__ == "__main__":
    main()
