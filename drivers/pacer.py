"""Pacing: hold a stream of frames to a chosen frame rate.

A file replayed "as if live", the simulator at the HEXITEC's 9118.87 Hz, a publisher
of simulated frames: each asks a :class:`Pacer` when the next frame is due.
"""

from __future__ import annotations

import time

from ..errors import ConfigError


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
