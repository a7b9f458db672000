"""Li stoichiometry from the S-parameter: the calibration line 1 - x = a S + b (PHYSICS.md eq. 5).

The primary route is experimental: a straight line through two or more reference
measurements (S_i, (1-x)_i) of known Li content, fitted with the uncertainties of both
coordinates, whose covariance is carried into every converted value. A second,
documented route computes S(1-x) from free-atom Hartree-Fock Compton profiles
(Biggs et al. 1975, through xraylib.ComptonProfile) for Li(1-x)Ni0.8Mn0.1Co0.1O2; it
changes S by only about 6 % over the full range, far less than measured, so it serves
as a cross-check of the sign and linearity, not as a calibration of measured S.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CalibrationError, FormatError

#: Atoms per formula unit of NMC811 besides Li: Ni0.8 Mn0.1 Co0.1 O2 (PHYSICS.md eq. 5).
NMC811_HOST = {28: 0.8, 25: 0.1, 27: 0.1, 8: 2.0}
LI_Z = 3


@dataclass
class LithiumMap:
    """Li content 1 - x per pixel (or per value) with its propagated standard error.

    ``extrapolated`` is True where S lies outside the range of the reference points;
    ``ok`` is False where S was not available (NaN).
    """

    li: np.ndarray
    li_err: np.ndarray
    extrapolated: np.ndarray
    ok: np.ndarray

    FIELDS = ("li", "li_err", "extrapolated", "ok")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}


@dataclass
class LithiumCalibration:
    """The line 1 - x = slope * S + intercept with the covariance of (slope, intercept).

    Call it on S values to get 1 - x; use :meth:`apply` for uncertainties and
    extrapolation flags. Build it with :meth:`fit` from reference points.
    """

    slope: float
    intercept: float
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))
    s_range: tuple = (-np.inf, np.inf)
    reference_s: list = field(default_factory=list)
    reference_s_err: list = field(default_factory=list)
    reference_li: list = field(default_factory=list)
    reference_li_err: list = field(default_factory=list)
    chi2: float = float("nan")
    method: str = "reference points"

    @classmethod
    def fit(cls, s_values, stoichiometry, s_err=None, li_err=None, max_iter=50) -> "LithiumCalibration":
        """Fit 1 - x = a S + b to reference points, PHYSICS.md eq. (5).

        Parameters
        ----------
        s_values : sequence of float
            Measured S of the references.
        stoichiometry : sequence of float
            Their known Li content 1 - x (0 to 1).
        s_err, li_err : sequence of float, optional
            Standard errors of S and of 1 - x. With errors on S the fit uses the
            effective variance li_err^2 + a^2 s_err^2 (iterated until a settles), which is
            the maximum-likelihood straight line for errors in both coordinates
            (Orear 1982); the covariance of (a, b) is then absolute. Without any errors the
            covariance is scaled by the scatter (needs 3 or more points; with 2 it is zero).

        Returns
        -------
        LithiumCalibration
        """
        s = np.asarray(s_values, dtype=np.float64).ravel()
        y = np.asarray(stoichiometry, dtype=np.float64).ravel()
        if s.size != y.size:
            raise CalibrationError(f"LithiumCalibration.fit: {s.size} S values but {y.size} stoichiometries")
        if s.size < 2:
            raise CalibrationError(f"LithiumCalibration.fit: need at least 2 reference points, found {s.size}")
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(y))):
            raise CalibrationError("LithiumCalibration.fit: reference S and 1 - x values must be finite")
        if np.ptp(s) <= 0:
            raise CalibrationError(f"LithiumCalibration.fit: the reference S values are all equal ({s[0]}); no line fits")
        se = np.zeros_like(s) if s_err is None else np.broadcast_to(np.asarray(s_err, dtype=np.float64), s.shape).copy()
        ye = np.zeros_like(y) if li_err is None else np.broadcast_to(np.asarray(li_err, dtype=np.float64), y.shape).copy()
        have_errors = bool(np.any(se > 0) or np.any(ye > 0))
        a = np.polyfit(s, y, 1)[0]
        for _ in range(max_iter):
            var = ye * ye + a * a * se * se if have_errors else np.ones_like(s)
            if np.any(var <= 0):
                raise CalibrationError("LithiumCalibration.fit: a reference point has zero uncertainty while others have some")
            w = 1.0 / var
            design = np.stack([s, np.ones_like(s)], axis=1)
            normal = design.T @ (design * w[:, None])
            cov = np.linalg.inv(normal)
            a_new, b = cov @ (design.T @ (w * y))
            if abs(a_new - a) <= 1e-12 * max(1.0, abs(a)):
                a = a_new
                break
            a = a_new
        resid = y - (a * s + b)
        chi2 = float(np.sum(resid * resid * w))
        dof = s.size - 2
        if not have_errors:
            cov = cov * (chi2 / dof) if dof > 0 else np.zeros((2, 2))
        return cls(float(a), float(b), np.asarray(cov), (float(s.min()), float(s.max())), s.tolist(), se.tolist(),
                   y.tolist(), ye.tolist(), chi2, "reference points")

    def __call__(self, s):
        """1 - x for S (scalar or array)."""
        return self.slope * np.asarray(s, dtype=np.float64) + self.intercept

    def uncertainty(self, s, s_err=None):
        """Standard error of 1 - x: the calibration covariance plus slope^2 s_err^2."""
        s = np.asarray(s, dtype=np.float64)
        c = self.covariance
        var = s * s * c[0, 0] + 2.0 * s * c[0, 1] + c[1, 1]
        if s_err is not None:
            var = var + self.slope ** 2 * np.asarray(s_err, dtype=np.float64) ** 2
        return np.sqrt(np.maximum(var, 0.0))

    def apply(self, s, s_err=None) -> LithiumMap:
        """Convert S (an array, or an SMap) to a LithiumMap with propagated errors and flags."""
        if hasattr(s, "s") and hasattr(s, "s_err"):
            s, s_err = s.s, s.s_err
        s = np.asarray(s, dtype=np.float64)
        ok = np.isfinite(s)
        li = np.where(ok, self(s), np.nan)
        li_err = np.where(ok, self.uncertainty(s, s_err), np.nan)
        with np.errstate(invalid="ignore"):
            extrapolated = ok & ((s < self.s_range[0]) | (s > self.s_range[1]))
        return LithiumMap(li, li_err, extrapolated, ok)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        return {"format": "hexspec.LithiumCalibration", "version": 1, "model": "li = slope * S + intercept",
                "slope": self.slope, "intercept": self.intercept, "covariance": np.asarray(self.covariance).tolist(),
                "s_range": list(self.s_range), "reference_s": list(self.reference_s),
                "reference_s_err": list(self.reference_s_err), "reference_li": list(self.reference_li),
                "reference_li_err": list(self.reference_li_err), "chi2": self.chi2, "method": self.method}

    @classmethod
    def from_dict(cls, d) -> "LithiumCalibration":
        if d.get("format") != "hexspec.LithiumCalibration":
            raise FormatError(f"LithiumCalibration: expected format 'hexspec.LithiumCalibration', found {d.get('format')!r}")
        try:
            cov = np.asarray(d["covariance"], dtype=np.float64)
            if cov.shape != (2, 2):
                raise FormatError(f"LithiumCalibration: expected a 2x2 covariance, found shape {cov.shape}")
            return cls(float(d["slope"]), float(d["intercept"]), cov, tuple(float(v) for v in d["s_range"]),
                       list(d.get("reference_s", [])), list(d.get("reference_s_err", [])),
                       list(d.get("reference_li", [])), list(d.get("reference_li_err", [])),
                       float(d.get("chi2", float("nan"))), str(d.get("method", "reference points")))
        except KeyError as exc:
            raise FormatError(f"LithiumCalibration: missing key {exc.args[0]!r}") from None

    def save(self, path) -> None:
        """Write the calibration as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=float))

    @classmethod
    def load(cls, path) -> "LithiumCalibration":
        """Read a calibration written by :meth:`save`."""
        if not Path(path).is_file():
            raise FormatError(f"{path}: expected a Li calibration JSON file, found "
                              f"{'a directory' if Path(path).is_dir() else 'no such file'}")
        try:
            d = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: not a JSON Li calibration ({exc})") from None
        return cls.from_dict(d)


