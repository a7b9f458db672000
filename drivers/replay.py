"""The simulator as a frame source: :class:`SimSource` is what ``sim://`` opens.

Frames are paced by :class:`~hexspec.drivers.pacer.Pacer` (re-exported here).
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import BaseSource
from .pacer import Pacer

__all__ = ["Pacer", "SimSource", "SIM_SOURCES"]


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
