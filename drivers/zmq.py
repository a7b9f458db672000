"""ZMQ frame stream in the odin-data live-view format (FORMATS.md, "ZMQ frame stream").

Each message has two parts: a UTF-8 JSON header and the frame bytes (little-endian,
C order). A message may carry k frames with shape [k, R, C]; its ``frame_num`` is
then the first frame's number and the others follow consecutively.

:class:`ZmqSource` connects a SUB socket (odin-data live view; may drop frames under
load, which shows as gaps in frame_num and is counted as dropped) or a PULL socket
(lossless pipelines: the sender blocks instead of dropping). :class:`ZmqPublisher`
binds a PUB or PUSH socket and emits the same format.
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import zmq

from ..errors import ConfigError, ProtocolError
from ..frames import FrameBatch
from .base import BaseSource

log = logging.getLogger("hexspec.drivers.zmq")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5020"

#: dtypes accepted on the wire (odin-data frame types); anything else is corrupt.
#: Values must still be whole numbers 0..65535 to become a FrameBatch.
WIRE_DTYPES = {
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "float32": np.dtype("<f4"),
    "float": np.dtype("<f4"),     # odin-data's name for float32 (FrameProcessorDefinitions.h)
}

#: Compressions decoded (header "compression", any case). odin-data sends a compressed
#: frame as the chunk its HDF5 filter would store: "blosc" a Blosc frame (filter 32001),
#: "lz4" the HDF5 LZ4 filter's blocks (32004), "bslz4" bitshuffle+LZ4 (32008).
#: "unknown" is what odin-data sends for frames no plugin compressed: accepted as
#: uncompressed when dsize equals the raw size.
COMPRESSED = ("blosc", "lz4", "bslz4")

#: Largest message payload accepted (bytes): a header claiming more is corrupt,
#: whatever the actual payload, so a bad header can never make us allocate gigabytes.
#: Receiving sockets also set ZMQ_MAXMSGSIZE to this, so ZMQ itself refuses (and
#: disconnects) a sender of a bigger message part before buffering it.
MAX_PAYLOAD_BYTES = 1 << 30

#: Longest JSON header accepted (bytes); odin-data's are about 200.
MAX_HEADER_BYTES = 1 << 16

#: Largest size of one axis in a shape; with MAX_PAYLOAD_BYTES it bounds every product.
MAX_AXIS = 1 << 24

#: Messages queued per socket before ZMQ drops (PUB/SUB) or blocks the sender
#: (PUSH/PULL). 1000 single 80x80 frames is ~13 MB and ~0.1 s of a HEXITEC at
#: 9 kHz: enough to ride out a pause of the consumer, small enough that a stalled
#: live view cannot eat the memory of the acquisition machine.
DEFAULT_HWM = 1000



def _attach(socket, endpoint: str, bind: bool, who: str) -> str:
    """Bind or connect ``socket``; returns the endpoint in use (a wildcard port resolved).

    On failure the socket is closed and a ProtocolError names the endpoint.
    """
    try:
        if bind:
            socket.bind(endpoint)
            return socket.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        socket.connect(endpoint)
        return endpoint
    except zmq.ZMQError as exc:
        socket.close(0)
        raise ProtocolError(f"{who}: cannot {'bind' if bind else 'connect'} {endpoint}: {exc}") from None


def encode_header(frame_num: int, shape, dtype="uint16", acquisition_id: str = "",
                  dataset: str = "raw_frames") -> bytes:
    """JSON header of one message, with shape entries as strings as odin-data sends them."""
    dtype = np.dtype(dtype).name
    shape = [int(s) for s in shape]
    header = {
        "frame_num": int(frame_num),
        "acquisition_id": acquisition_id,
        "dtype": dtype,
        "dsize": int(np.prod(shape)) * np.dtype(dtype).itemsize,
        "dataset": dataset,
        "compression": "none",
        "shape": [str(s) for s in shape],
    }
    return json.dumps(header).encode("utf-8")


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _shape_entries(raw, frame_num):
    where = f" (frame {frame_num})"
    if not isinstance(raw, list) or not 2 <= len(raw) <= 3:
        raise ProtocolError(f"shape: expected a list of 2 or 3 sizes, found {_short(raw)}{where}")
    shape = []
    for s in raw:
        if isinstance(s, bool):
            raise ProtocolError(f"shape: expected integer sizes, found {_short(raw)}{where}")
        if isinstance(s, str):
            s = s.strip()
            # ASCII digits only ("²".isdigit() is true), and few enough to be a size
            if not (s.isascii() and s.isdigit() and len(s) <= 9):
                raise ProtocolError(f"shape: expected integer sizes up to {MAX_AXIS}, found {_short(raw)}{where}")
            s = int(s)
        if not isinstance(s, int) or not 0 < s <= MAX_AXIS:
            raise ProtocolError(f"shape: expected integer sizes 1..{MAX_AXIS}, found {_short(raw)}{where}")
        shape.append(s)
    return tuple(shape)


def decode_message(parts, expected_shape=None, max_payload_bytes: int = MAX_PAYLOAD_BYTES):
    """Validate one two-part message and return ``(header, frames)``.

    Parameters
    ----------
    parts : list of bytes-like
        The message parts as received.
    expected_shape : (rows, cols), optional
        Reject frames of any other shape.
    max_payload_bytes : int
        Reject a header declaring a bigger payload (default :data:`MAX_PAYLOAD_BYTES`).

    Returns
    -------
    header : dict
        The parsed JSON header.
    frames : ndarray, shape (k, rows, cols), uint16
        The frames (k = 1 for a 2-D shape); a view of the payload when it was uint16.

    Raises
    ------
    ProtocolError
        Naming the field that is wrong, what was expected and what was found.
    """
    if len(parts) != 2:
        raise ProtocolError(f"expected a 2-part message (JSON header, frame), found {len(parts)} parts")
    if memoryview(parts[0]).nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header: at most {MAX_HEADER_BYTES} bytes of JSON accepted, "
                            f"found {memoryview(parts[0]).nbytes}")
    try:
        header = json.loads(bytes(parts[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header: expected a JSON object, found {type(header).__name__}")
    frame_num = header.get("frame_num")
    # frame numbers are stored as int64
    if isinstance(frame_num, bool) or not isinstance(frame_num, int) or not 0 <= frame_num < 1 << 63:
        raise ProtocolError(f"frame_num: expected an integer 0..2^63-1, found {_short(frame_num)}")
    dtype_name = header.get("dtype")
    if not isinstance(dtype_name, str) or dtype_name not in WIRE_DTYPES:
        raise ProtocolError(f"dtype: expected one of {sorted(WIRE_DTYPES)}, found {_short(dtype_name)} (frame {frame_num})")
    dtype = WIRE_DTYPES[dtype_name]
    compression = header.get("compression", "none")
    if compression in (None, ""):
        compression = "none"
    if not isinstance(compression, str) or compression.lower() not in ("none", "unknown") + COMPRESSED:
        raise ProtocolError(f"compression: expected one of none, unknown, {', '.join(COMPRESSED)}, "
                            f"found {_short(compression)} (frame {frame_num})")
    compression = compression.lower()
    shape = _shape_entries(header.get("shape"), frame_num)
    dsize = header.get("dsize")
    if isinstance(dsize, bool) or not isinstance(dsize, int):
        raise ProtocolError(f"dsize: expected an integer byte count, found {_short(dsize)} (frame {frame_num})")
    expected_bytes = math.prod(shape) * dtype.itemsize      # Python integers: no wrap-around
    if expected_bytes > max_payload_bytes:
        raise ProtocolError(f"shape: {list(shape)} of {dtype_name} is {expected_bytes} bytes, at most "
                            f"{max_payload_bytes} accepted (frame {frame_num})")
    if compression in ("none", "unknown") and dsize != expected_bytes:
        what = "" if compression == "none" else " (compression 'unknown' is read as uncompressed only then)"
        raise ProtocolError(f"dsize: expected prod(shape {list(shape)}) * {dtype.itemsize} = {expected_bytes} bytes"
                            f"{what}, found {_short(dsize)} (frame {frame_num})")
    if dsize > max_payload_bytes:
        raise ProtocolError(f"dsize: at most {max_payload_bytes} bytes accepted, found {dsize} (frame {frame_num})")
    payload = memoryview(parts[1])
    if payload.nbytes != dsize:
        raise ProtocolError(f"payload: header says dsize {dsize} bytes, part 2 has {payload.nbytes} (frame {frame_num})")
    if expected_shape is not None and tuple(shape[-2:]) != tuple(expected_shape):
        raise ProtocolError(f"shape: expected frames of {tuple(expected_shape)}, found {list(shape)} (frame {frame_num})")
    if compression in COMPRESSED:
        from .zmq_codecs import decompress
        frames = decompress(compression, payload, shape, dtype, frame_num).reshape((1,) * (3 - len(shape)) + shape)
    else:
        frames = np.frombuffer(payload, dtype=dtype).reshape((1,) * (3 - len(shape)) + shape)
    if dtype != np.dtype("<u2"):
        if not np.all((frames >= 0) & (frames <= 65535) & (frames == np.floor(frames))):
            raise ProtocolError(f"data: {dtype_name} values are not whole ADU in 0..65535 (frame {frame_num})")
        frames = frames.astype(np.uint16)
    header["shape"] = list(shape)
    return header, frames


class ZmqPublisher:
    """Send FrameBatch objects as odin-data live-view messages.

    Parameters
    ----------
    endpoint : str
        ZMQ endpoint; by default bound (``tcp://127.0.0.1:5020``: loopback only unless
        told otherwise, DESIGN.md).
    socket_type : {"PUB", "PUSH"}
        PUB (live view; drops when a subscriber is slow) or PUSH (lossless; a send
        waits until a PULL peer takes the message).
    frames_per_message : int, optional
        Frames packed into one message (shape [k, R, C]). 1 (default) sends each
        frame as a 2-D message exactly as odin-data does; larger values cut the
        per-message overhead for hexspec-to-hexspec links.
    acquisition_id : str
        Written into every header.
    hwm : int
        Send high-water mark in messages (see :data:`DEFAULT_HWM`).
    bind : bool
        Bind (default, as FORMATS.md asks of a publisher) or connect.
    send_timeout_s : float or None
        With PUSH, how long :meth:`send` may wait for a receiver before raising
        ProtocolError; None (default) waits: backpressure is what makes PUSH lossless.
    linger_s : float, optional
        How long :meth:`close` waits for queued messages to leave before discarding
        them (default 1 s for PUB, whose subscribers may drop anyway, 10 s for PUSH).
    context : zmq.Context, optional

    Attributes
    ----------
    frames_sent, messages_sent : int
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, socket_type: str = "PUB", frames_per_message: int = 1,
                 acquisition_id: str = "", hwm: int = DEFAULT_HWM, bind: bool = True,
                 send_timeout_s: float | None = None, linger_s: float | None = None, context=None):
        socket_type = socket_type.upper()
        if socket_type not in ("PUB", "PUSH"):
            raise ConfigError(f"ZmqPublisher: socket_type must be 'PUB' or 'PUSH', found {socket_type!r}")
        if int(frames_per_message) < 1:
            raise ConfigError(f"ZmqPublisher: frames_per_message must be >= 1, found {frames_per_message}")
        self.endpoint = endpoint
        self.socket_type = socket_type
        self.frames_per_message = int(frames_per_message)
        self.acquisition_id = acquisition_id
        self.frames_sent = 0
        self.messages_sent = 0
        # a context of its own, so close() can wait for the queued messages to leave
        # (terminating a context waits; closing a socket does not)
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket = self._context.socket(getattr(zmq, socket_type))
        self._socket.setsockopt(zmq.SNDHWM, int(hwm))
        if linger_s is None:
            linger_s = 1.0 if socket_type == "PUB" else 10.0
        self._socket.setsockopt(zmq.LINGER, int(linger_s * 1000))
        if send_timeout_s is not None:
            self._socket.setsockopt(zmq.SNDTIMEO, int(send_timeout_s * 1000))
        try:
            self.endpoint = _attach(self._socket, endpoint, bind, "ZmqPublisher")
        except ProtocolError:
            if self._own_context:
                self._context.term()
            raise

    def send(self, batch, frames_per_message: int | None = None) -> int:
        """Send every frame of ``batch``; return the number of frames sent.

        ``batch`` is a FrameBatch or an array (k, R, C) / (R, C) of uint16 (frame
        numbers then count on from the last frame sent).
        """
        if not isinstance(batch, FrameBatch):
            batch = FrameBatch(batch, np.arange(len(np.atleast_3d(batch)) if np.ndim(batch) == 3 else 1)
                               + self.frames_sent)
        k = int(frames_per_message or self.frames_per_message)
        frames = batch.frames
        numbers = batch.frame_numbers
        n = len(batch)
        start = 0
        while start < n:
            stop = min(n, start + k)
            # only frames with consecutive numbers may share a message (frame_num is the first)
            run = np.flatnonzero(np.diff(numbers[start:stop]) != 1)
            if run.size:
                stop = start + int(run[0]) + 1
            block = frames[start:stop] if stop - start > 1 else frames[start]
            header = encode_header(numbers[start], block.shape, "uint16", self.acquisition_id)
            payload = np.ascontiguousarray(block, dtype="<u2")
            try:
                # copied into ZMQ's own buffer: a zero-copy send would leave ZMQ's I/O thread
                # reading numpy memory after close()/interpreter exit (EFAULT), and a memcpy
                # of even a 100-frame message costs ~0.1 ms
                self._socket.send_multipart([header, payload], copy=True)
            except zmq.Again:
                raise ProtocolError(f"ZmqPublisher: no receiver took frame {numbers[start]} on {self.endpoint} "
                                    "within the send timeout") from None
            self.messages_sent += 1
            self.frames_sent += stop - start
            start = stop
        return n

    def close(self, linger_s: float | None = None) -> None:
        """Close the socket, waiting up to ``linger_s`` (default: the constructor's) for queued messages."""
        if not self._socket.closed:
            if linger_s is not None:
                self._socket.setsockopt(zmq.LINGER, int(linger_s * 1000))
            self._socket.close()
            if self._own_context:
                self._context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ZmqSource(BaseSource):
    """Receive frames from an odin-data live-view (or hexspec) ZMQ stream.

    Parameters
    ----------
    endpoint : str
        Where the publisher is (default ``tcp://127.0.0.1:5020``).
    socket_type : {"SUB", "PULL"}
        SUB for a live-view publisher (gaps under load are counted as dropped),
        PULL for a lossless PUSH pipeline.
    timeout_s : float or None
        End iteration after this many seconds without any message (default 10);
        None waits without limit but still wakes every 0.1 s to notice :meth:`close`.
    batch_frames : int
        Frames gathered into one yielded FrameBatch (default 1000): messages already
        queued are drained without waiting, so a batch is never held back waiting
        for more.
    max_latency_s : float
        Longest time a partly filled batch is held while more messages arrive.
    shape : (rows, cols), optional
        Reject (count as corrupt) frames of any other shape.
    hwm : int
        Receive high-water mark in messages (see :data:`DEFAULT_HWM`).
    bind : bool
        Bind instead of connecting (when the sender connects).
    max_frames : int, optional
        Stop after this many frames.
    dataset : str, optional
        Take only messages of this dataset (URL ``dataset=raw_frames``); others are
        counted in ``stats.filtered``. By default the first dataset seen is taken, and
        raw_frames once it appears beside another, so float and uint16 frames of one
        socket never mix.
    sampled : {"auto", "yes", "no"}
        Whether gaps in frame numbers are a sampling live view's frames never sent
        (``stats.not_sent``) or losses (``stats.dropped``). "auto" (default): on a SUB
        socket, sampled while most message-to-message steps skip frames (a decimated
        odin-data live view, ``per_second`` or ``frame_frequency``); a PULL pipeline's
        gaps are always losses.
    max_message_bytes : int
        Largest payload accepted (ZMQ_MAXMSGSIZE is set to it plus room for the
        header, so ZMQ disconnects a sender of anything bigger before buffering it).
    queue_bytes : int, optional
        Bound on the memory of the receive queue: the high-water mark becomes at most
        ``queue_bytes // max_message_bytes`` messages.
    drain_s : float
        When :meth:`stop` is called, messages already queued are still received and
        delivered for up to this long (the sender of a PUSH pipeline considers them
        delivered); any left after that are received and counted as dropped.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, socket_type: str = "SUB", timeout_s: float | None = 10.0,
                 batch_frames: int = 1000, max_latency_s: float = 0.05, shape=None, hwm: int = DEFAULT_HWM,
                 bind: bool = False, max_frames: int | None = None, context=None, dataset: str | None = None,
                 sampled: str = "auto", max_message_bytes: int = MAX_PAYLOAD_BYTES, queue_bytes: int | None = None,
                 drain_s: float = 0.5):
        super().__init__(max_frames)
        if sampled not in ("auto", "yes", "no"):
            raise ConfigError(f"ZmqSource: sampled must be 'auto', 'yes' or 'no', found {sampled!r}")
        self.dataset = dataset
        self._dataset_auto = dataset is None
        self.sampled = sampled
        # gap bookkeeping for the sampled/lost decision: frames missing, and message
        # steps that skipped frames or did not
        self._gap_frames = 0
        self._steps_skipping = 0
        self._steps_consecutive = 0
        socket_type = socket_type.upper()
        if socket_type not in ("SUB", "PULL"):
            raise ConfigError(f"ZmqSource: socket must be 'sub' or 'pull', found {socket_type.lower()!r}")
        self.endpoint = endpoint
        self.socket_type = socket_type
        self.timeout_s = timeout_s
        self.batch_frames = max(1, int(batch_frames))
        self.max_latency_s = float(max_latency_s)
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))
        self._acquisition_id = None
        self.max_message_bytes = int(max_message_bytes)
        self.drain_s = float(drain_s)
        if queue_bytes is not None:
            hwm = max(1, min(int(hwm), int(queue_bytes) // self.max_message_bytes))
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(getattr(zmq, socket_type))
        self._socket.setsockopt(zmq.RCVHWM, int(hwm))
        self._socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + MAX_HEADER_BYTES)
        self._socket.setsockopt(zmq.LINGER, 0)
        if socket_type == "SUB":
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoint = _attach(self._socket, endpoint, bind, "ZmqSource")
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)

    def _receive(self, wait_s):
        """One message's parts, or None if none arrived within ``wait_s`` (0: do not wait)."""
        # try first, poll only when nothing is queued: under load the poll syscall per
        # message would cost more than the decoding
        try:
            return self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass
        if wait_s <= 0 or not self._poller.poll(max(1, int(wait_s * 1000))):
            return None
        try:
            return self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None

    def _decode(self, parts):
        """Validated (frame_num, frames) or None; bad messages are counted and logged."""
        self.stats.messages += 1
        self.stats.bytes += sum(len(p.buffer) for p in parts)
        try:
            header, frames = decode_message([p.buffer for p in parts], self.shape, self.max_message_bytes)
            name = header.get("dataset")
            if name is not None and not self._wanted(str(name)):
                self.stats.filtered += 1
                return None
            acq = header.get("acquisition_id")
            if not isinstance(acq, (str, type(None))):
                acq = repr(acq)[:80]
            if acq != self._acquisition_id:
                self._frame_shape = None       # a new acquisition may have another frame shape
            if self._frame_shape is None:
                self._frame_shape = frames.shape[1:]
            elif frames.shape[1:] != self._frame_shape:
                raise ProtocolError(f"shape: expected frames of {self._frame_shape} as before, found "
                                    f"{list(frames.shape[1:])} (frame {header['frame_num']})")
        except Exception as exc:        # anything untrusted bytes can raise: count it, skip it
            self._skip(exc, self.endpoint)
            return None
        if acq != self._acquisition_id:
            if self._acquisition_id is not None:
                self._gaps.expected = None     # a new acquisition restarts frame numbering
            self._acquisition_id = acq
        return header["frame_num"], frames

    def _wanted(self, name: str) -> bool:
        """Whether a message of dataset ``name`` is taken (see the ``dataset`` parameter)."""
        if self.dataset is None:
            self.dataset = name
        if name == self.dataset:
            return True
        if self._dataset_auto and name == "raw_frames":
            log.info("%s: datasets %r and 'raw_frames' on one socket: taking raw_frames only (dataset= selects)",
                     self.endpoint, self.dataset)
            self.dataset = name
            return True
        return False

    def _is_sampled(self) -> bool:
        if self.sampled != "auto":
            return self.sampled == "yes"
        return self.socket_type == "SUB" and self._steps_skipping > self._steps_consecutive

    _frame_shape = None

    def _batches(self):
        yield from self._receive_until_closed()
        if not getattr(self, "_released", False) and not self._socket.closed:
            yield from self._drain()

    def _drain(self):
        """After stop(): deliver what is already queued, then count what is left as dropped."""
        deadline = time.monotonic() + self.drain_s
        pending, pending_frames = [], 0
        while time.monotonic() < deadline:
            parts = self._receive(0.02)
            if parts is None:
                break
            decoded = self._decode(parts)
            if decoded is None:
                continue
            if pending and decoded[1].shape[1:] != pending[0][1].shape[1:] or pending_frames >= self.batch_frames:
                yield self._join(pending)
                pending, pending_frames = [], 0
            pending.append(decoded)
            pending_frames += decoded[1].shape[0]
        if pending:
            yield self._join(pending)
        left = 0
        stop_counting = time.monotonic() + self.drain_s
        while time.monotonic() < stop_counting:
            parts = self._receive(0)
            if parts is None:
                break
            left += 1
            self.stats.messages += 1
        if left:
            self.stats.dropped += left     # frames: at least one per message left in the queue
            log.warning("%s: %d queued messages left unread when stopped (counted as dropped)", self.endpoint, left)

    def _receive_until_closed(self):
        poll_s = 0.1
        idle_since = time.monotonic()
        pending = []         # (frame_num, frames) waiting to be joined into one batch
        pending_frames = 0
        held_since = 0.0
        while not self._closed:
            if pending:
                wait_s = max(0.0, self.max_latency_s - (time.monotonic() - held_since))
            else:
                wait_s = poll_s
            parts = self._receive(wait_s)
            if parts is None:
                if pending:
                    yield self._join(pending)
                    pending, pending_frames = [], 0
                    continue
                self._idle()
                if self.timeout_s is not None and time.monotonic() - idle_since > self.timeout_s:
                    log.info("%s: no message for %.1f s, ending", self.endpoint, self.timeout_s)
                    return
                continue
            idle_since = time.monotonic()
            decoded = self._decode(parts)
            if decoded is None:
                continue
            if pending and decoded[1].shape[1:] != pending[0][1].shape[1:]:
                yield self._join(pending)
                pending, pending_frames = [], 0
            if not pending:
                held_since = idle_since
            pending.append(decoded)
            pending_frames += decoded[1].shape[0]
            full = pending_frames >= self.batch_frames
            enough = self.max_frames is not None and self.stats.frames + pending_frames >= self.max_frames
            if full or enough:
                yield self._join(pending)
                pending, pending_frames = [], 0
        if pending:
            yield self._join(pending)

    @staticmethod
    def _join(pending):
        if len(pending) == 1:
            first, frames = pending[0]
            if frames.flags.writeable:
                return FrameBatch(frames, np.arange(first, first + frames.shape[0]))
        total = sum(f.shape[0] for _, f in pending)
        frames = np.empty((total,) + pending[0][1].shape[1:], dtype=np.uint16)
        numbers = np.empty(total, dtype=np.int64)
        at = 0
        for first, f in pending:
            k = f.shape[0]
            frames[at:at + k] = f
            numbers[at:at + k] = np.arange(first, first + k)
            at += k
        return FrameBatch(frames, numbers)

    def _count(self, batch):
        # frame numbers may restart inside a joined batch (new acquisition), so count
        # gaps message-run by message-run rather than over the whole batch
        fn = batch.frame_numbers
        breaks = np.flatnonzero(np.diff(fn) != 1) + 1
        start = 0
        for stop in list(breaks) + [len(fn)]:
            had = self._gaps.expected is not None
            missing = self._gaps.add(int(fn[start]), int(stop - start))
            if had:
                self._steps_skipping += missing > 0
                self._steps_consecutive += missing == 0
            self._steps_consecutive += int(stop - start) - 1
            self._gap_frames += missing
            start = stop
        # the gaps so far are all of one kind: decided again as the stream shows its pattern
        if self._is_sampled():
            self.stats.not_sent, self.stats.dropped = self._gap_frames, 0
        else:
            self.stats.not_sent, self.stats.dropped = 0, self._gap_frames
        self.stats.frames += len(batch)

    def _close(self):
        if not self._socket.closed:
            self._socket.close(0)
