"""`hexspec selftest`: check the installation and compile every numba kernel ahead of time.

The kernels are compiled with ``cache=True``: the first run of a command compiles those it
uses (about a minute on a small machine) and later runs load them from ``__pycache__``.
``selftest`` does the compiling up front and checks, against the simulator's known
truth, that the chain simulate -> calibrate -> process -> fit gives the right numbers.
The command line also calls :func:`hexspec.kernel_cache.notice_if_cold` before every
command, which says in one line that compiling is about to happen.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np

# the cache checks lived here; they moved to hexspec.kernel_cache so that the command line
# imports no command (the old names still import from here)
from ..kernel_cache import chain_kernel_modules, cold_modules, kernel_modules, notice_if_cold  # noqa: F401

AM241_PHOTOPEAK_KEV = 59.5409
ELECTRON_REST_KEV = 510.99895


def register(sub) -> None:
    p = sub.add_parser("selftest", help="check the installation and compile every numba kernel ahead of time",
                       description="Check the libraries and HDF5 compression filters, then run a tiny simulate -> "
                                   "calibrate -> process -> fit -> sparam chain in a temporary folder and compare it "
                                   "with the simulator's truth. Compiles (and caches) every numba kernel, so that "
                                   "the first real run starts at full speed. Prints one line per check; exit "
                                   "status 1 if any fails.")
    p.add_argument("--keep", metavar="DIR", help="run in DIR and keep the files (default: a temporary folder)")
    p.set_defaults(func=run)


# ------------------------------------------------------------------ checks

def _check_imports():
    from ..io.provenance import library_versions
    v = library_versions()
    missing = [k for k, x in v.items() if x == "not installed"]
    if missing:
        raise RuntimeError(f"expected every library installed, found {', '.join(missing)} missing")
    for name in ("numpy", "numba", "scipy", "lmfit", "h5py", "xraylib", "hdf5plugin", "matplotlib"):
        __import__(name)
    return ", ".join(f"{k} {x}" for k, x in v.items())


def _check_filters(folder):
    import h5py
    import hdf5plugin
    absent = [n for n, fid in hdf5plugin.FILTERS.items() if not h5py.h5z.filter_avail(fid)]
    if absent:
        raise RuntimeError(f"expected every hdf5plugin filter available, found {', '.join(absent)} missing")
    data = (np.arange(64 * 80 * 80) % 977).astype(np.uint16).reshape(64, 80, 80)
    path = Path(folder) / "filters.h5"
    with h5py.File(path, "w") as f:
        for name, comp in (("blosc_lz4", hdf5plugin.Blosc(cname="lz4", clevel=5)),
                           ("bitshuffle_lz4", hdf5plugin.Bitshuffle()), ("zstd", hdf5plugin.Zstd())):
            f.create_dataset(name, data=data, chunks=(16, 80, 80), **comp)
    with h5py.File(path, "r") as f:
        for name in f:
            if not np.array_equal(f[name][()], data):
                raise RuntimeError(f"expected {name} to read back what was written, found different values")
    return f"{len(hdf5plugin.FILTERS)} hdf5plugin filters available; Blosc, Bitshuffle and Zstd round trips exact"


def _main(argv):
    from ..cli import main
    from ..io import provenance
    saved = dict(provenance._run)
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # the commands' summary lines
            rc = main(argv + ["-q"])
    finally:
        provenance._run.clear()
        provenance._run.update(saved)
    if rc != 0:
        raise RuntimeError(f"`hexspec {' '.join(argv)}` exited with status {rc}")


def _check_chain(folder):
    import h5py

    from ..io import hdf5
    d = Path(folder)
    sim, cal, kev, fits = d / "am241.h5", d / "calib.h5", d / "am241_kev.h5", d / "fits.h5"
    _main(["simulate", "--source", "am241", "--frames", "3000", "--shape", "8", "8", "--photon-rate", "9e4",
           "--seed", "11", "-o", str(sim)])
    with h5py.File(sim, "r") as f:
        true_g = f["entry/results/truth/gradients"][()]
        true_c = f["entry/results/truth/intercepts"][()]
    _main(["calibrate", "am241", str(sim), "-o", str(cal), "--min-peak-counts", "20", "--no-png"])
    arrays, _ = hdf5.read_results(cal, "calibration")
    good = arrays["good"].astype(bool)
    if good.sum() < good.size // 4:
        raise RuntimeError(f"expected most of the 64 simulated pixels calibrated, found {int(good.sum())}")
    # gradient error in keV at the photopeak: (g - g_true) * ADU(59.5 keV)
    adu = (AM241_PHOTOPEAK_KEV - true_c) / true_g
    err_kev = np.abs((arrays["gradients"] - true_g) * adu + (arrays["intercepts"] - true_c))[good]
    if not np.median(err_kev) < 0.3:
        raise RuntimeError(f"expected the calibration within 0.3 keV of the truth at 59.5 keV, found a median "
                           f"error of {np.median(err_kev):.3f} keV")
    # process with the true calibration, then fit the photopeak: its centre is 59.54 keV
    _main(["process", str(sim), "--calibration", str(sim), "-o", str(kev), "--charge-sharing", "csd"])
    _main(["fit", str(kev), "--energy-window-kev", "55", "64", "--model", "gaussian", "--min-counts", "20",
           "-o", str(fits)])
    arrays, _ = hdf5.read_results(fits, "peak_fit")
    ok = arrays["ok"].astype(bool)
    if ok.sum() < 8:
        raise RuntimeError(f"expected at least 8 pixels with a photopeak fit, found {int(ok.sum())}")
    centre = float(np.median(arrays["center"][ok]))
    if not abs(centre - AM241_PHOTOPEAK_KEV) < 0.3:
        raise RuntimeError(f"expected the fitted photopeak at {AM241_PHOTOPEAK_KEV} keV, found {centre:.3f} keV")
    # compiles the S-parameter kernels (Am-241 data are no Compton profile: nothing to compare). sparam
    # refuses data with no counts in its p_z windows, so the incident energy is the one whose Compton
    # peak at 90 degrees falls on the 59.54 keV photopeak: E1 = E' / (1 - E' / m_e c^2)
    e1 = AM241_PHOTOPEAK_KEV / (1.0 - AM241_PHOTOPEAK_KEV / ELECTRON_REST_KEV)
    _main(["sparam", str(kev), "--e1", f"{e1:.2f}", "--theta", "90", "--no-background", "--min-counts", "1",
           "-o", str(d / "s.h5")])
    return (f"simulate -> calibrate -> process -> fit: calibration within {np.median(err_kev):.3f} keV of the "
            f"truth at 59.5 keV ({int(good.sum())} of 64 pixels), photopeak fitted at {centre:.3f} keV")


def run(args) -> int:
    folder_ctx = tempfile.TemporaryDirectory(prefix="hexspec-selftest-") if not args.keep else None
    folder = Path(args.keep) if args.keep else Path(folder_ctx.name)
    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        for label, check in (("imports", _check_imports), ("HDF5 filters", lambda: _check_filters(folder)),
                             ("round trip", lambda: _check_chain(folder))):
            t0 = time.monotonic()
            try:
                text = check()
                print(f"ok    {label}: {text} ({time.monotonic() - t0:.1f} s)", flush=True)
            except Exception as exc:   # a check that fails is reported and counted, not raised
                failed += 1
                print(f"FAIL  {label}: {type(exc).__name__}: {exc}", flush=True)
    finally:
        if folder_ctx is not None:
            folder_ctx.cleanup()
    cold = cold_modules()
    if cold:
        print(f"note  not compiled ahead (compiled on first use): {', '.join(p.name for p in cold)}")
    print("hexspec selftest: " + ("all checks passed" if not failed else f"{failed} check(s) failed"))
    return 1 if failed else 0
