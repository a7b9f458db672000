"""`hexspec process`: frames (or events) from a file -> events and spectra in hexspec HDF5."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError, FormatError
from ..io.outputs import add_force_option, atomic_output
from .common import (Progress, add_batch_option, add_frames_option, add_processing_options, add_quiet_option,
                     check_writable, config_from_args, input_shape, positive_int)


def register(sub) -> None:
    p = sub.add_parser("process", help="process a frame file (GigE .bin, odin-data or hexspec HDF5) into events and spectra",
                       description="Offline processing: threshold, next-frame, calibration, charge sharing and "
                                   "histogramming of every frame in INPUT, written to a hexspec HDF5 file. "
                                   "A hexspec file holding only events is re-histogrammed with the given bins.")
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="input file(s): .bin (raw GigE frames), odin-data HDF5, or hexspec HDF5 (frames or events); "
                        "several frame files are processed as one run, in the order given")
    p.add_argument("-o", "--output", required=True, help="output hexspec HDF5 file")
    p.add_argument("--events", action="store_true", help="store events (default: events and spectra)")
    p.add_argument("--spectra", action="store_true", help="store the per-pixel spectral cube (default: events and spectra)")
    add_batch_option(p)
    p.add_argument("--threads", type=positive_int, default=1,
                   help="worker threads for event extraction and histogramming (default 1); they meet once "
                        "per batch, so give them large batches, e.g. --threads 2 --batch-size 10000")
    p.add_argument("--reorder", action="store_true", help="undo the ASIC pixel order of older firmware (.bin files)")
    p.add_argument("--allow-partial", action="store_true", help="read the whole frames of a truncated .bin file")
    add_frames_option(p, dest="max_frames")
    p.add_argument("--png", help="picture of the count image and summed spectrum (default: OUTPUT with .png)")
    g = p.add_argument_group("parallel (frame files; needs the cluster extra: dask[distributed])")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="process on a local Dask cluster of N worker processes; same cube and counters as without (default: one process)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="process on an existing Dask cluster, e.g. tcp://host:8786 (its workers must see the files; default: none)")
    g.add_argument("--resume", action="store_true",
                   help="continue a cancelled --workers/--scheduler run from OUTPUT.manifest.json")
    g.add_argument("--chunk-frames", type=positive_int, default=100_000, metavar="N",
                   help="frames per parallel task (default 100000)")
    add_processing_options(p)
    add_force_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    many = len(args.input) > 1 or args.workers or args.scheduler
    if not many:
        if args.resume:
            raise ConfigError("--resume continues a --workers or --scheduler run; give one of them")
        path = Path(args.input[0])
        if not path.exists():
            raise FormatError(f"{path}: no such file")
    inputs = (*args.input, getattr(args, "calibration", None), getattr(args, "config", None))
    with atomic_output(args.output, inputs, args.force) as out:
        return run_many(args, out) if many else _run(args, path, out)


def _run(args, path, out) -> int:
    from .. import pipeline
    from ..io import framefile, hdf5
    from ..io.readahead import ReadAhead

    kind = framefile.frame_file_kind(path)
    events_only = kind == "hexspec" and hdf5.count_frames(path) == 0
    shape = input_shape(path, args)
    check_writable(args.output, "-o")
    png = check_writable(args.png if args.png else Path(args.output).with_suffix(".png"), "--png")
    if events_only:
        # The events already carry energies (keV or ADU, as their stored config says):
        # only the binning can change.
        for name in ("threshold", "gradients", "intercepts", "calibration", "charge_sharing", "cluster_window",
                     "max_cluster_size", "next_frame"):
            if getattr(args, "window" if name == "cluster_window" else name, None) is not None:
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
    source = ReadAhead(source)    # reading and decompression overlap the kernel
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
    save_extractor_stats(out, ex if not events_only else read_extractor_stats(path))
    unit = cfg.energy_unit
    save_overview_png(png, result.cube, title=f"{path.name}: {st.events:,} events")
    what = f"{st.frames} frames ({st.frames_dropped} dropped)" if not events_only else "events re-histogrammed"
    print(f"{path.name}: {what}, {st.events} events "
          f"in {st.elapsed_s:.2f} s; hits {ex.get('hits', 0)}, next-frame removed {ex.get('next_frame_removed', 0)}, "
          f"shared removed {ex.get('shared_removed', 0)}; spectra in {unit}, "
          f"{result.cube.underflow} below and {result.cube.overflow} above the bins -> {args.output}, {png}")
    return 0


def run_many(args, out) -> int:
    """Several frame files as one run, serial or on Dask (--workers / --scheduler)."""
    from .. import parallel, pipeline
    from ..io import framefile

    paths = [str(p) for p in args.input]
    parallel_run = bool(args.workers or args.scheduler)
    if args.workers and args.scheduler:
        raise ConfigError("--workers starts a local cluster, --scheduler uses an existing one: give one of them")
    if parallel_run:
        for name in ("max_frames", "reorder", "allow_partial"):
            if getattr(args, name):
                raise ConfigError(f"--{name.replace('_', '-')} is not available with --workers/--scheduler")
        if args.threads > 1:
            raise ConfigError("--threads applies to one process; with --workers each worker runs one thread")
    elif args.resume:
        raise ConfigError("--resume continues a --workers or --scheduler run; give one of them")
    first = next((p for p in paths if Path(p).exists()), None)
    if first is None:
        raise FormatError(f"{paths[0]}: no such file")
    shape = framefile.frame_shape(first, default=tuple(args.shape) if args.shape else (80, 80))
    cfg = config_from_args(args, shape)
    store_events = args.events or not args.spectra
    prog = Progress("process", quiet=args.quiet)
    failed = {}
    # with --events each task keeps its chunk's events here; they are merged in run order
    # below (the folder outlives a cancelled run, for --resume)
    events_dir = Path(str(args.output) + ".events.d") if parallel_run and args.events else None
    if parallel_run:
        shown = []

        def progress(done, total, rate, link):
            if link and not shown and prog.enabled:
                print(f"Dask dashboard: {link}", file=sys.stderr)
                shown.append(link)
            prog.total = total
            prog.update(frames=done)

        result = parallel.process_files(paths, cfg, workers=args.workers or 2, scheduler=args.scheduler,
                                        chunk_frames=args.chunk_frames, batch_frames=args.batch_size, shape=shape,
                                        manifest=str(args.output) + ".manifest.json", resume=args.resume,
                                        progress=progress, events_dir=events_dir)
        failed = result.failed
        store_events = events_dir is not None
    else:
        good = []
        for p in paths:
            try:
                framefile.frame_file_kind(p)
                good.append(p)
            except FormatError as exc:
                failed[p] = str(exc)
        prog.total = sum(framefile.count_frames(p, shape) for p in good)
        result = None
    sink = pipeline.HDF5Sink(out, shape, cfg, source="; ".join(str(Path(p).resolve()) for p in paths),
                             events=store_events, spectra=True)
    try:
        if result is None:
            result = pipeline.run(parallel.iter_files(good, args.batch_size, shape), cfg, sinks=[sink], shape=shape,
                                  threads=args.threads, max_frames=args.max_frames,
                                  progress=lambda st: prog.update(frames=st.frames, events=st.events,
                                                                  dropped=st.frames_dropped))
        else:
            if events_dir is not None:
                for index in result.done_chunks:
                    sink.writer.write_events(parallel.load_chunk_events(events_dir, index))
            sink.close(result)
    except BaseException:
        sink.writer.close()
        raise
    if events_dir is not None:
        import shutil
        shutil.rmtree(events_dir, ignore_errors=True)
    save_extractor_stats(out, result.extractor_stats)
    st = result.stats
    prog.close(frames=st.frames, events=st.events, dropped=st.frames_dropped)
    png = Path(args.png) if args.png else Path(args.output).with_suffix(".png")
    save_overview_png(png, result.cube, title=f"{len(paths)} files: {st.events:,} events")
    for p, why in failed.items():
        print(f"failed: {why}", file=sys.stderr)
    rate = st.frames / st.elapsed_s if st.elapsed_s > 0 else 0.0
    print(f"{len(paths) - len(failed)} of {len(paths)} files: {st.frames} frames ({st.frames_dropped} dropped), "
          f"{st.events} events in {st.elapsed_s:.2f} s ({rate:,.0f} frames/s); spectra in {cfg.energy_unit} "
          f"-> {args.output}, {png}")
    return 1 if failed else 0


#: The event extractor's counters stored by `process` in /entry/results/extractor (FORMATS: results).
EXTRACTOR_STATS = ("hits", "next_frame_removed", "shared_removed", "clusters_too_large", "events", "frames")


def save_extractor_stats(path, stats) -> None:
    """Store the event extractor's counters of a run (``EventExtractor.stats``) in /entry/results/extractor.

    The forward model's detector response needs them (`hexspec sparam --forward-model`): the
    hits per live pixel and frame give the chance that a neighbour was hit in the frame
    before, and the next-frame removals beyond chance the share of spilled pulses.
    """
    from ..io import hdf5
    stats = stats or {}
    if not stats.get("frames"):
        return
    hdf5.write_results(path, "extractor", {k: np.int64(stats.get(k, 0)) for k in EXTRACTOR_STATS},
                       {"description": "event extractor counters of the run: hits (before the next-frame "
                                       "correction), next_frame_removed, shared_removed, clusters_too_large, "
                                       "events, frames"})


def read_extractor_stats(path):
    """The counters :func:`save_extractor_stats` stored in ``path`` (dict), or None when it has none."""
    from ..errors import FormatError
    from ..io import hdf5
    try:
        arrays, _ = hdf5.read_results(path, "extractor")
    except FormatError:
        return None
    return {k: int(arrays[k]) for k in EXTRACTOR_STATS if k in arrays}


# The plot writer lived here and moved to hexspec.plots; importing it from here still works.
from ..plots import save_overview_png  # noqa: E402, F401
