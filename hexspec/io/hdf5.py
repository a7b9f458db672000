"""hexspec HDF5 files (FORMATS.md, "hexspec HDF5"): NeXus-flavoured, self-describing.

Layout::

    /entry                      NXentry; program, version, created
    /entry/instrument/detector  NXdetector: rows, cols, pitch_mm, frame_rate_hz, maps, config (JSON)
    /entry/events               frame int64, row uint16, col uint16, energy float32, size uint8
    /entry/frames/data          raw frames (N, R, C) uint16; frame_number (N,) int64
    /entry/spectra              NXdata: counts (R, C, nbins) uint32, energy, energy_edges
    /entry/acquisition          counters and provenance of the recording
    /entry/results/<name>       fits, maps, calibrations, with their parameters as attributes
    /entry/process_<command>    NXprocess of each run that wrote to the file (hexspec.io.provenance)

The NeXus conventions on top (NXroot default chain, NX_class on every group, units on
every dataset, explained status codes) are in :mod:`hexspec.io.nexus`. Files use the
HDF5 1.10 format at most (:data:`LIBVER`), which HDF5 1.10 tools read.

Event and frame datasets are resizable, chunked and compressed; :class:`HexspecWriter`
appends to them and, in SWMR mode (``swmr=True``, used by the recorder), every flush
leaves a file that a reader can open even if the writer is killed afterwards.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from ..config import ProcessingConfig
from ..cube import SpectralCube
from ..detector import HEXITEC, DetectorSpec
from ..errors import FormatError
from ..eventlist import EventList
from ..frames import FrameBatch
from . import nexus, provenance
from .chunkread import iter_batches, read_slice  # noqa: F401  (read_slice: hdf5.read_slice is its former home)
from .compression import frame_compression as frame_compression_options
from .h5open import open_h5

EVENT_FIELDS = (("frame", np.int64), ("row", np.uint16), ("col", np.uint16), ("energy", np.float32), ("size", np.uint8))
ACQ_INT = ("frames_received", "frames_dropped", "first_frame", "last_frame", "corrupt_messages", "events_written",
           "cube_frames")     # cube_frames: frames in the stored cube (stale when < frames_received)
ACQ_STR = ("start_time", "end_time", "source")
_COMPRESSION = dict(compression="gzip", compression_opts=1, shuffle=True)
#: HDF5 file-format bounds. The upper bound 1.10 keeps every file readable by HDF5 1.10
#: tools (Debian's h5ls, MATLAB, HDFView); "latest" would use 1.12+ object headers that they
#: list as "*ERROR*". SWMR needs superblock version 3, i.e. a lower bound of 1.10 as well.
LIBVER = ("earliest", "v110")
LIBVER_SWMR = ("v110", "v110")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from .. import __version__
    return __version__


def _open(path, mode="r"):
    if mode == "r":
        return open_h5(path)
    path = Path(path)
    try:
        return h5py.File(path, mode, locking=False)
    except OSError as exc:
        raise FormatError(f"{path}: not a writable HDF5 file ({exc})") from None


def _group(f, path, name):
    """/entry/<name> of a hexspec file, or a FormatError naming what the file holds instead."""
    e = _entry(f, path)
    if name not in e:
        raise FormatError(f"{path}: expected /entry/{name}, found {sorted(e.keys())}")
    return e[name]


def _entry(f, path):
    if "entry" not in f:
        raise FormatError(f"{path}: expected a hexspec HDF5 file with an /entry group, found groups {sorted(f.keys())}")
    return f["entry"]


class HexspecWriter:
    """Append events, frames and spectra to a hexspec HDF5 file.

    Parameters
    ----------
    path : str or Path
    shape : (rows, cols)
        Detector shape.
    config : ProcessingConfig, optional
        Stored as JSON with its per-pixel maps as datasets.
    source : str, optional
        Where the data came from (URL or file), stored in /entry/acquisition.
    frames, events, spectra : bool
        Which groups to create.
    bins : EnergyBins, optional
        Bins of the spectra (default: ``config.resolved_bins()``).
    detector : DetectorSpec, optional
        Pitch and frame rate to record (default HEXITEC's, with ``shape``).
    swmr : bool
        Single-writer/multiple-reader mode: the layout is fixed at creation and each
        :meth:`flush` leaves a consistent file, readable after a crash.
    mode : {"w", "a"}
        "a" appends to an existing hexspec file of the same layout.
    frame_compression : {"bslz4", "blosc", "lz4", "gzip", "none"}
        Filter of the raw frames (:func:`hexspec.io.compression.frame_compression`),
        recorded as the ``compression`` attribute of /entry/frames/data and the
        ``frame_compression`` attribute of /entry/acquisition.
    """

    def __init__(self, path, shape, config: ProcessingConfig | None = None, source: str | None = None,
                 frames: bool = False, events: bool = True, spectra: bool = True, bins=None,
                 detector: DetectorSpec | None = None, swmr: bool = False, mode: str = "w",
                 frame_chunk: int = 64, event_chunk: int = 65536, frame_compression: str = "blosc"):
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.config = config
        self._closed = False
        if frames:
            frame_compression_options(frame_compression)   # an unknown name fails before the file exists
        if mode == "a" and self.path.exists():
            self.f = _open(self.path, "a")
            self._attach()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.f = h5py.File(self.path, "w", libver=LIBVER_SWMR if swmr else LIBVER, locking=False)
            except OSError as exc:
                raise FormatError(f"{self.path}: cannot create the output file ({exc})") from None
            self._create(config, source, frames, events, spectra, bins, detector, frame_chunk, event_chunk,
                         frame_compression)
            self._attach()
        self.swmr = swmr
        if swmr:
            self.f.swmr_mode = True
        self.last_flush = time.monotonic()

    # -------------------------------------------------------------- layout
    def _create(self, config, source, frames, events, spectra, bins, detector, frame_chunk, event_chunk,
                frame_compression="blosc"):
        f = self.f
        rows, cols = self.shape
        nexus.root_attributes(f)
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["program"] = "hexspec"
        entry.attrs["version"] = _version()
        entry.attrs["created"] = _now_iso()
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        inst["name"] = "HEXITEC"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        spec = detector or DetectorSpec(rows, cols, HEXITEC.pitch_mm, HEXITEC.frame_rate_hz)
        det["rows"], det["cols"] = rows, cols
        det["pitch_mm"] = spec.pitch_mm
        det["pitch_mm"].attrs["units"] = "mm"
        det["x_pixel_size"] = det["pitch_mm"]   # NXdetector's names for the pitch (hard links)
        det["y_pixel_size"] = det["pitch_mm"]
        det["frame_rate_hz"] = spec.frame_rate_hz
        det["frame_rate_hz"].attrs["units"] = "Hz"
        if config is not None:
            det["config"] = config.to_json()
            for name, unit in (("threshold", "ADU"), ("gradients", "keV/ADU"), ("intercepts", "keV")):
                v = getattr(config, name)
                if v is not None:
                    det[name] = np.asarray(v, dtype=np.float64)
                    det[name].attrs["units"] = unit
        unit = config.energy_unit if config is not None else "keV"
        if events:
            g = entry.create_group("events")
            g.attrs["NX_class"] = "NXevent_data"
            for name, dt in EVENT_FIELDS:
                ds = g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(event_chunk,), **_COMPRESSION)
                if name == "energy":
                    ds.attrs["units"] = unit
            g["pulse_height"] = g["energy"]
            g.attrs["field_mapping"] = nexus.EVENT_FIELD_MAPPING
        if frames:
            g = entry.create_group("frames")
            g.attrs["NX_class"] = "NXdata"
            g.create_dataset("data", shape=(0, rows, cols), maxshape=(None, rows, cols), dtype=np.uint16,
                             chunks=(frame_chunk, rows, cols), **frame_compression_options(frame_compression))
            g["data"].attrs["units"] = "ADU"
            g["data"].attrs["compression"] = frame_compression
            g.create_dataset("frame_number", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
            g.attrs["signal"] = "data"
            g.attrs["axes"] = ["frame_number", ".", "."]
            g.attrs["frame_number_indices"] = 0
        if spectra:
            if bins is None:
                bins = (config or ProcessingConfig()).resolved_bins()
            g = entry.create_group("spectra")
            g.attrs["NX_class"] = "NXdata"
            g.attrs["signal"] = "counts"
            g.attrs["axes"] = [".", ".", "energy"]
            g.attrs["energy_indices"] = 2
            g.create_dataset("counts", shape=(rows, cols, bins.n), dtype=np.uint32,
                             chunks=(min(rows, 16), min(cols, 16), bins.n), **_COMPRESSION)
            g["energy"] = bins.centers
            g["energy"].attrs["units"] = unit
            g["energy_edges"] = bins.edges
            g["energy_edges"].attrs["units"] = unit
            g["underflow"] = np.int64(0)
            g["overflow"] = np.int64(0)
        acq = entry.create_group("acquisition")
        acq.attrs["NX_class"] = "NXcollection"
        for name in ACQ_INT:
            acq[name] = np.int64(-1 if name in ("first_frame", "last_frame") else 0)
        for name in ACQ_STR:
            acq.create_dataset(name, data=np.bytes_(""), dtype="S1024")
        acq["source"][()] = np.bytes_((source or "")[:1024])
        acq["start_time"][()] = np.bytes_(_now_iso())
        if frames:
            acq.attrs["frame_compression"] = frame_compression
        entry.create_group("results").attrs["NX_class"] = "NXcollection"
        nexus.set_default(entry)
        provenance.write_process(entry)

    def _attach(self):
        e = _entry(self.f, self.path)
        self._events = {n: e["events"][n] for n, _ in EVENT_FIELDS} if "events" in e else None
        self._frames = e["frames/data"] if "frames" in e else None
        self._frame_numbers = e["frames/frame_number"] if "frames" in e else None
        self._counts = e["spectra/counts"] if "spectra" in e else None
        self._acq = e["acquisition"]

    # -------------------------------------------------------------- appends
    def write_frames(self, batch: FrameBatch) -> None:
        if self._frames is None:
            raise FormatError(f"{self.path}: this file was opened without a frames group")
        if batch.shape != self.shape:
            raise FormatError(f"{self.path}: expected frames of shape {self.shape}, found {batch.shape}")
        n0, n = self._frames.shape[0], len(batch)
        self._frames.resize(n0 + n, axis=0)
        self._frames[n0:] = batch.frames
        self._frame_numbers.resize(n0 + n, axis=0)
        self._frame_numbers[n0:] = batch.frame_numbers

    def write_events(self, events: EventList) -> None:
        if self._events is None:
            raise FormatError(f"{self.path}: this file was opened without an events group")
        n = len(events)
        if n == 0:
            return
        n0 = self._events["frame"].shape[0]
        for name, _ in EVENT_FIELDS:
            ds = self._events[name]
            ds.resize(n0 + n, axis=0)
            ds[n0:] = getattr(events, name)
        self._acq["events_written"][()] = n0 + n

    def write_spectra(self, cube: SpectralCube) -> None:
        if self._counts is None:
            raise FormatError(f"{self.path}: this file was opened without a spectra group")
        if cube.counts.shape != self._counts.shape:
            raise FormatError(f"{self.path}: expected a cube of shape {self._counts.shape}, found {cube.counts.shape}")
        _check_counts(cube.counts, self.path)
        self._counts[...] = cube.counts
        g = self._counts.parent
        g["underflow"][()] = cube.underflow
        g["overflow"][()] = cube.overflow

    def set_acquisition(self, **counters) -> None:
        """Update acquisition counters (frames_received, frames_dropped, first_frame, last_frame,
        corrupt_messages) or strings (start_time, end_time, source)."""
        for k, v in counters.items():
            if k in ACQ_INT:
                self._acq[k][()] = int(v)
            elif k in ACQ_STR:
                self._acq[k][()] = np.bytes_(str(v)[:1024])
            else:
                raise FormatError(f"unknown acquisition field {k!r}; expected one of {ACQ_INT + ACQ_STR}")

    def write_results(self, group_name: str, arrays: dict, attrs: dict | None = None) -> None:
        """Store named arrays and attributes under /entry/results/<group_name> (not in SWMR mode)."""
        _write_results_group(_entry(self.f, self.path), group_name, arrays, attrs)

    def flush(self) -> None:
        self.f.flush()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._acq["end_time"][()] = np.bytes_(_now_iso())
            entry = _entry(self.f, self.path)
            provenance.write_process(entry, create=not self.swmr)   # the end time
            if not self.swmr:   # SWMR files are complete from their creation
                nexus.finalise(self.f)
            self.f.flush()
        finally:
            self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_counts(counts, path):
    """Counts are stored as uint32: refuse what would not survive that."""
    c = np.asarray(counts)
    if c.dtype.kind == "f" and c.size and not np.all(np.floor(c) == c):
        raise FormatError(f"{path}: spectra counts must be whole numbers, found non-integer values (dtype {c.dtype})")
    if c.size and (c.min() < 0 or c.max() > np.iinfo(np.uint32).max):
        raise FormatError(f"{path}: spectra counts must lie in 0..2^32-1 to be stored as uint32, "
                          f"found range [{c.min()}, {c.max()}]")


def _write_results_group(entry, group_name, arrays, attrs):
    res = entry.require_group("results")
    if group_name in res:
        del res[group_name]
    g = res.create_group(group_name)
    for k, v in (arrays or {}).items():
        v = np.asarray(v)
        if v.dtype.kind == "U":
            v = v.astype("S")
        g.create_dataset(k, data=v, **(_COMPRESSION if v.size > 1024 else {}))
    attrs = dict(attrs or {})
    units = attrs.get("units")
    if isinstance(units, dict):
        # units belong on each dataset (NeXus), not in one JSON attribute of the group
        nexus.apply_units(g, attrs.pop("units"))
    nexus.describe_codes(g, attrs)
    if nexus.make_plottable(g):
        res.attrs["default"] = group_name
        if isinstance(units, str):   # one unit for the group: that of its signal
            g[g.attrs["signal"]].attrs["units"] = attrs.pop("units")
    for k, v in attrs.items():
        if isinstance(v, (dict, list, tuple)) and not (isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v)):
            v = json.dumps(v)
        g.attrs[k] = "" if v is None else v
    return g


# ------------------------------------------------------------------ one-shot writers

def write_cube(path, cube: SpectralCube, config: ProcessingConfig | None = None, source: str | None = None) -> None:
    """Write a SpectralCube (and optionally the config that made it) as a new hexspec file."""
    from ..bins import EnergyBins
    try:
        bins = EnergyBins.from_edges(cube.edges)
    except FormatError:
        bins = None
    with HexspecWriter(path, cube.shape, config=config, source=source, events=False, spectra=bins is not None,
                       bins=bins) as w:
        if bins is not None:
            w.write_spectra(cube)
        else:
            _check_counts(cube.counts, path)
            g = w.f["entry"].create_group("spectra")
            g.attrs.update(NX_class="NXdata", signal="counts", axes=[".", ".", "energy"], energy_indices=2)
            g["counts"] = np.asarray(cube.counts).astype(np.uint32)
            g["energy"] = cube.centers
            g["energy_edges"] = cube.edges
        w.f["entry/spectra/energy"].attrs["units"] = cube.unit
        w.f["entry/spectra/energy_edges"].attrs["units"] = cube.unit


def write_results(path, group_name: str, arrays: dict, attrs: dict | None = None) -> None:
    """Add /entry/results/<group_name> to a hexspec file, creating the file if needed."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w", libver=LIBVER, locking=False) as f:
            e = f.create_group("entry")
            e.attrs.update(NX_class="NXentry", program="hexspec", version=_version(), created=_now_iso())
            # NeXus wants the instrument even where only results are stored (their input names the detector)
            inst = e.create_group("instrument")
            inst.attrs["NX_class"] = "NXinstrument"
            inst["name"] = "HEXITEC"
            inst.create_group("detector").attrs["NX_class"] = "NXdetector"
    with _open(path, "a") as f:
        entry = _entry(f, path)
        _write_results_group(entry, group_name, arrays, attrs)
        provenance.write_process(entry, group_name)
        nexus.finalise(f)


