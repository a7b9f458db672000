"""Pixel masks from regions drawn on the count image.

Image coordinates follow the display: x along columns, y along rows, pixel (row, col)
covers x in [col, col + 1) and y in [row, row + 1), row 0 at the top. A pixel belongs
to a region when its centre (col + 0.5, row + 0.5) lies inside it, so a region drawn
exactly on pixel borders selects exactly the pixels it encloses.
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path

from ..errors import ConfigError


def _pixel_centres(shape):
    rows, cols = int(shape[0]), int(shape[1])
    y, x = np.mgrid[0:rows, 0:cols]
    return x + 0.5, y + 0.5


def rect_mask(shape, x0: float, y0: float, width: float, height: float) -> np.ndarray:
    """Pixels whose centres lie in the axis-aligned rectangle; (rows, cols) bool.

    Parameters
    ----------
    shape : (rows, cols)
    x0, y0 : float
        Corner of the rectangle in pixel units (x along columns, y along rows).
    width, height : float
        Extent in pixel units; negative values extend the other way from the corner.
    """
    xc, yc = _pixel_centres(shape)
    xa, xb = sorted((x0, x0 + width))
    ya, yb = sorted((y0, y0 + height))
    return (xc >= xa) & (xc < xb) & (yc >= ya) & (yc < yb)


def polygon_mask(shape, vertices_xy) -> np.ndarray:
    """Pixels whose centres lie inside a closed polygon; (rows, cols) bool.

    Parameters
    ----------
    shape : (rows, cols)
    vertices_xy : array_like, shape (n, 2)
        Polygon corners in pixel units, (x along columns, y along rows); n >= 3.
    """
    verts = np.asarray(vertices_xy, dtype=np.float64)
    if verts.ndim != 2 or verts.shape[1] != 2 or verts.shape[0] < 3:
        raise ConfigError(f"polygon_mask: expected at least 3 (x, y) vertices, found an array of shape {verts.shape}")
    xc, yc = _pixel_centres(shape)
    inside = Path(verts).contains_points(np.column_stack([xc.ravel(), yc.ravel()]))
    return inside.reshape(int(shape[0]), int(shape[1]))
