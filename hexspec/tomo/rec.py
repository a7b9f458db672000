"""Reconstruction: filtered back projection (FBP) of parallel-beam sinograms.

Axes: projections (angles, rows, cols); sinograms of a slab (angles, cols, slices);
volumes (slices, N, N) = (z, y, x) with N = cols, the rotation axis at the slice's centre
((N - 1) / 2 in pixel index) and x along the detector columns.

The back projector is written here with numba rather than taken from algotom because it
is the whole cost of a reconstruction: it walks each output row once per angle with the
detector coordinate advancing by cos(theta) per pixel (no per-pixel trigonometry or
bounds tests: the valid span of each row is solved for first), skips the corners outside
the reconstruction circle, and treats a slab of slices at once so the interpolation
weights serve all of them and the innermost loop runs over contiguous slices. Filtering
is scipy.fft over the slab with the discrete Ram-Lak kernel (Kak & Slaney, Principles of
Computerized Tomographic Imaging, eq. 3.61) times the chosen window.

Iterative methods (SIRT, CGLS) run through astra-toolbox when it is installed.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit, prange

from ..errors import ConfigError
from . import prep

FILTERS = ("ramlak", "shepp-logan", "cosine", "hamming", "hann")


# --------------------------------------------------------------------------- filtering

def ramp_filter(n_fft, filter_name="ramlak"):
    """Frequency response (n_fft // 2 + 1,) for ``scipy.fft.rfft`` of length ``n_fft``.

    The Ram-Lak response is the FFT of the band-limited ramp's sampled kernel
    h[0] = 1/4, h[k odd] = -1/(pi k)^2, h[k even] = 0 (so its zero-frequency value is
    right for a finite detector); the windows multiply it with f in cycles per pixel:
    shepp-logan sinc(f), cosine cos(pi f), hamming 0.54 + 0.46 cos(2 pi f), hann cos^2(pi f).
    """
    from scipy import fft
    k = np.concatenate([np.arange(0, n_fft // 2 + 1), np.arange(-(n_fft - n_fft // 2 - 1), 0)])
    h = np.zeros(n_fft)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = np.real(fft.rfft(h))          # ~ |f|, f in cycles per pixel
    f = fft.rfftfreq(n_fft)
    name = (filter_name or "ramlak").lower().replace("_", "-")
    if name in ("ramlak", "ram-lak", "ramp"):
        window = 1.0
    elif name == "shepp-logan":
        window = np.sinc(f)
    elif name == "cosine":
        window = np.cos(np.pi * f)
    elif name == "hamming":
        window = 0.54 + 0.46 * np.cos(2 * np.pi * f)
    elif name in ("hann", "hanning"):
        window = np.cos(np.pi * f) ** 2
    else:
        raise ConfigError(f"filter: expected one of {', '.join(FILTERS)}, found {filter_name!r}")
    return (response * window).astype(np.float32)


def filter_sinograms(sinos, filter_name="ramlak", workers=None):
    """Ramp-filter sinograms along the detector axis.

    Parameters
    ----------
    sinos : array (angles, cols, slices) float32
    filter_name : str
        One of FILTERS.
    workers : int, optional
        FFT threads (default: all cores).

    Returns
    -------
    float32 array (angles, cols + 1, slices): the filtered sinograms plus one zero column,
    which the back projector's linear interpolation may touch at the last detector pixel.
    """
    from scipy import fft
    nang, ncol, nsl = sinos.shape
    n_fft = fft.next_fast_len(2 * ncol, real=True)
    left = (n_fft - ncol) // 2
    response = ramp_filter(n_fft, filter_name)
    # edge padding: a sample wider than the detector is continued rather than cut to zero,
    # which keeps the cupping of truncated data small
    padded = np.empty((nang, n_fft, nsl), np.float32)
    padded[:, left:left + ncol] = sinos
    padded[:, :left] = sinos[:, :1]
    padded[:, left + ncol:] = sinos[:, -1:]
    spec = fft.rfft(padded, axis=1, workers=workers or os.cpu_count())
    spec *= response[None, :, None]
    out = np.zeros((nang, ncol + 1, nsl), np.float32)
    out[:, :ncol] = fft.irfft(spec, n=n_fft, axis=1, workers=workers or os.cpu_count())[:, left:left + ncol]
    return out


# --------------------------------------------------------------------------- back projection

@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _backproject(filtered, cos_t, sin_t, center, n_out, radius):
    """Sum over angles of the filtered sinograms at t = x cos - y sin + center (pixels).

    filtered (angles, cols + 1, slices); returns (n_out, n_out, slices) = (y, x, slice).
    """
    nang, ncol1, nsl = filtered.shape
    tmax = ncol1 - 2.0            # last real detector pixel; column ncol is the zero pad
    half = 0.5 * (n_out - 1)
    out = np.zeros((n_out, n_out, nsl), np.float32)
    r2 = radius * radius
    for iy in prange(n_out):
        y = iy - half
        if y * y > r2:
            continue
        xr = math.sqrt(r2 - y * y)
        x_lo_circ = max(0, int(math.ceil(half - xr)))
        x_hi_circ = min(n_out - 1, int(math.floor(half + xr)))
        acc = np.zeros((n_out, nsl), np.float32)     # this row, private to the thread
        for a in range(nang):
            c = cos_t[a]
            b = center - y * sin_t[a] - half * c   # t at ix = 0
            lo = x_lo_circ
            hi = x_hi_circ
            # solve 0 <= t = b + ix c <= tmax for ix instead of testing every pixel
            if c > 1e-9:
                lo = max(lo, int(math.ceil(-b / c)))
                hi = min(hi, int(math.floor((tmax - b) / c)))
            elif c < -1e-9:
                lo = max(lo, int(math.ceil((tmax - b) / c)))
                hi = min(hi, int(math.floor(-b / c)))
            elif b < 0.0 or b > tmax:
                hi = lo - 1
            for ix in range(lo, hi + 1):
                t = max(b + ix * c, 0.0)              # max: rounding at the span's end
                i0 = min(int(t), ncol1 - 2)
                w = np.float32(t - i0)
                for k in range(nsl):
                    s0 = filtered[a, i0, k]
                    acc[ix, k] += s0 + w * (filtered[a, i0 + 1, k] - s0)
        out[iy] = acc
    return out


def backproject(filtered, theta_rad, center, n_out=None, circle=True):
    """Back-project filtered sinograms.

    Parameters
    ----------
    filtered : float32 array (angles, cols + 1, slices), from :func:`filter_sinograms`
    theta_rad : array (angles,)
    center : float
        Rotation axis, detector column (pixels).
    n_out : int, optional
        Output slice size (default cols).
    circle : bool
        Leave the corners outside the inscribed circle (which not every view saw) at 0.

    Returns
    -------
    float32 array (slices, n_out, n_out)
    """
    filtered = np.ascontiguousarray(filtered, dtype=np.float32)
    ncol = filtered.shape[1] - 1
    n_out = ncol if n_out is None else int(n_out)
    theta = np.asarray(theta_rad, dtype=np.float64)
    radius = 0.5 * (n_out - 1) + 0.5 if circle else float(n_out) * 2.0
    img = _backproject(filtered, np.cos(theta).astype(np.float64), np.sin(theta).astype(np.float64),
                       float(center), n_out, radius)
    # sum over angles approximates integral over [0, pi): dtheta = pi / n for 180 degrees;
    # over 360 degrees every line is seen twice, and pi / n is again the right weight
    img *= np.float32(np.pi / len(theta))
    return np.ascontiguousarray(img.transpose(2, 0, 1))


# --------------------------------------------------------------------------- the whole chain

def prepare_sinograms(proj, flat=None, dark=None, ring_removal="masked", take_log=True, zinger_threshold=None):
    """Projections of a slab of rows -> attenuation sinograms (angles, cols, rows) float32.

    Parameters
    ----------
    proj : array (angles, rows, cols) counts (or transmission, or attenuation with
        ``take_log=False``)
    flat, dark : array (n, rows, cols), optional
    ring_removal : str or bool
        A method of :func:`hexspec.tomo.prep.remove_stripes` (True = "masked"), or "none"/False.
    take_log : bool
        Normalise and take -log (False: ``proj`` already holds line integrals).
    zinger_threshold : float, optional
        Remove zingers from the projections first (see :func:`prep.remove_zingers`).
    """
    proj = np.asarray(proj, dtype=np.float32)
    if zinger_threshold:
        proj = prep.remove_zingers(proj, zinger_threshold)
    if take_log:
        att = prep.minus_log(prep.normalize(proj, flat, dark))
    else:
        att = np.nan_to_num(proj, nan=0.0, posinf=0.0, neginf=0.0)
    method = _ring_method(ring_removal)
    sinos = np.empty((att.shape[0], att.shape[2], att.shape[1]), np.float32)
    for r in range(att.shape[1]):
        sinos[:, :, r] = prep.remove_stripes(att[:, r, :], method)
    return sinos


def _ring_method(ring_removal):
    if ring_removal is True:
        return "masked"
    if ring_removal in (False, None):
        return "none"
    if ring_removal not in prep.RING_METHODS:
        raise ConfigError(f"ring removal: expected one of {', '.join(prep.RING_METHODS)}, found {ring_removal!r}")
    return ring_removal


def _check_inputs(proj, theta_rad):
    if proj.ndim == 2:
        proj = proj[:, None, :]
    if proj.ndim != 3:
        raise ConfigError(f"projections: expected (angles, rows, cols), found shape {proj.shape}")
    theta = np.asarray(theta_rad, dtype=np.float64).ravel()
    if theta.shape[0] != proj.shape[0]:
        raise ConfigError(f"theta_rad: expected {proj.shape[0]} angles (one per projection), found {theta.shape[0]}")
    if not np.all(np.isfinite(theta)):
        raise ConfigError("theta_rad: expected finite angles, found NaN or inf")
    return proj, theta


def reconstruct(proj, theta_rad, flat=None, dark=None, center=None, ring_removal=True, filter_name="ramlak", *,
                take_log=True, voxel_size_mm=None, rows=None, slab=16, zinger_threshold=None):
    """Reconstruct a volume by filtered back projection.

    Parameters
    ----------
    proj : array (angles, rows, cols)
        Projections as recorded (counts; or transmission; or line integrals with
        ``take_log=False``). A single sinogram (angles, cols) is accepted.
    theta_rad : array (angles,)
        Projection angles in radians (over 180 or 360 degrees).
    flat, dark : array (n, rows, cols), optional
        White and dark fields. Without a flat field, ``proj`` must already be transmission.
    center : float, optional
        Rotation axis as a detector column in pixels; None: found on the middle row with
        :func:`hexspec.tomo.prep.find_center`.
    ring_removal : bool or str
        True = "masked"; any name of ``prep.RING_METHODS``; False or "none" to skip.
    filter_name : str
        "ramlak", "shepp-logan", "cosine", "hamming" or "hann".
    take_log : bool
        Normalise with flat/dark and take -log (False if ``proj`` are already line integrals).
    voxel_size_mm : float, optional
        If given, values are attenuation coefficients in 1/mm; otherwise per pixel.
    rows : slice or (start, stop), optional
        Detector rows to reconstruct (default all).
    slab : int
        Slices processed together (working memory about slab * :func:`bytes_per_slice`).
    zinger_threshold : float, optional
        Remove zingers first.

    Returns
    -------
    float32 array (slices, N, N), N = cols; zero outside the reconstruction circle.
    """
    proj, theta = _check_inputs(np.asarray(proj), theta_rad)
    nang, nrow, ncol = proj.shape
    r0, r1 = _row_range(rows, nrow)
    if center is None:
        center = find_center_of(proj, theta, flat, dark, row=(r0 + r1) // 2, take_log=take_log).center_px
    center = float(center)
    if not 0 <= center <= ncol - 1:
        raise ConfigError(f"center: expected a detector column in [0, {ncol - 1}], found {center:g}")
    vol = np.empty((r1 - r0, ncol, ncol), np.float32)
    for z0 in range(r0, r1, slab):
        z1 = min(z0 + slab, r1)
        vol[z0 - r0:z1 - r0] = reconstruct_slab(proj[:, z0:z1], theta, _rows(flat, z0, z1), _rows(dark, z0, z1),
                                                center, ring_removal, filter_name, take_log=take_log,
                                                zinger_threshold=zinger_threshold)
    if voxel_size_mm:
        vol /= np.float32(voxel_size_mm)
    return vol


def _rows(field, z0, z1):
    if field is None:
        return None
    # slice first: an h5py dataset or memmap then reads only these rows
    return np.asarray(field[:, z0:z1] if field.ndim == 3 else field[z0:z1])


def _row_range(rows, nrow):
    if rows is None:
        return 0, nrow
    if isinstance(rows, slice):
        r0, r1, step = rows.indices(nrow)
        if step != 1:
            raise ConfigError("rows: expected a contiguous range")
    else:
        r0, r1 = (int(r) for r in rows)
    if not 0 <= r0 < r1 <= nrow:
        raise ConfigError(f"rows: expected 0 <= start < stop <= {nrow}, found {r0}, {r1}")
    return r0, r1


def reconstruct_slab(proj, theta_rad, flat, dark, center, ring_removal=True, filter_name="ramlak", *,
                     take_log=True, zinger_threshold=None):
    """Reconstruct a slab of detector rows: (angles, rows, cols) -> (rows, cols, cols) float32 per pixel."""
    sinos = prepare_sinograms(proj, flat, dark, ring_removal, take_log, zinger_threshold)
    filtered = filter_sinograms(sinos, filter_name)
    del sinos
    return backproject(filtered, theta_rad, center)


def find_center_of(proj, theta_rad, flat=None, dark=None, row=None, take_log=True, **options):
    """Rotation centre of projections (angles, rows, cols) from one row's sinogram.

    The row (default the middle one) is normalised, -logged and cleared of stripes before
    :func:`hexspec.tomo.prep.find_center` (options passed on). For a 360-degree scan the
    centre search uses all views (opposite views pair up across the whole scan).

    Returns
    -------
    prep.CenterResult
    """
    nrow = proj.shape[1]
    row = nrow // 2 if row is None else int(row)
    sino = prepare_sinograms(np.asarray(proj[:, row:row + 1, :]), _rows(flat, row, row + 1),
                             _rows(dark, row, row + 1), "masked", take_log)[:, :, 0]
    return prep.find_center(sino, theta_rad, **options)


def reconstruct_iterative(sinogram, theta_rad, center, method="SIRT", iterations=100):
    """SIRT or CGLS of one sinogram (angles, cols) through astra-toolbox (CPU or GPU).

    Raises
    ------
    ConfigError
        If astra-toolbox is not installed.
    """
    try:
        import astra  # noqa: F401
    except ImportError:
        raise ConfigError(f"{method}: needs astra-toolbox, which is not installed "
                          f"(pip install astra-toolbox); FBP is available without it") from None
    from algotom.rec.reconstruction import astra_reconstruction
    method = method.upper()
    if method not in ("SIRT", "CGLS"):
        raise ConfigError(f"iterative method: expected SIRT or CGLS, found {method!r}")
    return astra_reconstruction(np.asarray(sinogram, np.float32), center, angles=np.asarray(theta_rad),
                                method=method, num_iter=iterations, apply_log=False)


# --------------------------------------------------------------------------- streaming

def machine_memory_bytes() -> int:
    """Physical memory of the machine (bytes)."""
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def default_max_memory_bytes() -> int:
    """Default working-memory budget of a reconstruction: a quarter of the machine's memory."""
    return machine_memory_bytes() // 4


def bytes_per_slice(n_angles, n_cols) -> int:
    """Working memory of one detector row through the chain (bytes, float32).

    Counted from the largest moment, the filtering: the row's projections as read and
    corrected, the sinogram, its padded copy (about twice the width), the complex
    spectrum and the inverse transform (each ~8 bytes per angle and column), the filtered
    output; then the slice itself twice (back projection and its transposed copy).
    """
    return int(40 * n_angles * n_cols + 8 * n_cols * n_cols)


#: set aside from the budget for what the libraries keep once used: HDF5's free lists and
#: chunk caches for reading and writing, FFT plans, per-thread allocator arenas (about
#: 18 MB measured with h5py 3, scipy 1 and numba on Linux, independent of the volume's size)
LIBRARY_RESERVE_BYTES = 32 * 2**20


def slab_rows(n_angles, n_cols, max_memory_bytes, flat_frames=0, dark_frames=0) -> int:
    """Rows per slab that keep the reconstruction's memory growth within ``max_memory_bytes``.

    The budget covers everything the process allocates after start-up: the slab's arrays
    (:func:`bytes_per_slice` per row) and :data:`LIBRARY_RESERVE_BYTES`.
    """
    per_row = bytes_per_slice(n_angles, n_cols) + 4 * n_cols * (flat_frames + dark_frames)
    rows = int((max_memory_bytes - LIBRARY_RESERVE_BYTES) // per_row)
    if rows < 1:
        need = (LIBRARY_RESERVE_BYTES + per_row) / 2**20
        raise ConfigError(f"--max-memory: reconstructing rows of {n_angles} angles x {n_cols} columns needs at least "
                          f"{need:.0f} MB, found a budget of {max_memory_bytes / 2**20:.1f} MB")
    return min(rows, 64)


def reconstruct_to_file(projections, writer_factory, *, center=None, ring_removal=True, filter_name="ramlak",
                        voxel_size_mm=None, max_memory_bytes=None, rows=None, progress=None, take_log=True):
    """Reconstruct projections slab by slab into a volume file, within a memory budget.

    Parameters
    ----------
    projections : hexspec.tomo.io.Projections
        Opened with :func:`hexspec.tomo.io.open_projections` (HDF5 read lazily, .npy mapped).
    writer_factory : callable(shape, center_result) -> hexspec.tomo.io.VolumeWriter
        Called once the centre is known, to create the output.
    center, ring_removal, filter_name, voxel_size_mm, rows, take_log : as :func:`reconstruct`
    max_memory_bytes : int, optional
        Working-memory budget (default :func:`default_max_memory_bytes`); the number of
        rows reconstructed together is chosen from it (see :func:`bytes_per_slice`).
    progress : callable(done, total), optional

    Returns
    -------
    dict: center_px, center_confidence (None if given), slab_rows, shape
    """
    proj = projections.proj
    nang, nrow, ncol = proj.shape
    theta = np.asarray(projections.theta_rad, dtype=np.float64)
    if theta.shape != (nang,):
        raise ConfigError(f"theta_rad: expected {nang} angles, found {theta.shape}")
    r0, r1 = _row_range(rows, nrow)
    budget = default_max_memory_bytes() if max_memory_bytes is None else int(max_memory_bytes)
    nflat = projections.flat.shape[0] if projections.flat is not None else 0
    ndark = projections.dark.shape[0] if projections.dark is not None else 0
    slab = slab_rows(nang, ncol, budget, nflat, ndark)
    found = None
    if center is None:
        found = find_center_of(proj, theta, projections.flat, projections.dark, row=(r0 + r1) // 2,
                               take_log=take_log)
        center = found.center_px
    center = float(center)
    if not 0 <= center <= ncol - 1:
        raise ConfigError(f"center: expected a detector column in [0, {ncol - 1}], found {center:g}")
    scale = np.float32(1.0 / voxel_size_mm) if voxel_size_mm else np.float32(1.0)
    with writer_factory((r1 - r0, ncol, ncol), found) as writer:
        for z0 in range(r0, r1, slab):
            z1 = min(z0 + slab, r1)
            block = reconstruct_slab(np.asarray(proj[:, z0:z1, :]), theta, _rows(projections.flat, z0, z1),
                                     _rows(projections.dark, z0, z1), center, ring_removal, filter_name,
                                     take_log=take_log)
            block *= scale
            writer[z0 - r0:z1 - r0] = block
            del block
            if progress is not None:
                progress(z1 - r0, r1 - r0)
    return {"center_px": center, "center_confidence": None if found is None else found.confidence,
            "slab_rows": slab, "shape": (r1 - r0, ncol, ncol)}
