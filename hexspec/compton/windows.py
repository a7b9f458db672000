"""Per-pixel window integrals of the S-parameter, PHYSICS.md eq. (4), as a table.

Every pixel's spectrum becomes one row of a window table with the named columns below:
the window integrals S_L and S_H of J (|p_z| < low and low < |p_z| < high), their
variances and covariance, and the raw counts in each window. S_L and S_H are linear in
the counts, so a map, a block sum or a region sum of S is a sum of rows followed by
:func:`ratio`; the variances follow exactly from the per-bin coefficients.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .binning import add_window_weights, density_factor, linear_background_counts
from .kinematics import pz_scalar

#: Columns of a window table (npix, N_COLUMNS).
S_LOW, S_HIGH, VAR_LOW, VAR_HIGH, COV_LOW_HIGH, COUNTS_LOW, COUNTS_HIGH = range(7)
N_COLUMNS = 7
COLUMNS = ("s_low", "s_high", "var_low", "var_high", "cov_low_high", "counts_low", "counts_high")


@njit(cache=True, nogil=True)
def pixel_window_coefficients(edges, i0, e1, cos_t, low, high, impulse, cl, ch, fl, fh):
    """One pixel's coefficients over energy bins i0 .. i0 + m - 1 (m = cl.size), eq. (4).

    S_L = sum cl n and S_H = sum ch n over the bins' counts n (window weights in p_z at
    this pixel's angle times the counts-to-J factor); fl, fh are the fractions of each
    bin's raw counts inside the low and high windows.
    """
    m = cl.shape[0]
    pe = np.empty(m + 1)
    for i in range(m + 1):
        pe[i] = pz_scalar(edges[i0 + i], e1, cos_t)
    wl = np.zeros(m)
    wh = np.zeros(m)
    add_window_weights(pe, -low, low, wl)
    add_window_weights(pe, -high, -low, wh)
    add_window_weights(pe, low, high, wh)
    for i in range(m):
        g = density_factor(edges[i0 + i], edges[i0 + i + 1], pe[i], pe[i + 1], e1, cos_t, impulse)
        dp = pe[i + 1] - pe[i]
        cl[i] = wl[i] * g
        ch[i] = wh[i] * g
        fl[i] = min(max(wl[i] / dp, 0.0), 1.0)
        fh[i] = min(max(wh[i] / dp, 0.0), 1.0)


@njit(cache=True, nogil=True, parallel=True)
def window_sums(edges, counts, theta, e1, low, high, impulse, e_lo, e_hi, bg_lin, bg_lin_err, bg_arr, bg_arr_var,
                out):
    """Fill the window table ``out`` (npix, N_COLUMNS), one row per pixel, eq. (4).

    ``bg_lin`` (npix, 3) = (b0, b1, centre) of a linear background per keV, ``bg_lin_err``
    (npix, 2) its errors (independent); ``bg_arr`` (npix, nbins) counts per bin with
    variances ``bg_arr_var`` (or empty arrays). Only bins between ``e_lo`` and ``e_hi``
    (the outer window limits, keV) enter.
    """
    npix = counts.shape[0]
    nb = counts.shape[1]
    use_lin = bg_lin.shape[0] > 0
    use_arr = bg_arr.shape[0] > 0
    for k in prange(npix):
        cos_t = math.cos(theta[k])
        # one spare bin each side for the slope of the linear reconstruction
        i0 = max(np.searchsorted(edges, e_lo[k]) - 2, 0)
        i1 = min(np.searchsorted(edges, e_hi[k]) + 1, nb)
        m = i1 - i0
        for q in range(N_COLUMNS):
            out[k, q] = 0.0
        if m <= 0:
            continue
        cl = np.empty(m)
        ch = np.empty(m)
        fl = np.empty(m)
        fh = np.empty(m)
        pixel_window_coefficients(edges, i0, e1, cos_t, low, high, impulse, cl, ch, fl, fh)
        sl = 0.0
        sh = 0.0
        vll = 0.0
        vhh = 0.0
        vlh = 0.0
        nl = 0.0
        nh = 0.0
        d0l = 0.0
        d1l = 0.0
        d0h = 0.0
        d1h = 0.0
        for i in range(m):
            if cl[i] == 0.0 and ch[i] == 0.0:
                continue
            ea = edges[i0 + i]
            eb = edges[i0 + i + 1]
            n = np.float64(counts[k, i0 + i])
            net = n
            var = n
            if use_lin:
                e2c = 0.5 * (ea + eb) - bg_lin[k, 2]
                net -= linear_background_counts(ea, eb, bg_lin[k, 0], bg_lin[k, 1], bg_lin[k, 2])
                d0l += cl[i] * (eb - ea)
                d1l += cl[i] * (eb - ea) * e2c
                d0h += ch[i] * (eb - ea)
                d1h += ch[i] * (eb - ea) * e2c
            if use_arr:
                net -= bg_arr[k, i0 + i]
                var += bg_arr_var[k, i0 + i]
            sl += cl[i] * net
            sh += ch[i] * net
            vll += cl[i] * cl[i] * var
            vhh += ch[i] * ch[i] * var
            vlh += cl[i] * ch[i] * var
            nl += fl[i] * n
            nh += fh[i] * n
        if use_lin:
            s0 = bg_lin_err[k, 0] * bg_lin_err[k, 0]
            s1 = bg_lin_err[k, 1] * bg_lin_err[k, 1]
            vll += d0l * d0l * s0 + d1l * d1l * s1
            vhh += d0h * d0h * s0 + d1h * d1h * s1
            vlh += d0l * d0h * s0 + d1l * d1h * s1
        out[k, S_LOW] = sl
        out[k, S_HIGH] = sh
        out[k, VAR_LOW] = vll
        out[k, VAR_HIGH] = vhh
        out[k, COV_LOW_HIGH] = vlh
        out[k, COUNTS_LOW] = nl
        out[k, COUNTS_HIGH] = nh


@njit(cache=True, nogil=True, parallel=True)
def window_coefficients(edges, theta, e1, low, high, impulse, j0, cl, ch, fl, fh):
    """:func:`pixel_window_coefficients` of every pixel over bins j0 .. j0 + m - 1, into rows of (npix, m) arrays."""
    for k in prange(cl.shape[0]):
        pixel_window_coefficients(edges, j0, e1, math.cos(theta[k]), low, high, impulse, cl[k], ch[k], fl[k], fh[k])


def ratio(table):
    """S = S_L / S_H and its standard error from window-table rows (or their sums), eq. (4).

    Parameters
    ----------
    table : ndarray (..., N_COLUMNS)

    Returns
    -------
    s, s_err : ndarray (...)
    """
    sl, sh = table[..., S_LOW], table[..., S_HIGH]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = sl / sh
        var = (table[..., VAR_LOW] - 2.0 * s * table[..., COV_LOW_HIGH] + s * s * table[..., VAR_HIGH]) / (sh * sh)
    return s, np.sqrt(np.maximum(var, 0.0))
