"""Photon sources: energy distributions of the photons reaching the detector.

Each source is a small class with ``sample(n, rng)`` (energies in keV of ``n`` photons)
and ``sample_pixels(pixel_index, rng)`` (energies of photons landing on the given
flat pixel indices, pixel = row * cols + col). Spatial sources carry a per-pixel
``flux`` map (relative photon flux) that the simulator uses to place photons.

References: Am-241 emission data from the DDEP/LNHB evaluation; Compton kinematics and
the cross-section factor from PHYSICS.md section 2, eqs. (1)-(3); cathode composition
and free-atom Hartree-Fock profiles (Biggs et al. 1975, through xraylib) from
PHYSICS.md section 2, eq. (5).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xraylib
from numba import njit

from ..compton import MC2_KEV, MC_AU, PinholeGeometry, energy_from_pz, energy_from_pz_scalar
from ..compton.kinematics import _dpz_de_formula, _impulse_factor_formula
from ..errors import ConfigError
from .fastrandom import new_state, uniform

#: An index known to be >= 0, as unsigned: numba tests a signed index for a negative value
#: (to count from the end) on every access, three instructions each in the photon loops.
U = np.uint64

# ----------------------------------------------------------------------------- Am-241

#: Am-241 photon emissions (energy keV, photons per 100 decays). Np L X-ray multiplets
#: are collapsed onto the reference energies of PHYSICS.md section 5 (13.9, 17.75, 20.8),
#: the centroids an energy calibration uses; intensities are the multiplet totals.
AM241_LINES_KEV = np.array([59.5409, 26.3446, 33.196, 11.87, 13.9, 17.75, 20.8])
AM241_INTENSITY = np.array([35.92, 2.31, 0.126, 0.85, 13.2, 19.4, 4.9])


def _check_fraction(name, value):
    if not (0.0 <= float(value) <= 1.0):
        raise ConfigError(f"{name}: expected a fraction in [0, 1], found {value}")
    return float(value)


def _pixel_map(name, value, shape, allow_none=True):
    """A scalar broadcast to ``shape`` or a (rows, cols) array checked against it."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name}: expected a number or a {shape} array, found None")
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(shape, float(arr))
    if arr.shape != tuple(shape):
        raise ConfigError(f"{name}: expected a number or an array of shape {tuple(shape)}, found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name}: map holds non-finite values")
    return arr.copy()


class Am241Source:
    """Sealed Am-241 calibration source flooding the detector uniformly.

    Parameters
    ----------
    continuum_fraction : float
        Fraction of emitted photons in a flat low-energy continuum (scatter in the source
        capsule and surroundings) between ``continuum_kev[0]`` and ``continuum_kev[1]``.
    continuum_kev : (float, float)
        Continuum range in keV.
    flux : ndarray (rows, cols), optional
        Relative illumination per pixel; uniform when None.

    Notes
    -----
    Line energies and intensities (photons per 100 decays): 59.5409 (35.92), 26.3446
    (2.31), 33.196 (0.126), Np L-l 11.87 (0.85), L-alpha 13.9 (13.2), L-beta 17.75 (19.4),
    L-gamma 20.8 (4.9).
    """

    def __init__(self, continuum_fraction=0.05, continuum_kev=(3.0, 59.5), flux=None):
        self.continuum_fraction = _check_fraction("Am241Source.continuum_fraction", continuum_fraction)
        lo, hi = map(float, continuum_kev)
        if not 0 <= lo < hi:
            raise ConfigError(f"Am241Source.continuum_kev: expected 0 <= low < high, found {continuum_kev}")
        self.continuum_kev = (lo, hi)
        self.lines_kev = AM241_LINES_KEV.copy()
        self.line_probability = AM241_INTENSITY / AM241_INTENSITY.sum()
        self.flux = None if flux is None else np.asarray(flux, dtype=np.float64)

    def sample(self, n, rng):
        """Energies in keV of ``n`` photons (float64 array)."""
        n = int(n)
        energy_kev = self.lines_kev[rng.choice(self.lines_kev.size, size=n, p=self.line_probability)]
        in_continuum = rng.random(n) < self.continuum_fraction
        energy_kev[in_continuum] = rng.uniform(*self.continuum_kev, size=int(in_continuum.sum()))
        return energy_kev

    def sample_pixels(self, pixel_index, rng):
        """Energies in keV of photons landing on ``pixel_index`` (the spectrum is the same everywhere)."""
        return self.sample(np.shape(pixel_index)[0], rng)

    def __repr__(self):
        return f"Am241Source(continuum_fraction={self.continuum_fraction})"


