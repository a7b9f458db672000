"""Correlate XCT microstructure with the Compton maps: depth regions, projection, grid, fit.

The chain (PHYSICS.md section 6): split the electrode into N equal depth regions along the
thickness axis; project each region to 2-D (porosity per column = pore voxels / electrode
voxels along the axis); bring the map to the Compton image's pixel size by area averaging
(0.27 mm at the sample, PHYSICS.md section 3) and orientation (the pinhole image is
inverted); register it onto the Compton count image of that depth region
(:func:`hexspec.tomo.register`); then read S and Li content against porosity pixel by
pixel and per region.

Axes: volumes (z, y, x) with z through the electrode thickness by default (``axis=0``);
2-D maps (rows, cols), row 0 at the top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

#: Sample width seen by one HEXITEC pixel through the reference pinhole camera:
#: 0.25 mm pitch x d1/d2 = 0.25 x 160/150 (PHYSICS.md sections 1 and 3).
COMPTON_PIXEL_MM = 0.25 * 160.0 / 150.0


def region_bounds(electrode_mask, n_regions=3, axis=0):
    """Slice limits of ``n_regions`` equal depth regions spanning the electrode along ``axis``.

    Parameters
    ----------
    electrode_mask : ndarray of bool, 3-D
        True inside the electrode (pores included).
    n_regions : int
    axis : int
        Depth axis (through the thickness).

    Returns
    -------
    list of (start, stop) voxel indices along ``axis``; region 1 starts at the electrode's
    first slice. Edges are rounded to whole slices, so regions differ by at most one slice.
    """
    mask = np.asarray(electrode_mask, dtype=bool)
    if mask.ndim != 3:
        raise ConfigError(f"region_bounds: expected a 3-D electrode mask, found shape {mask.shape}")
    if n_regions < 1:
        raise ConfigError(f"region_bounds: expected at least one region, found {n_regions}")
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=other))
    if present.size < n_regions:
        raise ConfigError(f"region_bounds: the electrode spans {present.size} slices along axis {axis}, "
                          f"fewer than the {n_regions} regions asked for")
    first, last = int(present[0]), int(present[-1]) + 1
    edges = np.round(np.linspace(first, last, n_regions + 1)).astype(int)
    return [(int(edges[k]), int(edges[k + 1])) for k in range(n_regions)]


def depth_regions(electrode_mask, n_regions=3, axis=0):
    """Label the electrode's voxels with their depth region: 1..n_regions, 0 outside.

    Returns
    -------
    labels : ndarray uint8, the mask's shape
    bounds : list of (start, stop) along ``axis`` (see :func:`region_bounds`)
    """
    mask = np.asarray(electrode_mask, dtype=bool)
    bounds = region_bounds(mask, n_regions, axis)
    labels = np.zeros(mask.shape, np.uint8)
    index = [slice(None)] * 3
    for k, (a, b) in enumerate(bounds, start=1):
        index[axis] = slice(a, b)
        labels[tuple(index)] = k * mask[tuple(index)]
    return labels, bounds


def project_regions(pore_mask, electrode_mask, n_regions=3, axis=0):
    """Pore and electrode voxel counts of each depth region, summed along the depth axis.

    Returns
    -------
    pores, electrode : ndarray (n_regions, a, b) float64
        Column sums over each region; porosity per column is ``pores / electrode``.
    bounds : list of (start, stop)
    """
    pore = np.asarray(pore_mask, dtype=bool)
    elec = np.asarray(electrode_mask, dtype=bool)
    if pore.shape != elec.shape:
        raise ConfigError(f"project_regions: pore mask {pore.shape} and electrode mask {elec.shape} differ in shape")
    bounds = region_bounds(elec, n_regions, axis)
    pores, electrode = [], []
    for a, b in bounds:
        sl = [slice(None)] * 3
        sl[axis] = slice(a, b)
        e = elec[tuple(sl)]
        pores.append((pore[tuple(sl)] & e).sum(axis=axis, dtype=np.float64))
        electrode.append(e.sum(axis=axis, dtype=np.float64))
    return np.stack(pores), np.stack(electrode), bounds


def _overlap_matrix(n_in, in_px, out_px, n_out=None):
    """(n_out, n_in) fractions of each input pixel inside each output pixel (both grids start at 0)."""
    if n_out is None:
        n_out = int(math.floor(n_in * in_px / out_px + 1e-9))
    lo_in = np.arange(n_in) * in_px
    lo_out = np.arange(n_out)[:, None] * out_px
    overlap = np.clip(np.minimum(lo_in + in_px, lo_out + out_px) - np.maximum(lo_in, lo_out), 0.0, None)
    return overlap / in_px


def area_sum(image, pixel_mm, target_pixel_mm):
    """Sum ``image`` over the footprint of each pixel of a coarser grid (fractional overlaps).

    Hand-written because skimage.transform.downscale_local_mean takes whole factors only,
    and 0.27 mm is no whole multiple of an XCT voxel. The coarse grid starts at the image's
    corner and keeps whole target pixels only. Summed quantities (voxel counts) stay sums;
    divide two of them for an area-averaged ratio such as porosity.

    Parameters
    ----------
    image : ndarray (rows, cols)
    pixel_mm : float
        Pixel size of ``image``.
    target_pixel_mm : float
        Pixel size of the result (>= pixel_mm).

    Returns
    -------
    ndarray (floor(rows * pixel_mm / target), floor(cols * pixel_mm / target))
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ConfigError(f"area_sum: expected a 2-D image, found shape {img.shape}")
    if not 0 < pixel_mm <= target_pixel_mm:
        raise ConfigError(f"area_sum: expected 0 < pixel_mm <= target_pixel_mm, found {pixel_mm} and {target_pixel_mm}")
    ay = _overlap_matrix(img.shape[0], pixel_mm, target_pixel_mm)
    ax = _overlap_matrix(img.shape[1], pixel_mm, target_pixel_mm)
    return ay @ img @ ax.T


