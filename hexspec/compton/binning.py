"""Energy bins seen in p_z: window weights, counts-to-J factors and per-bin backgrounds.

The building blocks shared by the single-spectrum profiles (:mod:`.profiles`) and the
per-pixel kernels (:mod:`.sparameter`, :mod:`.sideband`). Each is written once, as a
numba function (called from numpy code too) or a ``register_jitable`` formula that numpy
evaluates on arrays and numba compiles where a kernel calls it.

A profile J(p_z) is stored as a density per a.u. that is constant within each p_z bin,
so integrals over any p_z window use the fractional overlap of each bin with the window
and do not depend on where bin edges fall.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from ..errors import ConfigError
from .kinematics import _impulse_factor_formula, pz_from_energy

FACTORS = ("impulse", "jacobian")


@njit(cache=True, nogil=True)
def add_window_weights(pz_edges, lo, hi, w):
    """Add into ``w`` the weights of the p_z window [lo, hi] for bin edges ``pz_edges``.

    Whole bins inside the window count with their width. A bin cut by a window limit
    counts with its overlap (fractional bin overlap) plus a first-order correction from
    a linear reconstruction of J inside that bin (slope from the neighbouring bins'
    densities), which keeps every bin's integral and removes the leading error of
    treating J as constant within a bin; S then hardly depends on where bin edges fall.
    """
    n = pz_edges.shape[0] - 1
    for j in range(n):
        a = pz_edges[j]
        b = pz_edges[j + 1]
        x1 = max(a, lo)
        x2 = min(b, hi)
        length = x2 - x1
        if length <= 0.0:
            continue
        w[j] += length
        if length < b - a and 0 < j < n - 1:
            mid = 0.5 * (a + b)
            t = 0.5 * ((x2 - mid) ** 2 - (x1 - mid) ** 2) / (
                0.5 * (pz_edges[j + 1] + pz_edges[j + 2]) - 0.5 * (pz_edges[j - 1] + pz_edges[j]))
            w[j + 1] += t
            w[j - 1] -= t


def window_weights(edges, lo, hi):
    """Weights w with integral of J over [lo, hi] = w @ J, for J given as bin densities on ``edges``.

    See :func:`add_window_weights` (the same code, also used inside the per-pixel kernels).
    """
    edges = np.ascontiguousarray(edges, dtype=np.float64)
    w = np.zeros(edges.size - 1)
    add_window_weights(edges, float(lo), float(hi), w)
    return w


def rebin_matrix(old_edges, new_edges):
    """W (n_new, n_old) with the integral of J over new bin i = W[i] @ J_old (densities on ``old_edges``).

    Row i is :func:`window_weights` of new bin i, so rebinning uses the same fractional
    overlap and linear sub-bin reconstruction as every window integral.
    """
    old_edges = np.ascontiguousarray(old_edges, dtype=np.float64)
    new_edges = np.asarray(new_edges, dtype=np.float64)
    m = np.zeros((new_edges.size - 1, old_edges.size - 1))
    for i in range(new_edges.size - 1):
        add_window_weights(old_edges, float(new_edges[i]), float(new_edges[i + 1]), m[i])
    return m


@register_jitable
def density_factor(ea_kev, eb_kev, pa_au, pb_au, e1_kev, cos_t, impulse):
    """g turning the counts of energy bin [ea, eb] (p_z [pa, pb]) into the density of J per a.u., eq. (3).

    "impulse": g = (E1/E2)(q c/mc^2) / (eb - ea) at the bin centre E2, since J is proportional
    to N(E2)(E1/E2)(q c/mc^2); "jacobian": g = 1 / (pb - pa), counts per unit p_z.
    Scalars in kernels, arrays in numpy code.
    """
    if impulse:
        return _impulse_factor_formula(0.5 * (ea_kev + eb_kev), e1_kev, cos_t) / (eb_kev - ea_kev)
    return 1.0 / (pb_au - pa_au)


@register_jitable
def linear_background_counts(ea_kev, eb_kev, b0, b1, center_kev):
    """Counts in energy bin [ea, eb] of a fitted straight background b0 + b1 (E - centre), per keV."""
    return (eb_kev - ea_kev) * (b0 + b1 * (0.5 * (ea_kev + eb_kev) - center_kev))


def check_factor(factor, where):
    if factor not in FACTORS:
        raise ConfigError(f"{where}: factor must be one of {FACTORS}, found {factor!r}")


def bin_weights(energy_edges, e1_kev, theta_rad, factor="impulse"):
    """p_z edges of energy bins and the factor turning counts into integrals of J, eq. (3).

    Each energy bin [a, b] maps to the p_z interval [p(a), p(b)] (eq. 2). The integral of
    J over that interval is proportional to ``counts * kappa`` with

    - "impulse": kappa = (dp / dE) (E1 / E2) (q c / mc^2) at the bin centre, since
      J is proportional to N(E2) (E1 / E2) (q c / mc^2) with N(E2) = counts / (b - a) and
      dp / dE = (p(b) - p(a)) / (b - a);
    - "jacobian": kappa = 1 (J is simply counts per unit p_z).

    kappa is :func:`density_factor` times the bin's p_z width.

    Returns
    -------
    pz_edges : ndarray (nbins + 1,)
    kappa : ndarray (nbins,)
    """
    check_factor(factor, "compton profile")
    edges = np.asarray(energy_edges, dtype=np.float64)
    pz = pz_from_energy(edges, e1_kev, theta_rad)
    if factor == "jacobian":
        return pz, np.ones(edges.size - 1)
    g = density_factor(edges[:-1], edges[1:], pz[:-1], pz[1:], float(e1_kev), np.cos(theta_rad), True)
    return pz, g * np.diff(pz)


def linear_background_table(peaks):
    """Per-pixel straight backgrounds of peak fits, for the kernels.

    Parameters
    ----------
    peaks : hexspec.fit.PeakMaps
        Fitted b0 (counts per keV at the centre), b1 (per keV^2), centre (keV) and their
        errors, each (rows, cols), and ``ok``.

    Returns
    -------
    bg_lin : ndarray (npix, 3)
        (b0, b1, centre) per pixel, zero where the fit is not ok.
    bg_err : ndarray (npix, 2)
        Errors of b0 and b1 (taken as independent), zero where not ok or not finite.
    ok : ndarray (npix,) of bool
    """
    ok = np.asarray(peaks.ok).reshape(-1)
    bg_lin = np.stack([np.where(ok, peaks.b0.reshape(-1), 0.0), np.where(ok, peaks.b1.reshape(-1), 0.0),
                       np.where(ok, peaks.center.reshape(-1), 0.0)], axis=1)
    bg_err = np.nan_to_num(np.stack([np.where(ok, peaks.b0_err.reshape(-1), 0.0),
                                     np.where(ok, peaks.b1_err.reshape(-1), 0.0)], axis=1))
    return bg_lin, bg_err, ok