# ------------------------------------------------------------------ readers

def _check_rows(path, datasets, rows):
    """``rows`` of each dataset fit the allocation limit (sizes come from the file, not from us)."""
    from ..limits import check_allocation
    for ds in datasets:
        check_allocation((rows,) + ds.shape[1:], ds.dtype.itemsize, f"{path}: {ds.name}", FormatError)


def _dataset(g, name, path, ndim=None, kinds="iuf"):
    """g[name] checked to be a dataset of ``ndim`` dimensions and a numeric kind."""
    where = f"{g.name.rstrip('/')}/{name}"
    if name not in g:
        raise FormatError(f"{path}: expected a dataset {where}, found {sorted(g.keys())}")
    ds = g[name]
    if not isinstance(ds, h5py.Dataset):
        raise FormatError(f"{path}: expected {where} to be a dataset, found a group")
    if ds.dtype.kind not in kinds or (ndim is not None and ds.ndim != ndim):
        kind = {"iu": "integer", "iuf": "numeric", "iufb": "numeric"}.get(kinds, kinds)
        raise FormatError(f"{path}: expected {where} to be {kind} with {ndim} dimension(s), "
                          f"found {ds.dtype} of shape {ds.shape}")
    return ds


def _event_datasets(f, path):
    g = _group(f, path, "events")
    return [_dataset(g, name, path, 1) for name, _ in EVENT_FIELDS]


