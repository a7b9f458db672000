"""When the recorder flushes: at least every ``interval_s``, whatever the load.

The promise (DESIGN.md) is that two successive flushes complete at most ``interval_s``
apart while data arrive. A gap overshoots when a flush starts late (the thread that
would start it is not scheduled, or waits for the file) or when the flush itself is
slow. :class:`FlushSchedule` starts each flush early by a margin learnt from the
recent past: the longest of the last few flushes (measured from the moment the flusher
meant to start, so waiting for the file counts) and the longest recent lateness of the
flusher thread's wake-ups. :class:`FlusherThread` sleeps until that start time and
flushes, independently of the thread receiving frames, which may be busy in an event
kernel, in a socket, or simply not scheduled.

The schedule also keeps the completion time of every recent flush, so the promise can
be checked from the outside (``Recorder.flush_times``, ``Recorder.longest_flush_gap_s``).
"""

from __future__ import annotations

import threading
import time
from collections import deque

#: Recent flushes (and wake-ups) the margin is learnt from: about half a minute, so one
#: slow flush keeps the margin wide long enough to cover the next slow one
HISTORY = 30
#: Until this many flushes are known, start each at least STARTUP_MARGIN intervals early
STARTUP_FLUSHES = 3
STARTUP_MARGIN = 0.15
#: Completion times kept for inspection (about an hour at one flush a second)
KEEP_TIMES = 4096


class FlushSchedule:
    """Flush times so far and when the next flush must start.

    Parameters
    ----------
    interval_s : float
        Longest allowed time between the completions of two flushes.
    """

    def __init__(self, interval_s: float):
        self.interval_s = float(interval_s)
        self.last_flush = time.monotonic()      # completion of the last flush (creation at first)
        self.times = deque(maxlen=KEEP_TIMES)   # completion times (time.monotonic, s)
        self.longest_gap_s = 0.0                # longest time between two completions
        self._durations = deque(maxlen=HISTORY)
        self._lateness = deque(maxlen=HISTORY)

    @property
    def margin_s(self) -> float:
        """How early before the deadline a flush starts (at most half the interval)."""
        slow = max(self._durations, default=0.0)
        late = max(self._lateness, default=0.0)
        margin = 2.0 * slow + late + 0.02
        if len(self._durations) < STARTUP_FLUSHES:
            # nothing learnt yet (the first flushes of a file are also the slowest)
            margin = max(margin, STARTUP_MARGIN * self.interval_s)
        return min(margin, 0.5 * self.interval_s)

    @property
    def start_at(self) -> float:
        """When (time.monotonic) the next flush should start."""
        return self.last_flush + self.interval_s - self.margin_s

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.start_at

    def woke(self, lateness_s: float) -> None:
        """The flusher woke ``lateness_s`` after the time it asked for."""
        self._lateness.append(max(0.0, lateness_s))

    def done(self, started: float, finished: float) -> None:
        """A flush meant to start at ``started`` completed at ``finished``."""
        self._durations.append(max(0.0, finished - started))
        if self.times:
            self.longest_gap_s = max(self.longest_gap_s, finished - self.times[-1])
        self.times.append(finished)
        self.last_flush = finished


class FlusherThread(threading.Thread):
    """Flush through ``flush(started)`` whenever ``schedule`` says so, until :meth:`stop`.

    ``flush(started)`` flushes if something is unflushed and returns True if it did;
    ``started`` is when the attempt began (for the schedule). A False return (nothing to
    flush) makes the thread look again a little later. If ``flush`` raises, the thread
    ends and the exception is kept in :attr:`error` (the owner reports it at its next call).
    """

    def __init__(self, schedule: FlushSchedule, flush, idle_s: float = 0.05):
        super().__init__(name="hexspec-flusher", daemon=True)
        self.schedule = schedule
        self._flush = flush
        self._idle_s = idle_s
        self._stopping = threading.Event()
        self.error = None

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            target = self.schedule.start_at
            wait = target - time.monotonic()
            if wait > 0:
                # wake at the start time, or sooner to notice a flush made by another thread
                self._stopping.wait(min(wait, 0.25))
                now = time.monotonic()
                if now < self.schedule.start_at:
                    continue
                if wait <= 0.25:
                    self.schedule.woke(now - target)
            started = time.monotonic()
            try:
                flushed = self._flush(started)
            except Exception as exc:     # the owner raises it where it can be reported
                self.error = exc
                return
            if not flushed:
                self._stopping.wait(self._idle_s)
