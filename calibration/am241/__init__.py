"""Per-pixel energy calibration against an Am-241 source.

From a cube of per-pixel spectra in ADU (``SpectralCube`` with unit "ADU") this module
finds, for every pixel, the linear map E = ADU * gradient + intercept (PHYSICS.md 5),
the energy resolution (FWHM at 59.54 keV), a good-pixel mask with the reason for each
rejection, and a threshold suggestion from the noise edge.

Stages, all vectorised over pixels (serial nogil numba kernels run on pixel blocks in
threads, which compile several seconds faster than a ``parallel=True`` kernel), one
module each, called in order by :func:`calibrate_am241`:

1. Locate the 59.54 keV photopeak in each pixel: the highest-energy peak of the
   smoothed spectrum that is at least ``strong_fraction`` of the tallest structure
   below it. Smoothing is proportional to ADU, so a gain spread of +-20 % changes
   nothing, and the noise peak near 0 ADU never competes (it lies below
   ``0.18 x`` the photopeak position, where the search does not look).
2. Find the zero offset: with the photopeak fixed, scan the intercept and score how
   well the weaker lines (26.34 keV and the Np L lines) land on structures of the
   smoothed spectrum; the median over pixels narrows a second, per-pixel scan.
3. Fit each line in its window by Poisson maximum likelihood (Levenberg-Marquardt
   with Fisher scoring, hand-written in numba because lmfit per pixel takes about a
   minute for the photopeaks alone of 6,400 pixels; benchmarks/bench_am241.py). The
   photopeak model is a Gaussian plus a
   low-energy exponential tail convolved with the same Gaussian (incomplete hole
   collection in CdTe/CdZnTe) on a linear background; the weaker lines are Gaussians
   on a linear background. Models are integrated exactly over each bin (CDF
   differences), so coarse bins do not bias widths. Pixels with few photopeak counts
   are refitted with the tail share and length of the well-exposed pixels.
4. Weighted straight line (optionally quadratic) of line energy against fitted
   centroid; residuals per line. FWHM at 59.54 keV = 2 sqrt(2 ln 2) sigma * gradient.
5. Good-pixel criteria with reason bits, and the threshold suggestion
   mu_noise + k sigma_noise from a Gaussian fit to the falling flank of the noise peak
   (or, where the readout clips the noise away, zero energy + k photopeak sigma).

====================  ============================================================
module                stage
====================  ============================================================
``locate``            1-2, photopeak and zero offset (``locate_photopeaks``)
``linefit``           3, line fits (``fit_lines``, ``usable_lines``); ``lineshape`` the models
``scale``             4, straight line / quadratic (``fit_scale``)
``noise``             5, noise edge and threshold (``noise_threshold``)
``reasons``           5, good-pixel criteria (``pixel_reasons``)
``result``            EnergyCalibration and the reason bits
====================  ============================================================

Raw frames and events become ADU cubes in :mod:`hexspec.spectra` (``cube_from_frames``,
``cube_from_events``, ``FrameSpectra``), re-exported here.
"""

from __future__ import annotations

import numpy as np

from ...cube import SpectralCube
from ...errors import CalibrationError, ConfigError
from ...spectra import DEFAULT_BIN_WIDTH_ADU, FrameSpectra, _auto_max_adu, _histogram_frames, cube_from_events, cube_from_frames
from ..lines import AM241_CALIBRATION_LINES
from .blocks import as_kernel_counts, in_blocks
from .linefit import (_LINE_WINDOW_KEV, _PHOTOPEAK_WINDOW_KEV, _WINDOWS_KEV, N_PAR, _clamp, _fit_kernel,
                      fit_line_window, fit_lines, usable_lines)
from .lineshape import _components, _deviance, _exp_erfc, _model, _shape_cdfs
from .locate import _interp, _locate_kernel, _smooth, _smoothing_matrix, locate_photopeaks
from .noise import _counts_above, _noise_kernel, noise_threshold
from .reasons import pixel_reasons
from .result import (ADC_MAX_ADU, DEAD, FIT_FAILED, FWHM_PER_SIGMA, FWHM_TOO_LARGE, GRADIENT_OUTLIER, HOT,
                     LARGE_RESIDUAL, LOW_COUNTS, NO_PHOTOPEAK, REASONS, TOO_FEW_LINES, EnergyCalibration)
from .scale import _line_fit, _quadratic_fit, fit_scale

# former private names, for code that reached into the single module
_in_blocks, _as_kernel_counts = in_blocks, as_kernel_counts


