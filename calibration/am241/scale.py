"""Stage 4: the energy scale of every pixel, a weighted straight line (optionally
quadratic) of line energy against fitted centroid, with one pass of rejecting the worst line."""

from __future__ import annotations

import numpy as np


def _line_fit(energy_kev, x_adu, xerr_adu, use, systematic_kev):
    """Weighted E = g x + c per pixel; errors-in-x through g, two passes.

    energy_kev (L,), x_adu/xerr_adu/use (P, L). Returns g, c, g_err, c_err (P,).
    """
    e = np.broadcast_to(energy_kev, x_adu.shape)
    x = np.where(use, x_adu, 0.0)
    g = np.full(x.shape[0], np.nan)
    c = np.full(x.shape[0], np.nan)
    g_err = np.full(x.shape[0], np.nan)
    c_err = np.full(x.shape[0], np.nan)
    # first pass: gradient from the two strongest lines' spread to set the weights
    gw = np.nanmedian(np.where(use[:, :1], energy_kev[0] / np.where(x_adu[:, :1] > 0, x_adu[:, :1], np.nan), np.nan))
    gp = np.full(x.shape[0], gw if np.isfinite(gw) else 1.0)
    for _ in range(2):
        var = (gp[:, None] * np.where(use, xerr_adu, 1.0)) ** 2 + systematic_kev ** 2
        w = np.where(use, 1.0 / var, 0.0)
        s = w.sum(1)
        sx = (w * x).sum(1)
        sy = (w * e).sum(1)
        sxx = (w * x * x).sum(1)
        sxy = (w * x * e).sum(1)
        det = s * sxx - sx * sx
        okd = (use.sum(1) >= 2) & (det > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(okd, (s * sxy - sx * sy) / det, np.nan)
            c = np.where(okd, (sxx * sy - sx * sxy) / det, np.nan)
            g_err = np.where(okd, np.sqrt(s / det), np.nan)
            c_err = np.where(okd, np.sqrt(sxx / det), np.nan)
        gp = np.where(np.isfinite(g) & (g > 0), g, gp)
    return g, c, g_err, c_err


def _quadratic_fit(energy_kev, x_adu, xerr_adu, use, gradient, systematic_kev):
    """Weighted E = q x^2 + g x + c per pixel (needs three lines); returns q (P,)."""
    e = np.broadcast_to(energy_kev, x_adu.shape)
    x = np.where(use, x_adu, 0.0)
    gp = np.where(np.isfinite(gradient), gradient, 0.0)
    w = np.where(use, 1.0 / ((gp[:, None] * np.where(use, xerr_adu, 1.0)) ** 2 + systematic_kev ** 2), 0.0)
    basis = np.stack([x * x, x, np.ones_like(x)], axis=-1)          # (P, L, 3)
    ata = np.einsum("pl,pli,plj->pij", w, basis, basis)
    aty = np.einsum("pl,pli,pl->pi", w, basis, e)
    q = np.full(x.shape[0], np.nan)
    ok = use.sum(1) >= 3
    ok &= np.abs(np.linalg.det(np.where(ok[:, None, None], ata, np.eye(3)))) > 0
    if np.any(ok):
        sol = np.linalg.solve(ata[ok], aty[ok][..., None])[..., 0]
        q[ok] = sol[:, 0]
    return q


def fit_scale(line_kev, mu, mu_err, use, systematic_kev, quadratic=False):
    """E = g ADU + c per pixel from the fitted centroids ``mu`` (npix, nlines) of the lines in ``use``.

    A line far off the first line (pull > 5 and more than 0.15 keV) is dropped once,
    never the photopeak, which anchors the scale. ``use`` is updated in place.

    Returns
    -------
    (g, c, g_err, c_err, residuals_kev (npix, nlines; NaN where unused), q or None)
    """
    npix = mu.shape[0]
    g, c, g_err, c_err = _line_fit(line_kev, mu, mu_err, use, systematic_kev)
    with np.errstate(invalid="ignore"):
        resid = line_kev[None, :] - (g[:, None] * mu + c[:, None])
        pull = np.abs(resid) / np.sqrt((g[:, None] * mu_err) ** 2 + systematic_kev ** 2)
    pull = np.where(use, pull, 0.0)
    pull[:, 0] = 0.0   # the photopeak anchors the scale and is never dropped
    worst = np.argmax(pull, axis=1)
    drop = (pull[np.arange(npix), worst] > 5.0) & (np.abs(resid[np.arange(npix), worst]) > 0.15) & (use.sum(1) > 2)
    if np.any(drop):
        use[np.nonzero(drop)[0], worst[drop]] = False
        g, c, g_err, c_err = _line_fit(line_kev, mu, mu_err, use, systematic_kev)
    with np.errstate(invalid="ignore"):
        resid = np.where(use, line_kev[None, :] - (g[:, None] * mu + c[:, None]), np.nan)
    q = _quadratic_fit(line_kev, mu, mu_err, use, g, systematic_kev) if quadratic else None
    return g, c, g_err, c_err, resid, q