# ----------------------------------------------------------------------------- Compton

#: Cathode composition besides Li: Li(1-x) Ni0.8 Mn0.1 Co0.1 O2 (PHYSICS.md section 2, (5)).
NMC811 = {"Ni": 0.8, "Mn": 0.1, "Co": 0.1, "O": 2.0}
#: Largest |p_z| sampled (a.u.): beyond it less than 0.3 % of the Ni electrons remain.
PZ_MAX_AU = 60.0
_PZ_STEP_AU = 0.005
_ICDF_SIZE = 1 << 12
#: Scattering-angle bins of the proposal tables (about 0.5 degree wide on a HEXITEC at 150 mm).
_THETA_BINS = 16


@lru_cache(maxsize=None)
def _element_profile(symbol):
    """Free-atom Hartree-Fock J(p_z) of one element on the p_z >= 0 grid (xraylib, Biggs et al. 1975)."""
    z = xraylib.SymbolToAtomicNumber(symbol)
    pz_au = np.arange(0.0, PZ_MAX_AU + _PZ_STEP_AU / 2, _PZ_STEP_AU)
    j = np.array([xraylib.ComptonProfile(z, float(p)) for p in pz_au])
    return pz_au, j


def _inverse_cdf(pz_au, j):
    """Equal-probability table for a density j on pz_au: icdf[k] = p_z at cumulative k / (size - 1); also the integral."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (j[1:] + j[:-1]) * np.diff(pz_au))])
    total = cdf[-1]
    cdf /= total
    keep = np.concatenate([[True], np.diff(cdf) > 0])   # np.interp needs increasing abscissae
    u = np.linspace(0.0, 1.0, _ICDF_SIZE + 1)
    return np.interp(u, cdf[keep], pz_au[keep]), total


def cross_section_weight(e2_kev, e1_kev, theta_rad):
    """Weight w with counts per unit p_z proportional to J(p_z) w: eq. (3) moved from E2 to p_z.

    Eq. (3) gives counts per unit E2 proportional to J(p_z) (E2/E1)(mc^2/(q c)); per unit
    p_z that is J(p_z) w with w = (E2/E1)(mc^2/(q c)) / (dp_z/dE2) (p_z in m c, E in mc^2),
    E2 = E2(p_z) by eq. (2). w is smooth and varies by a factor of about 5 over |p_z| < 60 a.u.
    """
    e2 = np.asarray(e2_kev, dtype=np.float64)
    c = np.cos(theta_rad)
    return _weight_formula(e2, float(e1_kev), c)


def _weight_formula(e2, e1, cos_t):
    # Shared by numpy (arrays) and the numba kernel (scalars) so the two cannot drift apart.
    # (E2/E1)(mc^2/(q c)) / (dp_z/dE2), dp_z in a.u. per keV; the constant MC_AU / mc^2 makes it
    # the weight with p_z in m c and E in mc^2.
    return MC_AU / (_impulse_factor_formula(e2, e1, cos_t) * _dpz_de_formula(e2, e1, cos_t) * MC2_KEV)


_weight = njit(cache=True, nogil=True)(_weight_formula)


@njit(cache=True, nogil=True)
def _sample_cathode(pixel, line_fraction, background_fraction, background_kev, lines_kev, line_cdf,
                    cos_theta, theta_bin, bin_cos_theta, p_li, ratio_min, ratio_max, e1, icdf, state, out_kev):
    """Energies of photons from the cathode set-up: discrete lines, flat background, or Compton.

    Compton: p_z from the theta bin's table of J w (Li or the rest, chosen with the pixel's
    Li probability), E2 from eq. (2) with the pixel's own theta, then kept with probability
    w(pixel theta) / (w(bin theta) ratio_max): counts per E2 end up exactly proportional to
    J(p_z) (E2/E1)(mc^2/(q c)) for every pixel, eq. (3).
    """
    n_tab = icdf.shape[2] - 1
    n_lines = lines_kev.shape[0]
    for i in range(pixel.shape[0]):
        u = uniform(state)
        if u < line_fraction:
            v = uniform(state)
            k = 0
            while k < n_lines - 1 and v > line_cdf[k]:
                k += 1
            out_kev[i] = lines_kev[k]
            continue
        if u < line_fraction + background_fraction:
            out_kev[i] = background_kev + (e1 - background_kev) * uniform(state)
            continue
        p = U(pixel[i])   # unsigned: no negative-index test on each access
        c = cos_theta[p]
        b = U(theta_bin[p])
        cb = bin_cos_theta[b]
        while True:
            component = U(0 if uniform(state) < p_li[p] else 1)
            t = uniform(state) * n_tab
            k = int(t)
            if k >= n_tab:
                k = n_tab - 1
            frac = t - k
            lo = icdf[component, b, U(k)]
            pz = lo + frac * (icdf[component, b, U(k + 1)] - lo)
            e2 = energy_from_pz_scalar(pz, e1, c)
            if c == cb:
                break
            u = uniform(state) * ratio_max[p]
            if u <= ratio_min[p]:
                break   # squeeze: accepted whatever the ratio, without computing it
            ratio = _weight(e2, e1, c) / _weight(energy_from_pz_scalar(pz, e1, cb), e1, cb)
            if u <= ratio:
                break
        out_kev[i] = e2


@njit(cache=True, nogil=True)
def _ratio_envelope(pz_au, e1, cos_theta, bin_of_pixel, bin_cos_theta):
    """Least and largest w(pixel theta) / w(bin theta) over ``pz_au``, per pixel.

    A loop here: the numpy form allocates (pixels, p_z points) temporaries and took most of
    a second of the source's construction.
    """
    w_bin = np.empty((bin_cos_theta.shape[0], pz_au.shape[0]))
    for b in range(bin_cos_theta.shape[0]):
        cb = bin_cos_theta[b]
        for k in range(pz_au.shape[0]):
            w_bin[b, k] = _weight(energy_from_pz_scalar(pz_au[k], e1, cb), e1, cb)
    n = cos_theta.shape[0]
    lo = np.empty(n)
    hi = np.empty(n)
    for i in range(n):
        c = cos_theta[i]
        b = bin_of_pixel[i]
        r_min, r_max = np.inf, -np.inf
        for k in range(pz_au.shape[0]):
            r = _weight(energy_from_pz_scalar(pz_au[k], e1, c), e1, c) / w_bin[b, k]
            r_min = min(r_min, r)
            r_max = max(r_max, r)
        lo[i] = r_min
        hi[i] = r_max
    return lo, hi


def k_lines(symbol):
    """K fluorescence lines of an element: (energies keV, relative probabilities) from xraylib."""
    z = xraylib.SymbolToAtomicNumber(symbol)
    codes = (xraylib.KL3_LINE, xraylib.KL2_LINE, xraylib.KM3_LINE, xraylib.KM2_LINE, xraylib.KN3_LINE)
    energy_kev = np.array([xraylib.LineEnergy(z, c) for c in codes])
    rate = np.array([xraylib.RadRate(z, c) for c in codes])
    return energy_kev, rate / rate.sum()


@lru_cache(maxsize=8)
def _proposal_tables(e1_kev, composition, geometry):
    """Sampling tables of :class:`ComptonSource` that do not depend on the Li content (cached).

    Per theta bin, inverse CDFs of J_Li(p_z) w and J_rest(p_z) w with w the eq. (3) weight at
    the bin's theta; a last rejection step swaps in each pixel's own theta, bounded by the
    envelope of the weight ratio (pixel theta / bin theta). A cell studied in several states
    and regions builds one source per measurement: the tables are made once.

    Returns
    -------
    theta_bin, bin_cos_theta, icdf (2, bins, n), li_total (bins,), rest_total (bins,), cos_theta,
    ratio_min, ratio_max (per pixel); arrays are shared between sources: never write to them.
    """
    pz_abs, j_li = _element_profile("Li")
    j_rest = sum(n * _element_profile(s)[1] for s, n in composition)
    pz_au = np.concatenate([-pz_abs[:0:-1], pz_abs])
    j_li = np.concatenate([j_li[:0:-1], j_li])
    j_rest = np.concatenate([j_rest[:0:-1], j_rest])
    theta = geometry.theta_map().ravel()
    lo, hi = theta.min(), theta.max()
    n_bins = _THETA_BINS if hi > lo else 1
    centers = lo + (np.arange(n_bins) + 0.5) * (hi - lo) / n_bins
    theta_bin = np.minimum(((theta - lo) / max(hi - lo, 1e-12) * n_bins).astype(np.int64), n_bins - 1)
    bin_cos_theta = np.cos(centers)
    # Axis 0: component (0 Li, 1 the rest of the formula unit); axis 1: theta bin.
    icdf = np.empty((2, n_bins, _ICDF_SIZE + 1))
    li_total = np.empty(n_bins)
    rest_total = np.empty(n_bins)
    for b, th in enumerate(centers):
        w = cross_section_weight(energy_from_pz(pz_au, e1_kev, th), e1_kev, th)
        icdf[0, b], li_total[b] = _inverse_cdf(pz_au, j_li * w)
        icdf[1, b], rest_total[b] = _inverse_cdf(pz_au, j_rest * w)
    cos_theta = np.cos(theta)
    # Pixels mirrored about the beam plane share theta: each distinct (theta, bin) once.
    pairs, inverse = np.unique(np.stack([cos_theta, theta_bin.astype(np.float64)]), axis=1, return_inverse=True)
    ratio_min, ratio_max = _ratio_envelope(np.linspace(-PZ_MAX_AU, PZ_MAX_AU, 241), e1_kev, pairs[0],
                                           pairs[1].astype(np.int64), bin_cos_theta)
    inverse = inverse.ravel()
    tables = (theta_bin, bin_cos_theta, icdf, li_total, rest_total, cos_theta,
              0.999 * ratio_min[inverse], 1.001 * ratio_max[inverse])
    for t in tables:
        t.flags.writeable = False
    return tables


class ComptonSource:
    """Photons scattered from an NMC811 cathode through a pinhole (PHYSICS.md sections 1-3).

    Parameters
    ----------
    e1_kev : float
        Incident beam energy in keV.
    li_content : float or ndarray (rows, cols)
        Li content 1 - x of Li(1-x)Ni0.8Mn0.1Co0.1O2 per pixel (a scalar applies everywhere).
    geometry : hexspec.compton.PinholeGeometry
        Gives the per-pixel scattering angle and the detector shape.
    flux : float or ndarray (rows, cols), optional
        Relative photon flux per pixel (the Compton image); uniform when None.
    composition : dict
        Atoms per formula unit besides Li (default NMC811: Ni 0.8, Mn 0.1, Co 0.1, O 2).
    elastic_fraction, tungsten_fraction, lead_fraction, detector_fluorescence_fraction, background_fraction : float
        Fractions of photons in the Rayleigh line at E1, W K lines (pinhole), Pb K lines
        (shielding), Cd and Te K lines arriving from outside the pixel volume (the detector
        body and housing; K escape within the sensor is simulated by the detector response),
        and a flat background from ``background_kev[0]`` to E1. The rest is Compton.
    background_kev : float
        Lower edge of the flat background in keV.
    background : bool
        False switches every component but Compton off (all the fractions above become 0):
        the photons of a background-free measurement, for checking background subtraction.

    Notes
    -----
    The Compton energy E2 follows eq. (3): counts per unit E2 proportional to
    (E2/E1)(mc^2/(q c)) J(p_z), with J_cathode = (1-x) J_Li + 0.8 J_Ni + 0.1 J_Mn + 0.1 J_Co
    + 2 J_O (free-atom profiles, each integrating to its electron count) and p_z from eq. (2)
    with the pixel's own theta; ``hexspec.compton.profile(..., factor="impulse")`` inverts it
    exactly. Sampling: since J is linear in (1-x), p_z is drawn from a two-component mixture
    (Li, rest) using inverse-CDF tables of J w precomputed per theta bin (w the eq. (3)
    factor divided by the Jacobian dp_z/dE2, see :func:`cross_section_weight`); a rejection
    step with acceptance close to 1 replaces the bin's theta by the pixel's. Tables are
    built once, never per pixel. |p_z| is limited to 60 a.u.
    """

    def __init__(self, e1_kev=115.0, li_content=0.5, geometry=None, flux=None, composition=None,
                 elastic_fraction=0.02, tungsten_fraction=0.04, lead_fraction=0.03,
                 detector_fluorescence_fraction=0.03, background_fraction=0.08, background_kev=5.0,
                 background=True):
        if not background:
            # the same Compton photons without any other component (truth for background tests)
            elastic_fraction = tungsten_fraction = lead_fraction = detector_fluorescence_fraction = 0.0
            background_fraction = 0.0
        self.background = bool(background)
        self.geometry = geometry if geometry is not None else PinholeGeometry()
        shape = self.geometry.detector.shape
        self.e1_kev = float(e1_kev)
        if not self.e1_kev > 0:
            raise ConfigError(f"ComptonSource.e1_kev: expected a positive energy in keV, found {e1_kev}")
        self.li_content = _pixel_map("ComptonSource.li_content", li_content, shape, allow_none=False)
        if np.any(self.li_content < 0) or np.any(self.li_content > 1):
            raise ConfigError("ComptonSource.li_content: expected 1 - x in [0, 1], found "
                              f"range [{self.li_content.min()}, {self.li_content.max()}]")
        self.flux = _pixel_map("ComptonSource.flux", flux, shape)
        if self.flux is not None and (np.any(self.flux < 0) or self.flux.sum() <= 0):
            raise ConfigError("ComptonSource.flux: expected non-negative values with a positive sum")
        self.composition = dict(NMC811 if composition is None else composition)
        self.theta_rad = self.geometry.theta_map()

        fractions = {
            "elastic": elastic_fraction, "tungsten": tungsten_fraction, "lead": lead_fraction,
            "detector_fluorescence": detector_fluorescence_fraction, "background": background_fraction}
        for name, v in fractions.items():
            _check_fraction(f"ComptonSource.{name}_fraction", v)
        if sum(fractions.values()) > 1.0:
            raise ConfigError(f"ComptonSource: non-Compton fractions add up to {sum(fractions.values())}, more than 1")
        self.fractions = {k: float(v) for k, v in fractions.items()}
        self.background_kev = float(background_kev)

        # Discrete lines other than Compton: (energy, probability within the "line" category).
        line_e, line_w = [np.array([self.e1_kev])], [np.array([elastic_fraction])]
        for symbols, frac in ((("W",), tungsten_fraction), (("Pb",), lead_fraction),
                              (("Cd", "Te"), detector_fluorescence_fraction)):
            for s in symbols:
                e, w = k_lines(s)
                line_e.append(e)
                line_w.append(w * frac / len(symbols))
        self.lines_kev = np.concatenate(line_e)
        line_w = np.concatenate(line_w)
        self.line_fraction = float(line_w.sum())
        self.line_probability = line_w / self.line_fraction if self.line_fraction > 0 else line_w
        self._line_cdf = np.cumsum(self.line_probability)
        self._line_cdf[-1] = 1.0

        tables = _proposal_tables(self.e1_kev, tuple(sorted(self.composition.items())), self.geometry)
        self._theta_bin, self._bin_cos_theta, self._icdf, li_total, rest_total, self._cos_theta = tables[:6]
        self._ratio_min, self._ratio_max = tables[6:]
        li = self.li_content.ravel()
        tb = self._theta_bin
        self._p_li = li * li_total[tb] / (li * li_total[tb] + rest_total[tb])

    @property
    def shape(self):
        return self.geometry.detector.shape

    def sample_pixels(self, pixel_index, rng):
        """Energies in keV of photons landing on flat pixel indices ``pixel_index`` (row * cols + col)."""
        pixel_index = np.ascontiguousarray(pixel_index, dtype=np.int64)
        out = np.empty(pixel_index.shape[0])
        _sample_cathode(pixel_index, self.line_fraction, self.fractions["background"], self.background_kev,
                        self.lines_kev, self._line_cdf, self._cos_theta, self._theta_bin, self._bin_cos_theta,
                        self._p_li, self._ratio_min, self._ratio_max, self.e1_kev, self._icdf, new_state(rng), out)
        return out

    def sample(self, n, rng):
        """Energies in keV of ``n`` photons at pixels drawn from the flux map."""
        npix = self.li_content.size
        if self.flux is None:
            pixel_index = rng.integers(0, npix, size=int(n))
        else:
            cdf = np.cumsum(self.flux.ravel())
            pixel_index = np.minimum(np.searchsorted(cdf, rng.random(int(n)) * cdf[-1], side="right"), npix - 1)
        return self.sample_pixels(pixel_index, rng)

    def __repr__(self):
        return (f"ComptonSource(e1_kev={self.e1_kev}, li_content in [{self.li_content.min():.3g}, "
                f"{self.li_content.max():.3g}], shape={self.shape})")
