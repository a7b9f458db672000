"""Compton kinematics, pinhole geometry, Compton profiles J(p_z) and S-parameters.

Equation numbers refer to PHYSICS.md (section 2 for kinematics, profiles and the
S-parameter, section 3 for the pinhole geometry).

Conventions: energies in keV, momenta p_z in atomic units, angles in radians; maps are
(rows, cols) and cubes (rows, cols, energy). A profile J(p_z) is stored as a density per
a.u. that is constant within each p_z bin, so integrals over any p_z window use the
fractional overlap of each bin with the window and do not depend on where bin edges fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from .detector import HEXITEC, DetectorSpec
from .errors import ConfigError

#: Electron rest energy m c^2 in keV (CODATA 2018).
MC2_KEV = 510.99895
#: Atomic unit of momentum per m c (1 / fine-structure constant).
MC_AU = 137.035999


def compton_energy(e1_kev, theta_rad):
    """Energy of a photon Compton-scattered by a free electron at rest, eq. (1).

    Parameters
    ----------
    e1_kev : float or ndarray
        Incident photon energy in keV.
    theta_rad : float or ndarray
        Scattering angle in radians (scalar or per pixel).

    Returns
    -------
    ndarray or float
        E_C = E1 / (1 + (E1 / mc^2)(1 - cos theta)) in keV. 115 keV at 90 deg -> 93.8738 keV.
    """
    e1 = np.asarray(e1_kev, dtype=np.float64)
    return e1 / (1.0 + (e1 / MC2_KEV) * (1.0 - np.cos(theta_rad)))


def pz_from_energy(e2_kev, e1_kev, theta_rad):
    """Electron momentum projection p_z (atomic units) of a scattered photon energy, eq. (2).

    p_z / (m c) = (E2 - E1 + (E1 E2 / mc^2)(1 - cos theta)) / sqrt(E1^2 + E2^2 - 2 E1 E2 cos theta),
    positive for E2 above the Compton energy. Broadcasts over all arguments.
    """
    e2 = np.asarray(e2_kev, dtype=np.float64)
    e1 = np.asarray(e1_kev, dtype=np.float64)
    c = np.cos(theta_rad)
    qc = np.sqrt(e1 * e1 + e2 * e2 - 2.0 * e1 * e2 * c)
    return MC_AU * (e2 - e1 + e1 * e2 * (1.0 - c) / MC2_KEV) / qc


def energy_from_pz(pz_au, e1_kev, theta_rad):
    """Scattered energy E2 (keV) for a momentum projection p_z (a.u.): exact inverse of eq. (2).

    Squaring eq. (2) with A = 1 + (E1/mc^2)(1 - cos theta) and p = p_z/(m c) gives the quadratic
    (A^2 - p^2) E2^2 - 2 E1 (A - p^2 cos theta) E2 + E1^2 (1 - p^2) = 0, whose root with
    sign(A E2 - E1) = sign(p) is returned.
    """
    p = np.asarray(pz_au, dtype=np.float64) / MC_AU
    e1 = np.asarray(e1_kev, dtype=np.float64)
    c = np.cos(theta_rad)
    a = 1.0 + (e1 / MC2_KEV) * (1.0 - c)
    p2 = p * p
    disc = (a - p2 * c) ** 2 - (a * a - p2) * (1.0 - p2)
    return e1 * (a - p2 * c + np.sign(p) * np.sqrt(np.maximum(disc, 0.0))) / (a * a - p2)


def theta_from_peak_energy(ec_kev, e1_kev):
    """Scattering angle (rad) from a fitted Compton peak centre: cos theta = 1 - mc^2 (1/E_C - 1/E1)."""
    cos_t = 1.0 - MC2_KEV * (1.0 / np.asarray(ec_kev, dtype=np.float64) - 1.0 / np.asarray(e1_kev, dtype=np.float64))
    return np.arccos(np.clip(cos_t, -1.0, 1.0))


@dataclass(frozen=True)
class PinholeGeometry:
    """Pinhole camera at 90 degrees to the beam (PHYSICS.md section 3).

    The beam runs along +x. The pinhole sits ``d1_mm`` from the sample along the detector
    normal; the detector plane is ``d2_mm`` beyond it. The in-plane offset (u, v) of a pixel
    is measured from the foot of the normal through the pinhole, u along the beam.

    Parameters
    ----------
    d1_mm, d2_mm : float
        Sample-pinhole and pinhole-detector distances in mm (160 and 150 in the reference work).
    detector : DetectorSpec
        Pixel grid and pitch.
    beam_axis : {"cols", "rows"}
        Detector axis parallel to the beam (u); columns by default.
    center_offset_mm : (float, float)
        (u, v) of the detector centre relative to the foot of the normal, in mm.
    beam_sign : {+1, -1}
        +1 when u grows with the column (or row) index along the beam direction.
    """

    d1_mm: float = 160.0
    d2_mm: float = 150.0
    detector: DetectorSpec = HEXITEC
    beam_axis: str = "cols"
    center_offset_mm: tuple = (0.0, 0.0)
    beam_sign: int = 1

    def __post_init__(self):
        if self.d1_mm <= 0 or self.d2_mm <= 0:
            raise ConfigError(f"PinholeGeometry: distances must be positive, found d1={self.d1_mm}, d2={self.d2_mm} mm")
        if self.beam_axis not in ("cols", "rows"):
            raise ConfigError(f"PinholeGeometry.beam_axis: expected 'cols' or 'rows', found {self.beam_axis!r}")

    def pixel_offsets_mm(self):
        """(u, v) in mm of every pixel centre, each of shape (rows, cols)."""
        rows, cols = self.detector.shape
        pitch = self.detector.pitch_mm
        y = (np.arange(rows) + 0.5 - rows / 2.0) * pitch
        x = (np.arange(cols) + 0.5 - cols / 2.0) * pitch
        yy, xx = np.meshgrid(y, x, indexing="ij")
        along, across = (xx, yy) if self.beam_axis == "cols" else (yy, xx)
        u = self.beam_sign * along + self.center_offset_mm[0]
        v = across + self.center_offset_mm[1]
        return u, v

    def theta_map(self):
        """Scattering angle per pixel in radians, shape (rows, cols): cos theta = u / sqrt(u^2 + v^2 + d2^2)."""
        u, v = self.pixel_offsets_mm()
        return np.arccos(u / np.sqrt(u * u + v * v + self.d2_mm ** 2))

    def sample_coordinates(self):
        """Sample point imaged by each pixel, -(d1/d2)(u, v) in mm: two (rows, cols) arrays."""
        u, v = self.pixel_offsets_mm()
        m = self.d1_mm / self.d2_mm
        return -m * u, -m * v

    @property
    def magnification(self) -> float:
        """Detector-to-sample scale d2/d1 (the image is inverted)."""
        return self.d2_mm / self.d1_mm
