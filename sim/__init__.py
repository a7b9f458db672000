"""Simulated HEXITEC: photon sources, detector response, raw frames with truth, publishers.

>>> import hexspec as hx
>>> sim = hx.sim.HexitecSimulator(hx.sim.ComptonSource(li_content=0.6), seed=1)
>>> batch, truth = sim.frames(1000)      # FrameBatch (1000, 80, 80) uint16, SimTruth

Modules, in the order a photon meets them: ``sources`` (energy spectra: Am-241, Compton
scattering from an NMC811 cathode behind a pinhole), ``response`` (absorption depth, Cd/Te
K escape, charge cloud and its split over pixels, pile-up, next-frame spill, noise, gain,
14-bit readout), ``simulator`` (Poisson photons per frame, per-pixel calibration and
defects, truth), ``publish`` (live output through hexspec.drivers ZMQ and serial writers),
``cell`` (a virtual coin-cell cathode: pore structure, XCT projections, its Compton maps).

Transports: ``publish_frames(sim, hexspec.drivers.ZmqPublisher(...))`` or
``publish_frames(sim, hexspec.drivers.SerialWriter(port), rate_hz=9118.87)``; from the
shell, ``hexspec simulate`` and ``hexspec serve-sim``.
"""

from .publish import PublishStats, publish_frames
from .response import cloud_fwhm_um, pixel_fractions
from .simulator import HexitecSimulator, PhotonTruth, SimTruth
from .sources import Am241Source, ComptonSource

__all__ = ["Am241Source", "ComptonSource", "HexitecSimulator", "SimTruth", "PhotonTruth",
           "cloud_fwhm_um", "pixel_fractions", "publish_frames", "PublishStats"]
