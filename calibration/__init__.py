"""Energy and stoichiometry calibrations: Am-241 energy scale per pixel, S -> Li content.

    cal = hexspec.calibration.calibrate_am241(cube_adu)     # EnergyCalibration
    cfg = hexspec.ProcessingConfig(gradients=cal.gradients, intercepts=cal.intercepts)
    hexspec.calibration.write_map("gradients.txt", cal.gradients)   # HEXITEC text maps
"""

from importlib import import_module as _import_module

from ..io.calfiles import read_map, write_map
from . import lines
from .am241 import (REASONS, EnergyCalibration, FrameSpectra, calibrate_am241, calibrated_spectrum,
                    cube_from_events, cube_from_frames)

__all__ = ["calibrate_am241", "EnergyCalibration", "FrameSpectra", "cube_from_frames", "cube_from_events", "calibrated_spectrum",
           "REASONS", "read_map", "write_map", "lines", "LithiumCalibration"]


def __getattr__(name):
    # The Li calibration lives in its own module, loaded on first use so that this
    # package imports even where that module is absent.
    if name == "LithiumCalibration":
        try:
            mod = _import_module(".lithium", __name__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.lithium":
                raise AttributeError(
                    "hexspec.calibration.LithiumCalibration: calibration/lithium.py is not part of this build") from None
            raise
        value = mod.LithiumCalibration
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
