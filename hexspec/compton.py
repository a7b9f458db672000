"""Compton kinematics, pinhole geometry, Compton profiles J(p_z) and S-parameters.

Equation numbers refer to PHYSICS.md (section 2 for kinematics, profiles and the
S-parameter, section 3 for the pinhole geometry).

Background under the profile: :func:`sideband_estimator` takes a flat continuum from the
energies beyond p_z = 7 a.u., with the Compton tail there from the free-atom forward model
(:mod:`hexspec.compton_forward`); the peak fit's straight line is kept for comparison only.

Conventions: energies in keV, momenta p_z in atomic units, angles in radians; maps are
(rows, cols) and cubes (rows, cols, energy). A profile J(p_z) is stored as a density per
a.u. that is constant within each p_z bin, so integrals over any p_z window use the
fractional overlap of each bin with the window and do not depend on where bin edges fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from .detector import HEXITEC, DetectorSpec
from .errors import ConfigError

#: Electron rest energy m c^2 in keV (CODATA 2018).
MC2_KEV = 510.99895
#: Atomic unit of momentum per m c (1 / fine-structure constant).
MC_AU = 137.035999


def compton_energy(e1_kev, theta_rad):
    """Energy of a photon Compton-scattered by a free electron at rest, eq. (1).

    Parameters
    ----------
    e1_kev : float or ndarray
        Incident photon energy in keV.
    theta_rad : float or ndarray
        Scattering angle in radians (scalar or per pixel).

    Returns
    -------
    ndarray or float
        E_C = E1 / (1 + (E1 / mc^2)(1 - cos theta)) in keV. 115 keV at 90 deg -> 93.8738 keV.
    """
    e1 = np.asarray(e1_kev, dtype=np.float64)
    return e1 / (1.0 + (e1 / MC2_KEV) * (1.0 - np.cos(theta_rad)))


def pz_from_energy(e2_kev, e1_kev, theta_rad):
    """Electron momentum projection p_z (atomic units) of a scattered photon energy, eq. (2).

    p_z / (m c) = (E2 - E1 + (E1 E2 / mc^2)(1 - cos theta)) / sqrt(E1^2 + E2^2 - 2 E1 E2 cos theta),
    positive for E2 above the Compton energy. Broadcasts over all arguments.
    """
    e2 = np.asarray(e2_kev, dtype=np.float64)
    e1 = np.asarray(e1_kev, dtype=np.float64)
    c = np.cos(theta_rad)
    qc = np.sqrt(e1 * e1 + e2 * e2 - 2.0 * e1 * e2 * c)
    return MC_AU * (e2 - e1 + e1 * e2 * (1.0 - c) / MC2_KEV) / qc


def _energy_from_pz_formula(pz_au, e1_kev, cos_t):
    # One formula for numpy arrays and, compiled below, for scalars inside numba kernels.
    p = pz_au / MC_AU
    a = 1.0 + (e1_kev / MC2_KEV) * (1.0 - cos_t)
    p2 = p * p
    disc = (a - p2 * cos_t) ** 2 - (a * a - p2) * (1.0 - p2)
    return e1_kev * (a - p2 * cos_t + np.sign(p) * np.sqrt(np.maximum(disc, 0.0))) / (a * a - p2)


#: Scalar, numba-compiled :func:`energy_from_pz` taking cos(theta), for use inside kernels.
energy_from_pz_scalar = njit(cache=True, nogil=True)(_energy_from_pz_formula)


def energy_from_pz(pz_au, e1_kev, theta_rad):
    """Scattered energy E2 (keV) for a momentum projection p_z (a.u.): exact inverse of eq. (2).

    Squaring eq. (2) with A = 1 + (E1/mc^2)(1 - cos theta) and p = p_z/(m c) gives the quadratic
    (A^2 - p^2) E2^2 - 2 E1 (A - p^2 cos theta) E2 + E1^2 (1 - p^2) = 0, whose root with
    sign(A E2 - E1) = sign(p) is returned.
    """
    return _energy_from_pz_formula(np.asarray(pz_au, dtype=np.float64), np.asarray(e1_kev, dtype=np.float64),
                                   np.cos(theta_rad))


def theta_from_peak_energy(ec_kev, e1_kev):
    """Scattering angle (rad) from a fitted Compton peak centre: cos theta = 1 - mc^2 (1/E_C - 1/E1)."""
    cos_t = 1.0 - MC2_KEV * (1.0 / np.asarray(ec_kev, dtype=np.float64) - 1.0 / np.asarray(e1_kev, dtype=np.float64))
    return np.arccos(np.clip(cos_t, -1.0, 1.0))


@dataclass(frozen=True)
class PinholeGeometry:
    """Pinhole camera at 90 degrees to the beam (PHYSICS.md section 3).

    The beam runs along +x. The pinhole sits ``d1_mm`` from the sample along the detector
    normal; the detector plane is ``d2_mm`` beyond it. The in-plane offset (u, v) of a pixel
    is measured from the foot of the normal through the pinhole, u along the beam.

    Parameters
    ----------
    d1_mm, d2_mm : float
        Sample-pinhole and pinhole-detector distances in mm (160 and 150 in the reference work).
    detector : DetectorSpec
        Pixel grid and pitch.
    beam_axis : {"cols", "rows"}
        Detector axis parallel to the beam (u); columns by default.
    center_offset_mm : (float, float)
        (u, v) of the detector centre relative to the foot of the normal, in mm.
    beam_sign : {+1, -1}
        +1 when u grows with the column (or row) index along the beam direction.
    """

    d1_mm: float = 160.0
    d2_mm: float = 150.0
    detector: DetectorSpec = HEXITEC
    beam_axis: str = "cols"
    center_offset_mm: tuple = (0.0, 0.0)
    beam_sign: int = 1

    def __post_init__(self):
        if self.d1_mm <= 0 or self.d2_mm <= 0:
            raise ConfigError(f"PinholeGeometry: distances must be positive, found d1={self.d1_mm}, d2={self.d2_mm} mm")
        if self.beam_axis not in ("cols", "rows"):
            raise ConfigError(f"PinholeGeometry.beam_axis: expected 'cols' or 'rows', found {self.beam_axis!r}")

    def pixel_offsets_mm(self):
        """(u, v) in mm of every pixel centre, each of shape (rows, cols)."""
        rows, cols = self.detector.shape
        pitch = self.detector.pitch_mm
        y = (np.arange(rows) + 0.5 - rows / 2.0) * pitch
        x = (np.arange(cols) + 0.5 - cols / 2.0) * pitch
        yy, xx = np.meshgrid(y, x, indexing="ij")
        along, across = (xx, yy) if self.beam_axis == "cols" else (yy, xx)
        u = self.beam_sign * along + self.center_offset_mm[0]
        v = across + self.center_offset_mm[1]
        return u, v

    def theta_map(self):
        """Scattering angle per pixel in radians, shape (rows, cols): cos theta = u / sqrt(u^2 + v^2 + d2^2)."""
        u, v = self.pixel_offsets_mm()
        return np.arccos(u / np.sqrt(u * u + v * v + self.d2_mm ** 2))

    def sample_coordinates(self):
        """Sample point imaged by each pixel, -(d1/d2)(u, v) in mm: two (rows, cols) arrays."""
        u, v = self.pixel_offsets_mm()
        m = self.d1_mm / self.d2_mm
        return -m * u, -m * v

    @property
    def magnification(self) -> float:
        """Detector-to-sample scale d2/d1 (the image is inverted)."""
        return self.d2_mm / self.d1_mm


# =========================================================================== profiles, eq. (3)

FACTORS = ("impulse", "jacobian")

#: Sample-attenuation correction factors of the reference work for depth regions 1, 2, 3
#: (PHYSICS.md section 1); pass one as ``attenuation_factor`` to scale S.
ATTENUATION_CORRECTION = {1: 1.015, 2: 1.010, 3: 1.005}


def momentum_transfer_kev(e2_kev, e1_kev, theta_rad):
    """q c = sqrt(E1^2 + E2^2 - 2 E1 E2 cos theta) in keV, eq. (3)."""
    e2 = np.asarray(e2_kev, dtype=np.float64)
    e1 = np.asarray(e1_kev, dtype=np.float64)
    return np.sqrt(e1 * e1 + e2 * e2 - 2.0 * e1 * e2 * np.cos(theta_rad))


def bin_weights(energy_edges, e1_kev, theta_rad, factor="impulse"):
    """p_z edges of energy bins and the factor turning counts into integrals of J, eq. (3).

    Each energy bin [a, b] maps to the p_z interval [p(a), p(b)] (eq. 2). The integral of
    J over that interval is proportional to ``counts * kappa`` with

    - "impulse": kappa = (dp / dE) (E1 / E2) (q c / mc^2) at the bin centre, since
      J is proportional to N(E2) (E1 / E2) (q c / mc^2) with N(E2) = counts / (b - a) and
      dp / dE = (p(b) - p(a)) / (b - a);
    - "jacobian": kappa = 1 (J is simply counts per unit p_z).

    Returns
    -------
    pz_edges : ndarray (nbins + 1,)
    kappa : ndarray (nbins,)
    """
    if factor not in FACTORS:
        raise ConfigError(f"compton profile: factor must be one of {FACTORS}, found {factor!r}")
    edges = np.asarray(energy_edges, dtype=np.float64)
    pz = pz_from_energy(edges, e1_kev, theta_rad)
    if factor == "jacobian":
        return pz, np.ones(edges.size - 1)
    e2 = 0.5 * (edges[1:] + edges[:-1])
    dp_de = np.diff(pz) / np.diff(edges)
    kappa = dp_de * (e1_kev / e2) * momentum_transfer_kev(e2, e1_kev, theta_rad) / MC2_KEV
    return pz, kappa


def window_weights(edges, lo, hi):
    """Weights w with integral of J over [lo, hi] = w @ J, for J given as bin densities on ``edges``.

    Whole bins inside the window count with their width. A bin cut by a window limit
    counts with its overlap (fractional bin overlap) plus a first-order correction from
    a linear reconstruction of J inside that bin (slope from the neighbouring bins'
    densities), which keeps every bin's integral and removes the leading error of
    treating J as constant within a bin; S then hardly depends on where bin edges fall.
    """
    edges = np.asarray(edges, dtype=np.float64)
    n = edges.size - 1
    a, b = edges[:-1], edges[1:]
    x1 = np.maximum(a, lo)
    x2 = np.minimum(b, hi)
    length = np.clip(x2 - x1, 0.0, None)
    w = length.copy()
    mid = 0.5 * (a + b)
    for j in np.flatnonzero((length > 0) & (length < (b - a))):
        if 0 < j < n - 1:
            t = 0.5 * ((x2[j] - mid[j]) ** 2 - (x1[j] - mid[j]) ** 2) / (mid[j + 1] - mid[j - 1])
            w[j + 1] += t
            w[j - 1] -= t
    return w


def rebin_matrix(old_edges, new_edges):
    """W (n_new, n_old) with the integral of J over new bin i = W[i] @ J_old (densities on ``old_edges``).

    Row i is :func:`window_weights` of new bin i, so rebinning uses the same fractional
    overlap and linear sub-bin reconstruction as every window integral.
    """
    old_edges = np.asarray(old_edges, dtype=np.float64)
    new_edges = np.asarray(new_edges, dtype=np.float64)
    m = np.empty((new_edges.size - 1, old_edges.size - 1))
    for i in range(new_edges.size - 1):
        m[i] = window_weights(old_edges, new_edges[i], new_edges[i + 1])
    return m


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
        bg_var = np.einsum("ij,jk,ik->i", basis, self.bg_cov, basis) if basis.shape[1] else 0.0
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
    pz_edges, kappa = bin_weights(edges, e1_kev, theta_rad, factor)
    var_counts = np.maximum(n, 0.0)
    net = n.copy()
    basis = np.zeros((n.size, 0))
    cov = np.zeros((0, 0))
    if background is not None:
        if hasattr(background, "b0"):
            centers = 0.5 * (edges[1:] + edges[:-1])
            widths = np.diff(edges)
            net -= widths * (background.b0 + background.b1 * (centers - background.center))
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
    dp = np.diff(pz_edges)[sl]
    k = kappa[sl] / dp                          # counts -> density per a.u.
    J = net[sl] * k
    var = var_counts[sl] * k * k
    basis = basis[sl] * k[:, None]
    res_au = float("nan")
    if resolution_fwhm_kev is not None:
        ec = compton_energy(e1_kev, theta_rad)
        h = 1e-3
        dp_de = (pz_from_energy(ec + h, e1_kev, theta_rad) - pz_from_energy(ec - h, e1_kev, theta_rad)) / (2 * h)
        res_au = float(resolution_fwhm_kev * dp_de)
    bg_var = np.einsum("ij,jk,ik->i", basis, cov, basis) if basis.shape[1] else 0.0
    prof = ComptonProfile(pz_edges[idx[0]: idx[-1] + 2].copy(), J, np.sqrt(var + bg_var), factor, float(e1_kev),
                          float(np.mean(theta_rad)), res_au, None, float(np.sum(net[sl])), var, basis, cov)
    return prof.normalized(normalization) if normalization is not None else prof


def s_parameter(prof: ComptonProfile, low=1.0, high=5.0):
    """S-parameter S = S_L / S_H of a profile with its standard error, PHYSICS.md eq. (4).

    S_L integrates J over -low < p_z < low, S_H over -high < p_z < -low plus low < p_z < high
    (fractional bin overlap, :func:`window_weights`). The uncertainty propagates the independent per-bin variances
    (Poisson counts, array backgrounds) and the correlated fitted-background errors.

    Returns
    -------
    (float, float)
        S and sigma_S.
    """
    if not 0 < low < high:
        raise ConfigError(f"s_parameter: expected 0 < low < high, found low={low}, high={high}")
    a_low = window_weights(prof.pz_edges, -low, low)
    a_high = window_weights(prof.pz_edges, -high, -low) + window_weights(prof.pz_edges, low, high)
    s_low = float(a_low @ prof.J)
    s_high = float(a_high @ prof.J)
    if not s_high > 0:
        raise ConfigError(f"s_parameter: the high-momentum window holds no positive signal (S_H = {s_high})")
    s = s_low / s_high
    grad = (a_low - s * a_high) / s_high
    var = float(np.sum(grad * grad * prof.var))
    if prof.bg_basis.shape[1]:
        gb = grad @ prof.bg_basis
        var += float(gb @ prof.bg_cov @ gb)
    return s, math.sqrt(max(var, 0.0))


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
    bg_var = np.einsum("ij,jk,ik->i", basis, cov, basis) if nk else 0.0
    return ComptonProfile(pz_edges, ra.J - rb.J, np.sqrt(var + bg_var), a.factor, a.e1_kev,
                          a.theta_rad if a.theta_rad == b.theta_rad else float("nan"),
                          max(a.resolution_fwhm_au, b.resolution_fwhm_au), None, float("nan"), var, basis, cov)


# =========================================================================== S maps, eq. (4)

@dataclass
class SMap:
    """S-parameter per pixel (PHYSICS.md eq. 4), each array (rows, cols).

    ``s_low`` and ``s_high`` are the unnormalised window integrals; ``ok`` is False where
    a window holds fewer than the minimum counts or no positive signal (s is NaN there).
    """

    s: np.ndarray
    s_err: np.ndarray
    ok: np.ndarray
    s_low: np.ndarray
    s_high: np.ndarray
    counts_low: np.ndarray
    counts_high: np.ndarray
    low: float = 1.0
    high: float = 5.0
    factor: str = "impulse"
    attenuation_factor: float = 1.0

    FIELDS = ("s", "s_err", "ok", "s_low", "s_high", "counts_low", "counts_high")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}


@njit(cache=True, nogil=True)
def _pz(e2, e1, cos_t):
    qc = math.sqrt(e1 * e1 + e2 * e2 - 2.0 * e1 * e2 * cos_t)
    return MC_AU * (e2 - e1 + e1 * e2 * (1.0 - cos_t) / MC2_KEV) / qc


@njit(cache=True, nogil=True)
def _add_window_weights(pe, lo, hi, w):
    """Numba twin of :func:`window_weights`: add the weights of [lo, hi] for bin edges ``pe`` into ``w``."""
    n = pe.shape[0] - 1
    for j in range(n):
        a = pe[j]
        b = pe[j + 1]
        x1 = max(a, lo)
        x2 = min(b, hi)
        length = x2 - x1
        if length <= 0.0:
            continue
        w[j] += length
        if length < b - a and 0 < j < n - 1:
            mid = 0.5 * (a + b)
            t = 0.5 * ((x2 - mid) ** 2 - (x1 - mid) ** 2) / (0.5 * (pe[j + 1] + pe[j + 2]) - 0.5 * (pe[j - 1] + pe[j]))
            w[j + 1] += t
            w[j - 1] -= t


@njit(cache=True, nogil=True, parallel=True)
def _window_sums(edges, counts, theta, e1, low, high, impulse, e_lo, e_hi,
                 bg_lin, bg_lin_err, bg_arr, bg_arr_var, out):
    """Per pixel: [S_L, S_H, var S_L, var S_H, cov(S_L, S_H), counts_L, counts_H] (eq. 4).

    ``bg_lin`` (npix, 3) = (b0, b1, centre) of a linear background per keV, ``bg_lin_err``
    (npix, 2) its errors (independent); ``bg_arr`` (npix, nbins) counts per bin with
    variances ``bg_arr_var`` (or empty arrays). S_L and S_H are linear in the counts, so
    their variances follow exactly from the per-bin coefficients.
    """
    npix = counts.shape[0]
    nb = counts.shape[1]
    use_lin = bg_lin.shape[0] > 0
    use_arr = bg_arr.shape[0] > 0
    for k in prange(npix):
        cos_t = math.cos(theta[k])
        # one spare bin each side for the slope of the linear reconstruction
        i0 = max(np.searchsorted(edges, e_lo[k]) - 2, 0)
        i1 = min(np.searchsorted(edges, e_hi[k]) + 1, nb)
        m = i1 - i0
        for q in range(7):
            out[k, q] = 0.0
        if m <= 0:
            continue
        pe = np.empty(m + 1)
        for i in range(m + 1):
            pe[i] = _pz(edges[i0 + i], e1, cos_t)
        wl = np.zeros(m)
        wh = np.zeros(m)
        _add_window_weights(pe, -low, low, wl)
        _add_window_weights(pe, -high, -low, wh)
        _add_window_weights(pe, low, high, wh)
        sl = 0.0
        sh = 0.0
        vll = 0.0
        vhh = 0.0
        vlh = 0.0
        nl = 0.0
        nh = 0.0
        d0l = 0.0
        d1l = 0.0
        d0h = 0.0
        d1h = 0.0
        for i in range(m):
            if wl[i] == 0.0 and wh[i] == 0.0:
                continue
            ea = edges[i0 + i]
            eb = edges[i0 + i + 1]
            dp = pe[i + 1] - pe[i]
            # g turns counts into the density of J per a.u. (eq. 3)
            if impulse:
                e2 = 0.5 * (ea + eb)
                qc = math.sqrt(e1 * e1 + e2 * e2 - 2.0 * e1 * e2 * cos_t)
                g = (e1 / e2) * qc / MC2_KEV / (eb - ea)
            else:
                g = 1.0 / dp
            cl = wl[i] * g
            ch = wh[i] * g
            n = np.float64(counts[k, i0 + i])
            net = n
            var = n
            if use_lin:
                e2c = 0.5 * (ea + eb) - bg_lin[k, 2]
                net -= (eb - ea) * (bg_lin[k, 0] + bg_lin[k, 1] * e2c)
                d0l += cl * (eb - ea)
                d1l += cl * (eb - ea) * e2c
                d0h += ch * (eb - ea)
                d1h += ch * (eb - ea) * e2c
            if use_arr:
                net -= bg_arr[k, i0 + i]
                var += bg_arr_var[k, i0 + i]
            sl += cl * net
            sh += ch * net
            vll += cl * cl * var
            vhh += ch * ch * var
            vlh += cl * ch * var
            nl += min(max(wl[i] / dp, 0.0), 1.0) * n
            nh += min(max(wh[i] / dp, 0.0), 1.0) * n
        if use_lin:
            s0 = bg_lin_err[k, 0] * bg_lin_err[k, 0]
            s1 = bg_lin_err[k, 1] * bg_lin_err[k, 1]
            vll += d0l * d0l * s0 + d1l * d1l * s1
            vhh += d0h * d0h * s0 + d1h * d1h * s1
            vlh += d0l * d0h * s0 + d1l * d1h * s1
        out[k, 0] = sl
        out[k, 1] = sh
        out[k, 2] = vll
        out[k, 3] = vhh
        out[k, 4] = vlh
        out[k, 5] = nl
        out[k, 6] = nh


def _ratio(sl, sh, vll, vhh, vlh):
    with np.errstate(divide="ignore", invalid="ignore"):
        s = sl / sh
        var = (vll - 2.0 * s * vlh + s * s * vhh) / (sh * sh)
    return s, np.sqrt(np.maximum(var, 0.0))


def _window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev=0.8,
                  li_content=0.5):
    if factor not in FACTORS:
        raise ConfigError(f"s_parameter_map: factor must be one of {FACTORS}, found {factor!r}")
    if not 0 < low < high:
        raise ConfigError(f"s_parameter_map: expected 0 < low < high, found low={low}, high={high}")
    rows, cols = cube.shape
    npix = rows * cols
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim == 0:
        theta = np.full(npix, float(theta))
    elif theta.shape == (rows, cols):
        theta = np.ascontiguousarray(theta.reshape(-1))
    else:
        raise ConfigError(f"s_parameter_map: expected theta as a scalar or a ({rows}, {cols}) map, found shape {theta.shape}")
    counts = cube.counts.reshape(npix, -1)
    bad_theta = ~np.isfinite(theta)
    theta_safe = np.where(bad_theta, np.pi / 2, theta)
    e_lo = energy_from_pz(-high, e1_kev, theta_safe)
    e_hi = energy_from_pz(high, e1_kev, theta_safe)
    if isinstance(background, str):
        if background not in BACKGROUNDS:
            raise ConfigError(f"S-parameter background: expected one of {BACKGROUNDS} or peak fits, found {background!r}")
        if background == "sideband":
            out = _sideband_table(cube, e1_kev, theta_safe, low, high, factor, resolution_fwhm_kev, li_content)
            out[bad_theta] = np.nan
            return out
        if background == "peak-fit":
            raise ConfigError("S-parameter background 'peak-fit': pass the PeakMaps of hexspec.fit.fit_cube itself")
        background = None
    empty2 = np.zeros((0, 0))
    bg_lin, bg_lin_err, bg_arr, bg_arr_var = np.zeros((0, 3)), np.zeros((0, 2)), empty2, empty2
    no_background = np.zeros(npix, dtype=bool)
    if background is not None:
        if hasattr(background, "b0"):
            ok = np.asarray(background.ok).reshape(-1)
            # a pixel whose peak fit failed has no background estimate: leave it out rather
            # than mix background-subtracted and raw S in one map
            no_background = ~ok
            bg_lin = np.stack([np.where(ok, background.b0.reshape(-1), 0.0), np.where(ok, background.b1.reshape(-1), 0.0),
                               np.where(ok, background.center.reshape(-1), 0.0)], axis=1)
            bg_lin_err = np.stack([np.where(ok, background.b0_err.reshape(-1), 0.0),
                                   np.where(ok, background.b1_err.reshape(-1), 0.0)], axis=1)
            bg_lin_err = np.nan_to_num(bg_lin_err)
        else:
            bg = np.asarray(background, dtype=np.float64)
            if bg.shape != cube.counts.shape:
                raise ConfigError(f"s_parameter_map: expected a background of shape {cube.counts.shape}, found {bg.shape}")
            bg_arr = np.ascontiguousarray(bg.reshape(npix, -1))
            bg_arr_var = (np.zeros_like(bg_arr) if background_var is None
                          else np.ascontiguousarray(np.asarray(background_var, dtype=np.float64).reshape(npix, -1)))
    out = np.empty((npix, 7))
    _window_sums(np.ascontiguousarray(cube.edges), counts, theta_safe, float(e1_kev), float(low), float(high),
                 factor == "impulse", e_lo, e_hi, bg_lin, bg_lin_err, bg_arr, bg_arr_var, out)
    out[bad_theta | no_background] = np.nan
    return out


#: Background options of the S maps: ``"sideband"`` (default of the CLI) estimates a flat
#: continuum per pixel from the energies beyond p_z = ``SIDEBAND_PZ_AU`` below the elastic line,
#: where the Compton tail comes from core electrons whose free-atom profiles are accurate.
BACKGROUNDS = ("sideband", "peak-fit", "none")
SIDEBAND_PZ_AU = 7.0
#: Upper end of the sideband below E1 (keV): the elastic line stays more than 10 sigma away.
SIDEBAND_ELASTIC_MARGIN_KEV = 3.5


@njit(cache=True, nogil=True, parallel=True)
def _window_coefficients(edges, theta, e1, low, high, impulse, j0, cl, ch, fl, fh):
    """Per pixel and bin j0 + i: S_L = sum cl n, S_H = sum ch n (eq. 4); fl, fh the raw-count fractions."""
    npix = cl.shape[0]
    m = cl.shape[1]
    for k in prange(npix):
        cos_t = math.cos(theta[k])
        pe = np.empty(m + 1)
        for i in range(m + 1):
            pe[i] = _pz(edges[j0 + i], e1, cos_t)
        wl = np.zeros(m)
        wh = np.zeros(m)
        _add_window_weights(pe, -low, low, wl)
        _add_window_weights(pe, -high, -low, wh)
        _add_window_weights(pe, low, high, wh)
        for i in range(m):
            ea = edges[j0 + i]
            eb = edges[j0 + i + 1]
            dp = pe[i + 1] - pe[i]
            if impulse:
                e2 = 0.5 * (ea + eb)
                qc = math.sqrt(e1 * e1 + e2 * e2 - 2.0 * e1 * e2 * cos_t)
                g = (e1 / e2) * qc / MC2_KEV / (eb - ea)
            else:
                g = 1.0 / dp
            cl[k, i] = wl[i] * g
            ch[k, i] = wh[i] * g
            fl[k, i] = min(max(wl[i] / dp, 0.0), 1.0)
            fh[k, i] = min(max(wh[i] / dp, 0.0), 1.0)


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
    from .compton_forward import templates

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


def _sideband_table(cube, e1_kev, theta_safe, low, high, factor, resolution_fwhm_kev, li_content):
    """The 7-column window table of :func:`_window_table` with the sideband background subtracted."""
    rows, cols = cube.shape
    npix = rows * cols
    edges = np.ascontiguousarray(cube.edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    e_min = float(np.min(energy_from_pz(-high, e1_kev, theta_safe))) - 1.0
    sel = np.flatnonzero((centres >= e_min) & (centres < e1_kev - SIDEBAND_ELASTIC_MARGIN_KEV))
    if sel.size < 4:
        raise ConfigError(f"sideband background: the cube's bins do not cover {e_min:.1f}-{e1_kev - 3.5:.1f} keV")
    j0, m = int(sel[0]), int(sel[-1] - sel[0] + 1)
    bins = slice(j0, j0 + m)
    cl, ch, fl, fh = (np.zeros((npix, m)) for _ in range(4))
    _window_coefficients(edges, theta_safe, float(e1_kev), float(low), float(high), factor == "impulse", j0,
                         cl, ch, fl, fh)
    beta = sideband_estimator(edges, e1_kev, theta_safe, high, resolution_fwhm_kev=resolution_fwhm_kev,
                              li_content=li_content, bins=bins)
    widths = np.diff(edges)[bins]
    # net = n - B dE with B = beta @ n: S = (c - (c @ dE) beta) @ n, linear in the counts
    cl_net = cl - (cl @ widths)[:, None] * beta
    ch_net = ch - (ch @ widths)[:, None] * beta
    n = cube.counts.reshape(npix, -1)[:, bins].astype(np.float64)
    out = np.empty((npix, 7))
    out[:, 0] = np.sum(cl_net * n, axis=1)
    out[:, 1] = np.sum(ch_net * n, axis=1)
    out[:, 2] = np.sum(cl_net * cl_net * n, axis=1)
    out[:, 3] = np.sum(ch_net * ch_net * n, axis=1)
    out[:, 4] = np.sum(cl_net * ch_net * n, axis=1)
    out[:, 5] = np.sum(fl * n, axis=1)
    out[:, 6] = np.sum(fh * n, axis=1)
    out[~np.all(np.isfinite(beta), axis=1)] = np.nan
    return out


def s_parameter_map(cube, e1_kev, theta, low=1.0, high=5.0, factor="impulse", background=None, background_var=None,
                    min_counts=100, attenuation_factor=1.0, resolution_fwhm_kev=0.8, li_content=0.5) -> SMap:
    """S-parameter of every pixel of a cube, PHYSICS.md eqs. (2)-(4), with theta per pixel.

    Parameters
    ----------
    cube : SpectralCube
        Counts (rows, cols, nbins), energies in keV.
    e1_kev : float
        Incident energy, keV.
    theta : float or ndarray (rows, cols)
        Scattering angle in radians, one for all pixels or one per pixel (NaN marks a
        pixel without an angle; its S is NaN).
    low, high : float
        Window limits in a.u.: S_L over |p_z| < low, S_H over low < |p_z| < high.
    factor : {"impulse", "jacobian"}
        Profile factor of eq. (3).
    background : "sideband", "none", PeakMaps or ndarray (rows, cols, nbins), optional
        Background to subtract. "sideband" (recommended): a flat continuum per pixel from
        the energies beyond p_z = 7 a.u. (:func:`sideband_estimator`), unbiased and the same
        everywhere on the detector. PeakMaps: the linear background of a pseudo-Voigt fit
        (:func:`hexspec.fit.fit_cube`, where ok; b0, b1 errors propagate) -- it takes the
        wide Compton wings of the core electrons for background, so S comes out too high by
        an amount that depends on where the peak sits in the fit window, i.e. on the pixel's
        scattering angle; kept for comparison with peak-fit analyses. An array: counts per bin.
        None or "none": no subtraction.
    background_var : ndarray (rows, cols, nbins), optional
        Variance of an array background.
    min_counts : float
        Minimum raw counts in each window for a pixel to be ok.
    attenuation_factor : float
        Multiplies S and its error (PHYSICS.md section 1: 1.015, 1.010, 1.005 for depth
        regions 1-3; see ATTENUATION_CORRECTION).
    resolution_fwhm_kev, li_content : float
        Detector resolution (FWHM, keV) and the nominal 1 - x of the forward model that gives
        the sideband background its Compton tail (used only with background="sideband").

    Returns
    -------
    SMap
    """
    t = _window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev,
                      li_content)
    s, s_err = _ratio(t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4])
    ok = (t[:, 5] >= min_counts) & (t[:, 6] >= min_counts) & (t[:, 0] > 0) & (t[:, 1] > 0) & np.isfinite(s)
    s = np.where(ok, s * attenuation_factor, np.nan)
    s_err = np.where(ok, s_err * attenuation_factor, np.nan)
    shape = cube.shape
    return SMap(s.reshape(shape), s_err.reshape(shape), ok.reshape(shape), t[:, 0].reshape(shape),
                t[:, 1].reshape(shape), t[:, 5].reshape(shape), t[:, 6].reshape(shape), float(low), float(high),
                factor, float(attenuation_factor))


def s_parameter_blocks(cube, e1_kev, theta, block=(4, 4), low=1.0, high=5.0, factor="impulse", background=None,
                       background_var=None, min_counts=100, attenuation_factor=1.0, resolution_fwhm_kev=0.8,
                       li_content=0.5) -> SMap:
    """S-parameter map on blocks of pixels: each block's pixels summed in p_z (own theta), then eq. (4).

    For maps whose single pixels hold too few counts. Parameters as for
    :func:`s_parameter_map`; ``block`` = (rows, cols) per block. Trailing rows and
    columns that do not fill a block are left out. Returns an SMap of shape
    (rows // block[0], cols // block[1]).
    """
    br, bc = int(block[0]), int(block[1])
    if br < 1 or bc < 1:
        raise ConfigError(f"s_parameter_blocks: block must be positive, found {block}")
    rows, cols = cube.shape
    nr, nc = rows // br, cols // bc
    if nr == 0 or nc == 0:
        raise ConfigError(f"s_parameter_blocks: a {br}x{bc} block does not fit a {rows}x{cols} cube")
    t = _window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev,
                      li_content).reshape(rows, cols, 7)
    t = np.where(np.isfinite(t), t, 0.0)[: nr * br, : nc * bc]
    sums = t.reshape(nr, br, nc, bc, 7).sum(axis=(1, 3))
    s, s_err = _ratio(sums[..., 0], sums[..., 1], sums[..., 2], sums[..., 3], sums[..., 4])
    ok = (sums[..., 5] >= min_counts) & (sums[..., 6] >= min_counts) & (sums[..., 0] > 0) & (sums[..., 1] > 0) & np.isfinite(s)
    return SMap(np.where(ok, s * attenuation_factor, np.nan), np.where(ok, s_err * attenuation_factor, np.nan), ok,
                sums[..., 0], sums[..., 1], sums[..., 5], sums[..., 6], float(low), float(high), factor,
                float(attenuation_factor))


def s_parameter_region(cube, e1_kev, theta, mask=None, low=1.0, high=5.0, factor="impulse", background=None,
                       background_var=None, attenuation_factor=1.0, resolution_fwhm_kev=0.8, li_content=0.5):
    """S-parameter of a region: the pixels' spectra summed (in p_z, each with its own theta), then eq. (4).

    With a single theta this is exactly S of the summed spectrum; with theta per pixel each
    pixel's counts enter at its own p_z, so pixels at different angles do not blur the
    profile. Pixels without a finite theta are left out.

    Returns
    -------
    (float, float)
        S and sigma_S.
    """
    t = _window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev,
                      li_content)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != cube.shape:
            raise ConfigError(f"s_parameter_region: expected a mask of shape {cube.shape}, found {mask.shape}")
        t = t[mask.reshape(-1)]
    t = t[np.all(np.isfinite(t), axis=1)]
    sums = t.sum(axis=0)
    if not (sums[0] > 0 and sums[1] > 0):
        raise ConfigError(f"s_parameter_region: the region has no positive signal in both windows "
                          f"(S_L={sums[0]:.3g}, S_H={sums[1]:.3g}) over {len(t)} pixels")
    s, s_err = _ratio(*sums[:5])
    return float(s * attenuation_factor), float(s_err * attenuation_factor)


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
    if factor not in FACTORS:
        raise ConfigError(f"region_profile: factor must be one of {FACTORS}, found {factor!r}")
    theta_map = np.broadcast_to(np.asarray(theta, dtype=np.float64), cube.shape)
    pz_edges = np.arange(-10.0, 10.0001, 0.2) if pz_edges is None else np.asarray(pz_edges, dtype=np.float64)
    if pz_edges.ndim != 1 or pz_edges.size < 2 or np.any(np.diff(pz_edges) <= 0):
        raise ConfigError("region_profile: pz_edges must be an increasing 1-d array of at least 2 edges")
    pick = mask & np.isfinite(theta_map)
    pixels = np.flatnonzero(pick.reshape(-1))
    counts = cube.counts.reshape(cube.shape[0] * cube.shape[1], -1)
    if background is not None:
        ok = np.asarray(background.ok).reshape(-1)
        bg_lin = np.stack([np.where(ok, background.b0.reshape(-1), 0.0), np.where(ok, background.b1.reshape(-1), 0.0),
                           np.where(ok, background.center.reshape(-1), 0.0)], axis=1)
        bg_err = np.nan_to_num(np.stack([np.where(ok, background.b0_err.reshape(-1), 0.0),
                                         np.where(ok, background.b1_err.reshape(-1), 0.0)], axis=1))
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
        t0 = float(np.mean(thetas))
        ec = compton_energy(e1_kev, t0)
        res_au = float(resolution_fwhm_kev * (pz_from_energy(ec + 1e-3, e1_kev, t0) - pz_from_energy(ec - 1e-3, e1_kev, t0)) / 2e-3)
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
            pa = _pz(edges[i], e1, cos_t)
            pb = _pz(edges[i + 1], e1, cos_t)
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
            pe[i] = _pz(edges[i0 + i], e1, cos_t)
        weights = np.zeros((nnew, m))
        for j in range(nnew):
            _add_window_weights(pe, pz_edges[j], pz_edges[j + 1], weights[j])
        g = np.empty(m)
        net = np.empty(m)
        n = np.empty(m)
        bw = np.empty(m)
        e2c = np.zeros(m)
        for i in range(m):
            ea = edges[i0 + i]
            eb = edges[i0 + i + 1]
            bw[i] = eb - ea
            if impulse:
                e2 = 0.5 * (ea + eb)
                qc = math.sqrt(e1 * e1 + e2 * e2 - 2.0 * e1 * e2 * cos_t)
                g[i] = (e1 / e2) * qc / MC2_KEV / (eb - ea)
            else:
                g[i] = 1.0 / (pe[i + 1] - pe[i])
            n[i] = np.float64(counts[k, i0 + i])
            net[i] = n[i]
            if use_lin:
                e2c[i] = 0.5 * (ea + eb) - bg_lin[k, 2]
                net[i] -= bw[i] * (bg_lin[k, 0] + bg_lin[k, 1] * e2c[i])
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


def theta_map_from_peaks(peaks, e1_kev) -> np.ndarray:
    """Scattering angle per pixel (rad) from fitted Compton peak centres (PHYSICS.md section 3); NaN where not ok."""
    theta = theta_from_peak_energy(np.where(peaks.ok, peaks.center, np.nan), e1_kev)
    return np.where(peaks.ok, theta, np.nan)
