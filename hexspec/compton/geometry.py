"""Pinhole-camera geometry (PHYSICS.md section 3): scattering angle per pixel.

Two sources of theta: the geometry of the camera (:class:`PinholeGeometry`) or each
pixel's fitted Compton peak centre (:func:`theta_map_from_peaks`, inverting eq. 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..detector import HEXITEC, DetectorSpec
from ..errors import ConfigError
from .kinematics import theta_from_peak_energy


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



def theta_map_from_peaks(peaks, e1_kev) -> np.ndarray:
    """Scattering angle per pixel (rad) from fitted Compton peak centres (PHYSICS.md section 3); NaN where not ok."""
    theta = theta_from_peak_energy(np.where(peaks.ok, peaks.center, np.nan), e1_kev)
    return np.where(peaks.ok, theta, np.nan)