def _frame_datasets(f, path):
    g = _group(f, path, "frames")
    return _dataset(g, "data", path, 3, "iu"), _dataset(g, "frame_number", path, 1, "iu")


def acknowledged_rows(acquisition, n: int, counter: str) -> int:
    """``n`` rows, cut to what the last flush acknowledged (the scalar ``counter`` of the
    /entry/acquisition group ``acquisition``) in a recording that was never closed (no
    end_time yet: killed, or stopped by a failed write). HDF5 may have stored extents
    beyond the chunks that reached the disk before the write failed; those rows hold fill
    values, not data."""
    if isinstance(acquisition, h5py.Group) and counter in acquisition and "end_time" in acquisition:
        end, count = acquisition["end_time"], acquisition[counter]
        if end.shape == () and count.shape == () and count.dtype.kind in "iu" and not end[()]:
            return min(n, max(int(count[()]), 0))
    return n


def _stored_frames(f, data, fn) -> int:
    """Frames a reader may use: the datasets' common length, no more than acknowledged."""
    return acknowledged_rows(f.get("entry/acquisition"), min(data.shape[0], fn.shape[0]), "frames_received")


def read_shape(path) -> tuple:
    """(rows, cols) of a hexspec file's detector, checked to be whole numbers >= 1."""
    with _open(path) as f:
        e = _entry(f, path)
        if "instrument/detector" not in e:
            raise FormatError(f"{path}: a hexspec file without /entry/instrument/detector holds no frames or events")
        d = e["instrument/detector"]
        out = []
        for name in ("rows", "cols"):
            v = d.get(name)
            if not isinstance(v, h5py.Dataset) or v.shape != () or v.dtype.kind not in "iu" or int(v[()]) < 1:
                if isinstance(v, h5py.Dataset) and v.size < 10:
                    x = v[()]
                    found = repr(x.decode() if isinstance(x, bytes) else (x.tolist() if hasattr(x, "tolist") else x))
                else:
                    found = "nothing" if v is None else str(v)
                raise FormatError(f"{path}: expected /entry/instrument/detector/{name} to be a whole number >= 1, "
                                  f"found {found}")
            out.append(int(v[()]))
        return tuple(out)

