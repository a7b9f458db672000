"""Frame sources: the common protocol, transfer statistics and opening a source by URL.

A frame source is anything iterable over :class:`~hexspec.frames.FrameBatch` that
can be closed and reports how much it received and lost. Sources are opened by URL
(DESIGN.md, public API):

=========================================  ==============================================
``tcp://HOST:PORT[?socket=sub|pull]``       odin-data live-view ZMQ stream (:mod:`.zmq`); also
                                            ``hwm``, ``max_message_bytes``, ``queue_bytes``
``ipc://PATH[?socket=...]``                 the same over a local socket
``serial://PORT?baud=..&timeout=s``         FORMATS.md serial framing (:mod:`.serial`)
``loop://``, ``socket://``, ``rfc2217://``  pyserial URLs, same framing
``file://PATH[?rate=fps]``                  GigE .bin, odin-data or hexspec HDF5 (:mod:`.files`)
``sim://?rate=fps&source=am241&seed=N``     the HEXITEC simulator (:mod:`hexspec.sim`)
=========================================  ==============================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, ProtocolError
from ..frames import FrameBatch

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
    """

    frames: int = 0
    dropped: int = 0
    corrupt: int = 0
    bytes: int = 0
    messages: int = 0
    skipped_bytes: int = 0
    last_error: str = ""

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


class GapCounter:
    """Counts frames missing from a stream of frame numbers.

    A batch whose first number is ahead of the expected one adds the difference to
    ``dropped``. A number that goes backwards means the detector restarted its
    acquisition (odin-data resets frame_num to 0), so counting restarts without
    counting anything dropped.
    """

    def __init__(self):
        self.expected = None
        self.dropped = 0

    def add(self, first: int, count: int, last: int | None = None) -> int:
        """Account for ``count`` frames starting at ``first``; return frames newly found missing.

        ``last`` is the number of the batch's last frame when the batch itself may
        have holes (default: ``first + count - 1``).
        """
        if last is None:
            last = first + count - 1
        missing = 0
        if self.expected is not None and first > self.expected:
            missing += first - self.expected
        missing += (last - first + 1) - count   # holes inside the batch
        self.dropped += missing
        self.expected = last + 1
        return missing


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
        fn = batch.frame_numbers
        if len(fn):
            self.stats.dropped += self._gaps.add(int(fn[0]), len(fn), int(fn[-1]))
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


_SERIAL_URL_SCHEMES = ("loop", "socket", "rfc2217", "spy", "alt", "hwgrep", "cp2110")


def open_source(url: str, *, shape=None, max_frames=None, timeout_s="default", **options):
    """Open a frame source by URL.

    Parameters
    ----------
    url : str
        One of the forms in this module's docstring. Query options (after ``?``)
        common to several sources: ``frames=N`` (stop after N frames), ``timeout=s``
        (end after this many seconds without data; 0 or ``none`` waits without limit
        but still stops when closed), ``batch=N`` (frames per yielded batch),
        ``shape=R,C`` (expected or, for headerless files, actual frame shape).
    shape : (rows, cols), optional
        Same as the ``shape`` option; the URL wins if both are given.
    max_frames : int, optional
        Same as ``frames``.
    timeout_s : float or None, optional
        Same as ``timeout``.
    **options
        Passed on to the source's constructor.

    Returns
    -------
    FrameSource
    """
    if "://" not in url:
        raise ConfigError(f"source {url!r}: expected a URL such as tcp://HOST:PORT, serial:///dev/ttyACM0, "
                          "file:///data/run.h5 or sim://")
    scheme, rest, query = query_options(url)
    shape = _shape_option(query, shape)
    max_frames = _int_option(query, "frames", max_frames, minimum=1)
    kw = dict(options)
    if "timeout" in query:
        kw["timeout_s"] = parse_timeout(query.pop("timeout"), None)
    elif timeout_s != "default":
        kw["timeout_s"] = timeout_s
    batch = _int_option(query, "batch", None, minimum=1)
    if batch is not None:
        kw["batch_frames"] = batch

    if scheme in ("tcp", "ipc", "inproc"):
        from .zmq import ZmqSource
        socket_type = query.pop("socket", "sub").upper()
        if "hwm" in query:
            kw["hwm"] = _int_option(query, "hwm", minimum=1)
        for key in ("max_message_bytes", "queue_bytes"):
            if key in query:
                kw[key] = _int_option(query, key, minimum=1)
        if "bind" in query:
            kw["bind"] = query.pop("bind").lower() in ("1", "true", "yes")
        _no_leftovers(url, query)
        return ZmqSource(rest, socket_type=socket_type, shape=shape, max_frames=max_frames, **kw)

    if scheme == "serial" or scheme in _SERIAL_URL_SCHEMES:
        from .serial import SerialSource
        baud = _int_option(query, "baud", 115200, minimum=1)
        if scheme == "serial":
            port = url.split("?", 1)[0][len("serial://"):]
            if not port:
                raise ConfigError(f"{url}: expected serial://PORT, e.g. serial:///dev/ttyACM0")
            _no_leftovers(url, query)
        else:
            port = url      # pyserial understands its own URL options
            query.clear()
        return SerialSource(port, baud=baud, shape=shape, max_frames=max_frames, **kw)

    if scheme == "file":
        from .files import FileSource
        path = url.split("?", 1)[0][len("file://"):]
        rate = _float_option(query, "rate", None)
        if "reorder" in query:
            kw["reorder"] = query.pop("reorder").lower() in ("1", "true", "yes")
        kw.pop("timeout_s", None)
        _no_leftovers(url, query)
        return FileSource(path, rate_hz=rate, shape=shape, max_frames=max_frames, **kw)

    if scheme == "sim":
        from .replay import SimSource
        rate = _float_option(query, "rate", None)
        photon_rate = _float_option(query, "photon_rate", None)
        name = query.pop("source", "am241")
        seed = _int_option(query, "seed", 0)
        kw.pop("timeout_s", None)
        _no_leftovers(url, query)
        return SimSource(source=name, rate_hz=rate, seed=seed, photon_rate_hz=photon_rate, shape=shape,
                         max_frames=max_frames, **kw)

    raise ConfigError(f"source {url!r}: unknown scheme {scheme!r} (expected tcp, ipc, serial, loop, file or sim)")

