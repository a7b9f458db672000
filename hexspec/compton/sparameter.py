"""S-parameter S = S_L / S_H, PHYSICS.md eq. (4): of one profile, per pixel, per block, per region.

The maps go through one window table per pixel (:mod:`.windows`); the background under
the profile is none, an array, a peak fit's straight line (:mod:`.binning`) or the
sideband estimate (:mod:`.sideband`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .binning import check_factor, linear_background_table, window_weights
from .kinematics import energy_from_pz
from .profiles import ComptonProfile
from .sideband import BACKGROUNDS, sideband_table
from .windows import COUNTS_HIGH, COUNTS_LOW, N_COLUMNS, S_HIGH, S_LOW, ratio, window_sums


#: The S windows of PHYSICS.md eq. (4) in a.u. of p_z: S_L over |p_z| < low, S_H over low < |p_z| < high.
PZ_WINDOW_AU = (1.0, 5.0)


def _pz_window(pz_window_au, low, high, where):
    """(low, high) in a.u. from ``pz_window_au`` or from the former keywords ``low`` / ``high`` (DESIGN.md)."""
    if low is None and high is None:
        window = PZ_WINDOW_AU if pz_window_au is None else pz_window_au
        try:
            low, high = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected pz_window_au as (low, high) in a.u., found {pz_window_au!r}") from None
        return low, high
    if pz_window_au is not None:
        raise ConfigError(f"{where}: low and high are the former names of pz_window_au=(low, high); give one of them")
    return (PZ_WINDOW_AU[0] if low is None else float(low)), (PZ_WINDOW_AU[1] if high is None else float(high))


def _theta_rad(theta_rad, theta, where):
    """The scattering angle given as ``theta_rad`` or under its former name ``theta``."""
    if theta is None:
        if theta_rad is None:
            raise ConfigError(f"{where}: expected the scattering angle theta_rad (radians), found none")
        return theta_rad
    if theta_rad is not None:
        raise ConfigError(f"{where}: theta is the former name of theta_rad; give one of them")
    return theta


def s_parameter(prof: ComptonProfile, pz_window_au=None, *, low=None, high=None):
    """S-parameter S = S_L / S_H of a profile with its standard error, PHYSICS.md eq. (4).

    S_L integrates J over -low < p_z < low, S_H over -high < p_z < -low plus low < p_z < high
    (fractional bin overlap, :func:`window_weights`). The uncertainty propagates the independent per-bin variances
    (Poisson counts, array backgrounds) and the correlated fitted-background errors.

    Parameters
    ----------
    prof : ComptonProfile
    pz_window_au : (low, high), optional
        Window limits in a.u. of p_z (default :data:`PZ_WINDOW_AU`, (1, 5)). The former
        keywords ``low=`` and ``high=`` (DESIGN.md) are still accepted instead.

    Returns
    -------
    (float, float)
        S and sigma_S.
    """
    low, high = _pz_window(pz_window_au, low, high, "s_parameter")
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

    @property
    def pz_window_au(self):
        """The S windows (low, high) in a.u. of p_z (the fields ``low`` and ``high``)."""
        return (self.low, self.high)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}


def window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev=0.8,
                 li_content=0.5):
    # internal: theta in rad, low and high in a.u. (the public functions take theta_rad and pz_window_au)
    """The window table (npix, N_COLUMNS) of a cube, :mod:`.windows`; rows NaN where a pixel has no angle
    or no background estimate. Arguments as for :func:`s_parameter_map`."""
    check_factor(factor, "s_parameter_map")
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
            out = sideband_table(cube, e1_kev, theta_safe, low, high, factor, resolution_fwhm_kev, li_content)
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
            bg_lin, bg_lin_err, ok = linear_background_table(background)
            # a pixel whose peak fit failed has no background estimate: leave it out rather
            # than mix background-subtracted and raw S in one map
            no_background = ~ok
        else:
            bg = np.asarray(background, dtype=np.float64)
            if bg.shape != cube.counts.shape:
                raise ConfigError(f"s_parameter_map: expected a background of shape {cube.counts.shape}, found {bg.shape}")
            bg_arr = np.ascontiguousarray(bg.reshape(npix, -1))
            bg_arr_var = (np.zeros_like(bg_arr) if background_var is None
                          else np.ascontiguousarray(np.asarray(background_var, dtype=np.float64).reshape(npix, -1)))
    out = np.empty((npix, N_COLUMNS))
    window_sums(np.ascontiguousarray(cube.edges), counts, theta_safe, float(e1_kev), float(low), float(high),
                factor == "impulse", e_lo, e_hi, bg_lin, bg_lin_err, bg_arr, bg_arr_var, out)
    out[bad_theta | no_background] = np.nan
    return out


def _enough(table, min_counts):
    """Rows with at least ``min_counts`` raw counts and positive signal in both windows."""
    return ((table[..., COUNTS_LOW] >= min_counts) & (table[..., COUNTS_HIGH] >= min_counts)
            & (table[..., S_LOW] > 0) & (table[..., S_HIGH] > 0))


def s_parameter_map(cube, e1_kev, theta_rad=None, pz_window_au=None, factor="impulse", background=None,
                    background_var=None, min_counts=100, attenuation_factor=1.0, resolution_fwhm_kev=0.8, li_content=0.5,
                    *, theta=None, low=None, high=None) -> SMap:
    """S-parameter of every pixel of a cube, PHYSICS.md eqs. (2)-(4), with theta per pixel.

    Parameters
    ----------
    cube : SpectralCube
        Counts (rows, cols, nbins), energies in keV.
    e1_kev : float
        Incident energy, keV.
    theta_rad : float or ndarray (rows, cols)
        Scattering angle in radians, one for all pixels or one per pixel (NaN marks a
        pixel without an angle; its S is NaN). ``theta=`` is its former name, still accepted.
    pz_window_au : (low, high), optional
        Window limits in a.u.: S_L over |p_z| < low, S_H over low < |p_z| < high (default
        (1, 5)). The former keywords ``low=`` and ``high=`` are still accepted instead.
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
    theta = _theta_rad(theta_rad, theta, "s_parameter_map")
    low, high = _pz_window(pz_window_au, low, high, "s_parameter_map")
    t = window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev,
                      li_content)
    s, s_err = ratio(t)
    ok = _enough(t, min_counts) & np.isfinite(s)
    s = np.where(ok, s * attenuation_factor, np.nan)
    s_err = np.where(ok, s_err * attenuation_factor, np.nan)
    shape = cube.shape
    return SMap(s.reshape(shape), s_err.reshape(shape), ok.reshape(shape), t[:, S_LOW].reshape(shape),
                t[:, S_HIGH].reshape(shape), t[:, COUNTS_LOW].reshape(shape), t[:, COUNTS_HIGH].reshape(shape),
                float(low), float(high), factor, float(attenuation_factor))


