"""The processing chain: extract -> accumulate -> sinks, one configuration per use.

Every use of the data flow is a :class:`Chain` made of the same plain stages:

=============  ==================================  ========================================
stage          object                              lives in
=============  ==================================  ========================================
extract        EventExtractor (frames -> events)   hexspec/events.py, event_stages.py
accumulate     SpectrumAccumulator (-> cube)       hexspec/spectra.py
sinks          ``on_batch(batch, events)``         HDF5Sink here; viewer, recorder
=============  ==================================  ========================================

with one :class:`~hexspec.frames.GapCounter` counting dropped frames in
:class:`RunStats`. ``chain.feed(batch)`` pushes one batch through (a recorder, a viewer
worker), ``chain.run(source)`` pulls a whole source (``hexspec process``); the module
function :func:`run` is that pull with a fresh chain. State that crosses batches
(next-frame memory, the accumulated cube, the gap counter) lives in the stage objects,
never in globals. ``print(chain)`` shows the stages and their settings.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .config import ProcessingConfig
from .cube import SpectralCube
from .errors import ConfigError
from .eventlist import EventList
from .frames import FrameBatch, GapCounter

__all__ = ["ProcessingConfig", "Chain", "RunStats", "RunResult", "run", "HDF5Sink"]


@dataclass
class RunStats:
    """Counters of one run."""

    batches: int = 0
    frames: int = 0
    frames_dropped: int = 0        # gaps in frame numbers (GapCounter: a restart counts none)
    first_frame: int = -1
    last_frame: int = -1
    events: int = 0
    elapsed_s: float = 0.0
    gaps: GapCounter = field(default_factory=GapCounter, repr=False, compare=False)

    def count_batch(self, frame_numbers) -> None:
        if len(frame_numbers) == 0:
            return
        self.frames_dropped += self.gaps.count(frame_numbers)
        if self.first_frame < 0:
            self.first_frame = int(frame_numbers[0])
        self.last_frame = int(frame_numbers[-1])
        self.frames += len(frame_numbers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("gaps")
        return d


@dataclass
class RunResult:
    cube: SpectralCube
    stats: RunStats
    extractor_stats: dict


class Chain:
    """Frames (or events) -> events -> spectral cube -> sinks, batch by batch.

    Parameters
    ----------
    config : ProcessingConfig
        Settings of the extract and accumulate stages.
    shape : (rows, cols), optional
        Detector shape; by default taken from the first frame batch (an event source
        needs it given).
    sinks : sequence
        Objects with ``on_batch(batch, events)`` (batch is None for events fed
        directly) and optionally ``close(result)``, called by :meth:`close`.
    threads : int
        Worker threads of the extract stage.
    accumulate : bool
        False leaves out the accumulate stage: the chain only extracts (and feeds sinks).

    With both stages, extraction histograms into the accumulator inside its kernel
    (:meth:`SpectrumAccumulator.histogram_target`), exactly as ``accumulator.add(events)``
    would; :meth:`extract` and :meth:`accumulate` run the two stages apart, for a caller
    that must hold a lock around one of them (the live viewer).
    """

    def __init__(self, config: ProcessingConfig, shape=None, sinks=(), threads: int = 1, accumulate: bool = True):
        if not isinstance(config, ProcessingConfig):
            raise ConfigError(f"Chain: expected a ProcessingConfig, found {type(config).__name__}")
        self.config = config
        self.sinks = list(sinks)
        self.threads = int(threads)
        self.with_accumulator = bool(accumulate)
        self.shape = None
        self.extractor = self.accumulator = None
        self.stats = RunStats()
        self._t0 = time.monotonic()
        if shape is not None:
            self._build(shape)

    def _build(self, shape):
        # deferred: the stage modules compile numba kernels, a chain object need not
        from .events import EventExtractor
        from .spectra import SpectrumAccumulator
        self.shape = (int(shape[0]), int(shape[1]))
        self.extractor = EventExtractor(self.config, self.shape, threads=self.threads)
        if self.with_accumulator:
            self.accumulator = SpectrumAccumulator(self.config, self.shape)

    def _frames(self, batch) -> FrameBatch:
        batch = batch if isinstance(batch, FrameBatch) else FrameBatch(batch)
        if self.extractor is None:
            self._build(batch.shape)
        return batch

    # ------------------------------------------------------------------ the stages
    def extract(self, batch) -> EventList:
        """Extract stage alone: count the batch's frames and gaps, return its events."""
        batch = self._frames(batch)
        self.stats.count_batch(batch.frame_numbers)
        return self.extractor(batch)

    def accumulate(self, events: EventList) -> None:
        """Accumulate stage alone: histogram ``events`` into the cube."""
        if self.accumulator is None:
            if not self.with_accumulator:
                raise ConfigError("Chain: this chain was built without an accumulate stage")
            raise ConfigError("run: an event source needs the detector shape (shape=(rows, cols))")
        self.accumulator.add(events)

    def to_sinks(self, batch, events) -> None:
        """Sink stage: hand the batch (None for events fed directly) and its events on."""
        self.stats.events += len(events)
        self.stats.batches += 1
        for s in self.sinks:
            s.on_batch(batch, events)
        self.stats.elapsed_s = time.monotonic() - self._t0

    # ------------------------------------------------------------------ push and pull
    def feed(self, item) -> EventList:
        """Push one FrameBatch (or (n, rows, cols) array, or EventList) through every stage."""
        if isinstance(item, EventList):
            self.accumulate(item)
            self.to_sinks(None, item)
            return item
        batch = self._frames(item)
        self.stats.count_batch(batch.frame_numbers)
        events = self.extractor(batch, accumulator=self.accumulator)
        self.to_sinks(batch, events)
        return events

    def run(self, source, progress=None, max_frames: int | None = None) -> RunResult:
        """Pull every batch of ``source`` through the chain, then :meth:`close` it.

        Parameters
        ----------
        source : iterable of FrameBatch or EventList
        progress : callable, optional
            Called as ``progress(stats)`` after every batch.
        max_frames : int, optional
            Stop after this many frames.
        """
        self._t0 = time.monotonic()
        try:
            for item in source:
                if not isinstance(item, EventList) and max_frames is not None:
                    item = item if isinstance(item, FrameBatch) else FrameBatch(item)
                    if self.stats.frames + len(item) > max_frames:
                        item = item[: max(0, max_frames - self.stats.frames)]
                self.feed(item)
                if progress is not None:
                    progress(self.stats)
                if max_frames is not None and self.stats.frames >= max_frames:
                    break
        finally:
            if self.extractor is not None:
                self.extractor.close()
        return self.close()

    def result(self) -> RunResult:
        """The cube and counters so far."""
        if self.accumulator is None:
            raise ConfigError("run: the source yielded nothing, and no shape was given")
        self.stats.elapsed_s = time.monotonic() - self._t0
        return RunResult(self.accumulator.cube, self.stats, self.extractor.stats if self.extractor is not None else {})

    def close(self) -> RunResult:
        """End the run: the result, handed to every sink's ``close(result)``."""
        if self.extractor is not None:
            self.extractor.close()
        result = self.result()
        for s in self.sinks:
            close = getattr(s, "close", None)
            if close is not None:
                close(result)
        return result

    def __repr__(self) -> str:
        c = self.config
        extract = f"extract[threshold, {'next-frame, ' if c.next_frame else ''}{c.energy_unit}, " \
                  f"{c.charge_sharing} {c.cluster_window}x{c.cluster_window}]"
        b = c.resolved_bins()
        stages = [extract]
        if self.with_accumulator:
            stages.append(f"accumulate[{b.n} bins {b.start:g}-{b.stop:g} {c.energy_unit}]")
        if self.sinks:
            stages.append(f"sinks[{', '.join(type(s).__name__ for s in self.sinks)}]")
        shape = "" if self.shape is None else f"{self.shape[0]}x{self.shape[1]}: "
        return f"Chain({shape}{' -> '.join(stages)})"


