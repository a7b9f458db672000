"""`hexspec correlate`: XCT porosity per depth region against the Compton S and Li maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, FormatError
from ..io.outputs import add_force_option, check_output
from .common import positive_int

#: Energy window of the Compton count image (keV): the Compton peak of a 115 keV beam at 90 degrees.
IMAGE_WINDOW_KEV = (88.5, 101.0)


def register(sub) -> None:
    p = sub.add_parser(
        "correlate", help="register XCT porosity onto the Compton maps and correlate it with S and Li content",
        description="Split the segmented electrode into equal depth regions, project each to 2-D porosity, "
                    "area-average it to the Compton pixel (0.27 mm at the sample), turn it as the pinhole image, "
                    "register it onto each region's Compton image and correlate it with the S and Li maps. Writes "
                    "correlation.h5, regions.csv, overlay.png, scatter.png and report.html into the output directory.")
    p.add_argument("--xct", required=True, metavar="SEG.h5",
                   help="segmented volume (hexspec tomo segment): labels 0 outside the electrode, 1 pore, 2 solid, "
                        "or arrays pore_mask and electrode_mask beside the volume")
    p.add_argument("--compton", required=True, nargs="+", metavar="S.h5",
                   help="hexspec file(s) with /entry/results/s_parameter and /entry/spectra: one for all regions, "
                        "or one per depth region (region 1 first)")
    p.add_argument("--li", nargs="+", metavar="LI.h5",
                   help="file(s) with /entry/results/lithium (default: the --compton files, when they hold it)")
    p.add_argument("--regions", type=positive_int, default=3, help="equal depth regions (default 3)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=0,
                   help="volume axis through the electrode thickness (default 0, z)")
    p.add_argument("--pixel-mm", type=float, default=None,
                   help="sample width of one Compton pixel in mm (default 0.25 x 160/150)")
    p.add_argument("--transform", choices=("translation", "rigid", "similarity", "affine"), default="rigid",
                   help="registration transform of the XCT porosity map onto the Compton count image (default rigid)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    add_force_option(p)
    p.set_defaults(func=run)


def read_segmentation(path):
    """(pore_mask, electrode_mask, voxel_size_mm) of a segmented volume file."""
    from ..tomo.io import read_volume
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    vol = read_volume(path)
    dz, dy, dx = vol.voxel_size_mm
    if not (np.isclose(dz, dy) and np.isclose(dy, dx)):
        raise FormatError(f"{path}: expected isotropic voxels, found {vol.voxel_size_mm} mm")
    if "pore_mask" in vol.extra and "electrode_mask" in vol.extra:
        pores, electrode = vol.extra["pore_mask"].astype(bool), vol.extra["electrode_mask"].astype(bool)
    else:
        labels = np.asarray(vol.data)
        if labels.dtype.kind not in "biu" or labels.max() > 2:
            raise FormatError(f"{path}: expected labels 0 (outside), 1 (pore), 2 (solid), found dtype {labels.dtype} "
                              f"with values up to {labels.max()}")
        pores, electrode = labels == 1, labels > 0
    return pores, electrode, float(dx)


def _per_region(paths, n_regions, what):
    if len(paths) not in (1, n_regions):
        raise ConfigError(f"--{what}: expected one file or {n_regions} (one per region), found {len(paths)}")
    return list(paths) * (n_regions if len(paths) == 1 else 1)


def read_compton(path):
    """(count image, S, S error) of one measurement."""
    from ..io import hdf5
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    arrays, _ = hdf5.read_results(path, "s_parameter")
    cube = hdf5.read_cube(path)
    if cube.unit != "keV":
        raise ConfigError(f"{path}: the cube is in {cube.unit}; the Compton image needs an energy-calibrated cube in keV")
    image = cube.image(*IMAGE_WINDOW_KEV).astype(np.float64)
    if image.shape != arrays["s"].shape:
        raise FormatError(f"{path}: S map {arrays['s'].shape} and cube {image.shape} differ in shape")
    return image, arrays["s"], arrays["s_err"]


def _has_lithium(path):
    from ..io import hdf5
    try:
        hdf5.read_results(path, "lithium")
    except FormatError:
        return False
    return True


def read_lithium(path):
    from ..io import hdf5
    arrays, _ = hdf5.read_results(path, "lithium")
    return arrays["li"], arrays["li_err"]


def run(args) -> int:
    from ..tomo.correlate import COMPTON_PIXEL_MM, correlate
    from ..tomo.report import FILES, save_correlation

    inputs = [args.xct, *args.compton, *(args.li or ())]
    for name in FILES:                               # before any work
        check_output(Path(args.output) / name, inputs, args.force)
    pores, electrode, voxel_mm = read_segmentation(args.xct)
    comp = [read_compton(p) for p in _per_region(args.compton, args.regions, "compton")]
    li = li_err = None
    li_paths = args.li
    if li_paths is None and all(_has_lithium(p) for p in args.compton):
        li_paths = args.compton
    if li_paths:
        pairs = [read_lithium(p) for p in _per_region(li_paths, args.regions, "li")]
        li, li_err = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
    corr = correlate(pores, electrode, voxel_mm, np.stack([c[0] for c in comp]), np.stack([c[1] for c in comp]),
                     np.stack([c[2] for c in comp]), li, li_err, n_regions=args.regions, axis=args.axis,
                     pixel_mm=args.pixel_mm or COMPTON_PIXEL_MM, transform=args.transform)
    save_correlation(corr, args.output, force=True, title=f"hexspec correlate: {Path(args.xct).name}")
    for r in corr.regions:
        print(f"region {r.region}: porosity {r.porosity:.3f}, tortuosity {r.tortuosity:.2f}, S {r.s:.5f} +- {r.s_err:.5f}"
              + (f", 1-x {r.li:.3f} +- {r.li_err:.3f}" if li is not None else "")
              + f", shift {r.registration.shift_px[0]:+.2f} {r.registration.shift_px[1]:+.2f} px")
    f = corr.fit
    print(f"pixel fit ({f.n} pixels): {corr.meta['fit_of']} = {f.intercept:.4f} + {f.slope:.4f} (+- {f.slope_err:.4f}) "
          f"x porosity; wrote {args.output}/")
    return 0