# ---------------------------------------------------------------------- theoretical route

def element_profile(z, pz_au):
    """Free-atom Hartree-Fock Compton profile J(p_z) per atom (Biggs et al. 1975) via xraylib; even in p_z."""
    import xraylib
    p = np.abs(np.asarray(pz_au, dtype=np.float64))
    flat = [xraylib.ComptonProfile(int(z), float(v)) for v in p.ravel()]
    return np.asarray(flat).reshape(p.shape)


def cathode_profile(li_content, pz_au, host=None):
    """J of Li(1-x)Ni0.8Mn0.1Co0.1O2 per formula unit, PHYSICS.md eq. (5).

    J = (1-x) J_Li + 0.8 J_Ni + 0.1 J_Mn + 0.1 J_Co + 2 J_O (free atoms).
    """
    host = NMC811_HOST if host is None else host
    j = li_content * element_profile(LI_Z, pz_au)
    for z, n in host.items():
        j = j + n * element_profile(z, pz_au)
    return j


def theoretical_s(li_content, low=1.0, high=5.0, resolution_fwhm_au=0.0, step_au=0.01, host=None):
    """S-parameter (eq. 4) of the free-atom cathode profile for each Li content 1 - x.

    Parameters
    ----------
    li_content : float or sequence
        1 - x values.
    low, high : float
        Window limits in a.u.
    resolution_fwhm_au : float
        Optional Gaussian resolution (FWHM in a.u.) convolved with J before integrating.
    step_au : float
        Integration grid step in a.u. (the trapezoid rule on a grid to |p_z| = high + 5 FWHM).

    Returns
    -------
    ndarray
        S for each 1 - x.
    """
    li = np.atleast_1d(np.asarray(li_content, dtype=np.float64))
    sigma = resolution_fwhm_au / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    pmax = high + 5.0 * sigma + 1.0
    p = np.arange(-pmax, pmax + step_au / 2, step_au)
    j_li = element_profile(LI_Z, p)
    host = NMC811_HOST if host is None else host
    j_host = sum(n * element_profile(z, p) for z, n in host.items())
    if sigma > 0:
        k = np.arange(-int(5 * sigma / step_au) - 1, int(5 * sigma / step_au) + 2) * step_au
        kern = np.exp(-0.5 * (k / sigma) ** 2)
        kern /= kern.sum()
        j_li = np.convolve(j_li, kern, mode="same")
        j_host = np.convolve(j_host, kern, mode="same")
    li_low, li_high = _window_integral(p, j_li, -low, low), _window_integral(p, j_li, low, high) * 2
    host_low, host_high = _window_integral(p, j_host, -low, low), _window_integral(p, j_host, low, high) * 2
    return (li * li_low + host_low) / (li * li_high + host_high)


