"""A virtual coin-cell cathode: its pore structure, XCT projections and what the Compton camera sees.

The cathode is a disc ``thickness_mm`` thick (depth z from the separator, z = 0, to the
current collector) holding vertical pore channels. Its porosity falls linearly with depth
from ``porosity_separator`` to ``porosity_collector`` and tilts across the disc along the
sample's y axis (``tilt``: relative change from one edge of the disc to the other), as a
calendered electrode can. The channels come from one smooth random field u(y, x) with
uniform marginal: a voxel is pore where u(y, x) < porosity(z, y), so every channel runs
straight down and narrows with depth, and the porosity of any large region is the target.

Axes: volumes (z, y, x) in voxels of ``voxel_size_mm``; sample coordinates in mm with the
disc centre at 0; detector maps (rows, cols) of a HEXITEC behind the pinhole
(PHYSICS.md section 3: pixel (r, c) images the sample point -(d1/d2)(u, v)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..compton import PinholeGeometry
from ..errors import ConfigError


@dataclass(frozen=True)
class VirtualCathode:
    """Parameters of the virtual cathode (see the module docstring).

    Attributes
    ----------
    diameter_mm, thickness_mm : float
        Disc size.
    voxel_size_mm : float
        XCT voxel size of the phantom.
    porosity_separator, porosity_collector : float
        Porosity at the separator (z = 0) and at the current collector.
    tilt : float
        Relative porosity change across the disc along y (0.3: +15 % at one edge, -15 % at the other).
    channel_mm : float
        Correlation length of the pore-channel field (about the channel width).
    attenuation_solid_per_mm : float
        Linear attenuation of the solid at the XCT energy (pores: 0).
    seed : int
    """

    diameter_mm: float = 16.0
    thickness_mm: float = 1.0
    voxel_size_mm: float = 0.25 * 160.0 / 150.0 / 4
    porosity_separator: float = 0.33
    porosity_collector: float = 0.10
    tilt: float = 0.3
    channel_mm: float = 0.25
    attenuation_solid_per_mm: float = 0.15
    seed: int = 0

    def __post_init__(self):
        for name in ("porosity_separator", "porosity_collector"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"VirtualCathode.{name}: expected a porosity in (0, 1), found {getattr(self, name)}")
        if self.voxel_size_mm <= 0 or self.thickness_mm < 3 * self.voxel_size_mm:
            raise ConfigError(f"VirtualCathode: expected a thickness of at least 3 voxels, found {self.thickness_mm} mm "
                              f"at {self.voxel_size_mm} mm voxels")

    @property
    def shape(self):
        """(z, y, x) voxels: the electrode's thickness plus one empty slice above and below, a margin around the disc."""
        nz = int(round(self.thickness_mm / self.voxel_size_mm))
        n = int(math.ceil(self.diameter_mm / self.voxel_size_mm)) + 8
        return nz + 2, n + (n % 2), n + (n % 2)

    def coordinates_mm(self):
        """Voxel-centre coordinates: z (nz,) from the separator face, y and x (n,) about the disc centre."""
        nz, ny, nx = self.shape
        z = (np.arange(nz) - 1 + 0.5) * self.voxel_size_mm
        y = (np.arange(ny) - ny / 2 + 0.5) * self.voxel_size_mm
        x = (np.arange(nx) - nx / 2 + 0.5) * self.voxel_size_mm
        return z, y, x

    def porosity_at(self, z_mm, y_mm):
        """Target porosity at depth ``z_mm`` and lateral position ``y_mm`` (broadcasting)."""
        t = np.clip(np.asarray(z_mm, dtype=np.float64) / self.thickness_mm, 0.0, 1.0)
        depth = self.porosity_separator + (self.porosity_collector - self.porosity_separator) * t
        return depth * (1.0 + self.tilt * np.asarray(y_mm, dtype=np.float64) / self.diameter_mm)

    def volume(self):
        """(pore_mask, electrode_mask) of bool, shape (z, y, x)."""
        from scipy import ndimage
        from scipy.special import ndtr

        nz, ny, nx = self.shape
        z, y, x = self.coordinates_mm()
        rng = np.random.default_rng(self.seed)
        field = ndimage.gaussian_filter(rng.standard_normal((ny, nx)), self.channel_mm / self.voxel_size_mm / 2)
        u = ndtr(field / field.std())        # uniform marginal: P(u < p) = p
        disc = (y[:, None] ** 2 + x[None, :] ** 2) <= (self.diameter_mm / 2) ** 2
        electrode = np.zeros(self.shape, bool)
        electrode[1:nz - 1] = disc
        target = self.porosity_at(z[:, None, None], y[None, :, None])
        pores = electrode & (u[None] < target)
        return pores, electrode

    def attenuation(self, pores, electrode):
        """Linear attenuation (1/mm) of each voxel: solid inside the electrode, 0 elsewhere."""
        return np.where(electrode & ~pores, self.attenuation_solid_per_mm, 0.0).astype(np.float32)


