"""Readers and writers, one module per format (FORMATS.md).

=================  ===========================================================
``hdf5``           hexspec's own NeXus-flavoured HDF5 (events, frames, spectra, results)
``gige_bin``       raw GigE frame files (.bin)
``odin``           odin-data HDF5 from the HEXITEC frame processor
``hxt``            HXT v3 spectra of the HEXITEC GUI tools
``calfiles``       per-pixel calibration maps as text
``framefile``      any frame file, recognised by its content
=================  ===========================================================

The names below load their module on first use, so ``import hexspec.io`` stays cheap
and a module's dependencies are needed only by those who use it.
"""

from importlib import import_module as _import_module

_NAMES = {
    "read_gige_bin": "gige_bin", "iter_gige_bin": "gige_bin", "write_gige_bin": "gige_bin",
    "read_odin": "odin", "iter_odin_frames": "odin",
    "read_hxt": "hxt", "write_hxt": "hxt",
    "read_map": "calfiles", "write_map": "calfiles",
    "HexspecWriter": "hdf5", "read_events": "hdf5", "iter_events": "hdf5", "read_cube": "hdf5",
    "write_cube": "hdf5", "read_frames": "hdf5", "iter_frames": "hdf5", "read_config": "hdf5",
    "read_acquisition": "hdf5", "write_results": "hdf5", "read_results": "hdf5",
    "read_calibration": "hdf5", "read_detector": "hdf5",
    "iter_frame_file": "framefile", "frame_file_kind": "framefile",
}

__all__ = list(_NAMES)


_MODULES = ("hdf5", "gige_bin", "odin", "hxt", "calfiles", "framefile", "h5open")


def __getattr__(name):
    if name in _MODULES:
        return _import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(_import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hexspec.io' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_MODULES))