def read_events(path) -> EventList:
    """All events of a hexspec file (those up to the last flush, for a cut-off file)."""
    with _open(path) as f:
        ds = _event_datasets(f, path)
        n = min(d.shape[0] for d in ds)
        _check_rows(path, ds, n)
        return EventList(*(read_slice(d, 0, n, path) for d in ds))


def iter_events(path, batch_size: int = 1_000_000):
    """Events of a hexspec file in batches (bounded memory)."""
    if batch_size < 1:
        raise FormatError(f"iter_events: batch_size must be >= 1, found {batch_size}")
    with _open(path) as f:
        ds = _event_datasets(f, path)
        n = min(d.shape[0] for d in ds)
        for s in range(0, n, batch_size):
            yield EventList(*(read_slice(d, s, min(s + batch_size, n), path) for d in ds))


def read_cube(path) -> SpectralCube:
    """The /entry/spectra cube of a hexspec file."""
    from ..limits import check_allocation
    with _open(path) as f:
        g = _group(f, path, "spectra")
        counts = _dataset(g, "counts", path, 3)
        _dataset(g, "energy_edges", path, 1)
        check_allocation(counts.shape, counts.dtype.itemsize, f"{path}: /entry/spectra/counts", FormatError)
        unit = g["energy_edges"].attrs.get("units", "keV")
        if isinstance(unit, bytes):
            unit = unit.decode()
        return SpectralCube(g["counts"][...], g["energy_edges"][...], unit=str(unit),
                            underflow=int(g["underflow"][()]) if "underflow" in g else 0,
                            overflow=int(g["overflow"][()]) if "overflow" in g else 0)


