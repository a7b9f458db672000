"""Detector response: absorption depth, K escape, charge cloud, pile-up, noise, gain, readout.

Everything a photon goes through between entering the sensor and becoming an ADU value
in a frame (PHYSICS.md section 5). The per-photon work runs in one numba kernel that
touches only the pixels that receive charge, so a batch of mostly-empty frames costs
time in proportion to its photons, not its pixels.

Readout model. Frames are offset-corrected and thresholded as the real readout
delivers them: a pixel without charge reads 0 unless its electronic noise alone rounds
to a positive ADU value. Noise is therefore drawn only for pixels that received charge,
plus a sparse set of noise-only pixels whose number per frame is Poisson with the summed
Gaussian tail probability of all pixels; their values come from the Gaussian tail.
Electronic and Fano noise are lumped into one energy-independent Gaussian per pixel.

Physics kept simple on purpose: every interaction is treated as a photoabsorption at a
depth drawn from the total attenuation (xraylib, Cd0.9Zn0.1Te at 5.78 g/cm3); photons
that pass the sensor are lost. Cd and Te K fluorescence (K-shell share of the attenuation
times the fluorescence yield) travels an exponential path in a random direction and is
reabsorbed where it stops (a neighbour pixel: a shared event) or leaves the sensor (an
escape peak). The cloud size is the same at every depth: PHYSICS.md section 5 uses the
full thickness as drift length. Compton scattering inside the sensor is not followed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xraylib
from numba import njit
from scipy.special import ndtr

from ..errors import ConfigError
from .fastrandom import uniform
from .sources import U, k_lines

#: Boltzmann constant over the elementary charge, V/K.
K_OVER_E_V_PER_K = 8.617333262e-5
#: FWHM / sigma of a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Largest ADU value of the 14-bit ADC.
ADC_MAX = 16383
#: Bits of the per-photon truth flags written by :func:`detect_batch`.
FLAG_SHARED, FLAG_ESCAPED, FLAG_SPILLED = 1, 2, 4

SENSOR_MATERIAL = "Cd0.9Zn0.1Te"
SENSOR_DENSITY_G_CM3 = 5.78
_TABLE_E0_KEV, _TABLE_STEP_KEV, _TABLE_N = 1.0, 0.25, 1197   # 1 .. 300 keV


def cloud_fwhm_um(thickness_mm=2.0, bias_v=1200.0, temperature_c=18.0):
    """FWHM of the electron cloud at the anode in um (PHYSICS.md section 5, Veale 2014).

    r = r0 + 1.15 L sqrt(2 k T / (e V)) with r0 = 0.1477 T[C] + 14.66 um, L the drift length
    (here the sensor thickness) and V the bias magnitude. 2 mm, 1200 V, 18 C -> 32.2 um.
    """
    if thickness_mm <= 0 or bias_v == 0:
        raise ConfigError(f"cloud_fwhm_um: expected thickness > 0 and non-zero bias, found {thickness_mm} mm, {bias_v} V")
    r0_um = 0.1477 * temperature_c + 14.66
    kt_over_e_v = K_OVER_E_V_PER_K * (temperature_c + 273.15)
    return r0_um + 1.15 * thickness_mm * 1e3 * math.sqrt(2.0 * kt_over_e_v / abs(bias_v))


def pixel_fractions(x_px, y_px, sigma_px, shape):
    """Fractions of a Gaussian cloud centred at (x_px, y_px) collected by each pixel (numpy reference).

    Parameters
    ----------
    x_px, y_px : float
        Cloud centre in pixel units: column and row coordinates, pixel (r, c) spans
        [c, c + 1) x [r, r + 1).
    sigma_px : float
        Cloud standard deviation in pixel units.
    shape : (rows, cols)

    Returns
    -------
    ndarray (rows, cols)
        Product of erf differences over each pixel's edges; charge outside the detector is lost.
    """
    from scipy.special import erf
    rows, cols = shape
    s = sigma_px * math.sqrt(2.0)
    fx = 0.5 * np.diff(erf((np.arange(cols + 1) - x_px) / s))
    fy = 0.5 * np.diff(erf((np.arange(rows + 1) - y_px) / s))
    return fy[:, None] * fx[None, :]


def deposit_reference(frame, x_px, y_px, energy_kev, n_frames, shape, sigma_px, gradients, intercepts,
                      noise_sigma_kev=None, rng=None):
    """Plain-numpy reference of the readout of point-like absorptions (no K escape, no spill).

    Splits each photon's charge over its 3x3 neighbourhood with erf products (scipy),
    sums per pixel and frame (pile-up), optionally adds Gaussian noise to pixels with
    charge, and converts to ADU = round((E - intercept) / gradient), clipped to 0..16383.
    It matches :func:`detect_batch` with escape and spill off and no noise, to within
    1 ADU (the kernel drops shares below 0.01 keV and tabulates erfc).

    Parameters
    ----------
    frame : int array (n,)
        Frame of each photon, 0 .. n_frames - 1.
    x_px, y_px : float arrays (n,)
        Absorption point in pixel units (column, row); pixel (r, c) spans [c, c+1) x [r, r+1).
    energy_kev : float array (n,)
    shape : (rows, cols)
    sigma_px : float
        Charge-cloud standard deviation in pixels.
    gradients, intercepts : (rows, cols) arrays
    noise_sigma_kev : (rows, cols) array, optional
    rng : numpy Generator, needed with noise.

    Returns
    -------
    ndarray (n_frames, rows, cols) uint16
    """
    from scipy.special import erf
    rows, cols = shape
    s2 = max(sigma_px * math.sqrt(2.0), 1e-12)
    c0 = np.floor(x_px).astype(np.int64)
    r0 = np.floor(y_px).astype(np.int64)
    k = np.arange(-1, 3)
    fx = 0.5 * np.diff(erf((c0[:, None] + k - x_px[:, None]) / s2), axis=1)   # (n, 3)
    fy = 0.5 * np.diff(erf((r0[:, None] + k - y_px[:, None]) / s2), axis=1)
    charge = np.zeros((n_frames, rows + 2, cols + 2))   # one pixel of margin catches charge off the edge
    for a in range(3):
        for b in range(3):
            np.add.at(charge, (frame, r0 + a, c0 + b), energy_kev * fy[:, a] * fx[:, b])
    charge = charge[:, 1:-1, 1:-1]
    if noise_sigma_kev is not None:
        hit = charge > 0
        charge[hit] += (np.broadcast_to(noise_sigma_kev, charge.shape)[hit] * rng.standard_normal(int(hit.sum())))
    adu = np.floor((charge - intercepts) / gradients + 0.5)
    adu[charge <= 0] = 0
    return np.clip(adu, 0, ADC_MAX).astype(np.uint16)


@dataclass(frozen=True)
class SensorTables:
    """Interaction tables of the sensor material, tabulated on a regular energy grid.

    Attributes
    ----------
    e0_kev, step_kev : float
        Grid start and step.
    mu_per_mm : ndarray (n,)
        Linear attenuation coefficient.
    k_fluorescence : ndarray (2, n)
        Probability that an interaction at that energy emits a Cd (row 0) or Te (row 1)
        K photon: K-shell share of the attenuation times the K fluorescence yield.
    line_kev, line_cdf, line_mu_per_mm : ndarray (2, 5)
        Cd and Te K lines (KL3, KL2, KM3, KM2, KN3), cumulative emission probabilities and
        attenuation of each line in the sensor.
    """

    e0_kev: float
    step_kev: float
    mu_per_mm: np.ndarray
    k_fluorescence: np.ndarray
    line_kev: np.ndarray
    line_cdf: np.ndarray
    line_mu_per_mm: np.ndarray


@lru_cache(maxsize=None)
def sensor_tables(material=SENSOR_MATERIAL, density_g_cm3=SENSOR_DENSITY_G_CM3):
    """Build :class:`SensorTables` for a CdTe-based sensor from xraylib cross sections."""
    energy_kev = _TABLE_E0_KEV + _TABLE_STEP_KEV * np.arange(_TABLE_N)
    mu = np.array([xraylib.CS_Total_CP(material, float(e)) for e in energy_kev]) * density_g_cm3 / 10.0
    comp = xraylib.CompoundParser(material)
    mass_fraction = dict(zip(comp["Elements"], comp["massFractions"]))
    k_fluor = np.zeros((2, _TABLE_N))
    line_kev = np.zeros((2, 5))
    line_cdf = np.zeros((2, 5))
    line_mu = np.zeros((2, 5))
    total = np.array([xraylib.CS_Total_CP(material, float(e)) for e in energy_kev])
    for row, symbol in enumerate(("Cd", "Te")):
        z = xraylib.SymbolToAtomicNumber(symbol)
        edge = xraylib.EdgeEnergy(z, xraylib.K_SHELL)
        yield_k = xraylib.FluorYield(z, xraylib.K_SHELL)
        photo_k = np.array([xraylib.CS_Photo_Partial(z, xraylib.K_SHELL, float(e)) if e > edge else 0.0
                            for e in energy_kev])
        k_fluor[row] = mass_fraction.get(z, 0.0) * photo_k / total * yield_k
        e, p = k_lines(symbol)
        line_kev[row], line_cdf[row] = e, np.cumsum(p)
        line_mu[row] = [xraylib.CS_Total_CP(material, float(v)) * density_g_cm3 / 10.0 for v in e]
    line_cdf[:, -1] = 1.0
    return SensorTables(_TABLE_E0_KEV, _TABLE_STEP_KEV, mu, k_fluor, line_kev, line_cdf, line_mu)


def gaussian_tail_probability(threshold_sigma):
    """P(N(0, 1) > threshold_sigma), elementwise."""
    return ndtr(-np.asarray(threshold_sigma, dtype=np.float64))


# ----------------------------------------------------------------------------- kernels

@njit(cache=True, nogil=True)
def _interp(table, e0, inv_step, energy):
    t = (energy - e0) * inv_step
    if t <= 0.0:
        return table[0]
    k = int(t)
    if k >= table.shape[0] - 1:
        return table[table.shape[0] - 1]
    f = t - k
    return table[U(k)] + f * (table[U(k + 1)] - table[U(k)])


#: Half erfc tabulated on [0, ERFC_MAX] (libm erfc costs more than the rest of a photon's
#: charge split); linear interpolation in steps of 1e-3 is exact to about 1e-7.
ERFC_MAX = 3.6
ERFC_STEP = 1e-3
_INV_ERFC_STEP = 1.0 / ERFC_STEP


def half_erfc_table():
    """0.5 erfc(t) for t = 0, ERFC_STEP, ..., ERFC_MAX (scipy)."""
    from scipy.special import erfc
    return 0.5 * erfc(np.arange(0.0, ERFC_MAX + ERFC_STEP / 2, ERFC_STEP))


#: The table the kernels read, a module constant: numba freezes a global array into the
#: compiled code, so the per-photon helpers take no table argument (every array passed to
#: a helper costs an atomic reference-count increment and decrement per call, more than
#: the arithmetic of a charge split).
_HALF_ERFC = half_erfc_table()


@njit(cache=True, nogil=True)
def _half_erfc(t):
    if t >= ERFC_MAX:
        return 0.0
    u = t * _INV_ERFC_STEP
    k = int(u)
    return _HALF_ERFC[U(k)] + (u - k) * (_HALF_ERFC[U(k + 1)] - _HALF_ERFC[U(k)])


@njit(cache=True, nogil=True)
def _edge_fractions(x, inv_s2):
    """Fractions of a 1-D Gaussian at ``x`` (pixel units) in its pixel's left neighbour, itself, right neighbour.

    Erf integrals over the pixel edges (PHYSICS.md section 5): the share beyond an edge
    at distance d is erfc(d / (sigma sqrt 2)) / 2; beyond 5 sigma (t = 3.6) it is below
    6e-7 and taken as 0.
    """
    c0 = float(int(x))   # x >= 0: truncation is floor
    left = _half_erfc((x - c0) * inv_s2)
    right = _half_erfc((c0 + 1.0 - x) * inv_s2)
    return left, 1.0 - left - right, right


@njit(cache=True, nogil=True, inline="always")
def _cloud(x, y, energy, inv_s2, rows, cols, min_kev, pix, kev, n):
    """Append the 3x3 split of ``energy`` deposited at (x, y) to (pix, kev)[n:]; returns the new n.

    3x3 suffices: the cloud sigma (about 14 um) is far below the 250 um pitch (wider
    clouds are refused upstream). Shares below ``min_kev`` are dropped: they shift a
    reading by far less than the noise and would otherwise cost a noise draw each.
    """
    c0 = int(x)   # x, y >= 0
    r0 = int(y)
    fx = _edge_fractions(x, inv_s2)
    fy = _edge_fractions(y, inv_s2)
    for a in range(3):
        r = r0 - 1 + a
        if r < 0 or r >= rows or fy[a] == 0.0:
            continue
        for b in range(3):
            c = c0 - 1 + b
            if c < 0 or c >= cols:
                continue
            e = energy * fy[a] * fx[b]
            if e >= min_kev:
                pix[U(n)] = r * cols + c
                kev[U(n)] = e
                n += 1
    return n


@njit(cache=True, nogil=True)
def _tail_normal(a, rng, state):
    """A standard normal draw conditioned on exceeding ``a`` (Robert 1995 for a > 0.5)."""
    if a < 0.5:
        while True:
            z = rng.standard_normal()
            if z > a:
                return z
    lam = 0.5 * (a + math.sqrt(a * a + 4.0))
    while True:
        z = a + rng.exponential() / lam
        if uniform(state) <= math.exp(-0.5 * (z - lam) ** 2):
            return z


#: Columns of the per-pixel readout table (see :func:`readout_table`).
RO_ZERO_BELOW, RO_SIGMA, RO_INTERCEPT, RO_INV_GRADIENT = range(4)


def readout_table(zero_below_kev, noise_sigma_kev, intercept_kev, inv_gradient, live):
    """The per-pixel readout constants as one (pixels, 4) float64 array (RO_* columns).

    One row per pixel keeps the four numbers a touched pixel needs in one cache line (four
    separate arrays cost four cache misses per photon: the pixels hit are random). Dead
    pixels get ``zero_below_kev`` = +inf: they read 0 whatever their charge.
    """
    zb = np.where(np.asarray(live) != 0, zero_below_kev, np.inf)
    return np.ascontiguousarray(np.stack([zb, noise_sigma_kev, intercept_kev, inv_gradient], axis=1), dtype=np.float64)


@njit(cache=True, nogil=True)
def _read_out(frame, touched, nt, acc, mark, table, live,
              noise_rate, noise_cdf, noise_threshold_sigma, hot_pixels, hot_probability, hot_mean_adu, hot_sigma_adu,
              rng, state, stats):
    """Read one frame: noise and gain on the ``touched[:nt]`` pixels holding charge ``acc``, then noise-only and hot pixels.

    ``frame`` (rows * cols,) uint16 must be zero; ``acc`` and ``mark`` are cleared for the
    touched pixels; ``table`` is :func:`readout_table`. stats[0:3] (noise-only hits, hot
    hits, clipped) are incremented.
    """
    npix = frame.shape[0]
    for k in range(nt):
        p = U(touched[k])
        e = acc[p]
        acc[p] = 0.0
        mark[p] = 0
        if e < table[p, RO_ZERO_BELOW]:
            # Below intercept - 8 sigma the reading is 0 ADU with probability 1 - 6e-16:
            # skip the noise draw (most such pixels hold a neighbour's small share).
            continue
        e += table[p, RO_SIGMA] * rng.standard_normal()
        adu = math.floor((e - table[p, RO_INTERCEPT]) * table[p, RO_INV_GRADIENT] + 0.5)
        if adu > ADC_MAX:
            adu = ADC_MAX
            stats[2] += 1
        if adu > 0:
            frame[p] = np.uint16(adu)
    if noise_rate > 0.0:
        for k in range(rng.poisson(noise_rate)):
            p = min(np.searchsorted(noise_cdf, uniform(state) * noise_cdf[-1], side="right"), npix - 1)
            if frame[p] != 0 or live[p] == 0:
                continue
            e = table[p, RO_SIGMA] * _tail_normal(noise_threshold_sigma[p], rng, state)
            adu = math.floor((e - table[p, RO_INTERCEPT]) * table[p, RO_INV_GRADIENT] + 0.5)
            if adu > 0:
                frame[p] = np.uint16(min(adu, ADC_MAX))
                stats[0] += 1
    for k in range(hot_pixels.shape[0]):
        if uniform(state) < hot_probability:
            adu = math.floor(hot_mean_adu + hot_sigma_adu * rng.standard_normal() + 0.5)
            if adu > 0:
                frame[hot_pixels[k]] = np.uint16(min(adu, ADC_MAX))
                stats[1] += 1


@njit(cache=True, nogil=True)
def _isotropic_direction(state):
    """A uniformly distributed unit vector (dx, dy, dz) without trigonometry (Marsaglia 1972).

    (a, b) uniform in the unit disc, s = a^2 + b^2: then (2a sqrt(1 - s), 2b sqrt(1 - s),
    1 - 2s) is uniform on the sphere. libm cos and sin cost several times the three or
    four uniforms this takes on average (4 / pi pairs).
    """
    while True:
        a = 2.0 * uniform(state) - 1.0
        b = 2.0 * uniform(state) - 1.0
        s = a * a + b * b
        if s < 1.0:
            q = 2.0 * math.sqrt(1.0 - s)
            return a * q, b * q, 1.0 - 2.0 * s


@njit(cache=True, nogil=True)
def _k_line(line_cdf, element, v):
    """Index of the K line of ``element`` (0 Cd, 1 Te) with cumulative emission probability just above ``v``."""
    line = 0
    while line < 4 and v > line_cdf[element, line]:
        line += 1
    return line


@njit(cache=True, nogil=True)
def _k_photon_landing(x, y, z, path_mm, dx, dy, dz, thickness_mm, inv_pitch):
    """Where a K photon emitted at (x, y) pixels, depth z, stops after ``path_mm`` along (dx, dy, dz).

    Returns (fl_x, fl_y, inside, flags): ``inside`` False when it leaves the sensor through
    a face; FLAG_ESCAPED when it leaves the sensor or the pixel it was emitted in.
    """
    z_fl = z + path_mm * dz
    if z_fl < 0.0 or z_fl > thickness_mm:
        return x, y, False, FLAG_ESCAPED
    fl_x = x + path_mm * dx * inv_pitch
    fl_y = y + path_mm * dy * inv_pitch
    if math.floor(fl_x) != math.floor(x) or math.floor(fl_y) != math.floor(y):
        return fl_x, fl_y, True, FLAG_ESCAPED
    return fl_x, fl_y, True, 0


@njit(cache=True, nogil=True)
def _is_shared(pix, kev, n, n_distinct, share_min_kev):
    """True when more than one distinct pixel among ``pix[:n]`` got at least ``share_min_kev`` (summed per pixel).

    The first ``n_distinct`` entries are known to be distinct pixels (one cloud's 3x3
    split); when that is all of them, a count of the large shares answers without the
    pairwise search (most photons: only a K photon reabsorbed nearby adds a second cloud).
    """
    if n_distinct == n:
        n_big = 0
        for a in range(n):
            if kev[a] >= share_min_kev:
                n_big += 1
        return n_big > 1
    n_big = 0
    for a in range(n if n > 1 else 0):
        total = 0.0
        first = True
        for b in range(n):
            if pix[b] == pix[a]:
                if b < a:
                    first = False
                    break
                total += kev[b]
        if first and total >= share_min_kev:
            n_big += 1
            if n_big > 1:
                return True
    return False



@njit(cache=True, nogil=True)
def detect_block(photon_frame, pixel, energy_kev, n_frames, rows, cols,
                 sigma_px, thickness_mm, pitch_mm, escape,
                 e0, step, attenuation_mm, k_fluorescence_cd, k_fluorescence_te, line_kev, line_cdf, line_attenuation_mm,
                 spill_probability, share_min_kev, min_deposit_kev,
                 readout, live,
                 noise_rate, noise_cdf, noise_threshold_sigma,
                 hot_pixels, hot_probability, hot_mean_adu, hot_sigma_adu,
                 rng, state, frames, first_pix, first_kev, carry_pix, carry_kev,
                 index, x_out, y_out, depth_mm, flags, stats):
    """Turn the photons of one block of frames into ADU frames, all but the first.

    Photons (frame in the block, flat pixel index, energy) must be sorted by
    ``photon_frame`` (0 .. n_frames - 1); their position inside the pixel is drawn here.
    ``frames`` (n_frames, rows * cols) uint16 must be zero on entry. Frame 0 is not read
    out: the charge it collected is returned per pixel in ``first_pix/first_kev`` so that
    :func:`read_first_frame` can add the previous block's spill and read it. Leaving that
    one frame out makes blocks independent of each other, so they can be simulated in any
    order, on any number of threads, with the same result. The charge the last frame
    spills into the next block is returned in ``carry_pix/carry_kev``.
    Absorbed photons are listed compactly: ``index`` (input position), ``x_out, y_out``
    (position in the pixel, 0..1), ``depth_mm`` and ``flags`` (FLAG_SHARED | FLAG_ESCAPED |
    FLAG_SPILLED). stats (n_frames, 4): per frame [noise_only_hits, hot_hits, clipped, transmitted].

    Returns
    -------
    (n_first, n_carry, n_absorbed)
    """
    npix = rows * cols
    acc = np.zeros(npix)
    mark = np.zeros(npix, np.uint8)
    touched = np.empty(npix, np.int64)
    nphot = photon_frame.shape[0]
    cap = carry_pix.shape[0]
    spill_pix = np.empty(cap, np.int64)
    spill_kev = np.empty(cap)
    next_pix = np.empty(cap, np.int64)
    next_kev = np.empty(cap)
    n_spill = 0
    pix = np.empty(18, np.int64)
    kev = np.empty(18)
    # Reciprocals up front: the loop below multiplies instead of dividing.
    inv_s2 = 1.0 / max(sigma_px * math.sqrt(2.0), 1e-12)   # sigma 0 means point charges
    inv_step = 1.0 / step
    inv_pitch = 1.0 / pitch_mm
    i = 0
    n_abs = 0
    n_first = 0
    for f in range(n_frames):
        nt = 0
        for k in range(n_spill):
            p = U(spill_pix[k])
            if mark[p] == 0:
                mark[p] = 1
                touched[U(nt)] = p
                nt += 1
            acc[p] += spill_kev[k]
        n_next = 0
        while i < nphot and photon_frame[U(i)] == f:
            energy = energy_kev[U(i)]
            z = rng.exponential() * _interp(attenuation_mm, e0, inv_step, energy)
            if z >= thickness_mm:
                stats[f, 3] += 1
                i += 1
                continue
            fx_in = uniform(state)
            fy_in = uniform(state)
            pixel_i = pixel[U(i)]
            r_in = pixel_i // cols
            x = (pixel_i - r_in * cols) + fx_in
            y = r_in + fy_in
            main_kev = energy
            fl_kev, fl_x, fl_y, fl_inside, flag = 0.0, x, y, False, 0
            if escape:
                # Cd or Te K fluorescence (K-shell share times yield): the K photon takes its
                # energy away, is emitted isotropically and travels an exponential path.
                u = uniform(state)
                p_cd = _interp(k_fluorescence_cd, e0, inv_step, energy)
                if u < p_cd + _interp(k_fluorescence_te, e0, inv_step, energy):
                    el = 0 if u < p_cd else 1
                    line = _k_line(line_cdf, el, uniform(state))
                    fl_kev = line_kev[el, line]
                    main_kev = energy - fl_kev
                    path_mm = rng.exponential() * line_attenuation_mm[el, line]
                    dx, dy, dz = _isotropic_direction(state)
                    fl_x, fl_y, fl_inside, flag = _k_photon_landing(x, y, z, path_mm, dx, dy, dz, thickness_mm,
                                                                    inv_pitch)
            n_main = _cloud(x, y, main_kev, inv_s2, rows, cols, min_deposit_kev, pix, kev, 0)
            n = n_main
            if fl_inside and fl_x >= 0.0 and fl_y >= 0.0 and fl_x < cols and fl_y < rows:
                n = _cloud(fl_x, fl_y, fl_kev, inv_s2, rows, cols, min_deposit_kev, pix, kev, n)
            if _is_shared(pix, kev, n, n_main, share_min_kev):
                flag |= FLAG_SHARED
            keep = 1.0
            if spill_probability > 0.0 and uniform(state) < spill_probability:
                # Charge arriving at the end of the integration window is read partly in the
                # next frame (the "next-frame" artefact).
                keep = uniform(state)
                flag |= FLAG_SPILLED
            for a in range(n):
                p = U(pix[a])
                if mark[p] == 0:
                    mark[p] = 1
                    touched[U(nt)] = p
                    nt += 1
                acc[p] += keep * kev[a]
                if keep < 1.0 and n_next < cap:
                    next_pix[U(n_next)] = p
                    next_kev[U(n_next)] = (1.0 - keep) * kev[a]
                    n_next += 1
            o = U(n_abs)
            index[o] = i
            x_out[o] = fx_in
            y_out[o] = fy_in
            depth_mm[o] = z
            flags[o] = flag
            n_abs += 1
            i += 1
        if f == 0:
            for k in range(nt):
                p = touched[k]
                first_pix[k] = p
                first_kev[k] = acc[p]
                acc[p] = 0.0
                mark[p] = 0
            n_first = nt
        else:
            _read_out(frames[f], touched, nt, acc, mark, readout, live, noise_rate, noise_cdf, noise_threshold_sigma,
                      hot_pixels, hot_probability, hot_mean_adu, hot_sigma_adu, rng, state, stats[f])
        for k in range(n_next):
            spill_pix[k] = next_pix[k]
            spill_kev[k] = next_kev[k]
        n_spill = n_next
    for k in range(n_spill):
        carry_pix[k] = spill_pix[k]
        carry_kev[k] = spill_kev[k]
    return n_first, n_spill, n_abs


@njit(cache=True, nogil=True)
def read_first_frame(first_pix, first_kev, n_first, carry_pix, carry_kev, n_carry, readout, live,
                     noise_rate, noise_cdf, noise_threshold_sigma,
                     hot_pixels, hot_probability, hot_mean_adu, hot_sigma_adu, rng, state, frame, stats):
    """Read out a block's first frame: its own charge (from :func:`detect_block`) plus the previous block's spill.

    ``frame`` (rows * cols,) uint16 must be zero; ``stats`` (4,) as in detect_block.
    """
    npix = frame.shape[0]
    acc = np.zeros(npix)
    mark = np.zeros(npix, np.uint8)
    touched = np.empty(npix, np.int64)
    nt = 0
    for k in range(n_first + n_carry):
        if k < n_first:
            p = first_pix[k]
            e = first_kev[k]
        else:
            p = carry_pix[k - n_first]
            e = carry_kev[k - n_first]
        if mark[p] == 0:
            mark[p] = 1
            touched[nt] = p
            nt += 1
        acc[p] += e
    _read_out(frame, touched, nt, acc, mark, readout, live, noise_rate, noise_cdf, noise_threshold_sigma,
              hot_pixels, hot_probability, hot_mean_adu, hot_sigma_adu, rng, state, stats)
