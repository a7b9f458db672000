"""hexspec: spectral imaging with HEXITEC energy-resolving pixel detectors.

Frames -> photon events -> per-pixel spectra -> Compton peak fits, Compton profiles,
S-parameter and Li stoichiometry maps. See README.md for a walk-through.
"""

from importlib import import_module as _import_module

from .bins import EnergyBins
from .config import ProcessingConfig
from .cube import SpectralCube
from .detector import HEXITEC, DetectorSpec
from .errors import CalibrationError, ConfigError, FormatError, HexspecError, ProtocolError
from .eventlist import EventList
from .frames import FrameBatch

__version__ = "0.1.0"

__all__ = [
    "HEXITEC", "DetectorSpec", "FrameBatch", "EnergyBins", "SpectralCube", "SpectrumAccumulator",
    "ProcessingConfig", "EventList", "EventExtractor", "extract_events",
    "HexspecError", "FormatError", "ProtocolError", "CalibrationError", "ConfigError",
    "fit", "compton", "io", "calibration", "sim", "drivers", "pipeline", "viewer",
    "tomo", "parallel",
]

# Names whose modules compile numba kernels load on first use: reading a file never needs them.
_LAZY = {"EventExtractor": "events", "extract_events": "events", "SpectrumAccumulator": "spectra"}

_SUBMODULES = {"fit", "compton", "io", "calibration", "sim", "drivers", "pipeline", "viewer",
               "tomo", "parallel"}


def __getattr__(name):
    # Subpackages load on first use so `import hexspec` stays fast and optional extras
    # (the viewer) are only needed by those who use them.
    if name in _SUBMODULES:
        mod = _import_module(f".{name}", __name__)
        globals()[name] = mod
        return mod
    if name in _LAZY:
        value = getattr(_import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hexspec' has no attribute {name!r}")