def porosity_maps(pore_mask, electrode_mask, voxel_size_mm, n_regions=3, axis=0, pixel_mm=COMPTON_PIXEL_MM,
                  inverted=True):
    """Porosity of each depth region per Compton-sized pixel, oriented as the pinhole image.

    Parameters
    ----------
    pore_mask, electrode_mask : ndarray of bool (z, y, x)
    voxel_size_mm : float
        Isotropic XCT voxel size.
    n_regions, axis : see :func:`depth_regions`
    pixel_mm : float
        Sample width of one Compton pixel (default 0.25 x 160 / 150 mm).
    inverted : bool
        Turn the maps by 180 degrees, as the pinhole camera images the sample.

    Returns
    -------
    porosity : ndarray (n_regions, rows, cols)
        Pore volume / electrode volume of each coarse pixel (NaN where it holds no electrode).
    electrode_fraction : ndarray (n_regions, rows, cols)
        Share of the coarse pixel's column that is electrode (1 inside, 0 outside).
    bounds : list of (start, stop)
    """
    pores, electrode, bounds = project_regions(pore_mask, electrode_mask, n_regions, axis)
    por, frac = [], []
    for k, (a, b) in enumerate(bounds):
        p = area_sum(pores[k], voxel_size_mm, pixel_mm)
        e = area_sum(electrode[k], voxel_size_mm, pixel_mm)
        full = area_sum(np.full(pores[k].shape, float(b - a)), voxel_size_mm, pixel_mm)
        with np.errstate(invalid="ignore", divide="ignore"):
            por.append(np.where(e > 0, p / e, np.nan))
        frac.append(e / full)
    por, frac = np.stack(por), np.stack(frac)
    if inverted:
        por, frac = por[:, ::-1, ::-1].copy(), frac[:, ::-1, ::-1].copy()
    return por, frac, bounds


def place_centred(image, shape, fill=np.nan):
    """Pad or crop a 2-D map to ``shape`` about its centre (the start for registration)."""
    img = np.asarray(image, dtype=np.float64)
    out = np.full(shape, fill, dtype=np.float64)
    src, dst = [], []
    for n_in, n_out in zip(img.shape, shape):
        if n_in <= n_out:
            a = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(a, a + n_in))
        else:
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(0, n_out))
    out[tuple(dst)] = img[tuple(src)]
    return out


# ----------------------------------------------------------------------------- fits

