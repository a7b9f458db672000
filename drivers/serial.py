"""Serial frame stream (FORMATS.md, "Serial frame stream").

Each frame travels as::

    sync    4 bytes  EB 90 48 58
    header 16 bytes  <u32 frame_number, u16 rows, u16 cols, u8 encoding, u8 flags, u16 reserved, u32 payload_length>
    payload          encoding 0: rows*cols little-endian uint16 (dense)
                     encoding 1: n * (u16 pixel index, u16 value) (sparse; pixels not listed are 0)
    crc     4 bytes  zlib.crc32(header + payload), little-endian

:class:`FrameParser` turns arbitrary chunks of bytes into frames: it resynchronises on
the sync word after anything it cannot use (garbage, impossible header, bad CRC,
frame cut short), and counts what it rejected. :class:`SerialSource` feeds it from a
pyserial port (device, pseudo-terminal or pyserial URL such as ``loop://``);
:class:`SerialWriter` is the matching sender, used by the simulator.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib

import numpy as np

from ..errors import ConfigError, ProtocolError
from ..frames import FrameBatch
from .base import BaseSource

log = logging.getLogger("hexspec.drivers.serial")

SYNC = b"\xeb\x90\x48\x58"
HEADER = struct.Struct("<IHHBBHI")
CRC = struct.Struct("<I")
DENSE, SPARSE = 0, 1
#: Largest frame side accepted; a header claiming more is treated as corrupt.
MAX_SIDE = 4096
#: Sparse indices are u16, so sparse frames can address at most this many pixels.
MAX_SPARSE_PIXELS = 1 << 16
_FRAME_OVERHEAD = len(SYNC) + HEADER.size + CRC.size


def encode_frame(frame, frame_number: int, encoding: str = "auto", flags: int = 0) -> bytes:
    """Bytes of one frame on the wire.

    Parameters
    ----------
    frame : array_like, shape (rows, cols), uint16
    frame_number : int
        Sent modulo 2**32 (the header field is u32).
    encoding : {"auto", "dense", "sparse"}
        "auto" sends sparse when that is shorter and the frame has at most 65536
        pixels (sparse indices are u16), dense otherwise.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ConfigError(f"encode_frame: expected one (rows, cols) frame, found shape {frame.shape}")
    rows, cols = frame.shape
    flat = np.ascontiguousarray(frame, dtype="<u2").reshape(-1)
    if encoding == "auto":
        nonzero = np.count_nonzero(flat)
        encoding = "sparse" if (flat.size <= MAX_SPARSE_PIXELS and nonzero * 4 < flat.size * 2) else "dense"
    if encoding == "dense":
        code, payload = DENSE, flat.tobytes()
    elif encoding == "sparse":
        if flat.size > MAX_SPARSE_PIXELS:
            raise ConfigError(f"encode_frame: sparse encoding addresses at most {MAX_SPARSE_PIXELS} pixels "
                              f"(u16 index), frame has {flat.size}")
        index = np.flatnonzero(flat)
        pairs = np.empty((index.size, 2), dtype="<u2")
        pairs[:, 0] = index
        pairs[:, 1] = flat[index]
        code, payload = SPARSE, pairs.tobytes()
    else:
        raise ConfigError(f"encode_frame: encoding must be 'auto', 'dense' or 'sparse', found {encoding!r}")
    header = HEADER.pack(int(frame_number) & 0xFFFFFFFF, rows, cols, code, flags & 0xFF, 0, len(payload))
    return b"".join((SYNC, header, payload, CRC.pack(zlib.crc32(payload, zlib.crc32(header)))))


def check_header(frame_number, rows, cols, encoding, payload_length, expected_shape=None) -> str:
    """Why a header is impossible ("" if it is plausible)."""
    if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
        return f"frame {frame_number}: shape {rows}x{cols} outside 1..{MAX_SIDE}"
    if expected_shape is not None and (rows, cols) != tuple(expected_shape):
        return f"frame {frame_number}: expected shape {tuple(expected_shape)}, found ({rows}, {cols})"
    if encoding == DENSE:
        if payload_length != rows * cols * 2:
            return f"frame {frame_number}: dense payload must be {rows * cols * 2} bytes, header says {payload_length}"
    elif encoding == SPARSE:
        if rows * cols > MAX_SPARSE_PIXELS:
            return f"frame {frame_number}: sparse frame of {rows * cols} pixels cannot be addressed by u16 indices"
        if payload_length % 4 or payload_length > rows * cols * 4:
            return (f"frame {frame_number}: sparse payload must be a multiple of 4 bytes up to {rows * cols * 4}, "
                    f"header says {payload_length}")
    else:
        return f"frame {frame_number}: encoding must be 0 (dense) or 1 (sparse), found {encoding}"
    return ""


