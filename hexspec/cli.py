"""The `hexspec` command.

Each subcommand lives in its own module of hexspec.commands, which defines
``register(subparsers)``; this file only assembles them and turns HexspecError into a
one-line message and a non-zero exit status (no traceback for user errors).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from . import __version__
from .commands import register_modules
from .errors import HexspecError
from .shutdown import TERMINATED

#: subcommand -> module in hexspec.commands
COMMANDS = {
    "demo": "demo",
    "simulate": "simulate",
    "serve-sim": "serve_sim",
    "record": "record",
    "process": "process",
    "calibrate": "calibrate",
    "fit": "fit",
    "sparam": "sparam",
    "view": "view",
    "recover": "recover",
    "tomo": "tomo",
    "correlate": "correlate",
    "selftest": "selftest",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hexspec",
        description="Spectral imaging with HEXITEC detectors: frames -> events -> spectra -> Compton/S/Li maps.")
    parser.add_argument("--version", action="version", version=f"hexspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_modules(sub, COMMANDS.values())
    return parser


def main(argv=None) -> int:
    """Run one command; returns its exit status.

    Run as a program (``argv`` None), a command stopped by SIGTERM exits as soon as its
    files are closed, without the second or so the interpreter spends tearing down
    numba and friends: the promise is to stop within one second.
    """
    rc = _main(argv)
    if argv is None and TERMINATED.is_set():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
    return rc


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = None
    # not the viewer: an exception raised inside Qt's event loop would be printed and
    # ignored, while the default action of SIGTERM ends it at once
    if args.command != "view" and threading.current_thread() is threading.main_thread():
        # SIGTERM ends a command as Ctrl-C does (within a second, cleaning up temporary
        # outputs); record and serve-sim install their own handlers for a clean stop
        previous = signal.signal(signal.SIGTERM, _terminate)
    from .io import provenance
    if argv is None and args.command != "selftest":
        # a real command line, not a call from Python: say once that the first run compiles
        from .kernel_cache import notice_if_cold
        notice_if_cold()
    try:
        provenance.begin(sys.argv[1:] if argv is None else list(argv), args.command, provenance.cli_inputs(args))
        return int(args.func(args) or 0)
    except HexspecError as exc:
        print(f"hexspec {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hexspec {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into a command that stopped reading (e.g. `| head`): not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:
        # the file system or a damaged file (h5py reports both as OSError): one line, no traceback
        print(f"hexspec {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame):
    TERMINATED.set()
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
