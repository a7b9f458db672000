"""odin-data HDF5 files written by the HEXITEC frame processor (FORMATS.md 2)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import FormatError
from ..frames import FrameBatch
from .h5open import open_h5

ODIN_DATASETS = ("raw_frames", "processed_frames", "summed_images", "pixel_spectra", "summed_spectra", "spectra_bins")


def is_odin_file(path) -> bool:
    try:
        with open_h5(path) as f:
            return any(k in f for k in ODIN_DATASETS) and "entry" not in f
    except FormatError:
        return False


def read_odin(path) -> dict:
    """Every odin-data dataset present at the file root, as numpy arrays keyed by name.

    ``raw_frames`` (N, R, C) uint16, ``processed_frames`` (N, R, C) float32, ``summed_images``
    (R, C), ``pixel_spectra`` (R, C, nbins), ``summed_spectra`` (nbins), ``spectra_bins``
    (nbins, lower bin edges). Any subset may be present; at least one must be.
    """
    from ..limits import check_allocation
    path = Path(path)
    with open_h5(path) as f:
        present = [k for k in ODIN_DATASETS if k in f and isinstance(f[k], h5py.Dataset)]
        for k in present:      # declared sizes are checked before anything is read
            check_allocation(f[k].shape, f[k].dtype.itemsize, f"{path}: {k} (read large files with iter_odin_frames)",
                             FormatError)
        out = {k: f[k][()] for k in present}
    if not out:
        raise FormatError(f"{path}: expected odin-data datasets ({', '.join(ODIN_DATASETS)}) at the root, found none")
    return out


def _raw_frames(f, path):
    if "raw_frames" not in f:
        raise FormatError(f"{path}: expected a raw_frames dataset, found {sorted(f.keys())}")
    ds = f["raw_frames"]
    if not isinstance(ds, h5py.Dataset):
        raise FormatError(f"{path}: expected raw_frames to be an (N, rows, cols) dataset, found a group")
    if ds.ndim != 3 or ds.dtype.kind not in "iu":
        raise FormatError(f"{path}: expected raw_frames of shape (N, rows, cols) and integer type, "
                          f"found shape {ds.shape} of {ds.dtype}")
    return ds


def odin_frames_shape(path) -> tuple:
    """(N, rows, cols) of the raw_frames of an odin-data file."""
    with open_h5(path) as f:
        return tuple(int(n) for n in _raw_frames(f, Path(path)).shape)


def iter_odin_frames(path, batch_size: int = 1000, decode_threads: int | None = None):
    """``raw_frames`` of an odin-data file in batches of FrameBatch (bounded memory);
    bitshuffle-LZ4 and Blosc chunks decode in threads (:mod:`hexspec.io.chunkread`)."""
    from .chunkread import iter_batches
    path = Path(path)
    with open_h5(path) as f:
        ds = _raw_frames(f, path)
        n = ds.shape[0]
        for s, block in zip(range(0, n, batch_size), iter_batches(ds, 0, n, batch_size, path, decode_threads)):
            yield FrameBatch(block, np.arange(s, s + len(block), dtype=np.int64))