def decode_payload(payload, rows, cols, encoding):
    """One frame (rows, cols) uint16 from its payload; raises ProtocolError on a bad sparse index."""
    if encoding == DENSE:
        return np.frombuffer(payload, dtype="<u2").astype(np.uint16).reshape(rows, cols)
    pairs = np.frombuffer(payload, dtype="<u2").reshape(-1, 2)
    frame = np.zeros(rows * cols, dtype=np.uint16)
    if pairs.size:
        index = pairs[:, 0]
        if int(index.max()) >= rows * cols:
            raise ProtocolError(f"sparse pixel index {int(index.max())} outside a {rows}x{cols} frame")
        frame[index] = pairs[:, 1]
    return frame.reshape(rows, cols)


class FrameParser:
    """Incremental decoder of the serial framing with resynchronisation.

    Parameters
    ----------
    shape : (rows, cols), optional
        Reject frames of any other shape.
    lock_shape : bool
        Without ``shape``, take the shape of the first good frame as the expected one
        (a stray valid frame of another shape is then counted as corrupt, not delivered).

    A header can be believable and still false (noise that happens to start with the
    sync word). While such a header waits for a payload that will never come, the
    parser looks ahead: a complete frame with a good CRC starting inside the claimed
    payload proves the header false, so good frames are never held back behind it,
    and :meth:`finish` rescans what is left instead of dropping it.

    Attributes
    ----------
    corrupt : int
        Frames rejected: impossible header, CRC mismatch, bad sparse index, or cut
        short (seen when a good frame starts inside it, or at :meth:`finish`).
    skipped_bytes : int
        Bytes discarded while looking for a sync word.
    last_error : str
    """

    def __init__(self, shape=None, lock_shape: bool = False):
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))
        self.lock_shape = lock_shape
        self._buffer = bytearray()
        self._lookahead_from = 0     # where the search for a frame inside a pending one resumes
        self.corrupt = 0
        self.skipped_bytes = 0
        self.last_error = ""

    def _reject(self, why):
        self.corrupt += 1
        self.last_error = why
        if self.corrupt & (self.corrupt - 1) == 0:
            log.warning("serial: corrupt frame #%d skipped: %s", self.corrupt, why)
        # resynchronise: look for the next sync word after this one's first byte
        del self._buffer[:1]
        self.skipped_bytes += 1
        self._lookahead_from = 0

    def _frame_at(self, buf, at):
        """Parse the frame whose sync word starts at ``at``.

        Returns ``("ok", number, frame, end)``, ``("short", why, None, end)`` when the
        bytes are not all there yet, or ``("bad", why, None, 0)``.
        """
        if len(buf) < at + len(SYNC) + HEADER.size:
            return "short", "header cut short", None, at + len(SYNC) + HEADER.size
        number, rows, cols, encoding, _flags, _reserved, length = HEADER.unpack_from(buf, at + len(SYNC))
        why = check_header(number, rows, cols, encoding, length, self.shape)
        if why:
            return "bad", "impossible header: " + why, None, 0
        end = at + len(SYNC) + HEADER.size + length
        if len(buf) < end + CRC.size:
            return "short", f"frame {number} cut short", None, end + CRC.size
        # copies (a few kB) rather than memoryviews: the buffer must stay resizable
        body = bytes(buf[at + len(SYNC):end])
        crc_found = CRC.unpack_from(buf, end)[0]
        crc_expected = zlib.crc32(body)
        if crc_found != crc_expected:
            return "bad", f"frame {number}: CRC-32 {crc_found:08x} does not match {crc_expected:08x}", None, 0
        try:
            frame = decode_payload(body[HEADER.size:], rows, cols, encoding)
        except Exception as exc:      # whatever the payload provokes: this frame is corrupt
            return "bad", f"frame {number}: {exc}", None, 0
        return "ok", number, frame, end + CRC.size

    def _good_frame_inside(self, buf, limit):
        """Position of a complete, CRC-valid frame starting in buf[1:limit], or -1."""
        at = max(1, self._lookahead_from)
        while True:
            at = buf.find(SYNC, at, max(at, limit))
            if at < 0:
                # resume just before the end next time (a sync word may be split across reads)
                self._lookahead_from = max(1, min(limit, len(buf)) - len(SYNC) + 1)
                return -1
            status = self._frame_at(buf, at)[0]
            if status == "ok":
                return at
            if status == "short":
                self._lookahead_from = at      # look at it again when more bytes are in
                return -1
            at += 1

    def feed(self, data) -> list:
        """Add received bytes; return the frames completed, as (frame_number, frame) pairs."""
        buf = self._buffer
        buf += data
        out = []
        while True:
            at = buf.find(SYNC)
            if at < 0:
                # keep a tail that could be the start of a sync word split across reads
                keep = len(SYNC) - 1
                if len(buf) > keep:
                    self.skipped_bytes += len(buf) - keep
                    del buf[:len(buf) - keep]
                self._lookahead_from = 0
                return out
            if at:
                self.skipped_bytes += at
                del buf[:at]
                self._lookahead_from = max(0, self._lookahead_from - at)
            status, what, frame, end = self._frame_at(buf, 0)
            if status == "bad":
                self._reject(what)
                continue
            if status == "short":
                # wait for the rest, unless a good frame already starts inside the claim
                if self._good_frame_inside(buf, min(end, len(buf))) >= 0:
                    self._reject(f"{what}: a good frame starts inside it")
                    continue
                return out
            out.append((what, frame))
            if self.lock_shape and self.shape is None:
                self.shape = frame.shape
            del buf[:end]
            self._lookahead_from = 0

    def finish(self) -> list:
        """The stream ended (or went quiet): reject a partial frame and rescan what follows it.

        Returns the frames found behind a false header (as :meth:`feed` does).
        """
        out = []
        while True:
            out += self.feed(b"")
            # feed stops at a frame whose bytes are not all there, or with no sync word left
            if self._buffer.find(SYNC) < 0:
                break
            self._reject("frame cut short at end of stream")    # drops one byte: the loop ends
        self.skipped_bytes += len(self._buffer)
        self._buffer.clear()
        self._lookahead_from = 0
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def _open_port(port, baud, timeout_s, write_timeout_s=None):
    import serial as pyserial
    try:
        return pyserial.serial_for_url(port, baudrate=baud, timeout=timeout_s, write_timeout=write_timeout_s)
    except (pyserial.SerialException, ValueError) as exc:
        raise ProtocolError(f"cannot open serial port {port}: {exc}") from None


