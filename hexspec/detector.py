"""Detector geometry and readout description."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class DetectorSpec:
    """Pixel grid and readout rate of a detector.

    Parameters
    ----------
    rows, cols : int
        Pixel grid; row 0 is at the top of the image. Multi-module systems are simply
        larger grids (160 x 160 for 2x2 modules, 160 x 480 for 2x6).
    pitch_mm : float
        Pixel pitch in mm (0.25 for HEXITEC).
    frame_rate_hz : float
        Nominal frame rate in Hz (9118.87 for HEXITEC).
    """

    rows: int = 80
    cols: int = 80
    pitch_mm: float = 0.25
    frame_rate_hz: float = 9118.87

    def __post_init__(self):
        if int(self.rows) <= 0 or int(self.cols) <= 0:
            raise ConfigError(f"DetectorSpec: rows and cols must be positive, found {self.rows} x {self.cols}")
        if self.pitch_mm <= 0:
            raise ConfigError(f"DetectorSpec: pitch_mm must be positive, found {self.pitch_mm}")
        if self.frame_rate_hz <= 0:
            raise ConfigError(f"DetectorSpec: frame_rate_hz must be positive, found {self.frame_rate_hz}")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return (int(self.rows), int(self.cols))

    @property
    def n_pixels(self) -> int:
        return int(self.rows) * int(self.cols)

    def to_dict(self) -> dict:
        return asdict(self)


#: One HEXITEC module: 80 x 80 pixels of 0.25 mm read at 9118.87 Hz.
HEXITEC = DetectorSpec(rows=80, cols=80, pitch_mm=0.25, frame_rate_hz=9118.87)
