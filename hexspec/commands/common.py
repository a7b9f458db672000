"""Options and helpers shared by subcommands: processing options, progress display."""

from __future__ import annotations

import argparse
import sys
import time

from ..config import ProcessingConfig
from ..errors import ConfigError
from ..bins import EnergyBins


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {v}")
    return v


def add_processing_options(parser) -> None:
    """Options mirroring ProcessingConfig field by field (DESIGN.md, command line)."""
    g = parser.add_argument_group("processing")
    g.add_argument("--config", metavar="FILE", help="JSON or TOML file of processing options (command-line options override it)")
    g.add_argument("--threshold", metavar="VALUE|FILE", help="hit when ADU > threshold: a number or a per-pixel map file")
    g.add_argument("--gradients", metavar="VALUE|FILE", help="keV per ADU: a number or a per-pixel map file")
    g.add_argument("--intercepts", metavar="VALUE|FILE", help="keV: a number or a per-pixel map file")
    g.add_argument("--calibration", metavar="FILE", help="hexspec HDF5 calibration (from `hexspec calibrate`): gradients and intercepts")
    g.add_argument("--next-frame", dest="next_frame", action=argparse.BooleanOptionalAction, default=None,
                   help="discard hits at pixels hit in the previous frame (--no-next-frame to keep them)")
    g.add_argument("--charge-sharing", choices=("none", "csd", "csa"), help="charge-sharing handling (default csd)")
    g.add_argument("--window", type=int, choices=(3, 5), help="charge-sharing window (default 3)")
    g.add_argument("--max-cluster-size", type=positive_int, metavar="N", help="with csa: drop clusters of more than N pixels")
    g.add_argument("--bins", nargs=3, type=float, metavar=("START", "STOP", "WIDTH"), help="histogram bins (keV, or ADU uncalibrated)")
    g.add_argument("--shape", nargs=2, type=positive_int, metavar=("ROWS", "COLS"), help="detector shape for headerless raw files (default 80 80)")


def _value_or_map(text, shape, name):
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    from ..io.calfiles import read_map
    if shape is None:
        raise ConfigError(f"--{name} {text}: a map file needs the detector shape (give --shape ROWS COLS)")
    return read_map(text, shape)


def config_from_args(args, shape=None, base: ProcessingConfig | None = None) -> ProcessingConfig:
    """ProcessingConfig from ``base`` (or defaults), then --config, then command-line overrides.

    Per-pixel map files are read for ``shape``.
    """
    base = base.to_dict() if base is not None else {}
    if getattr(args, "config", None):
        base.update(ProcessingConfig.read_options(args.config))
    if getattr(args, "calibration", None):
        from ..io.hdf5 import read_calibration
        cal = read_calibration(args.calibration)
        base["gradients"], base["intercepts"] = cal["gradients"], cal["intercepts"]
    for name in ("threshold", "gradients", "intercepts"):
        v = _value_or_map(getattr(args, name, None), shape, name)
        if v is not None:
            base[name] = v
    for name in ("next_frame", "charge_sharing", "window", "max_cluster_size"):
        v = getattr(args, name, None)
        if v is not None:
            base[name] = v
    if getattr(args, "bins", None):
        base["bins"] = EnergyBins(*args.bins)
    cfg = ProcessingConfig.from_dict(base)
    if shape is not None:
        cfg.pixel_maps(shape)   # fail now, naming the shape, if a map does not fit
    return cfg


def read_kev_cube(path, purpose: str):
    """The spectral cube of a hexspec file, which must be energy-calibrated (keV)."""
    from pathlib import Path

    from ..errors import FormatError
    from ..io import hdf5
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    cube = hdf5.read_cube(path)
    if cube.unit != "keV":
        raise ConfigError(f"{path}: the cube is in {cube.unit}; {purpose} needs an energy-calibrated cube in keV")
    return cube


def add_quiet_option(parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")


class Progress:
    """A one-line progress display on a terminal; silent in scripts or with --quiet.

    Call ``update(**figures)`` as often as you like; it redraws at most 4 times a second.
    """

    def __init__(self, label: str, quiet: bool = False, stream=None, total=None):
        self.stream = stream or sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self.label = label
        self.total = total
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, force=False, **fig) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        elapsed = now - self.start
        parts = [f"{self.label} {elapsed:6.1f} s"]
        frames = fig.pop("frames", None)
        if frames is not None:
            parts.append(f"{frames} frames" + (f"/{self.total}" if self.total else ""))
            parts.append(f"{frames / max(elapsed, 1e-9):,.0f} frames/s")
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in fig.items()]
        self.stream.write("\r" + "  ".join(parts) + "\033[K")
        self.stream.flush()

    def close(self, **fig) -> None:
        if self.enabled:
            self.update(force=True, **fig)
            self.stream.write("\n")
            self.stream.flush()


