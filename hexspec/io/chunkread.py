"""Frames read by whole stored chunks and decompressed in a thread pool, outside HDF5.

h5py runs one HDF5 call at a time per process (its global lock), so HDF5 decompresses
the chunks of a read one after the other on one core, and on top spends about as long
again per frame on its chunk cache and copies (uncompressed frames read at only ~2 GB/s
through ``ds[s:t]``). Here the stored bytes of each chunk are fetched with
``read_direct_chunk`` (a cheap call: no filter runs), and decoded by the codec functions
of the very libraries hdf5plugin ships as HDF5 filters (bitshuffle's
``bshuf_decompress_lz4``, c-blosc's ``blosc_decompress_ctx``), called through ctypes,
which releases the GIL: several chunks decode at once on several cores, and beside the
event kernel. Whole chunks lying inside a batch are decoded straight into the batch's
array (no copy).

Datasets this does not cover (gzip, plain LZ4, other filters, chunks that are not whole
frames, a chunk with a filter skipped) are read through h5py as before: gzip decodes
faster inside HDF5 (zlib and a numpy unshuffle in Python each took longer than HDF5's
whole gzip read, measured on 80 x 80 frames).
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import FormatError

__all__ = ["direct_codec", "iter_batches", "DEFAULT_DECODE_THREADS"]

#: Decoding threads of one reader: one per core up to 4 (beyond that a reader outruns
#: any single event kernel).
DEFAULT_DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))

#: Smallest stored chunk (raw bytes) decoded here. Each chunk costs ~40 us of Python
#: and h5py calls on this path (measured), so chunks of one or a few frames (odin-data's
#: layout) read faster through HDF5 itself; from ~16 frames of 80 x 80 the two cost the
#: same on one core, and here the decoding then spreads over cores.
MIN_DIRECT_CHUNK_BYTES = 256 * 1024

_LIBS = {}
_LIBS_LOCK = threading.Lock()


def _lib(name):
    """ctypes handle of one of hdf5plugin's filter libraries (the one HDF5 loaded), or None."""
    with _LIBS_LOCK:
        if name in _LIBS:
            return _LIBS[name]
        lib = None
        try:
            import hdf5plugin
            path = os.path.join(hdf5plugin.PLUGIN_PATH, f"libh5{name}.so")
            lib = ctypes.CDLL(path)
            if name == "bshuf":
                f = lib.bshuf_decompress_lz4
                f.restype = ctypes.c_int64
                f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
            else:
                f = lib.blosc_decompress_ctx
                f.restype = ctypes.c_int
                f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                g = lib.blosc_cbuffer_sizes
                g.restype = None
                g.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_size_t)] * 3
        except (ImportError, OSError, AttributeError):
            lib = None     # another build of hdf5plugin (Windows, macOS): h5py reads instead
        _LIBS[name] = lib
        return lib


def direct_codec(ds) -> str | None:
    """"bslz4", "blosc" or "none" when the chunks of ``ds`` can be decoded here, else None.

    Needs chunks of whole frames ((k, rows, cols) of a (N, rows, cols) dataset) of at
    least :data:`MIN_DIRECT_CHUNK_BYTES`, a native little-endian integer type, and
    exactly one filter: bitshuffle with LZ4, or Blosc (or none).
    """
    if ds.ndim != 3 or ds.chunks is None or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    if int(np.prod(ds.chunks)) * ds.dtype.itemsize < MIN_DIRECT_CHUNK_BYTES:
        return None
    if ds.dtype.kind not in "iu" or ds.dtype.byteorder == ">" or (ds.dtype.byteorder == "=" and
                                                                  np.little_endian is False):
        return None
    plist = ds.id.get_create_plist()
    n = plist.get_nfilters()
    if n == 0:
        return "none"
    if n != 1:
        return None
    fid, _flags, cd, _name = plist.get_filter(0)
    if fid == 32008 and len(cd) > 4 and cd[4] == 2 and _lib("bshuf") is not None:
        return "bslz4"
    if fid == 32001 and _lib("blosc") is not None:
        return "blosc"
    return None


