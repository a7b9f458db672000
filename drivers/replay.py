"""Paced replay: frames delivered at a chosen frame rate, and the simulator as a source.

:class:`Pacer` holds a stream to a frame rate (a file replayed "as if live", the
simulator at the HEXITEC's 9118.87 Hz); :class:`SimSource` is what ``sim://`` opens.
"""

from __future__ import annotations

import time

from ..errors import ConfigError
from .base import BaseSource


class Pacer:
    """Keep a stream of frames at ``rate_hz`` (None: as fast as possible).

    Frame k is due at ``t0 + k / rate_hz``; :meth:`wait` sleeps until the given frame
    is due, so a slow consumer never makes the stream speed up afterwards beyond its
    schedule, and :attr:`lag_s` says how far behind schedule the stream is.
    """

    def __init__(self, rate_hz: float | None):
        if rate_hz is not None and not rate_hz > 0:
            raise ConfigError(f"rate: expected frames per second > 0, found {rate_hz}")
        self.rate_hz = rate_hz
        self.t0 = None
        self.lag_s = 0.0

    def batch_size(self, largest: int) -> int:
        """Frames per batch so that batches come about 20 times a second (at most ``largest``)."""
        if self.rate_hz is None:
            return largest
        return max(1, min(largest, int(self.rate_hz / 20)))

    def wait(self, frames_done: int) -> None:
        """Sleep until the frame with index ``frames_done`` (counting from 0) is due."""
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        if self.rate_hz is None:
            return
        due = self.t0 + frames_done / self.rate_hz
        if due > now:
            time.sleep(due - now)
            self.lag_s = 0.0
        else:
            self.lag_s = now - due


SIM_SOURCES = ("am241", "compton")


class SimSource(BaseSource):
    """Frames from the HEXITEC simulator (:mod:`hexspec.sim`), what ``sim://`` opens.

    Parameters
    ----------
    source : {"am241", "compton"}
        Photon source: an Am-241 calibration source or Compton scattering (XCS-I).
    rate_hz : float, optional
        Frame rate to pace the stream to (default: as fast as the simulator goes).
    seed : int
        Random seed: the same seed gives the same frames.
    photon_rate_hz : float, optional
        Photons per second on the detector (default: the simulator's).
    shape : (rows, cols), optional
        Detector shape (default HEXITEC 80 x 80).
    batch_frames : int
        Frames simulated per batch.
    max_frames : int, optional
        Stop after this many frames (default: run until closed).
    """

    def __init__(self, source: str = "am241", rate_hz: float | None = None, seed: int = 0,
                 photon_rate_hz: float | None = None, shape=None, batch_frames: int = 1000,
                 max_frames: int | None = None):
        super().__init__(max_frames)
        if source not in SIM_SOURCES:
            raise ConfigError(f"sim source: expected one of {', '.join(SIM_SOURCES)}, found {source!r}")
        from .. import sim
        from ..detector import HEXITEC, DetectorSpec
        detector = HEXITEC if shape is None else DetectorSpec(int(shape[0]), int(shape[1]), HEXITEC.pitch_mm,
                                                              HEXITEC.frame_rate_hz)
        if source == "am241":
            photons = sim.Am241Source()
        else:
            from ..compton import PinholeGeometry
            photons = sim.ComptonSource(geometry=PinholeGeometry(detector=detector))
        kw = {} if photon_rate_hz is None else {"photon_rate_hz": photon_rate_hz}
        self.simulator = sim.HexitecSimulator(photons, detector=detector, seed=seed, **kw)
        self.pacer = Pacer(rate_hz)
        self.batch_frames = max(1, int(batch_frames))
        self.name = f"sim://?source={source}&seed={seed}"
        self.truth = None

    def _batches(self):
        produced = 0
        size = self.pacer.batch_size(self.batch_frames)
        while not self._closed:
            n = size if self.max_frames is None else min(size, self.max_frames - produced)
            if n <= 0:
                return
            batch, self.truth = self.simulator.frames(n)
            produced += len(batch)
            self.stats.bytes += batch.frames.nbytes
            self.stats.messages += 1
            self._idle()
            self.pacer.wait(produced)
            yield batch
