"""`hexspec record SOURCE_URL -o FILE`: record a live (or replayed) frame stream to hexspec HDF5."""

from __future__ import annotations

import sys

from ..io.outputs import OutputLock, add_force_option, check_output
from .common import (Progress, add_compression_option, add_frames_option, add_processing_options, add_quiet_option,
                     config_from_args)

_LIVE_HWM = 10_000   # ZMQ messages queued for the recorder: ~1 s of single 80x80 frames at 9 kHz (128 MB)


def register(sub) -> None:
    p = sub.add_parser(
        "record", help="record frames, events and spectra from a ZMQ, serial, file or simulated source",
        description="Record a frame stream into a hexspec HDF5 file, flushed at least once a second "
                    "(a crash keeps everything up to the last flush; Ctrl-C or SIGTERM closes the file cleanly). "
                    "Stores events and spectra unless told what to store.",
        epilog="SOURCE_URL: tcp://HOST:5020[?socket=sub|pull] (odin-data live view), ipc://PATH, "
               "serial:///dev/ttyACM0?baud=N, loop://, file://PATH[?rate=fps], "
               "sim://?rate=fps&source=am241|compton&seed=N. Common URL options: frames=N, timeout=S, shape=R,C.")
    p.add_argument("source", metavar="SOURCE_URL", help="where the frames come from")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output hexspec HDF5 file")
    p.add_argument("--raw", action="store_true", help="store raw frames")
    add_compression_option(p)
    p.add_argument("--events", action="store_true", help="store photon events")
    p.add_argument("--spectra", action="store_true", help="store the per-pixel spectral cube")
    add_frames_option(p, help="stop after N frames (default: until the source ends, --timeout or Ctrl-C)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="live sources: end after S seconds without data (default 10; 0 waits until Ctrl-C)")
    p.add_argument("-v", "--verbose", action="store_true", help="print a line to stderr after every flush")
    add_processing_options(p)
    add_force_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def _flush_line(recorder) -> None:
    print(f"flushed {recorder.frames_flushed} frames, {recorder.events_flushed} events", file=sys.stderr, flush=True)


def run(args) -> int:
    from ..drivers import open_source
    from ..drivers.base import query_options
    from ..drivers.recorder import record

    store_raw, store_events, store_spectra = args.raw, args.events, args.spectra
    if not (store_raw or store_events or store_spectra):
        store_events = store_spectra = True

    scheme, _, query = query_options(args.source)
    options = {}
    if scheme in ("tcp", "ipc") and "hwm" not in query:
        options["hwm"] = _LIVE_HWM
    if args.timeout is not None and scheme not in ("file", "sim"):
        options["timeout_s"] = None if args.timeout == 0 else args.timeout
    shape = tuple(args.shape) if args.shape else None
    # the output is checked and locked before connecting: frames are never received
    # only to find that they cannot be stored
    inputs = [getattr(args, "calibration", None), getattr(args, "config", None)]
    if scheme == "file":
        inputs.append(args.source.split("?", 1)[0][len("file://"):])
    check_output(args.output, inputs, args.force)
    lock = OutputLock(args.output)
    try:
        source = open_source(args.source, shape=shape, max_frames=args.frames, **options)
    except BaseException:
        lock.release()
        raise
    try:
        shape = shape or getattr(source, "shape", None)
        config = config_from_args(args, shape)
    except BaseException:
        source.close()
        lock.release()
        raise
    prog = Progress("record", quiet=args.quiet)

    def progress(recorder, stats):
        extra = {} if stats is None else {"dropped": stats.dropped, "corrupt": stats.corrupt}
        prog.update(frames=recorder.frames_received, events=recorder.events_received, **extra)

    result = record(source, args.output, config, raw=store_raw, events=store_events, spectra=store_spectra,
                    source_name=args.source, progress=progress, on_flush=_flush_line if args.verbose else None,
                    frame_compression=args.compression, lock=lock)
    prog.close(frames=result.frames, events=result.events, dropped=result.dropped, corrupt=result.corrupt)
    rate = result.frames / result.elapsed_s if result.elapsed_s > 0 else 0.0
    print(f"{args.source}: {result.frames} frames ({result.dropped} dropped, {result.corrupt} corrupt messages), "
          f"{result.events} events in {result.elapsed_s:.1f} s ({rate:,.0f} frames/s), "
          f"stopped by {result.stopped_by} -> {result.path}")
    return 0
