"""Publish simulated frames live: over ZMQ (odin-data live-view format) or a serial link.

The transports themselves are hexspec.drivers.ZmqPublisher and SerialWriter; this module
only feeds them from a simulator at a chosen frame rate (or as fast as possible).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class PublishStats:
    """What :func:`publish_frames` sent: frames, photons simulated, wall time in seconds, final lag."""

    frames: int = 0
    photons: int = 0
    elapsed_s: float = 0.0
    lag_s: float = 0.0

    @property
    def frame_rate_hz(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


def publish_frames(simulator, sink, rate_hz=None, n_frames=None, batch_frames=1000, stop=None, on_batch=None):
    """Send simulated frames to ``sink`` until ``n_frames`` are out or ``stop`` says so.

    Parameters
    ----------
    simulator : HexitecSimulator
    sink : object with ``send(FrameBatch)``
        ``hexspec.drivers.ZmqPublisher`` or ``hexspec.drivers.SerialWriter``.
    rate_hz : float, optional
        Frame rate to hold (frame k leaves no earlier than k / rate_hz after the start);
        None or 0: as fast as the simulator and the link allow.
    n_frames : int, optional
        Frames to send; None: until stopped.
    batch_frames : int
        Largest batch simulated and sent at once; when paced, batches shrink so that they
        leave about 20 times a second.
    stop : threading.Event or callable, optional
        Checked before each batch; set (or returning True) ends publishing.
    on_batch : callable, optional
        Called as ``on_batch(stats)`` after each batch (progress display).

    Returns
    -------
    PublishStats
    """
    from ..drivers.pacer import Pacer

    if n_frames is not None and n_frames < 0:
        raise ConfigError(f"publish_frames: n_frames must be >= 0, found {n_frames}")
    pacer = Pacer(rate_hz if rate_hz else None)
    size = pacer.batch_size(max(1, int(batch_frames)))
    stopped = (stop.is_set if hasattr(stop, "is_set") else stop) or (lambda: False)
    stats = PublishStats()
    start = time.monotonic()
    while not stopped() and (n_frames is None or stats.frames < n_frames):
        k = size if n_frames is None else min(size, n_frames - stats.frames)
        batch, truth = simulator.frames(k)
        # Hold the batch until its first frame is due, so paced streams never run ahead.
        pacer.wait(stats.frames)
        sink.send(batch)
        stats.frames += k
        stats.photons += truth.n_incident
        stats.elapsed_s = time.monotonic() - start
        stats.lag_s = pacer.lag_s
        if on_batch is not None:
            on_batch(stats)
    stats.elapsed_s = time.monotonic() - start
    return stats
