"""The line width the forward model needs, from an Am-241 calibration: noise and energy-scale errors.

Two things make a block's Compton line wider or narrower than the calibration's photopeak
FWHM says, and the forward model's 1 - x moves by about 0.02 per 1 % of width:

- The calibration's FWHM is not the electronic noise. It is the Gaussian core of a
  Gaussian-plus-tail fit to the raw (undiscriminated) photopeak of each pixel, and that
  core also holds the small charge-sharing losses of photons near the pixel's edges
  (about +3 % on a HEXITEC), while a free tail fitted to some 500 photopeak counts takes
  part of the Gaussian (about -1.5 %). The detector response adds the sharing losses
  itself, so it needs the noise: :func:`photopeak_fit_ratio` predicts the raw photopeak
  from the response's own charge-sharing Monte Carlo, fits replicas of it at the
  calibration's counts with the calibration's own photopeak fit, and returns the ratio of
  the fitted to the true width, by which the calibration's FWHMs are divided.
- The calibration's energy scale of each pixel has errors: a straight line through 3-5
  lines below 60 keV, extrapolated to 90-115 keV (about 0.1 keV rms there with some
  2,000 photons per pixel). Summed over a block they widen the line. Their variance at
  energy E follows from the line fit's own covariance (:func:`scale_variance_coefficients`).

Both come from the calibration file and physics; nothing is fitted to the Compton data.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
AM241_PHOTOPEAK_KEV = 59.5409
#: Systematic term (keV) of `calibrate_am241`'s straight-line fit, its default.
DEFAULT_SYSTEMATIC_KEV = 0.02
_REPLICAS = 1000
#: Flat background under the photopeak window, as a share of the photopeak counts: about the
#: Am-241 source's scattered continuum (5 % of its photons over 3-60 keV); the ratio changes
#: by less than 1 % between 0.5 % and 4 %.
_WINDOW_BACKGROUND_SHARE = 0.015


def scale_variance_coefficients(get, use):
    """Variance of each pixel's calibrated energy, a + b E + c E^2 (keV^2), from its line fit's covariance.

    The calibration fits E = g x + c0 (x the centroid in ADU) by weighted least squares with
    weights 1 / ((g dx)^2 + s^2) (s the systematic term); the variance of the fitted energy
    at x is (S x^2 - 2 S_x x + S_xx) / (S S_xx - S_x^2) with S, S_x, S_xx the weighted sums,
    and x = (E - c0) / g makes it a quadratic in E.

    Parameters
    ----------
    get : callable
        ``get(name)`` returns a calibration map or None (gradients, intercepts,
        centroids_adu and centroid_err_adu (rows, cols, lines), residuals_kev (finite for
        the lines used), parameters).
    use : ndarray (rows, cols) of bool

    Returns
    -------
    ndarray (n_used, 3) of (a, b, c), or None when the calibration lacks the centroids
    (files written without them).
    """
    mu, mu_err, resid = get("centroids_adu"), get("centroid_err_adu"), get("residuals_kev")
    if mu is None or mu_err is None or resid is None or np.ndim(mu) != 3:
        return None
    params = get("parameters") or {}
    s_kev = float(params.get("systematic_kev", DEFAULT_SYSTEMATIC_KEV)) if isinstance(params, dict) else \
        DEFAULT_SYSTEMATIC_KEV
    g = np.asarray(get("gradients"), np.float64)[use]
    c0 = np.asarray(get("intercepts"), np.float64)[use]
    lines = np.isfinite(np.asarray(resid, np.float64)[use])
    x = np.where(lines, np.asarray(mu, np.float64)[use], 0.0)
    dx = np.where(lines, np.asarray(mu_err, np.float64)[use], 1.0)
    w = np.where(lines, 1.0 / ((g[:, None] * dx) ** 2 + s_kev ** 2), 0.0)
    s, sx, sxx = w.sum(1), (w * x).sum(1), (w * x * x).sum(1)
    det = s * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        # (S x^2 - 2 S_x x + S_xx) / det with x = (E - c0) / g
        quad = s / (g * g) / det
        lin = (-2.0 * c0 * s / (g * g) - 2.0 * sx / g) / det
        const = (s * c0 * c0 / (g * g) + 2.0 * sx * c0 / g + sxx) / det
    out = np.stack([const, lin, quad], axis=1)
    bad = ~np.all(np.isfinite(out), axis=1) | (det <= 0)
    out[bad] = 0.0
    return out


def _raw_photopeak(response, sigma_kev, edges_kev):
    """Expected share of a raw pixel's 59.54 keV photopeak in each bin of ``edges_kev``: noise and the
    charge its neighbours take (no discrimination in the raw frames the calibration histograms)."""
    import dataclasses
    e = AM241_PHOTOPEAK_KEV
    # a threshold above any share: no neighbour is seen, so every event keeps its own charge
    raw = dataclasses.replace(response, threshold_kev=e + 10.0, threshold_samples_kev=(e + 10.0,),
                              previous_hit_probability=0.0)
    loss, dens, _ = raw.sharing(e, 0.001)
    near = loss < 10.0
    w, q = dens[near] * 0.001, loss[near]
    hi = ndtr((edges_kev[1:, None] - e + q[None, :]) / sigma_kev)
    lo = ndtr((edges_kev[:-1, None] - e + q[None, :]) / sigma_kev)
    return ((hi - lo) * w[None, :]).sum(axis=1)


def photopeak_fit_ratio(response, sigma_kev, gradient_kev_per_adu, photopeak_counts, replicas=_REPLICAS, seed=5):
    """Root mean square of (fitted / true) photopeak sigma for a pixel of noise ``sigma_kev`` (module docstring).

    Replicas of the raw photopeak (Poisson, ``photopeak_counts`` counts, a flat background)
    in 1-ADU bins over the calibration's photopeak window are fitted with the calibration's
    own Gaussian-plus-tail Poisson fit (hexspec.calibration.am241.linefit), so the ratio holds
    both the sharing broadening and that fit's low-count bias. ``photopeak_counts`` None:
    the noiseless expectation only (the broadening).
    """
    # the calibration's own fit and window, so that the bias computed is the one it has
    from .calibration.am241.linefit import _PHOTOPEAK_WINDOW_KEV, N_PAR, _is_measurement, _start_and_bounds, \
        fit_line_window
    g = float(gradient_kev_per_adu)
    e = AM241_PHOTOPEAK_KEV
    scale = max(1.0, FWHM_PER_SIGMA * sigma_kev / 0.8)          # the fit's window widens with the photopeak
    lo_adu = (scale * _PHOTOPEAK_WINDOW_KEV[0]) / g
    hi_adu = (scale * _PHOTOPEAK_WINDOW_KEV[1]) / g
    edges_adu = np.arange(math.floor(lo_adu) - 0.5, math.ceil(hi_adu) + 0.5 + 1e-9, 1.0)
    share = _raw_photopeak(response, sigma_kev, e + edges_adu * g)
    n = 1e7 if photopeak_counts is None else float(photopeak_counts)
    # the calibration's photopeak counts are its Gaussian and tail, which fill the window
    expected = n * share / share.sum() + _WINDOW_BACKGROUND_SHARE * n / share.size
    rng = np.random.default_rng(seed)
    ratios = []
    for k in range(1 if photopeak_counts is None else int(replicas)):
        counts = expected if photopeak_counts is None else rng.poisson(expected).astype(np.float64)
        par, lo, hi, err = (np.empty(N_PAR) for _ in range(4))
        _start_and_bounds(edges_adu, counts, counts.sum(), True, 0.0, sigma_kev / g, par, lo, hi)
        ok, _ = fit_line_window(edges_adu, counts, par, lo, hi, np.ones(N_PAR, np.bool_), True, 200, err)
        if ok and _is_measurement(par, err, lo, hi, edges_adu):
            ratios.append(par[5] * g / sigma_kev)
    if not ratios:
        return 1.0
    return float(np.sqrt(np.mean(np.square(ratios))))


def noise_and_scale_samples(response, fwhm_kev, variance_coefficients, gradient_kev_per_adu, photopeak_counts,
                            n_samples, energy_kev=100.0):
    """Representative pixels of a calibration for the response's line-shape mixture.

    The pixels are sorted by their total width at ``energy_kev`` (noise, after dividing the
    calibration's FWHM by :func:`photopeak_fit_ratio`, plus the energy-scale variance) and
    split into ``n_samples`` equal groups; each group gives its mean noise variance and mean
    variance coefficients, which keeps the mixture's second moment at every energy.

    Returns
    -------
    (noise_fwhm_samples_kev, variance_samples or None, noise_fwhm_median_kev, ratio)
    """
    f = np.asarray(fwhm_kev, np.float64)
    sig_cal = float(np.median(f)) / FWHM_PER_SIGMA
    counts = None if photopeak_counts is None else float(np.median(photopeak_counts))
    # at the calibration's median width (the ratio changes little with the width)
    ratio = photopeak_fit_ratio(response, sig_cal, gradient_kev_per_adu, counts)
    noise_var = (f / FWHM_PER_SIGMA / ratio) ** 2
    coef = variance_coefficients if variance_coefficients is not None else np.zeros((f.size, 3))
    total = noise_var + coef @ np.array([1.0, energy_kev, energy_kev ** 2])
    order = np.argsort(total, kind="stable")
    groups = np.array_split(order, min(n_samples, f.size))
    noise = tuple(float(FWHM_PER_SIGMA * math.sqrt(noise_var[gr].mean())) for gr in groups)
    var = None if variance_coefficients is None else tuple(tuple(float(v) for v in coef[gr].mean(axis=0))
                                                           for gr in groups)
    return noise, var, float(np.median(f)) / ratio, ratio
