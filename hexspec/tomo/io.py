"""Tomography files: projections in (APS Data Exchange, TIFF stacks, NumPy), volumes out.

Projections are (angles, rows, cols) float32 as recorded (counts); flat and dark fields
(n, rows, cols); angles in radians.

Volumes are hexspec HDF5, NeXus-flavoured, in the HDF5 1.10 file format so that the common
tools open them::

    /entry                 NXentry; default=<name>; program, version, created
    /entry/<name>          NXdata; signal="data", axes=["z", "y", "x"]
        data               (z, y, x); attrs units, voxel_size_mm (dz, dy, dx)
        z, y, x            voxel centres in mm (units="mm")
        <extra>            further arrays that belong to the volume (masks, labels, ...)
    /entry/<process_name>  NXprocess; program, version, date and the step's parameters

Every tomo command writes one NXprocess group per step it ran, so a file carries the
whole chain (reconstruct -> segment -> quantify) that produced it.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from ..errors import FormatError

LIBVER = ("earliest", "v110")
_AXES = ("z", "y", "x")


# --------------------------------------------------------------------------- volumes

@dataclass
class VolumeFile:
    """A volume read back from a hexspec HDF5 file.

    Attributes
    ----------
    data : ndarray (z, y, x)
    voxel_size_mm : tuple of 3 floats
        (dz, dy, dx) in mm.
    name : str
        Name of the NXdata group the volume came from.
    process : dict[str, dict]
        One dict of parameters per NXprocess group in /entry, keyed by group name.
    extra : dict[str, ndarray]
        Further arrays stored beside the volume in its NXdata group.
    units : str
        Units of ``data`` (e.g. "1/mm" for a reconstruction, "" for labels).
    """

    data: np.ndarray
    voxel_size_mm: tuple
    name: str
    process: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    units: str = ""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from .. import __version__
    return __version__


def _voxel3(voxel_size_mm) -> tuple:
    v = np.atleast_1d(np.asarray(voxel_size_mm, dtype=float)).ravel()
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise FormatError(f"voxel_size_mm: expected one positive size or three (dz, dy, dx) in mm, found {voxel_size_mm!r}")
    return tuple(float(x) for x in v)


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise FormatError(f"{what}: expected a plain HDF5 group name, found {name!r}")


def _write_process(group: h5py.Group, process: dict) -> None:
    """Parameters as attributes: scalars and strings as they are, anything else as JSON."""
    json_keys = []
    for key, value in process.items():
        if isinstance(value, (bool, np.bool_)):
            group.attrs[key] = bool(value)
        elif isinstance(value, (int, float, str, np.integer, np.floating)):
            group.attrs[key] = value
        else:
            group.attrs[key] = json.dumps(value, default=_json_default)
            json_keys.append(key)
    if json_keys:
        group.attrs["json_keys"] = json.dumps(json_keys)


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _read_process(group: h5py.Group) -> dict:
    json_keys = set(json.loads(group.attrs.get("json_keys", "[]")))
    out = {}
    for key, value in group.attrs.items():
        if key in ("NX_class", "json_keys"):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if key in json_keys:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


class VolumeWriter:
    """A volume file being written slab by slab (for volumes larger than memory).

    Create with :func:`create_volume`; assign ``writer[z0:z1] = slab`` and ``close()``
    (or use as a context manager). The file is built under a temporary name and moved onto
    ``path`` only when closed without error, so an interrupted run leaves no half file in
    its place.
    """

    def __init__(self, path, shape, dtype, voxel_size_mm, *, name="volume", process_name, process,
                 units="", force=False, compression=None):
        self.path = Path(path)
        _check_name(name, "name")
        _check_name(process_name, "process_name")
        if self.path.exists() and not force:
            raise FormatError(f"{self.path}: exists; refusing to overwrite it (give force=True, or --force)")
        if len(shape) != 3:
            raise FormatError(f"volume: expected a 3-D shape (z, y, x), found {tuple(shape)}")
        self.voxel_size_mm = _voxel3(voxel_size_mm)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        try:
            self.file = h5py.File(self.tmp, "w", libver=LIBVER, locking=False)
        except OSError as exc:
            raise FormatError(f"{self.path}: cannot create the file ({exc})") from None
        entry = self.file.create_group("entry")
        entry.attrs.update(NX_class="NXentry", default=name, program="hexspec", version=_version(),
                           created=_now_iso())
        self.group = g = entry.create_group(name)
        g.attrs.update(NX_class="NXdata", signal="data", axes=list(_AXES))
        for i, axis in enumerate(_AXES):
            g.attrs[f"{axis}_indices"] = i
        chunks = (1,) + tuple(int(s) for s in shape[1:]) if all(shape) else None
        self.data = g.create_dataset("data", shape=tuple(int(s) for s in shape), dtype=dtype, chunks=chunks,
                                     compression=compression)
        self.data.attrs["units"] = units
        self.data.attrs["voxel_size_mm"] = np.asarray(self.voxel_size_mm)
        for i, axis in enumerate(_AXES):
            coord = g.create_dataset(axis, data=(np.arange(shape[i]) + 0.5) * self.voxel_size_mm[i])
            coord.attrs["units"] = "mm"
        proc = entry.create_group(process_name)
        proc.attrs.update(NX_class="NXprocess", program="hexspec", version=_version(), date=_now_iso())
        _write_process(proc, dict(process))
        self.process_group = proc

    def __setitem__(self, key, value):
        self.data[key] = value

    def add_extra(self, extra: dict | None) -> None:
        for key, arr in (extra or {}).items():
            _check_name(key, "extra")
            if key in self.group:
                raise FormatError(f"extra: {key!r} clashes with a dataset the volume group already holds")
            arr = np.asarray(arr)
            kw = dict(compression="gzip", compression_opts=1, shuffle=True) if arr.size > 1024 else {}
            self.group.create_dataset(key, data=arr, **kw)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def create_volume(path, shape, dtype, voxel_size_mm, *, name="volume", process_name, process: dict,
                  units="", force=False) -> VolumeWriter:
    """Start a volume file of ``shape`` (z, y, x) to be filled slab by slab; see :class:`VolumeWriter`."""
    return VolumeWriter(path, shape, dtype, voxel_size_mm, name=name, process_name=process_name,
                        process=process, units=units, force=force)


def write_volume(path, data, voxel_size_mm, *, name="volume", process_name, process: dict,
                 extra: dict | None = None, force=False, units="") -> None:
    """Write a volume to a hexspec HDF5 file (layout in the module docstring).

    Parameters
    ----------
    path : str or Path
        Output file; refused if it exists unless ``force``.
    data : array (z, y, x)
    voxel_size_mm : float or (dz, dy, dx)
        Voxel size in mm.
    name : str
        NXdata group name under /entry (also /entry's ``default``).
    process_name : str
        NXprocess group name for the step that made the volume (e.g. "reconstruction").
    process : dict
        The step's parameters; scalars and strings become attributes, anything else a JSON string.
    extra : dict of str -> array, optional
        Further arrays stored in the NXdata group beside ``data``.
    force : bool
        Replace an existing file.
    units : str
        Units of the data values ("1/mm" for attenuation, "" for labels or masks).
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise FormatError(f"volume: expected a 3-D array (z, y, x), found shape {data.shape}")
    compression = "gzip" if data.dtype.kind in "biu" else None   # masks and labels compress well, floats do not
    with VolumeWriter(path, data.shape, data.dtype, voxel_size_mm, name=name, process_name=process_name,
                      process=process, units=units, force=force, compression=compression) as w:
        w.data[...] = data
        w.add_extra(extra)


def read_volume(path, name=None) -> VolumeFile:
    """Read a volume written by :func:`write_volume`.

    Parameters
    ----------
    path : str or Path
    name : str, optional
        NXdata group under /entry; default: the file's ``default`` attribute.

    Returns
    -------
    VolumeFile
    """
    from ..io.h5open import open_h5
    path = Path(path)
    with open_h5(path) as f:
        if "entry" not in f or not isinstance(f["entry"], h5py.Group):
            raise FormatError(f"{path}: expected a hexspec volume file with an /entry group, found {sorted(f.keys())}")
        entry = f["entry"]
        if name is None:
            name = entry.attrs.get("default")
            if isinstance(name, bytes):
                name = name.decode()
            if name is None:
                nxdata = [k for k, g in entry.items() if isinstance(g, h5py.Group) and _nx_class(g) == "NXdata"]
                if not nxdata:
                    raise FormatError(f"{path}: /entry holds no NXdata volume (found {sorted(entry.keys())})")
                name = nxdata[0]
        if name not in entry or not isinstance(entry[name], h5py.Group) or "data" not in entry[name]:
            raise FormatError(f"{path}: expected a volume at /entry/{name}/data, found {sorted(entry.keys())} in /entry")
        g = entry[name]
        dset = g["data"]
        if dset.ndim != 3:
            raise FormatError(f"{path}: /entry/{name}/data: expected a 3-D volume (z, y, x), found shape {dset.shape}")
        try:
            data = dset[()]
            extra = {k: v[()] for k, v in g.items() if isinstance(v, h5py.Dataset) and k not in ("data",) + _AXES}
        except OSError as exc:
            raise FormatError(f"{path}: /entry/{name}: data cannot be read, the file is damaged ({exc})") from None
        vs = dset.attrs.get("voxel_size_mm")
        if vs is None:
            raise FormatError(f"{path}: /entry/{name}/data has no voxel_size_mm attribute")
        units = dset.attrs.get("units", "")
        if isinstance(units, bytes):
            units = units.decode()
        process = {k: _read_process(g2) for k, g2 in entry.items()
                   if isinstance(g2, h5py.Group) and _nx_class(g2) == "NXprocess"}
    return VolumeFile(data=data, voxel_size_mm=_voxel3(vs), name=name, process=process, extra=extra, units=str(units))


def _nx_class(g) -> str:
    c = g.attrs.get("NX_class", "")
    return c.decode() if isinstance(c, bytes) else str(c)


# --------------------------------------------------------------------------- projections

def _open_projection_h5(path):
    from ..io.h5open import open_h5
    return open_h5(path)


def _stack(dset, path, what, ndim=3):
    if not isinstance(dset, h5py.Dataset):
        raise FormatError(f"{path}: {what}: expected a dataset, found a group")
    if dset.ndim != ndim:
        raise FormatError(f"{path}: {what}: expected {ndim} axes (angles, rows, cols), found shape {dset.shape}")
    try:
        return np.asarray(dset[()], dtype=np.float32)
    except OSError as exc:
        raise FormatError(f"{path}: {what}: cannot be read, the file is damaged ({exc})") from None


def read_dataexchange(path):
    """Read an APS Data Exchange HDF5 file.

    Parameters
    ----------
    path : str or Path
        File with ``exchange/data`` (angles, rows, cols) and optionally
        ``exchange/data_white``, ``exchange/data_dark`` (n, rows, cols) and
        ``exchange/theta`` (angles,) in degrees (or radians if its ``units`` say so).

    Returns
    -------
    proj : ndarray float32 (angles, rows, cols)
    flat, dark : ndarray float32 (n, rows, cols) or None
    theta_rad : ndarray float64 (angles,)
        Projection angles in radians; if the file has none, evenly spaced over
        [0, 180) degrees, with a warning.
    """
    path = Path(path)
    with _open_projection_h5(path) as f:
        if "exchange" not in f or "data" not in f["exchange"]:
            raise FormatError(f"{path}: expected APS Data Exchange projections at /exchange/data, "
                              f"found top-level {sorted(f.keys())}")
        ex = f["exchange"]
        proj = _stack(ex["data"], path, "exchange/data")
        flat = _stack(ex["data_white"], path, "exchange/data_white") if "data_white" in ex else None
        dark = _stack(ex["data_dark"], path, "exchange/data_dark") if "data_dark" in ex else None
        theta = None
        if "theta" in ex:
            t = ex["theta"]
            if t.ndim != 1 or t.shape[0] != proj.shape[0]:
                raise FormatError(f"{path}: exchange/theta: expected {proj.shape[0]} angles (one per projection), "
                                  f"found shape {t.shape}")
            units = t.attrs.get("units", "degrees")
            units = (units.decode() if isinstance(units, bytes) else str(units)).lower()
            theta = np.asarray(t[()], dtype=np.float64)
            if not units.startswith("rad"):
                theta = np.deg2rad(theta)
    _check_fields(path, proj, flat, dark)
    if theta is None:
        warnings.warn(f"{path}: no exchange/theta; assuming {proj.shape[0]} angles evenly spaced over 180 degrees",
                      stacklevel=2)
        theta = np.linspace(0.0, np.pi, proj.shape[0], endpoint=False)
    return proj, flat, dark, theta


def _check_fields(path, proj, flat, dark):
    if proj.shape[0] < 2 or proj.shape[2] < 2:
        raise FormatError(f"{path}: expected projections (angles >= 2, rows, cols >= 2), found shape {proj.shape}")
    for what, arr in (("flat (white) field", flat), ("dark field", dark)):
        if arr is not None and arr.shape[1:] != proj.shape[1:]:
            raise FormatError(f"{path}: {what}: expected frames of {proj.shape[1:]} like the projections, "
                              f"found {arr.shape[1:]}")


def _read_tiff(path):
    import tifffile
    try:
        arr = tifffile.imread(path)
    except Exception as exc:   # tifffile raises several types for a bad file
        raise FormatError(f"{path}: not a readable TIFF ({exc})") from None
    return np.asarray(arr, dtype=np.float32)


def read_tiff_stack(path):
    """Read projections from a multi-page TIFF file or a folder of single-page TIFFs.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` file holding (angles, rows, cols), or a folder whose TIFF files,
        in name order, are the projections.

    Returns
    -------
    ndarray float32 (angles, rows, cols)
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise FormatError(f"{path}: expected TIFF files (*.tif, *.tiff) in the folder, found none")
        frames = [_read_tiff(p) for p in files]
        shapes = {fr.shape for fr in frames}
        if len(shapes) != 1 or frames[0].ndim != 2:
            raise FormatError(f"{path}: expected single-page 2-D TIFFs of one shape, found shapes {sorted(shapes)}")
        return np.stack(frames)
    arr = _read_tiff(path)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise FormatError(f"{path}: expected a TIFF stack (angles, rows, cols), found shape {arr.shape}")
    return arr


def read_numpy(path):
    """Read projections from a ``.npy`` (angles, rows, cols) or ``.npz`` file.

    An ``.npz`` holds ``proj`` (or ``data``) and optionally ``flat``, ``dark`` and
    ``theta_rad`` (or ``theta`` in degrees). Nothing is unpickled.

    Returns
    -------
    proj, flat, dark, theta_rad : as :func:`read_dataexchange` (flat, dark, theta_rad may be None)
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{path}: not a readable NumPy file ({exc})") from None
    flat = dark = theta = None
    if isinstance(loaded, np.ndarray):
        proj = loaded
    else:
        with loaded:
            keys = set(loaded.files)
            key = "proj" if "proj" in keys else "data" if "data" in keys else None
            if key is None:
                raise FormatError(f"{path}: expected an array 'proj' (or 'data') in the .npz, found {sorted(keys)}")
            proj = loaded[key]
            flat = loaded["flat"].astype(np.float32) if "flat" in keys else None
            dark = loaded["dark"].astype(np.float32) if "dark" in keys else None
            if "theta_rad" in keys:
                theta = np.asarray(loaded["theta_rad"], dtype=np.float64)
            elif "theta" in keys:
                theta = np.deg2rad(np.asarray(loaded["theta"], dtype=np.float64))
    if proj.ndim != 3 or proj.dtype.kind not in "biuf":
        raise FormatError(f"{path}: expected numeric projections (angles, rows, cols), found {proj.dtype} {proj.shape}")
    proj = proj.astype(np.float32, copy=False)
    if theta is not None and theta.shape != (proj.shape[0],):
        raise FormatError(f"{path}: expected {proj.shape[0]} angles, found theta of shape {theta.shape}")
    _check_fields(path, proj, flat, dark)
    return proj, flat, dark, theta


def read_projections(path):
    """Projections from any supported file, chosen by its extension or content.

    HDF5 (``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``): Data Exchange; ``.tif``/``.tiff`` or a
    folder: TIFF stack; ``.npy``/``.npz``: NumPy. Angles absent from the file are evenly
    spaced over 180 degrees (with a warning).

    Returns
    -------
    proj, flat, dark, theta_rad : as :func:`read_dataexchange`
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".tif", ".tiff"):
        proj, flat, dark, theta = read_tiff_stack(path), None, None, None
    elif suffix in (".npy", ".npz"):
        proj, flat, dark, theta = read_numpy(path)
    elif suffix in (".h5", ".hdf5", ".hdf", ".nxs", ".cxi") or h5py.is_hdf5(path):
        return read_dataexchange(path)
    else:
        raise FormatError(f"{path}: expected Data Exchange HDF5 (.h5), a TIFF stack (.tif) or NumPy (.npy/.npz), "
                          f"found extension {suffix or '(none)'}")
    if theta is None:
        warnings.warn(f"{path}: no angles in the file; assuming {proj.shape[0]} angles evenly spaced over 180 degrees",
                      stacklevel=2)
        theta = np.linspace(0.0, np.pi, proj.shape[0], endpoint=False)
    return proj, flat, dark, theta


class Projections:
    """Projections opened for reading slab by slab (see :func:`open_projections`).

    Attributes
    ----------
    proj : h5py.Dataset, numpy memmap or array (angles, rows, cols)
        Sliced as ``proj[:, r0:r1, :]`` without reading the rest.
    flat, dark : same kind (n, rows, cols), or None
    theta_rad : ndarray (angles,)
    pixel_size_mm : float or None
        Detector pixel size if the file records it.
    """

    def __init__(self, proj, flat, dark, theta_rad, pixel_size_mm=None, file=None):
        self.proj, self.flat, self.dark, self.theta_rad = proj, flat, dark, theta_rad
        self.pixel_size_mm = pixel_size_mm
        self._file = file

    @property
    def shape(self):
        return tuple(self.proj.shape)

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


_PIXEL_SIZE_PATHS = ("measurement/instrument/detection_system/objective/resolution",
                     "measurement/instrument/detector/actual_pixel_size_x",
                     "measurement/instrument/detector/pixel_size_x")


def open_projections(path) -> Projections:
    """Open projections without reading them: Data Exchange HDF5 lazily, ``.npy`` memory-mapped,
    TIFF and ``.npz`` read whole (their formats do not allow slab reads here).

    Returns
    -------
    Projections (a context manager)
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            proj = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FormatError(f"{path}: not a readable NumPy file ({exc})") from None
        if proj.ndim != 3 or proj.dtype.kind not in "biuf":
            raise FormatError(f"{path}: expected numeric projections (angles, rows, cols), found {proj.dtype} {proj.shape}")
        warnings.warn(f"{path}: no angles in the file; assuming {proj.shape[0]} angles evenly spaced over 180 degrees",
                      stacklevel=2)
        return Projections(proj, None, None, np.linspace(0.0, np.pi, proj.shape[0], endpoint=False))
    if path.is_dir() or suffix in (".tif", ".tiff", ".npz") or not h5py.is_hdf5(path):
        return Projections(*read_projections(path))
    f = _open_projection_h5(path)
    try:
        if "exchange" not in f or "data" not in f["exchange"]:
            raise FormatError(f"{path}: expected APS Data Exchange projections at /exchange/data, "
                              f"found top-level {sorted(f.keys())}")
        ex = f["exchange"]
        proj = ex["data"]
        if not isinstance(proj, h5py.Dataset) or proj.ndim != 3:
            raise FormatError(f"{path}: exchange/data: expected (angles, rows, cols), found "
                              f"{getattr(proj, 'shape', 'a group')}")
        fields = []
        for key in ("data_white", "data_dark"):
            d = ex.get(key)
            if d is not None and (not isinstance(d, h5py.Dataset) or d.ndim != 3 or d.shape[1:] != proj.shape[1:]):
                raise FormatError(f"{path}: exchange/{key}: expected (n, {proj.shape[1]}, {proj.shape[2]}), "
                                  f"found {getattr(d, 'shape', 'a group')}")
            fields.append(d)
        theta = None
        if "theta" in ex:
            t = ex["theta"]
            if t.ndim != 1 or t.shape[0] != proj.shape[0]:
                raise FormatError(f"{path}: exchange/theta: expected {proj.shape[0]} angles, found shape {t.shape}")
            units = t.attrs.get("units", "degrees")
            units = (units.decode() if isinstance(units, bytes) else str(units)).lower()
            theta = np.asarray(t[()], dtype=np.float64)
            theta = theta if units.startswith("rad") else np.deg2rad(theta)
        else:
            warnings.warn(f"{path}: no exchange/theta; assuming {proj.shape[0]} angles evenly spaced over 180 degrees",
                          stacklevel=2)
            theta = np.linspace(0.0, np.pi, proj.shape[0], endpoint=False)
        pixel = None
        for p in _PIXEL_SIZE_PATHS:
            if p in f and isinstance(f[p], h5py.Dataset) and f[p].size == 1:
                units = f[p].attrs.get("units", "")
                units = units.decode() if isinstance(units, bytes) else str(units)
                scale = {"mm": 1.0, "um": 1e-3, "micron": 1e-3, "microns": 1e-3, "m": 1e3, "nm": 1e-6}.get(units.strip())
                if scale:
                    pixel = float(f[p][()]) * scale
                    break
        return Projections(proj, fields[0], fields[1], theta, pixel, file=f)
    except BaseException:
        f.close()
        raise
