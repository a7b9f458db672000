"""Sideband background of the S-parameter: a flat continuum per pixel from beyond p_z = 7 a.u.

The flat background under the profile is taken from the energies beyond p_z = 7 a.u.
below the elastic line, with the Compton tail there from the free-atom forward model
(:mod:`hexspec.compton_forward`). The estimate is linear in the counts, so it folds into
the window-table coefficients of :mod:`.windows` and its error propagates exactly.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .kinematics import energy_from_pz
from .windows import (COUNTS_HIGH, COUNTS_LOW, COV_LOW_HIGH, N_COLUMNS, S_HIGH, S_LOW, VAR_HIGH, VAR_LOW,
                      window_coefficients)

#: Background options of the S maps: ``"sideband"`` (default of the CLI) estimates a flat
#: continuum per pixel from the energies beyond p_z = ``SIDEBAND_PZ_AU`` below the elastic line,
#: where the Compton tail comes from core electrons whose free-atom profiles are accurate.
BACKGROUNDS = ("sideband", "peak-fit", "none")
SIDEBAND_PZ_AU = 7.0
#: Upper end of the sideband below E1 (keV): the elastic line stays more than 10 sigma away.
SIDEBAND_ELASTIC_MARGIN_KEV = 3.5


def sideband_estimator(edges_kev, e1_kev, theta, high=5.0, side_pz_au=SIDEBAND_PZ_AU, resolution_fwhm_kev=0.8,
                       li_content=0.5, bins=None):
    """Linear estimator of a flat background (counts per keV) per pixel: B = beta @ counts.

    Two regions per pixel, both defined in p_z with the pixel's own angle so that they move
    with its Compton peak: C, the bins whose centres lie within |p_z| < ``high``, and H, the
    bins from p_z = ``side_pz_au`` up to E1 - 3.5 keV. Their expected counts are
    n_C = K t_C + B W_C and n_H = K t_H + B W_H, with W the widths in keV and t the
    Compton counts of the forward model (:func:`hexspec.compton_forward.templates`, free-atom
    profiles at ``li_content``; Li hardly reaches H, so the ratio t_H / t_C changes by about
    3 % over the whole range of 1 - x). Solving the pair gives B linear in the counts, so
    its Poisson error and its correlation with S_L and S_H propagate exactly.

    Why not the peak fit's linear background: the Compton profile of the core electrons is
    far wider than any fit window, so a pseudo-Voigt plus a straight line takes the profile's
    wings for background, by an amount that depends on where the peak sits in the fixed
    energy window (it moves with the scattering angle across the detector).

    Returns
    -------
    beta : ndarray (npix, nsel)
        Coefficients over the bins ``bins`` (all bins by default); rows of pixels whose
        regions are empty are NaN.
    """
    from ..compton_forward import templates   # scipy and xraylib only when a sideband is asked for

    edges = np.asarray(edges_kev, dtype=np.float64)
    idx = np.arange(edges.size - 1)[slice(None) if bins is None else bins]
    centres = 0.5 * (edges[idx] + edges[idx + 1])
    widths = edges[idx + 1] - edges[idx]
    theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
    e_lo = energy_from_pz(-high, e1_kev, theta)[:, None]
    e_hi = energy_from_pz(high, e1_kev, theta)[:, None]
    e_side = energy_from_pz(side_pz_au, e1_kev, theta)[:, None]
    in_c = (centres >= e_lo) & (centres < e_hi)
    in_h = (centres >= e_side) & (centres < e1_kev - SIDEBAND_ELASTIC_MARGIN_KEV)
    t_li, t_host = templates(edges, e1_kev, theta, resolution_fwhm_kev, bins=bins)
    t = li_content * t_li + t_host
    t_c, t_h = (t * in_c).sum(axis=1), (t * in_h).sum(axis=1)
    w_c, w_h = (widths * in_c).sum(axis=1), (widths * in_h).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = w_h * t_c - w_c * t_h
        beta = (t_c / det)[:, None] * in_h - (t_h / det)[:, None] * in_c
    beta[~(np.abs(det) > 0) | (w_h <= 0)] = np.nan
    return beta


def sideband_table(cube, e1_kev, theta_safe, low, high, factor, resolution_fwhm_kev, li_content):
    """The window table (:mod:`.windows` columns) of every pixel with the sideband background subtracted."""
    rows, cols = cube.shape
    npix = rows * cols
    edges = np.ascontiguousarray(cube.edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    e_min = float(np.min(energy_from_pz(-high, e1_kev, theta_safe))) - 1.0
    sel = np.flatnonzero((centres >= e_min) & (centres < e1_kev - SIDEBAND_ELASTIC_MARGIN_KEV))
    if sel.size < 4:
        raise ConfigError(f"sideband background: the cube's bins do not cover {e_min:.1f}-{e1_kev - SIDEBAND_ELASTIC_MARGIN_KEV:.1f} keV")
    j0, m = int(sel[0]), int(sel[-1] - sel[0] + 1)
    bins = slice(j0, j0 + m)
    cl, ch, fl, fh = (np.zeros((npix, m)) for _ in range(4))
    window_coefficients(edges, theta_safe, float(e1_kev), float(low), float(high), factor == "impulse", j0,
                        cl, ch, fl, fh)
    beta = sideband_estimator(edges, e1_kev, theta_safe, high, resolution_fwhm_kev=resolution_fwhm_kev,
                              li_content=li_content, bins=bins)
    widths = np.diff(edges)[bins]
    # net = n - B dE with B = beta @ n: S = (c - (c @ dE) beta) @ n, linear in the counts
    cl_net = cl - (cl @ widths)[:, None] * beta
    ch_net = ch - (ch @ widths)[:, None] * beta
    n = cube.counts.reshape(npix, -1)[:, bins].astype(np.float64)
    out = np.empty((npix, N_COLUMNS))
    out[:, S_LOW] = np.sum(cl_net * n, axis=1)
    out[:, S_HIGH] = np.sum(ch_net * n, axis=1)
    out[:, VAR_LOW] = np.sum(cl_net * cl_net * n, axis=1)
    out[:, VAR_HIGH] = np.sum(ch_net * ch_net * n, axis=1)
    out[:, COV_LOW_HIGH] = np.sum(cl_net * ch_net * n, axis=1)
    out[:, COUNTS_LOW] = np.sum(fl * n, axis=1)
    out[:, COUNTS_HIGH] = np.sum(fh * n, axis=1)
    out[~np.all(np.isfinite(beta), axis=1)] = np.nan
    return out


