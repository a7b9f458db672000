"""One spectrum fitted with lmfit (a Model with bounded, named parameters): :func:`fit_peak`."""

from __future__ import annotations

import math

import lmfit
import numpy as np

from ..errors import ConfigError
from .model import METHODS, MODELS, _pv_counts, _voigt_counts, _widths, start_values, voigt_fwhm
from .results import PeakFit


def _energy_window(energy_window_kev, window, where):
    """The energy window given under its name or its former name ``window`` (DESIGN.md)."""
    if window is not None and energy_window_kev is not None:
        raise ConfigError(f"{where}: window is the former name of energy_window_kev; give one of them")
    return energy_window_kev if window is None else window


def _bounds(x, bw):
    span = float(x[-1] - x[0])
    return dict(center=(float(x[0]), float(x[-1])), fwhm=(0.25 * float(np.min(bw)), span),
                area=(0.0, np.inf), eta=(0.0, 1.0))


def fit_peak(energy, counts, energy_window_kev=None, model="pseudo_voigt", method="ls", widths=None, start=None,
             *, window=None) -> PeakFit:
    """Fit one peak with lmfit, PHYSICS.md eq. (4).

    Parameters
    ----------
    energy : ndarray (nbins,)
        Bin centres in keV (or bin edges, shape (nbins + 1,)).
    counts : ndarray (nbins,)
        Counts per bin.
    energy_window_kev : (emin, emax), optional
        Energy range in keV of the bins (by centre) to fit; all bins when None.
        ``window=`` is its former name, still accepted.
    model : {"pseudo_voigt", "gaussian", "lorentzian", "voigt"}
        Peak shape; the Gaussian and Lorentzian are the pseudo-Voigt with eta fixed at 0 and 1.
    method : {"ls", "ml"}
        Poisson-weighted least squares (weights 1 / max(counts, 1)), or Poisson maximum
        likelihood (the deviance, for low counts), minimised by Levenberg-Marquardt on
        signed deviance residuals.
    widths : ndarray (nbins,), optional
        Bin widths in keV; derived from ``energy`` when not given.
    start : dict, optional
        Start values overriding the robust moment estimates.

    Returns
    -------
    PeakFit
        Parameters, uncertainties (unscaled covariance: the weights are absolute),
        reduced chi-square (Pearson chi-square over degrees of freedom for ``"ml"``),
        and the lmfit result in ``.result``.
    """
    window = _energy_window(energy_window_kev, window, "fit_peak")
    if model not in MODELS:
        raise ConfigError(f"fit_peak: model must be one of {MODELS}, found {model!r}")
    if method not in METHODS:
        raise ConfigError(f"fit_peak: method must be one of {METHODS}, found {method!r}")
    x, y, bw = _select(energy, counts, window, widths)
    p0 = start_values(x, y, bw)
    if start:
        p0.update(start)
    b = _bounds(x, bw)
    if model == "voigt":
        lm_model = lmfit.Model(_voigt_counts, independent_vars=["x", "width"])
        params = lm_model.make_params()
        sigma0 = p0["fwhm"] / 3.6
        params["sigma"].set(value=sigma0, min=1e-6, max=b["fwhm"][1])
        params["gamma"].set(value=sigma0, min=0.0, max=b["fwhm"][1])
    else:
        lm_model = lmfit.Model(_pv_counts, independent_vars=["x", "width"])
        params = lm_model.make_params()
        params["fwhm"].set(value=min(max(p0["fwhm"], b["fwhm"][0]), b["fwhm"][1]), min=b["fwhm"][0], max=b["fwhm"][1])
        eta0 = {"gaussian": 0.0, "lorentzian": 1.0}.get(model, p0["eta"])
        params["eta"].set(value=eta0, min=0.0, max=1.0, vary=(model == "pseudo_voigt"))
    params["center"].set(value=p0["center"], min=b["center"][0], max=b["center"][1])
    params["area"].set(value=max(p0["area"], 1e-9), min=0.0)
    params["b0"].set(value=p0["b0"])
    params["b1"].set(value=p0["b1"])

    if method == "ls":
        weights = 1.0 / np.sqrt(np.maximum(y, 1.0))
        result = lm_model.fit(y, params, x=x, width=bw, weights=weights, scale_covar=False)
        chi2 = float(result.chisqr)
    else:
        def residual(p):
            m = lm_model.eval(p, x=x, width=bw)
            m = np.maximum(m, 1e-300)
            with np.errstate(divide="ignore", invalid="ignore"):
                dev = 2.0 * (m - y + np.where(y > 0, y * np.log(y / m), 0.0))
            return np.sign(y - m) * np.sqrt(np.maximum(dev, 0.0))
        result = lmfit.minimize(residual, params, scale_covar=False)
        m = lm_model.eval(result.params, x=x, width=bw)
        chi2 = float(np.sum((y - m) ** 2 / np.maximum(m, 1e-300)))
    nfree = max(int(result.nfree), 1)
    p = result.params

    def val(name, default=np.nan):
        return float(p[name].value) if name in p else default

    def err(name):
        if name not in p or not p[name].vary or p[name].stderr is None:
            return np.nan
        lo, hi = p[name].min, p[name].max
        v = p[name].value
        if (np.isfinite(lo) and v <= lo + 1e-9 * max(1.0, abs(lo))) or (np.isfinite(hi) and v >= hi - 1e-9 * max(1.0, abs(hi))):
            return np.nan
        return float(p[name].stderr)

    if model == "voigt":
        fwhm = float(voigt_fwhm(val("sigma"), val("gamma")))
        # Propagate sigma/gamma errors through the FWHM formula numerically.
        fwhm_err = _voigt_fwhm_err(result)
        eta, eta_err = np.nan, np.nan
    else:
        fwhm, fwhm_err = val("fwhm"), err("fwhm")
        eta, eta_err = val("eta"), err("eta")
    fit = PeakFit(center=val("center"), fwhm=fwhm, area=val("area"), eta=eta, b0=val("b0"), b1=val("b1"),
                  center_err=err("center"), fwhm_err=fwhm_err, area_err=err("area"), eta_err=eta_err,
                  b0_err=err("b0"), b1_err=err("b1"), redchi=chi2 / nfree, ok=False, model=model, method=method,
                  window=(float(x[0]), float(x[-1])), npoints=int(x.size), result=result)
    fit.ok = bool(result.success and np.isfinite(fit.center_err) and np.isfinite(fit.area_err)
                  and fit.area > 3.0 * fit.area_err)
    return fit