def _window_integral(p, j, lo, hi):
    """Trapezoid integral of j over [lo, hi] on the grid p (window ends interpolated)."""
    inside = (p > lo) & (p < hi)
    pp = np.concatenate([[lo], p[inside], [hi]])
    jj = np.concatenate([[np.interp(lo, p, j)], j[inside], [np.interp(hi, p, j)]])
    return float(np.sum(0.5 * (jj[1:] + jj[:-1]) * np.diff(pp)))


def theoretical_calibration(li_points=(0.0, 0.25, 0.5, 0.75, 1.0), low=1.0, high=5.0, resolution_fwhm_au=0.0) -> LithiumCalibration:
    """Calibration line fitted to the free-atom theory curve (the second route of eq. 5; no uncertainties)."""
    s = theoretical_s(li_points, low, high, resolution_fwhm_au)
    cal = LithiumCalibration.fit(s, li_points)
    cal.method = "free-atom Hartree-Fock theory (xraylib)"
    return cal


# ---------------------------------------------------------------------- flat field per pixel or block

@dataclass
class LithiumCalibrationMap:
    """A calibration line 1 - x = slope S + intercept for every pixel or block (a flat field for S).

    ``s_min`` and ``s_max`` bound the S that each cell's line maps into the range of the
    reference Li contents; S outside is flagged ``extrapolated``.
    Built by :meth:`fit` from S maps of reference samples of known Li content measured on
    the same detector with the same analysis (block size, windows, background), so that
    whatever makes S differ between pixels or blocks (resolution, angle, gain) is
    calibrated out where it happens. Arrays are (rows, cols) of the S map it applies to;
    ``covariance`` is (rows, cols, 2, 2); NaN where a reference had no S.
    """

    slope: np.ndarray
    intercept: np.ndarray
    covariance: np.ndarray
    s_min: np.ndarray
    s_max: np.ndarray
    reference_li: list = field(default_factory=list)
    block: tuple = (1, 1)
    method: str = "reference samples per block"

    @property
    def shape(self):
        return self.slope.shape

    @classmethod
    def fit(cls, s_maps, s_err_maps, stoichiometry, li_err=None, block=(1, 1), max_iter=20,
            slope="common") -> "LithiumCalibrationMap":
        """Fit one line per pixel or block through the reference S maps, PHYSICS.md eq. (5).

        Parameters
        ----------
        s_maps, s_err_maps : sequence of ndarray (rows, cols)
            S and its standard error of each reference sample (all of one shape).
        stoichiometry : sequence of float
            Known 1 - x of each reference (at least two different values).
        li_err : sequence of float, optional
            Standard errors of the known contents (0 by default).
        block : (int, int)
            Pixels per block of the maps (recorded, and checked when applied).
        slope : {"common", "per-cell"}
            "common" (default): one slope for all cells, an intercept per cell. The slope is
            the sensitivity of S to Li, the same physics everywhere, and comes from all
            cells together; each cell's offset absorbs what shifts its S. With references
            as short as the measurement, a slope per cell ("per-cell") is 1/(S_1 - S_0) of
            two noisy numbers a few errors apart, and its 1 - x scatters far beyond what
            its linearised error says.

        Notes
        -----
        The same effective-variance straight line as :meth:`LithiumCalibration.fit`
        (weights 1 / (li_err^2 + a^2 s_err^2), iterated), written in closed form for all
        cells at once; the covariance of (slope, intercept) is absolute.
        """
        s = np.asarray(s_maps, dtype=np.float64)
        se = np.asarray(s_err_maps, dtype=np.float64)
        y = np.asarray(stoichiometry, dtype=np.float64).ravel()
        if s.ndim != 3 or se.shape != s.shape or s.shape[0] != y.size:
            raise CalibrationError(f"LithiumCalibrationMap.fit: expected {y.size} S maps and error maps of one shape, "
                                   f"found {s.shape} and {se.shape}")
        if y.size < 2 or np.ptp(y) <= 0:
            raise CalibrationError(f"LithiumCalibrationMap.fit: need references of at least two Li contents, found {y.tolist()}")
        ye = np.zeros_like(y) if li_err is None else np.broadcast_to(np.asarray(li_err, dtype=np.float64), y.shape)
        yy = y[:, None, None]
        good = np.all(np.isfinite(s) & np.isfinite(se), axis=0)
        s0 = np.where(good, s, 0.0)
        se0 = np.where(good, se, 1.0)
        if slope not in ("common", "per-cell"):
            raise CalibrationError(f"LithiumCalibrationMap.fit: slope must be 'common' or 'per-cell', found {slope!r}")
        if slope == "common":
            return cls._fit_common_slope(s0, se0, good, y, ye, block, max_iter)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (y[-1] - y[0]) / (s0[-1] - s0[0])
            for _ in range(max_iter):
                w = 1.0 / (ye[:, None, None] ** 2 + a * a * se0 * se0)
                sw, sx, sxx = w.sum(0), (w * s0).sum(0), (w * s0 * s0).sum(0)
                sy, sxy = (w * yy).sum(0), (w * s0 * yy).sum(0)
                det = sw * sxx - sx * sx
                a_new = (sw * sxy - sx * sy) / det
                done = np.nanmax(np.abs(a_new - a)) <= 1e-12 * max(1.0, float(np.nanmax(np.abs(a_new))))
                a = a_new
                if done:
                    break
            b = (sxx * sy - sx * sxy) / det
            cov = np.stack([np.stack([sw / det, -sx / det], -1), np.stack([-sx / det, sxx / det], -1)], -2)
        bad = ~good | ~np.isfinite(a) | ~np.isfinite(b)
        a = np.where(bad, np.nan, a)
        b = np.where(bad, np.nan, b)
        cov = np.where(bad[..., None, None], np.nan, cov)
        s_lo, s_hi = _line_range(a, b, y)
        return cls(a, b, cov, s_lo, s_hi, y.tolist(), (int(block[0]), int(block[1])),
                   "reference samples: a line per cell")

    @classmethod
    def _fit_common_slope(cls, s, se, good, y, ye, block, max_iter):
        yy = np.broadcast_to(y[:, None, None], s.shape)
        g = good[None]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = float(np.polyfit(s[:, good].mean(axis=1), y, 1)[0]) if good.any() else np.nan
            for _ in range(max_iter):
                w = np.where(g, 1.0 / (ye[:, None, None] ** 2 + a * a * se * se), 0.0)
                sw = w.sum(0)
                s_bar = (w * s).sum(0) / sw
                y_bar = (w * yy).sum(0) / sw
                ds, dy = s - s_bar, yy - y_bar
                sxx = np.nansum(w * ds * ds)
                a_new = float(np.nansum(w * ds * dy) / sxx)
                done = abs(a_new - a) <= 1e-12 * max(1.0, abs(a_new))
                a = a_new
                if done:
                    break
            var_a = 1.0 / sxx
            c = y_bar - a * s_bar
            cov = np.empty(s.shape[1:] + (2, 2))
            cov[..., 0, 0] = var_a
            cov[..., 0, 1] = cov[..., 1, 0] = -s_bar * var_a
            cov[..., 1, 1] = 1.0 / sw + s_bar * s_bar * var_a
        bad = ~good
        slope = np.where(bad, np.nan, a)
        c = np.where(bad, np.nan, c)
        cov[bad] = np.nan
        s_lo, s_hi = _line_range(slope, c, y)
        return cls(slope, c, cov, s_lo, s_hi, y.tolist(), (int(block[0]), int(block[1])),
                   "reference samples: common slope, intercept per cell")

    def apply(self, s, s_err=None) -> LithiumMap:
        """Li content of an S map of the same shape (an SMap or arrays), with propagated errors and range flags."""
        if hasattr(s, "s") and hasattr(s, "s_err"):
            s, s_err = s.s, s.s_err
        s = np.asarray(s, dtype=np.float64)
        if s.shape != self.shape:
            raise CalibrationError(f"Li flat field: calibrated for S maps of shape {self.shape} (blocks of "
                                   f"{self.block[0]}x{self.block[1]} pixels), found an S map of shape {s.shape}")
        se = np.zeros_like(s) if s_err is None else np.asarray(s_err, dtype=np.float64)
        ok = np.isfinite(s) & np.isfinite(self.slope)
        c = self.covariance
        with np.errstate(invalid="ignore"):
            li = np.where(ok, self.slope * s + self.intercept, np.nan)
            var = s * s * c[..., 0, 0] + 2 * s * c[..., 0, 1] + c[..., 1, 1] + self.slope ** 2 * se * se
            li_err = np.where(ok, np.sqrt(np.maximum(var, 0.0)), np.nan)
            extrapolated = ok & ((s < self.s_min) | (s > self.s_max))
        return LithiumMap(li, li_err, extrapolated, ok)

    def to_dict(self) -> dict:
        def lst(a):
            return np.where(np.isfinite(a), a, None).tolist()
        return {"format": "hexspec.LithiumCalibrationMap", "version": 1, "model": "li = slope * S + intercept per cell",
                "shape": list(self.shape), "block": list(self.block), "slope": lst(self.slope),
                "intercept": lst(self.intercept), "covariance": lst(self.covariance), "s_min": lst(self.s_min),
                "s_max": lst(self.s_max), "reference_li": list(self.reference_li), "method": self.method}

    @classmethod
    def from_dict(cls, d) -> "LithiumCalibrationMap":
        if d.get("format") != "hexspec.LithiumCalibrationMap":
            raise FormatError(f"LithiumCalibrationMap: expected format 'hexspec.LithiumCalibrationMap', found {d.get('format')!r}")
        try:
            shape = tuple(int(v) for v in d["shape"])

            def arr(key, extra=()):
                a = np.array(d[key], dtype=np.float64)
                if a.shape != shape + extra:
                    raise FormatError(f"LithiumCalibrationMap: {key} of shape {a.shape}, expected {shape + extra}")
                return a
            return cls(arr("slope"), arr("intercept"), arr("covariance", (2, 2)), arr("s_min"), arr("s_max"),
                       list(d.get("reference_li", [])), tuple(int(v) for v in d.get("block", (1, 1))),
                       str(d.get("method", "reference samples per block")))
        except KeyError as exc:
            raise FormatError(f"LithiumCalibrationMap: missing key {exc.args[0]!r}") from None

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))


def _line_range(slope, intercept, li):
    """The S range of each cell's line between the lowest and highest reference Li content."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ends = np.stack([(li.min() - intercept) / slope, (li.max() - intercept) / slope])
    return np.min(ends, axis=0), np.max(ends, axis=0)


def load_calibration(path):
    """A LithiumCalibration (one line) or LithiumCalibrationMap (a line per pixel/block) from its JSON file."""
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not a JSON Li calibration ({exc})") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the Li calibration ({exc.strerror})") from None
    if isinstance(d, dict) and d.get("format") == "hexspec.LithiumCalibrationMap":
        return LithiumCalibrationMap.from_dict(d)
    if not isinstance(d, dict):
        raise FormatError(f"{path}: expected a JSON object, found {type(d).__name__}")
    return LithiumCalibration.from_dict(d)
