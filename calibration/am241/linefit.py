"""Stage 3: fit each line in its window by Poisson maximum likelihood.

The bounded Poisson Levenberg-Marquardt of hexspec.lm (Fisher scoring), with this
line model and its Jacobian, in numba because lmfit per pixel takes about a minute for
the photopeaks alone of 6,400 pixels (benchmarks/bench_am241.py).
Pixels with few photopeak counts are refitted with the tail share and length of the
well-exposed pixels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ... import lm
from .blocks import in_blocks
from .lineshape import _components, _model

# Line-fit windows in keV around each line (low, high offsets) for a 0.8 keV FWHM
# detector; they widen in proportion when the measured photopeak is broader. The
# photopeak window reaches further down to hold its low-energy tail.
_PHOTOPEAK_WINDOW_KEV = (-5.0, 2.5)
_LINE_WINDOW_KEV = (-1.0, 1.0)
# The 26.34 keV window stops short of Te K-alpha (27.2-27.47 keV), which fluorescence
# between neighbouring pixels can put into the spectrum.
_WINDOWS_KEV = {26.3446: (-1.0, 0.75)}


# Parameter layout of every line fit:
#   0 A_gauss (counts), 1 A_tail (counts), 2 and 3 background at the window's low and
#   high edges (counts/ADU), 4 mu (ADU), 5 sigma (ADU), 6 beta (tail decay length, ADU).
N_PAR = 7


@njit(cache=True, nogil=True)
def _clamp(p, lo, hi, tie_share, tie_beta_per_sigma):
    for k in range(N_PAR):
        if p[k] < lo[k]:
            p[k] = lo[k]
        elif p[k] > hi[k]:
            p[k] = hi[k]
    # a tied tail keeps a fixed share of the Gaussian's counts and a fixed length in sigmas
    if tie_share >= 0.0:
        p[1] = tie_share * p[0]
    if tie_beta_per_sigma > 0.0:
        p[6] = tie_beta_per_sigma * p[5]


@njit(cache=True, nogil=True)
def _line_model(p, data, slot, f):
    """Counts per bin of one line at p (lm model protocol); the bin integrals are kept in ``slot``."""
    edges, wcol, qcol, gbuf, tbuf, m2, ptrial, with_tail = data
    _components(edges, p[4], p[5], p[6], with_tail, gbuf[slot], tbuf[slot])
    _model(p, gbuf[slot], tbuf[slot], wcol, qcol, f)


@njit(cache=True, nogil=True)
def _line_jacobian(p, data, slot, free, tie_src, tie_ratio, f, jac):
    """d counts / d p of one line: amplitudes and background exactly (they enter linearly),
    the three shape parameters by forward differences (a tied tail length moves with sigma)."""
    edges, wcol, qcol, gbuf, tbuf, m2, ptrial, with_tail = data
    gcol = gbuf[slot]
    tcol = tbuf[slot]
    n = f.shape[0]
    for q in range(N_PAR):
        if not free[q]:
            continue
        if q == 0:
            # a tied tail amplitude (share x A_gauss) moves with A_gauss
            share = tie_ratio[1] if (tie_src[1] == 0 and tie_ratio[1] > 0.0) else 0.0
            for j in range(n):
                jac[0, j] = gcol[j] + share * tcol[j]
        elif q == 1:
            for j in range(n):
                jac[1, j] = tcol[j]
        elif q == 2:
            for j in range(n):
                jac[2, j] = wcol[j]
        elif q == 3:
            for j in range(n):
                jac[3, j] = qcol[j]
        else:
            h = 1e-6 * max(abs(p[q]), p[5])
            for qq in range(N_PAR):
                ptrial[qq] = p[qq]
            ptrial[q] += h
            lm.apply_ties(ptrial, tie_src, tie_ratio)
            _components(edges, ptrial[4], ptrial[5], ptrial[6], with_tail, gbuf[2], tbuf[2])
            _model(ptrial, gbuf[2], tbuf[2], wcol, qcol, m2)
            for j in range(n):
                jac[q, j] = (m2[j] - f[j]) / h


_lm_line = lm.make_lm(_line_model, _line_jacobian)

#: The Levenberg-Marquardt settings of the line fits (hexspec.lm): Poisson deviance with
#: Fisher scoring (weights 1/max(m, 1e-3)), at most 12 trial steps per iteration; done
#: when the deviance falls by less than 1e-3 (it is chi-square-like: smaller changes carry
#: no information) and the centre and width move by less than 1e-4 sigma.
LINE_FIT_SETTINGS = lm.LMSettings(ml=True, weight_floor=1e-3, deviance_floor=1e-12, lam0=1e-3, lam_down=0.2,
                                  lam_min=1e-7, lam_up=8.0, lam_up_singular=10.0, lam_max=np.inf, max_tries=12,
                                  damping_eps=1e-30, ftol_abs=1e-3, ftol_rel=0.0, xtol=1e-4,
                                  converge_needs_both=True, xtol_reject=0.0, final_jacobian=False)
# the step size of mu and sigma is measured in sigmas; the other parameters do not decide convergence
_XSCALE_REF = np.array([-2, -2, -2, -2, 5, 5, -2], np.int64)
# mu and sigma get errors even on a bound; the tail length none without a tail
_ERR_ON_BOUND_OK = np.array([False, False, False, False, True, True, False])
_ERR_NEEDS_OFF_LO = np.array([-1, -1, -1, -1, -1, -1, 1], np.int64)


@njit(cache=True, nogil=True)
def _background_columns(edges):
    """Bin integrals of the two background levels (low edge, high edge) of a window.

    Background b_low (1 - t) + b_high t with t = (x - x_low) / (x_high - x_low): two
    non-negative levels at the window edges keep it positive everywhere inside.
    """
    n = edges.shape[0] - 1
    xl = edges[0]
    span = edges[-1] - edges[0]
    wcol = np.empty(n)
    qcol = np.empty(n)
    for j in range(n):
        t0 = (edges[j] - xl) / span
        t1 = (edges[j + 1] - xl) / span
        qcol[j] = 0.5 * (t1 * t1 - t0 * t0) * span
        wcol[j] = (edges[j + 1] - edges[j]) - qcol[j]
    return wcol, qcol


@njit(cache=True, nogil=True)
def fit_line_window(edges, counts, p, lo, hi, active, with_tail, max_iter, perr, tie_share=-1.0,
                    tie_beta_per_sigma=-1.0):
    """Poisson maximum-likelihood fit of one line in one window (the shared Levenberg-Marquardt, hexspec.lm).

    Parameters
    ----------
    edges : float64 (n + 1,)
        Bin edges of the window in ADU.
    counts : float64 (n,)
        Counts per bin.
    p : float64 (7,)
        Start values, overwritten with the fit (layout in the module source: A_gauss,
        A_tail, b0, b1, mu, sigma, beta).
    lo, hi : float64 (7,)
        Bounds (a fixed parameter has lo == hi or is inactive).
    active : bool (7,)
        Parameters that are fitted.
    with_tail : bool
        Whether the tail component is evaluated.
    max_iter : int
    perr : float64 (7,)
        Out: one-sigma errors from the inverse Fisher information (NaN where singular).
    tie_share, tie_beta_per_sigma : float
        When >= 0 (> 0), the tail amplitude is held at ``tie_share`` x A_gauss (the tail
        length at ``tie_beta_per_sigma`` x sigma); parameters 1 and 6 must then be
        inactive. Low-count pixels borrow the tail shape of the well-exposed ones.

    Returns
    -------
    (converged, deviance)
        Fisher scoring with weights 1/model solves the Poisson likelihood equations
        sum (n - m)/m dm/dp = 0; amplitudes and background enter linearly, so only the
        three shape parameters need finite differences (:func:`_line_jacobian`).
    """
    n = counts.shape[0]
    wcol, qcol = _background_columns(edges)
    # bin integrals of the Gaussian and the tail: two slots (accepted point, trial) and
    # a third for the finite differences
    gbuf = np.empty((3, n))
    tbuf = np.empty((3, n))
    data = (edges, wcol, qcol, gbuf, tbuf, np.empty(n), np.empty(N_PAR), with_tail)
    tie_src = np.full(N_PAR, -1, np.int64)
    tie_ratio = np.zeros(N_PAR)
    if tie_share >= 0.0:
        tie_src[1] = 0
        tie_ratio[1] = tie_share
    if tie_beta_per_sigma > 0.0:
        tie_src[6] = 5
        tie_ratio[6] = tie_beta_per_sigma
    dev, status, _ = _lm_line(counts, data, p, lo, hi, active, tie_src, tie_ratio, _XSCALE_REF, _ERR_ON_BOUND_OK,
                              _ERR_NEEDS_OFF_LO, max_iter, LINE_FIT_SETTINGS, perr)
    return status == lm.LM_CONVERGED, dev


@njit(cache=True, nogil=True)
def _start_and_bounds(ed, cn, total, tail, x0, sigma_adu, par, lo, hi):
    """Start values and bounds of one line fit: background from the window's ends, area from the rest."""
    nedge = max(2, cn.shape[0] // 8)
    bgl = 0.0
    bgh = 0.0
    for jj in range(nedge):
        bgl += cn[jj]
        bgh += cn[cn.shape[0] - 1 - jj]
    bgl = bgl / (ed[nedge] - ed[0])
    bgh = bgh / (ed[-1] - ed[ed.shape[0] - 1 - nedge])
    if tail:
        bgl = 0.3 * bgl   # the tail fills the low end of the photopeak window
    area = max(total - 0.5 * (bgl + bgh) * (ed[-1] - ed[0]), 0.5 * total)
    par[0] = area * (0.85 if tail else 1.0)
    par[1] = area * 0.15 if tail else 0.0
    par[2] = bgl
    par[3] = bgh
    par[4] = x0
    par[5] = sigma_adu
    par[6] = 2.0 * sigma_adu
    lo[0] = 0.0
    hi[0] = 10.0 * total + 10.0
    lo[1] = 0.0
    hi[1] = 10.0 * total + 10.0 if tail else 0.0
    lo[2] = 0.0
    hi[2] = 1e30
    lo[3] = 0.0
    hi[3] = 1e30
    lo[4] = ed[0]
    hi[4] = ed[-1]
    lo[5] = 0.2 * sigma_adu
    hi[5] = 5.0 * sigma_adu
    lo[6] = 0.3 * sigma_adu
    hi[6] = 30.0 * sigma_adu if tail else 0.3 * sigma_adu


@njit(cache=True, nogil=True)
def _is_measurement(par, err, lo, hi, ed):
    """False for a width pinned at a bound, a centre at the window edge, or a centre without an error."""
    if par[5] <= lo[5] * 1.0001 or par[5] >= hi[5] * 0.9999:
        return False
    if par[4] <= ed[0] + par[5] or par[4] >= ed[-1] - par[5]:
        return False
    return err[4] > 0.0


@njit(cache=True, nogil=True)
def _fit_kernel(first, last, counts, edges, peak_adu, g0, c0, line_kev, win_lo_kev, win_hi_kev, sigma0_kev, fit_tail,
                max_iter, todo, tie_share, tie_beta_per_sigma, out_par, out_err, out_ok):
    """Fit every line of the pixels in ``todo``; the photopeak (line 0) first, the others placed from it.

    With ``tie_share`` >= 0 the photopeak tail has a fixed share and length (see
    fit_line_window). out_par (npix, nlines, 7), out_err (npix, nlines, 7), out_ok (npix, nlines).
    """
    nlines = line_kev.shape[0]
    nb = counts.shape[1]
    for p in range(first, last):
        if not todo[p]:
            continue
        for i in range(nlines):
            out_ok[p, i] = False
            for q in range(N_PAR):
                out_par[p, i, q] = np.nan
                out_err[p, i, q] = np.nan
        if not (peak_adu[p] > 0.0) or not (g0[p] > 0.0):
            continue
        g = g0[p]
        c = c0[p]
        scale = 1.0   # window scale: grows with the measured photopeak width
        sigma_adu = sigma0_kev / g
        par = np.empty(N_PAR)
        err = np.empty(N_PAR)
        lo = np.empty(N_PAR)
        hi = np.empty(N_PAR)
        act = np.ones(N_PAR, np.bool_)
        for i in range(nlines):
            e = line_kev[i]
            if i == 0:
                x0 = peak_adu[p]
            else:
                x0 = (e - c) / g
            a = (e + scale * win_lo_kev[i] - c) / g
            b = (e + scale * win_hi_kev[i] - c) / g
            j0 = np.searchsorted(edges, a)
            j1 = np.searchsorted(edges, b)
            j0 = max(j0 - 1, 0)
            j1 = min(j1, nb)
            if j1 - j0 < 6:
                continue
            ed = edges[j0:j1 + 1].astype(np.float64)
            cn = counts[p, j0:j1].astype(np.float64)
            total = cn.sum()
            if total <= 0.0:
                continue
            tail = fit_tail and i == 0
            _start_and_bounds(ed, cn, total, tail, x0, sigma_adu, par, lo, hi)
            tied = tail and tie_share >= 0.0
            act[1] = tail and not tied
            act[6] = tail and not tied
            ok, dev = fit_line_window(ed, cn, par, lo, hi, act, tail, max_iter, err,
                                      tie_share if tied else -1.0, tie_beta_per_sigma if tied else -1.0)
            ok = ok and _is_measurement(par, err, lo, hi, ed)
            for q in range(N_PAR):
                out_par[p, i, q] = par[q]
                out_err[p, i, q] = err[q]
            out_ok[p, i] = ok
            if i == 0 and ok:
                # place the other lines from the fitted photopeak (keeps the scanned offset)
                g = (line_kev[0] - c) / par[4]
                sigma_adu = par[5]
                scale = max(1.0, par[5] * g / sigma0_kev)
            elif i == 0:
                break


def fit_lines(counts, edges, found, peak, g0, offset, line_kev, fit_tail, max_iter, free_tail_min_counts,
              threads=None):
    """Fit every line of every located pixel.

    Parameters
    ----------
    counts : (npix, nbins) ADU spectra; edges : (nbins + 1,) ADU
    found, peak, g0, offset : (npix,) the located photopeak (stage 1-2): whether found,
        its ADU, the first gradient (keV/ADU) and offset (keV)
    line_kev : (nlines,) line energies, the photopeak first

    Returns
    -------
    (par (npix, nlines, N_PAR), err, ok (npix, nlines), tie)
        ``tie`` is (tail share, tail length per sigma) used for the weak pixels, or None.
    """
    win_lo = np.array([_PHOTOPEAK_WINDOW_KEV[0]] + [_WINDOWS_KEV.get(e, _LINE_WINDOW_KEV)[0] for e in line_kev[1:]])
    win_hi = np.array([_PHOTOPEAK_WINDOW_KEV[1]] + [_WINDOWS_KEV.get(e, _LINE_WINDOW_KEV)[1] for e in line_kev[1:]])
    npix, nl = counts.shape[0], line_kev.size
    par = np.empty((npix, nl, N_PAR))
    err = np.empty((npix, nl, N_PAR))
    ok = np.empty((npix, nl), np.bool_)
    fit_args = (counts, edges, np.where(found, peak, np.nan), np.where(found, g0, np.nan),
                np.where(found, offset, np.nan), line_kev, win_lo, win_hi, 0.34, bool(fit_tail), int(max_iter))
    in_blocks(_fit_kernel, npix, *fit_args, np.ones(npix, np.bool_), -1.0, -1.0, par, err, ok, threads=threads)
    tie = None
    if fit_tail:
        # Pixels with few photopeak counts cannot pin a free tail (it trades off against
        # the Gaussian width); they are refitted with the median tail share and length
        # of the well-exposed pixels.
        area0 = par[:, 0, 0] + par[:, 0, 1]
        rich = ok[:, 0] & (area0 >= free_tail_min_counts) & (par[:, 0, 0] > 0)
        weak = found & (area0 < free_tail_min_counts) | (found & ~ok[:, 0])
        if np.count_nonzero(rich) >= 10 and np.any(weak):
            share = float(np.median(par[rich, 0, 1] / par[rich, 0, 0]))
            beta_per_sigma = float(np.median(par[rich, 0, 6] / par[rich, 0, 5]))
            tie = (share, beta_per_sigma)
            in_blocks(_fit_kernel, npix, *fit_args, weak, share, beta_per_sigma, par, err, ok, threads=threads)
    return par, err, ok, tie


def usable_lines(par, ok, min_line_counts):
    """(npix, nlines) mask of the fitted lines the scale may use: the photopeak where its fit
    succeeded, a weaker line where it has ``min_line_counts`` and the photopeak's width."""
    sigma_adu = par[:, :, 5]
    area = par[:, :, 0] + par[:, :, 1]
    photo_ok = ok[:, 0]
    use = ok & (area >= min_line_counts)
    use[:, 0] = photo_ok
    # a weaker line counts only if its width agrees with the photopeak's (resolved, not a blend)
    with np.errstate(invalid="ignore"):
        ratio = sigma_adu / sigma_adu[:, :1]
    use[:, 1:] &= (ratio[:, 1:] > 0.6) & (ratio[:, 1:] < 1.6)
    use &= photo_ok[:, None]
    return use