def _voigt_fwhm_err(result):
    p = result.params
    if result.covar is None or p["sigma"].stderr is None or p["gamma"].stderr is None:
        return np.nan
    names = list(result.var_names)
    i, j = names.index("sigma"), names.index("gamma")
    s, g = p["sigma"].value, p["gamma"].value
    h = 1e-6 * max(s, g, 1e-6)
    ds = (voigt_fwhm(s + h, g) - voigt_fwhm(s - h, g)) / (2 * h)
    dg = (voigt_fwhm(s, g + h) - voigt_fwhm(s, g - h)) / (2 * h)
    c = result.covar
    var = ds * ds * c[i, i] + dg * dg * c[j, j] + 2 * ds * dg * c[i, j]
    return float(math.sqrt(var)) if var > 0 else np.nan


def _select(energy, counts, window, widths):
    e = np.asarray(energy, dtype=np.float64)
    y = np.asarray(counts, dtype=np.float64)
    if e.ndim != 1 or y.ndim != 1:
        raise ConfigError(f"fit_peak: expected 1-d energy and counts, found shapes {e.shape} and {y.shape}")
    if e.size == y.size + 1:
        bw = np.diff(e)
        e = 0.5 * (e[1:] + e[:-1])
    elif e.size == y.size:
        bw = _widths(e) if widths is None else np.asarray(widths, dtype=np.float64)
    else:
        raise ConfigError(f"fit_peak: expected {y.size} bin centres or {y.size + 1} edges, found {e.size} energies")
    sel = np.ones(e.size, bool) if window is None else (e >= window[0]) & (e <= window[1])
    if np.count_nonzero(sel) < 8:
        raise ConfigError(f"fit_peak: the window {window} keV holds {np.count_nonzero(sel)} bins; at least 8 are needed")
    return e[sel], y[sel], bw[sel]
