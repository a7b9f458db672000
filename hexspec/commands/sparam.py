"""`hexspec sparam`: S-parameter map (docs/physics.md eqs. 2-4) of a cube, optionally converted to Li content (eq. 5)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.outputs import add_force_option, check_output
from .common import add_option, add_quiet_option, check_writable, positive_int, read_kev_cube


def register(sub) -> None:
    p = sub.add_parser("sparam", help="S-parameter (and Li content) map of a spectral cube",
                       description="Compton profile S-parameter of every pixel, S = S_L / S_H with S_L the "
                                   "integral of J(p_z) over |p_z| < LOW and S_H over LOW < |p_z| < HIGH "
                                   "(docs/physics.md eqs. 2-4), using the scattering angle of each pixel. The fitted "
                                   "linear background of a peak fit is subtracted when one is given (--fits) or "
                                   "made (--energy-window-kev). With --lithium-cal, S is converted to Li content 1 - x "
                                   "(eq. 5). Writes /entry/results/s_parameter (and lithium, profile) and a PNG.")
    p.add_argument("cube", help="hexspec HDF5 file holding /entry/spectra (keV)")
    p.add_argument("--e1", type=float, default=115.0, metavar="KEV", help="incident energy in keV (default 115)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--theta", type=float, metavar="DEG", help="one scattering angle for every pixel, degrees")
    g.add_argument("--geometry", nargs=2, type=float, metavar=("D1_MM", "D2_MM"),
                   help="pinhole geometry: sample-pinhole and pinhole-detector distances in mm; theta per pixel "
                        "(docs/physics.md eq. 6). This is the default, with 160 150")
    g.add_argument("--theta-from-fits", action="store_true",
                   help="theta per pixel from the fitted Compton peak centres (needs --fits or --energy-window-kev)")
    p.add_argument("--beam-axis", choices=("cols", "rows"), default="cols", help="detector axis along the beam (default cols)")
    p.add_argument("--center-offset-mm", nargs=2, type=float, metavar=("U_MM", "V_MM"), default=(0.0, 0.0),
                   help="offset of the detector centre from the foot of the normal through the pinhole, along and "
                        "across the beam, mm (default 0 0)")
    p.add_argument("--fits", metavar="FITS.h5", help="peak fits from `hexspec fit` (for --theta-from-fits or "
                                                      "--background peak-fit)")
    add_option(p, "--energy-window-kev", aliases=("--fit-window",), dest="fit_window", nargs=2, type=float,
               metavar=("EMIN", "EMAX"), help="fit the peak now in this window (keV), for --theta-from-fits or --background peak-fit")
    p.add_argument("--fit-method", choices=("ml", "ls"), default="ml",
                   help="with --energy-window-kev: Poisson maximum likelihood or least squares (default ml)")
    p.add_argument("--background", choices=("sideband", "peak-fit", "none"), default=None,
                   help="background under the Compton profile. sideband (default, the right one): a flat "
                        "continuum per pixel from the energies beyond p_z = 7 a.u. up to E1 - 3.5 keV, with the "
                        "Compton tail there taken from free-atom profiles; it moves with each pixel's peak, so S "
                        "does not depend on where the pixel sits. peak-fit: the linear background of the "
                        "pseudo-Voigt fit (needs --fits or --energy-window-kev); it takes the wide Compton wings of the "
                        "core electrons for background, which raises S by 20-50%% depending on the peak's place "
                        "in the fit window (it moves with the scattering angle): for comparison only. none: no "
                        "subtraction (S about 1%% low with the simulator's flat background)")
    p.add_argument("--no-background", action="store_true", help="the same as --background none")
    p.add_argument("--resolution-fwhm-kev", type=float, default=0.8,
                   help="detector resolution (FWHM keV) for the sideband's Compton tail model (default 0.8)")
    p.add_argument("--block", nargs=2, type=positive_int, metavar=("ROWS", "COLS"),
                   help="S of blocks of ROWS x COLS pixels (each pixel's counts mapped to p_z with its own theta, "
                        "then summed), for data with too few counts per pixel (default: one S per pixel)")
    p.add_argument("--low", type=float, default=1.0, help="S_L window |p_z| < LOW a.u. (default 1)")
    p.add_argument("--high", type=float, default=5.0, help="S_H window LOW < |p_z| < HIGH a.u. (default 5)")
    p.add_argument("--factor", choices=("impulse", "jacobian"), default="impulse", help="profile factor of the Compton cross-section, impulse approximation or Jacobian (docs/physics.md eq. 3; default impulse)")
    p.add_argument("--min-counts", type=float, default=100, help="minimum counts in each window per pixel (default 100)")
    p.add_argument("--attenuation-factor", type=float, default=1.0,
                   help="multiply S by this sample-attenuation correction (1.015, 1.010, 1.005 for depth regions 1-3; default 1)")
    p.add_argument("--lithium-cal", metavar="CAL.json",
                   help="Li calibration (JSON): a LithiumCalibration line, or a per-pixel/per-block flat field "
                        "written by --save-lithium-cal; adds a 1-x map")
    p.add_argument("--reference", nargs=2, action="append", metavar=("REF.h5", "LI"), default=[],
                   help="a reference cube of known Li content 1-x measured on the same detector (repeat, at least "
                        "two contents): S of each pixel or block of the references gives that pixel's or block's "
                        "own calibration line, used for the 1-x map of CUBE")
    p.add_argument("--reference-slope", choices=("common", "per-cell"), default="common",
                   help="with --reference: one Li sensitivity (slope) for all pixels/blocks and an offset each "
                        "(default common; the slope is the same physics everywhere and needs all the reference counts), "
                        "or a whole line per pixel/block (needs references far longer than the measurement)")
    p.add_argument("--save-lithium-cal", metavar="CAL.json", help="with --reference: write the per-pixel/per-block "
                                                                  "calibration for later runs (--lithium-cal)")
    p.add_argument("--forward-model", action="store_true",
                   help="also fit 1-x with its error directly to each pixel's/block's spectrum (hexspec.compton_forward: "
                        "free-atom profiles at the pixel's angle, the detector response, flat background) into "
                        "/entry/results/lithium_forward. Give --calibration for spectra from a detector: without it "
                        "the line shape is a Gaussian of --resolution-fwhm-kev, right only for smeared source photons "
                        "(check deviance_per_dof, about 1 when the model fits)")
    p.add_argument("--calibration", metavar="CAL.h5",
                   help="with --forward-model: the Am-241 calibration (`hexspec calibrate`) the cube was processed "
                        "with; its FWHMs (as electronic noise), line-fit errors and thresholds give the line "
                        "shape, charge-sharing losses and efficiency of events kept by charge-sharing "
                        "discrimination (`process --charge-sharing csd`, the default), and only pixels whose "
                        "eight neighbours are all good are fitted")
    p.add_argument("--threshold", type=float, default=0.0, metavar="ADU",
                   help="with --calibration: the hit threshold the cube was processed with, ADU (default 0)")
    p.add_argument("--spill-probability", type=float, metavar="P",
                   help="with --calibration: share of pulses that spill into the next frame (default: estimated from "
                        "the next-frame removals beyond chance that `hexspec process` stored in CUBE, a lower bound)")
    p.add_argument("--target-error", type=float, default=0.01,
                   help="relative S error a useful result needs, for the counts advice (default 0.01)")
    p.add_argument("-o", "--output", required=True, help="output hexspec HDF5 file (with --force, results are added if it exists)")
    add_force_option(p)
    p.add_argument("--png", help="PNG of the maps (default: OUTPUT with .png; the profile goes to *_profile.png)")
    add_quiet_option(p)
    p.set_defaults(func=run)


def _background_choice(args, peaks):
    choice = "none" if args.no_background else args.background
    if choice is None:
        choice = "sideband"
    if choice == "peak-fit":
        if peaks is None:
            raise ConfigError("--background peak-fit needs peak fits: give --fits FITS.h5 or --energy-window-kev EMIN EMAX")
        return choice, peaks
    return choice, (None if choice == "none" else "sideband")


def _s_map(compton, cube, args, theta, background):
    options = dict(pz_window_au=(args.low, args.high), factor=args.factor, background=background,
                   min_counts=args.min_counts, attenuation_factor=args.attenuation_factor,
                   resolution_fwhm_kev=args.resolution_fwhm_kev)
    if args.block:
        return compton.s_parameter_blocks(cube, args.e1, theta, block=tuple(args.block), **options)
    return compton.s_parameter_map(cube, args.e1, theta, **options)


def counts_advice(smap, n_pixels_per_cell, unit, target_error, cube_shape):
    """One line: counts per pixel in the S windows against what a relative S error of ``target_error`` needs."""
    counts = smap.counts_low + smap.counts_high
    per_pixel = float(np.median(counts)) / n_pixels_per_cell
    # the relative error of S scales as k / sqrt(window counts); k from the cells that have an S
    with np.errstate(divide="ignore", invalid="ignore"):
        k = smap.s_err / smap.s * np.sqrt(counts)
    k = k[np.isfinite(k) & smap.ok]
    k_med = float(np.median(k)) if k.size else 2.0          # about 2 for these windows and NMC811 profiles
    needed = (k_med / target_error) ** 2
    msg = (f"{per_pixel:.3g} counts per pixel in the S windows; an S with {100 * target_error:g}% error needs "
           f"about {needed:.3g} counts per {unit}")
    if per_pixel > 0 and per_pixel * n_pixels_per_cell < needed:
        side = int(math.ceil(math.sqrt(needed / per_pixel)))
        rows, cols = cube_shape
        side = min(side, max(rows, cols))
        msg += f" (try --block {min(side, rows)} {min(side, cols)}, or more frames)"
    return msg


def _read_inputs(args, path):
    """Check the outputs and the options, read the cube and the peak fits (given or made now)."""
    from .. import fit
    from ..calibration.lithium import load_calibration
    from ..io import hdf5

    check_output(args.output, [path, args.fits, args.lithium_cal, args.calibration, *(ref for ref, _ in args.reference)],
                 args.force)
    if args.calibration and not args.forward_model:
        raise ConfigError("--calibration is for the forward model: give --forward-model as well")
    if args.spill_probability is not None and not args.calibration:
        raise ConfigError("--spill-probability is part of the detector response: give --forward-model --calibration")
    saved_cal = load_calibration(args.lithium_cal) if args.lithium_cal else None   # a bad file fails before any work
    check_writable(args.png if args.png else Path(args.output).with_suffix(".png"), "--png")
    cube = read_kev_cube(path, "the S-parameter")
    peaks = None
    if args.fits and args.fit_window:
        raise ConfigError("give either --fits or --energy-window-kev, not both")
    if args.fits:
        arrays, attrs = hdf5.read_results(args.fits, "peak_fit")
        peaks = fit.PeakMaps.from_dict(arrays, attrs)
        if peaks.shape != cube.shape:
            raise ConfigError(f"{args.fits}: fit maps of shape {peaks.shape} do not match the cube's {cube.shape}")
    elif args.fit_window:
        peaks = fit.fit_cube(cube, tuple(args.fit_window), method=args.fit_method)
    if not args.resolution_fwhm_kev > 0:
        raise ConfigError(f"--resolution-fwhm-kev: expected a positive FWHM in keV, found {args.resolution_fwhm_kev}")
    if args.save_lithium_cal and not args.reference:
        raise ConfigError("--save-lithium-cal needs reference cubes: give --reference REF.h5 LI at least twice")
    if args.reference and args.lithium_cal:
        raise ConfigError("give either --reference (calibrate now) or --lithium-cal (a saved calibration), not both")
    return cube, peaks, saved_cal


def _theta_for(args, shape, peaks):
    """The scattering angle (rad, scalar or a (rows, cols) map) and a note saying where it came from."""
    from .. import compton
    from ..detector import DetectorSpec

    if args.theta is not None:
        return math.radians(args.theta), f"{args.theta:g} deg for every pixel"
    if args.theta_from_fits:
        if peaks is None:
            raise ConfigError("--theta-from-fits needs peak fits: give --fits FITS.h5 or --energy-window-kev EMIN EMAX")
        return compton.theta_map_from_peaks(peaks, args.e1), "per pixel from fitted peak centres"
    d1, d2 = args.geometry if args.geometry else (160.0, 150.0)
    det = DetectorSpec(rows=shape[0], cols=shape[1])
    geom = compton.PinholeGeometry(d1_mm=d1, d2_mm=d2, detector=det, beam_axis=args.beam_axis,
                                   center_offset_mm=tuple(args.center_offset_mm))
    return geom.theta_map(), (f"per pixel from the pinhole geometry d1={d1:g} mm, d2={d2:g} mm, "
                              f"centre offset {args.center_offset_mm[0]:g} {args.center_offset_mm[1]:g} mm")


def _cells(args, smap, shape):
    """The (rows, cols) mask of the pixels whose pixel or block has an S, and the words for a cell."""
    if args.block:
        br, bc = args.block
        pixel_ok = np.zeros(shape, dtype=bool)       # the pixels of the blocks that are ok
        nr, nc = smap.ok.shape
        pixel_ok[: nr * br, : nc * bc] = np.repeat(np.repeat(smap.ok, br, axis=0), bc, axis=1)
        return pixel_ok, f"{br}x{bc} block", "blocks", br * bc
    return smap.ok, "pixel", "pixels", 1


def _lithium_map(args, cube, smap, theta, background, choice, saved_cal):
    """The Li map (eq. 5) and its calibration: fitted now to --reference cubes, or the saved one; (None, None) without."""
    from .. import compton
    from ..calibration.lithium import LithiumCalibrationMap

    lmap, cal = None, None
    if args.reference and choice == "peak-fit":
        raise ConfigError("--reference: calibrate with --background sideband or none (the peak fits belong to CUBE only)")
    if args.reference:
        s_refs, e_refs, li_refs = [], [], []
        for ref_path, li_text in args.reference:
            try:
                li_ref = float(li_text)
            except ValueError:
                raise ConfigError(f"--reference {ref_path} {li_text}: expected a Li content 1-x as a number") from None
            ref = read_kev_cube(Path(ref_path), "a Li reference")
            if ref.shape != cube.shape:
                raise ConfigError(f"--reference {ref_path}: a cube of shape {ref.shape}, expected the cube's {cube.shape}")
            ref_map = _s_map(compton, ref, args, theta, background)
            s_refs.append(ref_map.s)
            e_refs.append(ref_map.s_err)
            li_refs.append(li_ref)
        cal = LithiumCalibrationMap.fit(s_refs, e_refs, li_refs, block=tuple(args.block) if args.block else (1, 1),
                                        slope=args.reference_slope)
        if args.save_lithium_cal:
            cal.save(args.save_lithium_cal)
    elif args.lithium_cal:
        cal = saved_cal
    if cal is not None:
        if isinstance(cal, LithiumCalibrationMap) and cal.block != (tuple(args.block) if args.block else (1, 1)):
            raise ConfigError(f"{args.lithium_cal}: a flat field for {cal.block[0]}x{cal.block[1]} blocks; "
                              f"give --block {cal.block[0]} {cal.block[1]}")
        lmap = cal.apply(smap)
    return lmap, cal


def _forward_fit(args, path, cube, theta):
    """1-x per pixel or block from the forward model, with the detector response of --calibration when given."""
    from .. import compton_forward
    from ..io import hdf5

    response, mask, terms = None, None, {}
    if args.calibration:
        from ..detector_response import DetectorResponse, full_neighbourhood
        cal_maps = _calibration_maps(args.calibration)
        if cal_maps["gradients"].shape != cube.shape:
            raise ConfigError(f"--calibration {args.calibration}: maps of shape {cal_maps['gradients'].shape}, "
                              f"expected the cube's {cube.shape}")
        good = np.asarray(cal_maps.get("good", np.ones(cube.shape, bool)), bool)
        terms = _next_frame_terms(args, path, good)
        response = DetectorResponse.from_calibration(cal_maps, threshold_adu=args.threshold, **terms)
        mask = full_neighbourhood(good)
    fwd = compton_forward.fit_li_blocks(cube, args.e1, theta, block=tuple(args.block) if args.block else (1, 1),
                                        resolution_fwhm_kev=args.resolution_fwhm_kev, response=response, mask=mask)
    return fwd, terms


def _calibration_maps(path):
    """The calibration maps and, from `hexspec calibrate`'s results group, the line centroids and fit
    parameters the response's energy-scale errors need (older or other files: the maps alone)."""
    import json

    from ..errors import FormatError
    from ..io import hdf5
    maps = hdf5.read_calibration(path)
    try:
        arrays, attrs = hdf5.read_results(path, "calibration")
    except FormatError:
        return maps
    for key in ("centroids_adu", "centroid_err_adu", "residuals_kev", "photopeak_counts"):
        if key in arrays and key not in maps:
            maps[key] = arrays[key]
    params = attrs.get("parameters")
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            params = None
    if isinstance(params, dict):
        maps["parameters"] = params
    return maps