def count_frames(path) -> int:
    with _open(path) as f:
        e = _entry(f, path)
        if "frames" not in e:
            return 0
        data, fn = _frame_datasets(f, path)
        return _stored_frames(f, data, fn)


def read_frames(path, start: int = 0, stop: int | None = None) -> FrameBatch:
    """Raw frames [start, stop) of a hexspec file."""
    with _open(path) as f:
        data, fn = _frame_datasets(f, path)
        n = _stored_frames(f, data, fn)
        stop = n if stop is None else min(stop, n)
        _check_rows(path, [data], max(0, stop - start))
        return FrameBatch(read_slice(data, start, stop, path), read_slice(fn, start, stop, path))


def iter_frames(path, batch_size: int = 1000, decode_threads: int | None = None):
    """Raw frames of a hexspec file in batches (bounded memory); bitshuffle-LZ4 and Blosc
    chunks are decoded in ``decode_threads`` threads (:mod:`hexspec.io.chunkread`)."""
    if batch_size < 1:
        raise FormatError(f"iter_frames: batch_size must be >= 1, found {batch_size}")
    with _open(path) as f:
        data, fn = _frame_datasets(f, path)
        _check_rows(path, [data], batch_size)
        n = min(data.shape[0], fn.shape[0])
        for s, block in zip(range(0, n, batch_size), iter_batches(data, 0, n, batch_size, path, decode_threads)):
            yield FrameBatch(block, read_slice(fn, s, min(s + batch_size, n), path))


