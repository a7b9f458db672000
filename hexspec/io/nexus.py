"""NeXus conventions for hexspec HDF5 files (FORMATS.md, "hexspec HDF5").

What NeXus readers (silx, nexpy, nexusformat, DAWN) look for, added on top of the hexspec
layout without renaming any existing dataset:

- the root is an NXroot whose ``default`` attribute leads, group by group, to an NXdata
  with ``signal`` and ``axes``, so that a viewer plots something on opening the file;
- every group has an NX_class (NXcollection where no base class fits);
- every dataset with a physical unit has a ``units`` attribute;
- coded values (fit ``status``, calibration ``reasons``) say what their codes mean.

NXevent_data mapping: hexspec stores one row per photon event as ``frame`` (frame
number), ``row``, ``col`` (pixel), ``energy`` (keV or ADU) and ``size`` (pixels in the
charge-sharing cluster). The standard ``pulse_height`` is a hard link to ``energy``;
the pixel is (``row``, ``col``) rather than a flat ``event_id``, and time is the frame
number rather than ``event_time_offset`` (frames come at a fixed rate, stored in
/entry/instrument/detector/frame_rate_hz). The mapping is also stored in the group's
``field_mapping`` attribute.
"""

from __future__ import annotations

from datetime import datetime, timezone

import h5py

EVENT_FIELD_MAPPING = (
    "frame: frame number (time = frame / frame_rate_hz; NeXus event_time_zero/event_index not used); "
    "row, col: pixel (NeXus event_id = row * cols + col); energy: photon energy (NeXus pulse_height, a hard "
    "link to it); size: pixels in the charge-sharing cluster")

#: Meaning of coded datasets, by results-group dataset name. Fit status codes as set by
#: hexspec.fit.fit_cube (PeakMaps docstring); keep the two in step.
STATUS_CODES = {
    "status": "0 converged, 1 iteration limit reached, 2 too few counts in the window (not fitted), "
              "3 no usable starting point",
}

#: Units inferred from a dataset name's unit suffix (STYLE.md: units in names).
_SUFFIX_UNITS = (("_kev", "keV"), ("_adu", "ADU"), ("_mm", "mm"), ("_um", "um"), ("_rad", "rad"),
                 ("_deg", "deg"), ("_hz", "Hz"), ("_s", "s"))
#: Units of datasets whose names carry no unit suffix, wherever they appear.
KNOWN_UNITS = {"gradients": "keV/ADU", "intercepts": "keV", "quadratic": "keV/ADU^2", "threshold": "ADU",
               "thresholds": "ADU", "pz_edges": "a.u. (atomic units of momentum)"}
#: Preferred plot signal of a results group, first found wins.
_SIGNALS = ("center", "s", "li", "gradients", "J", "data", "counts")


def _attr_str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def unit_from_name(name: str):
    """Unit implied by the suffix of a dataset name (``fwhm_kev`` -> keV), or None."""
    low = name.lower()
    for suffix, unit in _SUFFIX_UNITS:
        if low.endswith(suffix):
            return unit
    return None


def apply_units(group: h5py.Group, units: dict) -> None:
    """Set ``units`` on the datasets of ``group`` named in ``units`` (and on their ``*_err``)."""
    for name, unit in units.items():
        for n in (name, f"{name}_err"):
            if n in group and isinstance(group[n], h5py.Dataset) and "units" not in group[n].attrs:
                group[n].attrs["units"] = unit


def describe_codes(group: h5py.Group, attrs: dict) -> None:
    """Explain coded datasets of a results group in their ``status_codes`` attribute."""
    for name, text in STATUS_CODES.items():
        if name in group and isinstance(group[name], h5py.Dataset):
            group[name].attrs["status_codes"] = text
    bits = attrs.get("reason_bits")
    if isinstance(bits, dict) and "reasons" in group:
        text = ", ".join(f"{int(b)} {n}" for n, b in sorted(bits.items(), key=lambda kv: kv[1]))
        group["reasons"].attrs["status_codes"] = f"bitwise OR of: {text}; 0 good"
    if "good" in group and isinstance(group["good"], h5py.Dataset):
        group["good"].attrs["status_codes"] = "1 good pixel, 0 rejected (see reasons)"


def make_plottable(group: h5py.Group) -> bool:
    """Make a results group an NXdata with a ``signal`` if it holds an array to plot."""
    names = [n for n in group if isinstance(group[n], h5py.Dataset) and group[n].ndim >= 1
             and group[n].dtype.kind in "fiub"]
    if not names:
        return False
    signal = next((s for s in _SIGNALS if s in names), None)
    if signal is None:
        signal = max(names, key=lambda n: (group[n].ndim, group[n].size))
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = ["."] * group[signal].ndim
    if f"{signal}_err" in group:
        # NeXus looks for uncertainties as <signal>_errors
        if f"{signal}_errors" not in group:
            group[f"{signal}_errors"] = group[f"{signal}_err"]
    return True


def root_attributes(f: h5py.File) -> None:
    f.attrs["NX_class"] = "NXroot"
    f.attrs["default"] = "entry"
    f.attrs["creator"] = "hexspec"
    f.attrs["HDF5_Version"] = h5py.version.hdf5_version
    f.attrs["h5py_version"] = h5py.version.version
    if "file_time" not in f.attrs:
        f.attrs["file_time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")


def set_default(entry: h5py.Group) -> None:
    """Point ``entry``'s default chain at the latest result, else the spectra, else the frames."""
    res = entry.get("results")
    if res is not None:
        latest = _attr_str(res.attrs.get("default", ""))
        if latest and latest in res and res[latest].attrs.get("NX_class") == "NXdata":
            entry.attrs["default"] = "results"
            return
    for name in ("spectra", "frames"):
        g = entry.get(name)
        if g is not None and "signal" in g.attrs:
            entry.attrs["default"] = name
            return


def finalise(f: h5py.File) -> None:
    """Bring an open, writable hexspec file up to the conventions above (idempotent)."""
    root_attributes(f)

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            if "NX_class" not in obj.attrs:
                obj.attrs["NX_class"] = "NXcollection"
        elif "units" not in obj.attrs:
            base = name.rsplit("/", 1)[-1]
            unit = KNOWN_UNITS.get(base) or unit_from_name(base)
            if unit is not None and obj.dtype.kind in "fiu":
                obj.attrs["units"] = unit

    f.visititems(visit)
    if "entry" in f:
        set_default(f["entry"])
