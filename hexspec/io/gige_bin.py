"""Raw GigE frame files (.bin, FORMATS.md 1): concatenated little-endian uint16 frames, no header."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..frames import FrameBatch

ASIC_ROW = 80   # pixels per ASIC row segment in the old firmware's reordering


def asic_order(cols: int) -> np.ndarray:
    """Raw-index -> column for data from older firmware.

    Within each 80-pixel row segment, raw index i holds column 20 * (i % 4) + i // 4.
    """
    if cols % ASIC_ROW:
        raise FormatError(f"ASIC reordering needs a multiple of {ASIC_ROW} columns, found {cols}")
    i = np.arange(ASIC_ROW)
    seg = 20 * (i % 4) + i // 4
    return (np.arange(cols // ASIC_ROW)[:, None] * ASIC_ROW + seg[None, :]).reshape(-1)


def _frame_count(path: Path, shape, allow_partial: bool):
    if int(shape[0]) < 1 or int(shape[1]) < 1:
        raise FormatError(f"{path}: frame shape must be positive, found {tuple(shape)}")
    size = path.stat().st_size
    frame_bytes = int(shape[0]) * int(shape[1]) * 2
    if size == 0:
        raise FormatError(f"{path}: expected {shape[0]}x{shape[1]} uint16 frames ({frame_bytes} bytes each), "
                          "found an empty file")
    n, rest = divmod(size, frame_bytes)
    if rest and not allow_partial:
        raise FormatError(
            f"{path}: {size} bytes is not a whole number of {shape[0]}x{shape[1]} uint16 frames "
            f"({frame_bytes} bytes each): {n} frames and {rest} bytes left over "
            "(use allow_partial=True / --allow-partial to read the whole frames)")
    return n, rest


def iter_gige_bin(path, shape=(80, 80), batch_size: int = 1000, reorder: bool = False,
                  allow_partial: bool = False, first_frame: int = 0):
    """Frames of a .bin file in batches, read block by block (bounded memory for any file size).

    Plain reads rather than a memory map: mapped pages count as resident memory until the
    kernel drops them, so a map of a 4 GB file shows 4 GB of RSS.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if batch_size < 1:
        raise FormatError(f"iter_gige_bin: batch_size must be >= 1, found {batch_size}")
    n, _ = _frame_count(path, shape, allow_partial)
    if n == 0:
        return
    rows, cols = int(shape[0]), int(shape[1])
    order = asic_order(cols) if reorder else None
    with open(path, "rb") as fh:
        for s in range(0, n, batch_size):
            t = min(s + batch_size, n)
            block = np.fromfile(fh, dtype="<u2", count=(t - s) * rows * cols).reshape(t - s, rows, cols)
            if order is not None:
                out = np.empty_like(block)
                out[:, :, order] = block
                block = out
            yield FrameBatch(block.astype(np.uint16, copy=False), np.arange(first_frame + s, first_frame + t, dtype=np.int64))


def read_gige_bin(path, shape=(80, 80), reorder: bool = False, allow_partial: bool = False) -> FrameBatch:
    """All frames of a .bin file as one FrameBatch.

    Parameters
    ----------
    path : str or Path
    shape : (rows, cols)
        Frame shape (the file has no header).
    reorder : bool
        Undo the ASIC pixel order of older firmware.
    allow_partial : bool
        Read the whole frames of a file whose size is not a multiple of the frame size
        (otherwise that is a FormatError naming the size and the leftover bytes).
    """
    parts = list(iter_gige_bin(path, shape, batch_size=1 << 30, reorder=reorder, allow_partial=allow_partial))
    if not parts:
        return FrameBatch(np.zeros((0, int(shape[0]), int(shape[1])), np.uint16))
    return parts[0]


def write_gige_bin(path, frames) -> None:
    """Append-free write of frames (n, rows, cols) as little-endian uint16."""
    arr = frames.frames if isinstance(frames, FrameBatch) else np.asarray(frames, dtype=np.uint16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    arr.astype("<u2", copy=False).tofile(path)
