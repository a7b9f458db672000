"""Stages 1-2: locate the 59.54 keV photopeak and the zero offset in every pixel.

1. The photopeak is the highest-energy peak of the smoothed spectrum that is at least
   ``strong_fraction`` of the tallest structure below it. Smoothing is proportional to
   ADU, so a gain spread of +-20 % changes nothing, and the noise peak near 0 ADU never
   competes (it lies below ``0.18 x`` the photopeak position, where the search does not look).
2. With the photopeak fixed, the intercept is scanned and scored by how well the weaker
   lines land on structures of the smoothed spectrum; the median over pixels narrows a
   second, per-pixel scan.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .blocks import in_blocks


def _smoothing_matrix(centers, widths, rel_sigma):
    """CSR weights of a Gaussian smoothing whose sigma is ``rel_sigma`` x ADU (at least one bin).

    Relative smoothing matches peaks of constant relative width, so one setting serves
    pixels whose gains differ by +-20 %. The weights depend only on the bins, so they
    are computed once for all pixels.
    """
    nb = centers.size
    sig = np.maximum(rel_sigma * np.abs(centers), widths)
    lo = np.searchsorted(centers, centers - 3 * sig, side="left")
    hi = np.searchsorted(centers, centers + 3 * sig, side="right")
    ptr = np.zeros(nb + 1, np.int64)
    ptr[1:] = np.cumsum(hi - lo)
    idx = np.empty(ptr[-1], np.int64)
    w = np.empty(ptr[-1], np.float64)
    for j in range(nb):
        k = np.arange(lo[j], hi[j])
        wk = np.exp(-0.5 * ((centers[k] - centers[j]) / sig[j]) ** 2)
        idx[ptr[j]:ptr[j + 1]] = k
        w[ptr[j]:ptr[j + 1]] = wk / wk.sum() / widths[k]   # density: counts per ADU
    return ptr, idx, w, sig


@njit(cache=True, nogil=True)
def _smooth(row, ptr, idx, w, s):
    for j in range(s.shape[0]):
        acc = 0.0
        for t in range(ptr[j], ptr[j + 1]):
            acc += w[t] * row[idx[t]]
        s[j] = acc


@njit(cache=True, nogil=True)
def _interp(s, centers, x):
    nb = centers.shape[0]
    if x <= centers[0] or x >= centers[nb - 1]:
        return 0.0
    # centres are uniform or nearly so: start from a guess and walk
    j = int((x - centers[0]) / (centers[nb - 1] - centers[0]) * (nb - 1))
    j = min(max(j, 0), nb - 2)
    while j > 0 and centers[j] > x:
        j -= 1
    while j < nb - 2 and centers[j + 1] < x:
        j += 1
    f = (x - centers[j]) / (centers[j + 1] - centers[j])
    return s[j] * (1.0 - f) + s[j + 1] * f


@njit(cache=True, nogil=True)
def _locate_kernel(first, last, counts, centers, sig, ptr, idx, w, strong_fraction, low_ratio, min_counts,
                   anchor_kev, template_kev, c_lo, c_hi, c_step, peak_adu, offset_kev, score):
    """Per pixel: photopeak position (ADU) and the intercept (keV) that best aligns the other lines."""
    nb = counts.shape[1]
    for p in range(first, last):
        row = counts[p]
        s = np.empty(nb)
        _smooth(row, ptr, idx, w, s)
        peak_adu[p] = np.nan
        offset_kev[p] = np.nan
        score[p] = 0.0
        found = -1
        for j in range(nb - 2, 0, -1):
            if s[j] <= 0.0 or s[j] < s[j - 1] or s[j] <= s[j + 1]:
                continue
            # tallest structure between low_ratio x position and the candidate
            xlow = low_ratio * centers[j]
            tallest = 0.0
            for jj in range(j, -1, -1):
                if centers[jj] < xlow:
                    break
                if s[jj] > tallest:
                    tallest = s[jj]
            if s[j] < strong_fraction * tallest:
                continue
            raw = 0.0
            for jj in range(nb):
                if abs(centers[jj] - centers[j]) <= 2.0 * sig[j]:
                    raw += row[jj]
            if raw < min_counts:
                continue
            found = j
            break
        if found < 0:
            continue
        j = found
        den = s[j - 1] - 2.0 * s[j] + s[j + 1]
        shift = 0.0
        if den < 0.0:
            shift = 0.5 * (s[j - 1] - s[j + 1]) / den
            shift = min(max(shift, -0.5), 0.5)
        x59 = centers[j] + shift * (centers[j + 1] - centers[j - 1]) * 0.5
        peak_adu[p] = x59
        # Noise edge: the run of bins from the bottom where the noise peak towers over
        # the photopeak, then its falling flank; template lines below it score nothing.
        h59 = s[j]
        edge = 0
        while edge < j and s[edge] > 2.0 * h59:
            edge += 1
        while edge < j and s[edge + 1] < s[edge]:
            edge += 1
        x_edge = centers[edge] if edge > 0 else -1e300
        best = -1.0
        bestc = np.nan
        nsteps = int((c_hi[p] - c_lo[p]) / c_step) + 1
        for t in range(nsteps):
            c = c_lo[p] + t * c_step
            g = (anchor_kev - c) / x59
            if g <= 0.0:
                continue
            sc = 0.0
            for i in range(template_kev.shape[0]):
                x = (template_kev[i] - c) / g
                if x <= x_edge:
                    continue
                v = min(_interp(s, centers, x), 2.0 * h59)
                if v > 0.0:
                    sc += math.sqrt(v)
            if sc > best:
                best = sc
                bestc = c
        offset_kev[p] = bestc
        score[p] = best


def locate_photopeaks(counts, edges, line_kev, strong_fraction, smoothing, threads=None):
    """Photopeak ADU and offset per pixel: (found, peak_adu, offset_kev, gradient0 keV/ADU, median offset).

    ``counts`` (npix, nbins) ADU spectra over ``edges``; ``line_kev`` the lines, photopeak first.
    Raises CalibrationError when no pixel shows a photopeak.
    """
    centers = 0.5 * (edges[1:] + edges[:-1])
    widths = np.diff(edges)
    npix = counts.shape[0]
    anchor_kev = float(line_kev[0])
    ptr, idx, w, sig = _smoothing_matrix(centers, widths, smoothing)
    template = line_kev[1:]
    low_ratio = 0.18
    peak = np.empty(npix)
    offset = np.empty(npix)
    score = np.empty(npix)
    c_lo = np.full(npix, -15.0)
    c_hi = np.full(npix, 15.0)
    in_blocks(_locate_kernel, npix, counts, centers, sig, ptr, idx, w, strong_fraction, low_ratio, 10.0,
              anchor_kev, template, c_lo, c_hi, 0.1, peak, offset, score, threads=threads)
    found = np.isfinite(peak) & np.isfinite(offset)
    if not np.any(found):
        return found, peak, offset, None, None
    # Second, finer scan: around the median offset, wide enough for the spread of the
    # first-pass offsets (a pixel whose true offset lies outside would lock onto a wrong
    # alignment of the lines).
    c_med = float(np.median(offset[found]))
    lo5, hi95 = np.percentile(offset[found], [5, 95])
    half = max(4.0, 1.5 * float(hi95 - lo5))
    in_blocks(_locate_kernel, npix, counts, centers, sig, ptr, idx, w, strong_fraction, low_ratio, 10.0,
              anchor_kev, template, np.full(npix, c_med - half), np.full(npix, c_med + half), 0.02, peak, offset,
              score, threads=threads)
    found = np.isfinite(peak) & np.isfinite(offset)
    g0 = np.where(found, (anchor_kev - offset) / np.where(found, peak, 1.0), np.nan)
    return found, peak, offset, g0, c_med
