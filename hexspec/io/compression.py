"""Frame-dataset compression: the HDF5 filters hexspec writes frames with, and the
name of the filter a dataset was written with (hdf5plugin's Blosc, bitshuffle+LZ4 and
LZ4, or HDF5's own gzip). Imports no reader, so every reader and writer may use it."""

from __future__ import annotations


# ------------------------------------------------------------------ frame compression

#: Frame-dataset compressions hexspec writes (``--compression``). bslz4 and blosc are
#: HDF5 filter plugins (shipped by hdf5plugin, also what odin-data and the synchrotron
#: HDF5 world use); gzip is HDF5's built-in deflate after byte shuffle; lz4 is the
#: plain LZ4 plugin.
#:
#: Blosc (LZ4 after byte shuffle) is the default: benchmarks/bench_io.py measured it
#: 3.5x faster to read than gzip at 1.26x gzip's size on the simulator's sparse frames
#: (0.7% of pixels non-zero), where bitshuffle+LZ4 made files 2.8x gzip's and read only
#: 1.9x faster (LZ4 finds few repeats in sparse bit planes), and 4.2x at 1.42x on real
#: 2x2-module frames (22% non-zero), where bitshuffle+LZ4 gave 3.3x at 1.44x.
COMPRESSIONS = ("bslz4", "blosc", "lz4", "gzip", "none")
DEFAULT_COMPRESSION = "blosc"
#: Bitshuffle block size hexspec writes (elements); readers accept any.
BSLZ4_BLOCK_ELEMENTS = 65536

# HDF5 filter ids (registered with the HDF Group) -> hexspec's name for them
_FILTER_NAMES = {32008: "bslz4", 32001: "blosc", 32004: "lz4", 1: "gzip"}


def frame_compression(name: str = DEFAULT_COMPRESSION) -> dict:
    """h5py ``create_dataset`` keywords for frames compressed as ``name``.

    Parameters
    ----------
    name : {"bslz4", "blosc", "lz4", "gzip", "none"}
        bslz4: bitshuffle + LZ4 (hdf5plugin.Bitshuffle); blosc: Blosc with LZ4 after
        byte shuffle (hdf5plugin.Blosc, level 5); lz4: plain LZ4 (hdf5plugin.LZ4);
        gzip: byte shuffle + deflate level 1; none: stored as is.
    """
    import hdf5plugin
    from ..errors import ConfigError
    if name == "bslz4":
        # blocks of 65536 elements (128 KiB) instead of bitshuffle's 8 KiB: on real 2x2
        # frames 6% smaller and 20% faster to decode (benchmarks/bench_io.py), as large
        # as the sparse simulated frames
        return dict(hdf5plugin.Bitshuffle(nelems=BSLZ4_BLOCK_ELEMENTS, cname="lz4"))
    if name == "blosc":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if name == "lz4":
        return dict(hdf5plugin.LZ4())
    if name == "gzip":
        return dict(compression="gzip", compression_opts=1, shuffle=True)
    if name == "none":
        return {}
    raise ConfigError(f"compression: expected one of {', '.join(COMPRESSIONS)}, found {name!r}")


def dataset_compression(ds) -> str:
    """hexspec's name for the compression of an h5py dataset ("bslz4", "blosc", "lz4",
    "gzip", "none"), or "filter <id>" for another HDF5 filter."""
    plist = ds.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        fid = plist.get_filter(i)[0]
        if fid == 2:          # byte shuffle: part of gzip (and of nothing else hexspec writes)
            continue
        names.append(_FILTER_NAMES.get(fid, f"filter {fid}"))
    return "+".join(names) if names else "none"




# ------------------------------------------------------------------ chunk encoding (recorder)

_ENCODERS = {}
_ENCODERS_LOCK = __import__("threading").Lock()


def encode_chunk(name: str, block):
    """The bytes HDF5's ``name`` filter (bslz4, blosc, lz4) stores for one whole chunk.

    hdf5plugin offers its codecs only as HDF5 filters, so the block is written through
    the filter into an in-memory HDF5 file and its stored chunk read back: the recorder
    can then store chunks with direct writes for every compression, as it does for gzip.
    """
    import threading

    import h5py
    import numpy as np
    block = np.ascontiguousarray(block)
    key = (name, block.shape, block.dtype.str)
    with _ENCODERS_LOCK:      # compression threads ask at once; in-memory file names must differ
        entry = _ENCODERS.get(key)
        if entry is None:
            f = h5py.File(f"hexspec-encode-{len(_ENCODERS)}-{id(_ENCODERS)}.h5", "w", driver="core",
                          backing_store=False)
            ds = f.create_dataset("chunk", shape=block.shape, dtype=block.dtype, chunks=block.shape,
                                  **frame_compression(name))
            entry = _ENCODERS[key] = (ds, threading.Lock())
    ds, lock = entry
    with lock:
        ds[...] = block
        return ds.id.read_direct_chunk((0,) * block.ndim)[1]
