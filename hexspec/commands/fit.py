"""`hexspec fit`: Compton peak fit (pseudo-Voigt, PHYSICS.md section 4) of every pixel of a cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.outputs import add_force_option, atomic_output, check_output
from .common import add_option, add_quiet_option, check_writable, positive_int, read_kev_cube


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit the Compton peak of every pixel of a spectral cube",
                       description="Fit a Lorentz-Gaussian (pseudo-Voigt) peak on a linear background to every "
                                   "pixel's spectrum in an energy window (docs/physics.md eq. 8) and write the maps "
                                   "(centre, FWHM, area, Lorentz fraction, background, errors, reduced chi-square, "
                                   "ok flag, status) to /entry/results/peak_fit of a hexspec HDF5 file, plus a PNG. "
                                   "Status codes: 0 ok; 1 iteration limit; 2 too few counts in the window "
                                   "(--min-counts); 3 no positive net peak (no start values); 4 centre or FWHM on a "
                                   "bound of the window; 5 no significant peak (area below 3 standard errors). A run "
                                   "in which no pixel fits exits with status 1 and writes nothing.")
    p.add_argument("cube", help="hexspec HDF5 file holding /entry/spectra")
    add_option(p, "--energy-window-kev", aliases=("--window",), dest="window", nargs=2, type=float,
               metavar=("EMIN", "EMAX"), required=True,
               help="energy window in keV (e.g. 88.5 101 around the 93.9 keV Compton peak)")
    p.add_argument("-o", "--output", required=True, help="output hexspec HDF5 file (with --force, results are added if it exists)")
    add_force_option(p)
    p.add_argument("--model", choices=("pseudo_voigt", "gaussian", "lorentzian"), default="pseudo_voigt",
                   help="peak shape (default pseudo_voigt)")
    p.add_argument("--method", choices=("ls", "ml"), default="ls",
                   help="ls: Poisson-weighted least squares; ml: Poisson maximum likelihood (low counts) (default ls)")
    p.add_argument("--min-counts", type=float, default=50, help="skip pixels with fewer counts in the window (default 50)")
    p.add_argument("--eta", default="auto", metavar="auto|free|VALUE",
                   help="Lorentz fraction: auto (default) fits the summed spectrum first and ties pixels with fewer "
                        "than 5000 window counts to its value (their data cannot fix it; free, it runs to 0 or 1); "
                        "free fits it in every pixel; a number in [0, 1] fixes it (default auto)")
    p.add_argument("--block", nargs=2, type=positive_int, metavar=("ROWS", "COLS"),
                   help="fit the summed spectra of blocks of ROWS x COLS pixels (for too few counts per pixel; the "
                        "peak moves by about 0.02 keV per pixel along the beam, so keep blocks small along it; default: every pixel)")
    p.add_argument("--target-center-error-kev", type=float, default=0.05,
                   help="centre error a useful fit needs, for the counts advice (default 0.05 keV)")
    p.add_argument("--png", help="PNG of the maps (default: OUTPUT with .png)")
    add_quiet_option(p)
    p.set_defaults(func=run)


def _eta_option(text):
    if text in ("auto", "free"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--eta: expected auto, free or a number in [0, 1], found {text!r}")
    return value


def block_cube(cube, block):
    """A cube whose pixels are the summed spectra of blocks of (rows, cols) pixels (trailing pixels left out)."""
    from ..spectra import SpectralCube

    br, bc = block
    rows, cols = cube.shape
    nr, nc = rows // br, cols // bc
    if nr == 0 or nc == 0:
        raise ConfigError(f"--block {br} {bc}: a block does not fit a {rows}x{cols} cube")
    counts = cube.counts[: nr * br, : nc * bc].reshape(nr, br, nc, bc, -1).sum(axis=(1, 3))
    return SpectralCube(counts, cube.edges)


def fit_advice(peaks, window_counts, n_pixels_per_cell, unit, target_kev):
    """One line: counts per pixel in the window against what a centre error of ``target_kev`` needs."""
    per_pixel = float(np.median(window_counts)) / n_pixels_per_cell
    ok = peaks.ok
    k = peaks.center_err[ok] * np.sqrt(window_counts[ok])   # centre error ~ k / sqrt(counts)
    k = k[np.isfinite(k)]
    k_med = float(np.median(k)) if k.size else 1.5
    needed = (k_med / target_kev) ** 2
    msg = (f"{per_pixel:.3g} counts per pixel in the window; a centre error of {target_kev:g} keV needs about "
           f"{needed:.3g} counts per {unit}")
    if per_pixel * n_pixels_per_cell < needed:
        side = int(np.ceil(np.sqrt(needed / max(per_pixel, 1e-9))))
        msg += f" (try --block {side} {side}, `hexspec sparam --block`, or more frames)"
    return msg


def run(args) -> int:
    import sys

    from .. import fit
    from ..io import hdf5

    path = Path(args.cube)
    check_output(args.output, [path], args.force)   # before the fits, not after
    check_writable(args.png if args.png else Path(args.output).with_suffix(".png"), "--png")
    cube = read_kev_cube(path, "fit")
    emin, emax = args.window
    if not emin < emax:
        raise ConfigError(f"--energy-window-kev: expected EMIN < EMAX, found {emin} {emax}")
    eta = _eta_option(args.eta)
    if args.block:
        cube = block_cube(cube, args.block)
        unit, cells, per_cell = f"{args.block[0]}x{args.block[1]} block", "blocks", args.block[0] * args.block[1]
    else:
        unit, cells, per_cell = "pixel", "pixels", 1
    peaks = fit.fit_cube(cube, (emin, emax), model=args.model, method=args.method, min_counts=args.min_counts, eta=eta)
    inside = (cube.centers >= emin) & (cube.centers <= emax)
    window_counts = cube.counts[:, :, inside].sum(axis=2).astype(np.float64)
    advice = fit_advice(peaks, window_counts, per_cell, unit, args.target_center_error_kev)
    n_ok = int(peaks.ok.sum())
    codes, numbers = np.unique(peaks.status, return_counts=True)
    breakdown = "; ".join(f"{n} {fit.FIT_STATUS.get(int(c), 'status ' + str(c))} (status {c})"
                          for c, n in zip(codes, numbers) if c != 0)
    if n_ok == 0:
        print(f"hexspec fit: {path.name}: no {unit} fitted ok in {emin:g}-{emax:g} keV: {breakdown}; {advice}",
              file=sys.stderr)
        return 1
    attrs = {"window_kev": [float(emin), float(emax)], "model": args.model, "method": args.method,
             "min_counts": float(args.min_counts), "input": str(path.resolve()),
             "equation": "docs/physics.md eq. (8), pseudo-Voigt (Wertheim et al., Rev. Sci. Instrum. 45, 1369, 1974): "
                         "A [eta L + (1-eta) G] + b0 + b1 (E - c)",
             "units": json_units(), "eta": str(args.eta), "eta_tied": peaks.eta_tied,
             "status_codes": {str(k): v for k, v in fit.FIT_STATUS.items()},
             "block": list(args.block) if args.block else [1, 1]}
    with atomic_output(args.output, [path], args.force, keep_existing=True) as out:
        hdf5.write_results(out, "peak_fit", peaks.to_dict(), attrs)
    png = Path(args.png) if args.png else Path(args.output).with_suffix(".png")
    save_maps_png(png, {"centre (keV)": peaks.center, "FWHM (keV)": peaks.fwhm, "area (counts)": peaks.area,
                        "Lorentz fraction": peaks.eta, "reduced chi-square": peaks.redchi,
                        "fit status (0 ok)": peaks.status.astype(float)},
                  mask=peaks.ok, title=f"{path.name}: pseudo-Voigt fit {emin:g}-{emax:g} keV")
    if not args.quiet:
        ok = peaks.ok
        tied = "" if not np.isfinite(peaks.eta_tied) else f", Lorentz fraction tied to {peaks.eta_tied:.3f} below 5000 counts"
        print(f"{path.name}: {n_ok} of {ok.size} {cells} fitted ok in {emin:g}-{emax:g} keV; median centre "
              f"{np.median(peaks.center[ok]):.3f} keV, FWHM {np.median(peaks.fwhm[ok]):.3f} keV, area "
              f"{np.median(peaks.area[ok]):.4g} counts, reduced chi-square {np.median(peaks.redchi[ok]):.3f}{tied} "
              f"-> {args.output}, {png}")
        if breakdown:
            print(f"{path.name}: not ok: {breakdown}")
        print(f"{path.name}: {advice}")
    return 0


def json_units() -> dict:
    return {"center": "keV", "fwhm": "keV", "area": "counts", "eta": "1", "b0": "counts/keV", "b1": "counts/keV^2"}


# The plot writer lived here and moved to hexspec.plots; importing it from here still works.
from ..plots import save_maps_png  # noqa: E402, F401