@njit(cache=True, nogil=True, parallel=True)
def _splat(mu, cos_t, sin_t, out):
    nz, ny, nx = mu.shape
    ncol = out.shape[2]
    cy, cx, cd = (ny - 1) / 2.0, (nx - 1) / 2.0, (ncol - 1) / 2.0
    for a in prange(cos_t.shape[0]):
        for y in range(ny):
            for x in range(nx):
                t = (x - cx) * cos_t[a] - (y - cy) * sin_t[a] + cd
                k = int(math.floor(t))
                f = t - k
                if k < 0 or k + 1 >= ncol:
                    continue
                for z in range(nz):
                    v = mu[z, y, x]
                    if v != 0.0:
                        out[a, z, k] += (1.0 - f) * v
                        out[a, z, k + 1] += f * v


def project_parallel(mu_per_mm, theta_rad, voxel_size_mm):
    """Parallel-beam projections (line integrals of attenuation) of a volume, all slices at once.

    Voxel-driven: each voxel's attenuation is split linearly between the two detector
    columns its centre projects between (a numba loop over angles; skimage.transform.radon
    rotates every slice for every angle and took a minute for the demo's phantom).

    Parameters
    ----------
    mu_per_mm : ndarray (z, y, x)
    theta_rad : ndarray (angles,)
    voxel_size_mm : float

    Returns
    -------
    ndarray (angles, z, x) of line integrals (dimensionless), as many detector columns as
    the volume has along x; the rotation axis is the volume's central z line and projects
    onto column (x - 1) / 2. Angle theta measures the ray direction from the y axis towards
    x, as skimage.transform.iradon expects (column index = x cos theta + y sin theta).
    """
    mu = np.ascontiguousarray(mu_per_mm, dtype=np.float32)
    theta = np.asarray(theta_rad, dtype=np.float64)
    out = np.zeros((theta.size, mu.shape[0], mu.shape[2]), np.float64)
    _splat(mu, np.cos(theta), np.sin(theta), out)
    return (out * voxel_size_mm).astype(np.float32)


def simulate_projections(mu_per_mm, theta_rad, voxel_size_mm, flat_counts=2.0e4, seed=0):
    """Counted projections of a volume: flat * exp(-line integral) with Poisson noise, plus flats and darks.

    Returns
    -------
    proj (angles, rows, cols), flat (4, rows, cols), dark (4, rows, cols) float32
    """
    rng = np.random.default_rng(seed)
    line = project_parallel(mu_per_mm, theta_rad, voxel_size_mm)
    dark_level = 100.0
    proj = rng.poisson(flat_counts * np.exp(-line)) + dark_level
    flat = rng.poisson(flat_counts, (4,) + line.shape[1:]) + dark_level
    dark = np.full((4,) + line.shape[1:], dark_level)
    return proj.astype(np.float32), flat.astype(np.float32), dark.astype(np.float32)


@dataclass(frozen=True)
class Placement:
    """Where the cathode sits in front of the pinhole: offset (mm) and rotation of the sample frame."""

    dy_mm: float = 0.35
    dx_mm: float = -0.25
    angle_rad: float = math.radians(1.5)


def to_detector(sample_map, cathode: VirtualCathode, geometry: PinholeGeometry, placement=Placement(), order=1,
                cval=0.0):
    """Resample a map on the cathode's (y, x) voxel grid onto the detector pixels behind the pinhole.

    Pixel (r, c) images the sample point -(d1/d2)(u, v) (PHYSICS.md section 3; the image is
    turned by 180 degrees), in the frame of the cathode moved by ``placement``.

    Returns
    -------
    ndarray (rows, cols)
    """
    from scipy import ndimage

    u, v = geometry.pixel_offsets_mm()
    m = geometry.d1_mm / geometry.d2_mm
    if geometry.beam_axis == "cols":
        xs, ys = -m * u, -m * v
    else:
        ys, xs = -m * u, -m * v
    # lab -> cathode frame: undo the placement
    c, s = math.cos(placement.angle_rad), math.sin(placement.angle_rad)
    x0, y0 = xs - placement.dx_mm, ys - placement.dy_mm
    xc = c * x0 + s * y0
    yc = -s * x0 + c * y0
    _, ny, nx = cathode.shape
    row = yc / cathode.voxel_size_mm + ny / 2 - 0.5
    col = xc / cathode.voxel_size_mm + nx / 2 - 0.5
    return ndimage.map_coordinates(np.asarray(sample_map, dtype=np.float64), [row, col], order=order, cval=cval)


def pixel_average(voxel_map, cathode: VirtualCathode, geometry: PinholeGeometry, weights=None):
    """Average of a (y, x) voxel map over each detector pixel's footprint on the sample (box of the pixel's size)."""
    from scipy import ndimage

    k = geometry.detector.pitch_mm * geometry.d1_mm / geometry.d2_mm / cathode.voxel_size_mm
    size = max(int(round(k)), 1)
    if weights is None:
        return ndimage.uniform_filter(np.asarray(voxel_map, dtype=np.float64), size)
    w = np.asarray(weights, dtype=np.float64)
    num = ndimage.uniform_filter(np.asarray(voxel_map, dtype=np.float64) * w, size)
    den = ndimage.uniform_filter(w, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
