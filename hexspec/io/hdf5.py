"""hexspec HDF5 files (FORMATS.md, "hexspec HDF5"): NeXus-flavoured, self-describing.

Layout::

    /entry                      NXentry; program, version, created
    /entry/instrument/detector  NXdetector: rows, cols, pitch_mm, frame_rate_hz, maps, config (JSON)
    /entry/events               frame int64, row uint16, col uint16, energy float32, size uint8
    /entry/frames/data          raw frames (N, R, C) uint16; frame_number (N,) int64
    /entry/spectra              NXdata: counts (R, C, nbins) uint32, energy, energy_edges
    /entry/acquisition          counters and provenance of the recording
    /entry/results/<name>       fits, maps, calibrations, with their parameters as attributes

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
from ..detector import HEXITEC, DetectorSpec
from ..errors import FormatError
from ..events import EventList
from ..frames import FrameBatch
from ..spectra import SpectralCube
from .h5open import open_h5

EVENT_FIELDS = (("frame", np.int64), ("row", np.uint16), ("col", np.uint16), ("energy", np.float32), ("size", np.uint8))
ACQ_INT = ("frames_received", "frames_dropped", "first_frame", "last_frame", "corrupt_messages", "events_written",
           "cube_frames")     # cube_frames: frames in the stored cube (stale when < frames_received)
ACQ_STR = ("start_time", "end_time", "source")
_COMPRESSION = dict(compression="gzip", compression_opts=1, shuffle=True)


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
    """

    def __init__(self, path, shape, config: ProcessingConfig | None = None, source: str | None = None,
                 frames: bool = False, events: bool = True, spectra: bool = True, bins=None,
                 detector: DetectorSpec | None = None, swmr: bool = False, mode: str = "w",
                 frame_chunk: int = 64, event_chunk: int = 65536):
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.config = config
        self._closed = False
        if mode == "a" and self.path.exists():
            self.f = _open(self.path, "a")
            self._attach()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.f = h5py.File(self.path, "w", libver="latest" if swmr else "earliest", locking=False)
            except OSError as exc:
                raise FormatError(f"{self.path}: cannot create the output file ({exc})") from None
            self._create(config, source, frames, events, spectra, bins, detector, frame_chunk, event_chunk)
            self._attach()
        self.swmr = swmr
        if swmr:
            self.f.swmr_mode = True
        self.last_flush = time.monotonic()

    # -------------------------------------------------------------- layout
    def _create(self, config, source, frames, events, spectra, bins, detector, frame_chunk, event_chunk):
        f = self.f
        rows, cols = self.shape
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["program"] = "hexspec"
        entry.attrs["version"] = _version()
        entry.attrs["created"] = _now_iso()
        det = entry.create_group("instrument").create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        spec = detector or DetectorSpec(rows, cols, HEXITEC.pitch_mm, HEXITEC.frame_rate_hz)
        det["rows"], det["cols"] = rows, cols
        det["pitch_mm"] = spec.pitch_mm
        det["pitch_mm"].attrs["units"] = "mm"
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
        if frames:
            g = entry.create_group("frames")
            g.attrs["NX_class"] = "NXdata"
            g.create_dataset("data", shape=(0, rows, cols), maxshape=(None, rows, cols), dtype=np.uint16,
                             chunks=(frame_chunk, rows, cols), **_COMPRESSION)
            g["data"].attrs["units"] = "ADU"
            g.create_dataset("frame_number", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        if spectra:
            if bins is None:
                bins = (config or ProcessingConfig()).resolved_bins()
            g = entry.create_group("spectra")
            g.attrs["NX_class"] = "NXdata"
            g.attrs["signal"] = "counts"
            g.attrs["axes"] = [".", ".", "energy"]
            g.create_dataset("counts", shape=(rows, cols, bins.n), dtype=np.uint32,
                             chunks=(min(rows, 16), min(cols, 16), bins.n), **_COMPRESSION)
            g["energy"] = bins.centers
            g["energy"].attrs["units"] = unit
            g["energy_edges"] = bins.edges
            g["energy_edges"].attrs["units"] = unit
            g["underflow"] = np.int64(0)
            g["overflow"] = np.int64(0)
        acq = entry.create_group("acquisition")
        for name in ACQ_INT:
            acq[name] = np.int64(-1 if name in ("first_frame", "last_frame") else 0)
        for name in ACQ_STR:
            acq.create_dataset(name, data=np.bytes_(""), dtype="S1024")
        acq["source"][()] = np.bytes_((source or "")[:1024])
        acq["start_time"][()] = np.bytes_(_now_iso())
        entry.create_group("results")

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
    for k, v in (attrs or {}).items():
        if isinstance(v, (dict, list, tuple)) and not (isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v)):
            v = json.dumps(v)
        g.attrs[k] = "" if v is None else v
    return g