@dataclass
class LinearFit:
    """Weighted straight line y = intercept + slope x with its covariance.

    ``covariance`` is (AᵀWA)⁻¹ scaled by the reduced chi-square when that exceeds 1 (the
    scatter then says more than the stated errors); ``chi2`` and ``dof`` are unscaled.
    """

    slope: float
    intercept: float
    covariance: np.ndarray
    chi2: float
    dof: int
    n: int

    @property
    def slope_err(self) -> float:
        return float(math.sqrt(self.covariance[1, 1]))

    @property
    def intercept_err(self) -> float:
        return float(math.sqrt(self.covariance[0, 0]))

    def __call__(self, x):
        return self.intercept + self.slope * np.asarray(x, dtype=np.float64)

    def band(self, x):
        """1-sigma confidence band of the line at ``x`` (from the parameter covariance)."""
        x = np.asarray(x, dtype=np.float64)
        c = self.covariance
        return np.sqrt(np.maximum(c[0, 0] + 2 * c[0, 1] * x + c[1, 1] * x * x, 0.0))

    def to_dict(self):
        return {"slope": self.slope, "slope_err": self.slope_err, "intercept": self.intercept,
                "intercept_err": self.intercept_err, "covariance": self.covariance.tolist(), "chi2": self.chi2,
                "dof": self.dof, "n": self.n}


def weighted_linear_fit(x, y, y_err):
    """Fit y = a + b x by weighted least squares (weights 1 / y_err^2).

    Parameters
    ----------
    x, y, y_err : 1-D arrays; points with non-finite values or y_err <= 0 are left out.

    Returns
    -------
    LinearFit
    """
    x, y, e = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y, y_err))
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(e) & (e > 0)
    x, y, e = x[good], y[good], e[good]
    if x.size < 3 or np.ptp(x) == 0:
        raise ConfigError(f"weighted_linear_fit: expected at least 3 points with distinct x, found {x.size}")
    w = 1.0 / (e * e)
    a = np.column_stack([np.ones_like(x), x])
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    coef = cov @ (a.T @ (w * y))
    chi2 = float(np.sum(w * (y - a @ coef) ** 2))
    dof = x.size - 2
    if dof > 0 and chi2 / dof > 1.0:
        cov = cov * (chi2 / dof)
    return LinearFit(float(coef[1]), float(coef[0]), cov, chi2, dof, int(x.size))


def weighted_mean(values, errors):
    """Inverse-variance weighted mean and its standard error over finite entries."""
    v, e = np.asarray(values, dtype=np.float64).ravel(), np.asarray(errors, dtype=np.float64).ravel()
    good = np.isfinite(v) & np.isfinite(e) & (e > 0)
    if not good.any():
        return float("nan"), float("nan")
    w = 1.0 / e[good] ** 2
    return float(np.sum(w * v[good]) / w.sum()), float(1.0 / math.sqrt(w.sum()))


def block_standard_error(values, block=8):
    """Standard error of a map's mean from the scatter of its block means (spatial correlation kept)."""
    v = np.asarray(values, dtype=np.float64)
    rows, cols = v.shape
    means = []
    for r in range(0, rows - block + 1, block):
        for c in range(0, cols - block + 1, block):
            m = v[r:r + block, c:c + block]
            if np.isfinite(m).mean() > 0.5:
                means.append(np.nanmean(m))
    if len(means) < 2:
        return float("nan")
    return float(np.std(means, ddof=1) / math.sqrt(len(means)))


# ----------------------------------------------------------------------------- correlation

@dataclass
class RegionResult:
    """One depth region's numbers (a row of the correlation table)."""

    region: int
    depth_mm: tuple
    porosity: float
    porosity_err: float
    tortuosity: float
    s: float
    s_err: float
    li: float
    li_err: float
    pixels: int
    registration: object = None

    def to_dict(self):
        d = {k: getattr(self, k) for k in ("region", "porosity", "porosity_err", "tortuosity", "s", "s_err", "li",
                                           "li_err", "pixels")}
        d["depth_mm"] = list(self.depth_mm)
        if self.registration is not None:
            r = self.registration
            d.update(shift_px=list(r.shift_px), angle_deg=math.degrees(r.angle_rad), registration_quality=r.quality)
        return d