class SerialSource(BaseSource):
    """Frames from a serial port in the FORMATS.md framing.

    Parameters
    ----------
    port : str or serial.Serial
        Device (``/dev/ttyACM0``), pyserial URL (``loop://``, ``socket://host:port``)
        or an already open port (not closed by :meth:`close`).
    baud : int
        Baud rate when opening ``port``.
    timeout_s : float or None
        End iteration after this many seconds without bytes (default 10); None
        waits without limit but wakes every 0.05 s to notice :meth:`close`.
    batch_frames : int
        Frames gathered into one yielded batch at most (default 100).
    max_latency_s : float
        Longest time decoded frames are held before being yielded.
    shape : (rows, cols), optional
        Reject frames of any other shape.
    max_frames : int, optional
    """

    _READ_WAIT_S = 0.05

    def __init__(self, port, baud: int = 115200, timeout_s: float | None = 10.0, batch_frames: int = 100,
                 max_latency_s: float = 0.1, shape=None, max_frames: int | None = None):
        super().__init__(max_frames)
        if isinstance(port, str):
            self._port = _open_port(port, baud, self._READ_WAIT_S)
            self._owns_port = True
            self.name = port
        else:
            self._port = port
            self._owns_port = False
            self.name = getattr(port, "name", None) or getattr(port, "port", None) or repr(port)
            if hasattr(port, "timeout"):
                port.timeout = self._READ_WAIT_S
        self.timeout_s = timeout_s
        self.batch_frames = max(1, int(batch_frames))
        self.max_latency_s = float(max_latency_s)
        self.parser = FrameParser(shape, lock_shape=True)
        self._decoded = 0

    def _read(self):
        try:
            waiting = self._port.in_waiting
            return self._port.read(waiting if waiting else 1)
        except (OSError, TypeError, AttributeError, ValueError) as exc:
            # SerialException is an OSError; a port closed under us gives TypeError or AttributeError
            if self._closed:
                return b""
            raise ProtocolError(f"serial port {self.name}: read failed: {exc}") from None

    def _sync_stats(self):
        self.stats.messages = self._decoded + self.parser.corrupt
        self.stats.corrupt = self.parser.corrupt
        self.stats.last_error = self.parser.last_error
        self.stats.skipped_bytes = self.parser.skipped_bytes

    def _batches(self):
        idle_since = time.monotonic()
        pending = []
        held_since = 0.0
        while not self._closed:
            data = self._read()
            now = time.monotonic()
            if data:
                idle_since = now
                self.stats.bytes += len(data)
                try:
                    decoded = self.parser.feed(data)
                except Exception as exc:       # the live loop's guard: no byte ends the source
                    self.parser._reject(f"{type(exc).__name__}: {str(exc)[:200]}")
                    decoded = []
                self._decoded += len(decoded)
                if decoded and not pending:
                    held_since = now
                pending.extend(decoded)
                self._sync_stats()
            # frames of another shape start a new batch
            while pending and any(f.shape != pending[0][1].shape for _, f in pending):
                split = next(i for i, (_, f) in enumerate(pending) if f.shape != pending[0][1].shape)
                yield self._join(pending[:split])
                pending = pending[split:]
                held_since = now
            enough = self.max_frames is not None and self.stats.frames + len(pending) >= self.max_frames
            if pending and (len(pending) >= self.batch_frames or not data or enough
                            or now - held_since >= self.max_latency_s):
                while len(pending) > self.batch_frames:
                    yield self._join(pending[:self.batch_frames])
                    pending = pending[self.batch_frames:]
                yield self._join(pending)
                pending = []
                continue
            if not data:
                self._idle()
            if not data and self.timeout_s is not None and now - idle_since > self.timeout_s:
                if self.parser.buffered:
                    # frames behind a false header are still delivered
                    rescued = self.parser.finish()
                    self._decoded += len(rescued)
                    pending.extend(rescued)
                    self._sync_stats()
                log.info("serial %s: no data for %.1f s, ending", self.name, self.timeout_s)
                break
        if pending:
            yield self._join(pending)

    @staticmethod
    def _join(pending):
        return FrameBatch(np.stack([f for _, f in pending]), np.array([n for n, _ in pending], dtype=np.int64))

    def _close(self):
        if self._owns_port:
            try:
                self._port.close()
            except OSError as exc:
                log.warning("serial %s: close failed: %s", self.name, exc)


