"""Opening HDF5 files for reading, including files still being written (or left by a crash)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  registers the Blosc, bitshuffle and LZ4 filters every frame reader needs

from ..errors import FormatError


def open_h5(path) -> h5py.File:
    """Open an HDF5 file read-only.

    A file written in SWMR mode (the recorder's) carries a "being written" mark until it is
    closed; a plain read refuses it while a recording runs or after the writer was killed,
    so the read is retried as a SWMR reader, which sees everything up to the last flush.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.is_dir():
        raise FormatError(f"{path}: expected an HDF5 file, found a directory")
    # h5py raises OSError for most unreadable files but RuntimeError for a damaged superblock
    try:
        return h5py.File(path, "r", locking=False)
    except (OSError, RuntimeError):
        try:
            return h5py.File(path, "r", locking=False, swmr=True)
        except (OSError, RuntimeError) as exc:
            raise FormatError(_unreadable(path, exc)) from None


def _unreadable(path, exc) -> str:
    text = str(exc)
    m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if m:
        return (f"{path}: truncated HDF5 file: expected {int(m.group(2))} bytes, found {int(m.group(1))} "
                "(cut off while being copied or written?)")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic != b"\x89HDF\r\n\x1a\n":
        return f"{path}: expected an HDF5 file, found {size} bytes starting {magic!r}"
    return (f"{path}: expected a readable HDF5 file, found a damaged one of {size} bytes ({text}); if a crashed "
            f"or killed recording left it, `hexspec recover {path}` repairs it")
