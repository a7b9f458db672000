"""Compton profiles J(p_z) of a spectrum or of a pixel set, PHYSICS.md eq. (3).

:func:`profile` turns one spectrum into a :class:`ComptonProfile`; :func:`region_profile`
sums many pixels' profiles (each at its own angle) on common p_z bins in a numba kernel.
Both use the window weights, counts-to-J factors and per-bin backgrounds of
:mod:`.binning`, so they agree bin for bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..errors import ConfigError
from .binning import (add_window_weights, check_factor, density_factor, linear_background_counts,
                      linear_background_table, rebin_matrix, window_weights)
from .kinematics import pz_from_energy, pz_scalar, resolution_in_pz

#: Sample-attenuation correction factors of the reference work for depth regions 1, 2, 3
#: (PHYSICS.md section 1); pass one as ``attenuation_factor`` to scale S.
ATTENUATION_CORRECTION = {1: 1.015, 2: 1.010, 3: 1.005}


def _background_variance(basis, cov):
    """Per-bin variance of a subtracted background basis @ beta with cov(beta) = cov (0 without one)."""
    return np.einsum("ij,jk,ik->i", basis, cov, basis) if basis.shape[1] else 0.0


@dataclass
class ComptonProfile:
    """A Compton profile J(p_z) on p_z bins (PHYSICS.md eq. 3).

    Attributes
    ----------
    pz_edges : ndarray (n + 1,)
        Bin edges in atomic units of momentum, increasing.
    J : ndarray (n,)
        Profile density per a.u., constant within each bin; normalised so that its integral
        over the bins equals ``normalization`` (None for a difference profile).
    J_err : ndarray (n,)
        One-standard-error uncertainty of J (Poisson counts, and the subtracted background).
    factor : str
        "impulse" or "jacobian" (see :func:`bin_weights`).
    e1_kev, theta_rad : float
        Incident energy and scattering angle (NaN for a profile summed over pixels of
        different angles).
    resolution_fwhm_au : float
        Detector energy resolution expressed in p_z at the Compton peak (NaN if not given);
        J is the true profile convolved with about this width.
    counts : float
        Net counts that went into the profile.
    """

    pz_edges: np.ndarray
    J: np.ndarray
    J_err: np.ndarray
    factor: str = "impulse"
    e1_kev: float = float("nan")
    theta_rad: float = float("nan")
    resolution_fwhm_au: float = float("nan")
    normalization: float | None = 1.0
    counts: float = float("nan")
    # Independent per-bin variances, and the correlated part of the background: the
    # subtracted background is bg_basis @ beta with cov(beta) = bg_cov (J units).
    var: np.ndarray = field(default=None, repr=False)
    bg_basis: np.ndarray = field(default=None, repr=False)
    bg_cov: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        n = self.J.size
        if self.var is None:
            self.var = np.asarray(self.J_err, dtype=np.float64) ** 2
        if self.bg_basis is None:
            self.bg_basis = np.zeros((n, 0))
            self.bg_cov = np.zeros((0, 0))

    @property
    def pz(self) -> np.ndarray:
        """Bin centres in a.u."""
        return 0.5 * (self.pz_edges[1:] + self.pz_edges[:-1])

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.pz_edges)

    def integrate(self, lo, hi) -> float:
        """Integral of J over [lo, hi] a.u. with fractional bin overlap (see :func:`window_weights`)."""
        return float(window_weights(self.pz_edges, lo, hi) @ self.J)

    def rebin(self, pz_edges) -> "ComptonProfile":
        """The profile on new p_z bins, conserving integrals (fractional overlap, :func:`rebin_matrix`).

        Uncertainties of new bins that share an old bin are correlated; the variances
        returned ignore that correlation.
        """
        new = np.asarray(pz_edges, dtype=np.float64)
        t = rebin_matrix(self.pz_edges, new) / np.diff(new)[:, None]     # J_new = t @ J_old
        return self._transformed(new, t)

    def _transformed(self, new_edges, t):
        var = (t * t) @ self.var
        basis = t @ self.bg_basis
        J = t @ self.J
        bg_var = _background_variance(basis, self.bg_cov)
        return ComptonProfile(new_edges, J, np.sqrt(var + bg_var), self.factor, self.e1_kev, self.theta_rad,
                              self.resolution_fwhm_au, self.normalization, self.counts, var, basis, self.bg_cov)

    def normalized(self, normalization=1.0) -> "ComptonProfile":
        """The profile scaled so that its integral over its bins equals ``normalization``."""
        total = float(np.sum(self.J * self.widths))
        if not total > 0:
            raise ConfigError(f"ComptonProfile: cannot normalise a profile whose integral is {total}")
        k = normalization / total
        return ComptonProfile(self.pz_edges, self.J * k, self.J_err * abs(k), self.factor, self.e1_kev, self.theta_rad,
                              self.resolution_fwhm_au, normalization, self.counts, self.var * k * k,
                              self.bg_basis * k, self.bg_cov)


def profile(energy_edges, counts, e1_kev, theta_rad, factor="impulse", background=None, background_var=None,
            normalization=1.0, pz_range=None, resolution_fwhm_kev=None) -> ComptonProfile:
    """Compton profile J(p_z) of one spectrum, PHYSICS.md eq. (3).

    Parameters
    ----------
    energy_edges : ndarray (nbins + 1,)
        Energy bin edges, keV.
    counts : ndarray (nbins,)
        Counts per bin.
    e1_kev : float
        Incident energy, keV.
    theta_rad : float
        Scattering angle, radians.
    factor : {"impulse", "jacobian"}
        "impulse": J proportional to N(E2) (E1/E2) (q c / mc^2) (default); "jacobian": counts per unit p_z.
    background : PeakFit or ndarray (nbins,), optional
        Background to subtract: the linear background of a peak fit (its b0, b1 errors
        propagate, fully correlated over bins), or counts per bin.
    background_var : ndarray (nbins,), optional
        Variance of an array background (independent per bin); 0 when not given.
    normalization : float or None
        Integral of J over the bins kept (1, or an electron count); None leaves J unnormalised.
    pz_range : (lo, hi), optional
        Keep only bins lying entirely inside this p_z range (a.u.); all bins when None.
    resolution_fwhm_kev : float, optional
        Detector energy resolution (FWHM, keV), recorded as ``resolution_fwhm_au``.

    Returns
    -------
    ComptonProfile
    """
    edges = np.asarray(energy_edges, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if edges.ndim != 1 or n.shape != (edges.size - 1,):
        raise ConfigError(f"profile: expected counts of shape ({edges.size - 1},) for {edges.size} edges, found {n.shape}")
    check_factor(factor, "compton profile")
    pz_edges = pz_from_energy(edges, e1_kev, theta_rad)
    var_counts = np.maximum(n, 0.0)
    net = n.copy()
    basis = np.zeros((n.size, 0))
    cov = np.zeros((0, 0))
    if background is not None:
        if hasattr(background, "b0"):
            centers = 0.5 * (edges[1:] + edges[:-1])
            widths = np.diff(edges)
            net -= linear_background_counts(edges[:-1], edges[1:], background.b0, background.b1, background.center)
            # b0 and b1 errors are taken as independent (the window centred on the peak
            # makes their correlation small).
            basis = np.stack([widths, widths * (centers - background.center)], axis=1)
            cov = np.diag([np.nan_to_num(background.b0_err) ** 2, np.nan_to_num(background.b1_err) ** 2])
        else:
            bg = np.asarray(background, dtype=np.float64)
            if bg.shape != n.shape:
                raise ConfigError(f"profile: expected a background of shape {n.shape}, found {bg.shape}")
            net -= bg
            if background_var is not None:
                var_counts = var_counts + np.asarray(background_var, dtype=np.float64)
    keep = np.ones(n.size, bool) if pz_range is None else (pz_edges[:-1] >= pz_range[0]) & (pz_edges[1:] <= pz_range[1])
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise ConfigError(f"profile: no energy bin lies inside the p_z range {pz_range}")
    sl = slice(idx[0], idx[-1] + 1)
    k = density_factor(edges[:-1], edges[1:], pz_edges[:-1], pz_edges[1:], float(e1_kev), np.cos(theta_rad),
                       factor == "impulse")[sl]          # counts -> density per a.u.
    J = net[sl] * k
    var = var_counts[sl] * k * k
    basis = basis[sl] * k[:, None]
    res_au = float("nan") if resolution_fwhm_kev is None else resolution_in_pz(resolution_fwhm_kev, e1_kev, theta_rad)
    bg_var = _background_variance(basis, cov)
    prof = ComptonProfile(pz_edges[idx[0]: idx[-1] + 2].copy(), J, np.sqrt(var + bg_var), factor, float(e1_kev),
                          float(np.mean(theta_rad)), res_au, None, float(np.sum(net[sl])), var, basis, cov)
    return prof.normalized(normalization) if normalization is not None else prof


def symmetrise(prof: ComptonProfile, pz_edges=None) -> ComptonProfile:
    """(J(p_z) + J(-p_z)) / 2 on a grid symmetric about 0.

    The default grid spans the largest |p_z| covered on both sides, with the median bin width.
    """
    if pz_edges is None:
        pmax = min(-prof.pz_edges[0], prof.pz_edges[-1])
        if not pmax > 0:
            raise ConfigError(f"symmetrise: the profile does not cover both signs of p_z ({prof.pz_edges[0]:.3g} to {prof.pz_edges[-1]:.3g})")
        n = max(1, int(round(2 * pmax / np.median(prof.widths))))
        pz_edges = np.linspace(-pmax, pmax, n + 1)
    pz_edges = np.asarray(pz_edges, dtype=np.float64)
    if not np.allclose(pz_edges, -pz_edges[::-1], atol=1e-9):
        raise ConfigError("symmetrise: pz_edges must be symmetric about 0")
    on_grid = prof.rebin(pz_edges)
    n = pz_edges.size - 1
    t = 0.5 * (np.eye(n) + np.eye(n)[::-1])
    return on_grid._transformed(pz_edges, t)


def difference(a: ComptonProfile, b: ComptonProfile, pz_edges=None) -> ComptonProfile:
    """Difference profile a - b (e.g. charged minus discharged) on a common p_z grid.

    Both are rebinned to ``pz_edges`` (default: a's bins inside the range both cover) and
    normalised to unit integral there before subtracting; uncertainties add in quadrature.
    """
    if pz_edges is None:
        lo = max(a.pz_edges[0], b.pz_edges[0])
        hi = min(a.pz_edges[-1], b.pz_edges[-1])
        pz_edges = a.pz_edges[(a.pz_edges >= lo) & (a.pz_edges <= hi)]
    pz_edges = np.asarray(pz_edges, dtype=np.float64)
    if pz_edges.size < 2:
        raise ConfigError("difference: the two profiles share no p_z range")
    ra = a.rebin(pz_edges).normalized(1.0)
    rb = b.rebin(pz_edges).normalized(1.0)
    var = ra.var + rb.var
    basis = np.concatenate([ra.bg_basis, -rb.bg_basis], axis=1)
    nk = ra.bg_cov.shape[0] + rb.bg_cov.shape[0]
    cov = np.zeros((nk, nk))
    cov[:ra.bg_cov.shape[0], :ra.bg_cov.shape[0]] = ra.bg_cov
    cov[ra.bg_cov.shape[0]:, ra.bg_cov.shape[0]:] = rb.bg_cov
    bg_var = _background_variance(basis, cov)
    return ComptonProfile(pz_edges, ra.J - rb.J, np.sqrt(var + bg_var), a.factor, a.e1_kev,
                          a.theta_rad if a.theta_rad == b.theta_rad else float("nan"),
                          max(a.resolution_fwhm_au, b.resolution_fwhm_au), None, float("nan"), var, basis, cov)


def region_profile(cube, e1_kev, theta, mask=None, pz_edges=None, factor="impulse", background=None,
                   normalization=1.0, resolution_fwhm_kev=None) -> ComptonProfile:
    """Compton profile of one pixel set: each pixel's profile (own theta) summed on common p_z bins.

    Parameters
    ----------
    cube : SpectralCube
    e1_kev : float
    theta : float or ndarray (rows, cols)
        Scattering angle(s) in radians.
    mask : ndarray (rows, cols) of bool, optional
        Pixels to include (all when None); a single pixel is a mask with one True.
    pz_edges : ndarray, optional
        Common p_z bins (default -10 to 10 a.u. in 0.2 a.u. steps).
    background : PeakMaps, optional
        Fitted linear background subtracted per pixel (where the fit is ok).
    normalization, resolution_fwhm_kev :
        As for :func:`profile`.
    """
    mask = np.ones(cube.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != cube.shape:
        raise ConfigError(f"region_profile: expected a mask of shape {cube.shape}, found {mask.shape}")
    check_factor(factor, "region_profile")
    theta_map = np.broadcast_to(np.asarray(theta, dtype=np.float64), cube.shape)
    pz_edges = np.arange(-10.0, 10.0001, 0.2) if pz_edges is None else np.asarray(pz_edges, dtype=np.float64)
    if pz_edges.ndim != 1 or pz_edges.size < 2 or np.any(np.diff(pz_edges) <= 0):
        raise ConfigError("region_profile: pz_edges must be an increasing 1-d array of at least 2 edges")
    pick = mask & np.isfinite(theta_map)
    pixels = np.flatnonzero(pick.reshape(-1))
    counts = cube.counts.reshape(cube.shape[0] * cube.shape[1], -1)
    if background is not None:
        bg_lin, bg_err, _ = linear_background_table(background)
    else:
        bg_lin, bg_err = np.zeros((0, 3)), np.zeros((0, 2))
    integral = np.zeros(pz_edges.size - 1)
    var = np.zeros(pz_edges.size - 1)
    net_total = _region_integrals(np.ascontiguousarray(cube.edges), counts, pixels,
                                  np.ascontiguousarray(theta_map.reshape(-1)), float(e1_kev), factor == "impulse",
                                  pz_edges, bg_lin, bg_err, integral, var)
    dp = np.diff(pz_edges)
    res_au = float("nan")
    thetas = theta_map[pick]
    if resolution_fwhm_kev is not None and thetas.size:
        res_au = resolution_in_pz(resolution_fwhm_kev, e1_kev, float(np.mean(thetas)))
    theta_one = float(thetas[0]) if thetas.size and np.all(thetas == thetas[0]) else float("nan")
    prof = ComptonProfile(pz_edges, integral / dp, np.sqrt(var) / dp, factor, float(e1_kev), theta_one, res_au, None,
                          float(net_total))
    return prof.normalized(normalization) if normalization is not None else prof


@njit(cache=True, nogil=True)
def _region_integrals(edges, counts, pixels, theta, e1, impulse, pz_edges, bg_lin, bg_err, integral, var):
    """Add every listed pixel's integrals of J (eq. 3) over the bins ``pz_edges`` into ``integral``.

    Each pixel's energy bins are mapped to p_z with its own theta and distributed over the
    new bins with the same fractional overlap and linear sub-bin reconstruction as
    :func:`window_weights`. ``var`` receives the per-bin variance: Poisson counts plus the
    pixel's background (b0, b1) errors. Returns the net counts inside the new bins.
    """
    nb = counts.shape[1]
    nnew = pz_edges.shape[0] - 1
    use_lin = bg_lin.shape[0] > 0
    total = 0.0
    for k in pixels:
        cos_t = math.cos(theta[k])
        # old bins overlapping the new range, with one spare bin each side for slopes
        i0 = nb
        i1 = 0
        for i in range(nb):
            pa = pz_scalar(edges[i], e1, cos_t)
            pb = pz_scalar(edges[i + 1], e1, cos_t)
            if pb > pz_edges[0] and pa < pz_edges[nnew]:
                i0 = min(i0, i)
                i1 = max(i1, i + 1)
        if i1 <= i0:
            continue
        i0 = max(i0 - 1, 0)
        i1 = min(i1 + 1, nb)
        m = i1 - i0
        pe = np.empty(m + 1)
        for i in range(m + 1):
            pe[i] = pz_scalar(edges[i0 + i], e1, cos_t)
        weights = np.zeros((nnew, m))
        for j in range(nnew):
            add_window_weights(pe, pz_edges[j], pz_edges[j + 1], weights[j])
        g = np.empty(m)
        net = np.empty(m)
        n = np.empty(m)
        bw = np.empty(m)
        e2c = np.zeros(m)
        for i in range(m):
            ea = edges[i0 + i]
            eb = edges[i0 + i + 1]
            bw[i] = eb - ea
            g[i] = density_factor(ea, eb, pe[i], pe[i + 1], e1, cos_t, impulse)
            n[i] = np.float64(counts[k, i0 + i])
            net[i] = n[i]
            if use_lin:
                e2c[i] = 0.5 * (ea + eb) - bg_lin[k, 2]
                net[i] -= linear_background_counts(ea, eb, bg_lin[k, 0], bg_lin[k, 1], bg_lin[k, 2])
        for j in range(nnew):
            d0 = 0.0
            d1 = 0.0
            for i in range(m):
                c = weights[j, i] * g[i]
                if c == 0.0:
                    continue
                integral[j] += c * net[i]
                var[j] += c * c * n[i]
                total += weights[j, i] / (pe[i + 1] - pe[i]) * net[i]
                if use_lin:
                    d0 += c * bw[i]
                    d1 += c * bw[i] * e2c[i]
            if use_lin:
                var[j] += d0 * d0 * bg_err[k, 0] ** 2 + d1 * d1 * bg_err[k, 1] ** 2
    return total


