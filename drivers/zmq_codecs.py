"""Compressed odin-data live-view payloads: Blosc, LZ4 and bitshuffle+LZ4 frames.

odin-data compresses a frame into the chunk its HDF5 filter stores (it writes such
chunks to disk with direct chunk writes and forwards the same bytes to the live view).
hdf5plugin ships those filters but no Python API to their codecs, so each payload is
handed to the filter itself: written as the single chunk of a dataset in an in-memory
HDF5 file and read back, which decodes exactly what HDF5 files of these filters hold.
One such dataset is kept per (compression, shape, dtype).

Sizes are checked before anything is decoded: the uncompressed size each format
states in its own header must equal the size of the frames the JSON header
describes (already bounded by the caller), so a bad payload can never make the
decoder allocate more than that.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from ..errors import ProtocolError

_LOCK = threading.Lock()      # the cached datasets are shared by every ZmqSource of the process
_CACHE = {}
_NAMES = itertools.count()


def _stated_size(compression, payload) -> int:
    """Uncompressed bytes the payload's own header states."""
    b = bytes(payload[:16])
    if compression == "blosc":
        # Blosc frame header: version, versionlz, flags, typesize, nbytes (uint32 LE), ...
        if len(b) < 16:
            raise ValueError(f"a Blosc frame has a 16-byte header, found {len(b)} bytes")
        return int.from_bytes(b[4:8], "little")
    # HDF5 LZ4 and bitshuffle filters: total size (uint64 BE), block size (uint32 BE), blocks
    if len(b) < 12:
        raise ValueError(f"a {compression} chunk has a 12-byte header, found {len(b)} bytes")
    if int.from_bytes(b[8:12], "big") == 0:
        raise ValueError("block size 0 in the chunk header")
    return int.from_bytes(b[0:8], "big")


def _dataset(compression, shape, dtype):
    key = (compression, shape, dtype.str)
    ds = _CACHE.get(key)
    if ds is None:
        import h5py
        import hdf5plugin
        opts = {"blosc": hdf5plugin.Blosc(cname="lz4"), "lz4": hdf5plugin.LZ4(),
                "bslz4": hdf5plugin.Bitshuffle(cname="lz4")}[compression]
        f = h5py.File(f"hexspec-live-{next(_NAMES)}.h5", "w", driver="core", backing_store=False)
        ds = f.create_dataset("frame", shape=shape, dtype=dtype, chunks=shape, **opts)
        _CACHE[key] = ds
    return ds


def decompress(compression: str, payload, shape, dtype, frame_num=None) -> np.ndarray:
    """Frames (``shape``, ``dtype``) decoded from one compressed live-view payload.

    Parameters
    ----------
    compression : {"blosc", "lz4", "bslz4"}
    payload : bytes-like
        Part 2 of the message.
    shape : tuple of int
        Frame shape from the JSON header ((rows, cols) or (k, rows, cols)).
    dtype : numpy dtype

    Raises
    ------
    ProtocolError
        If the payload's stated size disagrees with the header or it does not decode.
    """
    where = f" (frame {frame_num})" if frame_num is not None else ""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        stated = _stated_size(compression, payload)
    except ValueError as exc:
        raise ProtocolError(f"payload: not {compression}-compressed data: {exc}{where}") from None
    if stated != expected:
        raise ProtocolError(f"payload: {compression} data of {stated} bytes, the header's shape {list(shape)} "
                            f"of {dtype.name} is {expected} bytes{where}")
    out = np.empty(shape, dtype)
    with _LOCK:
        ds = _dataset(compression, shape, dtype)
        try:
            ds.id.write_direct_chunk((0,) * len(shape), bytes(payload))
            ds.read_direct(out)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ProtocolError(f"payload: {compression} data do not decode ({exc}){where}") from None
    return out
