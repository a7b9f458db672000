"""The simulated correlative experiment behind ``hexspec demo``, stage by stage.

1. Sample (:class:`hexspec.sim.cell.VirtualCathode`): a 1 mm NMC811 cathode with vertical
   pore channels, porosity falling from about 33 % at the separator to about 10 % at the
   current collector, with a lateral tilt; charged and discharged, with Li content tied to
   the local porosity (:func:`li_content`).
2. XCT: parallel-beam projections of the phantom with Poisson noise, reconstructed by
   ``hexspec.tomo.reconstruct``, segmented by ``hexspec.tomo.segment_electrode`` (:func:`segment`).
3. XCS-I: for each state and each of three depth regions, the Compton camera images that
   slab of the cathode (PHYSICS.md sections 1-3): every photon is simulated as frames by
   ``hexspec.sim.HexitecSimulator`` and processed by ``EventExtractor`` and
   ``SpectrumAccumulator``, as ``hexspec process`` does. Three references of uniform, known
   Li content are measured on the same detector over the same footprint.
4. Analysis of every cube: theta per pixel from the set-up (PinholeGeometry), Compton
   profiles with the sideband background removed (as ``hexspec sparam`` by default), S per
   pixel and per region (eq. 4) from one window table per cube; S -> 1 - x with the line
   through the references' S over the same pixels, each reference pixel weighted to the
   measurement's counts (a flat-field calibration, eq. 5).
5. Correlation (``hexspec.tomo.correlate``): XCT porosity per depth region registered onto
   the Compton image, S and Li against porosity per region and pixel by pixel.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .compton.sparameter import window_table
from .compton.windows import COUNTS_HIGH, COUNTS_LOW, COV_LOW_HIGH, S_HIGH, S_LOW, VAR_HIGH, VAR_LOW, ratio
from .errors import ConfigError

E1_KEV = 115.0
FIT_WINDOW_KEV = (88.5, 101.0)      # clear of the Pb K-beta2 line at 87.3 keV and of the elastic line
REFERENCE_LI = (0.20, 0.575, 0.95)
#: Li content 1 - x = a + b * local porosity per state: delithiation goes furthest where the
#: electrolyte reaches best (high porosity, near the separator).
STATES = {"discharged": (0.97, -0.35), "charged": (0.58, -1.0)}
N_REGIONS = 3
#: Pixels per block of the Li-porosity scatter (1.07 x 1.07 mm at the sample): single pixels
#: hold too few counts for a useful S.
BLOCK = (4, 4)
#: Pixels of a depth region: XCT electrode fraction (registered onto the Compton grid) at least this.
MIN_ELECTRODE_FRACTION = 0.95
#: Background under the Compton profile in every S: the sideband estimate that ``hexspec sparam``
#: uses by default (hexspec.compton.sideband). The peak fit's straight line takes part of the
#: core electrons' wide profile for background by an amount that depends on the pixel's angle
#: and on its profile, i.e. on its Li content.
BACKGROUND = "sideband"


@dataclass(frozen=True)
class Exposure:
    """Photons of one Compton measurement: ``frames`` frames of ``photons_per_frame`` (mean) each."""

    frames: int
    photons_per_frame: float
    xct_angles: int


# 1,024-frame multiples: the simulator's blocks. FULL reaches a Li error per region below 0.05.
FULL = Exposure(frames=240 * 1024, photons_per_frame=100.0, xct_angles=360)
QUICK = Exposure(frames=24 * 1024, photons_per_frame=100.0, xct_angles=180)


def li_content(state, porosity):
    """Li content 1 - x of a state at a local porosity (clipped to [0, 1])."""
    a, b = STATES[state]
    return np.clip(a + b * np.asarray(porosity, dtype=np.float64), 0.0, 1.0)


def processing_config(sim):
    """The processing of every measurement: the simulator's true gains stand in for an Am-241 calibration."""
    import hexspec as hx
    # 80 ADU threshold (PHYSICS.md section 5); charge-sharing addition of 2-pixel clusters,
    # larger clusters excluded (as in the reference work, section 1).
    return hx.ProcessingConfig(threshold=80.0, gradients=sim.gradients, intercepts=sim.intercepts, next_frame=True,
                               charge_sharing="csa", max_cluster_size=2, bins=hx.EnergyBins(0.0, 200.0, 0.25))