def _next_frame_terms(args, path, good):
    """previous_hit_probability and spill_probability of the response, from the extractor counters `process` saved.

    The chance that a neighbour was hit in the frame before is the hits per live pixel and
    frame. Spilled pulses are the next-frame removals beyond chance (hits times that
    chance), per hit: a lower bound, since a remainder under the threshold is not seen;
    ``--spill-probability`` gives the detector's known value instead. A cube without the
    counters (written before `process` stored them) gets the response without either term.
    """
    import sys

    from ..detector_response import previous_hit_probability
    from .process import read_extractor_stats
    stats = read_extractor_stats(path)
    if not stats or not stats.get("frames") or not stats.get("hits"):
        print(f"hexspec sparam: {path.name} has no event-extractor counters (processed before `hexspec process` "
              "stored them): the response leaves out neighbours hit in the frame before"
              + ("" if args.spill_probability else " and spilled pulses"), file=sys.stderr)
        return {"spill_probability": args.spill_probability or 0.0}
    p_prev = previous_hit_probability(stats, int(good.sum()))
    spill = args.spill_probability
    if spill is None:
        excess = stats.get("next_frame_removed", 0) - stats["hits"] * p_prev
        spill = min(max(excess / stats["hits"], 0.0), 0.5)
    return {"previous_hit_probability": min(p_prev, 0.5), "spill_probability": float(spill)}


