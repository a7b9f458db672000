"""`hexspec view SOURCE`: the live viewer (count image, spectra, rates) on any frame source."""

from __future__ import annotations

from ..errors import ConfigError
from .common import add_processing_options, config_from_args

DESCRIPTION = """\
Open a live view of a detector stream: the count image over an energy window, the
spectrum of the pixel under the cursor or of a region, the summed spectrum, and the
frame, event, dropped and corrupt counts. Processing runs in a worker thread; the
display refreshes at a steady rate whatever the input rate.

SOURCE is a URL: tcp://HOST:PORT[?socket=sub|pull], ipc://PATH, serial://PORT?baud=..,
file://PATH[?rate=fps], sim://?rate=fps&source=am241|compton.

Headless (for automation): --screenshot out.png renders offscreen, runs for
--exit-after seconds (default 5) and saves a picture of the window.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("view", help="live viewer: count image, spectra and rates from any source",
                              description=DESCRIPTION, formatter_class=_raw_formatter())
    p.add_argument("source", metavar="SOURCE", help="frame source URL (tcp://, ipc://, serial://, file://, sim://)")
    p.add_argument("--screenshot", metavar="PNG", help="render offscreen and save a picture of the window, then exit")
    p.add_argument("--exit-after", type=float, metavar="S", help="close after S seconds (default 5 with --screenshot)")
    p.add_argument("--refresh", type=float, default=10.0, metavar="HZ", help="display refresh rate (default 10 Hz)")
    p.add_argument("--e1", type=float, default=115.0, metavar="KEV",
                   help="incident energy in keV, for the Compton window and the S-parameter map (default 115)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--energy-window", nargs=2, type=float, metavar=("EMIN", "EMAX"),
                   help="initial energy window of the count image (keV, or ADU uncalibrated)")
    g.add_argument("--compton-window", action="store_true",
                   help="start with the count image over the Compton peak (needs a calibration)")
    add_processing_options(p)
    p.set_defaults(func=run)


def _raw_formatter():
    import argparse
    return argparse.RawDescriptionHelpFormatter


def _with_simulator_calibration(config, source, args):
    """For sim:// without a calibration, use the simulator's own gain maps so energies are in keV.

    The simulator knows its detector's calibration exactly; showing ADU would only hide
    the spectra a user came to look at. Any calibration option given wins.
    """
    simulator = getattr(source, "simulator", None)
    gradients = getattr(simulator, "gradients", None)
    intercepts = getattr(simulator, "intercepts", None)
    if config.calibrated or gradients is None or intercepts is None:
        return config
    print(f"{args.source}: using the simulator's own energy calibration "
          "(give --gradients/--intercepts or --calibration to use another)")
    return config.replace(gradients=gradients, intercepts=intercepts)


def run(args) -> int:
    try:
        import pyqtgraph  # noqa: F401  (checked here to give a useful message)
    except ImportError as exc:
        raise ConfigError(f"the viewer needs the 'viewer' extra (pyqtgraph, PySide6): pip install 'hexspec[viewer]' ({exc})") from None
    if args.refresh <= 0:
        raise ConfigError(f"--refresh: expected a positive rate in Hz, found {args.refresh}")
    if args.exit_after is not None and args.exit_after < 0:
        raise ConfigError(f"--exit-after: expected seconds >= 0, found {args.exit_after}")
    if "://" not in args.source:
        raise ConfigError(f"SOURCE {args.source!r}: expected a URL such as tcp://HOST:PORT, serial:///dev/ttyACM0, "
                          "file:///data/run.h5 or sim://")
    shape = tuple(args.shape) if args.shape else None
    config = config_from_args(args, shape=shape)
    from ..drivers import open_source
    from ..viewer.app import run_viewer

    # A live view waits for data however long it takes; closing the window ends it.
    open_options = {"shape": shape, "timeout_s": None}
    if args.source.startswith("sim://"):
        # The simulator's gain maps are needed here; the child process feeding the viewer
        # opens its own simulator with the same seed. (Other sources are not opened twice:
        # a PULL socket opened and closed here would take frames meant for the viewer.)
        probe = open_source(args.source, **open_options)
        try:
            config = _with_simulator_calibration(config, probe, args)
        finally:
            probe.close()
    window = "compton" if args.compton_window else (tuple(args.energy_window) if args.energy_window else None)
    run_viewer(args.source, config, source_label=args.source, refresh_hz=args.refresh, e1_kev=args.e1,
               screenshot=args.screenshot, exit_after=args.exit_after, window_kev=window, open_options=open_options)
    if args.screenshot:
        print(f"screenshot saved to {args.screenshot}")
    return 0
