"""The good-pixel criteria: one reason bit per way a pixel can fail (result.REASONS)."""

from __future__ import annotations

import numpy as np

from .result import (DEAD, FIT_FAILED, FWHM_TOO_LARGE, GRADIENT_OUTLIER, HOT, LARGE_RESIDUAL, LOW_COUNTS,
                     NO_PHOTOPEAK, TOO_FEW_LINES)


def pixel_reasons(signal, noise_sigma, found, photo_ok, photopeak_counts, calibrated, use, g, g_fallback, fwhm,
                  resid, *, dead_fraction, hot_factor, noisy_factor, min_peak_counts, min_lines, max_fwhm_kev,
                  gradient_tolerance, max_residual_kev):
    """OR of reason bits per pixel (npix,) uint16; 0 for a good pixel. Arguments are per pixel (npix,)
    or per pixel and line (npix, nlines); the keywords are those of calibrate_am241."""
    npix = signal.shape[0]
    reasons = np.zeros(npix, np.uint16)
    med_signal = float(np.median(signal)) if npix else 0.0
    reasons[signal < dead_fraction * med_signal] |= DEAD
    reasons[(signal == 0)] |= DEAD
    reasons[signal > hot_factor * max(med_signal, 1.0)] |= HOT
    ns_ok = np.isfinite(noise_sigma)
    if np.any(ns_ok):
        reasons[ns_ok & (noise_sigma > noisy_factor * np.median(noise_sigma[ns_ok]))] |= HOT
    reasons[~found] |= NO_PHOTOPEAK
    reasons[found & ~photo_ok] |= FIT_FAILED
    reasons[photo_ok & (photopeak_counts < min_peak_counts)] |= LOW_COUNTS
    # two lines always lie on a straight line: a third is needed to check the line identification
    reasons[photo_ok & (~calibrated | (use.sum(1) < min_lines))] |= TOO_FEW_LINES
    reasons[calibrated & ~(fwhm <= max_fwhm_kev)] |= FWHM_TOO_LARGE
    if np.any(calibrated):
        g_ref = np.median(g[calibrated & (reasons == 0)]) if np.any(calibrated & (reasons == 0)) else g_fallback
        reasons[calibrated & (np.abs(g / g_ref - 1.0) > gradient_tolerance)] |= GRADIENT_OUTLIER
    with np.errstate(invalid="ignore"):
        big = np.nanmax(np.where(use, np.abs(resid), 0.0), axis=1) > max_residual_kev
    reasons[calibrated & big] |= LARGE_RESIDUAL
    return reasons
