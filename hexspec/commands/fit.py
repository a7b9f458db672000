"""`hexspec fit`: Compton peak fit (pseudo-Voigt, PHYSICS.md section 4) of every pixel of a cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.outputs import add_force_option, atomic_output, check_output
from .common import add_quiet_option, read_kev_cube


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit the Compton peak of every pixel of a spectral cube",
                       description="Fit a Lorentz-Gaussian (pseudo-Voigt) peak on a linear background to every "
                                   "pixel's spectrum in an energy window (PHYSICS.md section 4) and write the maps "
                                   "(centre, FWHM, area, Lorentz fraction, background, errors, reduced chi-square, "
                                   "ok flag) to /entry/results/peak_fit of a hexspec HDF5 file, plus a PNG.")
    p.add_argument("cube", help="hexspec HDF5 file holding /entry/spectra")
    p.add_argument("--window", nargs=2, type=float, metavar=("EMIN", "EMAX"), required=True,
                   help="energy window in keV (e.g. 88.5 101 around the 93.9 keV Compton peak)")
    p.add_argument("-o", "--output", required=True, help="output hexspec HDF5 file (with --force, results are added if it exists)")
    add_force_option(p)
    p.add_argument("--model", choices=("pseudo_voigt", "gaussian", "lorentzian"), default="pseudo_voigt",
                   help="peak shape (default pseudo_voigt)")
    p.add_argument("--method", choices=("ls", "ml"), default="ls",
                   help="ls: Poisson-weighted least squares; ml: Poisson maximum likelihood (low counts)")
    p.add_argument("--min-counts", type=float, default=50, help="skip pixels with fewer counts in the window (default 50)")
    p.add_argument("--png", help="PNG of the maps (default: OUTPUT with .png)")
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import fit
    from ..io import hdf5

    path = Path(args.cube)
    check_output(args.output, [path], args.force)   # before the fits, not after
    cube = read_kev_cube(path, "fit")
    emin, emax = args.window
    if not emin < emax:
        raise ConfigError(f"--window: expected EMIN < EMAX, found {emin} {emax}")
    peaks = fit.fit_cube(cube, (emin, emax), model=args.model, method=args.method, min_counts=args.min_counts)
    attrs = {"window_kev": [float(emin), float(emax)], "model": args.model, "method": args.method,
             "min_counts": float(args.min_counts), "input": str(path.resolve()),
             "equation": "PHYSICS.md eq. (4): A [eta L + (1-eta) G] + b0 + b1 (E - c)",
             "units": json_units()}
    with atomic_output(args.output, [path], args.force, keep_existing=True) as out:
        hdf5.write_results(out, "peak_fit", peaks.to_dict(), attrs)
    png = Path(args.png) if args.png else Path(args.output).with_suffix(".png")
    save_maps_png(png, {"centre (keV)": peaks.center, "FWHM (keV)": peaks.fwhm, "area (counts)": peaks.area,
                        "Lorentz fraction": peaks.eta, "reduced chi-square": peaks.redchi,
                        "fit ok": peaks.ok.astype(float)},
                  mask=peaks.ok, title=f"{path.name}: pseudo-Voigt fit {emin:g}-{emax:g} keV")
    if not args.quiet:
        ok = peaks.ok
        n_ok = int(ok.sum())
        print(f"{path.name}: {n_ok} of {ok.size} pixels fitted ok in {emin:g}-{emax:g} keV", end="")
        if n_ok:
            print(f"; median centre {np.median(peaks.center[ok]):.3f} keV, FWHM {np.median(peaks.fwhm[ok]):.3f} keV, "
                  f"area {np.median(peaks.area[ok]):.4g} counts, reduced chi-square {np.median(peaks.redchi[ok]):.3f}", end="")
        print(f" -> {args.output}, {png}")
    return 0


def json_units() -> dict:
    return {"center": "keV", "fwhm": "keV", "area": "counts", "eta": "1", "b0": "counts/keV", "b1": "counts/keV^2"}


def save_maps_png(path, maps: dict, mask=None, title=None, ncols=3, cmap="viridis"):
    """Write a grid of (rows, cols) maps as one PNG; values outside ``mask`` are left blank.

    Colour limits are the 1st-99th percentiles of the shown values so a few wild pixels
    do not wash out the image.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    # A fixed layout: tight_layout costs more than drawing the maps themselves.
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False,
                             gridspec_kw=dict(left=0.07, right=0.97, bottom=0.08, top=0.88 if title else 0.95,
                                              wspace=0.35, hspace=0.4))
    full_rows = max(np.shape(m)[0] for m in maps.values())
    full_cols = max(np.shape(m)[1] for m in maps.values())
    for ax, (name, arr) in zip(axes.flat, maps.items()):
        a = np.asarray(arr, dtype=np.float64)
        if mask is not None and "ok" not in name and a.shape == np.shape(mask):
            a = np.where(mask, a, np.nan)
        vals = a[np.isfinite(a)]
        vmin, vmax = (np.percentile(vals, [1, 99]) if vals.size else (0.0, 1.0))
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        # Block maps (coarser than the detector) are drawn over the same pixel coordinates.
        im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                       extent=(-0.5, full_cols - 0.5, full_rows - 0.5, -0.5))
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.85)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title + "  (x: column, y: row)", fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