def _write_results(args, path, smap, theta_map, theta_note, choice, lmap, cal, forward, next_frame_terms=None):
    """Write s_parameter (and lithium, lithium_forward) results; return the maps to draw and the cells to mark."""
    from ..io import hdf5

    attrs = {"e1_kev": args.e1, "low_au": args.low, "high_au": args.high, "factor": args.factor,
             "theta": theta_note, "background": {"sideband": "sideband (flat continuum beyond p_z = 7 a.u.)",
                                                 "peak-fit": "fitted linear background", "none": "none"}[choice],
             "attenuation_factor": args.attenuation_factor, "min_counts": args.min_counts,
             "input": str(path.resolve()), "equation": "docs/physics.md eq. (4): S = S_L / S_H",
             "block": list(args.block) if args.block else [1, 1]}
    hdf5.write_results(args.output, "s_parameter", {**smap.to_dict(), "theta_rad": theta_map}, attrs)
    maps = {"S": smap.s, "S standard error": smap.s_err}
    marks = None
    if lmap is not None:
        cal_attrs = {"calibration": cal.to_dict(), "equation": "docs/physics.md eq. (5): 1 - x = a S + b"}
        hdf5.write_results(args.output, "lithium", lmap.to_dict(), cal_attrs)
        maps.update({"Li content 1-x": lmap.li, "1-x standard error": lmap.li_err})
        marks = lmap.extrapolated

    if forward is not None:
        from ..compton_forward import FIT_STATUS
        line_shape = ({"line_shape": "Am-241 calibration " + str(Path(args.calibration).resolve()),
                       "threshold_adu": args.threshold, **(next_frame_terms or {})} if args.calibration else
                      {"resolution_fwhm_kev": args.resolution_fwhm_kev})
        hdf5.write_results(args.output, "lithium_forward", forward.to_dict(),
                           {"model": "mu = K [(1-x) T_Li + T_host] + B dE (free-atom profiles, xraylib)", **line_shape,
                            "status_codes": {str(k): v for k, v in FIT_STATUS.items()}})
        maps.update({"1-x forward model": forward.li, "1-x forward-model error": forward.li_err})
    return maps, marks