def measure(li_map, flux, geometry, exposure, seed, detector_seed, progress=None):
    """One Compton measurement through frames: returns (cube, record of what was simulated and counted)."""
    import hexspec as hx

    source = hx.sim.ComptonSource(e1_kev=E1_KEV, li_content=li_map, geometry=geometry, flux=flux)
    sim = hx.sim.HexitecSimulator(source, detector=geometry.detector, photons_per_frame=exposure.photons_per_frame,
                                  seed=seed, detector_seed=detector_seed)
    cfg = processing_config(sim)
    shape = geometry.detector.shape
    extractor = hx.EventExtractor(cfg, shape=shape)
    acc = hx.SpectrumAccumulator(cfg, shape)
    photons = absorbed = done = 0
    batch_frames = 4 * 1024
    sizes = [min(batch_frames, exposure.frames - a) for a in range(0, exposure.frames, batch_frames)]
    # The next batch is simulated while this one is extracted (both release the GIL); the
    # simulator sees the same calls in the same order, so the result does not change.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(sim.frames, sizes[0]) if sizes else None
        for j in range(len(sizes)):
            batch, truth = pending.result()
            if j + 1 < len(sizes):
                pending = pool.submit(sim.frames, sizes[j + 1])
            photons += truth.n_incident
            absorbed += len(truth.photons)
            acc.add(extractor(batch))
            done += len(batch)
            if progress is not None:
                progress(done, exposure.frames)
    cube = acc.cube
    record = {"frames_simulated": int(done), "photons_simulated": int(photons), "photons_absorbed": int(absorbed),
              "events_counted": int(cube.counts.sum()), "events_extracted": int(acc.n_events)}
    return cube, record, cfg


def smooth_theta(peaks, e1_kev):
    """theta per pixel from fitted centres, regularised by a weighted quadratic surface in (row, col).

    Single-pixel centres scatter by a few tenths of a degree; the pinhole geometry makes
    theta a smooth function of position, so a surface fit keeps the geometry and drops the
    noise. Pixels without a good fit (outside the cathode) take the surface's value.
    """
    from . import compton

    theta_fit = compton.theta_map_from_peaks(peaks, e1_kev)
    ec = peaks.center
    cos_t = np.cos(theta_fit)
    sin_t = np.sqrt(np.maximum(1.0 - cos_t * cos_t, 1e-12))
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_err = compton.MC2_KEV / (ec * ec * sin_t) * peaks.center_err
    rows, cols = peaks.shape
    r, c = np.meshgrid((np.arange(rows) - rows / 2) / rows, (np.arange(cols) - cols / 2) / cols, indexing="ij")
    design = np.stack([np.ones_like(r), c, r, c * c, r * r, c * r], axis=-1)
    good = np.isfinite(theta_fit) & np.isfinite(theta_err) & (theta_err > 0) & np.asarray(peaks.ok, bool)
    model = np.full((rows, cols), np.nan)
    for _ in range(2):
        a = design[good]
        w = 1.0 / theta_err[good]
        coef, *_ = np.linalg.lstsq(a * w[:, None], theta_fit[good] * w, rcond=None)
        model = design @ coef
        pull = (theta_fit - model) / theta_err
        good = good & (np.abs(np.nan_to_num(pull, nan=np.inf)) < 4.0)
    return model


def analyse(cube, theta=None):
    """theta per pixel (``theta``, else from this cube's peak fits) and the S map of one cube."""
    from . import compton, fit

    peaks = None
    if theta is None:
        # Poisson maximum likelihood: single pixels hold well under one count per bin.
        peaks = fit.fit_cube(cube, FIT_WINDOW_KEV, method="ml")
        theta = smooth_theta(peaks, E1_KEV)
    smap = compton.s_parameter_map(cube, E1_KEV, theta, background=BACKGROUND)
    # One window table per cube, summed over any set of pixels below (the sideband estimate
    # costs about a second per cube; the regions and their calibrations sum it 30 times).
    table = window_table(cube, E1_KEV, theta, smap.low, smap.high, smap.factor, BACKGROUND, None)
    return {"peaks": peaks, "theta": theta, "smap": smap, "table": table,
            "image": cube.image(*FIT_WINDOW_KEV).astype(np.float64)}


