"""Energy binning, per-pixel spectral cubes and their streaming accumulator."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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


def _check_event_positions(events, shape):
    if len(events) and (int(events.row.max()) >= shape[0] or int(events.col.max()) >= shape[1]):
        raise ConfigError(
            f"events reach row {int(events.row.max())}, col {int(events.col.max())}, outside a {shape[0]} x {shape[1]} detector")


_BUCKET_SHIFT = 14          # 2**14 counters (64 KB) per bucket: a cache-resident part of the cube
_BUCKETED_FROM = 4096       # events per call from which bucketing pays off


@njit(cache=True, nogil=True)
def histogram_events(row, col, energy, cols, start, width, counts, flow):
    """Add events to ``counts`` (pixels, nbins) in place; ``flow`` [under, over] counts the rest.

    bin = floor((E - start) / width); counted when 0 <= bin < nbins.

    A cube of 80 x 80 x 1000 uint32 is 25 MB, so incrementing it in event order misses the
    caches on nearly every event. Large batches are therefore first bucketed by position
    in the cube (a counting sort on the high bits of the flat index), so the increments of
    each bucket stay within 64 KB: measured 10 ns instead of 17 ns per event.
    """
    if energy.shape[0] >= _BUCKETED_FROM and counts.flags.c_contiguous:
        _histogram_bucketed(row, col, energy, cols, start, width, counts, flow)
        return
    nbins = counts.shape[1]
    inv = 1.0 / width
    for k in range(energy.shape[0]):
        x = (np.float64(energy[k]) - start) * inv
        if x >= 0.0 and x < nbins:
            counts[np.int64(row[k]) * cols + np.int64(col[k]), int(x)] += 1
        elif x < 0.0:
            flow[0] += 1
        else:  # above the range, or not a number
            flow[1] += 1


@njit(cache=True, nogil=True)
def _bucket_events(row, col, energy, cols, start, width, nbins, ncells, flow):
    """Flat cube indices of the in-range events, ordered by bucket (a counting sort on the
    high bits of the index), and the start of each bucket in that order.

    Only reads shared data, so threads can bucket their own events concurrently; under- and
    overflow go into the caller's own ``flow``.
    """
    n = energy.shape[0]
    inv = 1.0 / width
    index = np.empty(n, np.int64)
    m = 0
    for k in range(n):
        x = (np.float64(energy[k]) - start) * inv
        if x >= 0.0 and x < nbins:
            index[m] = (np.int64(row[k]) * cols + np.int64(col[k])) * nbins + int(x)
            m += 1
        elif x < 0.0:
            flow[0] += 1
        else:  # above the range, or not a number
            flow[1] += 1
    nbuckets = (ncells >> _BUCKET_SHIFT) + 1
    starts = np.zeros(nbuckets + 1, np.int64)
    for k in range(m):
        starts[(index[k] >> _BUCKET_SHIFT) + 1] += 1
    for b in range(nbuckets):
        starts[b + 1] += starts[b]
    fill = starts[:-1].copy()
    ordered = np.empty(m, np.int64)
    for k in range(m):
        b = index[k] >> _BUCKET_SHIFT
        ordered[fill[b]] = index[k]
        fill[b] += 1
    return ordered, starts


@njit(cache=True, nogil=True)
def _add_buckets(flat, ordered, starts, bucket_lo, bucket_hi):
    """Increment ``flat`` at the bucketed indices of buckets [bucket_lo, bucket_hi): threads
    given disjoint bucket ranges fill one cube together without races."""
    for k in range(starts[bucket_lo], starts[bucket_hi]):
        flat[ordered[k]] += 1


@njit(cache=True, nogil=True)
def _histogram_bucketed(row, col, energy, cols, start, width, counts, flow):
    nbins = counts.shape[1]
    flat = counts.reshape(-1)
    ordered, starts = _bucket_events(row, col, energy, cols, start, width, nbins, flat.shape[0], flow)
    _add_buckets(flat, ordered, starts, 0, starts.shape[0] - 1)


def histogram_reference(row, col, energy, shape, bins: EnergyBins):
    """Plain-numpy reference of :func:`histogram_events`: returns (counts, underflow, overflow)."""
    x = (energy.astype(np.float64) - bins.start) * (1.0 / bins.width)
    under = int(np.count_nonzero(x < 0))
    ok = (x >= 0) & (x < bins.n)
    over = int(x.size - under - np.count_nonzero(ok))
    b = np.floor(x[ok]).astype(np.int64)
    pix = row[ok].astype(np.int64) * shape[1] + col[ok].astype(np.int64)
    flat = np.bincount(pix * bins.n + b, minlength=shape[0] * shape[1] * bins.n)
    return flat.reshape(shape[0], shape[1], bins.n).astype(np.uint32), under, over


class SpectrumAccumulator:
    """Streaming per-pixel histogram of events with fixed memory.

    Parameters
    ----------
    config : ProcessingConfig
        Supplies the energy bins (``config.resolved_bins()``).
    shape : (rows, cols)
        Detector shape.

    The cube is preallocated once; :meth:`add` histograms events in place, so the
    result is the same whatever the batch sizes. A threaded EventExtractor filling it
    adds one private cube of the same size per extra thread, once (see :meth:`fused_target`).
    """

    def __init__(self, config, shape):
        self.config = config
        self.bins = config.resolved_bins()
        self.shape = (int(shape[0]), int(shape[1]))
        self.unit = "keV" if config.calibrated else "ADU"
        from .limits import check_allocation
        check_allocation((self.shape[0], self.shape[1], self.bins.n), 4, "SpectrumAccumulator: the spectral cube")
        self._counts = np.zeros((self.shape[0], self.shape[1], self.bins.n), dtype=np.uint32)
        self._spare = []             # private cubes of extractor threads (see fused_target)
        self._spare_dirty = False
        self._flow = np.zeros(2, dtype=np.int64)
        self.n_events = 0

    def add(self, events, pool=None, parts: int = 1) -> None:
        """Histogram an EventList into the cube.

        With a ``pool`` (concurrent.futures executor) and ``parts`` > 1 the events are
        split into ``parts`` chunks bucketed concurrently, then the cube is filled by
        ``parts`` threads over disjoint ranges of it (the kernels release the GIL). The
        calling thread is one of them, so a pool of ``parts - 1`` workers suffices.
        """
        if pool is None or parts < 2 or len(events) < _BUCKETED_FROM:
            _check_event_positions(events, self.shape)
            histogram_events(events.row, events.col, events.energy, self.shape[1], self.bins.start,
                             self.bins.width, self._counts.reshape(-1, self.bins.n), self._flow)
            self.n_events += len(events)
            return
        bounds = np.linspace(0, len(events), parts + 1).astype(np.int64)
        jobs = [pool.submit(self.prepare, events[bounds[k]:bounds[k + 1]]) for k in range(1, parts)]
        first = self.prepare(events[bounds[0]:bounds[1]])   # the calling thread takes the first chunk
        self.commit([first] + [j.result() for j in jobs], pool, parts)

    def prepare(self, events):
        """First half of a concurrent :meth:`add`: bucket ``events`` without touching the
        cube (safe to run in several threads at once). Pass the results to :meth:`commit`."""
        _check_event_positions(events, self.shape)
        flow = np.zeros(2, np.int64)
        ordered, starts = _bucket_events(events.row, events.col, events.energy, self.shape[1], self.bins.start,
                                         self.bins.width, self.bins.n, self._counts.size, flow)
        return ordered, starts, flow, len(events)

    def commit(self, prepared, pool=None, parts: int = 1) -> None:
        """Second half of a concurrent :meth:`add`: fill the cube from :meth:`prepare`
        results, split into ``parts`` disjoint ranges of buckets: the calling thread fills
        the first, the threads of ``pool`` the others."""
        flat = self._counts.reshape(-1)
        nbuckets = prepared[0][1].shape[0] - 1 if prepared else 0

        def fill(lo, hi):
            for ordered, starts, _, _ in prepared:
                _add_buckets(flat, ordered, starts, lo, hi)

        if pool is None or parts < 2 or nbuckets < 2:
            fill(0, nbuckets)
        else:
            edges = np.linspace(0, nbuckets, parts + 1).astype(np.int64)
            jobs = [pool.submit(fill, edges[k], edges[k + 1]) for k in range(1, parts)]
            fill(edges[0], edges[1])   # the calling thread fills the first range itself
            for j in jobs:
                j.result()
        for _, _, flow, n in prepared:
            self._flow += flow
            self.n_events += n

    def fused_target(self, shape, part: int = 0):
        """What an EventExtractor needs to histogram into this cube inside its kernel:
        (flat counts, nbins, start, 1 / width). Report the events with :meth:`fused_done`.

        Concurrent threads ask for parts 0, 1, ...: part 0 is the cube itself, each other
        part a private cube of the same shape (allocated once, on first use) that is
        folded into it whenever the cube is read. Each thread then increments its own
        counters with plain adds; atomic adds into one shared cube measured 7% slower
        with two threads (each is a full memory barrier on x86).
        """
        if tuple(shape) != self.shape:
            raise ConfigError(f"SpectrumAccumulator: expected events of a {self.shape[0]} x {self.shape[1]} "
                              f"detector, found frames of {shape[0]} x {shape[1]}")
        if part == 0:
            counts = self._counts
        else:
            while len(self._spare) < part:
                self._spare.append(np.zeros_like(self._counts))
            counts = self._spare[part - 1]
            self._spare_dirty = True
        return counts.reshape(-1), self.bins.n, self.bins.start, 1.0 / self.bins.width

    def _fold(self) -> None:
        """Add the private cubes of extractor threads into the cube, and zero them."""
        if self._spare_dirty:
            for spare in self._spare:
                np.add(self._counts, spare, out=self._counts)
                spare.fill(0)
            self._spare_dirty = False

    def fused_done(self, n_events, flow) -> None:
        """Account for ``n_events`` histogrammed through :meth:`fused_target`, with
        ``flow`` [under, over] of them outside the bins."""
        self._flow += flow
        self.n_events += int(n_events)

    def reset(self) -> None:
        self._counts[...] = 0
        for spare in self._spare:
            spare.fill(0)
        self._spare_dirty = False
        self._flow[:] = 0
        self.n_events = 0

    @property
    def underflow(self) -> int:
        return int(self._flow[0])

    @property
    def overflow(self) -> int:
        return int(self._flow[1])

    @property
    def cube(self) -> SpectralCube:
        """The accumulated cube: a view of the live counts (copy it to keep a snapshot).
        Counts that a threaded extractor's other threads add later appear at the next read."""
        self._fold()
        return SpectralCube(self._counts, self.bins.edges, unit=self.unit,
                            underflow=self._flow[0], overflow=self._flow[1])