class SerialWriter:
    """Send FrameBatch objects in the FORMATS.md serial framing.

    Parameters
    ----------
    port : str or file-like
        Device or pyserial URL to open, or anything with ``write(bytes)`` (an open
        serial.Serial, a pseudo-terminal master opened with ``os.fdopen``).
    baud : int
        Baud rate when opening ``port``.
    encoding : {"auto", "dense", "sparse"}
        See :func:`encode_frame`.
    write_timeout_s : float or None
        When opening ``port``: how long a write may wait before raising
        ProtocolError (None: wait; the link paces the sender).
    """

    def __init__(self, port, baud: int = 115200, encoding: str = "auto", write_timeout_s: float | None = None):
        if encoding not in ("auto", "dense", "sparse"):
            raise ConfigError(f"SerialWriter: encoding must be 'auto', 'dense' or 'sparse', found {encoding!r}")
        if isinstance(port, str):
            self._port = _open_port(port, baud, 0.1, write_timeout_s)
            self._owns_port = True
        else:
            self._port = port
            self._owns_port = False
        self.encoding = encoding
        self.frames_sent = 0
        self.bytes_sent = 0

    def send(self, batch) -> int:
        """Write every frame of ``batch`` (FrameBatch or (n, R, C) / (R, C) uint16 array); return frames sent."""
        if not isinstance(batch, FrameBatch):
            arr = np.asarray(batch)
            n = 1 if arr.ndim == 2 else len(arr)
            batch = FrameBatch(arr, np.arange(self.frames_sent, self.frames_sent + n))
        data = b"".join(encode_frame(f, n, self.encoding) for f, n in zip(batch.frames, batch.frame_numbers))
        self.write_bytes(data)
        self.frames_sent += len(batch)
        return len(batch)

    def write_bytes(self, data) -> None:
        """Write raw bytes to the link (all of them: short writes are continued)."""
        view = memoryview(data)
        while view.nbytes:
            try:
                written = self._port.write(view)
            except (OSError, ValueError) as exc:    # SerialException is an OSError; ValueError once closed
                raise ProtocolError(f"serial write failed after {self.bytes_sent} bytes: {exc}") from None
            if written is None:      # file-likes that write everything return None
                written = view.nbytes
            self.bytes_sent += written
            view = view[written:]
        flush = getattr(self._port, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        if self._owns_port:
            self._port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
