"""Open any supported frame file by its content: GigE .bin, odin-data HDF5, hexspec HDF5."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError


def frame_file_kind(path) -> str:
    """"gige", "odin" or "hexspec"; FormatError for anything else."""
    from .hdf5 import is_hexspec_file
    from .odin import is_odin_file
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.suffix.lower() in (".bin", ".raw", ".dat"):
        return "gige"
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        from .h5open import open_h5
        open_h5(path).close()   # a damaged or truncated file says so, rather than "neither"
        if is_hexspec_file(path):
            return "hexspec"
        if is_odin_file(path):
            return "odin"
        raise FormatError(f"{path}: an HDF5 file, but neither hexspec (/entry) nor odin-data (raw_frames at the root)")
    raise FormatError(f"{path}: expected a GigE .bin, odin-data HDF5 or hexspec HDF5 frame file, "
                      f"found neither (first bytes {magic!r}; raw frame files need a .bin suffix)")


def count_frames(path, shape=(80, 80)) -> int:
    kind = frame_file_kind(path)
    if kind == "gige":
        return Path(path).stat().st_size // (int(shape[0]) * int(shape[1]) * 2)
    if kind == "odin":
        from .odin import odin_frames_shape
        return odin_frames_shape(path)[0]
    from .hdf5 import count_frames as _count
    return _count(path)


def iter_frame_file(path, batch_size: int = 1000, shape=(80, 80), reorder: bool = False, allow_partial: bool = False):
    """FrameBatch iterator over a frame file of any supported kind (bounded memory)."""
    kind = frame_file_kind(path)
    if kind == "gige":
        from .gige_bin import iter_gige_bin
        return iter_gige_bin(path, shape, batch_size, reorder=reorder, allow_partial=allow_partial)
    if kind == "odin":
        from .odin import iter_odin_frames
        return iter_odin_frames(path, batch_size)
    from .hdf5 import iter_frames
    return iter_frames(path, batch_size)


def frame_shape(path, default=(80, 80)):
    """(rows, cols) of the frames in a file; ``default`` for headerless .bin files."""
    kind = frame_file_kind(path)
    if kind == "gige":
        return tuple(default)
    if kind == "odin":
        from .odin import odin_frames_shape
        return odin_frames_shape(path)[1:]
    from .hdf5 import read_shape
    return read_shape(path)


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
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
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


def file_compression(path) -> str:
    """Compression of the frames of a frame file ("none" for .bin files)."""
    kind = frame_file_kind(path)
    if kind == "gige":
        return "none"
    from .h5open import open_h5
    with open_h5(path) as f:
        ds = f["raw_frames"] if kind == "odin" else f.get("entry/frames/data")
        if ds is None:
            raise FormatError(f"{path}: a hexspec file without /entry/frames/data holds no frames")
        return dataset_compression(ds)


# ------------------------------------------------------------------ random access (parallel chunks)

def iter_frame_range(path, start: int, stop: int, batch_size: int = 1000, shape=(80, 80), reorder: bool = False):
    """FrameBatch iterator over frames [start, stop) of a frame file of any kind.

    Batches start at ``start`` and hold ``batch_size`` frames (the last fewer), so a
    range starting at a multiple of ``batch_size`` gives the same batches as
    :func:`iter_frame_file` over the whole file. Frame numbers are those the whole-file
    iterator gives (file positions for .bin and odin-data files).
    """
    import numpy as np

    from ..frames import FrameBatch
    if batch_size < 1:
        raise FormatError(f"iter_frame_range: batch_size must be >= 1, found {batch_size}")
    kind = frame_file_kind(path)
    start, stop = int(start), int(stop)
    if kind == "gige":
        from .gige_bin import asic_order
        rows, cols = int(shape[0]), int(shape[1])
        n = count_frames(path, shape)
        stop = min(stop, n)
        order = asic_order(cols) if reorder else None
        with open(path, "rb") as fh:
            fh.seek(start * rows * cols * 2)
            for s in range(start, stop, batch_size):
                t = min(s + batch_size, stop)
                block = np.fromfile(fh, dtype="<u2", count=(t - s) * rows * cols)
                if block.size != (t - s) * rows * cols:
                    raise FormatError(f"{path}: expected {t - s} frames at frame {s}, the file ends early")
                block = block.reshape(t - s, rows, cols)
                if order is not None:
                    out = np.empty_like(block)
                    out[:, :, order] = block
                    block = out
                yield FrameBatch(block.astype(np.uint16, copy=False), np.arange(s, t, dtype=np.int64))
        return
    from .h5open import open_h5
    with open_h5(path) as f:
        if kind == "odin":
            data, numbers = f["raw_frames"], None
            n = data.shape[0]
        else:
            if "entry/frames" not in f:
                raise FormatError(f"{path}: expected raw frames in /entry/frames, found none")
            data, numbers = f["entry/frames/data"], f["entry/frames/frame_number"]
            n = min(data.shape[0], numbers.shape[0])
        stop = min(stop, n)
        for s in range(start, stop, batch_size):
            t = min(s + batch_size, stop)
            fn = np.arange(s, t, dtype=np.int64) if numbers is None else numbers[s:t]
            try:
                block = np.asarray(data[s:t])
            except OSError as exc:     # a damaged chunk: HDF5 names no frame, so say which ones
                raise FormatError(f"{path}: frames {s}-{t - 1} cannot be read ({exc})") from None
            yield FrameBatch(block, fn)


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
