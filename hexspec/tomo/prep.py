"""Pre-processing of projections and sinograms before reconstruction.

Axes: projections are (angles, rows, cols), a sinogram is (angles, cols) - the angular
direction is axis 0, as in algotom. Values are counts until :func:`normalize`, then
transmission in (0, 1], then attenuation line integrals (dimensionless, per pixel) after
:func:`minus_log`.

Stripe (ring) removal and the 360 -> 180 conversion use Vo's methods as implemented in
algotom (https://doi.org/10.1364/OE.26.028396); the default stripe removal ("masked") and
a numba version of the sorting method are written here (reasons in their docstrings).
Centre finding lives in :mod:`hexspec.tomo.center` and is re-exported here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import ConfigError
from .center import CenterResult, find_center, find_center_360  # noqa: F401  (part of prep)

#: transmissions are clipped to [MIN_TRANSMISSION, MAX_TRANSMISSION] before -log: a dead
#: pixel (0), a negative value after dark subtraction or a NaN would otherwise give inf/NaN
#: that FBP spreads over the whole slice.
MIN_TRANSMISSION = 1e-6
MAX_TRANSMISSION = 1e3


def normalize(proj, flat=None, dark=None):
    """Flat/dark field correction: (proj - dark) / (flat - dark).

    Parameters
    ----------
    proj : array (angles, rows, cols)
        Raw projections (counts).
    flat, dark : array (n, rows, cols) or (rows, cols), optional
        White (open beam) and dark fields; averaged over axis 0 (median for n >= 3, which
        ignores a zinger in one frame). Missing dark = 0; missing flat: proj is returned as float32.

    Returns
    -------
    float32 array (angles, rows, cols): transmission (1 = no absorption). Where
    flat - dark <= 0 (dead pixels) the transmission is set to 1.
    """
    proj = np.asarray(proj, dtype=np.float32)
    if flat is None:
        return proj.copy() if dark is None else proj - _field(dark, proj, "dark")
    dark_img = _field(dark, proj, "dark") if dark is not None else np.float32(0)
    den = _field(flat, proj, "flat") - dark_img
    good = den > 0
    den = np.where(good, den, 1.0).astype(np.float32)
    out = (proj - dark_img) / den
    out[:, ~good] = 1.0
    return out


def _field(field, proj, what):
    field = np.asarray(field, dtype=np.float32)
    if field.ndim == 3:
        field = np.median(field, axis=0) if field.shape[0] >= 3 else field.mean(axis=0)
    if field.shape != proj.shape[1:]:
        raise ConfigError(f"{what} field: expected frames of (rows, cols) = {proj.shape[1:]}, found {field.shape}")
    return field


def minus_log(transmission, min_transmission=MIN_TRANSMISSION):
    """Attenuation line integrals -ln(T), with T clipped so no NaN or inf can come out.

    Parameters
    ----------
    transmission : array (any shape)
        Flat-field corrected transmission.
    min_transmission : float
        Floor for T (NaN and values <= 0 are set to it, +inf to MAX_TRANSMISSION).

    Returns
    -------
    float32 array, finite everywhere, in [-ln(MAX_TRANSMISSION), -ln(min_transmission)].
    """
    t = np.asarray(transmission)
    t = np.nan_to_num(t.astype(np.float64) if t.dtype.kind != "f" else t, nan=min_transmission,
                      posinf=MAX_TRANSMISSION, neginf=min_transmission)
    t = np.clip(t, min_transmission, MAX_TRANSMISSION).astype(np.float32)   # clip first: no float32 overflow
    return -np.log(t)


def remove_zingers(proj, threshold=0.08, size=2):
    """Remove zingers (bright single-pixel spikes) from each projection (algotom, Vo 2021).

    Parameters
    ----------
    proj : array (angles, rows, cols) or (rows, cols)
    threshold : float
        Relative excess over the local mean that marks a zinger (0.05-0.1 recommended).
    size : int
        Zinger size in pixels.
    """
    from algotom.prep.removal import remove_zinger
    proj = np.asarray(proj, dtype=np.float32)
    if proj.ndim == 2:
        return remove_zinger(proj, threshold, size)
    return np.stack([remove_zinger(p, threshold, size) for p in proj])


# --------------------------------------------------------------------------- stripes / rings

RING_METHODS = ("masked", "sorting", "filtering", "fitting", "dead", "large", "all", "none")


@njit(cache=True, nogil=True)
def _reflect(i, n):
    # scipy.ndimage "reflect" mode: d c b a | a b c d | d c b a
    while i < 0 or i >= n:
        i = -i - 1 if i < 0 else 2 * n - i - 1
    return i


@njit(cache=True, nogil=True)
def _median_reflect_row(row, size, out, window):
    """Running median of ``size`` (odd) along ``row``: a sorted window updated by one
    removal and one insertion per step instead of a fresh sort."""
    n = row.shape[0]
    half = size // 2
    for k in range(size):
        window[k] = row[_reflect(k - half, n)]
    window.sort()
    out[0] = window[half]
    for j in range(1, n):
        old = row[_reflect(j - 1 - half, n)]
        new = row[_reflect(j + half, n)]
        p = 0
        while window[p] != old:
            p += 1
        # drop old, slide to keep order while inserting new
        if new >= old:
            while p + 1 < size and window[p + 1] < new:
                window[p] = window[p + 1]
                p += 1
        else:
            while p > 0 and window[p - 1] > new:
                window[p] = window[p - 1]
                p -= 1
        window[p] = new
        out[j] = window[half]


@njit(cache=True, nogil=True)
def _stripe_sorting_kernel(sino, size):
    nrow, ncol = sino.shape
    index = np.empty((ncol, nrow), np.int64)
    sorted_ = np.empty((ncol, nrow), sino.dtype)
    for c in range(ncol):
        column = sino[:, c].copy()
        order = np.argsort(column, kind="mergesort")
        for r in range(nrow):
            index[c, r] = order[r]
            sorted_[c, r] = column[order[r]]
    out = np.empty_like(sino)
    for r in range(nrow):
        line = np.empty(ncol, sino.dtype)
        for c in range(ncol):
            line[c] = sorted_[c, r]
        filt = np.empty(ncol, sino.dtype)
        window = np.empty(size, sino.dtype)
        _median_reflect_row(line, size, filt, window)
        for c in range(ncol):
            out[index[c, r], c] = filt[c]
    return out


def remove_stripes_sorting(sinogram, size=21):
    """Vo's sorting-based stripe removal (algotom's ``remove_stripe_based_sorting``, dim=1).

    Each detector column is sorted along the angles, the sorted image is median-filtered
    across columns with a window of ``size``, and the values are put back in their
    original order. Written with numba (a running median instead of a fresh sort per
    window) because algotom's costs about as much per slice as the back projection;
    tests check it against algotom's.

    Parameters
    ----------
    sinogram : array (angles, cols)
    size : int
        Median window across columns (odd; stripes wider than about size/2 survive).
    """
    sino = np.ascontiguousarray(sinogram, dtype=np.float32)
    return _stripe_sorting_kernel(sino, int(size) | 1)


def stripe_offsets(sinogram, width=5):
    """Offset each detector column keeps at every angle: median over angles of the
    sinogram's excess over its running median across ``width`` columns.

    A running median leaves a monotonic profile unchanged, so the object's edges (which
    also sweep across columns as the angle changes) hardly register, while a stripe up
    to ``width // 2`` columns wide shows at its full height.

    Parameters
    ----------
    sinogram : array (angles, cols)

    Returns
    -------
    float32 array (cols,)
    """
    from scipy import ndimage as ndi
    s = np.asarray(sinogram, dtype=np.float32)
    excess = s - ndi.median_filter(s, size=(1, int(width) | 1), mode="reflect")
    return np.median(excess, axis=0)


def find_stripes(sinogram, snr=5.0, width=5):
    """Detector columns carrying a stripe (a ring in the slice): :func:`stripe_offsets`
    beyond ``snr`` robust standard deviations (1.4826 MAD over columns).

    Returns
    -------
    bool array (cols,)
    """
    level = stripe_offsets(sinogram, width)
    spread = 1.4826 * np.median(np.abs(level - np.median(level)))
    # a floor so that round-off on noise-free (simulated) data is not read as stripes
    scale = float(np.abs(np.asarray(sinogram, dtype=np.float32)).max())
    spread = max(float(spread), 1e-5 * max(scale, 1e-12))
    return np.abs(level) > snr * spread


def remove_stripes_masked(sinogram, snr=5.0, width=5):
    """Subtract the offsets of the columns :func:`find_stripes` flags; change nothing else.

    Each run of flagged columns (widened by one on each side) is bridged, at every angle,
    by a parabola through the two unflagged columns on each side; the median over angles of the
    data's excess over that line is the column's offset, and is subtracted. Exact for the
    constant offset of a miscalibrated pixel on a locally linear profile, and a no-op on
    clean data, whereas Vo's methods ("sorting" and the others of :func:`remove_stripes`)
    filter every column, which on clean data blurs the sinogram's own structure (on a
    noise-free Shepp-Logan phantom "sorting" raises the reconstruction error about
    fourfold). Hand-written because algotom's stripe detection (``detect_stripe``)
    refuses noise-free data and its corrections act on the whole sinogram; use "sorting"
    or "all" for stripes that vary with angle or are wide.

    Parameters
    ----------
    sinogram : array (angles, cols)
    snr : float
        Detection threshold in robust standard deviations.
    width : int
        Running-median width across columns (odd) used for detection.
    """
    from scipy import ndimage as ndi
    sino = np.array(sinogram, dtype=np.float32)
    ncol = sino.shape[1]
    mask = ndi.binary_dilation(find_stripes(sino, snr, width))
    if not mask.any() or mask.all():
        return sino
    idx = np.flatnonzero(mask)
    for g in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
        # the two unflagged columns on each side (fewer at an edge) carry the bridge: a
        # parabola per angle, so the curvature of the object's profile is not read as offset
        known = [c for c in (g[0] - 2, g[0] - 1, g[-1] + 1, g[-1] + 2) if 0 <= c < ncol and not mask[c]]
        if len(known) < 2:
            continue
        order = min(2, len(known) - 1)
        basis = np.vander(np.asarray(known, float) - g.mean(), order + 1)
        coef = np.linalg.lstsq(basis, sino[:, known].T.astype(float), rcond=None)[0]      # (order+1, angles)
        line = (np.vander(g - g.mean(), order + 1) @ coef).T
        sino[:, g] -= np.median(sino[:, g] - line, axis=0)[None, :]
    return sino


def remove_stripes(sinogram, method="sorting", **options):
    """Remove stripes from a sinogram (rings from the reconstruction) with a named method.

    Parameters
    ----------
    sinogram : array (angles, cols)
        Attenuation sinogram (after :func:`minus_log`).
    method : str
        "masked" (the default: offsets of the columns found to be stripes removed, nothing
        else touched, see :func:`remove_stripes_masked`), "sorting" (Vo's sorting + median, algorithm 3,
        on every column; numba version here), "filtering"
        (sorting + Fourier low pass, algorithm 2), "fitting" (polynomial fit, algorithm 1),
        "dead" (unresponsive and fluctuating stripes, algorithm 6), "large" (wide stripes,
        algorithm 5), "all" (algorithms 3, 5 and 6 combined), "none". All but "masked" and "sorting"
        call ``algotom.prep.removal``; options are passed on (e.g. ``size``, ``snr``).

    Returns
    -------
    float32 array (angles, cols)
    """
    from algotom.prep import removal
    sino = np.asarray(sinogram, dtype=np.float32)
    if method in (None, "none", False):
        return sino
    if method in ("masked", True):
        return remove_stripes_masked(sino, **options)
    if method == "sorting":
        return remove_stripes_sorting(sino, **options)
    table = {"filtering": removal.remove_stripe_based_filtering, "fitting": removal.remove_stripe_based_fitting,
             "dead": removal.remove_dead_stripe, "large": removal.remove_large_stripe,
             "all": removal.remove_all_stripe}
    if method not in table:
        raise ConfigError(f"ring removal: expected one of {', '.join(RING_METHODS)}, found {method!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.asarray(table[method](sino, **options), dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def convert_360_to_180(sinogram_360, center_px):
    """Turn a 360-degree offset-axis sinogram into a 180-degree one of about twice the width.

    Parameters
    ----------
    sinogram_360 : array (angles, cols), angles evenly spaced over [0, 2 pi]
    center_px : float
        Rotation centre in the 360-degree sinogram (may lie near or beyond an edge).

    Returns
    -------
    sinogram_180 : float32 array (angles // 2 + 1, ~2 cols)
    center_px : float
        Rotation centre in the converted sinogram.
    """
    from algotom.prep.conversion import convert_sinogram_360_to_180
    sino, cor = convert_sinogram_360_to_180(np.asarray(sinogram_360, np.float32), center_px)
    return np.asarray(sino, dtype=np.float32), float(cor)


def paganin_filter(proj, pixel_size_mm, distance_mm, energy_kev, delta_over_beta, pad=64):
    """Paganin single-material phase retrieval on transmission projections.

    T_ret = F^-1[ F[T] / (1 + pi lambda z (delta/beta) |q|^2) ], q in cycles/mm (Paganin
    et al. 2002, J. Microsc. 206, 33, eq. 10 with mu = 4 pi beta / lambda). algotom's
    ``fresnel_filter`` is the same low pass but builds its window on the unpadded grid and
    stretches it over the padding, so its frequencies are not those of the padded FFT;
    written here (a few lines of scipy.fft) so the physical parameters mean what they say.

    Parameters
    ----------
    proj : array (angles, rows, cols) or (rows, cols)
        Flat-field corrected transmission.
    pixel_size_mm, distance_mm : float
        Detector pixel size and sample-detector distance, mm.
    energy_kev : float
        Photon energy, keV.
    delta_over_beta : float
        Refractive index decrement over absorption index of the material.
    pad : int
        Edge padding (pixels) on every side against wrap-around.

    Returns
    -------
    float32 array like ``proj``: filtered transmission (apply :func:`minus_log` after).
    """
    from scipy import fft
    for name, v in (("pixel_size_mm", pixel_size_mm), ("distance_mm", distance_mm), ("energy_kev", energy_kev),
                    ("delta_over_beta", delta_over_beta)):
        if not v > 0:
            raise ConfigError(f"paganin_filter: expected {name} > 0, found {v}")
    wavelength_mm = 12.398419843320026e-7 / energy_kev     # h c = 12.3984 keV Angstrom
    proj = np.asarray(proj, dtype=np.float32)
    frames = proj[None] if proj.ndim == 2 else proj
    nrow, ncol = frames.shape[1:]
    height, width = nrow + 2 * pad, ncol + 2 * pad
    qy = fft.fftfreq(height, d=pixel_size_mm)
    qx = fft.rfftfreq(width, d=pixel_size_mm)
    window = 1.0 + np.pi * wavelength_mm * distance_mm * delta_over_beta * (qy[:, None] ** 2 + qx[None, :] ** 2)
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        padded = np.pad(np.clip(frame, MIN_TRANSMISSION, None), pad, mode="edge")
        res = fft.irfft2(fft.rfft2(padded) / window, s=padded.shape)
        out[i] = res[pad:pad + nrow, pad:pad + ncol]
    return out[0] if proj.ndim == 2 else out
