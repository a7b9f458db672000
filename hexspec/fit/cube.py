"""The cube driver: every pixel of a SpectralCube fitted at once (:func:`fit_cube`), results as PeakMaps."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .batched import fit_all, settings
from .model import METHODS, PARAM_NAMES, pseudo_voigt
from .results import _AT_BOUND, _CONVERGED, _NOT_SIGNIFICANT, ETA_FREE_MIN_COUNTS, PeakMaps
from .single import _bounds, _energy_window


def fit_cube(cube, energy_window_kev=None, model="pseudo_voigt", method="ls", min_counts=50, max_iter=200,
             eta="auto", eta_free_min_counts=ETA_FREE_MIN_COUNTS, *, window=None) -> PeakMaps:
    """Fit the peak of every pixel of a SpectralCube at once, PHYSICS.md eq. (4).

    A batched Levenberg-Marquardt compiled with numba (hand-written because fitting
    thousands of small spectra through lmfit costs milliseconds each; this runs all
    pixels in parallel with analytic derivatives) minimises the same objective as
    :func:`fit_peak`, from the same robust moment starts, with the same bounds.

    Parameters
    ----------
    cube : SpectralCube
        Counts (rows, cols, nbins) with energy edges in keV.
    energy_window_kev : (emin, emax)
        Energy range in keV; the bins whose centres lie in it are fitted. ``window=``
        is its former name, still accepted.
    model : {"pseudo_voigt", "gaussian", "lorentzian"}
        Peak shape (Voigt is only available in :func:`fit_peak`).
    method : {"ls", "ml"}
        Poisson-weighted least squares or Poisson maximum likelihood (Fisher scoring).
    min_counts : float
        Pixels with fewer counts in the window are not fitted (NaN, status 2).
    max_iter : int
        Iteration limit per pixel.
    eta : "auto", "free" or float
        Lorentz fraction of the pseudo-Voigt. "auto" (default): the summed spectrum of all
        pixels is fitted first, and pixels with fewer than ``eta_free_min_counts`` counts
        in the window are fitted with eta fixed at its value (``PeakMaps.eta_tied``);
        "free": eta free in every pixel (it runs to its bounds at low counts); a number
        fixes eta everywhere.
    eta_free_min_counts : float
        Window counts from which a pixel fits its own eta with ``eta="auto"``.

    Returns
    -------
    PeakMaps
    """
    window = _energy_window(energy_window_kev, window, "fit_cube")
    if window is None:
        raise ConfigError("fit_cube: expected an energy window (emin, emax) in keV, found none")
    if model not in ("pseudo_voigt", "gaussian", "lorentzian"):
        raise ConfigError(f"fit_cube: model must be 'pseudo_voigt', 'gaussian' or 'lorentzian', found {model!r}")
    if method not in METHODS:
        raise ConfigError(f"fit_cube: method must be one of {METHODS}, found {method!r}")
    centers = cube.centers
    sel = np.flatnonzero((centers >= window[0]) & (centers <= window[1]))
    if sel.size < 8:
        raise ConfigError(f"fit_cube: the window {tuple(window)} keV holds {sel.size} bins of the cube; at least 8 are needed")
    x = np.ascontiguousarray(centers[sel])
    bw = np.ascontiguousarray(cube.widths[sel])
    rows, cols = cube.shape
    y_all = np.ascontiguousarray(cube.counts[:, :, sel[0]:sel[-1] + 1].reshape(rows * cols, sel.size), dtype=np.float64)
    b = _bounds(x, bw)
    lo = np.array([b["center"][0], b["fwhm"][0], 0.0, 0.0, -np.inf, -np.inf])
    hi = np.array([b["center"][1], b["fwhm"][1], np.inf, 1.0, np.inf, np.inf])
    free0 = np.ones(6, np.bool_)
    npix = rows * cols
    eta_pix = np.full(npix, np.nan)
    eta_tied = float("nan")
    if model != "pseudo_voigt":
        free0[3] = False
        eta_pix[:] = 0.0 if model == "gaussian" else 1.0
    elif isinstance(eta, str):
        if eta not in ("auto", "free"):
            raise ConfigError(f"fit_cube: eta must be 'auto', 'free' or a number in [0, 1], found {eta!r}")
        totals = y_all.sum(axis=1)
        few = totals < eta_free_min_counts
        if eta == "auto" and few.any():
            summed = fit_cube(SpectralCubeLike(y_all.sum(axis=0)[None, None, :], x, bw), (x[0], x[-1]),
                              method=method, min_counts=0, max_iter=max_iter, eta="free")
            if summed.ok[0, 0]:
                eta_tied = float(summed.eta[0, 0])
                eta_pix[few] = eta_tied
    else:
        eta_tied = float(eta)
        if not 0.0 <= eta_tied <= 1.0:
            raise ConfigError(f"fit_cube: a fixed eta must lie in [0, 1], found {eta}")
        eta_pix[:] = eta_tied
    out = np.empty((npix, 6))
    out_err = np.empty((npix, 6))
    chi2 = np.empty(npix)
    status = np.empty(npix, np.int64)
    nfree = np.empty(npix, np.int64)
    fit_all(x, y_all, bw, lo, hi, free0, eta_pix, settings(method == "ml"), int(max_iter), float(min_counts),
            out, out_err, chi2, status, nfree)
    dof = np.maximum(sel.size - nfree, 1)
    if method == "ml":
        chi2 = _pearson_chi2(x, bw, y_all, out)
    redchi = chi2 / dof
    maps = {name: out[:, j].reshape(rows, cols) for j, name in enumerate(PARAM_NAMES)}
    errs = {name + "_err": out_err[:, j].reshape(rows, cols) for j, name in enumerate(PARAM_NAMES)}
    c, w, a = out[:, 0], out[:, 1], out[:, 2]
    eps = 1e-9
    with np.errstate(invalid="ignore"):
        ok = ((status == _CONVERGED) & np.isfinite(out_err[:, 0]) & np.isfinite(out_err[:, 2])
              & (c > lo[0] + eps) & (c < hi[0] - eps) & (w > lo[1] + eps) & (w < hi[1] - eps)
              & (a > 3.0 * out_err[:, 2]))
        at_bound = (c <= lo[0] + eps) | (c >= hi[0] - eps) | (w <= lo[1] + eps) | (w >= hi[1] - eps)
    conv = status == _CONVERGED
    status = np.where(conv & ~ok & at_bound, _AT_BOUND, status)
    status = np.where(conv & ~ok & ~at_bound, _NOT_SIGNIFICANT, status)
    return PeakMaps(**maps, **errs, redchi=redchi.reshape(rows, cols), ok=ok.reshape(rows, cols),
                    status=status.reshape(rows, cols), window=(float(x[0]), float(x[-1])), method=method,
                    eta_tied=eta_tied)


class SpectralCubeLike:
    """The few SpectralCube attributes :func:`fit_cube` reads, for spectra already cut to a window."""

    def __init__(self, counts, centers, widths):
        self.counts = counts
        self.centers = np.asarray(centers, dtype=np.float64)
        self.widths = np.asarray(widths, dtype=np.float64)

    @property
    def shape(self):
        return self.counts.shape[:2]


def _pearson_chi2(x, bw, y_all, params):
    chi2 = np.full(y_all.shape[0], np.nan)
    good = np.all(np.isfinite(params), axis=1)
    for_rows = np.flatnonzero(good)
    # Vectorised over pixels: evaluate eq. (4) per bin for every fitted pixel.
    p = params[for_rows]
    m = bw * pseudo_voigt(x[None, :], p[:, 0:1], p[:, 1:2], p[:, 2:3], p[:, 3:4], p[:, 4:5], p[:, 5:6])
    chi2[for_rows] = np.sum((y_all[for_rows] - m) ** 2 / np.maximum(m, 1e-300), axis=1)
    return chi2
