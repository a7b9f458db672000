"""`hexspec process`: frames (or events) from a file -> events and spectra in hexspec HDF5."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..io.outputs import add_force_option, atomic_output
from .common import Progress, add_processing_options, add_quiet_option, config_from_args, positive_int


def register(sub) -> None:
    p = sub.add_parser("process", help="process a frame file (GigE .bin, odin-data or hexspec HDF5) into events and spectra",
                       description="Offline processing: threshold, next-frame, calibration, charge sharing and "
                                   "histogramming of every frame in INPUT, written to a hexspec HDF5 file. "
                                   "A hexspec file holding only events is re-histogrammed with the given bins.")
    p.add_argument("input", help="input file: .bin (raw GigE frames), odin-data HDF5, or hexspec HDF5 (frames or events)")
    p.add_argument("-o", "--output", required=True, help="output hexspec HDF5 file")
    p.add_argument("--events", action="store_true", help="store events")
    p.add_argument("--spectra", action="store_true", help="store the per-pixel spectral cube")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="frames per batch (default 1000)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="worker threads for event extraction and histogramming (default 1); they meet once "
                        "per batch, so give them large batches, e.g. --threads 2 --batch-size 10000")
    p.add_argument("--reorder", action="store_true", help="undo the ASIC pixel order of older firmware (.bin files)")
    p.add_argument("--allow-partial", action="store_true", help="read the whole frames of a truncated .bin file")
    p.add_argument("--max-frames", type=positive_int, help="stop after N frames")
    p.add_argument("--png", help="picture of the count image and summed spectrum (default: OUTPUT with .png)")
    add_processing_options(p)
    add_force_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    path = Path(args.input)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    inputs = (path, getattr(args, "calibration", None), getattr(args, "config", None))
    with atomic_output(args.output, inputs, args.force) as out:
        return _run(args, path, out)


def _run(args, path, out) -> int:
    from .. import pipeline
    from ..io import framefile, hdf5

    kind = framefile.frame_file_kind(path)
    events_only = kind == "hexspec" and hdf5.count_frames(path) == 0
    shape = framefile.frame_shape(path, default=tuple(args.shape) if args.shape else (80, 80))
    if events_only:
        # The events already carry energies (keV or ADU, as their stored config says):
        # only the binning can change.
        for name in ("threshold", "gradients", "intercepts", "calibration", "charge_sharing", "window",
                     "max_cluster_size", "next_frame"):
            if getattr(args, name, None) is not None:
                raise FormatError(f"{path} holds events that were already extracted; --{name.replace('_', '-')} "
                                  "does not apply (only --bins does); process the raw frames to change it")
        stored = hdf5.read_config(path)
        cfg = config_from_args(args, shape, base=stored)
    else:
        cfg = config_from_args(args, shape)
    if kind == "gige":
        leftover = path.stat().st_size % (shape[0] * shape[1] * 2)
        if leftover and args.allow_partial:
            print(f"{path.name}: {leftover} trailing bytes after the last whole frame were not read", file=sys.stderr)
    store_events = args.events or not args.spectra
    store_spectra = args.spectra or not args.events
    if events_only:
        source = hdf5.iter_events(path)
        total = None
    else:
        source = framefile.iter_frame_file(path, args.batch_size, shape=shape, reorder=args.reorder,
                                           allow_partial=args.allow_partial)
        total = framefile.count_frames(path, shape)
    prog = Progress("process", quiet=args.quiet, total=total)
    sink = pipeline.HDF5Sink(out, shape, cfg, source=str(path.resolve()),
                             events=store_events, spectra=store_spectra)
    try:
        result = pipeline.run(source, cfg, sinks=[sink], shape=shape, threads=args.threads, max_frames=args.max_frames,
                              progress=lambda st: prog.update(frames=st.frames, events=st.events,
                                                              dropped=st.frames_dropped))
    except BaseException:
        sink.writer.close()
        raise
    st = result.stats
    prog.close(frames=st.frames, events=st.events, dropped=st.frames_dropped)
    ex = result.extractor_stats
    unit = cfg.energy_unit
    png = Path(args.png) if args.png else Path(args.output).with_suffix(".png")
    save_overview_png(png, result.cube, title=f"{path.name}: {st.events:,} events")
    what = f"{st.frames} frames ({st.frames_dropped} dropped)" if not events_only else "events re-histogrammed"
    print(f"{path.name}: {what}, {st.events} events "
          f"in {st.elapsed_s:.2f} s; hits {ex.get('hits', 0)}, next-frame removed {ex.get('next_frame_removed', 0)}, "
          f"shared removed {ex.get('shared_removed', 0)}; spectra in {unit}, "
          f"{result.cube.underflow} below and {result.cube.overflow} above the bins -> {args.output}, {png}")
    return 0


def save_overview_png(path, cube, title=None):
    """Count image (all energies) beside the summed spectrum (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11.5, 4.2), gridspec_kw=dict(width_ratios=(1, 1.6), wspace=0.35))
    image = cube.image()
    # percentile limits, so that a few hot pixels do not wash out the image
    vmin, vmax = np.percentile(image, [0.5, 99.5]) if image.size else (0, 1)
    im = a0.imshow(image, cmap="viridis", interpolation="nearest", vmin=vmin, vmax=max(vmax, vmin + 1))
    fig.colorbar(im, ax=a0, label="counts")
    a0.set_xlabel("column")
    a0.set_ylabel("row")
    a0.set_title("count image, all energies", fontsize=10)
    spec = cube.spectrum()
    a1.step(cube.centers, np.maximum(spec, 0.5), where="mid", lw=0.8)
    a1.set_yscale("log")
    a1.set_ylim(0.5, None)
    a1.set_xlabel(f"energy ({cube.unit})")
    a1.set_ylabel("counts per bin")
    a1.set_title("summed spectrum", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
