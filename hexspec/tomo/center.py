"""Rotation-centre finding for parallel-beam scans (part of the prep stage; re-exported by
:mod:`hexspec.tomo.prep`).

Axes: a sinogram is (angles, cols), angles along axis 0; centres are detector columns in
pixels, 0 at the first column's centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CalibrationError, ConfigError


@dataclass
class CenterResult:
    """Rotation centre of a 180-degree sinogram.

    Attributes
    ----------
    center_px : float
        Column (pixels from the first detector column's centre) of the rotation axis.
    confidence : float
        0..1: (second-best minimum - best) / (median - best) of the metric over the
        searched range; near 1 the best centre stands alone, near 0 another centre is as good.
    search_px : (float, float)
        Range searched.
    """

    center_px: float
    confidence: float
    search_px: tuple


def _metric_curve(sino, centers, ratio):
    from algotom.prep.calculation import calculate_center_metric, make_inverse_double_wedge_mask
    nrow, ncol = sino.shape
    flip = np.fliplr(sino)
    comp = np.flipud(sino)
    mask = make_inverse_double_wedge_mask(2 * nrow, ncol, 0.5 * ratio * ncol)
    return np.array([calculate_center_metric(c, sino, flip, comp, mask) for c in centers])


def _opposite_view_correlation(sino, theta_rad):
    """Normalised cross-correlation, over every shift, of the view nearest pi (or pi + theta_0)
    with the mirrored first view; returns (centres, ncc) with centre = (shift + cols - 1) / 2."""
    nrow, ncol = sino.shape
    theta = np.asarray(theta_rad, dtype=float)
    first = sino[0]
    k = int(np.argmin(np.abs(np.angle(np.exp(1j * (theta - theta[0] - np.pi))))))
    g = np.gradient(sino[k].astype(float))
    f = np.gradient(first[::-1].astype(float))
    # g(u) ~ f(u - s): score every s in -(ncol-1)..(ncol-1) on the overlap only
    shifts = np.arange(-(ncol - 1), ncol)
    ncc = np.full(shifts.shape, -1.0)
    min_overlap = max(8, ncol // 5)
    for i, s in enumerate(shifts):
        if s >= 0:
            a, b = g[s:], f[:ncol - s]
        else:
            a, b = g[:ncol + s], f[-s:]
        if a.size < min_overlap:
            continue
        a = a - a.mean()
        b = b - b.mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        if den > 0:
            ncc[i] = (a * b).sum() / den
    return (shifts + ncol - 1) / 2.0, ncc


def find_center(sinogram, theta_rad=None, start=None, stop=None, ratio=0.5, radius=3.0, step=0.25):
    """Find the rotation centre over the whole plausible range.

    Two stages. Coarse, over every centre that leaves opposite views overlapping by at
    least a fifth of the width: the view nearest 180 degrees is matched against the
    mirrored first view (normalised cross-correlation of their gradients), which has no
    preferred range. Fine: Vo's double-wedge Fourier metric (algotom, Opt. Express 22,
    19078 (2014)) within ``radius`` pixels of the coarse centre in steps of ``step``.
    algotom's ``find_center_vo`` alone searches width/2 +- width/16 by default, and over a
    wider range its metric favours the ends, where the filled-in gap dominates.

    Parameters
    ----------
    sinogram : array (angles, cols)
        Attenuation sinogram over at least 180 degrees (angles along axis 0).
    theta_rad : array (angles,), optional
        Projection angles; default evenly spaced over [0, pi).
    start, stop : float, optional
        Columns to accept the centre between; default the whole detector.
    ratio : float
        Sample width over the field of view (algotom's ``ratio``).
    radius, step : float
        Fine search half-width and step, pixels.

    Returns
    -------
    CenterResult

    Raises
    ------
    CalibrationError
        If no centre in [start, stop] can be compared (the views do not overlap enough),
        or the best match over the whole detector lies outside [start, stop].
    """
    from scipy import ndimage as ndi
    sino = np.asarray(sinogram, dtype=np.float32)
    nrow, ncol = sino.shape
    theta = np.linspace(0, np.pi, nrow, endpoint=False) if theta_rad is None else np.asarray(theta_rad, float)
    if theta.shape != (nrow,):
        raise ConfigError(f"centre search: expected {nrow} angles, found {theta.shape}")
    if np.ptp(theta) < np.pi * 0.95:
        raise ConfigError(f"centre search: expected angles over at least 180 degrees, found {np.rad2deg(np.ptp(theta)):.1f}")
    lo = 0.0 if start is None else float(start)
    hi = float(ncol - 1) if stop is None else float(stop)
    if not 0 <= lo < hi <= ncol - 1:
        raise ConfigError(f"centre search: expected 0 <= start < stop <= {ncol - 1}, found {lo:g}, {hi:g}")
    centers, ncc = _opposite_view_correlation(ndi.gaussian_filter1d(sino, 1.0, axis=1), theta)
    inside = (centers >= lo) & (centers <= hi) & (ncc > -1)
    if not inside.any():
        raise CalibrationError(f"rotation centre: no centre between {lo:.0f} and {hi:.0f} px leaves opposite views "
                               f"overlapping enough to compare; give it with --center")
    valid = np.flatnonzero(ncc > -1)
    overall = valid[int(np.argmax(ncc[valid]))]
    if not lo <= centers[overall] <= hi:
        raise CalibrationError(f"rotation centre: the best match ({centers[overall]:.1f} px) lies outside the "
                               f"range searched ({lo:.0f}-{hi:.0f} px); give the centre with --center or widen the range")
    idx = np.flatnonzero(inside)
    best = overall
    confidence = _confidence(-ncc[idx], int(np.flatnonzero(idx == best)[0]))
    c0 = float(centers[best])
    fine = np.arange(c0 - radius, c0 + radius + step / 2, step)
    fine = fine[(fine >= 0) & (fine <= ncol - 1)]
    half = sino if np.ptp(theta) < 1.5 * np.pi else sino[theta - theta[0] < np.pi]
    metric = _metric_curve(ndi.gaussian_filter(half, (2, 2), mode="reflect"), fine, ratio)
    center = float(fine[int(np.argmin(metric))])
    return CenterResult(center_px=center, confidence=confidence, search_px=(lo, hi))


def _confidence(metric, best):
    """(second-best local minimum - best) / (median - best) of a metric to minimise; the
    best minimum's own valley is excluded from the candidates for second best."""
    m = np.asarray(metric, dtype=float)
    n = len(m)
    left = best
    while left > 0 and m[left - 1] >= m[left]:
        left -= 1
    right = best
    while right < n - 1 and m[right + 1] >= m[right]:
        right += 1
    others = [m[i] for i in range(n) if (i < left or i > right)
              and (i == 0 or m[i] <= m[i - 1]) and (i == n - 1 or m[i] <= m[i + 1])]
    med = float(np.median(m))
    if med <= m[best]:
        return 0.0
    second = min(others) if others else med
    return float(np.clip((second - m[best]) / (med - m[best]), 0.0, 1.0))


def find_center_360(sinogram_360, win_width=100, side=None):
    """Centre of a 360-degree offset-axis (double field of view) scan (algotom ``find_center_360``).

    Parameters
    ----------
    sinogram_360 : array (angles, cols)
        Sinogram over [0, 2 pi).
    win_width : int
        Width of the window compared between opposite views.
    side : {None, 0, 1}
        Side of the axis (0 left, 1 right); None: found.

    Returns
    -------
    center_px, overlap_px, side, confidence : float, float, int, float
    """
    from algotom.prep.calculation import find_center_360 as _find
    return tuple(float(x) if i != 2 else int(x) for i, x in enumerate(_find(np.asarray(sinogram_360, np.float32),
                                                                            win_width, side=side)))
