"""Compton peak fits: the "Lorentz-Gaussian" (pseudo-Voigt) model of PHYSICS.md section 4.

Two routes to the same least-squares answer:

- :func:`fit_peak` fits one spectrum with lmfit (a Model with bounded, named parameters;
  the lmfit result stays available as ``PeakFit.result``);
- :func:`fit_cube` fits every pixel of a SpectralCube at once with a batched
  Levenberg-Marquardt written in numba, started from robust moment estimates, and
  returns :class:`PeakMaps`.

Model (PHYSICS.md eq. 4), as counts per keV at energy E:

    f(E) = A [eta L(E; c, w) + (1 - eta) G(E; c, w)] + b0 + b1 (E - c)

The counts expected in an energy bin are f(bin centre) * bin width, so ``area`` A is in
counts and ``b0`` in counts per keV. Fits minimise the Poisson-weighted chi-square
sum (y - m)^2 / max(y, 1) (Neyman weights; the floor of 1 keeps empty bins finite) or,
with ``method="ml"``, the Poisson deviance 2 sum (m - y + y ln(y / m)) (maximum
likelihood, for low counts). Weights are absolute, so parameter uncertainties come from
the unscaled covariance (lmfit ``scale_covar=False``); ``redchi`` reports fit quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lmfit
import numpy as np
from numba import njit, prange
from scipy.special import voigt_profile

from .errors import ConfigError

MODELS = ("pseudo_voigt", "gaussian", "lorentzian", "voigt")
METHODS = ("ls", "ml")

_FOUR_LN2 = 4.0 * math.log(2.0)
_G_NORM = math.sqrt(_FOUR_LN2 / math.pi)

#: parameter order of the batched fitter
PARAM_NAMES = ("center", "fwhm", "area", "eta", "b0", "b1")

# status codes of the batched fitter
_CONVERGED, _MAX_ITER, _FEW_COUNTS, _BAD_START = 0, 1, 2, 3
_AT_BOUND, _NOT_SIGNIFICANT = 4, 5

#: ``PeakMaps.status``: why a pixel's fit is not ok (0 is the only ok status).
FIT_STATUS = {
    _CONVERGED: "converged",
    _MAX_ITER: "iteration limit reached",
    _FEW_COUNTS: "too few counts in the window (below min_counts)",
    _BAD_START: "no positive net peak above a straight line (no start values)",
    _AT_BOUND: "the centre or the FWHM ran onto a bound of the window",
    _NOT_SIGNIFICANT: "no significant peak (area below 3 standard errors, or its error undefined)",
}

#: Pixels with fewer counts in the window than this fit with the Lorentz fraction tied
#: to the summed spectrum's (``eta="auto"``): below it the data cannot fix eta, which
#: otherwise runs to 0 or 1 and drags the width and the background with it.
ETA_FREE_MIN_COUNTS = 5000

# Fast-math for the inner loops, keeping NaN/inf semantics (non-finite objectives must be seen).
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


# --------------------------------------------------------------------------- peak shapes

def gaussian_shape(energy_kev, center, fwhm):
    """Unit-area Gaussian of FWHM ``fwhm`` (keV): sqrt(4 ln2 / pi) / w exp(-4 ln2 (E-c)^2 / w^2), eq. (4)."""
    x = np.asarray(energy_kev, dtype=np.float64) - center
    return _G_NORM / fwhm * np.exp(-_FOUR_LN2 * x * x / (fwhm * fwhm))


def lorentzian_shape(energy_kev, center, fwhm):
    """Unit-area Lorentzian of FWHM ``fwhm`` (keV): (2/pi) w / (4 (E-c)^2 + w^2), eq. (4)."""
    x = np.asarray(energy_kev, dtype=np.float64) - center
    return (2.0 / math.pi) * fwhm / (4.0 * x * x + fwhm * fwhm)


def pseudo_voigt(energy_kev, center, fwhm, area, eta, b0=0.0, b1=0.0):
    """Pseudo-Voigt peak on a linear background in counts per keV, PHYSICS.md eq. (4).

    Parameters
    ----------
    energy_kev : ndarray
        Energies in keV.
    center, fwhm : float
        Peak centre c and shared FWHM w, keV.
    area : float
        Peak area A in counts.
    eta : float
        Lorentz fraction in [0, 1].
    b0, b1 : float
        Background b0 + b1 (E - c), counts per keV and counts per keV^2.
    """
    e = np.asarray(energy_kev, dtype=np.float64)
    shape = eta * lorentzian_shape(e, center, fwhm) + (1.0 - eta) * gaussian_shape(e, center, fwhm)
    return area * shape + b0 + b1 * (e - center)


def voigt(energy_kev, center, sigma, gamma, area, b0=0.0, b1=0.0):
    """Voigt peak (Gaussian sigma, Lorentzian half-width gamma, keV) on a linear background, counts per keV."""
    e = np.asarray(energy_kev, dtype=np.float64)
    return area * voigt_profile(e - center, sigma, gamma) + b0 + b1 * (e - center)


def voigt_fwhm(sigma, gamma):
    """FWHM of a Voigt profile (Olivero and Longbothum 1977, accurate to 0.02 %)."""
    f_g = 2.0 * sigma * math.sqrt(2.0 * math.log(2.0))
    f_l = 2.0 * gamma
    return 0.5346 * f_l + np.sqrt(0.2166 * f_l * f_l + f_g * f_g)


# lmfit model functions: counts per bin = counts per keV at the bin centre * bin width.
def _pv_counts(x, width, center, fwhm, area, eta, b0, b1):
    return width * pseudo_voigt(x, center, fwhm, area, eta, b0, b1)


def _voigt_counts(x, width, center, sigma, gamma, area, b0, b1):
    return width * voigt(x, center, sigma, gamma, area, b0, b1)


# --------------------------------------------------------------------------- results

@dataclass
class PeakFit:
    """Result of one peak fit (energies in keV, area in counts, b0 in counts/keV).

    ``eta`` is 0 for the Gaussian model, 1 for the Lorentzian and NaN for the Voigt
    (whose Lorentz and Gauss widths are in ``result.params``). An error is NaN when
    its parameter is fixed by the model or sits on a bound. ``result`` is the lmfit
    result (ModelResult, or MinimizerResult for ``method="ml"``).
    """

    center: float
    fwhm: float
    area: float
    eta: float
    b0: float
    b1: float
    center_err: float
    fwhm_err: float
    area_err: float
    eta_err: float
    b0_err: float
    b1_err: float
    redchi: float
    ok: bool
    model: str = "pseudo_voigt"
    method: str = "ls"
    window: tuple = (None, None)
    npoints: int = 0
    result: object = field(default=None, repr=False)

    def curve(self, energy_kev):
        """Fitted model in counts per keV at ``energy_kev``."""
        p = self.result.params
        if self.model == "voigt":
            return voigt(energy_kev, p["center"].value, p["sigma"].value, p["gamma"].value,
                         p["area"].value, p["b0"].value, p["b1"].value)
        return pseudo_voigt(energy_kev, self.center, self.fwhm, self.area, self.eta, self.b0, self.b1)

    def background(self, energy_kev):
        """Fitted linear background b0 + b1 (E - c) in counts per keV."""
        return self.b0 + self.b1 * (np.asarray(energy_kev, dtype=np.float64) - self.center)


@dataclass
class PeakMaps:
    """Per-pixel peak parameters from :func:`fit_cube`, each (rows, cols).

    Pixels with too few counts hold NaN; ``ok`` is False wherever a fit failed, did not
    converge, ran onto a bound of the centre or width, or found no significant peak
    (area below 3 standard errors). ``status`` says which (:data:`FIT_STATUS`): 0 converged
    and ok, 1 iteration limit, 2 too few counts, 3 no usable start, 4 centre or FWHM at a
    bound, 5 no significant peak. ``eta_tied`` is the summed spectrum's Lorentz fraction
    that pixels with few counts were fitted with (NaN if none was tied). Values are kept
    for every fitted pixel; filter with ``ok``.
    """

    center: np.ndarray
    fwhm: np.ndarray
    area: np.ndarray
    eta: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    center_err: np.ndarray
    fwhm_err: np.ndarray
    area_err: np.ndarray
    eta_err: np.ndarray
    b0_err: np.ndarray
    b1_err: np.ndarray
    redchi: np.ndarray
    ok: np.ndarray
    status: np.ndarray
    window: tuple = (None, None)
    method: str = "ls"
    eta_tied: float = float("nan")

    FIELDS = ("center", "fwhm", "area", "eta", "b0", "b1", "center_err", "fwhm_err", "area_err",
              "eta_err", "b0_err", "b1_err", "redchi", "ok", "status")

    @property
    def shape(self):
        return self.center.shape

    def to_dict(self) -> dict:
        """Arrays by name (for HDF5 results)."""
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_dict(cls, arrays: dict, attrs: dict | None = None) -> "PeakMaps":
        """PeakMaps from the arrays of :meth:`to_dict` (e.g. read back from /entry/results/peak_fit)."""
        missing = [k for k in cls.FIELDS if k not in arrays]
        if missing:
            raise ConfigError(f"PeakMaps: the fit results lack {', '.join(missing)}")
        attrs = attrs or {}
        fields = {k: np.asarray(arrays[k]) for k in cls.FIELDS}
        fields["ok"] = fields["ok"].astype(bool)
        window = tuple(attrs.get("window_kev", (None, None)))
        return cls(**fields, window=window, method=str(attrs.get("method", "ls")),
                   eta_tied=float(attrs.get("eta_tied", float("nan"))))

    def background_counts(self, edges_kev) -> np.ndarray:
        """Fitted linear background in counts per bin, shape (rows, cols, nbins); 0 where the fit is not ok."""
        edges = np.asarray(edges_kev, dtype=np.float64)
        centers = 0.5 * (edges[1:] + edges[:-1])
        widths = np.diff(edges)
        ok = self.ok[..., None]
        bg = (self.b0[..., None] + self.b1[..., None] * (centers - self.center[..., None])) * widths
        return np.where(ok, bg, 0.0)


# --------------------------------------------------------------------------- start values

@njit(cache=True, nogil=True)
def _start_estimates(x, y, bw, out):
    """Robust moment starts [center, fwhm, area, eta, b0, b1] from one windowed spectrum.

    Background: a line through the means of the outer tenths of the window; centre: the
    maximum of the 3-bin smoothed net spectrum refined by the centroid within one
    half-width; FWHM: the half-maximum crossings; area: the net counts. Returns False
    if there is no positive net peak.
    """
    n = x.shape[0]
    k = max(2, n // 10)
    yl = 0.0
    xl = 0.0
    yr = 0.0
    xr = 0.0
    for i in range(k):
        yl += y[i] / bw[i]
        xl += x[i]
        yr += y[n - 1 - i] / bw[n - 1 - i]
        xr += x[n - 1 - i]
    yl /= k
    xl /= k
    yr /= k
    xr /= k
    slope = (yr - yl) / (xr - xl)
    net = np.empty(n)
    for i in range(n):
        net[i] = y[i] / bw[i] - (yl + slope * (x[i] - xl))
    imax = 1
    best = -1e300
    for i in range(1, n - 1):
        s = (net[i - 1] + net[i] + net[i + 1]) / 3.0
        if s > best:
            best = s
            imax = i
    if not best > 0.0:
        return False
    half = 0.5 * best
    i0 = imax
    while i0 > 0 and net[i0] > half:
        i0 -= 1
    i1 = imax
    while i1 < n - 1 and net[i1] > half:
        i1 += 1
    fwhm = x[i1] - x[i0]
    minw = 2.0 * bw[imax]
    maxw = 0.5 * (x[n - 1] - x[0])
    fwhm = min(max(fwhm, minw), maxw)
    s0 = 0.0
    s1 = 0.0
    for i in range(n):
        if abs(x[i] - x[imax]) <= 0.5 * fwhm + bw[i] and net[i] > 0.0:
            s0 += net[i]
            s1 += net[i] * x[i]
    center = s1 / s0 if s0 > 0.0 else x[imax]
    area = 0.0
    for i in range(n):
        area += net[i] * bw[i]
    if not area > 0.0:
        area = best * fwhm
    out[0] = center
    out[1] = fwhm
    out[2] = area
    out[3] = 0.5
    out[4] = yl + slope * (center - xl)
    out[5] = slope
    return True


def start_values(energy_kev, counts, widths_kev=None) -> dict:
    """Robust moment start values for one windowed spectrum (the same as :func:`fit_cube` uses).

    Returns a dict with center, fwhm, area, eta, b0, b1, or raises ConfigError if the
    spectrum has no positive net peak.
    """
    x = np.ascontiguousarray(energy_kev, dtype=np.float64)
    y = np.ascontiguousarray(counts, dtype=np.float64)
    bw = _widths(x) if widths_kev is None else np.ascontiguousarray(widths_kev, dtype=np.float64)
    out = np.empty(6)
    if not _start_estimates(x, y, bw, out):
        raise ConfigError("start_values: no positive net peak above the linear background in the window")
    return dict(zip(PARAM_NAMES, out.tolist()))


def _widths(centers):
    c = np.asarray(centers, dtype=np.float64)
    if c.size < 2:
        raise ConfigError(f"need at least 2 energy bins, found {c.size}")
    edges = np.concatenate([[c[0] - 0.5 * (c[1] - c[0])], 0.5 * (c[1:] + c[:-1]), [c[-1] + 0.5 * (c[-1] - c[-2])]])
    return np.diff(edges)


# --------------------------------------------------------------------------- lmfit route

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


# --------------------------------------------------------------------------- batched numba route

@njit(cache=True, nogil=True, fastmath=_FAST)
def _model_jac(x, bw, p, f, jac):
    """Counts per bin f and Jacobian d f / d p (nbins, 6) of eq. (4) at parameters p."""
    c, w, a, eta, b0, b1 = p[0], p[1], p[2], p[3], p[4], p[5]
    g_norm = math.sqrt(4.0 * math.log(2.0) / math.pi)
    k = 4.0 * math.log(2.0)
    for i in range(x.shape[0]):
        d = x[i] - c
        e = math.exp(-k * d * d / (w * w))
        g = g_norm / w * e
        den = 4.0 * d * d + w * w
        lo = (2.0 / math.pi) * w / den
        shape = eta * lo + (1.0 - eta) * g
        f[i] = bw[i] * (a * shape + b0 + b1 * d)
        dg_dc = g * 2.0 * k * d / (w * w)
        dg_dw = g * (-1.0 / w + 2.0 * k * d * d / (w * w * w))
        dl_dc = (2.0 / math.pi) * w * 8.0 * d / (den * den)
        dl_dw = (2.0 / math.pi) * (4.0 * d * d - w * w) / (den * den)
        jac[i, 0] = bw[i] * (a * (eta * dl_dc + (1.0 - eta) * dg_dc) - b1)
        jac[i, 1] = bw[i] * a * (eta * dl_dw + (1.0 - eta) * dg_dw)
        jac[i, 2] = bw[i] * shape
        jac[i, 3] = bw[i] * a * (lo - g)
        jac[i, 4] = bw[i]
        jac[i, 5] = bw[i] * d


@njit(cache=True, nogil=True, fastmath=_FAST)
def _model_only(x, bw, p, f):
    """Counts per bin of eq. (4) without derivatives (trial steps that may be rejected)."""
    c, w, a, eta, b0, b1 = p[0], p[1], p[2], p[3], p[4], p[5]
    g_norm = math.sqrt(4.0 * math.log(2.0) / math.pi)
    k = 4.0 * math.log(2.0)
    for i in range(x.shape[0]):
        d = x[i] - c
        g = g_norm / w * math.exp(-k * d * d / (w * w))
        lo = (2.0 / math.pi) * w / (4.0 * d * d + w * w)
        f[i] = bw[i] * (a * (eta * lo + (1.0 - eta) * g) + b0 + b1 * d)


@njit(cache=True, nogil=True, fastmath=_FAST)
def _objective(y, f, ml):
    s = 0.0
    for i in range(y.shape[0]):
        if ml:
            if f[i] <= 0.0:
                return np.inf
            t = f[i] - y[i]
            if y[i] > 0.0:
                t += y[i] * math.log(y[i] / f[i])
            s += 2.0 * t
        else:
            r = y[i] - f[i]
            s += r * r / max(y[i], 1.0)
    return s


@njit(cache=True, nogil=True, fastmath=_FAST)
def _normal_equations(y, f, jac, ml, h, g):
    """H = J^T W J and g = J^T W (y - f) with W = 1/max(y,1) (ls) or 1/f (ml: Fisher scoring)."""
    npar = h.shape[0]
    h[:, :] = 0.0
    g[:] = 0.0
    for i in range(y.shape[0]):
        wt = 1.0 / f[i] if ml else 1.0 / max(y[i], 1.0)
        r = y[i] - f[i]
        for j in range(npar):
            wj = wt * jac[i, j]
            g[j] += wj * r
            for m in range(j + 1):
                h[j, m] += wj * jac[i, m]
    for j in range(npar):
        for m in range(j):
            h[m, j] = h[j, m]


@njit(cache=True, nogil=True)
def _cholesky_solve(a, b, x, lw):
    """Solve a x = b for symmetric positive-definite a (n <= 6) in place of x; False if not SPD."""
    n = a.shape[0]
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= lw[j, k] * lw[j, k]
        if not s > 0.0:
            return False
        lw[j, j] = math.sqrt(s)
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= lw[i, k] * lw[j, k]
            lw[i, j] = s / lw[j, j]
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= lw[i, k] * x[k]
        x[i] = s / lw[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= lw[k, i] * x[k]
        x[i] = s / lw[i, i]
    return True


@njit(cache=True, nogil=True)
def _fit_one(x, y, bw, p, lo, hi, free0, ml, max_iter, err):
    """Bounded Levenberg-Marquardt for one spectrum (active-set projection onto the bounds).

    A parameter on a bound whose gradient points outward is held for that step; steps are
    clipped to the bounds. Returns (objective, status, nfree); ``err`` receives standard
    errors from the unscaled inverse of J^T W J over the parameters not on a bound.
    """
    n = x.shape[0]
    npar = 6
    f = np.empty(n)
    jac = np.empty((n, npar))
    h = np.empty((npar, npar))
    g = np.empty(npar)
    a = np.empty((npar, npar))
    rhs = np.empty(npar)
    step = np.empty(npar)
    lw = np.empty((npar, npar))
    trial = np.empty(npar)
    active = np.empty(npar, np.bool_)
    _model_jac(x, bw, p, f, jac)
    chi2 = _objective(y, f, ml)
    if not np.isfinite(chi2):
        return chi2, _BAD_START, 0
    lam = 1e-4
    status = _MAX_ITER
    for it in range(max_iter):
        _normal_equations(y, f, jac, ml, h, g)
        for j in range(npar):
            at_lo = p[j] <= lo[j] and g[j] < 0.0
            at_hi = p[j] >= hi[j] and g[j] > 0.0
            active[j] = free0[j] and not (at_lo or at_hi)
        improved = False
        small_step = False
        while lam < 1e12:
            for j in range(npar):
                for m in range(npar):
                    a[j, m] = h[j, m] if (active[j] and active[m]) else 0.0
                if active[j]:
                    a[j, j] = h[j, j] * (1.0 + lam) + 1e-300
                    rhs[j] = g[j]
                else:
                    a[j, j] = 1.0
                    rhs[j] = 0.0
            if not _cholesky_solve(a, rhs, step, lw):
                lam *= 10.0
                continue
            rel = 0.0
            for j in range(npar):
                trial[j] = min(max(p[j] + step[j], lo[j]), hi[j])
                rel = max(rel, abs(trial[j] - p[j]) / (abs(p[j]) + 1e-8))
            _model_only(x, bw, trial, f)
            chi2_new = _objective(y, f, ml)
            if chi2_new <= chi2:
                done = (chi2 - chi2_new) <= 1e-9 * chi2 + 1e-14 or rel < 1e-9
                for j in range(npar):
                    p[j] = trial[j]
                _model_jac(x, bw, p, f, jac)
                chi2 = chi2_new
                lam = max(lam * 0.1, 1e-12)
                improved = True
                small_step = done
                break
            if rel < 1e-12:
                small_step = True
                break
            lam *= 10.0
        if not improved:
            _model_jac(x, bw, p, f, jac)
        if small_step or not improved:
            status = _CONVERGED
            break
    # Uncertainties from the unscaled covariance over the parameters off their bounds.
    _model_jac(x, bw, p, f, jac)
    _normal_equations(y, f, jac, ml, h, g)
    nfree = 0
    for j in range(npar):
        on_bound = p[j] <= lo[j] or p[j] >= hi[j]
        active[j] = free0[j] and not on_bound
        if active[j]:
            nfree += 1
    e_j = np.zeros(npar)
    col = np.empty(npar)
    for j in range(npar):
        err[j] = np.nan
    for j in range(npar):
        if not active[j]:
            continue
        for m in range(npar):
            for q in range(npar):
                a[m, q] = h[m, q] if (active[m] and active[q]) else 0.0
            if not active[m]:
                a[m, m] = 1.0
            e_j[m] = 0.0
        e_j[j] = 1.0
        if _cholesky_solve(a, e_j, col, lw) and col[j] > 0.0:
            err[j] = math.sqrt(col[j])
    return chi2, status, nfree


@njit(cache=True, nogil=True, parallel=True)
def _fit_all(x, y_all, bw, lo, hi, free0, eta_pix, ml, max_iter, min_counts, out, out_err, out_chi2, out_status,
             out_nfree):
    """Fit every pixel; ``eta_pix[k]`` fixes pixel k's Lorentz fraction (NaN leaves it to ``free0``)."""
    npix = y_all.shape[0]
    for k in prange(npix):
        y = y_all[k]
        total = 0.0
        for i in range(y.shape[0]):
            total += y[i]
        for j in range(6):
            out[k, j] = np.nan
            out_err[k, j] = np.nan
        out_chi2[k] = np.nan
        out_nfree[k] = 0
        if total < min_counts:
            out_status[k] = _FEW_COUNTS
            continue
        p = np.empty(6)
        if not _start_estimates(x, y, bw, p):
            out_status[k] = _BAD_START
            continue
        free = free0.copy()
        if not np.isnan(eta_pix[k]):
            free[3] = False
            p[3] = eta_pix[k]
        for j in range(6):
            p[j] = min(max(p[j], lo[j]), hi[j])
        err = np.empty(6)
        chi2, status, nfree = _fit_one(x, y, bw, p, lo, hi, free, ml, max_iter, err)
        for j in range(6):
            out[k, j] = p[j]
            out_err[k, j] = err[j]
        out_chi2[k] = chi2
        out_status[k] = status
        out_nfree[k] = nfree


