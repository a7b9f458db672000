"""Stage 5: the noise edge of every pixel and the threshold suggested from it."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _solve_inplace(a, b, k):
    """Solve a[:k,:k] x = b[:k] by Gaussian elimination with partial pivoting; False if singular."""
    for c in range(k):
        piv = c
        best = abs(a[c, c])
        for r in range(c + 1, k):
            if abs(a[r, c]) > best:
                best = abs(a[r, c])
                piv = r
        if best < 1e-300:
            return False
        if piv != c:
            for cc in range(k):
                tmp = a[c, cc]
                a[c, cc] = a[piv, cc]
                a[piv, cc] = tmp
            tmp = b[c]
            b[c] = b[piv]
            b[piv] = tmp
        for r in range(c + 1, k):
            f = a[r, c] / a[c, c]
            if f != 0.0:
                for cc in range(c, k):
                    a[r, cc] -= f * a[c, cc]
                b[r] -= f * b[c]
    for c in range(k - 1, -1, -1):
        s = b[c]
        for cc in range(c + 1, k):
            s -= a[c, cc] * b[cc]
        b[c] = s / a[c, c]
    return True




@njit(cache=True, nogil=True)
def _noise_kernel(counts, edges, upper_adu, out_mu, out_sigma):
    """Gaussian fit (quadratic in log counts, weights = counts) to the falling flank of the noise peak.

    The flank runs from the mode below ``upper_adu`` (the first bin is skipped when it
    holds the values clipped at 0 ADU) down to 1e-3 of the mode's height, 3 counts, or
    the valley where the counts stop falling, whichever comes first.
    """
    npix, nb = counts.shape
    for p in range(npix):
        out_mu[p] = np.nan
        out_sigma[p] = np.nan
        jmax = 0
        best = -1.0
        for j in range(nb):
            if edges[j] >= upper_adu[p]:
                break
            if counts[p, j] > best:
                best = counts[p, j]
                jmax = j
        if best <= 0:
            continue
        start = jmax
        if jmax == 0 and edges[0] <= 0.0:
            start = 1   # bin 0 holds the noise clipped at 0 ADU
        peak = counts[p, start]
        if peak <= 0:
            continue
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        t0 = 0.0
        t1 = 0.0
        t2 = 0.0
        used = 0
        xref = 0.5 * (edges[start] + edges[start + 1])
        prev = 1e300
        for j in range(start, nb):
            v = float(counts[p, j])
            if v < 1e-3 * peak or v < 3.0 or edges[j] >= upper_adu[p]:
                break
            if v >= prev and v < 0.05 * peak:
                break   # the valley: signal counts take over from the noise
            prev = v
            x = 0.5 * (edges[j] + edges[j + 1]) - xref
            y = math.log(v)
            s0 += v
            s1 += v * x
            s2 += v * x * x
            s3 += v * x * x * x
            s4 += v * x * x * x * x
            t0 += v * y
            t1 += v * x * y
            t2 += v * x * x * y
            used += 1
        # a noise peak must fall by at least 20x within the noise region
        if used < 3 or float(counts[p, start + used - 1]) > peak / 20.0 or peak < 20:
            continue
        # normal equations of y = a0 + a1 x + a2 x^2
        mat = np.array([[s0, s1, s2], [s1, s2, s3], [s2, s3, s4]])
        rhs = np.array([t0, t1, t2])
        if not _solve_inplace(mat, rhs, 3):
            continue
        a1 = rhs[1]
        a2 = rhs[2]
        if a2 >= 0.0:
            continue
        out_sigma[p] = math.sqrt(-0.5 / a2)
        out_mu[p] = xref - a1 / (2.0 * a2)


@njit(cache=True, nogil=True)
def _counts_above_kernel(counts, edges, upper, out):
    for p in range(counts.shape[0]):
        s = 0
        for j in range(counts.shape[1]):
            if edges[j] >= upper[p]:
                s += np.int64(counts[p, j])
        out[p] = s


def _counts_above(counts, edges, upper):
    out = np.empty(counts.shape[0], np.int64)
    _counts_above_kernel(counts, edges, np.nan_to_num(upper, nan=np.inf), out)
    return out


def noise_threshold(counts, edges, line_kev, g, c, g0, c_fallback, photo_sigma_adu, photo_ok, threshold_sigmas):
    """Threshold suggestion mu_noise + k sigma_noise per pixel (ADU).

    The noise region ends well below the lowest line: it is sought below half the ADU
    of the lowest line, with pixels not calibrated placed on the median scale.

    Returns
    -------
    (threshold, from_noise_peak, noise_sigma, signal, calibrated)
        ``signal`` counts above the noise region; ``calibrated`` where g is a usable gradient.
    """
    calibrated = np.isfinite(g) & (g > 0)
    g_med = float(np.median(g[calibrated])) if np.any(calibrated) else float(np.nanmedian(g0))
    c_med = float(np.median(c[calibrated])) if np.any(calibrated) else c_fallback
    g_use = np.where(calibrated, g, g_med)
    c_use = np.where(calibrated, c, c_med)
    # The noise peak sits near 0 ADU (offset-corrected readout) whatever the intercept;
    # it is sought below half the ADU of the lowest line.
    upper = 0.5 * (float(line_kev.min()) - c_use) / g_use
    npix = counts.shape[0]
    noise_mu = np.empty(npix)
    noise_sigma = np.empty(npix)
    _noise_kernel(counts, edges, upper, noise_mu, noise_sigma)
    threshold = noise_mu + threshold_sigmas * noise_sigma
    # Without a visible noise peak (offset-corrected readouts that clip the noise at
    # 0 ADU) the noise is centred at zero energy, ADU = -intercept / gradient, with the
    # photopeak's sigma (electronic noise dominates it): threshold there + k sigma.
    from_noise = np.isfinite(threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        fallback = np.maximum(-c / g + threshold_sigmas * photo_sigma_adu, 0.0)
    threshold = np.where(from_noise, threshold, np.where(calibrated & photo_ok, fallback, np.nan))
    signal = _counts_above(counts, edges, upper)
    return threshold, from_noise, noise_sigma, signal, calibrated