def window_counts(analysis):
    """Raw counts per pixel in the two S windows (rows, cols); 0 where the pixel has no S row."""
    t = analysis["table"]
    return np.nan_to_num(t[:, COUNTS_LOW] + t[:, COUNTS_HIGH]).reshape(analysis["smap"].s.shape)


def region_s(analysis, mask, weights=None):
    """S and its error from the spectra summed over ``mask`` (eq. 4 on the region's counts).

    ``weights`` (rows, cols), optional, multiply each pixel's spectrum before the sum.
    Pixels without an angle or a background estimate are left out, as in
    :func:`hexspec.compton.s_parameter_region`.
    """
    t = analysis["table"]
    m = np.asarray(mask, dtype=bool).reshape(-1)
    rows = t[m]
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)[m][:, None]
        variance = np.isin(np.arange(t.shape[1]), (VAR_LOW, VAR_HIGH, COV_LOW_HIGH))
        rows = rows * np.where(variance, w * w, w)
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    sums = rows.sum(axis=0)
    if not (sums[S_LOW] > 0 and sums[S_HIGH] > 0):
        raise ConfigError(f"region S: no positive signal in both windows over {len(rows)} pixels")
    s, s_err = ratio(sums)
    return float(s), float(s_err)


# ----------------------------------------------------------------------------- XCT

def segment(volume_per_mm):
    """Pores and electrode of a reconstructed cathode: hexspec.tomo.segment_electrode (PHYSICS.md section 6).

    The reference chain without two of its filters: no 3x3x3 median, since the virtual
    cathode's narrowest channels are two or three voxels wide and a median erases them
    (porosity 1-2 % low near the current collector), and no unsharp mask, whose overshoot
    at the pore walls makes pores of solid voxels (porosity about 1.5 % high).

    Returns
    -------
    (pores, electrode) : bool arrays (z, y, x)
    """
    from .tomo.segment import PORE, segment_electrode

    seg = segment_electrode(np.asarray(volume_per_mm, dtype=np.float32), median=False, unsharp=None)
    return seg.labels == PORE, seg.electrode_mask


def reconstruct(proj, theta_rad, flat, dark):
    """Filtered back projection with hexspec.tomo.reconstruct; skimage's iradon where hexspec.tomo.rec is absent.

    Returns (volume (slices, N, N) in attenuation per voxel, name of the method used).
    """
    try:
        from .tomo import rec as tomo_rec
    except ModuleNotFoundError:
        tomo_rec = None
    if tomo_rec is not None:
        volume = tomo_rec.reconstruct(proj, theta_rad, flat=flat, dark=dark, center=None, ring_removal=False)
        return np.asarray(volume, dtype=np.float32), "hexspec.tomo.reconstruct"
    from skimage.transform import iradon
    line = -np.log(np.clip((proj - dark.mean(axis=0)) / (flat.mean(axis=0) - dark.mean(axis=0)), 1e-6, None))
    n = line.shape[2]
    slices = [iradon(line[:, k, :].T, theta=np.degrees(theta_rad), filter_name="ramp", circle=True, output_size=n)
              for k in range(line.shape[1])]
    return np.stack(slices).astype(np.float32), "skimage.transform.iradon (hexspec.tomo.rec not installed)"


