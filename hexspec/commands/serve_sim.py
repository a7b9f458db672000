"""`hexspec serve-sim`: publish simulated frames live over ZMQ or a serial link."""

from __future__ import annotations

import signal
import sys
import threading

from ..detector import HEXITEC
from ..errors import ConfigError
from .common import Progress, add_batch_option, add_quiet_option
from .simulate import add_simulation_options, simulator_from_args, source_url

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5020"


def register(sub) -> None:
    p = sub.add_parser(
        "serve-sim", help="publish simulated frames over ZMQ (odin-data live view) or a serial link",
        description="Stand in for a detector: simulate frames and publish them at the detector's frame rate "
                    "(or as fast as possible) over ZMQ in the odin-data live-view format, or over a serial "
                    "port in the hexspec serial framing. Ctrl-C stops cleanly.",
        epilog="Watch it with `hexspec view tcp://127.0.0.1:5020` or record it with "
               "`hexspec record tcp://127.0.0.1:5020?socket=sub -o run.h5`.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--zmq", metavar="ENDPOINT", help=f"ZMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    where.add_argument("--serial", metavar="PORT", help="serial device or pyserial URL to write to")
    p.add_argument("--socket", choices=("pub", "push"), default="pub",
                   help="ZMQ socket: pub (live view, drops for slow readers) or push (lossless, waits for a reader) "
                        "(default pub)")
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument("--frames-per-message", type=int, default=1, metavar="K",
                   help="ZMQ: frames packed into one message (default 1, as odin-data sends)")
    p.add_argument("--rate", type=float, default=HEXITEC.frame_rate_hz, metavar="FPS",
                   help=f"frames per second (default {HEXITEC.frame_rate_hz}; 0 for as fast as possible)")
    p.add_argument("-n", "--frames", type=int, metavar="N", help="stop after N frames (default: until Ctrl-C)")
    add_batch_option(p, dest="batch", help="largest batch of frames simulated at once")
    add_simulation_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def open_sink(args):
    """The ZmqPublisher or SerialWriter the options ask for."""
    from ..drivers import SerialWriter, ZmqPublisher

    if args.serial:
        return SerialWriter(args.serial, baud=args.baud), f"serial {args.serial}"
    endpoint = args.zmq or DEFAULT_ENDPOINT
    sink = ZmqPublisher(endpoint, socket_type=args.socket.upper(), frames_per_message=args.frames_per_message)
    return sink, f"{args.socket.upper()} {sink.endpoint}"


def run(args) -> int:
    if args.rate < 0:
        raise ConfigError(f"--rate: expected frames per second >= 0 (0: unlimited), found {args.rate}")
    if args.frames is not None and args.frames < 0:
        raise ConfigError(f"--frames: expected >= 0, found {args.frames}")
    from ..sim.publish import publish_frames

    sim = simulator_from_args(args)
    sink, where = open_sink(args)
    stop = threading.Event()
    previous = None

    def terminate(signum, frame):
        # SIGTERM (a service manager, `kill`) stops as Ctrl-C does: raising here also ends a
        # send blocked on a PUSH socket with no reader, which setting a flag cannot
        from ..shutdown import TERMINATED
        TERMINATED.set()
        stop.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, terminate)
    prog = Progress("serve-sim", quiet=args.quiet)
    rate_text = "as fast as possible" if not args.rate else f"{args.rate:g} frames/s"
    print(f"{source_url(args)} -> {where}, {rate_text}; Ctrl-C stops", file=sys.stderr, flush=True)
    stats = None
    interrupted = False
    try:
        stats = publish_frames(sim, sink, rate_hz=args.rate or None, n_frames=args.frames, batch_frames=args.batch,
                               stop=stop, on_batch=lambda s: prog.update(frames=s.frames, lag=f"{s.lag_s:.2f} s"))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if interrupted and hasattr(sink, "frames_per_message"):
            sink.close(linger_s=0.5)     # stop within a second even if a slow reader holds messages
        else:
            sink.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    frames = getattr(sink, "frames_sent", stats.frames if stats else 0)
    prog.close(frames=frames)
    how = "interrupted" if interrupted or stop.is_set() else "done"
    print(f"{where}: {frames} frames sent ({how})", file=sys.stderr)
    return 0
