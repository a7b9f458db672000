"""`hexspec recover FILE`: make a recording cut off by a crash, kill -9 or a full disk whole again.

Such a file holds every frame and event up to its last flush, but it still carries the
"being written" mark of SWMR mode (plain h5py and h5ls refuse it), and its spectral cube
is the one written last (every few seconds), older than its events. Recovery copies what
the file holds into a new file beside it (HDF5 1.10 format, no mark), cuts the event and
frame columns to a common length, rebuilds the cube from the stored events (or, without
events, from the stored frames and the recording's processing options), sets the
counters to what is really stored, and renames the new file over the old one. If the
cube cannot be rebuilt (neither events nor frames were stored) it is kept and marked:
/entry/acquisition/cube_frames says how many frames it holds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from ..errors import FormatError
from ..io.hdf5 import acknowledged_rows

EVENT_FIELDS = ("frame", "row", "col", "energy", "size")


def register(sub) -> None:
    p = sub.add_parser(
        "recover", help="repair a recording left by a crash, kill -9 or a full disk (in place, keeping every frame)",
        description="Make a hexspec file left by a crashed or killed recorder a plain HDF5 file again: every "
                    "frame and event up to the last flush is kept, the spectral cube is rebuilt from them and "
                    "the counters are set to what is stored. The file is rewritten beside itself and renamed "
                    "into place, so a failed recovery leaves it as it was.")
    p.add_argument("file", metavar="FILE", help="hexspec HDF5 file written by `hexspec record`")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=run)


def _needs_recovery(path) -> bool:
    try:
        with h5py.File(path, "r", locking=False) as f:
            acq = f.get("entry/acquisition")
            if acq is None or "spectra" not in f["entry"] or "cube_frames" not in acq:
                return False
            return int(acq["cube_frames"][()]) != int(acq["frames_received"][()])
    except OSError:
        return True        # the SWMR "being written" mark, or a file cut short


def recover(path) -> dict:
    """Repair ``path`` in place; return what was found (frames, events, cube_rebuilt_from)."""
    from ..io.outputs import OutputLock

    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    with OutputLock(path, remove_if_empty=False):      # never under a live recorder
        if not _needs_recovery(path):
            return {"frames": None, "events": None, "cube_rebuilt_from": "nothing to do"}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".recover", dir=path.parent)
        os.close(fd)
        try:
            info = _copy_repaired(path, Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return info


def _open_cut_off(path):
    try:
        return h5py.File(path, "r", locking=False)
    except OSError:
        try:
            return h5py.File(path, "r", locking=False, swmr=True)
        except OSError as exc:
            raise FormatError(f"{path}: not a readable HDF5 file, even as a SWMR reader ({exc}); "
                              "nothing can be recovered from it") from None


def _copy_repaired(path, tmp) -> dict:
    from ..config import ProcessingConfig
    from ..events import EventExtractor, EventList
    from ..frames import FrameBatch
    from ..spectra import EnergyBins, SpectrumAccumulator

    with _open_cut_off(path) as src, h5py.File(tmp, "w", libver=("earliest", "v110"), locking=False) as dst:
        if "entry" not in src:
            raise FormatError(f"{path}: expected a hexspec file with /entry, found {sorted(src.keys())}")
        e = src["entry"]
        out = dst.create_group("entry")
        for k, v in e.attrs.items():
            out.attrs[k] = v
        for name in e:
            if name not in ("events", "frames"):
                _copy_tree(e[name], out, name)
        n_events = 0
        if "events" in e:
            n_events = acknowledged_rows(e.get("acquisition"), min(e["events"][k].shape[0] for k in EVENT_FIELDS),
                                         "events_written")
            _copy_columns(e["events"], out, "events", n_events)
        n_frames = None
        if "frames" in e:
            n_frames = acknowledged_rows(e.get("acquisition"),
                                         min(e["frames/data"].shape[0], e["frames/frame_number"].shape[0]),
                                         "frames_received")
            _copy_columns(e["frames"], out, "frames", n_frames)
        acq = out["acquisition"]
        counters = {k: int(acq[k][()]) for k in ("frames_received", "last_frame") if k in acq}
        if n_frames is not None:
            counters["frames_received"] = n_frames
            counters["last_frame"] = int(e["frames/frame_number"][n_frames - 1]) if n_frames else -1
        if "events_written" in acq:
            counters["events_written"] = n_events
        rebuilt = "no cube in the file"
        if "spectra" in out:
            g = out["spectra"]
            config_text = e["instrument/detector/config"][()] if "config" in e.get("instrument/detector", {}) else None
            config = ProcessingConfig.from_json(config_text.decode() if isinstance(config_text, bytes) else config_text) \
                if config_text is not None else ProcessingConfig()
            edges = g["energy_edges"][...]
            config.bins = EnergyBins.from_edges(edges)
            shape = g["counts"].shape[:2]
            acc = SpectrumAccumulator(config, shape)
            if "events" in e:
                for s in range(0, n_events, 1_000_000):
                    t = min(s + 1_000_000, n_events)
                    acc.add(EventList(*(e["events"][k][s:t] for k in EVENT_FIELDS)))
                rebuilt = "events"
            elif n_frames:
                extractor = EventExtractor(config, shape)
                try:
                    for s in range(0, n_frames, 1000):
                        t = min(s + 1000, n_frames)
                        acc.add(extractor(FrameBatch(e["frames/data"][s:t], e["frames/frame_number"][s:t])))
                finally:
                    extractor.close()
                rebuilt = "frames"
            if rebuilt in ("events", "frames"):
                cube = acc.cube
                g["counts"][...] = cube.counts
                if "underflow" in g:
                    g["underflow"][()] = cube.underflow
                    g["overflow"][()] = cube.overflow
                counters["cube_frames"] = counters.get("frames_received", 0)
            else:
                rebuilt = "nothing (no events or frames stored): the cube is kept and marked stale"
        for k, v in counters.items():
            if k in acq:
                acq[k][()] = np.int64(v)
        if "end_time" in acq:
            acq["end_time"][()] = np.bytes_("recovered " + datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return {"frames": counters.get("frames_received"), "events": n_events, "cube_rebuilt_from": rebuilt}


def _filters(ds) -> dict:
    """create_dataset keywords that compress like ``ds``: HDF5's own filters as they are, the
    hdf5plugin filters (Blosc, bitshuffle+LZ4, LZ4: h5py names them "unknown") by hexspec's
    name for them, anything else with gzip."""
    from ..io.compression import COMPRESSIONS, dataset_compression, frame_compression
    if ds.compression in ("gzip", "lzf", "szip") or ds.compression is None:
        return dict(compression=ds.compression, compression_opts=ds.compression_opts, shuffle=ds.shuffle)
    name = dataset_compression(ds)
    return frame_compression(name if name in COMPRESSIONS else "gzip")


def _copy_dataset(ds, g, key, n=None):
    """Copy one dataset (its first ``n`` rows), keeping chunking, compression and attributes.

    Written element-wise rather than with H5Ocopy: the recorder's SWMR files use object
    header versions that H5Ocopy will not put into a file limited to the 1.10 format.
    """
    if ds.shape == () or ds.chunks is None:
        new = g.create_dataset(key, data=ds[()], dtype=ds.dtype)
    else:
        n = ds.shape[0] if n is None else n
        new = g.create_dataset(key, shape=(n,) + ds.shape[1:], maxshape=ds.maxshape, dtype=ds.dtype,
                               chunks=ds.chunks, **_filters(ds))
        step = max(1, (64 << 20) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))))
        for s in range(0, n, step):
            new[s:min(s + step, n)] = ds[s:min(s + step, n)]
    for k, v in ds.attrs.items():
        new.attrs[k] = v


def _copy_tree(obj, out, name):
    if isinstance(obj, h5py.Dataset):
        _copy_dataset(obj, out, name)
        return
    g = out.create_group(name)
    for k, v in obj.attrs.items():
        g.attrs[k] = v
    for key in obj:
        _copy_tree(obj[key], g, key)


def _copy_columns(group, out, name, n):
    """Copy a group of columns, each cut to ``n`` rows."""
    g = out.create_group(name)
    for k, v in group.attrs.items():
        g.attrs[k] = v
    for key in group:
        _copy_dataset(group[key], g, key, n)


def run(args) -> int:
    info = recover(args.file)
    if not args.quiet:
        if info["cube_rebuilt_from"] == "nothing to do":
            print(f"{args.file}: nothing to recover (the file was closed cleanly)")
        else:
            frames = "" if info["frames"] is None else f"{info['frames']} frames, "
            print(f"{args.file}: recovered {frames}{info['events']} events; cube rebuilt from "
                  f"{info['cube_rebuilt_from']}")
    return 0
