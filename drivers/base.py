"""Frame sources: the common protocol, transfer statistics and URL option parsing.

A frame source is anything iterable over :class:`~hexspec.frames.FrameBatch` that
can be closed and reports how much it received and lost. Sources are opened by URL
with :func:`hexspec.drivers.open_source`; the table of URL schemes is in :mod:`.registry`,
which maps each scheme to its transport module (this module imports none of them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, ProtocolError
from ..frames import FrameBatch, GapCounter

log = logging.getLogger("hexspec.drivers")


@dataclass
class SourceStats:
    """What a source has received and lost so far.

    Attributes
    ----------
    frames : int
        Frames delivered to the caller.
    dropped : int
        Frames missing from the sequence of frame numbers (gaps), whatever the cause:
        lost upstream, dropped by a full queue, or rejected as corrupt here.
    corrupt : int
        Messages (ZMQ) or frames (serial) rejected because they broke the protocol.
    bytes : int
        Payload bytes received, including rejected ones.
    messages : int
        Messages or serial frames received, good or bad.
    skipped_bytes : int
        Bytes discarded while resynchronising (serial links).
    last_error : str
        Why the most recent corrupt message was rejected ("" if none was).
    not_sent : int
        Frames a sampling live view never sent (odin-data's decimated live view,
        ``per_second`` or ``frame_frequency``): gaps that are not losses, kept apart
        from ``dropped``.
    filtered : int
        Messages of another dataset than the one selected (ZMQ ``dataset=``).
    """

    frames: int = 0
    dropped: int = 0
    corrupt: int = 0
    bytes: int = 0
    messages: int = 0
    skipped_bytes: int = 0
    last_error: str = ""
    not_sent: int = 0
    filtered: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class FrameSource(Protocol):
    """Protocol every frame source follows.

    Iterating yields FrameBatch objects until the source ends (file exhausted, frame
    limit reached, receive timeout, or :meth:`close` called); ``stats`` is a
    :class:`SourceStats`; the source is a context manager that closes itself.
    """

    stats: SourceStats

    def __iter__(self) -> Iterator[FrameBatch]: ...

    def close(self) -> None: ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...


class BaseSource:
    """Context-manager and iteration plumbing shared by the concrete sources.

    Subclasses implement ``_batches()`` (a generator of FrameBatch) and ``_close()``;
    this class keeps ``stats`` and makes :meth:`close` idempotent and safe to call
    from a signal handler or another thread (iteration stops at the next batch).
    """

    def __init__(self, max_frames: int | None = None):
        self.stats = SourceStats()
        self.max_frames = None if max_frames is None else int(max_frames)
        #: called (in the iterating thread) whenever the source waits with nothing to
        #: deliver, at least every 0.1 s: the recorder flushes from here when data stop
        self.idle_hook = None
        self._closed = False
        self._gaps = GapCounter()

    # -- to implement -------------------------------------------------------------------
    def _batches(self) -> Iterator[FrameBatch]:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _idle(self) -> None:
        if self.idle_hook is not None:
            self.idle_hook()

    def _skip(self, exc, where: str = "") -> None:
        """Count one message rejected while decoding untrusted bytes, and log it.

        The one guard of the live loop: decoders call this for *any* exception the
        bytes of one message provoke (a ProtocolError naming the bad field, or whatever
        a hostile header makes the parser raise), so one message never ends a source.
        Only the first, second, fourth, eighth... are logged, so a flood of bad
        messages cannot flood the log.
        """
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        why = str(exc) if isinstance(exc, ProtocolError) else f"{type(exc).__name__}: {str(exc)[:200]}"
        self.stats.corrupt += 1
        self.stats.last_error = why
        if self.stats.corrupt & (self.stats.corrupt - 1) == 0:
            log.warning("%s: corrupt message #%d skipped: %s", where or type(self).__name__, self.stats.corrupt, why)

    # -- shared -------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def _count(self, batch: FrameBatch) -> None:
        self.stats.dropped += self._gaps.count(batch.frame_numbers)
        self.stats.frames += len(batch)

    def __iter__(self) -> Iterator[FrameBatch]:
        # a batch the generator yields after stop() was already received: deliver it
        for batch in self._batches():
            if self.max_frames is not None:
                left = self.max_frames - self.stats.frames
                if left <= 0:
                    return
                if len(batch) > left:
                    batch = batch[:left]
            if len(batch) == 0:
                continue
            self._count(batch)
            yield batch
            if self.max_frames is not None and self.stats.frames >= self.max_frames:
                return

    def stop(self) -> None:
        """Ask a running iteration to end at its next wake-up (safe from a signal handler)."""
        self._closed = True

    def close(self) -> None:
        """Release the socket, port or file. Idempotent."""
        already = getattr(self, "_released", False)
        self._closed = True
        if not already:
            self._released = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- URL parsing --------------------------------------------------------------------------

def parse_timeout(text, default):
    """Seconds from a URL query value; "0", "none" or "inf" mean wait without limit (None)."""
    if text is None:
        return default
    if str(text).lower() in ("none", "inf", "infinite", "forever"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"timeout: expected seconds (a number, or 'none'), found {text!r}") from None
    if value < 0 or math.isnan(value):
        raise ConfigError(f"timeout: expected seconds >= 0, found {text!r}")
    return None if value == 0 or math.isinf(value) else value


def query_options(url: str) -> tuple:
    """Split ``url`` into (scheme, rest-without-query, {key: last value})."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    rest = url.split("?", 1)[0]
    return parts.scheme.lower(), rest, query


def _int_option(query, key, default=None, minimum=None):
    if key not in query:
        return default
    try:
        value = int(query.pop(key))
    except ValueError:
        raise ConfigError(f"URL option {key}: expected an integer, found {query.get(key)!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"URL option {key}: expected an integer >= {minimum}, found {value}")
    return value


def _float_option(query, key, default=None):
    if key not in query:
        return default
    text = query.pop(key)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"URL option {key}: expected a number, found {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"URL option {key}: expected a positive number, found {text!r}")
    return value


def _shape_option(query, default=None):
    if "shape" not in query:
        return default
    text = query.pop("shape")
    try:
        rows, cols = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"URL option shape: expected ROWS,COLS, found {text!r}") from None
    return rows, cols


def _no_leftovers(url, query):
    if query:
        raise ConfigError(f"{url}: unknown option(s) {', '.join(sorted(query))}")
