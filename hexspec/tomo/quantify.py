"""Quantify a segmented electrode: phase fractions, porosity per depth region, surface area, REV.

Volumes are (z, y, x) arrays of voxels; ``spacing`` is the voxel edge (one number, or
(dz, dy, dx)) in any length unit, and areas and specific surface areas come out in that
unit (mm^2, 1/mm for spacing in mm). Tortuosity lives in :mod:`hexspec.tomo.diffusion`
and particle statistics in :mod:`hexspec.tomo.particles`; both are re-exported here.

Porosity per region follows the reference study (PHYSICS.md section 6): the electrode
is cut into N equal regions along its thickness, and each region's porosity is its pore
volume over its electrode volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .particles import ParticleStats, particle_statistics, sphericity  # noqa: F401  (re-exported)
from .diffusion import TortuosityResult, check_axis, check_mask, percolating_pores, tortuosity  # noqa: F401

SSA_METHODS = ("marching_cubes", "faces")


def _spacing3(spacing) -> tuple:
    s = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    if not np.all(s > 0):
        raise ConfigError(f"spacing: expected positive voxel sizes, found {spacing!r}")
    return tuple(float(v) for v in s)


# --------------------------------------------------------------------------- fractions

def phase_volume_fractions(labels, phases: dict | None = None, within=None) -> dict:
    """Volume fraction of each phase of a label volume.

    Parameters
    ----------
    labels : int array (z, y, x)
    phases : dict of name -> label value, optional
        Default: every nonzero label, named by its value.
    within : bool array (z, y, x), optional
        Fractions of this region's volume (default: of the voxels with a nonzero label,
        the electrode).

    Returns
    -------
    dict of name -> fraction (0-1)
    """
    labels = np.asarray(labels)
    region = labels > 0 if within is None else check_mask(within, "within")
    total = int(region.sum())
    if phases is None:
        phases = {str(v): int(v) for v in np.unique(labels[region]) if v != 0}
    counts = np.bincount(labels[region].ravel().astype(np.int64), minlength=max(phases.values(), default=0) + 1)
    return {name: (counts[value] / total if total else float("nan")) for name, value in phases.items()}


@dataclass
class RegionPorosity:
    """Porosity of N equal depth regions of an electrode.

    Attributes
    ----------
    axis : int
        Axis of the volume (z, y, x) along the thickness.
    bounds : int array (n, 2)
        [start, stop) voxel indices of each region along ``axis``.
    porosity : float array (n,)
        Pore volume / electrode volume per region (0-1).
    electrode_voxels, pore_voxels : int arrays (n,)
    maps : float array (n, a, b)
        Lateral porosity of each region: pore / electrode voxels along ``axis`` within the
        region, at every position of the other two axes (in their order); NaN where the
        column holds no electrode.
    """

    axis: int
    bounds: np.ndarray
    porosity: np.ndarray
    electrode_voxels: np.ndarray
    pore_voxels: np.ndarray
    maps: np.ndarray


def electrode_extent(electrode_mask, axis=0) -> tuple:
    """[start, stop) of the slices along ``axis`` that hold any electrode voxel."""
    electrode_mask = check_mask(electrode_mask, "electrode_mask")
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(electrode_mask.any(axis=other))
    if present.size == 0:
        raise ConfigError("electrode_mask: no electrode voxel found (the mask is empty)")
    return int(present[0]), int(present[-1]) + 1


def region_bounds(electrode_mask, n_regions=3, axis=0) -> np.ndarray:
    """[start, stop) of ``n_regions`` equal regions of the electrode's extent along ``axis``.

    Region edges are rounded to whole voxels, so regions differ by at most one slice.
    """
    axis = check_axis(axis)
    if int(n_regions) < 1:
        raise ConfigError(f"n_regions: expected a whole number >= 1, found {n_regions!r}")
    start, stop = electrode_extent(electrode_mask, axis)
    if stop - start < n_regions:
        raise ConfigError(f"n_regions: the electrode is {stop - start} voxels thick along axis {axis}, "
                          f"fewer than the {n_regions} regions asked for")
    edges = np.round(np.linspace(start, stop, int(n_regions) + 1)).astype(int)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def porosity_by_region(pore_mask, electrode_mask, n_regions=3, axis=0) -> RegionPorosity:
    """Porosity (pore volume / electrode volume) of N equal depth regions, with lateral maps.

    Parameters
    ----------
    pore_mask : bool array (z, y, x)
        Pores inside the electrode (voxels outside ``electrode_mask`` are ignored).
    electrode_mask : bool array (z, y, x)
        The electrode: pores and solid together.
    n_regions : int
        Number of equal regions along ``axis`` of the electrode's extent.
    axis : int
        Thickness axis (0 = z).

    Returns
    -------
    RegionPorosity
    """
    pore_mask = check_mask(pore_mask)
    electrode_mask = check_mask(electrode_mask, "electrode_mask")
    if pore_mask.shape != electrode_mask.shape:
        raise ConfigError(f"pore_mask {pore_mask.shape} and electrode_mask {electrode_mask.shape} differ in shape")
    axis = check_axis(axis)
    bounds = region_bounds(electrode_mask, n_regions, axis)
    pores = pore_mask & electrode_mask
    porosity, n_el, n_pore, maps = [], [], [], []
    for start, stop in bounds:
        sl = [slice(None)] * 3
        sl[axis] = slice(start, stop)
        el_cols = electrode_mask[tuple(sl)].sum(axis=axis)
        pore_cols = pores[tuple(sl)].sum(axis=axis)
        n_el.append(int(el_cols.sum()))
        n_pore.append(int(pore_cols.sum()))
        porosity.append(n_pore[-1] / n_el[-1] if n_el[-1] else float("nan"))
        with np.errstate(invalid="ignore", divide="ignore"):
            maps.append(np.where(el_cols > 0, pore_cols / np.maximum(el_cols, 1), np.nan))
    return RegionPorosity(axis=axis, bounds=bounds, porosity=np.array(porosity), electrode_voxels=np.array(n_el),
                          pore_voxels=np.array(n_pore), maps=np.array(maps))


# --------------------------------------------------------------------------- surface area

@dataclass
class SurfaceArea:
    """Interface area of a phase.

    Attributes
    ----------
    area : float
        Area of the phase's boundary inside the box (spacing units squared).
    volume : float
        Total volume of the box (spacing units cubed).
    specific_surface_area : float
        area / volume (1 / spacing unit).
    method : str
        "marching_cubes" (Gaussian-smoothed mask, sigma ``smoothing_sigma``) or "faces"
        (voxel faces between the phase and the rest; about 1.5x the true area of
        smooth surfaces, since |n_x| + |n_y| + |n_z| averages 3/2 over directions).
    smoothing_sigma : float
    """

    area: float
    volume: float
    specific_surface_area: float
    method: str
    smoothing_sigma: float


def surface_area(mask, spacing=1.0, method="marching_cubes", smoothing_sigma=1.0) -> SurfaceArea:
    """Area of the boundary of ``mask`` inside the box, by marching cubes or face counting.

    Parameters
    ----------
    mask : bool array (z, y, x)
        The phase (e.g. solid, or pores).
    spacing : float or (dz, dy, dx)
        Voxel size.
    method : {"marching_cubes", "faces"}
        Marching cubes (skimage) on the mask smoothed by a Gaussian of ``smoothing_sigma``
        voxels at level 0.5 (smoothing removes most of the staircase of the voxelised
        surface), or the count of voxel faces between the phase and the rest, each
        weighted by its area.
    smoothing_sigma : float
        Gaussian sigma in voxels for "marching_cubes" (0: none).

    Returns
    -------
    SurfaceArea
    """
    mask = check_mask(mask, "mask")
    if method not in SSA_METHODS:
        raise ConfigError(f"method: expected one of {', '.join(SSA_METHODS)}, found {method!r}")
    dz, dy, dx = _spacing3(spacing)
    volume = mask.size * dz * dy * dx
    if method == "faces":
        face = (dy * dx, dz * dx, dz * dy)
        area = sum(np.count_nonzero(np.diff(mask, axis=a)) * face[a] for a in range(3))
        sigma = 0.0
    else:
        from scipy.ndimage import gaussian_filter
        from skimage.measure import marching_cubes, mesh_surface_area
        sigma = float(smoothing_sigma)
        # edge padding: the box faces are not part of the phase boundary, and the
        # replicated layer keeps the surface from closing on them
        field = np.pad(mask.astype(np.float32), 2, mode="edge")
        if sigma > 0:
            field = gaussian_filter(field, sigma, mode="nearest")
        if field.min() >= 0.5 or field.max() <= 0.5:
            area = 0.0
        else:
            verts, faces, _, _ = marching_cubes(field, level=0.5, spacing=(dz, dy, dx))
            # keep only triangles whose centre lies inside the original box
            centre = verts[faces].mean(axis=1) / np.array([dz, dy, dx]) - 2.0
            inside = np.all((centre >= -0.5) & (centre <= np.array(mask.shape) - 0.5), axis=1)
            area = float(mesh_surface_area(verts, faces[inside])) if inside.any() else 0.0
    return SurfaceArea(area=float(area), volume=float(volume), specific_surface_area=float(area) / volume,
                       method=method, smoothing_sigma=sigma)


def specific_surface_area(mask, spacing=1.0, method="marching_cubes") -> float:
    """Specific surface area: boundary area of ``mask`` per total volume of the box.

    Parameters
    ----------
    mask : bool array (z, y, x)
    spacing : float or (dz, dy, dx)
        Voxel size (the result is in 1 / this unit, e.g. 1/mm, i.e. mm^2/mm^3).
    method : {"marching_cubes", "faces"}
        Smoothed marching cubes (default) or voxel-face counting; the two differ by about
        1.5x on smooth surfaces, so always state which was used. See :func:`surface_area`.

    Returns
    -------
    float
    """
    return surface_area(mask, spacing, method).specific_surface_area


# --------------------------------------------------------------------------- REV

@dataclass
class RepresentativeVolume:
    """A metric over nested cubes about one centre.

    Attributes
    ----------
    sizes : int array
        Cube edge in voxels.
    values : float array
        Metric of each cube.
    settled_size : int or None
        Smallest edge from which every larger cube's metric lies within ``tolerance``
        (relative) of the largest cube's; None if only the largest does.
    tolerance : float
    reference : float
        Metric of the largest cube.
    """

    sizes: np.ndarray
    values: np.ndarray
    settled_size: int | None
    tolerance: float
    reference: float


def representative_volume(mask, metric=None, sizes=None, tolerance=0.05, centre=None) -> RepresentativeVolume:
    """Representative volume: a metric against nested cube size, and the size where it settles.

    Parameters
    ----------
    mask : bool array (z, y, x)
    metric : callable(cube) -> float, optional
        Default: volume fraction of ``mask`` (porosity for a pore mask).
    sizes : sequence of int, optional
        Cube edges in voxels, increasing (default: 8 sizes from 4 up to the smallest
        dimension).
    tolerance : float
        Relative tolerance against the largest cube's value.
    centre : (z, y, x), optional
        Centre of the cubes (default the volume's centre).

    Returns
    -------
    RepresentativeVolume
    """
    mask = check_mask(mask, "mask")
    metric = metric or (lambda cube: float(np.mean(cube)))
    n_max = min(mask.shape)
    if sizes is None:
        sizes = np.unique(np.round(np.geomspace(min(4, n_max), n_max, 8)).astype(int))
    sizes = np.asarray(sorted(int(s) for s in sizes))
    if sizes[0] < 1 or sizes[-1] > n_max:
        raise ConfigError(f"sizes: expected cube edges between 1 and {n_max} voxels, found {sizes.tolist()}")
    centre = np.array(mask.shape) // 2 if centre is None else np.asarray(centre, dtype=int)
    values = []
    for s in sizes:
        lo = np.clip(centre - s // 2, 0, np.array(mask.shape) - s)
        values.append(metric(mask[lo[0]:lo[0] + s, lo[1]:lo[1] + s, lo[2]:lo[2] + s]))
    values = np.array(values, dtype=np.float64)
    ref = values[-1]
    ok = np.abs(values - ref) <= tolerance * abs(ref)
    settled = None
    # smallest index from which all further sizes are within tolerance
    bad = np.flatnonzero(~ok)
    first_good = 0 if bad.size == 0 else bad[-1] + 1
    if first_good < len(sizes) - 1:
        settled = int(sizes[first_good])
    return RepresentativeVolume(sizes=sizes, values=values, settled_size=settled, tolerance=float(tolerance),
                                reference=float(ref))