def calibrate_am241(cube_adu, *, lines=AM241_CALIBRATION_LINES, quadratic: bool = False,
                    fit_tail: bool = True, min_peak_counts: float = 100.0, min_line_counts: float = 20.0,
                    max_fwhm_kev: float = 2.0, gradient_tolerance: float = 0.3, max_residual_kev: float = 0.5,
                    dead_fraction: float = 0.1, hot_factor: float = 3.0, noisy_factor: float = 3.0,
                    threshold_sigmas: float = 5.0, strong_fraction: float = 0.25, smoothing: float = 0.008,
                    systematic_kev: float = 0.02, max_iter: int = 200, free_tail_min_counts: float = 1000.0,
                    min_lines: int = 3,
                    threads=None) -> EnergyCalibration:
    """Calibrate every pixel against the lines of an Am-241 source.

    Parameters
    ----------
    cube_adu : SpectralCube
        Per-pixel spectra in ADU (``unit == "ADU"``), counts (rows, cols, nbins). Bins of
        about a third of the photopeak sigma or finer are best (4 ADU for HEXITEC);
        coarser bins work but cost precision.
    lines : sequence of Line
        Calibration lines, the 59.54 keV photopeak first (``lines.AM241_CALIBRATION_LINES``:
        59.54, 26.34 and the Np L-gamma, L-beta, L-alpha lines).
    quadratic : bool
        Also fit E = q ADU^2 + g' ADU + c' and return q (``EnergyCalibration.quadratic``).
    fit_tail : bool
        Fit the photopeak's low-energy tail (hole trapping); False fits a plain Gaussian.
    min_peak_counts : float
        Fewer photopeak counts than this flags LOW_COUNTS.
    min_line_counts : float
        A weaker line needs this many fitted counts to be used.
    max_fwhm_kev : float
        Photopeak FWHM above this flags FWHM_TOO_LARGE.
    gradient_tolerance : float
        A gradient further than this fraction from the median flags GRADIENT_OUTLIER.
    max_residual_kev : float
        A line further than this from the straight line flags LARGE_RESIDUAL.
    dead_fraction, hot_factor : float
        Counts above the noise region below ``dead_fraction`` or above ``hot_factor``
        times the median flag DEAD or HOT.
    noisy_factor : float
        Noise sigma above this many times the median also flags HOT.
    threshold_sigmas : float
        Threshold suggestion = noise centre + this many noise sigmas (ADU).
    strong_fraction : float
        The photopeak must reach this fraction of the tallest smoothed structure below it.
    smoothing : float
        Relative sigma of the smoothing used to find peaks (0.008 = 0.8 % of the ADU value).
    systematic_kev : float
        Added in quadrature to each line's centroid error in the straight-line fit (keV).
    max_iter : int
        Iteration limit of each line fit.
    min_lines : int
        Fewer lines on the straight line flag TOO_FEW_LINES (two lines calibrate the pixel
        but cannot check that the right peaks were taken).
    free_tail_min_counts : float
        Photopeaks with fewer counts (or whose free fit failed) are refitted with the
        tail share and length fixed at the median of the pixels above this, when there
        are at least 10 of those.
    threads : int, optional
        Worker threads for the per-pixel kernels (default: the number of CPUs, at most 8).

    Returns
    -------
    EnergyCalibration

    Raises
    ------
    CalibrationError
        If the cube is not in ADU, or no pixel shows an Am-241 photopeak.
    """
    if not isinstance(cube_adu, SpectralCube):
        raise ConfigError(f"calibrate_am241: expected a SpectralCube in ADU, found {type(cube_adu).__name__}; "
                          "use cube_from_frames or cube_from_events first")
    if str(cube_adu.unit).upper() != "ADU":
        raise CalibrationError(f"calibrate_am241: expected spectra in ADU, found unit {cube_adu.unit!r}")
    lines = tuple(lines)
    if len(lines) < 2:
        raise ConfigError(f"calibrate_am241: expected at least two calibration lines, found {len(lines)}")
    line_kev = np.array([ln.energy_kev for ln in lines], np.float64)
    rows, cols = cube_adu.shape
    counts = as_kernel_counts(cube_adu.counts.reshape(rows * cols, -1))
    edges = np.ascontiguousarray(cube_adu.edges, np.float64)

    found, peak, offset, g0, c_med = locate_photopeaks(counts, edges, line_kev, strong_fraction, smoothing, threads)
    if not np.any(found):
        raise CalibrationError(
            f"calibrate_am241: no pixel of the {rows} x {cols} cube shows an Am-241 photopeak "
            f"({int(counts.sum()) if counts.dtype.kind != 'f' else float(counts.sum()):g} counts over "
            f"{edges[0]:g}-{edges[-1]:g} ADU)")
    par, err, ok, tie = fit_lines(counts, edges, found, peak, g0, offset, line_kev, fit_tail, max_iter,
                                  free_tail_min_counts, threads)
    use = usable_lines(par, ok, min_line_counts)
    mu, mu_err, sigma_adu = par[:, :, 4], err[:, :, 4], par[:, :, 5]
    area, photo_ok = par[:, :, 0] + par[:, :, 1], ok[:, 0]
    g, c, g_err, c_err, resid, q = fit_scale(line_kev, mu, mu_err, use, systematic_kev, quadratic)

    fwhm = np.where(photo_ok, FWHM_PER_SIGMA * sigma_adu[:, 0] * g, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        fwhm_err = np.where(photo_ok, fwhm * np.hypot(err[:, 0, 5] / sigma_adu[:, 0], g_err / g), np.nan)
        tail_fraction = np.where(photo_ok, par[:, 0, 1] / area[:, 0], np.nan)
        tail_length_kev = np.where(photo_ok & (par[:, 0, 1] > 0), par[:, 0, 6] * g, np.nan)
    threshold, from_noise, noise_sigma, signal, calibrated = noise_threshold(
        counts, edges, line_kev, g, c, g0, c_med, sigma_adu[:, 0], photo_ok, threshold_sigmas)
    g_med = float(np.median(g[calibrated])) if np.any(calibrated) else float(np.nanmedian(g0))
    reasons = pixel_reasons(signal, noise_sigma, found, photo_ok, area[:, 0], calibrated, use, g, g_med, fwhm, resid,
                            dead_fraction=dead_fraction, hot_factor=hot_factor, noisy_factor=noisy_factor,
                            min_peak_counts=min_peak_counts, min_lines=min_lines, max_fwhm_kev=max_fwhm_kev,
                            gradient_tolerance=gradient_tolerance, max_residual_kev=max_residual_kev)

    shape2, nl = (rows, cols), line_kev.size
    nan_unused = lambda a: np.where(use, a, np.nan).reshape(rows, cols, nl)   # noqa: E731
    params = dict(lines=[(ln.name, float(ln.energy_kev)) for ln in lines], quadratic=bool(quadratic),
                  fit_tail=bool(fit_tail), min_peak_counts=min_peak_counts, min_line_counts=min_line_counts,
                  max_fwhm_kev=max_fwhm_kev, gradient_tolerance=gradient_tolerance,
                  max_residual_kev=max_residual_kev, dead_fraction=dead_fraction, hot_factor=hot_factor,
                  noisy_factor=noisy_factor, threshold_sigmas=threshold_sigmas, strong_fraction=strong_fraction,
                  smoothing=smoothing, systematic_kev=systematic_kev, free_tail_min_counts=free_tail_min_counts, min_lines=min_lines,
                  tied_tail=None if tie is None else {"share": tie[0], "beta_per_sigma": tie[1]})
    return EnergyCalibration(
        gradients=np.where(calibrated, g, 0.0).reshape(shape2),
        intercepts=np.where(calibrated, c, 0.0).reshape(shape2),
        fwhm_kev=np.where(calibrated, fwhm, np.nan).reshape(shape2),
        good=(reasons == 0).reshape(shape2),
        reasons=reasons.reshape(shape2),
        threshold_adu=threshold.reshape(shape2),
        threshold_from_noise_peak=from_noise.reshape(shape2),
        gradient_err=g_err.reshape(shape2),
        intercept_err=c_err.reshape(shape2),
        fwhm_err_kev=np.where(calibrated, fwhm_err, np.nan).reshape(shape2),
        line_energies_kev=line_kev,
        centroids_adu=nan_unused(mu),
        centroid_err_adu=nan_unused(mu_err),
        residuals_kev=resid.reshape(rows, cols, nl),
        photopeak_counts=np.where(photo_ok, area[:, 0], np.nan).reshape(shape2),
        tail_fraction=tail_fraction.reshape(shape2),
        noise_sigma_adu=noise_sigma.reshape(shape2),
        signal_counts=signal.reshape(shape2),
        quadratic=None if q is None else q.reshape(shape2),
        parameters=params,
        tail_length_kev=tail_length_kev.reshape(shape2),
    )


def calibrated_spectrum(cube_adu, calibration: EnergyCalibration, bins=None, mask=None):
    """Sum of the pixel spectra of ``cube_adu`` after each is put on the keV scale.

    Each ADU bin's counts go to the keV bin holding its calibrated centre. Bins below the
    pixel's threshold suggestion, and a first bin starting at 0 ADU (the zero readings of
    a frame histogram), are left out.

    Parameters
    ----------
    cube_adu : SpectralCube in ADU
    calibration : EnergyCalibration
    bins : EnergyBins, optional
        keV bins (default 0-100 keV in 0.1 keV).
    mask : ndarray bool (rows, cols), optional
        Pixels to include (default: the good pixels).

    Returns
    -------
    (edges_kev (n + 1,), counts (n,) float64)
    """
    from ...bins import EnergyBins
    bins = bins or EnergyBins(0.0, 100.0, 0.1)
    mask = calibration.good if mask is None else np.asarray(mask, bool)
    centers = cube_adu.centers
    g = calibration.gradients[mask]
    c = calibration.intercepts[mask]
    counts = cube_adu.counts[mask]
    # Readings at or below the pixel's threshold suggestion are noise or empty frames
    # (a frame histogram holds every zero reading in its first bin), not photons.
    threshold = np.nan_to_num(calibration.threshold_adu[mask], nan=0.0)
    total = np.zeros(bins.n)
    for start in range(0, g.size, 2048):   # bounded memory on large detectors
        part = slice(start, start + 2048)
        e = g[part, None] * centers[None, :] + c[part, None]
        keep = cube_adu.edges[None, :-1] >= np.maximum(threshold[part, None], cube_adu.edges[1] if cube_adu.edges[0] <= 0 else -np.inf)
        total += np.histogram(e.ravel(), bins=bins.edges, weights=np.where(keep, counts[part], 0).ravel())[0]
    return bins.edges, total