def _addr(raw) -> int:
    return ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value


def _check_bshuf_blocks(raw, n, item, block, path, where):
    """The LZ4 block sizes of a bitshuffle chunk stay inside it.

    bshuf_decompress_lz4 trusts each block's stored size (it is given no input length),
    so a damaged size would make it read past the chunk; walking the few block headers
    first (a handful per chunk) keeps a damaged file a FormatError.
    """
    blocks = n // block + (1 if (n % block) - (n % block) % 8 else 0)
    off, end = 12, len(raw)
    for _ in range(blocks):
        if off + 4 > end:
            break
        off += 4 + struct.unpack_from(">I", raw, off)[0]
    if off + (n % 8) * item != end:
        raise FormatError(f"{path}: the bitshuffle-LZ4 chunk at frame {where} is corrupt "
                          f"(its blocks do not add up to its {end} bytes)")


def _decode(codec, raw, out, path, where):
    """Decode the stored bytes ``raw`` of one chunk into the C-contiguous array ``out``."""
    nbytes = out.nbytes
    if codec == "none":
        if len(raw) != nbytes:
            raise FormatError(f"{path}: expected {nbytes} bytes in the chunk at frame {where}, found {len(raw)}")
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, np.uint8)
        return out
    if codec == "bslz4":
        # bitshuffle's HDF5 chunk: uint64 BE bytes, uint32 BE block bytes, then the blocks
        if len(raw) < 12:
            raise FormatError(f"{path}: expected a bitshuffle chunk at frame {where}, found {len(raw)} bytes")
        total, block = struct.unpack(">QI", raw[:12])
        item = out.dtype.itemsize
        if total != nbytes or block % item or block == 0 and total:
            raise FormatError(f"{path}: expected a bitshuffle chunk of {nbytes} bytes at frame {where}, "
                              f"found a header for {total} bytes in blocks of {block}")
        _check_bshuf_blocks(raw, total // item, item, block // item, path, where)
        used = _lib("bshuf").bshuf_decompress_lz4(_addr(raw) + 12, out.ctypes.data, total // item, item,
                                                  block // item)
        if used != len(raw) - 12:
            raise FormatError(f"{path}: the bitshuffle-LZ4 chunk at frame {where} is corrupt "
                              f"(decoding used {used} of its {len(raw) - 12} bytes)")
        return out
    lib = _lib("blosc")
    sizes = [ctypes.c_size_t(0) for _ in range(3)]
    if len(raw) < 16:
        raise FormatError(f"{path}: expected a Blosc chunk at frame {where}, found {len(raw)} bytes")
    lib.blosc_cbuffer_sizes(raw, *(ctypes.byref(s) for s in sizes))
    if sizes[0].value != nbytes or sizes[1].value > len(raw):
        raise FormatError(f"{path}: expected a Blosc chunk of {nbytes} bytes at frame {where}, found a header for "
                          f"{sizes[0].value} bytes in {sizes[1].value} of its {len(raw)}")
    got = lib.blosc_decompress_ctx(raw, out.ctypes.data, nbytes, 1)
    if got != nbytes:
        raise FormatError(f"{path}: the Blosc chunk at frame {where} is corrupt (decoded {got} of {nbytes} bytes)")
    return out


def read_slice(ds, start, stop, path):
    """``ds[start:stop]`` through h5py, with a damaged chunk reported as a FormatError
    naming the rows."""
    try:
        return np.asarray(ds[start:stop])
    except (OSError, RuntimeError) as exc:
        raise FormatError(f"{path}: expected readable data in {ds.name}[{start}:{stop}], found a corrupt chunk "
                          f"({exc})") from None


def iter_batches(ds, start: int, stop: int, batch_size: int, path, threads: int | None = None):
    """Arrays of frames ``[s, s + batch_size)`` of the (N, rows, cols) dataset ``ds``, for
    s = start, start + batch_size, ... up to ``stop`` (the last batch shorter).

    Parameters
    ----------
    ds : h5py.Dataset
        Open for the whole iteration (the caller's ``with`` block).
    start, stop, batch_size : int
        Frame indices (axis 0).
    path : path
        Named in errors.
    threads : int, optional
        Decoding threads (default :data:`DEFAULT_DECODE_THREADS`); 0 decodes in the
        calling thread.

    Batches come in order, each a fresh C-contiguous array. Up to about two batches are
    being decoded ahead of the one handed out. A damaged chunk raises FormatError naming
    its frames, after every batch before it.
    """
    start, stop, batch_size = int(start), min(int(stop), int(ds.shape[0])), int(batch_size)
    codec = direct_codec(ds)
    if codec is None:
        for s in range(start, stop, batch_size):
            yield read_slice(ds, s, min(s + batch_size, stop), path)
        return
    threads = DEFAULT_DECODE_THREADS if threads is None else max(0, int(threads))
    if codec == "none":
        threads = 0    # a copy: handing it to a thread costs more than it saves (measured)
    cf = int(ds.chunks[0])
    frame_shape = tuple(int(n) for n in ds.shape[1:])
    dtype = ds.dtype
    pool = ThreadPoolExecutor(threads, thread_name_prefix="hexspec-decode") if threads else None
    # the stored chunk that straddles two batches is decoded once and copied into both
    shared = {}

    def raw_chunk(c0):
        try:
            mask, raw = ds.id.read_direct_chunk((c0, 0, 0))
        except (OSError, RuntimeError, KeyError, ValueError):
            return None          # not allocated (never written) or unreadable: h5py says which
        return None if mask else raw   # a filter skipped for this chunk: HDF5 knows how to read it

    def submit(fn, *args):
        if pool is None:
            class Done:
                def __init__(self, fn, args):
                    self.err = None
                    try:
                        self.value = fn(*args)
                    except BaseException as exc:
                        self.err = exc

                def result(self):
                    if self.err is not None:
                        raise self.err
                    return self.value
            return Done(fn, args)
        return pool.submit(fn, *args)

    def plan(s, t):
        """Start decoding batch [s, t); return (array, [(future, dst slice, src slice or None)])."""
        out = np.empty((t - s,) + frame_shape, dtype)
        parts = []
        for c0 in range((s // cf) * cf, t, cf):
            lo, hi = max(s, c0), min(t, c0 + cf)
            whole = lo == c0 and hi == c0 + cf
            if not whole and c0 in shared:
                parts.append((shared.pop(c0), slice(lo - s, hi - s), slice(lo - c0, hi - c0)))
                continue
            raw = raw_chunk(c0)
            if raw is None:
                # h5py's own read of these frames (from the file, it is in order here)
                parts.append((None, slice(lo - s, hi - s), (lo, hi)))
                continue
            if whole:
                fut = submit(_decode, codec, raw, out[lo - s:hi - s], path, c0)
                parts.append((fut, None, None))
            else:
                fut = submit(_decode, codec, raw, np.empty((cf,) + frame_shape, dtype), path, c0)
                parts.append((fut, slice(lo - s, hi - s), slice(lo - c0, hi - c0)))
                if c0 + cf > t:
                    shared[c0] = fut
        return out, parts

    def finish(out, parts):
        for fut, dst, src in parts:
            if fut is None:
                out[dst] = read_slice(ds, src[0], src[1], path)
                continue
            arr = fut.result()
            if dst is not None:
                out[dst] = arr[src]
        return out

    pending = deque()
    depth = 2 if threads else 1
    try:
        for s in range(start, stop, batch_size):
            pending.append(plan(s, min(s + batch_size, stop)))
            if len(pending) > depth:
                yield finish(*pending.popleft())
        while pending:
            yield finish(*pending.popleft())
    finally:
        if pool is not None:
            for _out, parts in pending:
                for fut, _d, _s in parts:
                    if fut is not None and hasattr(fut, "cancel"):
                        fut.cancel()
            pool.shutdown(wait=True)