def _print_summary(args, path, cube, smap, ok, theta_map, background, choice, cells, unit, lmap, forward, png,
                   advice):
    """The result lines: S of the cells and of all ok cells together, the Li map, the forward model, the advice."""
    from .. import compton

    msg = f"{path.name}: S for {int(smap.ok.sum())} of {smap.ok.size} {cells} (background {choice})"
    s_reg, s_reg_err = compton.s_parameter_region(cube, args.e1, np.where(ok, theta_map, np.nan), mask=ok,
                                                  pz_window_au=(args.low, args.high), factor=args.factor,
                                                  background=background,
                                                  attenuation_factor=args.attenuation_factor,
                                                  resolution_fwhm_kev=args.resolution_fwhm_kev)
    msg += (f"; median S {np.median(smap.s[smap.ok]):.4f} (median error {np.median(smap.s_err[smap.ok]):.4f}); "
            f"all ok {cells} together S = {s_reg:.5f} +- {s_reg_err:.5f}")
    if lmap is not None:
        good = lmap.ok
        li, li_err = lmap.li[good], lmap.li_err[good]
        w = 1.0 / li_err ** 2
        mean = float(np.sum(w * li) / np.sum(w))
        chi2 = float(np.sum(((li - mean) / li_err) ** 2) / max(li.size - 1, 1))
        msg += (f"; 1-x weighted mean {mean:.3f} +- {1 / math.sqrt(np.sum(w)):.3f}, range {li.min():.3f} to "
                f"{li.max():.3f}, chi-square/dof about the mean {chi2:.2f}")
        n_ext = int(lmap.extrapolated.sum())
        if n_ext:
            msg += f" ({n_ext} {cells} outside the calibrated S range, marked x in the PNG)"
    print(msg + f" -> {args.output}, {png}")
    if forward is not None and forward.ok.any():
        f_ok = forward.ok
        w = 1.0 / forward.li_err[f_ok] ** 2
        print(f"{path.name}: forward model: 1-x for {int(f_ok.sum())} of {f_ok.size} {cells} (median error "
              f"{np.median(forward.li_err[f_ok]):.3f} per {unit}), weighted mean "
              f"{np.sum(w * forward.li[f_ok]) / np.sum(w):.3f} +- {1 / math.sqrt(np.sum(w)):.3f}, median "
              f"deviance/dof {np.median(forward.deviance_per_dof[f_ok]):.2f}"
              + ("" if args.calibration else "; Gaussian line shape (give --calibration for detector data)"))
    print(f"{path.name}: {advice}")