def xct(cathode, exposure, seed):
    """Simulate, reconstruct and segment the cathode's XCT: returns dict of volumes and timings."""
    from .sim.cell import simulate_projections

    t0 = time.perf_counter()
    pores_true, electrode_true = cathode.volume()
    mu = cathode.attenuation(pores_true, electrode_true)
    theta = np.linspace(0.0, np.pi, exposure.xct_angles, endpoint=False)
    proj, flat, dark = simulate_projections(mu, theta, cathode.voxel_size_mm, seed=seed)
    t1 = time.perf_counter()
    rec, method = reconstruct(proj, theta, flat, dark)
    n = mu.shape[1]
    if rec.shape[1] != n:      # the detector is wider than the phantom's square: crop the centre
        a = (rec.shape[1] - n) // 2
        rec = rec[:, a:a + n, a:a + n]
    rec = rec / cathode.voxel_size_mm     # per voxel -> per mm
    t2 = time.perf_counter()
    pores, electrode = segment(rec)
    t3 = time.perf_counter()
    return {"pores_true": pores_true, "electrode_true": electrode_true, "projections": proj, "theta_rad": theta,
            "reconstruction": rec, "pores": pores, "electrode": electrode,
            "reconstruction_method": method,
            "seconds": {"projections": t1 - t0, "reconstruction": t2 - t1, "segmentation": t3 - t2}}


# ----------------------------------------------------------------------------- sample on the detector

def region_maps(cathode, pores, electrode, geometry, placement):
    """Per depth region, on the detector grid: porosity, electrode fraction and solid fraction (the flux).

    Returns dict of (regions, rows, cols) arrays and the region bounds.
    """
    from .sim.cell import pixel_average, to_detector
    from .tomo.correlate import region_bounds

    bounds = region_bounds(electrode, N_REGIONS)
    por, frac = [], []
    for a, b in bounds:
        e = electrode[a:b].sum(axis=0).astype(np.float64)
        p = (pores[a:b] & electrode[a:b]).sum(axis=0).astype(np.float64)
        inside = e > 0
        frac_vox = e / (b - a)
        por_vox = pixel_average(np.where(inside, p / np.where(inside, e, 1), 0.0), cathode, geometry, weights=e)
        frac_det = to_detector(pixel_average(frac_vox, cathode, geometry), cathode, geometry, placement)
        por_det = to_detector(por_vox, cathode, geometry, placement)
        frac.append(np.clip(frac_det, 0.0, 1.0))
        por.append(np.where(frac_det > 0.01, por_det, 0.0))
    por, frac = np.stack(por), np.stack(frac)
    return {"porosity": por, "electrode_fraction": frac, "solid": frac * (1.0 - por), "bounds": bounds}


# ----------------------------------------------------------------------------- the whole run

@dataclass
class DemoResult:
    """What :func:`run` returns: the summary records, per-measurement counts, correlations and timings."""

    records: list
    measurements: dict
    correlations: dict
    stage_seconds: dict
    info: dict