def run(source, config: ProcessingConfig, sinks=(), shape=None, threads: int = 1, progress=None,
        max_frames: int | None = None) -> RunResult:
    """Process every batch of ``source`` and return the accumulated cube and counters.

    The pull configuration of :class:`Chain`: ``Chain(config, shape, sinks, threads).run(source)``.

    Parameters
    ----------
    source : iterable of FrameBatch or EventList
    config : ProcessingConfig
    sinks : sequence
        Objects with ``on_batch(batch, events)`` (batch is None for event sources) and
        optionally ``close(result)``.
    shape : (rows, cols), optional
        Detector shape; required for event sources, otherwise taken from the first batch.
    threads : int
        Worker threads for event extraction.
    progress : callable, optional
        Called as ``progress(stats)`` after every batch.
    max_frames : int, optional
        Stop after this many frames.
    """
    if not isinstance(config, ProcessingConfig):
        raise ConfigError(f"run: expected a ProcessingConfig, found {type(config).__name__}")
    return Chain(config, shape, sinks, threads).run(source, progress=progress, max_frames=max_frames)


class HDF5Sink:
    """Write events (and optionally raw frames) as they come, spectra and counters at the end.

    Flushes at least every ``flush_interval_s`` seconds so a crash loses at most that much.
    """

    def __init__(self, path, shape, config: ProcessingConfig, source: str | None = None,
                 frames: bool = False, events: bool = True, spectra: bool = True,
                 flush_interval_s: float = 1.0, swmr: bool = False):
        from .io.hdf5 import HexspecWriter
        self.writer = HexspecWriter(path, shape, config=config, source=source, frames=frames,
                                    events=events, spectra=spectra, swmr=swmr)
        self.frames, self.events, self.spectra = frames, events, spectra
        self.flush_interval_s = flush_interval_s

    def on_batch(self, batch, events) -> None:
        if self.frames and batch is not None:
            self.writer.write_frames(batch)
        if self.events:
            self.writer.write_events(events)
        if time.monotonic() - self.writer.last_flush >= self.flush_interval_s:
            self.writer.flush()

    def close(self, result: RunResult | None = None) -> None:
        if result is not None:
            if self.spectra:
                self.writer.write_spectra(result.cube)
            st = result.stats
            self.writer.set_acquisition(frames_received=st.frames, frames_dropped=st.frames_dropped,
                                        first_frame=st.first_frame, last_frame=st.last_frame)
        self.writer.close()