def _energy_window(energy_window_kev, window, where):
    """The energy window given under its name or its former name ``window`` (DESIGN.md)."""
    if window is not None and energy_window_kev is not None:
        raise ConfigError(f"{where}: window is the former name of energy_window_kev; give one of them")
    return energy_window_kev if window is None else window


def fit_cube(cube, energy_window_kev=None, model="pseudo_voigt", method="ls", min_counts=50, max_iter=200,
             eta="auto", eta_free_min_counts=ETA_FREE_MIN_COUNTS, *, window=None) -> PeakMaps:
    """Fit the peak of every pixel of a SpectralCube at once, PHYSICS.md eq. (4).

    A batched Levenberg-Marquardt compiled with numba (hand-written because fitting
    thousands of small spectra through lmfit costs milliseconds each; this runs all
    pixels in parallel with analytic derivatives) minimises the same objective as
    :func:`fit_peak`, from the same robust moment starts, with the same bounds.

    Parameters
    ----------
    cube : SpectralCube
        Counts (rows, cols, nbins) with energy edges in keV.
    energy_window_kev : (emin, emax)
        Energy range in keV; the bins whose centres lie in it are fitted. ``window=``
        is its former name, still accepted.
    model : {"pseudo_voigt", "gaussian", "lorentzian"}
        Peak shape (Voigt is only available in :func:`fit_peak`).
    method : {"ls", "ml"}
        Poisson-weighted least squares or Poisson maximum likelihood (Fisher scoring).
    min_counts : float
        Pixels with fewer counts in the window are not fitted (NaN, status 2).
    max_iter : int
        Iteration limit per pixel.
    eta : "auto", "free" or float
        Lorentz fraction of the pseudo-Voigt. "auto" (default): the summed spectrum of all
        pixels is fitted first, and pixels with fewer than ``eta_free_min_counts`` counts
        in the window are fitted with eta fixed at its value (``PeakMaps.eta_tied``);
        "free": eta free in every pixel (it runs to its bounds at low counts); a number
        fixes eta everywhere.
    eta_free_min_counts : float
        Window counts from which a pixel fits its own eta with ``eta="auto"``.

    Returns
    -------
    PeakMaps
    """
    window = _energy_window(energy_window_kev, window, "fit_cube")
    if window is None:
        raise ConfigError("fit_cube: expected an energy window (emin, emax) in keV, found none")
    if model not in ("pseudo_voigt", "gaussian", "lorentzian"):
        raise ConfigError(f"fit_cube: model must be 'pseudo_voigt', 'gaussian' or 'lorentzian', found {model!r}")
    if method not in METHODS:
        raise ConfigError(f"fit_cube: method must be one of {METHODS}, found {method!r}")
    centers = cube.centers
    sel = np.flatnonzero((centers >= window[0]) & (centers <= window[1]))
    if sel.size < 8:
        raise ConfigError(f"fit_cube: the window {tuple(window)} keV holds {sel.size} bins of the cube; at least 8 are needed")
    x = np.ascontiguousarray(centers[sel])
    bw = np.ascontiguousarray(cube.widths[sel])
    rows, cols = cube.shape
    y_all = np.ascontiguousarray(cube.counts[:, :, sel[0]:sel[-1] + 1].reshape(rows * cols, sel.size), dtype=np.float64)
    b = _bounds(x, bw)
    lo = np.array([b["center"][0], b["fwhm"][0], 0.0, 0.0, -np.inf, -np.inf])
    hi = np.array([b["center"][1], b["fwhm"][1], np.inf, 1.0, np.inf, np.inf])
    free0 = np.ones(6, np.bool_)
    npix = rows * cols
    eta_pix = np.full(npix, np.nan)
    eta_tied = float("nan")
    if model != "pseudo_voigt":
        free0[3] = False
        eta_pix[:] = 0.0 if model == "gaussian" else 1.0
    elif isinstance(eta, str):
        if eta not in ("auto", "free"):
            raise ConfigError(f"fit_cube: eta must be 'auto', 'free' or a number in [0, 1], found {eta!r}")
        totals = y_all.sum(axis=1)
        few = totals < eta_free_min_counts
        if eta == "auto" and few.any():
            summed = fit_cube(SpectralCubeLike(y_all.sum(axis=0)[None, None, :], x, bw), (x[0], x[-1]),
                              method=method, min_counts=0, max_iter=max_iter, eta="free")
            if summed.ok[0, 0]:
                eta_tied = float(summed.eta[0, 0])
                eta_pix[few] = eta_tied
    else:
        eta_tied = float(eta)
        if not 0.0 <= eta_tied <= 1.0:
            raise ConfigError(f"fit_cube: a fixed eta must lie in [0, 1], found {eta}")
        eta_pix[:] = eta_tied
    out = np.empty((npix, 6))
    out_err = np.empty((npix, 6))
    chi2 = np.empty(npix)
    status = np.empty(npix, np.int64)
    nfree = np.empty(npix, np.int64)
    _fit_all(x, y_all, bw, lo, hi, free0, eta_pix, method == "ml", int(max_iter), float(min_counts),
             out, out_err, chi2, status, nfree)
    dof = np.maximum(sel.size - nfree, 1)
    if method == "ml":
        chi2 = _pearson_chi2(x, bw, y_all, out)
    redchi = chi2 / dof
    maps = {name: out[:, j].reshape(rows, cols) for j, name in enumerate(PARAM_NAMES)}
    errs = {name + "_err": out_err[:, j].reshape(rows, cols) for j, name in enumerate(PARAM_NAMES)}
    c, w, a = out[:, 0], out[:, 1], out[:, 2]
    eps = 1e-9
    with np.errstate(invalid="ignore"):
        ok = ((status == _CONVERGED) & np.isfinite(out_err[:, 0]) & np.isfinite(out_err[:, 2])
              & (c > lo[0] + eps) & (c < hi[0] - eps) & (w > lo[1] + eps) & (w < hi[1] - eps)
              & (a > 3.0 * out_err[:, 2]))
        at_bound = (c <= lo[0] + eps) | (c >= hi[0] - eps) | (w <= lo[1] + eps) | (w >= hi[1] - eps)
    conv = status == _CONVERGED
    status = np.where(conv & ~ok & at_bound, _AT_BOUND, status)
    status = np.where(conv & ~ok & ~at_bound, _NOT_SIGNIFICANT, status)
    return PeakMaps(**maps, **errs, redchi=redchi.reshape(rows, cols), ok=ok.reshape(rows, cols),
                    status=status.reshape(rows, cols), window=(float(x[0]), float(x[-1])), method=method,
                    eta_tied=eta_tied)


class SpectralCubeLike:
    """The few SpectralCube attributes :func:`fit_cube` reads, for spectra already cut to a window."""

    def __init__(self, counts, centers, widths):
        self.counts = counts
        self.centers = np.asarray(centers, dtype=np.float64)
        self.widths = np.asarray(widths, dtype=np.float64)

    @property
    def shape(self):
        return self.counts.shape[:2]


def _pearson_chi2(x, bw, y_all, params):
    chi2 = np.full(y_all.shape[0], np.nan)
    good = np.all(np.isfinite(params), axis=1)
    for_rows = np.flatnonzero(good)
    # Vectorised over pixels: evaluate eq. (4) per bin for every fitted pixel.
    p = params[for_rows]
    m = bw * pseudo_voigt(x[None, :], p[:, 0:1], p[:, 1:2], p[:, 2:3], p[:, 3:4], p[:, 4:5], p[:, 5:6])
    chi2[for_rows] = np.sum((y_all[for_rows] - m) ** 2 / np.maximum(m, 1e-300), axis=1)
    return chi2