def read_detector(path) -> DetectorSpec:
    with _open(path) as f:
        d = _entry(f, path)["instrument/detector"]
        return DetectorSpec(int(d["rows"][()]), int(d["cols"][()]), float(d["pitch_mm"][()]), float(d["frame_rate_hz"][()]))


def read_config(path) -> ProcessingConfig | None:
    """The ProcessingConfig stored in a hexspec file, or None if it has none."""
    with _open(path) as f:
        d = _entry(f, path).get("instrument/detector")
        if d is None or "config" not in d:
            return None
        text = d["config"][()]
        return ProcessingConfig.from_json(text.decode() if isinstance(text, bytes) else text)


def read_acquisition(path) -> dict:
    with _open(path) as f:
        acq = _entry(f, path)["acquisition"]
        out = {}
        for k in acq:
            v = acq[k][()]
            out[k] = v.decode() if isinstance(v, bytes) else (int(v) if np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.integer) else v)
        return out


def read_results(path, group_name: str):
    """(arrays, attrs) of /entry/results/<group_name>."""
    with _open(path) as f:
        res = _entry(f, path).get("results")
        if res is None or group_name not in res:
            found = sorted(res.keys()) if res is not None else []
            raise FormatError(f"{path}: expected /entry/results/{group_name}, found results {found}")
        g = res[group_name]
        arrays = {k: g[k][()] for k in g if isinstance(g[k], h5py.Dataset)}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        return arrays, attrs


def read_calibration(path) -> dict:
    """Energy calibration maps from a hexspec file written by `hexspec calibrate`.

    Looks in /entry/results/calibration first, then /entry/instrument/detector.
    Returns a dict with "gradients" and "intercepts" (rows, cols) arrays (and any other
    maps stored with them).
    """
    with _open(path) as f:
        e = _entry(f, path)
        for where in ("results/calibration", "instrument/detector"):
            g = e.get(where)
            if g is not None and "gradients" in g and "intercepts" in g:
                return {k: g[k][()] for k in g if isinstance(g[k], h5py.Dataset) and g[k].ndim == 2}
    raise FormatError(f"{path}: expected gradients and intercepts in /entry/results/calibration "
                      "or /entry/instrument/detector, found neither")


def is_hexspec_file(path) -> bool:
    try:
        with open_h5(path) as f:
            return "entry" in f and f["entry"].attrs.get("program", "") == "hexspec"
    except FormatError:
        return False
