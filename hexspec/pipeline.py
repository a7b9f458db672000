"""The streaming loop: source -> events -> spectra -> sinks.

One loop serves live viewing, recording and offline reprocessing. A source is any
iterable of FrameBatch (or of EventList, for event files); sinks receive every batch
with its events. State that crosses batches (next-frame memory, the accumulated cube,
the frame-gap counter) lives in the EventExtractor, SpectrumAccumulator and
:class:`RunStats` objects, never in globals.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .config import ProcessingConfig
from .errors import ConfigError
from .events import EventExtractor, EventList
from .frames import FrameBatch
from .spectra import SpectralCube, SpectrumAccumulator

__all__ = ["ProcessingConfig", "RunStats", "RunResult", "run", "HDF5Sink"]


@dataclass
class RunStats:
    """Counters of one run."""

    batches: int = 0
    frames: int = 0
    frames_dropped: int = 0        # gaps in frame numbers
    first_frame: int = -1
    last_frame: int = -1
    events: int = 0
    elapsed_s: float = 0.0

    def count_batch(self, frame_numbers) -> None:
        fn = np.asarray(frame_numbers)
        if fn.size == 0:
            return
        if self.last_frame >= 0:
            gap = int(fn[0]) - self.last_frame - 1
            if gap > 0:
                self.frames_dropped += gap
        if fn.size > 1:
            d = np.diff(fn)
            self.frames_dropped += int(np.sum(d[d > 1] - 1))
        if self.first_frame < 0:
            self.first_frame = int(fn[0])
        self.last_frame = int(fn[-1])
        self.frames += int(fn.size)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    cube: SpectralCube
    stats: RunStats
    extractor_stats: dict


def run(source, config: ProcessingConfig, sinks=(), shape=None, threads: int = 1, progress=None,
        max_frames: int | None = None) -> RunResult:
    """Process every batch of ``source`` and return the accumulated cube and counters.

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
    stats = RunStats()
    extractor = acc = None
    if shape is not None:
        extractor = EventExtractor(config, shape, threads=threads)
        acc = SpectrumAccumulator(config, shape)
    t0 = time.monotonic()
    try:
        for item in source:
            if isinstance(item, EventList):
                if acc is None:
                    raise ConfigError("run: an event source needs the detector shape (shape=(rows, cols))")
                events, batch = item, None
            else:
                batch = item if isinstance(item, FrameBatch) else FrameBatch(item)
                if max_frames is not None and stats.frames + len(batch) > max_frames:
                    batch = batch[: max(0, max_frames - stats.frames)]
                if extractor is None:
                    extractor = EventExtractor(config, batch.shape, threads=threads)
                    acc = SpectrumAccumulator(config, batch.shape)
                stats.count_batch(batch.frame_numbers)
                events = extractor(batch, accumulator=acc)
            if batch is None:
                acc.add(events)
            stats.events += len(events)
            stats.batches += 1
            for s in sinks:
                s.on_batch(batch, events)
            stats.elapsed_s = time.monotonic() - t0
            if progress is not None:
                progress(stats)
            if max_frames is not None and stats.frames >= max_frames:
                break
    finally:
        if extractor is not None:
            extractor.close()
    if acc is None:
        raise ConfigError("run: the source yielded nothing, and no shape was given")
    stats.elapsed_s = time.monotonic() - t0
    result = RunResult(acc.cube, stats, extractor.stats if extractor is not None else {})
    for s in sinks:
        close = getattr(s, "close", None)
        if close is not None:
            close(result)
    return result


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