def run(out_dir, quick=False, seed=2024, say=print, progress=None):
    """Run the whole simulated experiment and write its outputs into ``out_dir`` (which must exist).

    Parameters
    ----------
    out_dir : Path
    quick : bool
        About ten times fewer photons and half the XCT angles (for tests; larger uncertainties).
    seed : int
        Everything (phantom, XCT noise, every photon) follows from it.
    say : callable
        Receives the lines to print.
    progress : callable(label, done, total), optional
        Called as frames are simulated.

    Returns
    -------
    DemoResult
    """
    from . import compton
    from .io import hdf5
    from .sim.cell import Placement, VirtualCathode
    from .tomo.correlate import correlate
    from .tomo.io import write_volume

    exposure = QUICK if quick else FULL
    stage = {}
    geometry = compton.PinholeGeometry(d1_mm=160.0, d2_mm=150.0)
    shape = geometry.detector.shape
    cathode = VirtualCathode(seed=seed)
    placement = Placement()

    t = time.perf_counter()
    x = xct(cathode, exposure, seed + 1)
    stage.update({f"xct {k}": v for k, v in x["seconds"].items()})
    say(f"  XCT: {exposure.xct_angles} projections of {x['projections'].shape[1]} x {x['projections'].shape[2]} "
        f"pixels ({cathode.voxel_size_mm * 1e3:.1f} um), {x['reconstruction_method']}; segmented porosity "
        f"{x['pores'].sum() / max(x['electrode'].sum(), 1):.3f} (phantom {x['pores_true'].sum() / x['electrode_true'].sum():.3f})"
        f"  [{time.perf_counter() - t:.1f} s]")
    write_volume(out_dir / "xct.h5", x["reconstruction"], cathode.voxel_size_mm, name="reconstruction",
                 process_name="demo_reconstruction", process={"method": x["reconstruction_method"],
                                                              "angles": exposure.xct_angles},
                 extra={"pore_mask": x["pores"].astype(np.uint8), "electrode_mask": x["electrode"].astype(np.uint8),
                        "pore_mask_true": x["pores_true"].astype(np.uint8)}, units="1/mm", force=True)

    truth = region_maps(cathode, x["pores_true"], x["electrode_true"], geometry, placement)
    bounds = truth["bounds"]
    footprint = truth["electrode_fraction"][0]
    measurements = {}
    cubes = {}

    def one(name, li_map, flux, k):
        t0 = time.perf_counter()
        cube, rec, _ = measure(li_map, flux, geometry, exposure, seed=seed + 1000 + k, detector_seed=seed,
                               progress=None if progress is None else (lambda d, n: progress(name, d, n)))
        rec.update(seconds_frames_to_cube=round(time.perf_counter() - t0, 2))
        measurements[name] = rec
        cubes[name] = cube
        say(f"  {name}: {rec['frames_simulated']:,} frames, {rec['photons_simulated']:,} photons -> "
            f"{rec['events_counted']:,} events in the cube  [{rec['seconds_frames_to_cube']:.1f} s]")

    t = time.perf_counter()
    for k, li in enumerate(REFERENCE_LI):
        one(f"reference {li:.3f}", np.full(shape, li), footprint, k)
    stage["XCS-I references"] = time.perf_counter() - t
    t = time.perf_counter()
    li_true = {}
    for j, state in enumerate(STATES):
        for r in range(N_REGIONS):
            li_map = np.where(truth["electrode_fraction"][r] > 0.01, li_content(state, truth["porosity"][r]), 0.5)
            li_true[(state, r)] = li_map
            one(f"{state} region {r + 1}", li_map, truth["solid"][r], 10 + 3 * j + r)
    stage["XCS-I cathode"] = time.perf_counter() - t

    t = time.perf_counter()
    # The angles of the set-up (PinholeGeometry), as `hexspec sparam` takes them by default:
    # theta from the fitted peak centres comes out about 0.7 degree high (the pseudo-Voigt
    # centre of the asymmetric profile in a fixed window), which does not cancel against
    # the references: it moved the charged and discharged 1-x apart by about 0.1.
    theta = geometry.theta_map()
    for name, cube in list(cubes.items()):
        res = analyse(cube, theta)
        cubes[name] = (cube, res)
        hdf5.write_results(out_dir / "results.h5", "measurement_" + name.replace(" ", "_"),
                           {"counts_per_pixel": cube.counts.sum(axis=2, dtype=np.uint64), "compton_image": res["image"],
                            "s": res["smap"].s, "s_err": res["smap"].s_err, "theta_rad": res["theta"]},
                           dict(measurements[name]))
    stage["Compton analysis"] = time.perf_counter() - t

    t = time.perf_counter()
    records, correlations = [], {}
    for state in STATES:
        names = [f"{state} region {r + 1}" for r in range(N_REGIONS)]
        images = np.stack([cubes[n][1]["image"] for n in names])
        smaps = [cubes[n][1]["smap"] for n in names]
        # Pixel maps of 1-x for the scatter: one line through the references over the cathode's pixels.
        mask_all = footprint > 0.95
        cal_all = _calibration(cubes, mask_all)
        lmaps = [cal_all.apply(sm.s, sm.s_err) for sm in smaps]
        blocks = [cal_all.apply(compton.s_parameter_blocks(cubes[n][0], E1_KEV, cubes[n][1]["theta"], block=BLOCK,
                                                           background=BACKGROUND)) for n in names]
        corr = correlate(x["pores"], x["electrode"], cathode.voxel_size_mm, images,
                         np.stack([sm.s for sm in smaps]), np.stack([sm.s_err for sm in smaps]),
                         np.stack([lm.li for lm in lmaps]), np.stack([lm.li_err for lm in lmaps]),
                         n_regions=N_REGIONS, transform="rigid", block=BLOCK,
                         min_electrode_fraction=MIN_ELECTRODE_FRACTION,
                         block_values=(np.stack([b.li for b in blocks]), np.stack([b.li_err for b in blocks])))
        for r, row in enumerate(corr.regions):
            cube, res = cubes[names[r]]
            # The region's pixels from the registered XCT alone: corr.pixel_mask also asks for a
            # finite single-pixel S, a selection on the measurement's own counts that biased S
            # (by about one sigma at the --quick exposure, where many pixels sit near the cut).
            mask = corr.electrode_fraction[r] >= MIN_ELECTRODE_FRACTION
            # Region values from the summed spectra of the pixels used, calibrated by the
            # references' S over the very same pixels (flat field).
            s, s_err = region_s(res, mask)
            cal = _calibration(cubes, mask, window_counts(res))
            li, li_err = float(cal(s)), float(cal.uncertainty(s, s_err))
            row.s, row.s_err, row.li, row.li_err = s, s_err, li, li_err
            flux = truth["solid"][r]
            w = flux * mask
            a, b = bounds[r]
            por_true = float((x["pores_true"][a:b] & x["electrode_true"][a:b]).sum() / x["electrode_true"][a:b].sum())
            records.append({"state": state, "region": r + 1, "depth_mm": [a * cathode.voxel_size_mm - cathode.voxel_size_mm,
                                                                         b * cathode.voxel_size_mm - cathode.voxel_size_mm],
                            "porosity_true": por_true, "porosity": row.porosity, "porosity_err": row.porosity_err,
                            "tortuosity": row.tortuosity, "s": s, "s_err": s_err,
                            "li_true": float(np.sum(w * li_true[(state, r)]) / np.sum(w)), "li": li, "li_err": li_err,
                            "pixels": int(mask.sum()), "shift_px": list(row.registration.shift_px),
                            "angle_deg": math.degrees(row.registration.angle_rad)})
        correlations[state] = corr
        hdf5.write_results(out_dir / "results.h5", f"{state}_correlation",
                           {"porosity": corr.porosity, "li": corr.li, "li_err": corr.li_err, "s": corr.s,
                            "compton_image": corr.compton_image, "pixel_mask": corr.pixel_mask.astype(np.uint8),
                            "li_true": np.stack([li_true[(state, r)] for r in range(N_REGIONS)]),
                            "porosity_true": truth["porosity"]},
                           {"fit": json.dumps(corr.fit.to_dict())})
    stage["registration and correlation"] = time.perf_counter() - t
    info = {"quick": bool(quick), "seed": int(seed), "e1_kev": E1_KEV, "fit_window_kev": list(FIT_WINDOW_KEV),
            "exposure": exposure.__dict__, "reference_li": list(REFERENCE_LI), "states": {k: list(v) for k, v in STATES.items()},
            "cathode": cathode.__dict__, "placement": placement.__dict__,
            "reconstruction_method": x["reconstruction_method"]}
    return DemoResult(records, measurements, correlations, stage, info)


def _calibration(cubes, mask, counts=None):
    """Line 1-x = a S + b through the references' S over ``mask``.

    ``counts`` (rows, cols), optional: the measurement's counts per pixel. Each reference
    pixel is then weighted by the ratio of those counts to its own, so that the references'
    S averages the pixels with the measurement's weights: S varies a little with a pixel's
    angle, and a cathode's counts follow its solid fraction while a reference's are uniform.
    """
    from .calibration.lithium import LithiumCalibration
    s, e = [], []
    for li in REFERENCE_LI:
        _, res = cubes[f"reference {li:.3f}"]
        weights = None
        if counts is not None:
            ref = window_counts(res)
            weights = np.where(ref > 0, counts / np.where(ref > 0, ref, 1.0), 0.0)
        v, err = region_s(res, mask, weights)
        s.append(v)
        e.append(err)
    return LithiumCalibration.fit(s, REFERENCE_LI, s_err=e)
