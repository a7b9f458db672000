"""HXT v3 spectra files (FORMATS.md 3), as written and read by the HEXITEC GUI tools.

Little-endian layout (184-byte header, then data)::

    char[8]   "HEXITECH"
    u64       version = 3
    u32[9]    motor positions
    i32       file prefix length
    char[100] file prefix
    char[16]  timestamp
    u32       nRows, nCols, nBins
    f64[nBins]                 bin values: lower bin edges (the HEXITEC tools write
                               binStart, binStart + binWidth, ...)
    f64[nRows * nCols * nBins] counts, pixel-major (pixel = row * nCols + col), bins contiguous

The bin array holds only lower edges, so the upper edge of the last bin is taken one
bin width (of the last bin) beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..cube import SpectralCube

MAGIC = b"HEXITECH"
VERSION = 3
HEADER = np.dtype([
    ("label", "S8"), ("version", "<u8"), ("motors", "<u4", (9,)), ("prefix_length", "<i4"),
    ("prefix", "S100"), ("timestamp", "S16"), ("rows", "<u4"), ("cols", "<u4"), ("bins", "<u4"),
])
assert HEADER.itemsize == 184


@dataclass
class HxtInfo:
    """Header fields of an HXT file besides the shape."""

    motor_positions: tuple = (0,) * 9
    prefix: str = ""
    timestamp: str = ""


def read_hxt_header(path) -> tuple:
    """(header record, HxtInfo) of an HXT v3 file, with the magic, version and size checked."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    size = path.stat().st_size
    if size < HEADER.itemsize:
        raise FormatError(f"{path}: expected an HXT header of {HEADER.itemsize} bytes, the file has {size} bytes")
    header = np.fromfile(path, dtype=HEADER, count=1)[0]
    if header["label"] != MAGIC:
        raise FormatError(f"{path}: expected HXT magic {MAGIC!r} at byte 0, found {bytes(header['label'])!r}")
    if int(header["version"]) != VERSION:
        raise FormatError(f"{path}: expected HXT version {VERSION}, found {int(header['version'])} (byte 8)")
    rows, cols, nbins = int(header["rows"]), int(header["cols"]), int(header["bins"])
    if rows == 0 or cols == 0 or nbins == 0:
        raise FormatError(f"{path}: expected non-zero nRows, nCols, nBins (bytes 172-183), found {rows}, {cols}, {nbins}")
    expected = HEADER.itemsize + 8 * nbins * (1 + rows * cols)
    if size != expected:
        raise FormatError(f"{path}: a {rows} x {cols} x {nbins} HXT file has {expected} bytes, found {size} "
                          f"({'truncated' if size < expected else f'{size - expected} extra bytes'})")
    length = max(0, min(int(header["prefix_length"]), 100))
    info = HxtInfo(tuple(int(m) for m in header["motors"]),
                   bytes(header["prefix"])[:length].decode("latin-1"),
                   bytes(header["timestamp"]).split(b"\0")[0].decode("latin-1"))
    return header, info


def read_hxt(path) -> SpectralCube:
    """Read an HXT v3 file.

    Returns
    -------
    SpectralCube
        counts (rows, cols, nbins) float64 as stored; edges (nbins + 1,) from the
        stored lower edges; unit "keV" (HXT files hold calibrated spectra).

    Raises
    ------
    FormatError
        Wrong magic or version, or a file size that does not match the header's shape.
    """
    header, _ = read_hxt_header(path)
    rows, cols, nbins = int(header["rows"]), int(header["cols"]), int(header["bins"])
    with open(path, "rb") as fh:
        fh.seek(HEADER.itemsize)
        lower = np.fromfile(fh, dtype="<f8", count=nbins)
        counts = np.fromfile(fh, dtype="<f8", count=rows * cols * nbins)
    if nbins > 1:
        last_width = lower[-1] - lower[-2]
    else:
        last_width = 1.0
    if not np.all(np.isfinite(lower)) or not last_width > 0 or np.any(np.diff(lower) <= 0):
        raise FormatError(f"{path}: expected increasing bin values (bytes {HEADER.itemsize}-"
                          f"{HEADER.itemsize + 8 * nbins - 1}), found {lower[:4]}...")
    bad = ~(counts >= 0)   # negative or NaN
    if np.any(bad):
        k = int(np.argmax(bad))
        raise FormatError(f"{path}: expected counts >= 0, found {int(bad.sum())} negative or non-finite values "
                          f"(first {counts[k]} at byte {HEADER.itemsize + 8 * nbins + 8 * k})")
    edges = np.append(lower, lower[-1] + last_width)
    return SpectralCube(counts.reshape(rows, cols, nbins), edges, unit="keV")


def write_hxt(path, cube: SpectralCube, motor_positions=(0,) * 9, prefix: str = "", timestamp: str = "") -> None:
    """Write a SpectralCube as HXT v3 (counts as float64, lower bin edges as the bin values).

    Parameters
    ----------
    path : str or Path
    cube : SpectralCube
    motor_positions : sequence of 9 int
    prefix : str
        File prefix (at most 100 characters).
    timestamp : str
        At most 16 characters, e.g. "20240131_101500".
    """
    counts = np.asarray(cube.counts)
    if counts.ndim != 3:
        raise FormatError(f"write_hxt: expected counts (rows, cols, nbins), found shape {counts.shape}")
    if len(motor_positions) != 9:
        raise FormatError(f"write_hxt: expected 9 motor positions, found {len(motor_positions)}")
    prefix_bytes = prefix.encode("latin-1")
    if len(prefix_bytes) > 100 or len(timestamp) > 16:
        raise FormatError(f"write_hxt: prefix must fit 100 bytes and timestamp 16, found {len(prefix_bytes)} "
                          f"and {len(timestamp)}")
    header = np.zeros(1, dtype=HEADER)
    header["label"] = MAGIC
    header["version"] = VERSION
    header["motors"] = np.asarray(motor_positions, dtype=np.uint32)
    header["prefix_length"] = len(prefix_bytes)
    header["prefix"] = prefix_bytes
    header["timestamp"] = timestamp.encode("latin-1")
    header["rows"], header["cols"], header["bins"] = counts.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header.tobytes())
        fh.write(np.ascontiguousarray(cube.edges[:-1], dtype="<f8").tobytes())
        fh.write(np.ascontiguousarray(counts, dtype="<f8").tobytes())
