"""`hexspec tomo reconstruct`: projections (Data Exchange, TIFF, NumPy) -> FBP volume in hexspec HDF5 + PNG."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..errors import ConfigError, FormatError
from ..io.outputs import add_force_option, check_output
from .common import Progress, add_quiet_option

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def memory_size(text: str) -> int:
    """argparse type: '2GB', '512MB', '1.5G', '100000000' -> bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 2GB or 512MB, found {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, found {text!r}")
    return int(value)


def register(sub) -> None:
    from ..tomo.prep import RING_METHODS
    from ..tomo.rec import FILTERS
    p = sub.add_parser("reconstruct", help="reconstruct a volume from projections by filtered back projection",
                       description="Read projections (APS Data Exchange HDF5, a TIFF stack or folder, .npy/.npz), "
                                   "correct them with flat and dark fields, take -log, remove stripes (rings), find "
                                   "the rotation centre (or take --center) and reconstruct every detector row by "
                                   "filtered back projection. Large inputs are processed in slabs of rows so the "
                                   "working memory stays within --max-memory. Writes a hexspec HDF5 volume "
                                   "(z, y, x) with voxel size, centre, filter, ring method and the input's "
                                   "provenance, and a PNG of the central slices.")
    p.add_argument("input", help="projections: Data Exchange .h5, .tif/.tiff (or a folder of them), .npy or .npz")
    p.add_argument("-o", "--output", required=True, help="output hexspec HDF5 volume")
    p.add_argument("--center", type=float, metavar="PX",
                   help="rotation axis as a detector column in pixels (default: found automatically)")
    p.add_argument("--ring-removal", default="masked", choices=RING_METHODS, metavar="NAME",
                   help=f"stripe/ring removal: {', '.join(RING_METHODS)} (default masked)")
    p.add_argument("--filter", dest="filter_name", default="ramlak", choices=FILTERS, metavar="NAME",
                   help=f"FBP filter: {', '.join(FILTERS)} (default ramlak)")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                   help="working-memory budget, e.g. 2GB (default: a quarter of the machine's memory)")
    p.add_argument("--voxel-size-mm", type=float, metavar="MM",
                   help="detector pixel size in mm (default: from the file, else 1 with values per pixel)")
    p.add_argument("--rows", nargs=2, type=int, metavar=("START", "STOP"), help="reconstruct detector rows START..STOP-1 only (default: every row)")
    p.add_argument("--png", help="PNG of the central slices (default: OUTPUT with .png)")
    add_force_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def _provenance(path: Path) -> dict:
    st = path.stat()
    from datetime import datetime, timezone
    size = st.st_size if path.is_file() else sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return {"path": str(path.resolve()), "size_bytes": int(size),
            "mtime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")}


def run(args) -> int:
    import warnings

    import numpy as np

    from ..tomo import io as tio
    from ..tomo import rec

    src = Path(args.input)
    out = Path(args.output)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    if not src.exists():
        raise FormatError(f"{src}: no such file")
    check_output(out, [src], args.force)
    check_output(png, [src], args.force, "--png")
    if args.voxel_size_mm is not None and not args.voxel_size_mm > 0:
        raise ConfigError(f"--voxel-size-mm: expected a positive size in mm, found {args.voxel_size_mm}")

    quiet = args.quiet or not sys.stdout.isatty()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        projections = tio.open_projections(src)
    for w in caught:
        print(f"hexspec tomo reconstruct: warning: {w.message}", file=sys.stderr)
    with projections:
        nang, nrow, ncol = projections.shape
        voxel = args.voxel_size_mm or projections.pixel_size_mm
        if projections.flat is None:
            mid = np.asarray(projections.proj[:, nrow // 2, :])
            if np.nanmax(mid) > 1.5:
                print(f"hexspec tomo reconstruct: warning: {src.name} has no flat field, so its values are taken as "
                      f"transmission, but they reach {np.nanmax(mid):.4g} (counts?)", file=sys.stderr)
        progress = Progress("reconstruct", quiet=quiet)
        info = {}

        def writer_factory(shape, found):
            center = args.center if found is None else found.center_px
            info["found"] = found
            process = {
                "command": " ".join(sys.argv) if sys.argv else "hexspec tomo reconstruct",
                "method": "filtered back projection",
                "center_px": float(center),
                "center_found": found is not None,
                "center_confidence": float(found.confidence) if found is not None else -1.0,
                "filter_name": args.filter_name,
                "ring_removal": args.ring_removal,
                "n_angles": int(nang),
                "theta_range_deg": [float(np.rad2deg(projections.theta_rad.min())),
                                    float(np.rad2deg(projections.theta_rad.max()))],
                "detector_shape": [int(nrow), int(ncol)],
                "rows": list(args.rows) if args.rows else [0, int(nrow)],
                "flat_frames": 0 if projections.flat is None else int(projections.flat.shape[0]),
                "dark_frames": 0 if projections.dark is None else int(projections.dark.shape[0]),
                "voxel_size_known": voxel is not None,
                "input": _provenance(src),
            }
            return tio.create_volume(out, shape, np.float32, voxel or 1.0, name="volume",
                                     process_name="reconstruction", process=process,
                                     units="1/mm" if voxel else "1/pixel", force=args.force)

        result = rec.reconstruct_to_file(projections, writer_factory, center=args.center,
                                         ring_removal=args.ring_removal, filter_name=args.filter_name,
                                         voxel_size_mm=voxel, max_memory_bytes=args.max_memory,
                                         rows=tuple(args.rows) if args.rows else None,
                                         progress=lambda done, total: progress.update(slices=f"{done}/{total}"))
        progress.close()
    save_central_slices_png(out, png, title=f"{src.name}: FBP, centre {result['center_px']:.2f} px, "
                                            f"{args.filter_name}, rings {args.ring_removal}")
    if not args.quiet:
        found = info.get("found")
        how = (f"found, confidence {found.confidence:.2f}" if found is not None else "given")
        print(f"{src.name}: {nang} angles x {nrow} rows x {ncol} cols; centre {result['center_px']:.2f} px ({how}); "
              f"{result['shape'][0]} slices of {ncol} x {ncol}, {result['slab_rows']} rows per slab -> {out}, {png}")
    return 0


# The plot writer lived here and moved to hexspec.plots; importing it from here still works.
from ..plots import save_central_slices_png  # noqa: E402, F401
