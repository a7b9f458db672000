"""Open any supported frame file by its content: GigE .bin, odin-data HDF5, hexspec HDF5."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from .compression import (COMPRESSIONS, DEFAULT_COMPRESSION, dataset_compression,  # noqa: F401  (their former home)
                          encode_chunk, frame_compression)


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


def iter_frame_file(path, batch_size: int = 1000, shape=(80, 80), reorder: bool = False, allow_partial: bool = False,
                    decode_threads: int | None = None):
    """FrameBatch iterator over a frame file of any supported kind (bounded memory).

    ``decode_threads``: threads decoding bitshuffle-LZ4 and Blosc chunks of HDF5 files
    (default one per core up to 4; 0 decodes in the iterating thread)."""
    kind = frame_file_kind(path)
    if kind == "gige":
        from .gige_bin import iter_gige_bin
        return iter_gige_bin(path, shape, batch_size, reorder=reorder, allow_partial=allow_partial)
    if kind == "odin":
        from .odin import iter_odin_frames
        return iter_odin_frames(path, batch_size, decode_threads)
    from .hdf5 import iter_frames
    return iter_frames(path, batch_size, decode_threads)


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

def iter_frame_range(path, start: int, stop: int, batch_size: int = 1000, shape=(80, 80), reorder: bool = False,
                     decode_threads: int | None = None):
    """FrameBatch iterator over frames [start, stop) of a frame file of any kind.

    Batches start at ``start`` and hold ``batch_size`` frames (the last fewer), so a
    range starting at a multiple of ``batch_size`` gives the same batches as
    :func:`iter_frame_file` over the whole file. Frame numbers are those the whole-file
    iterator gives (file positions for .bin and odin-data files). ``decode_threads``
    decode bitshuffle-LZ4 and Blosc chunks (:func:`hexspec.io.chunkread.iter_batches`).
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
    from .chunkread import iter_batches
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
        blocks = iter_batches(data, start, stop, batch_size, path, decode_threads)
        for s in range(start, stop, batch_size):
            t = min(s + batch_size, stop)
            fn = np.arange(s, t, dtype=np.int64) if numbers is None else numbers[s:t]
            try:
                block = next(blocks)
            except (OSError, FormatError) as exc:     # a damaged chunk: name the frames of the batch
                why = str(exc).removeprefix(f"{path}: ")
                raise FormatError(f"{path}: frames {s}-{t - 1} cannot be read ({why})") from None
            yield FrameBatch(block, fn)
