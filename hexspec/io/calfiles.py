"""HEXITEC calibration maps as text (FORMATS.md 4): gradients, intercepts, thresholds.

Whitespace-separated numbers, either a rows x cols matrix or rows*cols values one per
line (row-major). Existing tools fall back silently to defaults on a wrong count; here
a wrong count is an error that names the expected shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FormatError


def read_map(path, shape) -> np.ndarray:
    """Read a per-pixel map.

    Parameters
    ----------
    path : str or Path
    shape : (rows, cols)
        Detector shape the map must fit.

    Returns
    -------
    ndarray (rows, cols) float64
    """
    path = Path(path)
    rows, cols = int(shape[0]), int(shape[1])
    if not path.exists():
        raise FormatError(f"{path}: no such calibration map")
    if not path.is_file():
        raise FormatError(f"{path}: expected a calibration map file, found a directory")
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise FormatError(f"{path}: expected whitespace-separated numbers, found text that does not parse ({exc})") from None
    if table.shape[0] > 1 and table.shape[1] > 1 and table.shape != (rows, cols):
        # a matrix must have the detector's own shape: a transposed map would otherwise read silently
        raise FormatError(f"{path}: expected a {rows} x {cols} matrix (or {rows * cols} values one per line), "
                          f"found a {table.shape[0]} x {table.shape[1]} matrix")
    values = table.reshape(-1)
    if values.size != rows * cols:
        raise FormatError(
            f"{path}: expected {rows * cols} values for a {rows} x {cols} detector, found {values.size}")
    return values.reshape(rows, cols)


def write_map(path, array, layout: str = "matrix", fmt: str = "%.9g") -> None:
    """Write a per-pixel map as a rows x cols matrix (``layout="matrix"``) or one value per line (``"column"``)."""
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2:
        raise FormatError(f"write_map: expected a (rows, cols) array, found shape {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "matrix":
        np.savetxt(path, arr, fmt=fmt, delimiter="\t")
    elif layout == "column":
        np.savetxt(path, arr.reshape(-1), fmt=fmt)
    else:
        raise FormatError(f"write_map: layout must be 'matrix' or 'column', found {layout!r}")
