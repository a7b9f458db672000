"""Options and helpers shared by subcommands: processing options, progress display."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..config import ProcessingConfig
from ..errors import ConfigError
from ..bins import EnergyBins


#: Largest reading of the 14-bit ADC: a threshold there switches a pixel off.
ADC_MAX_ADU = 16383


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {v}")
    return v


def add_option(parser, *flags, aliases=(), **kw):
    """``parser.add_argument(*flags, **kw)`` plus hidden old spellings ``aliases``.

    One name per idea across the commands (DESIGN.md, command line); the old spellings keep
    working but stay out of the help.
    """
    if aliases and kw.pop("required", False):
        # required, under either spelling: argparse names only the visible one when neither is given
        parser = parser.add_mutually_exclusive_group(required=True)
    action = parser.add_argument(*flags, **kw)
    if aliases:
        kw = {k: v for k, v in kw.items() if k not in ("help", "default", "dest")}
        parser.add_argument(*aliases, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)
    return action


def add_frames_option(parser, dest="frames", help="stop after N frames (default: all)") -> None:
    """-n/--frames N, the one name for "stop after N frames" (old spelling --max-frames)."""
    add_option(parser, "-n", "--frames", aliases=("--max-frames",), dest=dest, type=positive_int, metavar="N",
               help=help)


def add_batch_option(parser, default=1000, dest="batch_size", help="frames per batch") -> None:
    """--batch-size N, the one name for frames handled at once (old spelling --batch)."""
    add_option(parser, "--batch-size", aliases=("--batch",), dest=dest, type=positive_int, default=default,
               metavar="N", help=f"{help} (default {default})")


def add_processing_options(parser) -> None:
    """Options mirroring ProcessingConfig field by field (DESIGN.md, command line)."""
    g = parser.add_argument_group("processing")
    g.add_argument("--config", metavar="FILE", help="JSON or TOML file of processing options (command-line options override it)")
    g.add_argument("--threshold", metavar="VALUE|FILE",
                   help="hit when ADU > threshold: a number (ADU) or a per-pixel map file (default 0 ADU)")
    g.add_argument("--gradients", metavar="VALUE|FILE",
                   help="keV per ADU: a number or a per-pixel map file (default: none, energies stay in ADU)")
    g.add_argument("--intercepts", metavar="VALUE|FILE",
                   help="keV: a number or a per-pixel map file (default 0 keV with --gradients)")
    g.add_argument("--calibration", metavar="FILE",
                   help="hexspec HDF5 calibration (from `hexspec calibrate`): gradients, intercepts and its good-pixel "
                        "mask (rejected pixels give no events)")
    g.add_argument("--next-frame", dest="next_frame", action=argparse.BooleanOptionalAction, default=None,
                   help="discard hits at pixels hit in the previous frame (--no-next-frame to keep them; "
                        "default: discard)")
    g.add_argument("--charge-sharing", choices=("none", "csd", "csa"),
                   help="charge-sharing handling: none, csd (discrimination) or csa (addition) (default csd)")
    add_option(g, "--cluster-window", aliases=("--window",), dest="window", type=int, choices=(3, 5),
               help="charge-sharing neighbourhood, 3 or 5 pixels square (default 3)")
    g.add_argument("--max-cluster-size", type=positive_int, metavar="N",
                   help="with csa: drop clusters of more than N pixels (default: keep all)")
    g.add_argument("--bins", nargs=3, type=float, metavar=("START", "STOP", "WIDTH"),
                   help="histogram bins in keV, or ADU uncalibrated (default 0 200 0.25 keV; 0 16384 16 ADU)")
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
    good = None
    if getattr(args, "calibration", None):
        from ..io.hdf5 import read_calibration
        cal = read_calibration(args.calibration)
        base["gradients"], base["intercepts"] = cal["gradients"], cal["intercepts"]
        good = cal.get("good")
    for name in ("threshold", "gradients", "intercepts"):
        v = _value_or_map(getattr(args, name, None), shape, name)
        if v is not None:
            base[name] = v
    if good is not None:
        # Pixels the calibration rejected (dead, hot, unfitted: gradient 0 or NaN) would put
        # their hits at 0 keV; a threshold at the top of the 14-bit range switches them off,
        # as HEXITEC threshold files do.
        good = np.asarray(good).astype(bool)
        thr = np.broadcast_to(np.asarray(base.get("threshold", 0.0), dtype=np.float64), good.shape)
        base["threshold"] = np.where(good, thr, ADC_MAX_ADU)
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


def input_shape(path, args, default=(80, 80)):
    """(rows, cols) of an input frame file: from the file, else --shape, else ``default``.

    A headerless .bin read without --shape is read as ``default``: that is said in one line
    on stderr and recorded in the output's provenance (a wrong shape gives wrong images, not
    an error, whenever the file size happens to fit).
    """
    from ..io import framefile, provenance
    if getattr(args, "shape", None):
        return framefile.frame_shape(path, default=tuple(args.shape))
    if framefile.frame_file_kind(path) == "gige":
        note = (f"{Path(path).name}: a headerless .bin file read as {default[0]} x {default[1]} pixels "
                "(give --shape ROWS COLS for another detector)")
        print(note, file=sys.stderr)
        provenance.add_note(note)
    return framefile.frame_shape(path, default=default)


def check_writable(path, option: str) -> Path:
    """Fail now, before any output is written, if ``path`` cannot be created."""
    import os
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: expected a file name, found a directory")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: cannot create the output file: expected a directory at {parent}, "
                          "found a file")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {path}: cannot create the output file: expected a writable directory, "
                          f"found {parent} read-only")
    return path


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


def add_compression_option(parser) -> None:
    """``--compression``: the HDF5 filter of raw frames written (hexspec.io.framefile)."""
    from ..io.compression import COMPRESSIONS, DEFAULT_COMPRESSION
    parser.add_argument("--compression", choices=COMPRESSIONS, default=DEFAULT_COMPRESSION,
                        help="filter of the raw frames written: bitshuffle+LZ4, Blosc (LZ4), LZ4, gzip level 1 "
                             f"or none (default {DEFAULT_COMPRESSION}; readers need hdf5plugin for all but gzip)")


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


