"""FrameBatch: a block of raw detector frames with their frame numbers; GapCounter: frames missing from them."""

from __future__ import annotations

import numpy as np

from .errors import FormatError


class FrameBatch:
    """Consecutive raw frames as read from a detector.

    Parameters
    ----------
    frames : array_like, shape (n, rows, cols) or (rows, cols)
        Raw pixel values in ADU; stored as C-contiguous uint16. A single 2-D frame is
        promoted to a batch of one.
    frame_numbers : array_like of int, shape (n,), optional
        Detector frame numbers; default ``arange(n)``. Gaps mean frames were dropped
        upstream; the next-frame correction only links frames whose numbers differ by 1.
    timestamps : array_like of float, shape (n,), optional
        Arrival or acquisition times in seconds, if known.
    """

    __slots__ = ("frames", "frame_numbers", "timestamps")

    def __init__(self, frames, frame_numbers=None, timestamps=None):
        arr = np.asarray(frames)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.ndim != 3:
            raise FormatError(f"FrameBatch: expected frames of shape (n, rows, cols), found shape {arr.shape}")
        if arr.dtype != np.uint16:
            ok = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            if ok and arr.size:
                lo, hi = arr.min(), arr.max()
                ok = lo >= 0 and hi <= 65535
                if ok and np.issubdtype(arr.dtype, np.floating):
                    ok = bool(np.all(arr == np.floor(arr)))
            if not ok:
                raise FormatError(
                    f"FrameBatch: expected whole ADU values 0..65535 (uint16), found dtype {arr.dtype}"
                    + (f" with range [{arr.min()}, {arr.max()}]" if arr.size else ""))
            arr = arr.astype(np.uint16)
        self.frames = np.ascontiguousarray(arr)
        n = self.frames.shape[0]
        if frame_numbers is None:
            fn = np.arange(n, dtype=np.int64)
        else:
            fn = np.ascontiguousarray(np.asarray(frame_numbers, dtype=np.int64).reshape(-1))
            if fn.shape != (n,):
                raise FormatError(f"FrameBatch: expected {n} frame numbers, found {fn.shape[0]}")
        self.frame_numbers = fn
        if timestamps is not None:
            ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
            if ts.shape != (n,):
                raise FormatError(f"FrameBatch: expected {n} timestamps, found {ts.shape[0]}")
            timestamps = ts
        self.timestamps = timestamps

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of one frame."""
        return (self.frames.shape[1], self.frames.shape[2])

    def __getitem__(self, item) -> "FrameBatch":
        if isinstance(item, (int, np.integer)):
            item = slice(item, item + 1 if item != -1 else None)
        ts = None if self.timestamps is None else self.timestamps[item]
        return FrameBatch(self.frames[item], self.frame_numbers[item], ts)

    def split(self, size: int):
        """Yield sub-batches of at most ``size`` frames (views, no copies)."""
        for start in range(0, len(self), size):
            yield self[start:start + size]

    def __repr__(self) -> str:
        if len(self):
            span = f"frames {self.frame_numbers[0]}..{self.frame_numbers[-1]}"
        else:
            span = "empty"
        return f"FrameBatch(n={len(self)}, shape={self.shape}, {span})"


class GapCounter:
    """Counts frames missing from a stream of frame numbers: the one gap counter of
    sources, the processing chain and the viewer.

    A frame number more than one ahead of the one before it adds the difference minus
    one to ``dropped``, within a batch and across batches. A number that does not
    increase means the detector restarted its acquisition (odin-data resets frame_num
    to 0), so counting restarts there without counting anything dropped.
    """

    def __init__(self):
        self.expected = None
        self.dropped = 0

    def count(self, frame_numbers) -> int:
        """Account for one batch's frame numbers (n,); return the frames newly found missing."""
        fn = np.asarray(frame_numbers, dtype=np.int64).reshape(-1)
        if fn.size == 0:
            return 0
        steps = np.diff(fn)
        missing = int(np.sum(steps[steps > 1] - 1))
        if self.expected is not None and fn[0] > self.expected:
            missing += int(fn[0] - self.expected)
        self.dropped += missing
        self.expected = int(fn[-1]) + 1
        return missing

    def add(self, first: int, count: int, last: int | None = None) -> int:
        """Account for ``count`` increasing frame numbers from ``first`` to ``last`` (default
        ``first + count - 1``) when only those are known; return frames newly found missing."""
        if last is None:
            last = first + count - 1
        missing = 0
        if self.expected is not None and first > self.expected:
            missing += first - self.expected
        missing += max(0, (last - first + 1) - count)   # holes inside the batch; none across a restart
        self.dropped += missing
        self.expected = last + 1
        return missing

    def reset(self) -> None:
        self.expected = None
        self.dropped = 0
