"""SpectralCube: counts per pixel and energy bin, the product of the accumulate stage.

Numpy only: reading or writing a cube file never loads the numba kernels
(:meth:`SpectralCube.from_events` imports the histogram kernel when called).
"""

from __future__ import annotations

import numpy as np

from .bins import EnergyBins
from .errors import ConfigError, FormatError


class SpectralCube:
    """Counts per pixel and energy bin.

    Parameters
    ----------
    counts : ndarray, shape (rows, cols, nbins)
        Counts per pixel and bin (uint32 from the accumulator; any numeric dtype allowed).
    edges : ndarray, shape (nbins + 1,)
        Bin edges in keV (or ADU when uncalibrated).
    unit : str
        "keV" or "ADU".
    """

    def __init__(self, counts, edges, unit: str = "keV", underflow=0, overflow=0):
        counts = np.asarray(counts)
        edges = np.asarray(edges, dtype=np.float64)
        if counts.ndim != 3:
            raise FormatError(f"SpectralCube: expected counts of shape (rows, cols, nbins), found {counts.shape}")
        if edges.shape != (counts.shape[2] + 1,):
            raise FormatError(
                f"SpectralCube: expected {counts.shape[2] + 1} edges for {counts.shape[2]} bins, found {edges.shape}")
        if np.any(np.diff(edges) <= 0):
            raise FormatError("SpectralCube: edges must increase")
        self.counts = counts
        self.edges = edges
        self.unit = unit
        self.underflow = int(underflow)
        self.overflow = int(overflow)

    @property
    def shape(self) -> tuple[int, int]:
        return self.counts.shape[:2]

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.edges)

    @classmethod
    def from_events(cls, events, bins, shape, unit: str | None = None) -> "SpectralCube":
        """Histogram an EventList into a new cube of the given (rows, cols).

        ``bins`` is an EnergyBins, or a ProcessingConfig whose resolved bins and energy
        unit are used. ``unit`` defaults to the config's, else "keV".
        """
        if hasattr(bins, "resolved_bins"):
            unit = unit or bins.energy_unit
            bins = bins.resolved_bins()
        if not isinstance(bins, EnergyBins):
            raise ConfigError(f"SpectralCube.from_events: expected EnergyBins or a ProcessingConfig, found {bins!r} "
                              "(a config's bins may be None: pass the config itself, or config.resolved_bins())")
        unit = unit or "keV"
        # the histogram kernel loads here, not on import: reading a cube never needs it
        from .spectra import _check_event_positions, histogram_events
        counts = np.zeros((int(shape[0]), int(shape[1]), bins.n), dtype=np.uint32)
        flow = np.zeros(2, dtype=np.int64)
        _check_event_positions(events, shape)
        histogram_events(events.row, events.col, events.energy, int(shape[1]), bins.start, bins.width,
                         counts.reshape(-1, bins.n), flow)
        return cls(counts, bins.edges, unit=unit, underflow=flow[0], overflow=flow[1])

    def _band(self, emin, emax) -> np.ndarray:
        lo = -np.inf if emin is None else emin
        hi = np.inf if emax is None else emax
        c = self.centers
        return (c >= lo) & (c < hi)

    def image(self, emin=None, emax=None) -> np.ndarray:
        """Counts per pixel summed over bins whose centres lie in [emin, emax); shape (rows, cols)."""
        sel = self._band(emin, emax)
        return self.counts[:, :, sel].sum(axis=2, dtype=np.int64)

    def spectrum(self, mask=None) -> np.ndarray:
        """Counts per bin summed over all pixels, or over the pixels where ``mask`` (rows, cols) is true."""
        if mask is None:
            return self.counts.sum(axis=(0, 1), dtype=np.int64)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.shape:
            raise ConfigError(f"SpectralCube.spectrum: expected a mask of shape {self.shape}, found {mask.shape}")
        return self.counts[mask].sum(axis=0, dtype=np.int64)

    def rebin(self, factor: int) -> "SpectralCube":
        """Merge ``factor`` adjacent energy bins (a trailing remainder is dropped)."""
        if int(factor) != factor or factor < 1 or factor > self.counts.shape[2]:
            raise ConfigError(f"SpectralCube.rebin: expected a whole factor from 1 to {self.counts.shape[2]}, found {factor}")
        factor = int(factor)
        n = (self.counts.shape[2] // factor) * factor
        c = self.counts[:, :, :n].reshape(*self.shape, n // factor, factor).sum(axis=3, dtype=self.counts.dtype)
        dropped = int(self.counts[:, :, n:].sum())
        return SpectralCube(c, self.edges[: n + 1: factor], self.unit, self.underflow, self.overflow + dropped)

    def save(self, path, **kw) -> None:
        """Write the cube to a hexspec HDF5 file (FORMATS.md, /entry/spectra)."""
        from .io.hdf5 import write_cube
        write_cube(path, self, **kw)

    @classmethod
    def load(cls, path) -> "SpectralCube":
        """Read the cube of a hexspec HDF5 file."""
        from .io.hdf5 import read_cube
        return read_cube(path)

    def __add__(self, other: "SpectralCube") -> "SpectralCube":
        if other.counts.shape != self.counts.shape or not np.array_equal(other.edges, self.edges):
            raise ConfigError("SpectralCube: can only add cubes of equal shape and edges")
        total = self.counts.astype(np.uint64) + other.counts
        if self.counts.dtype == np.uint32 and total.size and total.max() > np.iinfo(np.uint32).max:
            raise ConfigError("SpectralCube: the sum exceeds the uint32 range of a pixel's bin")
        return SpectralCube(total.astype(self.counts.dtype), self.edges, self.unit,
                            self.underflow + other.underflow, self.overflow + other.overflow)

    def __repr__(self) -> str:
        return (f"SpectralCube({self.shape[0]}x{self.shape[1]} pixels, {self.counts.shape[2]} bins "
                f"{self.edges[0]:g}-{self.edges[-1]:g} {self.unit}, {int(self.counts.sum())} counts)")
