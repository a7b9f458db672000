"""Particle size distribution and sphericity of labelled particles.

Sphericity (Wadell) Psi = pi^(1/3) (6 V)^(2/3) / A: 1 for a sphere, 0.806 for a cube.
Volumes are voxel counts times the voxel volume; surface areas come from marching cubes
(skimage) on each particle's Gaussian-smoothed mask, so that the staircase of the
voxelisation does not inflate A (face counting would give Psi near 2/3 for spheres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


def sphericity(volume, area):
    """Wadell sphericity pi^(1/3) (6 V)^(2/3) / A of a body of volume V and surface area A."""
    volume = np.asarray(volume, dtype=np.float64)
    area = np.asarray(area, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area


@dataclass
class ParticleStats:
    """Per-particle figures of a labelled volume (one entry per label, in label order).

    Attributes
    ----------
    label : int array (n,)
    volume : float array (n,)
        Spacing units cubed.
    surface_area : float array (n,)
        Spacing units squared (smoothed marching cubes).
    equivalent_diameter : float array (n,)
        Diameter of the sphere of the same volume, (6 V / pi)^(1/3).
    sphericity : float array (n,)
    touches_border : bool array (n,)
        Particles cut by the box (their size and shape are biased).
    """

    label: np.ndarray
    volume: np.ndarray
    surface_area: np.ndarray
    equivalent_diameter: np.ndarray
    sphericity: np.ndarray
    touches_border: np.ndarray

    def size_distribution(self, bins=10, exclude_border=True):
        """Volume-weighted histogram of equivalent diameter: (counts, volume_fraction, edges)."""
        keep = ~self.touches_border if exclude_border else np.ones(self.label.size, bool)
        d = self.equivalent_diameter[keep]
        counts, edges = np.histogram(d, bins=bins)
        vol, _ = np.histogram(d, bins=edges, weights=self.volume[keep])
        total = vol.sum()
        return counts, (vol / total if total else vol), edges


def particle_statistics(labels, spacing=1.0, min_voxels=8, smoothing_sigma=0.7) -> ParticleStats:
    """Volume, surface area, equivalent diameter and sphericity of each particle.

    Parameters
    ----------
    labels : int array (z, y, x) or bool array
        Labelled particles (0 = background), e.g. from a watershed; a boolean mask is
        labelled by face connectivity first.
    spacing : float or (dz, dy, dx)
        Voxel size.
    min_voxels : int
        Smaller particles (noise) are left out.
    smoothing_sigma : float
        Gaussian sigma (voxels) applied to each particle's mask before marching cubes.
        0.7 gives Psi = 1.00 for a voxelised sphere of radius 10 voxels (0.93 without
        smoothing, 1.02 with sigma 1) and 0.86 for a cube of 20 voxels (true 0.806: the
        smoothing rounds its edges).

    Returns
    -------
    ParticleStats
    """
    import scipy.ndimage as ndi
    from skimage.measure import marching_cubes, mesh_surface_area, regionprops

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ConfigError(f"labels: expected a 3-D array (z, y, x), found shape {labels.shape}")
    if labels.dtype == bool:
        labels, _ = ndi.label(labels)
    elif labels.dtype.kind not in "iu":
        raise ConfigError(f"labels: expected integer labels or a boolean mask, found dtype {labels.dtype}")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    voxel_volume = float(np.prod(spacing))
    pad = int(np.ceil(3 * smoothing_sigma)) + 1
    out = {k: [] for k in ("label", "volume", "surface_area", "touches_border")}
    for region in regionprops(labels):
        if region.area < min_voxels:
            continue
        lo = np.array(region.bbox[:3])
        hi = np.array(region.bbox[3:])
        sub = np.pad(region.image.astype(np.float32), pad)
        if smoothing_sigma > 0:
            sub = ndi.gaussian_filter(sub, smoothing_sigma)
        verts, faces, _, _ = marching_cubes(sub, level=0.5, spacing=tuple(spacing))
        out["label"].append(region.label)
        out["volume"].append(region.area * voxel_volume)
        out["surface_area"].append(mesh_surface_area(verts, faces))
        out["touches_border"].append(bool(np.any(lo == 0) or np.any(hi == np.array(labels.shape))))
    volume = np.array(out["volume"], dtype=np.float64)
    area = np.array(out["surface_area"], dtype=np.float64)
    return ParticleStats(label=np.array(out["label"], dtype=np.int64), volume=volume, surface_area=area,
                         equivalent_diameter=(6 * volume / np.pi) ** (1 / 3), sphericity=sphericity(volume, area),
                         touches_border=np.array(out["touches_border"], dtype=bool))
