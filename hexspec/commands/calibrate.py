"""`hexspec calibrate am241 INPUT -o calib.h5`: per-pixel energy calibration against Am-241.

INPUT holds frames (GigE .bin, odin-data HDF5, hexspec HDF5 with frames), events in ADU
(hexspec HDF5), or an ADU spectral cube (hexspec HDF5). Writes the calibration to a
hexspec HDF5 file (/entry/results/calibration), the HEXITEC text maps next to it
(<stem>_gradients.txt, <stem>_intercepts.txt, <stem>_thresholds.txt), a PNG report
(<stem>.png), and prints the summary line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CalibrationError, FormatError
from ..io.outputs import add_force_option, atomic_output, check_output
from .common import Progress, add_batch_option, add_frames_option, add_quiet_option, input_shape, positive_int


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="energy calibration per pixel (Am-241)",
                       description="Per-pixel energy calibration E = ADU * gradient + intercept.")
    kinds = p.add_subparsers(dest="source_kind", metavar="SOURCE")
    a = kinds.add_parser(
        "am241", help="calibrate against an Am-241 source",
        description="Fit the Am-241 lines (59.54 and 26.34 keV, Np L lines) in every pixel's ADU spectrum and "
                    "write gradients, intercepts, FWHM at 59.54 keV, a good-pixel mask with reasons and a "
                    "threshold suggestion (hexspec HDF5 + HEXITEC text maps + PNG report).")
    a.add_argument("input", help="frames (.bin, odin-data HDF5, hexspec HDF5), or a hexspec file of ADU events or spectra")
    a.add_argument("-o", "--output", required=True, help="output hexspec HDF5 file")
    add_force_option(a)
    a.add_argument("--shape", nargs=2, type=positive_int, metavar=("ROWS", "COLS"),
                   help="detector shape of .bin files (default 80 80)")
    a.add_argument("--reorder", action="store_true", help="undo the ASIC pixel order of older firmware (.bin files)")
    a.add_argument("--allow-partial", action="store_true", help="read the whole frames of a truncated .bin file")
    a.add_argument("--bin-width", type=float, default=4.0, metavar="ADU", help="ADU histogram bin width (default 4)")
    a.add_argument("--max-adu", type=float, help="upper end of the ADU histogram (default: from the first frames)")
    a.add_argument("--charge-sharing", choices=("none", "csd", "csa"), default="none",
                   help="charge-sharing handling before histogramming (default none: every pixel value of every frame)")
    a.add_argument("--threshold", type=float, default=None, metavar="ADU",
                   help="hit threshold used with --charge-sharing csd/csa or --next-frame (default 0)")
    a.add_argument("--next-frame", action="store_true", help="apply the next-frame correction (needs event extraction)")
    add_batch_option(a)
    add_frames_option(a, dest="max_frames", help="use at most N frames (default: all)")
    a.add_argument("--quadratic", action="store_true", help="also fit a quadratic term (stored as 'quadratic')")
    a.add_argument("--no-tail", action="store_true", help="fit the photopeak with a plain Gaussian (no low-energy tail)")
    a.add_argument("--max-fwhm-kev", type=float, default=2.0, metavar="KEV",
                   help="FWHM at 59.54 keV above this marks a pixel bad (default 2.0 keV)")
    a.add_argument("--min-peak-counts", type=float, default=100.0, metavar="COUNTS",
                   help="photopeak counts below this mark a pixel bad (default 100)")
    a.add_argument("--threshold-sigmas", type=float, default=5.0, help="threshold suggestion = noise centre + N sigma (default 5)")
    a.add_argument("--no-png", action="store_true", help="do not write the PNG report")
    add_quiet_option(a)
    a.set_defaults(func=run_am241)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# ------------------------------------------------------------------ inputs

def _cube_from_input(args, progress):
    """(SpectralCube in ADU, description of the input, frames used or None)."""
    from ..calibration.am241 import FrameSpectra, cube_from_events
    from ..io import framefile, hdf5

    path = Path(args.input)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    kind = framefile.frame_file_kind(path)
    shape = input_shape(path, args)
    if kind == "hexspec" and hdf5.count_frames(path) == 0:
        cfg = hdf5.read_config(path)
        if cfg is not None and cfg.calibrated:
            raise CalibrationError(f"{path}: expected events or spectra in ADU, found an energy calibration in the file "
                                   "(its energies are in keV); calibrate from uncalibrated data")
        import h5py
        with h5py.File(path, "r", locking=False) as f:
            has_events = "entry/events" in f and f["entry/events/energy"].shape[0] > 0
        if has_events:
            events = hdf5.iter_events(path)
            return cube_from_events(events, shape, args.bin_width, args.max_adu), f"{path} (events)", None
        cube = hdf5.read_cube(path)
        if str(cube.unit).upper() != "ADU":
            raise CalibrationError(f"{path}: expected spectra in ADU, found unit {cube.unit!r}")
        return cube, f"{path} (spectra)", None

    batches = framefile.iter_frame_file(path, args.batch_size, shape=shape, reorder=args.reorder,
                                        allow_partial=args.allow_partial)
    use_events = args.charge_sharing != "none" or args.next_frame
    n = 0
    if use_events:
        from ..config import ProcessingConfig
        from ..pipeline import Chain
        cfg = ProcessingConfig(threshold=args.threshold or 0.0, next_frame=bool(args.next_frame),
                               charge_sharing=args.charge_sharing)
        # extract only: the ADU range of the histogram comes from the first events (cube_from_events)
        chain = Chain(cfg, shape, accumulate=False)

        def events():
            nonlocal n
            for batch in batches:
                if args.max_frames is not None and n >= args.max_frames:
                    break
                if args.max_frames is not None:
                    batch = batch[: args.max_frames - n]
                n += len(batch)
                progress.update(frames=n)
                yield chain.extract(batch)
        cube = cube_from_events(events(), shape, args.bin_width, args.max_adu)
    else:
        acc = FrameSpectra(shape, args.bin_width, args.max_adu)
        for batch in batches:
            if args.max_frames is not None and n >= args.max_frames:
                break
            if args.max_frames is not None:
                batch = batch[: args.max_frames - n]
            acc.add(batch)
            n += len(batch)
            progress.update(frames=n)
        if n == 0:
            raise CalibrationError(f"{path}: no frames")
        cube = acc.cube
    return cube, f"{path} ({kind} frames)", n


# ------------------------------------------------------------------ outputs

def map_paths(output) -> dict:
    """Text-map paths written next to the HDF5 output: {name: Path}."""
    out = Path(output)
    stem = out.with_suffix("")
    return {name: Path(f"{stem}_{name}.txt") for name in ("gradients", "intercepts", "thresholds")}


def run_am241(args) -> int:
    from .. import __version__
    from ..calibration import calibrate_am241, write_map
    from ..io.hdf5 import HexspecWriter

    check_output(args.output, [args.input], args.force)   # before the long work, not after
    progress = Progress("calibrate", quiet=args.quiet)
    cube, described, n_frames = _cube_from_input(args, progress)
    progress.close(frames=n_frames or 0)
    cal = calibrate_am241(cube, quadratic=args.quadratic, fit_tail=not args.no_tail, max_fwhm_kev=args.max_fwhm_kev,
                          min_peak_counts=args.min_peak_counts, threshold_sigmas=args.threshold_sigmas)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = cal.attrs()
    attrs.update(source=str(Path(args.input).resolve()), input=described, frames_used=-1 if n_frames is None else n_frames,
                 adu_bin_edges=[float(cube.edges[0]), float(cube.edges[-1]), float(cube.edges[1] - cube.edges[0])],
                 hexspec_version=__version__, charge_sharing=args.charge_sharing, next_frame=bool(args.next_frame))
    with atomic_output(out, [args.input], args.force) as tmp, \
            HexspecWriter(tmp, cal.shape, config=cal.to_config(threshold=True), source=str(Path(args.input).resolve()),
                          events=False, spectra=False) as w:
        w.write_results("calibration", cal.arrays(), attrs)
        if n_frames is not None:
            w.set_acquisition(frames_received=n_frames)
    paths = map_paths(out)
    write_map(paths["gradients"], cal.gradients)
    write_map(paths["intercepts"], cal.intercepts)
    write_map(paths["thresholds"], cal.thresholds(), fmt="%d")
    png = None
    if not args.no_png:
        png = out.with_suffix(".png")
        write_report_png(png, cube, cal)
    print(cal.summary())
    reasons = ", ".join(f"{k} {v}" for k, v in cal.reason_counts().items() if v) or "none"
    print(f"{described}: {cal.n_good} of {cal.good.size} pixels good; rejected: {reasons} -> {out}, "
          f"{', '.join(str(p) for p in paths.values())}" + (f", {png}" if png else ""))
    if cal.n_good == 0:
        print(f"hexspec calibrate: error: no pixel of {args.input} passed the Am-241 calibration "
              "(is it an Am-241 exposure in ADU?); the files above say why", file=sys.stderr)
        return 1
    return 0


# The plot writer lived here and moved to hexspec.plots; importing it from here still works.
from ..plots import write_report_png  # noqa: E402, F401
