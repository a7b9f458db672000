"""`hexspec sparam`: S-parameter map (PHYSICS.md eqs. 2-4) of a cube, optionally converted to Li content (eq. 5)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.outputs import add_force_option, check_output
from .common import add_quiet_option, positive_int, read_kev_cube


def register(sub) -> None:
    p = sub.add_parser("sparam", help="S-parameter (and Li content) map of a spectral cube",
                       description="Compton profile S-parameter of every pixel, S = S_L / S_H with S_L the "
                                   "integral of J(p_z) over |p_z| < LOW and S_H over LOW < |p_z| < HIGH "
                                   "(PHYSICS.md eqs. 2-4), using the scattering angle of each pixel. The fitted "
                                   "linear background of a peak fit is subtracted when one is given (--fits) or "
                                   "made (--fit-window). With --lithium-cal, S is converted to Li content 1 - x "
                                   "(eq. 5). Writes /entry/results/s_parameter (and lithium, profile) and a PNG.")
    p.add_argument("cube", help="hexspec HDF5 file holding /entry/spectra (keV)")
    p.add_argument("--e1", type=float, default=115.0, help="incident energy in keV (default 115)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--theta", type=float, metavar="DEG", help="one scattering angle for every pixel, degrees")
    g.add_argument("--geometry", nargs=2, type=float, metavar=("D1_MM", "D2_MM"),
                   help="pinhole geometry: sample-pinhole and pinhole-detector distances in mm; theta per pixel "
                        "(PHYSICS.md section 3). This is the default, with 160 150")
    g.add_argument("--theta-from-fits", action="store_true",
                   help="theta per pixel from the fitted Compton peak centres (needs --fits or --fit-window)")
    p.add_argument("--beam-axis", choices=("cols", "rows"), default="cols", help="detector axis along the beam (default cols)")
    p.add_argument("--fits", metavar="FITS.h5", help="peak fits from `hexspec fit`: their linear background is subtracted")
    p.add_argument("--fit-window", nargs=2, type=float, metavar=("EMIN", "EMAX"),
                   help="fit the peak now in this window (keV) and subtract its background")
    p.add_argument("--fit-method", choices=("ml", "ls"), default="ml",
                   help="with --fit-window: Poisson maximum likelihood (default; unbiased at the low counts of "
                        "single pixels) or least squares")
    p.add_argument("--no-background", action="store_true", help="do not subtract a fitted background")
    p.add_argument("--block", nargs=2, type=positive_int, metavar=("ROWS", "COLS"),
                   help="S of blocks of ROWS x COLS pixels (each pixel's counts mapped to p_z with its own theta, "
                        "then summed), for data with too few counts per pixel")
    p.add_argument("--low", type=float, default=1.0, help="S_L window |p_z| < LOW a.u. (default 1)")
    p.add_argument("--high", type=float, default=5.0, help="S_H window LOW < |p_z| < HIGH a.u. (default 5)")
    p.add_argument("--factor", choices=("impulse", "jacobian"), default="impulse", help="profile factor of eq. (3)")
    p.add_argument("--min-counts", type=float, default=100, help="minimum counts in each window per pixel (default 100)")
    p.add_argument("--attenuation-factor", type=float, default=1.0,
                   help="multiply S by this sample-attenuation correction (1.015, 1.010, 1.005 for depth regions 1-3)")
    p.add_argument("--lithium-cal", metavar="CAL.json", help="Li calibration (LithiumCalibration JSON): adds a 1-x map")
    p.add_argument("-o", "--output", required=True, help="output hexspec HDF5 file (with --force, results are added if it exists)")
    add_force_option(p)
    p.add_argument("--png", help="PNG of the maps (default: OUTPUT with .png; the profile goes to *_profile.png)")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import compton, fit
    from ..detector import DetectorSpec
    from ..io import hdf5
    from .fit import save_maps_png

    path = Path(args.cube)
    check_output(args.output, [path, args.fits, args.lithium_cal], args.force)
    cube = read_kev_cube(path, "the S-parameter")
    peaks = None
    if args.fits and args.fit_window:
        raise ConfigError("give either --fits or --fit-window, not both")
    if args.fits:
        arrays, attrs = hdf5.read_results(args.fits, "peak_fit")
        peaks = fit.PeakMaps.from_dict(arrays, attrs)
        if peaks.shape != cube.shape:
            raise ConfigError(f"{args.fits}: fit maps of shape {peaks.shape} do not match the cube's {cube.shape}")
    elif args.fit_window:
        peaks = fit.fit_cube(cube, tuple(args.fit_window), method=args.fit_method)

    if args.theta is not None:
        theta = math.radians(args.theta)
        theta_note = f"{args.theta:g} deg for every pixel"
    elif args.theta_from_fits:
        if peaks is None:
            raise ConfigError("--theta-from-fits needs peak fits: give --fits FITS.h5 or --fit-window EMIN EMAX")
        theta = compton.theta_map_from_peaks(peaks, args.e1)
        theta_note = "per pixel from fitted peak centres"
    else:
        d1, d2 = args.geometry if args.geometry else (160.0, 150.0)
        rows, cols = cube.shape
        det = DetectorSpec(rows=rows, cols=cols)
        theta = compton.PinholeGeometry(d1_mm=d1, d2_mm=d2, detector=det, beam_axis=args.beam_axis).theta_map()
        theta_note = f"per pixel from the pinhole geometry d1={d1:g} mm, d2={d2:g} mm"

    background = None if (args.no_background or peaks is None) else peaks
    options = dict(low=args.low, high=args.high, factor=args.factor, background=background,
                   min_counts=args.min_counts, attenuation_factor=args.attenuation_factor)
    if args.block:
        br, bc = args.block
        smap = compton.s_parameter_blocks(cube, args.e1, theta, block=(br, bc), **options)
        pixel_ok = np.zeros(cube.shape, dtype=bool)       # the pixels of the blocks that are ok
        nr, nc = smap.ok.shape
        pixel_ok[: nr * br, : nc * bc] = np.repeat(np.repeat(smap.ok, br, axis=0), bc, axis=1)
        unit = f"{br}x{bc} blocks"
    else:
        smap = compton.s_parameter_map(cube, args.e1, theta, **options)
        pixel_ok = smap.ok
        unit = "pixels"
    theta_map = np.broadcast_to(np.asarray(theta, dtype=np.float64), cube.shape)
    attrs = {"e1_kev": args.e1, "low_au": args.low, "high_au": args.high, "factor": args.factor,
             "theta": theta_note, "background": "fitted linear background" if background is not None else "none",
             "attenuation_factor": args.attenuation_factor, "min_counts": args.min_counts,
             "input": str(path.resolve()), "equation": "PHYSICS.md eq. (4): S = S_L / S_H",
             "block": list(args.block) if args.block else [1, 1]}
    hdf5.write_results(args.output, "s_parameter", {**smap.to_dict(), "theta_rad": theta_map}, attrs)
    maps = {"S": smap.s, "S standard error": smap.s_err}
    lmap = None
    if args.lithium_cal:
        from ..calibration.lithium import LithiumCalibration
        cal = LithiumCalibration.load(args.lithium_cal)
        lmap = cal.apply(smap)
        hdf5.write_results(args.output, "lithium", lmap.to_dict(),
                           {"calibration": cal.to_dict(), "equation": "PHYSICS.md eq. (5): 1 - x = a S + b"})
        maps.update({"Li content 1-x": lmap.li, "1-x standard error": lmap.li_err})

    ok = pixel_ok
    prof = None
    if ok.any():
        prof = compton.region_profile(cube, args.e1, np.where(ok, theta_map, np.nan), mask=ok, factor=args.factor,
                                      background=background)
        hdf5.write_results(args.output, "profile", {"pz_edges": prof.pz_edges, "J": prof.J, "J_err": prof.J_err},
                           {"factor": args.factor, "pixels": int(ok.sum()), "normalization": 1.0, "units": "J per a.u."})
    png = Path(args.png) if args.png else Path(args.output).with_suffix(".png")
    save_maps_png(png, maps, mask=smap.ok, ncols=2, title=f"{path.name}: S-parameter ({args.low:g}/{args.high:g} a.u.)")
    if prof is not None:
        save_profile_png(png.with_name(png.stem + "_profile.png"), {"all ok pixels": prof},
                         title=f"{path.name}: Compton profile ({args.factor})", windows=(args.low, args.high))
    if not args.quiet:
        msg = f"{path.name}: S for {int(smap.ok.sum())} of {smap.ok.size} {unit}"
        if ok.any():
            s_reg, s_reg_err = compton.s_parameter_region(cube, args.e1, np.where(ok, theta_map, np.nan), mask=ok,
                                                          low=args.low, high=args.high, factor=args.factor,
                                                          background=background,
                                                          attenuation_factor=args.attenuation_factor)
            msg += (f"; median S {np.median(smap.s[smap.ok]):.4f} (median error {np.median(smap.s_err[smap.ok]):.4f}); "
                    f"all ok pixels together S = {s_reg:.5f} +- {s_reg_err:.5f}")
            if lmap is not None:
                li = cal(s_reg)
                msg += f", 1-x = {li:.3f} +- {float(cal.uncertainty(s_reg, s_reg_err)):.3f}"
                n_ext = int(lmap.extrapolated.sum())
                if n_ext:
                    msg += f" ({n_ext} pixels outside the calibrated S range)"
        print(msg + f" -> {args.output}, {png}")
    return 0


# The plot writer lived here and moved to hexspec.plots; importing it from here still works.
from ..plots import save_profile_png  # noqa: E402, F401
