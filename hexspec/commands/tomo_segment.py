"""`hexspec tomo segment`: the reference segmentation chain on a reconstructed volume."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.outputs import add_force_option, check_output


def _threshold(text):
    if text == "otsu":
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--threshold: expected 'otsu' or grey value(s) separated by commas, found {text!r}") from None
    return values if len(values) > 1 else values[0]


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment pores from solid in a reconstructed electrode volume",
                       description="Reference chain (PHYSICS.md section 6): 3x3x3 median, threshold, opening of the "
                                   "background by a ball (the electrode envelope, pores included), largest connected "
                                   "component (the electrode), unsharp mask, pore/solid (or pore/binder/active) "
                                   "thresholds inside the electrode. Every step and its parameters are recorded in "
                                   "the output. Labels (uint8): 0 outside, 1 pore, 2 solid; with --phases 3: "
                                   "2 binder, 3 active material.")
    p.add_argument("volume", help="reconstructed volume (hexspec HDF5 from `hexspec tomo reconstruct`)")
    p.add_argument("-o", "--output", required=True, help="output segmentation file (hexspec HDF5)")
    p.add_argument("--median", action="store_true", default=True, dest="median", help="3x3x3 median filter first (default)")
    p.add_argument("--no-median", action="store_false", dest="median", help="skip the median filter")
    p.add_argument("--electrode-threshold", default="otsu", metavar="otsu|VALUE",
                   help="grey value above which a voxel is material, for the electrode mask (default otsu)")
    p.add_argument("--opening-radius", type=float, default=11.0, metavar="VOXELS",
                   help="radius of the ball opening the background (default 11, 0 to skip); larger than the pores")
    p.add_argument("--no-largest", action="store_false", dest="largest",
                   help="keep every component of the electrode envelope, not only the largest")
    p.add_argument("--unsharp", nargs=2, type=float, default=(1.0, 1.0), metavar=("RADIUS", "AMOUNT"),
                   help="unsharp mask radius (voxels) and amount before the phase threshold (default 1 1)")
    p.add_argument("--no-unsharp", action="store_const", const=None, dest="unsharp", help="skip the unsharp mask (default: applied)")
    p.add_argument("--threshold", default="otsu", metavar="otsu|VALUE[,VALUE]",
                   help="phase threshold(s) inside the electrode: otsu (multi-Otsu with --phases 3) or grey values (default otsu)")
    p.add_argument("--phases", type=int, choices=(2, 3), default=2, help="2: pore/solid; 3: pore/binder/active (default 2)")
    add_force_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..tomo.io import read_volume, write_volume
    from ..tomo.segment import segment_electrode

    out = check_output(args.output, [args.volume], args.force)
    vol = read_volume(args.volume)
    electrode_threshold = _threshold(args.electrode_threshold)
    if isinstance(electrode_threshold, list):
        raise ConfigError("--electrode-threshold: expected one grey value or 'otsu'")
    seg = segment_electrode(vol.data, median=args.median, electrode_threshold=electrode_threshold,
                            opening_radius=args.opening_radius, largest=args.largest,
                            unsharp=tuple(args.unsharp) if args.unsharp else None,
                            threshold=_threshold(args.threshold), phases=args.phases)
    fractions = {name: float(np.mean(seg.labels[seg.electrode_mask] == code)) for name, code in seg.phases.items()}
    process = {"command": " ".join(sys.argv), "input": str(Path(args.volume).resolve()),
               "input_name": vol.name, "steps": seg.steps, "phases": seg.phases,
               "phase_codes": "0 outside the electrode, " + ", ".join(f"{c} {n}" for n, c in seg.phases.items()),
               "thresholds": seg.thresholds.tolist(), "volume_fractions": fractions,
               "input_process": vol.process}
    write_volume(out, seg.labels, vol.voxel_size_mm, name="segmentation", process_name="segment",
                 process=process, force=args.force)
    print(f"segmented {vol.data.shape} voxels of {vol.voxel_size_mm[0] * 1000:g} um: electrode "
          f"{seg.electrode_mask.mean() * 100:.1f}% of the volume; "
          + ", ".join(f"{n} {f * 100:.1f} vol%" for n, f in fractions.items())
          + f" (thresholds {', '.join(f'{t:.4g}' for t in seg.thresholds)}) -> {out}")
    return 0