def s_parameter_blocks(cube, e1_kev, theta_rad=None, block=(4, 4), pz_window_au=None, factor="impulse",
                       background=None, background_var=None, min_counts=100, attenuation_factor=1.0,
                       resolution_fwhm_kev=0.8, li_content=0.5, *, theta=None, low=None, high=None) -> SMap:
    """S-parameter map on blocks of pixels: each block's pixels summed in p_z (own theta), then eq. (4).

    For maps whose single pixels hold too few counts. Parameters as for
    :func:`s_parameter_map`; ``block`` = (rows, cols) per block. Trailing rows and
    columns that do not fill a block are left out. Returns an SMap of shape
    (rows // block[0], cols // block[1]).
    """
    theta = _theta_rad(theta_rad, theta, "s_parameter_blocks")
    low, high = _pz_window(pz_window_au, low, high, "s_parameter_blocks")
    br, bc = int(block[0]), int(block[1])
    if br < 1 or bc < 1:
        raise ConfigError(f"s_parameter_blocks: block must be positive, found {block}")
    rows, cols = cube.shape
    nr, nc = rows // br, cols // bc
    if nr == 0 or nc == 0:
        raise ConfigError(f"s_parameter_blocks: a {br}x{bc} block does not fit a {rows}x{cols} cube")
    t = window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev,
                     li_content).reshape(rows, cols, N_COLUMNS)
    t = np.where(np.isfinite(t), t, 0.0)[: nr * br, : nc * bc]
    sums = t.reshape(nr, br, nc, bc, N_COLUMNS).sum(axis=(1, 3))
    s, s_err = ratio(sums)
    ok = _enough(sums, min_counts) & np.isfinite(s)
    return SMap(np.where(ok, s * attenuation_factor, np.nan), np.where(ok, s_err * attenuation_factor, np.nan), ok,
                sums[..., S_LOW], sums[..., S_HIGH], sums[..., COUNTS_LOW], sums[..., COUNTS_HIGH], float(low),
                float(high), factor, float(attenuation_factor))


def s_parameter_region(cube, e1_kev, theta_rad=None, mask=None, pz_window_au=None, factor="impulse", background=None,
                       background_var=None, attenuation_factor=1.0, resolution_fwhm_kev=0.8, li_content=0.5,
                       *, theta=None, low=None, high=None):
    """S-parameter of a region: the pixels' spectra summed (in p_z, each with its own theta), then eq. (4).

    With a single theta this is exactly S of the summed spectrum; with theta per pixel each
    pixel's counts enter at its own p_z, so pixels at different angles do not blur the
    profile. Pixels without a finite theta are left out. Parameters as for
    :func:`s_parameter_map` (``theta_rad``, ``pz_window_au``; the former ``theta``,
    ``low``, ``high`` still accepted).

    Returns
    -------
    (float, float)
        S and sigma_S.
    """
    theta = _theta_rad(theta_rad, theta, "s_parameter_region")
    low, high = _pz_window(pz_window_au, low, high, "s_parameter_region")
    t = window_table(cube, e1_kev, theta, low, high, factor, background, background_var, resolution_fwhm_kev,
                      li_content)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != cube.shape:
            raise ConfigError(f"s_parameter_region: expected a mask of shape {cube.shape}, found {mask.shape}")
        t = t[mask.reshape(-1)]
    t = t[np.all(np.isfinite(t), axis=1)]
    sums = t.sum(axis=0)
    if not (sums[S_LOW] > 0 and sums[S_HIGH] > 0):
        raise ConfigError(f"s_parameter_region: the region has no positive signal in both windows "
                          f"(S_L={sums[S_LOW]:.3g}, S_H={sums[S_HIGH]:.3g}) over {len(t)} pixels")
    s, s_err = ratio(sums)
    return float(s * attenuation_factor), float(s_err * attenuation_factor)


