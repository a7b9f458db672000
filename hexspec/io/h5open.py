"""Opening HDF5 files for reading, including files still being written (or left by a crash)."""

from __future__ import annotations

from pathlib import Path

import h5py

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
    try:
        return h5py.File(path, "r", locking=False)
    except OSError:
        try:
            return h5py.File(path, "r", locking=False, swmr=True)
        except OSError as exc:
            raise FormatError(f"{path}: not a readable HDF5 file ({exc}); if a crashed or killed recording left it, "
                              f"`hexspec recover {path}` repairs it") from None