@dataclass
class Correlation:
    """Everything :func:`correlate` finds: per-region rows, registered maps and the pixel fit.

    Maps are (n_regions, rows, cols) on the Compton grid.
    """

    regions: list
    porosity: np.ndarray
    electrode_fraction: np.ndarray
    compton_image: np.ndarray
    s: np.ndarray
    li: np.ndarray
    li_err: np.ndarray
    pixel_mask: np.ndarray
    fit: LinearFit
    meta: dict = field(default_factory=dict)
    scatter_points: tuple = None

    def scatter(self):
        """(porosity, value, error, region) of every pixel (or block) used in the fit."""
        if self.scatter_points is not None:
            return self.scatter_points
        m = self.pixel_mask
        reg = np.broadcast_to(np.arange(1, m.shape[0] + 1)[:, None, None], m.shape)
        return self.porosity[m], self.li[m], self.li_err[m], reg[m]


def _stack_maps(name, maps, n_regions, shape=None):
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (n_regions,) + arr.shape)
    if arr.ndim != 3 or arr.shape[0] != n_regions:
        raise ConfigError(f"correlate: {name} must be one (rows, cols) map or one per region "
                          f"({n_regions}, rows, cols), found shape {np.shape(maps)}")
    if shape is not None and arr.shape[1:] != shape:
        raise ConfigError(f"correlate: {name} maps are {arr.shape[1:]}, the Compton image is {shape}")
    return arr


