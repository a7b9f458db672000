"""Per-pixel energy calibration against an Am-241 source.

From a cube of per-pixel spectra in ADU (``SpectralCube`` with unit "ADU") this module
finds, for every pixel, the linear map E = ADU * gradient + intercept (PHYSICS.md 5),
the energy resolution (FWHM at 59.54 keV), a good-pixel mask with the reason for each
rejection, and a threshold suggestion from the noise edge.

Stages, all vectorised over pixels (serial nogil numba kernels run on pixel blocks in
threads, which compile several seconds faster than a ``parallel=True`` kernel):

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
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..errors import CalibrationError, ConfigError
from ..spectra import SpectralCube, histogram_events
from .lines import AM241_CALIBRATION_LINES

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
ADC_MAX_ADU = 16383

# ------------------------------------------------------------------ reason bits
DEAD = 1
HOT = 2
NO_PHOTOPEAK = 4
LOW_COUNTS = 8
FIT_FAILED = 16
TOO_FEW_LINES = 32
FWHM_TOO_LARGE = 64
GRADIENT_OUTLIER = 128
LARGE_RESIDUAL = 256

#: reason bit -> name (stored with every calibration file)
REASONS = {
    DEAD: "dead",
    HOT: "hot",
    NO_PHOTOPEAK: "no_photopeak",
    LOW_COUNTS: "low_counts",
    FIT_FAILED: "fit_failed",
    TOO_FEW_LINES: "too_few_lines",
    FWHM_TOO_LARGE: "fwhm_too_large",
    GRADIENT_OUTLIER: "gradient_outlier",
    LARGE_RESIDUAL: "large_residual",
}

# Line-fit windows in keV around each line (low, high offsets) for a 0.8 keV FWHM
# detector; they widen in proportion when the measured photopeak is broader. The
# photopeak window reaches further down to hold its low-energy tail.
_PHOTOPEAK_WINDOW_KEV = (-5.0, 2.5)
_LINE_WINDOW_KEV = (-1.0, 1.0)
# The 26.34 keV window stops short of Te K-alpha (27.2-27.47 keV), which fluorescence
# between neighbouring pixels can put into the spectrum.
_WINDOWS_KEV = {26.3446: (-1.0, 0.75)}


# ====================================================================== results

@dataclass
class EnergyCalibration:
    """Per-pixel energy calibration E = ADU * gradient + intercept (PHYSICS.md 5).

    All maps are (rows, cols). Pixels without a calibration (no photopeak, fewer than
    two lines) hold gradient 0 and intercept 0, the convention of existing HEXITEC
    tools for "not calibrated"; ``good`` and ``reasons`` say which pixels to trust.

    Attributes
    ----------
    gradients : ndarray float64
        keV per ADU.
    intercepts : ndarray float64
        keV.
    fwhm_kev : ndarray float64
        FWHM of the Gaussian core of the 59.54 keV photopeak in keV (NaN where not fitted).
    good : ndarray bool
        True where no reason bit is set.
    reasons : ndarray uint16
        OR of reason bits (see ``REASONS``); 0 for good pixels.
    threshold_adu : ndarray float64
        Suggested threshold in ADU: noise centre + ``threshold_sigmas`` noise sigma, from a
        Gaussian fit to the falling flank of the noise peak; where the spectra show no
        noise peak (readouts that clip it at 0 ADU), zero energy (-intercept/gradient)
        + ``threshold_sigmas`` photopeak sigma, at least 0 (NaN where neither exists).
    threshold_from_noise_peak : ndarray bool
        True where the threshold came from a measured noise peak.
    gradient_err, intercept_err, fwhm_err_kev : ndarray float64
        One-sigma uncertainties.
    quadratic : ndarray float64 or None
        keV per ADU^2 of the optional quadratic fit E = q ADU^2 + g' ADU + c' (the
        linear maps above stay the straight-line fit).
    line_energies_kev : ndarray (n_lines,)
    centroids_adu, centroid_err_adu : ndarray (rows, cols, n_lines)
        Fitted Gaussian centres (NaN where a line was not used).
    residuals_kev : ndarray (rows, cols, n_lines)
        Line energy minus the straight-line prediction at the fitted centroid.
    photopeak_counts : ndarray float64
        Fitted counts in the 59.54 keV photopeak (Gaussian core and tail).
    tail_fraction : ndarray float64
        Fraction of the photopeak counts in its low-energy tail.
    noise_sigma_adu : ndarray float64
        Noise sigma from the noise-peak flank (NaN where none).
    signal_counts : ndarray int64
        Counts above the noise region (used for dead and hot pixels).
    parameters : dict
        The options the calibration was computed with.
    """

    gradients: np.ndarray
    intercepts: np.ndarray
    fwhm_kev: np.ndarray
    good: np.ndarray
    reasons: np.ndarray
    threshold_adu: np.ndarray
    gradient_err: np.ndarray
    intercept_err: np.ndarray
    fwhm_err_kev: np.ndarray
    line_energies_kev: np.ndarray
    centroids_adu: np.ndarray
    centroid_err_adu: np.ndarray
    residuals_kev: np.ndarray
    photopeak_counts: np.ndarray
    tail_fraction: np.ndarray
    noise_sigma_adu: np.ndarray
    signal_counts: np.ndarray
    threshold_from_noise_peak: np.ndarray | None = None
    quadratic: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.gradients.shape

    @property
    def n_good(self) -> int:
        return int(np.count_nonzero(self.good))

    def reason_counts(self) -> dict:
        """Number of pixels carrying each reason bit, by reason name."""
        return {name: int(np.count_nonzero(self.reasons & bit)) for bit, name in REASONS.items()}

    def thresholds(self, masked_adu: float = ADC_MAX_ADU) -> np.ndarray:
        """Threshold map in ADU for processing: the suggestion for good pixels, ``masked_adu`` elsewhere.

        A threshold at the top of the 14-bit range switches a pixel off, which is how
        existing HEXITEC threshold files mask bad pixels.
        """
        thr = np.where(self.good & np.isfinite(self.threshold_adu), self.threshold_adu, masked_adu)
        return np.ceil(thr)

    def summary(self) -> str:
        """One line: "FWHM at 59.54 keV: 0.79 +- 0.15 keV over 6391 good pixels"."""
        f = self.fwhm_kev[self.good]
        if f.size == 0:
            return f"FWHM at 59.54 keV: no good pixels out of {self.good.size}"
        return f"FWHM at 59.54 keV: {np.mean(f):.2f} +- {np.std(f):.2f} keV over {f.size} good pixels"

    def to_config(self, base=None, threshold: bool = False):
        """A ProcessingConfig using these maps (``base`` supplies the other options).

        With ``threshold=True`` the threshold map of :meth:`thresholds` is used as well.
        """
        from ..config import ProcessingConfig
        base = base or ProcessingConfig()
        changes = dict(gradients=self.gradients, intercepts=self.intercepts)
        if threshold:
            changes["threshold"] = self.thresholds()
        if base.bins is not None and not base.calibrated:
            changes["bins"] = None   # ADU bins make no sense once calibrated
        return base.replace(**changes)

    def arrays(self) -> dict:
        """Arrays for the hexspec HDF5 results group (FORMATS.md /entry/results/calibration)."""
        out = {
            "gradients": self.gradients, "intercepts": self.intercepts, "fwhm_kev": self.fwhm_kev,
            "good": self.good.astype(np.uint8), "reasons": self.reasons, "threshold_adu": self.threshold_adu,
            "thresholds": self.thresholds(),
            "gradient_err": self.gradient_err, "intercept_err": self.intercept_err, "fwhm_err_kev": self.fwhm_err_kev,
            "line_energies_kev": self.line_energies_kev, "centroids_adu": self.centroids_adu,
            "centroid_err_adu": self.centroid_err_adu, "residuals_kev": self.residuals_kev,
            "photopeak_counts": self.photopeak_counts, "tail_fraction": self.tail_fraction,
            "noise_sigma_adu": self.noise_sigma_adu, "signal_counts": self.signal_counts,
        }
        if self.threshold_from_noise_peak is not None:
            out["threshold_from_noise_peak"] = self.threshold_from_noise_peak.astype(np.uint8)
        if self.quadratic is not None:
            out["quadratic"] = self.quadratic
        return out

    def attrs(self) -> dict:
        """Attributes for the results group: parameters, reason names, units, summary."""
        return {
            "method": "am241", "summary": self.summary(), "n_good": self.n_good,
            "reason_bits": {name: bit for bit, name in REASONS.items()},
            "units": {"gradients": "keV/ADU", "intercepts": "keV", "fwhm_kev": "keV", "threshold_adu": "ADU",
                      "thresholds": "ADU", "centroids_adu": "ADU", "residuals_kev": "keV", "quadratic": "keV/ADU^2"},
            "parameters": self.parameters,
        }

    def __repr__(self) -> str:
        return f"EnergyCalibration({self.shape[0]}x{self.shape[1]} pixels; {self.summary()})"


# ====================================================================== line-shape kernels

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


@njit(cache=True, nogil=True)
def _exp_erfc(a, z):
    """exp(a) * erfc(z) without overflow; for large z uses erfc(z) = exp(-z^2) erfcx(z)."""
    if z < 5.0:
        return math.exp(a) * math.erfc(z)
    iz2 = 1.0 / (z * z)
    erfcx = _INV_SQRT_PI / z * (1.0 - 0.5 * iz2 + 0.75 * iz2 * iz2 - 1.875 * iz2 * iz2 * iz2)
    return math.exp(a - z * z) * erfcx


@njit(cache=True, nogil=True)
def _shape_cdfs(x, mu, sigma, beta, want_tail):
    """CDFs at x of the unit-area Gaussian core and of its low-energy tail.

    The tail is X = mu + N(0, sigma) - Exp(beta) (an exponentially modified Gaussian
    mirrored to low energies). With y = mu - x, its CDF is
    Phi((x - mu)/sigma) + 1/2 exp(-y/beta + sigma^2/(2 beta^2)) erfc((sigma/beta - y/sigma)/sqrt 2).
    """
    u = (x - mu) / sigma
    g = 0.5 * math.erfc(-u / _SQRT2)
    if not want_tail:
        return g, 0.0
    y = mu - x
    a = -y / beta + 0.5 * (sigma / beta) ** 2
    z = (sigma / beta - y / sigma) / _SQRT2
    return g, g + 0.5 * _exp_erfc(a, z)


@njit(cache=True, nogil=True)
def _components(edges, mu, sigma, beta, want_tail, gcol, tcol):
    """Bin integrals of the unit-area Gaussian (gcol) and tail (tcol) over ``edges``."""
    g0, t0 = _shape_cdfs(edges[0], mu, sigma, beta, want_tail)
    for j in range(edges.shape[0] - 1):
        g1, t1 = _shape_cdfs(edges[j + 1], mu, sigma, beta, want_tail)
        gcol[j] = g1 - g0
        tcol[j] = t1 - t0
        g0, t0 = g1, t1


@njit(cache=True, nogil=True)
def _model(p, gcol, tcol, wcol, qcol, out):
    for j in range(out.shape[0]):
        out[j] = p[0] * gcol[j] + p[1] * tcol[j] + p[2] * wcol[j] + p[3] * qcol[j]


@njit(cache=True, nogil=True)
def _deviance(n, m):
    """Poisson deviance 2 sum(m - n + n ln(n/m))."""
    d = 0.0
    for j in range(n.shape[0]):
        mj = max(m[j], 1e-12)
        if n[j] > 0:
            d += mj - n[j] + n[j] * math.log(n[j] / mj)
        else:
            d += mj
    return 2.0 * d


@njit(cache=True, nogil=True)
def _solve_inplace(a, b, k):
    """Solve a[:k,:k] x = b[:k] by Gaussian elimination with partial pivoting; False if singular."""
    for c in range(k):
        piv = c
        best = abs(a[c, c])
        for r in range(c + 1, k):
            if abs(a[r, c]) > best:
                best = abs(a[r, c])
                piv = r
        if best < 1e-300:
            return False
        if piv != c:
            for cc in range(k):
                tmp = a[c, cc]
                a[c, cc] = a[piv, cc]
                a[piv, cc] = tmp
            tmp = b[c]
            b[c] = b[piv]
            b[piv] = tmp
        for r in range(c + 1, k):
            f = a[r, c] / a[c, c]
            if f != 0.0:
                for cc in range(c, k):
                    a[r, cc] -= f * a[c, cc]
                b[r] -= f * b[c]
    for c in range(k - 1, -1, -1):
        s = b[c]
        for cc in range(c + 1, k):
            s -= a[c, cc] * b[cc]
        b[c] = s / a[c, c]
    return True


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
def fit_line_window(edges, counts, p, lo, hi, active, with_tail, max_iter, perr, tie_share=-1.0,
                    tie_beta_per_sigma=-1.0):
    """Poisson maximum-likelihood fit of one line in one window (Levenberg-Marquardt).

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
        three shape parameters need finite differences.
    """
    n = counts.shape[0]
    # Background b_low (1 - t) + b_high t with t = (x - x_low) / (x_high - x_low): two
    # non-negative levels at the window edges keep it positive everywhere inside.
    xl = edges[0]
    span = edges[-1] - edges[0]
    wcol = np.empty(n)
    qcol = np.empty(n)
    for j in range(n):
        t0 = (edges[j] - xl) / span
        t1 = (edges[j + 1] - xl) / span
        qcol[j] = 0.5 * (t1 * t1 - t0 * t0) * span
        wcol[j] = (edges[j + 1] - edges[j]) - qcol[j]
    gcol = np.empty(n)
    tcol = np.empty(n)
    g2 = np.empty(n)
    t2 = np.empty(n)
    m = np.empty(n)
    m2 = np.empty(n)
    jac = np.empty((N_PAR, n))
    idx = np.empty(N_PAR, np.int64)
    k = 0
    for q in range(N_PAR):
        if active[q]:
            idx[k] = q
            k += 1
    amat = np.empty((N_PAR, N_PAR))
    work = np.empty((N_PAR, N_PAR))
    grad = np.empty(N_PAR)
    step = np.empty(N_PAR)
    sub = np.empty(N_PAR)
    free = np.empty(N_PAR, np.int64)
    trial = np.empty(N_PAR)

    _clamp(p, lo, hi, tie_share, tie_beta_per_sigma)
    _components(edges, p[4], p[5], p[6], with_tail, gcol, tcol)
    _model(p, gcol, tcol, wcol, qcol, m)
    dev = _deviance(counts, m)
    lam = 1e-3
    converged = False
    for it in range(max_iter):
        # Jacobian: linear columns exactly, shape parameters by forward differences.
        for a in range(k):
            q = idx[a]
            if q == 0:
                share = tie_share if tie_share > 0.0 else 0.0
                for j in range(n):
                    jac[a, j] = gcol[j] + share * tcol[j]
            elif q == 1:
                for j in range(n):
                    jac[a, j] = tcol[j]
            elif q == 2:
                for j in range(n):
                    jac[a, j] = wcol[j]
            elif q == 3:
                for j in range(n):
                    jac[a, j] = qcol[j]
            else:
                h = 1e-6 * max(abs(p[q]), p[5])
                for qq in range(N_PAR):
                    trial[qq] = p[qq]
                trial[q] += h
                if tie_beta_per_sigma > 0.0:
                    trial[6] = tie_beta_per_sigma * trial[5]
                _components(edges, trial[4], trial[5], trial[6], with_tail, g2, t2)
                _model(trial, g2, t2, wcol, qcol, m2)
                for j in range(n):
                    jac[a, j] = (m2[j] - m[j]) / h
        for a in range(k):
            s = 0.0
            for j in range(n):
                s += jac[a, j] * (counts[j] - m[j]) / max(m[j], 1e-3)
            grad[a] = s
            for b in range(a, k):
                s = 0.0
                for j in range(n):
                    s += jac[a, j] * jac[b, j] / max(m[j], 1e-3)
                amat[a, b] = s
                amat[b, a] = s
        # Active set: a parameter resting on a bound that the likelihood pushes further
        # out is held for this iteration (projected steps along it only stall the fit).
        nf = 0
        for a in range(k):
            q = idx[a]
            if (p[q] <= lo[q] and grad[a] <= 0.0) or (p[q] >= hi[q] and grad[a] >= 0.0):
                continue
            free[nf] = a
            nf += 1
        accepted = False
        for _ in range(12):
            for a in range(k):
                step[a] = 0.0
            for u in range(nf):
                for v in range(nf):
                    work[u, v] = amat[free[u], free[v]]
                work[u, u] = amat[free[u], free[u]] * (1.0 + lam) + 1e-30
                sub[u] = grad[free[u]]
            if not _solve_inplace(work, sub, nf):
                lam *= 10.0
                continue
            for u in range(nf):
                step[free[u]] = sub[u]
            for qq in range(N_PAR):
                trial[qq] = p[qq]
            for a in range(k):
                trial[idx[a]] += step[a]
            _clamp(trial, lo, hi, tie_share, tie_beta_per_sigma)
            _components(edges, trial[4], trial[5], trial[6], with_tail, g2, t2)
            _model(trial, g2, t2, wcol, qcol, m2)
            dev2 = _deviance(counts, m2)
            if dev2 <= dev:
                accepted = True
                break
            lam *= 8.0
        if not accepted:
            converged = True   # no direction lowers the deviance: at the minimum
            break
        small = abs(trial[4] - p[4]) < 1e-4 * p[5] and abs(trial[5] - p[5]) < 1e-4 * p[5]
        for qq in range(N_PAR):
            p[qq] = trial[qq]
        for j in range(n):
            gcol[j] = g2[j]
            tcol[j] = t2[j]
            m[j] = m2[j]
        change = dev - dev2
        dev = dev2
        lam = max(lam * 0.2, 1e-7)
        # deviance is chi-square-like: changes below 1e-3 carry no information
        if change < 1e-3 and small:
            converged = True
            break
    # Errors from the inverse Fisher information. Parameters resting on a bound (a
    # background or tail amplitude at 0) count as fixed, and so does the tail length
    # when there is no tail: they would make the information matrix singular.
    for a in range(N_PAR):
        perr[a] = np.nan
    nf = 0
    for a in range(k):
        q = idx[a]
        if q != 4 and q != 5 and (p[q] <= lo[q] or p[q] >= hi[q]):
            continue
        if q == 6 and p[1] <= lo[1]:
            continue
        free[nf] = a
        nf += 1
    for u in range(nf):
        for v in range(nf):
            s = 0.0
            for j in range(n):
                s += jac[free[u], j] * jac[free[v], j] / max(m[j], 1e-3)
            amat[u, v] = s
    for u in range(nf):
        for v in range(nf):
            for w in range(nf):
                work[v, w] = amat[v, w]
            sub[v] = 0.0
        sub[u] = 1.0
        if _solve_inplace(work, sub, nf) and sub[u] > 0:
            perr[idx[free[u]]] = math.sqrt(sub[u])
    return converged, dev


# ====================================================================== photopeak search

def _smoothing_matrix(centers, widths, rel_sigma):
    """CSR weights of a Gaussian smoothing whose sigma is ``rel_sigma`` x ADU (at least one bin).

    Relative smoothing matches peaks of constant relative width, so one setting serves
    pixels whose gains differ by +-20 %. The weights depend only on the bins, so they
    are computed once for all pixels.
    """
    nb = centers.size
    sig = np.maximum(rel_sigma * np.abs(centers), widths)
    lo = np.searchsorted(centers, centers - 3 * sig, side="left")
    hi = np.searchsorted(centers, centers + 3 * sig, side="right")
    ptr = np.zeros(nb + 1, np.int64)
    ptr[1:] = np.cumsum(hi - lo)
    idx = np.empty(ptr[-1], np.int64)
    w = np.empty(ptr[-1], np.float64)
    for j in range(nb):
        k = np.arange(lo[j], hi[j])
        wk = np.exp(-0.5 * ((centers[k] - centers[j]) / sig[j]) ** 2)
        idx[ptr[j]:ptr[j + 1]] = k
        w[ptr[j]:ptr[j + 1]] = wk / wk.sum() / widths[k]   # density: counts per ADU
    return ptr, idx, w, sig


@njit(cache=True, nogil=True)
def _smooth(row, ptr, idx, w, s):
    for j in range(s.shape[0]):
        acc = 0.0
        for t in range(ptr[j], ptr[j + 1]):
            acc += w[t] * row[idx[t]]
        s[j] = acc


@njit(cache=True, nogil=True)
def _interp(s, centers, x):
    nb = centers.shape[0]
    if x <= centers[0] or x >= centers[nb - 1]:
        return 0.0
    # centres are uniform or nearly so: start from a guess and walk
    j = int((x - centers[0]) / (centers[nb - 1] - centers[0]) * (nb - 1))
    j = min(max(j, 0), nb - 2)
    while j > 0 and centers[j] > x:
        j -= 1
    while j < nb - 2 and centers[j + 1] < x:
        j += 1
    f = (x - centers[j]) / (centers[j + 1] - centers[j])
    return s[j] * (1.0 - f) + s[j + 1] * f


@njit(cache=True, nogil=True)
def _locate_kernel(first, last, counts, centers, sig, ptr, idx, w, strong_fraction, low_ratio, min_counts,
                   anchor_kev, template_kev, c_lo, c_hi, c_step, peak_adu, offset_kev, score):
    """Per pixel: photopeak position (ADU) and the intercept (keV) that best aligns the other lines."""
    nb = counts.shape[1]
    for p in range(first, last):
        row = counts[p]
        s = np.empty(nb)
        _smooth(row, ptr, idx, w, s)
        peak_adu[p] = np.nan
        offset_kev[p] = np.nan
        score[p] = 0.0
        found = -1
        for j in range(nb - 2, 0, -1):
            if s[j] <= 0.0 or s[j] < s[j - 1] or s[j] <= s[j + 1]:
                continue
            # tallest structure between low_ratio x position and the candidate
            xlow = low_ratio * centers[j]
            tallest = 0.0
            for jj in range(j, -1, -1):
                if centers[jj] < xlow:
                    break
                if s[jj] > tallest:
                    tallest = s[jj]
            if s[j] < strong_fraction * tallest:
                continue
            raw = 0.0
            for jj in range(nb):
                if abs(centers[jj] - centers[j]) <= 2.0 * sig[j]:
                    raw += row[jj]
            if raw < min_counts:
                continue
            found = j
            break
        if found < 0:
            continue
        j = found
        den = s[j - 1] - 2.0 * s[j] + s[j + 1]
        shift = 0.0
        if den < 0.0:
            shift = 0.5 * (s[j - 1] - s[j + 1]) / den
            shift = min(max(shift, -0.5), 0.5)
        x59 = centers[j] + shift * (centers[j + 1] - centers[j - 1]) * 0.5
        peak_adu[p] = x59
        # Noise edge: the run of bins from the bottom where the noise peak towers over
        # the photopeak, then its falling flank; template lines below it score nothing.
        h59 = s[j]
        edge = 0
        while edge < j and s[edge] > 2.0 * h59:
            edge += 1
        while edge < j and s[edge + 1] < s[edge]:
            edge += 1
        x_edge = centers[edge] if edge > 0 else -1e300
        best = -1.0
        bestc = np.nan
        nsteps = int((c_hi[p] - c_lo[p]) / c_step) + 1
        for t in range(nsteps):
            c = c_lo[p] + t * c_step
            g = (anchor_kev - c) / x59
            if g <= 0.0:
                continue
            sc = 0.0
            for i in range(template_kev.shape[0]):
                x = (template_kev[i] - c) / g
                if x <= x_edge:
                    continue
                v = min(_interp(s, centers, x), 2.0 * h59)
                if v > 0.0:
                    sc += math.sqrt(v)
            if sc > best:
                best = sc
                bestc = c
        offset_kev[p] = bestc
        score[p] = best


# ====================================================================== per-pixel line fits

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
            # start values: background from the window's ends, area from the rest
            nedge = max(2, (j1 - j0) // 8)
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
            tied = tail and tie_share >= 0.0
            act[1] = tail and not tied
            act[6] = tail and not tied
            ok, dev = fit_line_window(ed, cn, par, lo, hi, act, tail, max_iter, err,
                                      tie_share if tied else -1.0, tie_beta_per_sigma if tied else -1.0)
            # a width pinned at a bound, or a centre at the window edge, is not a measurement
            if par[5] <= lo[5] * 1.0001 or par[5] >= hi[5] * 0.9999:
                ok = False
            if par[4] <= ed[0] + par[5] or par[4] >= ed[-1] - par[5]:
                ok = False
            if not (err[4] > 0.0):
                ok = False
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


# ====================================================================== noise edge

@njit(cache=True, nogil=True)
def _noise_kernel(counts, edges, upper_adu, out_mu, out_sigma):
    """Gaussian fit (quadratic in log counts, weights = counts) to the falling flank of the noise peak.

    The flank runs from the mode below ``upper_adu`` (the first bin is skipped when it
    holds the values clipped at 0 ADU) down to 1e-3 of the mode's height, 3 counts, or
    the valley where the counts stop falling, whichever comes first.
    """
    npix, nb = counts.shape
    for p in range(npix):
        out_mu[p] = np.nan
        out_sigma[p] = np.nan
        jmax = 0
        best = -1.0
        for j in range(nb):
            if edges[j] >= upper_adu[p]:
                break
            if counts[p, j] > best:
                best = counts[p, j]
                jmax = j
        if best <= 0:
            continue
        start = jmax
        if jmax == 0 and edges[0] <= 0.0:
            start = 1   # bin 0 holds the noise clipped at 0 ADU
        peak = counts[p, start]
        if peak <= 0:
            continue
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        t0 = 0.0
        t1 = 0.0
        t2 = 0.0
        used = 0
        xref = 0.5 * (edges[start] + edges[start + 1])
        prev = 1e300
        for j in range(start, nb):
            v = float(counts[p, j])
            if v < 1e-3 * peak or v < 3.0 or edges[j] >= upper_adu[p]:
                break
            if v >= prev and v < 0.05 * peak:
                break   # the valley: signal counts take over from the noise
            prev = v
            x = 0.5 * (edges[j] + edges[j + 1]) - xref
            y = math.log(v)
            s0 += v
            s1 += v * x
            s2 += v * x * x
            s3 += v * x * x * x
            s4 += v * x * x * x * x
            t0 += v * y
            t1 += v * x * y
            t2 += v * x * x * y
            used += 1
        # a noise peak must fall by at least 20x within the noise region
        if used < 3 or float(counts[p, start + used - 1]) > peak / 20.0 or peak < 20:
            continue
        # normal equations of y = a0 + a1 x + a2 x^2
        mat = np.array([[s0, s1, s2], [s1, s2, s3], [s2, s3, s4]])
        rhs = np.array([t0, t1, t2])
        if not _solve_inplace(mat, rhs, 3):
            continue
        a1 = rhs[1]
        a2 = rhs[2]
        if a2 >= 0.0:
            continue
        out_sigma[p] = math.sqrt(-0.5 / a2)
        out_mu[p] = xref - a1 / (2.0 * a2)


# ====================================================================== straight-line fit

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


# ====================================================================== public API

def _in_blocks(kernel, npix, *args, threads=None):
    """Run ``kernel(first, last, *args)`` over pixel blocks in threads (the kernels release the GIL)."""
    threads = threads or min(os.cpu_count() or 1, 8)
    if threads == 1 or npix < 64:
        kernel(0, npix, *args)
        return
    # more blocks than threads so that slow pixels (long fits) do not leave a core idle
    bounds = np.linspace(0, npix, 4 * threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(kernel, int(a), int(b), *args) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        for f in futures:
            f.result()



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
    anchor_kev = float(lines[0].energy_kev)
    line_kev = np.array([ln.energy_kev for ln in lines], np.float64)
    rows, cols = cube_adu.shape
    counts = _as_kernel_counts(cube_adu.counts.reshape(rows * cols, -1))
    edges = np.ascontiguousarray(cube_adu.edges, np.float64)
    centers = 0.5 * (edges[1:] + edges[:-1])
    widths = np.diff(edges)
    npix = counts.shape[0]

    # 1-2. photopeak and offset, then a narrower offset scan around the median
    ptr, idx, w, sig = _smoothing_matrix(centers, widths, smoothing)
    template = line_kev[1:]
    low_ratio = 0.18
    peak = np.empty(npix)
    offset = np.empty(npix)
    score = np.empty(npix)
    c_lo = np.full(npix, -15.0)
    c_hi = np.full(npix, 15.0)
    _in_blocks(_locate_kernel, npix, counts, centers, sig, ptr, idx, w, strong_fraction, low_ratio, 10.0,
               anchor_kev, template, c_lo, c_hi, 0.1, peak, offset, score, threads=threads)
    found = np.isfinite(peak) & np.isfinite(offset)
    if not np.any(found):
        raise CalibrationError(
            f"calibrate_am241: no pixel of the {rows} x {cols} cube shows an Am-241 photopeak "
            f"({int(counts.sum()) if counts.dtype.kind != 'f' else float(counts.sum()):g} counts over "
            f"{edges[0]:g}-{edges[-1]:g} ADU)")
    # Second, finer scan: around the median offset, wide enough for the spread of the
    # first-pass offsets (a pixel whose true offset lies outside would lock onto a wrong
    # alignment of the lines).
    c_med = float(np.median(offset[found]))
    lo5, hi95 = np.percentile(offset[found], [5, 95])
    half = max(4.0, 1.5 * float(hi95 - lo5))
    _in_blocks(_locate_kernel, npix, counts, centers, sig, ptr, idx, w, strong_fraction, low_ratio, 10.0,
               anchor_kev, template, np.full(npix, c_med - half), np.full(npix, c_med + half), 0.02, peak, offset,
               score, threads=threads)
    found = np.isfinite(peak) & np.isfinite(offset)
    g0 = np.where(found, (anchor_kev - offset) / np.where(found, peak, 1.0), np.nan)

    # 3. line fits
    win_lo = np.array([_PHOTOPEAK_WINDOW_KEV[0]] + [_WINDOWS_KEV.get(e, _LINE_WINDOW_KEV)[0] for e in line_kev[1:]])
    win_hi = np.array([_PHOTOPEAK_WINDOW_KEV[1]] + [_WINDOWS_KEV.get(e, _LINE_WINDOW_KEV)[1] for e in line_kev[1:]])
    nl = line_kev.size
    par = np.empty((npix, nl, N_PAR))
    err = np.empty((npix, nl, N_PAR))
    ok = np.empty((npix, nl), np.bool_)
    fit_args = (counts, edges, np.where(found, peak, np.nan), np.where(found, g0, np.nan),
                np.where(found, offset, np.nan), line_kev, win_lo, win_hi, 0.34, bool(fit_tail), int(max_iter))
    _in_blocks(_fit_kernel, npix, *fit_args, np.ones(npix, np.bool_), -1.0, -1.0, par, err, ok, threads=threads)
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
            _in_blocks(_fit_kernel, npix, *fit_args, weak, share, beta_per_sigma, par, err, ok, threads=threads)

    mu = par[:, :, 4]
    mu_err = err[:, :, 4]
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

    # 4. straight line; one pass of rejecting the worst line when it is far off
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

    fwhm = np.where(photo_ok, FWHM_PER_SIGMA * sigma_adu[:, 0] * g, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        fwhm_err = np.where(photo_ok, fwhm * np.hypot(err[:, 0, 5] / sigma_adu[:, 0], g_err / g), np.nan)
        tail_fraction = np.where(photo_ok, par[:, 0, 1] / area[:, 0], np.nan)

    # 5. noise edge and threshold: the noise region ends well below the lowest line
    calibrated = np.isfinite(g) & (g > 0)
    g_med = float(np.median(g[calibrated])) if np.any(calibrated) else float(np.nanmedian(g0))
    c_med = float(np.median(c[calibrated])) if np.any(calibrated) else c_med
    g_use = np.where(calibrated, g, g_med)
    c_use = np.where(calibrated, c, c_med)
    # The noise peak sits near 0 ADU (offset-corrected readout) whatever the intercept;
    # it is sought below half the ADU of the lowest line.
    upper = 0.5 * (float(line_kev.min()) - c_use) / g_use
    noise_mu = np.empty(npix)
    noise_sigma = np.empty(npix)
    _noise_kernel(counts, edges, upper, noise_mu, noise_sigma)
    threshold = noise_mu + threshold_sigmas * noise_sigma
    # Without a visible noise peak (offset-corrected readouts that clip the noise at
    # 0 ADU) the noise is centred at zero energy, ADU = -intercept / gradient, with the
    # photopeak's sigma (electronic noise dominates it): threshold there + k sigma.
    from_noise = np.isfinite(threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        fallback = np.maximum(-c / g + threshold_sigmas * sigma_adu[:, 0], 0.0)
    threshold = np.where(from_noise, threshold, np.where(calibrated & photo_ok, fallback, np.nan))
    signal = _counts_above(counts, edges, upper)

    # good-pixel criteria
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
    reasons[photo_ok & (area[:, 0] < min_peak_counts)] |= LOW_COUNTS
    # two lines always lie on a straight line: a third is needed to check the line identification
    reasons[photo_ok & (~calibrated | (use.sum(1) < min_lines))] |= TOO_FEW_LINES
    reasons[calibrated & ~(fwhm <= max_fwhm_kev)] |= FWHM_TOO_LARGE
    if np.any(calibrated):
        g_ref = np.median(g[calibrated & (reasons == 0)]) if np.any(calibrated & (reasons == 0)) else g_med
        reasons[calibrated & (np.abs(g / g_ref - 1.0) > gradient_tolerance)] |= GRADIENT_OUTLIER
    with np.errstate(invalid="ignore"):
        big = np.nanmax(np.where(use, np.abs(resid), 0.0), axis=1) > max_residual_kev
    reasons[calibrated & big] |= LARGE_RESIDUAL
    good = reasons == 0

    shape2 = (rows, cols)
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
        good=good.reshape(shape2),
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
    )


def _as_kernel_counts(flat):
    # Keep integer counts as they are (no 8-byte copy of a large cube); numba compiles one
    # kernel per dtype, so other dtypes are brought to one of two.
    if flat.dtype in (np.uint32, np.float64):
        return np.ascontiguousarray(flat)
    if flat.dtype.kind in "ui" and flat.size and flat.min() >= 0 and flat.max() <= np.iinfo(np.uint32).max:
        return np.ascontiguousarray(flat, dtype=np.uint32)
    return np.ascontiguousarray(flat, dtype=np.float64)


@njit(cache=True, nogil=True)
def _counts_above_kernel(counts, edges, upper, out):
    for p in range(counts.shape[0]):
        s = 0
        for j in range(counts.shape[1]):
            if edges[j] >= upper[p]:
                s += np.int64(counts[p, j])
        out[p] = s


def _counts_above(counts, edges, upper):
    out = np.empty(counts.shape[0], np.int64)
    _counts_above_kernel(counts, edges, np.nan_to_num(upper, nan=np.inf), out)
    return out


# ====================================================================== inputs

#: Default histogram for calibration: 4-ADU bins, about a third of the photopeak sigma of
#: HEXITEC (0.34 keV at about 0.025 keV/ADU).
DEFAULT_BIN_WIDTH_ADU = 4.0


@njit(cache=True, nogil=True)
def _histogram_frames(frames, width, counts, flow):
    """counts[pixel, value // width] += 1 for every pixel of every frame; flow = [over]."""
    n, r, c = frames.shape
    nb = counts.shape[1]
    inv = 1.0 / width
    for f in range(n):
        for i in range(r):
            for j in range(c):
                b = int(frames[f, i, j] * inv)
                if b < nb:
                    counts[i * c + j, b] += 1
                else:
                    flow[0] += 1


def _auto_max_adu(values, width):
    """Histogram range covering the photopeak: 1.5 x the 99.9th percentile of values above the noise."""
    v = np.asarray(values).reshape(-1)
    if v.size > 2_000_000:
        v = v[:: v.size // 2_000_000 + 1]
    hits = v[v > 0.02 * max(float(v.max()) if v.size else 0.0, 1.0)]
    top = float(np.percentile(hits, 99.9)) if hits.size else float(ADC_MAX_ADU)
    return float(min(ADC_MAX_ADU + 1, max(64 * width, math.ceil(1.5 * top / width) * width)))


class FrameSpectra:
    """Streaming per-pixel ADU histograms of raw frames (every pixel of every frame).

    No threshold and no charge-sharing correction: the noise peak stays in the spectra,
    which is what the threshold suggestion needs. Use :func:`cube_from_events` when
    charge-sharing handling is wanted.

    Parameters
    ----------
    shape : (rows, cols)
    bin_width_adu : float
    max_adu : float, optional
        Upper edge; default chosen from the first batch (1.5 x its 99.9th percentile of hits).
    """

    def __init__(self, shape, bin_width_adu: float = DEFAULT_BIN_WIDTH_ADU, max_adu=None):
        if bin_width_adu <= 0:
            raise ConfigError(f"FrameSpectra: bin_width_adu must be positive, found {bin_width_adu}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.width = float(bin_width_adu)
        self.max_adu = None if max_adu is None else float(max_adu)
        self._counts = None
        self._flow = np.zeros(1, np.int64)
        self.n_frames = 0

    def add(self, batch) -> None:
        frames = batch.frames if hasattr(batch, "frames") else np.asarray(batch, np.uint16)
        if frames.ndim == 2:
            frames = frames[None]
        if tuple(frames.shape[1:]) != self.shape:
            raise ConfigError(f"FrameSpectra: expected frames of {self.shape[0]} x {self.shape[1]} pixels, "
                              f"found {frames.shape[1]} x {frames.shape[2]}")
        if self._counts is None:
            if self.max_adu is None:
                self.max_adu = _auto_max_adu(frames, self.width)
            nb = int(math.ceil(self.max_adu / self.width))
            self._counts = np.zeros((self.shape[0] * self.shape[1], nb), np.uint32)
        _histogram_frames(np.ascontiguousarray(frames, np.uint16), self.width, self._counts, self._flow)
        self.n_frames += frames.shape[0]

    @property
    def cube(self) -> SpectralCube:
        if self._counts is None:
            raise CalibrationError("FrameSpectra: no frames were added")
        nb = self._counts.shape[1]
        return SpectralCube(self._counts.reshape(self.shape[0], self.shape[1], nb),
                            self.width * np.arange(nb + 1, dtype=np.float64), unit="ADU", overflow=int(self._flow[0]))


def cube_from_frames(frames, bin_width_adu: float = DEFAULT_BIN_WIDTH_ADU, max_adu=None) -> SpectralCube:
    """Per-pixel ADU spectra of raw frames (every pixel value of every frame, noise included).

    Parameters
    ----------
    frames : FrameBatch, ndarray (n, rows, cols), or an iterable of FrameBatch
    bin_width_adu, max_adu : float
        Bins [k w, (k+1) w); the default range comes from the first batch.

    Returns
    -------
    SpectralCube with unit "ADU".
    """
    if hasattr(frames, "frames") or isinstance(frames, np.ndarray):
        arr = frames.frames if hasattr(frames, "frames") else frames
        batches = [arr]
        shape = arr.shape[-2:]
    else:
        it = iter(frames)
        try:
            first = next(it)
        except StopIteration:
            raise CalibrationError("cube_from_frames: the frame source is empty") from None
        shape = first.shape if hasattr(first, "frames") else np.shape(first)[-2:]

        def chain():
            yield first
            yield from it
        batches = chain()
    acc = FrameSpectra(shape, bin_width_adu, max_adu)
    for b in batches:
        acc.add(b)
    return acc.cube


def cube_from_events(events, shape, bin_width_adu: float = DEFAULT_BIN_WIDTH_ADU, max_adu=None) -> SpectralCube:
    """Per-pixel ADU spectra of events whose energies are in ADU.

    Parameters
    ----------
    events : EventList or an iterable of EventList
    shape : (rows, cols)
    bin_width_adu, max_adu : float
        Bins from 0; the default range comes from the first list.
    """
    lists = [events] if hasattr(events, "energy") else events
    counts = None
    flow = np.zeros(2, np.int64)
    rows, cols = int(shape[0]), int(shape[1])
    for ev in lists:
        if counts is None:
            if max_adu is None:
                max_adu = _auto_max_adu(ev.energy, bin_width_adu) if len(ev) else float(ADC_MAX_ADU + 1)
            nb = int(math.ceil(max_adu / bin_width_adu))
            counts = np.zeros((rows * cols, nb), np.uint32)
        if len(ev) and (int(ev.row.max()) >= rows or int(ev.col.max()) >= cols):
            raise ConfigError(f"cube_from_events: events reach row {int(ev.row.max())}, col {int(ev.col.max())}, "
                              f"outside a {rows} x {cols} detector")
        histogram_events(ev.row, ev.col, ev.energy, cols, 0.0, float(bin_width_adu), counts, flow)
    if counts is None:
        raise CalibrationError("cube_from_events: no events")
    nb = counts.shape[1]
    return SpectralCube(counts.reshape(rows, cols, nb), bin_width_adu * np.arange(nb + 1, dtype=np.float64),
                        unit="ADU", underflow=int(flow[0]), overflow=int(flow[1]))


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
    from ..spectra import EnergyBins
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
