"""ProcessingConfig: the one typed object that configures frame processing.

It serialises to JSON (stored in every output file) and validates every field on
construction, so a wrong option fails before any data are touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .bins import EnergyBins

CHARGE_SHARING_MODES = ("none", "csd", "csa")

#: Default bins without an energy calibration: the 14-bit ADC range in 16-ADU bins.
ADU_BINS = (0.0, 16384.0, 16.0)
#: Default bins with an energy calibration (keV).
KEV_BINS = (0.0, 200.0, 0.25)


def _describe(value) -> str:
    if isinstance(value, (list, tuple)):
        lengths = sorted({len(v) if isinstance(v, (list, tuple)) else 1 for v in value})
        return f"a list of {len(value)} rows of lengths {lengths}" if len(lengths) > 1 else f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r:.60}"


def _as_map_or_scalar(name, value, allow_none):
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"ProcessingConfig.{name}: expected a number or a (rows, cols) array, found None")
    if isinstance(value, (str, Path)):
        raise ConfigError(
            f"ProcessingConfig.{name}: expected a number or a (rows, cols) array, found the path {str(value)!r}; "
            "read it first with hexspec.calibration.read_map(path, shape)")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        # a ragged list of rows, or text among the numbers
        raise ConfigError(f"ProcessingConfig.{name}: expected a number or a (rows, cols) array of numbers, "
                          f"found {_describe(value)} ({str(exc).split('.')[0]})") from None
    if arr.ndim == 0:
        v = float(arr)
        if not np.isfinite(v):
            raise ConfigError(f"ProcessingConfig.{name}: expected a finite number, found {v}")
        return v
    if arr.ndim != 2:
        raise ConfigError(f"ProcessingConfig.{name}: expected a number or a (rows, cols) array, found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"ProcessingConfig.{name}: map holds {int(np.count_nonzero(~np.isfinite(arr)))} non-finite values")
    return arr


def _renamed(options: dict) -> dict:
    """``options`` with the former key ``window`` as ``cluster_window``.

    ``window`` wins over a ``cluster_window`` already there: a dict of options that
    is then overridden by an old-style ``window`` (a command-line value over a stored
    config) keeps the override.
    """
    if "window" not in options:
        return options
    out = dict(options)
    out["cluster_window"] = out.pop("window")
    return out


@dataclass(init=False)
class ProcessingConfig:
    """How raw frames become events and spectra.

    Parameters
    ----------
    threshold : float or ndarray (rows, cols)
        Hit when the raw value in ADU is strictly greater than this (scalar or per pixel). Must be >= 0.
    gradients : float or ndarray (rows, cols), optional
        keV per ADU. With ``intercepts``, E = ADU * gradient + intercept. None with
        ``intercepts`` None means uncalibrated: energies stay in ADU.
    intercepts : float or ndarray (rows, cols), optional
        keV. Defaults to 0 when only ``gradients`` is given.
    next_frame : bool
        Discard a hit at a pixel that was hit in the previous (consecutive) frame.
    charge_sharing : {"none", "csd", "csa"}
        "csd" keeps only hits with no other hit in their cluster window (discrimination);
        "csa" sums clusters of hits into the pixel of largest energy (addition).
    cluster_window : int
        Odd charge-sharing neighbourhood size in pixels: 3 -> 3x3, 5 -> 5x5.
    max_cluster_size : int, optional
        With "csa", clusters of more pixels are dropped (the reference XCS-I work used 2).
    bins : EnergyBins, optional
        Histogram bins; default 0-200 keV in 0.25 keV when calibrated, else the 14-bit
        ADC range in 16 ADU bins.
    window : int, optional
        The former name of ``cluster_window``, still accepted (a public keyword of
        DESIGN.md) and readable as the attribute ``window``; give one or the other.
        Option files and stored configs with a ``window`` key read the same way.
    """

    threshold: object = 0.0
    gradients: object = None
    intercepts: object = None
    next_frame: bool = True
    charge_sharing: str = "csd"
    cluster_window: int = 3
    max_cluster_size: object = None
    bins: object = None

    def __init__(self, threshold=0.0, gradients=None, intercepts=None, next_frame=True, charge_sharing="csd",
                 cluster_window=None, max_cluster_size=None, bins=None, *, window=None):
        if window is not None and cluster_window is not None and window != cluster_window:
            raise ConfigError(f"ProcessingConfig: window={window!r} and cluster_window={cluster_window!r} name the "
                              "same option; give one of them")
        if cluster_window is None:
            cluster_window = 3 if window is None else window
        self.threshold, self.gradients, self.intercepts = threshold, gradients, intercepts
        self.next_frame, self.charge_sharing, self.cluster_window = next_frame, charge_sharing, cluster_window
        self.max_cluster_size, self.bins = max_cluster_size, bins
        self.__post_init__()

    @property
    def window(self) -> int:
        """The former name of :attr:`cluster_window` (kept for existing code)."""
        return self.cluster_window

    def __post_init__(self):
        self.threshold = _as_map_or_scalar("threshold", self.threshold, allow_none=False)
        if np.any(np.asarray(self.threshold) < 0):
            raise ConfigError(f"ProcessingConfig.threshold: expected values >= 0 ADU, found minimum {np.min(self.threshold)}")
        self.gradients = _as_map_or_scalar("gradients", self.gradients, allow_none=True)
        self.intercepts = _as_map_or_scalar("intercepts", self.intercepts, allow_none=True)
        if not isinstance(self.next_frame, (bool, np.bool_)):
            raise ConfigError(f"ProcessingConfig.next_frame: expected True or False, found {self.next_frame!r}")
        self.next_frame = bool(self.next_frame)
        if self.charge_sharing not in CHARGE_SHARING_MODES:
            raise ConfigError(
                f"ProcessingConfig.charge_sharing: expected one of {', '.join(CHARGE_SHARING_MODES)}, found {self.charge_sharing!r}")
        try:
            window = int(self.cluster_window)
        except (TypeError, ValueError):
            raise ConfigError("ProcessingConfig.cluster_window: expected an odd integer >= 3, "
                              f"found {self.cluster_window!r}") from None
        if window != self.cluster_window or window < 3 or window % 2 == 0:
            raise ConfigError("ProcessingConfig.cluster_window: expected an odd integer >= 3 (3 or 5), "
                              f"found {self.cluster_window!r}")
        self.cluster_window = window
        if self.max_cluster_size is not None:
            m = self.max_cluster_size
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
                raise ConfigError(f"ProcessingConfig.max_cluster_size: expected None or an integer >= 1, found {m!r}")
            self.max_cluster_size = int(m)
        if self.bins is not None and not isinstance(self.bins, EnergyBins):
            b = self.bins
            try:
                if isinstance(b, dict):
                    b = (b["start"], b["stop"], b["width"])
                if isinstance(b, (str, bytes)) or len(b) != 3:
                    raise TypeError
                self.bins = EnergyBins(*b)
            except ConfigError:
                raise
            except (TypeError, ValueError, KeyError):
                raise ConfigError(f"ProcessingConfig.bins: expected EnergyBins, (start, stop, width) or "
                                  f"{{start, stop, width}}, found {self.bins!r}") from None

    # ------------------------------------------------------------------ derived
    @property
    def calibrated(self) -> bool:
        """True when energies are in keV (a gradient or intercept is set)."""
        return self.gradients is not None or self.intercepts is not None

    @property
    def energy_unit(self) -> str:
        return "keV" if self.calibrated else "ADU"

    def resolved_bins(self) -> EnergyBins:
        if self.bins is not None:
            return self.bins
        return EnergyBins(*(KEV_BINS if self.calibrated else ADU_BINS))

    def pixel_maps(self, shape):
        """Flat per-pixel maps for the kernels: (threshold uint16, gradient float64, intercept float64).

        Raises ConfigError naming the expected shape when a map does not fit ``shape``.
        """
        from .limits import check_detector_shape
        rows, cols = check_detector_shape(shape, "ProcessingConfig.pixel_maps")

        def full(name, value, default):
            if value is None:
                value = default
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 0:
                return np.full(rows * cols, float(arr))
            if arr.shape != (rows, cols):
                raise ConfigError(
                    f"ProcessingConfig.{name}: expected a map of shape ({rows}, {cols}) for this detector, found {arr.shape}")
            return np.ascontiguousarray(arr.reshape(-1))

        thr = full("threshold", self.threshold, 0.0)
        # Raw values are whole numbers, so value > t  <=>  value > floor(t); thresholds
        # above the uint16 range can never be exceeded.
        thr_u16 = np.clip(np.floor(thr), 0, 65535).astype(np.uint16)
        grad = full("gradients", self.gradients, 1.0)
        icpt = full("intercepts", self.intercepts, 0.0)
        return thr_u16, grad, icpt

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, EnergyBins):
                v = {"start": v.start, "stop": v.stop, "width": v.width}
            out[f.name] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "ProcessingConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"window"}
        if unknown:
            raise ConfigError(
                f"ProcessingConfig: unknown option(s) {', '.join(sorted(unknown))}; expected some of {', '.join(sorted(known))}")
        try:
            return cls(**_renamed(d))
        except ConfigError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            # a value of the wrong kind (a table where a number belongs...) from a file
            shown = ", ".join(f"{k}={str(v)[:40]}" for k, v in sorted(d.items()))
            raise ConfigError(f"ProcessingConfig: an option has a value of the wrong kind ({exc}); found {shown}") from None

    @classmethod
    def from_json(cls, text: str) -> "ProcessingConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"ProcessingConfig: the JSON does not parse: {exc}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"ProcessingConfig: expected a JSON object, found {type(d).__name__}")
        return cls.from_dict(d)

    @classmethod
    def from_file(cls, path) -> "ProcessingConfig":
        """Read a JSON (.json) or TOML (.toml) file of options."""
        return cls.from_dict(cls.read_options(path))

    @classmethod
    def read_options(cls, path) -> dict:
        """The options a JSON or TOML file sets (only those), checked as a ProcessingConfig."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"{path}: expected a JSON or TOML config file, found a directory")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: expected a UTF-8 text JSON or TOML file, found binary data "
                              f"(byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})") from None
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python < 3.11
                import tomli as tomllib
            try:
                d = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: the TOML does not parse: {exc}") from None
            except RecursionError:
                raise ConfigError(f"{path}: expected a table of options, found arrays or tables nested too "
                                  "deeply to read") from None
        else:
            try:
                d = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: the JSON does not parse: {exc}") from None
            except RecursionError:
                raise ConfigError(f"{path}: expected a table of options, found arrays or objects nested too "
                                  "deeply to read") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a table of options, found {type(d).__name__}")
        try:
            cls.from_dict(d)   # every option checked now, naming the file's mistakes
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return _renamed(d)

    def replace(self, **changes) -> "ProcessingConfig":
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if "window" in changes:
            d.pop("cluster_window")
        d.update(changes)
        return ProcessingConfig(**d)

    def __eq__(self, other) -> bool:
        if not isinstance(other, ProcessingConfig):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not np.array_equal(np.asarray(a), np.asarray(b)):
                    return False
            elif a != b:
                return False
        return True
