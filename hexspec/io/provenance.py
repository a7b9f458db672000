"""Provenance of a run: command line, library versions, input files, start and end times.

The command line (:func:`hexspec.cli.main`) calls :func:`begin` once per run with the
files the command reads; every hexspec HDF5 file written during the run then gets an
``NXprocess`` group (/entry/process_<step>) describing it (:func:`write_process`). Library
use without the command line still records the versions, ``sys.argv`` and the times.
"""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: Libraries whose versions can change the numbers in an output file.
LIBRARIES = ("numpy", "numba", "scipy", "lmfit", "h5py", "xraylib", "hdf5plugin")
#: Files up to this size are hashed whole; larger ones by their first and last MiB.
FULL_HASH_BYTES = 100 * 2 ** 20
_MIB = 2 ** 20

_run: dict = {}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def begin(argv, command: str | None = None, inputs=()) -> None:
    """Start a run: remember the command line, the start time and the input files.

    ``inputs`` are (role, path) pairs; paths that are not existing files are ignored
    (a number given where a map file may go, a URL).
    """
    _run.clear()
    _run.update(id=uuid.uuid4().hex, argv=["hexspec", *argv] if argv is not None else list(sys.argv),
                command=command or "", start=_now(), inputs=[], notes=[])
    for role, path in inputs:
        add_input(role, path)


def _current() -> dict:
    if not _run:
        begin(None, Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python")
    return _run


def add_input(role: str, path) -> None:
    """Record an input file of the current run (size, modification time, content hash)."""
    p = Path(path)
    if p.is_file():
        _current()["inputs"].append((role, describe_file(p)))


def add_note(text: str) -> None:
    """Record an assumption the run made (e.g. a detector shape it was not given)."""
    _current()["notes"].append(str(text))


def notes() -> list:
    return list(_current()["notes"])


def describe_file(path) -> dict:
    """Path, size, modification time and SHA-256 of a file.

    Files up to :data:`FULL_HASH_BYTES` are hashed whole; for larger ones only the first
    and the last MiB are hashed (cheap, and still changes when a file is appended to or
    re-recorded), which ``hash_scope`` says.
    """
    p = Path(path).resolve()
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        if st.st_size <= FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(_MIB), b""):
                h.update(block)
            scope = "whole file"
        else:
            h.update(fh.read(_MIB))
            fh.seek(st.st_size - _MIB)
            h.update(fh.read(_MIB))
            scope = "first and last MiB"
    return {"path": str(p), "size_bytes": int(st.st_size),
            "mtime": _iso(datetime.fromtimestamp(st.st_mtime, timezone.utc)),
            "sha256": h.hexdigest(), "hash_scope": scope}


def library_versions() -> dict:
    """Versions of Python, HDF5 and :data:`LIBRARIES` ("not installed" when absent)."""
    from importlib import metadata

    import h5py
    out = {"python": sys.version.split()[0], "hdf5": h5py.version.hdf5_version}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _str_dataset(g, name, text, size=None):
    data = np.bytes_(text.encode("utf-8"))
    if size is None:
        g.create_dataset(name, data=data)
    else:
        g.create_dataset(name, data=np.bytes_(data[:size]), dtype=f"S{size}")


def write_process(entry, step: str = "write", create: bool = True) -> None:
    """Describe the current run in ``entry`` as an NXprocess group, or update its end time.

    One group per run and file: /entry/process_<step> (with a numeric suffix when an
    earlier run already wrote one, e.g. `hexspec fit` adding to a `process` output).
    The end time is a fixed-size string, so that a file in SWMR mode can update it
    (``create=False``: only update, as SWMR allows no new objects).
    """
    from .. import __version__

    run = _current()
    for name, g in entry.items():
        if g.attrs.get("NX_class") == "NXprocess" and g.attrs.get("run_id") == run["id"]:
            g["end_time"][()] = np.bytes_(_iso(_now()))
            return
    if not create:
        return
    name = f"process_{run['command'] or step}"
    k = 2
    while name in entry:
        name = f"process_{step}_{k}"
        k += 1
    g = entry.create_group(name)
    g.attrs["NX_class"] = "NXprocess"
    g.attrs["run_id"] = run["id"]
    _str_dataset(g, "program", "hexspec")
    _str_dataset(g, "version", __version__)
    _str_dataset(g, "date", _iso(run["start"]))
    _str_dataset(g, "start_time", _iso(run["start"]))
    _str_dataset(g, "end_time", _iso(_now()), size=40)
    _str_dataset(g, "command", run["command"])
    _str_dataset(g, "command_line", " ".join(_quote(a) for a in run["argv"]))
    lib = g.create_group("libraries")
    lib.attrs["NX_class"] = "NXnote"
    lib.attrs["description"] = "versions of the libraries that shape the results"
    for k2, v in library_versions().items():
        _str_dataset(lib, k2, v)
    inputs = g.create_group("inputs")
    inputs.attrs["NX_class"] = "NXcollection"
    for i, (role, desc) in enumerate(run["inputs"]):
        fg = inputs.create_group(f"input_{i}")
        fg.attrs["NX_class"] = "NXnote"
        _str_dataset(fg, "role", role)
        for k2, v in desc.items():
            if k2 == "size_bytes":
                fg[k2] = np.int64(v)
                fg[k2].attrs["units"] = "bytes"
            else:
                _str_dataset(fg, k2, v)
    if run["notes"]:
        _str_dataset(g, "notes", "\n".join(run["notes"]))


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(str(arg))


def cli_inputs(args) -> list:
    """(role, path) of every file a parsed command line names as an input."""
    out = []
    for role in ("input", "cube", "calibration", "lithium_cal", "fits", "config", "threshold", "gradients",
                 "intercepts"):
        v = getattr(args, role, None)
        if isinstance(v, (str, os.PathLike)):
            out.append((role, v))
        elif isinstance(v, (list, tuple)):   # e.g. `process` takes several inputs (nargs="+")
            out.extend((role, x) for x in v if isinstance(x, (str, os.PathLike)))
    src = getattr(args, "source", None)
    if isinstance(src, str) and src.startswith("file://"):
        out.append(("source", src[len("file://"):].split("?", 1)[0]))
    return out