def run(args) -> int:
    import sys

    from .. import compton
    from ..io import hdf5
    from ..plots import save_maps_png

    path = Path(args.cube)
    cube, peaks, saved_cal = _read_inputs(args, path)
    theta, theta_note = _theta_for(args, cube.shape, peaks)
    choice, background = _background_choice(args, peaks)
    smap = _s_map(compton, cube, args, theta, background)
    pixel_ok, unit, cells, per_cell = _cells(args, smap, cube.shape)
    advice = counts_advice(smap, per_cell, unit, args.target_error, cube.shape)
    if not smap.ok.any():
        # nothing to show: no file, no blank picture, and a non-zero exit with the reason
        print(f"hexspec sparam: {path.name}: no {unit} has {args.min_counts:g} counts in both S windows "
              f"(S for 0 of {smap.ok.size} {cells}); {advice}", file=sys.stderr)
        return 1

    lmap, cal = _lithium_map(args, cube, smap, theta, background, choice, saved_cal)
    forward, terms = _forward_fit(args, path, cube, theta) if args.forward_model else (None, {})
    theta_map = np.broadcast_to(np.asarray(theta, dtype=np.float64), cube.shape)
    maps, marks = _write_results(args, path, smap, theta_map, theta_note, choice, lmap, cal, forward, terms)

    ok = pixel_ok
    prof = compton.region_profile(cube, args.e1, np.where(ok, theta_map, np.nan), mask=ok, factor=args.factor,
                                  background=background if choice == "peak-fit" else None)
    hdf5.write_results(args.output, "profile", {"pz_edges": prof.pz_edges, "J": prof.J, "J_err": prof.J_err},
                       {"factor": args.factor, "pixels": int(ok.sum()), "normalization": 1.0, "units": "J per a.u.",
                        "background": "fitted linear background" if choice == "peak-fit" else "none"})
    png = Path(args.png) if args.png else Path(args.output).with_suffix(".png")
    save_maps_png(png, maps, mask=smap.ok, ncols=2, title=f"{path.name}: S-parameter ({args.low:g}/{args.high:g} a.u.)",
                  marks=marks, marks_label="outside the calibrated S range")
    save_profile_png(png.with_name(png.stem + "_profile.png"), {"all ok pixels": prof},
                     title=f"{path.name}: Compton profile ({args.factor})", windows=(args.low, args.high))
    if not args.quiet:
        _print_summary(args, path, cube, smap, ok, theta_map, background, choice, cells, unit, lmap, forward, png,
                       advice)
    return 0


# The plot writer lived here and moved to hexspec.plots; importing it from here still works.
from ..plots import save_profile_png  # noqa: E402, F401
