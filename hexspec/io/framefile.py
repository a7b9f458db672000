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
