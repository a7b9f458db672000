"""EnergyBins: the uniform energy axis of every spectrum (numpy only, no kernels)."""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError, FormatError


class EnergyBins:
    """Uniform energy bins.

    Parameters
    ----------
    start, stop : float
        Lower edge of the first bin and upper limit, in keV (or ADU when uncalibrated).
    width : float
        Bin width, same unit. The number of bins is ``round((stop - start) / width)``;
        an energy E falls in bin ``floor((E - start) / width)`` when that is in ``[0, n)``.
    """

    __slots__ = ("start", "stop", "width", "n")

    def __init__(self, start: float, stop: float, width: float):
        start, stop, width = float(start), float(stop), float(width)
        if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(width)):
            raise ConfigError(f"EnergyBins: start, stop and width must be finite, found {start}, {stop}, {width}")
        if width <= 0:
            raise ConfigError(f"EnergyBins: width must be positive, found {width}")
        if stop <= start:
            raise ConfigError(f"EnergyBins: stop must exceed start, found start={start}, stop={stop}")
        n = int(round((stop - start) / width))
        if n < 1:
            raise ConfigError(f"EnergyBins: ({start}, {stop}, {width}) gives no bin")
        from .limits import MAX_BINS
        if n > MAX_BINS:
            raise ConfigError(f"EnergyBins: ({start}, {stop}, {width}) gives {n} bins, more than the "
                              f"{MAX_BINS} allowed (HEXSPEC_MAX_BINS)")
        self.start, self.width, self.n = start, width, n
        self.stop = start + n * width

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, shape (n + 1,)."""
        return self.start + self.width * np.arange(self.n + 1, dtype=np.float64)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres, shape (n,)."""
        return self.start + self.width * (np.arange(self.n, dtype=np.float64) + 0.5)

    @classmethod
    def from_edges(cls, edges) -> "EnergyBins":
        """Uniform bins from an edge array; raises FormatError if it is not uniform."""
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2:
            raise FormatError(f"EnergyBins: expected at least 2 edges, found shape {edges.shape}")
        widths = np.diff(edges)
        width = float(widths.mean())
        if not np.allclose(widths, width, rtol=1e-6, atol=1e-9 * max(1.0, abs(width))):
            raise FormatError("EnergyBins: edges are not uniformly spaced")
        return cls(edges[0], edges[-1], width)

    def to_list(self) -> list:
        return [self.start, self.stop, self.width]

    def __eq__(self, other) -> bool:
        return isinstance(other, EnergyBins) and (self.start, self.width, self.n) == (other.start, other.width, other.n)

    def __repr__(self) -> str:
        return f"EnergyBins({self.start:g}, {self.stop:g}, {self.width:g})"
