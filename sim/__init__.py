"""Simulated HEXITEC: photon sources, detector response, raw frames with truth, publishers.

>>> import hexspec as hx
>>> sim = hx.sim.HexitecSimulator(hx.sim.ComptonSource(li_content=0.6), seed=1)
>>> batch, truth = sim.frames(1000)      # FrameBatch (1000, 80, 80) uint16, SimTruth
"""

from .response import cloud_fwhm_um, pixel_fractions
from .simulator import HexitecSimulator, PhotonTruth, SimTruth
from .sources import Am241Source, ComptonSource

__all__ = ["Am241Source", "ComptonSource", "HexitecSimulator", "SimTruth", "PhotonTruth",
           "cloud_fwhm_um", "pixel_fractions", "publish_frames"]


def __getattr__(name):
    # Publishers pull in the drivers (pyzmq, pyserial); load them only when asked for.
    if name in ("publish_frames", "publish"):
        from . import publish
        return publish if name == "publish" else publish.publish_frames
    raise AttributeError(f"module 'hexspec.sim' has no attribute {name!r}")
