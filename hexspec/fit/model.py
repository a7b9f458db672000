"""The peak model of the fits: pseudo-Voigt and Voigt shapes (PHYSICS.md eq. 4) and robust start values."""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import voigt_profile

from ..errors import ConfigError

MODELS = ("pseudo_voigt", "gaussian", "lorentzian", "voigt")
METHODS = ("ls", "ml")

_FOUR_LN2 = 4.0 * math.log(2.0)
_G_NORM = math.sqrt(_FOUR_LN2 / math.pi)

#: parameter order of the batched fitter
PARAM_NAMES = ("center", "fwhm", "area", "eta", "b0", "b1")


# --------------------------------------------------------------------------- peak shapes

def gaussian_shape(energy_kev, center, fwhm):
    """Unit-area Gaussian of FWHM ``fwhm`` (keV): sqrt(4 ln2 / pi) / w exp(-4 ln2 (E-c)^2 / w^2), eq. (4)."""
    x = np.asarray(energy_kev, dtype=np.float64) - center
    return _G_NORM / fwhm * np.exp(-_FOUR_LN2 * x * x / (fwhm * fwhm))


def lorentzian_shape(energy_kev, center, fwhm):
    """Unit-area Lorentzian of FWHM ``fwhm`` (keV): (2/pi) w / (4 (E-c)^2 + w^2), eq. (4)."""
    x = np.asarray(energy_kev, dtype=np.float64) - center
    return (2.0 / math.pi) * fwhm / (4.0 * x * x + fwhm * fwhm)


def pseudo_voigt(energy_kev, center, fwhm, area, eta, b0=0.0, b1=0.0):
    """Pseudo-Voigt peak on a linear background in counts per keV, PHYSICS.md eq. (4).

    Parameters
    ----------
    energy_kev : ndarray
        Energies in keV.
    center, fwhm : float
        Peak centre c and shared FWHM w, keV.
    area : float
        Peak area A in counts.
    eta : float
        Lorentz fraction in [0, 1].
    b0, b1 : float
        Background b0 + b1 (E - c), counts per keV and counts per keV^2.
    """
    e = np.asarray(energy_kev, dtype=np.float64)
    shape = eta * lorentzian_shape(e, center, fwhm) + (1.0 - eta) * gaussian_shape(e, center, fwhm)
    return area * shape + b0 + b1 * (e - center)


def voigt(energy_kev, center, sigma, gamma, area, b0=0.0, b1=0.0):
    """Voigt peak (Gaussian sigma, Lorentzian half-width gamma, keV) on a linear background, counts per keV."""
    e = np.asarray(energy_kev, dtype=np.float64)
    return area * voigt_profile(e - center, sigma, gamma) + b0 + b1 * (e - center)


def voigt_fwhm(sigma, gamma):
    """FWHM of a Voigt profile (Olivero and Longbothum 1977, accurate to 0.02 %)."""
    f_g = 2.0 * sigma * math.sqrt(2.0 * math.log(2.0))
    f_l = 2.0 * gamma
    return 0.5346 * f_l + np.sqrt(0.2166 * f_l * f_l + f_g * f_g)


# lmfit model functions: counts per bin = counts per keV at the bin centre * bin width.
def _pv_counts(x, width, center, fwhm, area, eta, b0, b1):
    return width * pseudo_voigt(x, center, fwhm, area, eta, b0, b1)


def _voigt_counts(x, width, center, sigma, gamma, area, b0, b1):
    return width * voigt(x, center, sigma, gamma, area, b0, b1)


# --------------------------------------------------------------------------- start values

@njit(cache=True, nogil=True)
def _start_estimates(x, y, bw, out):
    """Robust moment starts [center, fwhm, area, eta, b0, b1] from one windowed spectrum.

    Background: a line through the means of the outer tenths of the window; centre: the
    maximum of the 3-bin smoothed net spectrum refined by the centroid within one
    half-width; FWHM: the half-maximum crossings; area: the net counts. Returns False
    if there is no positive net peak.
    """
    n = x.shape[0]
    k = max(2, n // 10)
    yl = 0.0
    xl = 0.0
    yr = 0.0
    xr = 0.0
    for i in range(k):
        yl += y[i] / bw[i]
        xl += x[i]
        yr += y[n - 1 - i] / bw[n - 1 - i]
        xr += x[n - 1 - i]
    yl /= k
    xl /= k
    yr /= k
    xr /= k
    slope = (yr - yl) / (xr - xl)
    net = np.empty(n)
    for i in range(n):
        net[i] = y[i] / bw[i] - (yl + slope * (x[i] - xl))
    imax = 1
    best = -1e300
    for i in range(1, n - 1):
        s = (net[i - 1] + net[i] + net[i + 1]) / 3.0
        if s > best:
            best = s
            imax = i
    if not best > 0.0:
        return False
    half = 0.5 * best
    i0 = imax
    while i0 > 0 and net[i0] > half:
        i0 -= 1
    i1 = imax
    while i1 < n - 1 and net[i1] > half:
        i1 += 1
    fwhm = x[i1] - x[i0]
    minw = 2.0 * bw[imax]
    maxw = 0.5 * (x[n - 1] - x[0])
    fwhm = min(max(fwhm, minw), maxw)
    s0 = 0.0
    s1 = 0.0
    for i in range(n):
        if abs(x[i] - x[imax]) <= 0.5 * fwhm + bw[i] and net[i] > 0.0:
            s0 += net[i]
            s1 += net[i] * x[i]
    center = s1 / s0 if s0 > 0.0 else x[imax]
    area = 0.0
    for i in range(n):
        area += net[i] * bw[i]
    if not area > 0.0:
        area = best * fwhm
    out[0] = center
    out[1] = fwhm
    out[2] = area
    out[3] = 0.5
    out[4] = yl + slope * (center - xl)
    out[5] = slope
    return True


def start_values(energy_kev, counts, widths_kev=None) -> dict:
    """Robust moment start values for one windowed spectrum (the same as :func:`fit_cube` uses).

    Returns a dict with center, fwhm, area, eta, b0, b1, or raises ConfigError if the
    spectrum has no positive net peak.
    """
    x = np.ascontiguousarray(energy_kev, dtype=np.float64)
    y = np.ascontiguousarray(counts, dtype=np.float64)
    bw = _widths(x) if widths_kev is None else np.ascontiguousarray(widths_kev, dtype=np.float64)
    out = np.empty(6)
    if not _start_estimates(x, y, bw, out):
        raise ConfigError("start_values: no positive net peak above the linear background in the window")
    return dict(zip(PARAM_NAMES, out.tolist()))


def _widths(centers):
    c = np.asarray(centers, dtype=np.float64)
    if c.size < 2:
        raise ConfigError(f"need at least 2 energy bins, found {c.size}")
    edges = np.concatenate([[c[0] - 0.5 * (c[1] - c[0])], 0.5 * (c[1:] + c[:-1]), [c[-1] + 0.5 * (c[-1] - c[-2])]])
    return np.diff(edges)
