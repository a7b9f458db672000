"""The batched peak fitter: eq. (4) with analytic derivatives in the shared Levenberg-Marquardt (hexspec.lm).

Every pixel is one fit of the six parameters (center, fwhm, area, eta, b0, b1) from the
robust moment starts of :mod:`hexspec.fit.model`, run in parallel over the pixels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import lm
from .model import _start_estimates
from .results import _BAD_START, _CONVERGED, _FEW_COUNTS, _MAX_ITER

# Fast-math for the inner loops, keeping NaN/inf semantics (non-finite objectives must be seen).
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, nogil=True, fastmath=_FAST)
def _jacobian(p, data, slot, free, tie_src, tie_ratio, f, jac):
    """Counts per bin f and Jacobian jac[q, i] = d f_i / d p_q of eq. (4) at p (all six, analytic)."""
    x, bw = data
    c, w, a, eta, b0, b1 = p[0], p[1], p[2], p[3], p[4], p[5]
    g_norm = math.sqrt(4.0 * math.log(2.0) / math.pi)
    k = 4.0 * math.log(2.0)
    for i in range(x.shape[0]):
        d = x[i] - c
        e = math.exp(-k * d * d / (w * w))
        g = g_norm / w * e
        den = 4.0 * d * d + w * w
        lo = (2.0 / math.pi) * w / den
        shape = eta * lo + (1.0 - eta) * g
        f[i] = bw[i] * (a * shape + b0 + b1 * d)
        dg_dc = g * 2.0 * k * d / (w * w)
        dg_dw = g * (-1.0 / w + 2.0 * k * d * d / (w * w * w))
        dl_dc = (2.0 / math.pi) * w * 8.0 * d / (den * den)
        dl_dw = (2.0 / math.pi) * (4.0 * d * d - w * w) / (den * den)
        jac[0, i] = bw[i] * (a * (eta * dl_dc + (1.0 - eta) * dg_dc) - b1)
        jac[1, i] = bw[i] * a * (eta * dl_dw + (1.0 - eta) * dg_dw)
        jac[2, i] = bw[i] * shape
        jac[3, i] = bw[i] * a * (lo - g)
        jac[4, i] = bw[i]
        jac[5, i] = bw[i] * d


@njit(cache=True, nogil=True, fastmath=_FAST)
def _model(p, data, slot, f):
    """Counts per bin of eq. (4) without derivatives (trial steps that may be rejected)."""
    x, bw = data
    c, w, a, eta, b0, b1 = p[0], p[1], p[2], p[3], p[4], p[5]
    g_norm = math.sqrt(4.0 * math.log(2.0) / math.pi)
    k = 4.0 * math.log(2.0)
    for i in range(x.shape[0]):
        d = x[i] - c
        g = g_norm / w * math.exp(-k * d * d / (w * w))
        lo = (2.0 / math.pi) * w / (4.0 * d * d + w * w)
        f[i] = bw[i] * (a * (eta * lo + (1.0 - eta) * g) + b0 + b1 * d)



_lm = lm.make_lm(_model, _jacobian)


@njit(cache=True, nogil=True)
def fit_pixel(x, y, bw, p, lo, hi, free, max_iter, s, err):
    """One spectrum's fit from the start values in ``p``: (objective, lm status, parameters off their bounds).

    No ties; every parameter's step is measured on its own scale; errors only off the bounds.
    (A plain function between the parallel loop and the compiled fitter: called directly
    from the prange body, the fitter ran about 25% slower.)
    """
    none = np.full(6, -1, np.int64)
    return _lm(y, (x, bw), p, lo, hi, free, none, np.zeros(6), none, np.zeros(6, np.bool_), none, max_iter, s, err)


def settings(ml: bool) -> lm.LMSettings:
    """The Levenberg-Marquardt settings of the peak fits: least squares (``ml=False``) or Poisson ML.

    A step is done when the objective falls by at most 1e-9 of itself or no parameter
    moves by 1e-9 of itself; a rejected step below 1e-12 of the parameters ends the fit.
    """
    return lm.LMSettings(ml=bool(ml), weight_floor=0.0, deviance_floor=0.0, lam0=1e-4, lam_down=0.1, lam_min=1e-12,
                         lam_up=10.0, lam_up_singular=10.0, lam_max=1e12, max_tries=1 << 30, damping_eps=1e-300,
                         ftol_abs=1e-14, ftol_rel=1e-9, xtol=1e-9, converge_needs_both=False, xtol_reject=1e-12,
                         final_jacobian=True)


@njit(cache=True, nogil=True, parallel=True)
def fit_all(x, y_all, bw, lo, hi, free0, eta_pix, s, max_iter, min_counts, out, out_err, out_chi2, out_status,
            out_nfree):
    """Fit every pixel (rows of ``y_all``); ``eta_pix[k]`` fixes pixel k's Lorentz fraction (NaN: ``free0``).

    ``s`` are the :func:`settings`; out (npix, 6) parameters, out_err (npix, 6) standard
    errors, out_chi2 the objective, out_status the fit status, out_nfree the number of
    parameters off their bounds.
    """
    npix = y_all.shape[0]
    for k in prange(npix):
        y = y_all[k]
        total = 0.0
        for i in range(y.shape[0]):
            total += y[i]
        for j in range(6):
            out[k, j] = np.nan
            out_err[k, j] = np.nan
        out_chi2[k] = np.nan
        out_nfree[k] = 0
        if total < min_counts:
            out_status[k] = _FEW_COUNTS
            continue
        p = np.empty(6)
        if not _start_estimates(x, y, bw, p):
            out_status[k] = _BAD_START
            continue
        free = free0.copy()
        if not np.isnan(eta_pix[k]):
            free[3] = False
            p[3] = eta_pix[k]
        err = np.empty(6)
        chi2, status, nfree = fit_pixel(x, y, bw, p, lo, hi, free, max_iter, s, err)
        for j in range(6):
            out[k, j] = p[j]
            out_err[k, j] = err[j]
        out_chi2[k] = chi2
        if status == lm.LM_CONVERGED:
            out_status[k] = _CONVERGED
        elif status == lm.LM_MAX_ITER:
            out_status[k] = _MAX_ITER
        else:
            out_status[k] = _BAD_START   # the objective is not finite at the start
        out_nfree[k] = nfree