# ------------------------------------------------------------------ one-shot writers

def write_cube(path, cube: SpectralCube, config: ProcessingConfig | None = None, source: str | None = None) -> None:
    """Write a SpectralCube (and optionally the config that made it) as a new hexspec file."""
    from ..spectra import EnergyBins
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
            g.attrs.update(NX_class="NXdata", signal="counts")
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
        with h5py.File(path, "w", locking=False) as f:
            e = f.create_group("entry")
            e.attrs.update(NX_class="NXentry", program="hexspec", version=_version(), created=_now_iso())
    with _open(path, "a") as f:
        _write_results_group(_entry(f, path), group_name, arrays, attrs)


# ------------------------------------------------------------------ readers

def _check_rows(path, group, names, rows, ndim):
    """Each dataset has ``ndim`` axes and ``rows`` of it fit the allocation limit (sizes come from the file)."""
    from ..limits import check_allocation
    for name in names:
        ds = group.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(f"{path}: expected a dataset {group.name}/{name}, found {sorted(group.keys())}")
        if ds.ndim != ndim:
            raise FormatError(f"{path}: expected {group.name}/{name} with {ndim} axes, found shape {ds.shape}")
        check_allocation((rows,) + ds.shape[1:], ds.dtype.itemsize, f"{path}: {group.name}/{name}", FormatError)


def read_events(path) -> EventList:
    """All events of a hexspec file (those up to the last flush, for a cut-off file)."""
    with _open(path) as f:
        g = _group(f, path, "events")
        _check_rows(path, g, [name for name, _ in EVENT_FIELDS], 0, 1)
        n = min(g[name].shape[0] for name, _ in EVENT_FIELDS)
        _check_rows(path, g, [name for name, _ in EVENT_FIELDS], n, 1)
        return EventList(*(g[name][:n] for name, _ in EVENT_FIELDS))


def iter_events(path, batch_size: int = 1_000_000):
    """Events of a hexspec file in batches (bounded memory)."""
    if batch_size < 1:
        raise FormatError(f"iter_events: batch_size must be >= 1, found {batch_size}")
    with _open(path) as f:
        g = _group(f, path, "events")
        _check_rows(path, g, [name for name, _ in EVENT_FIELDS], 0, 1)
        n = min(g[name].shape[0] for name, _ in EVENT_FIELDS)
        for s in range(0, n, batch_size):
            yield EventList(*(g[name][s:min(s + batch_size, n)] for name, _ in EVENT_FIELDS))


def read_cube(path) -> SpectralCube:
    """The /entry/spectra cube of a hexspec file."""
    from ..limits import check_allocation
    with _open(path) as f:
        g = _group(f, path, "spectra")
        _check_rows(path, g, ["counts"], 0, 3)
        _check_rows(path, g, ["energy_edges"], 0, 1)
        check_allocation(g["counts"].shape, g["counts"].dtype.itemsize, f"{path}: /entry/spectra/counts", FormatError)
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
        _check_rows(path, e["frames"], ["data"], 0, 3)
        _check_rows(path, e["frames"], ["frame_number"], 0, 1)
        return min(e["frames/data"].shape[0], e["frames/frame_number"].shape[0])


def read_frames(path, start: int = 0, stop: int | None = None) -> FrameBatch:
    """Raw frames [start, stop) of a hexspec file."""
    with _open(path) as f:
        e = _entry(f, path)
        g = _group(f, path, "frames")
        _check_rows(path, g, ["data"], 0, 3)
        _check_rows(path, g, ["frame_number"], 0, 1)
        n = min(e["frames/data"].shape[0], e["frames/frame_number"].shape[0])
        stop = n if stop is None else min(stop, n)
        _check_rows(path, g, ["data"], max(0, stop - start), 3)
        return FrameBatch(e["frames/data"][start:stop], e["frames/frame_number"][start:stop])


def iter_frames(path, batch_size: int = 1000):
    """Raw frames of a hexspec file in batches (bounded memory)."""
    if batch_size < 1:
        raise FormatError(f"iter_frames: batch_size must be >= 1, found {batch_size}")
    with _open(path) as f:
        e = _entry(f, path)
        g = _group(f, path, "frames")
        _check_rows(path, g, ["data"], batch_size, 3)
        _check_rows(path, g, ["frame_number"], 0, 1)
        data, fn = e["frames/data"], e["frames/frame_number"]
        n = min(data.shape[0], fn.shape[0])
        for s in range(0, n, batch_size):
            t = min(s + batch_size, n)
            yield FrameBatch(data[s:t], fn[s:t])


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