def correlate(pore_mask, electrode_mask, voxel_size_mm, compton_image, s, s_err, li=None, li_err=None, *,
              n_regions=3, axis=0, pixel_mm=COMPTON_PIXEL_MM, inverted=True, transform="rigid",
              min_electrode_fraction=0.95, tortuosity=True, block=(1, 1), block_values=None):
    """Register each depth region's porosity onto its Compton image and read S and Li against it.

    Parameters
    ----------
    pore_mask, electrode_mask : ndarray of bool (z, y, x)
        Segmented XCT volume (pores; electrode including its pores).
    voxel_size_mm : float
    compton_image : ndarray (rows, cols) or (n_regions, rows, cols)
        Compton count image of each depth region's measurement (one for all when 2-D).
    s, s_err : ndarray like ``compton_image``
        S-parameter maps and their standard errors.
    li, li_err : ndarray like ``compton_image``, optional
        Li content 1 - x maps; without them the pixel fit uses S.
    n_regions, axis, pixel_mm, inverted : see :func:`porosity_maps`
    transform : str
        Registration transform (:func:`hexspec.tomo.register`).
    min_electrode_fraction : float
        Pixels whose column is less electrode than this stay out of the pixel fit and the
        region means (edges of the electrode).
    tortuosity : bool
        Compute each region's through-thickness tortuosity factor (hexspec.tomo.tortuosity).
    block, block_values : (int, int) and (values, errors), optional
        Fit over blocks of ``block`` pixels instead of single pixels: ``block_values`` holds
        the fitted quantity and its error per block, (n_regions, rows // br, cols // bc),
        measured from each block's summed spectra (single pixels rarely hold the counts
        for a useful S). A block enters the fit when 75 % of its pixels are used.

    Returns
    -------
    Correlation
    """
    from .register import register

    compton = _stack_maps("compton_image", compton_image, n_regions)
    shape = compton.shape[1:]
    s = _stack_maps("s", s, n_regions, shape)
    s_err = _stack_maps("s_err", s_err, n_regions, shape)
    use_li = li is not None
    y = _stack_maps("li", li, n_regions, shape) if use_li else s
    y_err = _stack_maps("li_err", li_err, n_regions, shape) if use_li else s_err

    pore_mask = np.asarray(pore_mask, dtype=bool)
    electrode_mask = np.asarray(electrode_mask, dtype=bool)
    por, frac, bounds = porosity_maps(pore_mask, electrode_mask, voxel_size_mm, n_regions, axis, pixel_mm, inverted)
    por_grid = np.empty((n_regions,) + shape)
    frac_grid = np.empty((n_regions,) + shape)
    used = np.zeros((n_regions,) + shape, bool)
    rows = []
    for k in range(n_regions):
        p = place_centred(por[k], shape)
        f = place_centred(frac[k], shape, fill=0.0)
        # What the XCT predicts the Compton image to be: scattering follows the solid
        # (electrode share of the column times one minus porosity), outline included.
        solid = f * (1.0 - np.where(np.isfinite(p), p, 0.0))
        reg = register(compton[k], solid, transform)
        frac_grid[k] = reg.apply(f)
        # pore share and electrode share interpolated apart: at the electrode's edge the
        # porosity is not diluted by the empty pixels beside it
        with np.errstate(invalid="ignore", divide="ignore"):
            por_grid[k] = reg.apply(np.where(np.isfinite(p), p, 0.0) * f) / frac_grid[k]
        use = (frac_grid[k] >= min_electrode_fraction) & np.isfinite(y[k]) & np.isfinite(y_err[k]) & (y_err[k] > 0)
        used[k] = use
        a, b = bounds[k]
        sl = [slice(None)] * 3
        sl[axis] = slice(a, b)
        region_pores = pore_mask[tuple(sl)] & electrode_mask[tuple(sl)]
        region_elec = electrode_mask[tuple(sl)]
        porosity = float(region_pores.sum() / max(region_elec.sum(), 1))
        por_err = block_standard_error(np.where(frac[k] > 0.99, por[k], np.nan), block=4)
        tau = _region_tortuosity(region_pores, axis) if tortuosity else float("nan")
        s_mean, s_sem = weighted_mean(s[k][use], s_err[k][use])
        li_mean, li_sem = weighted_mean(y[k][use], y_err[k][use]) if use_li else (float("nan"), float("nan"))
        rows.append(RegionResult(k + 1, (a * voxel_size_mm, b * voxel_size_mm), porosity, por_err, tau, s_mean, s_sem,
                                 li_mean, li_sem, int(use.sum()), reg))
    if block_values is not None:
        # Fit over blocks: porosity averaged over each block's used pixels, against the
        # values the caller measured from each block's summed spectra.
        bv, be = (np.asarray(v, dtype=np.float64) for v in block_values)
        br, bc = block
        nb = (shape[0] // br, shape[1] // bc)
        if bv.shape != (n_regions,) + nb or be.shape != bv.shape:
            raise ConfigError(f"correlate: block_values must be ({n_regions}, {nb[0]}, {nb[1]}) for blocks of {block}, "
                              f"found {bv.shape} and {be.shape}")
        cut = (slice(None), slice(0, nb[0] * br), slice(0, nb[1] * bc))
        share = used[cut].reshape(n_regions, nb[0], br, nb[1], bc).mean(axis=(2, 4))
        summed = np.where(used, por_grid, 0.0)[cut].reshape(n_regions, nb[0], br, nb[1], bc).sum(axis=(2, 4))
        with np.errstate(invalid="ignore", divide="ignore"):
            por_fit = summed / (share * br * bc)
        used_fit = (share >= 0.75) & np.isfinite(bv) & np.isfinite(be) & (be > 0)
        fit = weighted_linear_fit(por_fit[used_fit], bv[used_fit], be[used_fit])
        scatter = (por_fit[used_fit], bv[used_fit], be[used_fit],
                   np.broadcast_to(np.arange(1, n_regions + 1)[:, None, None], used_fit.shape)[used_fit])
    else:
        fit = weighted_linear_fit(por_grid[used], y[used], y_err[used])
        scatter = None
    return Correlation(rows, por_grid, frac_grid, compton, s, y if use_li else np.full_like(s, np.nan),
                       y_err if use_li else np.full_like(s, np.nan), used, fit, scatter_points=scatter,
                       meta={"voxel_size_mm": float(voxel_size_mm), "pixel_mm": float(pixel_mm), "axis": int(axis),
                             "inverted": bool(inverted), "transform": transform, "fit_of": "li" if use_li else "s",
                             "min_electrode_fraction": float(min_electrode_fraction),
                             "fit_block": list(block) if block_values is not None else [1, 1]})


def _region_tortuosity(pore_mask, axis):
    """Through-thickness tortuosity factor of a region's pores (hexspec.tomo.tortuosity).

    NaN when the pores do not percolate, or in a build without hexspec.tomo.quantify.
    """
    try:
        from .quantify import tortuosity
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.quantify":
            return float("nan")
        raise
    try:
        return float(tortuosity(pore_mask, axis=axis).tau)
    except ConfigError:
        return float("nan")
