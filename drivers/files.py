"""Frame files as a source: GigE .bin, odin-data HDF5 and hexspec HDF5, optionally paced.

``file://PATH?rate=9118.87`` replays a recording as if it were live (for testing the
live chain and the viewer); without ``rate`` frames come as fast as they can be read.
The file kind is found from its content (:mod:`hexspec.io.framefile`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from .base import BaseSource
from .pacer import Pacer


class FileSource(BaseSource):
    """Frames read from a file in batches (bounded memory), paced or as fast as possible.

    Parameters
    ----------
    path : str or Path
    rate_hz : float, optional
        Replay frame rate (default: no pacing).
    shape : (rows, cols), optional
        Frame shape of a headerless .bin file (default 80 x 80); for HDF5 files a
        shape that differs from the file's is an error.
    batch_frames : int
        Largest batch yielded (smaller when paced, so batches come ~20 times a second).
    reorder : bool
        Undo the ASIC pixel order of older firmware (.bin files).
    allow_partial : bool
        Read the whole frames of a .bin file whose size is not a multiple of the frame size.
    max_frames : int, optional
    """

    def __init__(self, path, rate_hz: float | None = None, shape=None, batch_frames: int = 1000,
                 reorder: bool = False, allow_partial: bool = False, max_frames: int | None = None):
        super().__init__(max_frames)
        from ..io import framefile
        self.path = Path(path)
        self.kind = framefile.frame_file_kind(self.path)
        file_shape = framefile.frame_shape(self.path, default=tuple(shape) if shape else (80, 80))
        if shape is not None and tuple(shape) != tuple(file_shape):
            raise FormatError(f"{self.path}: expected frames of shape {tuple(shape)}, the file holds {tuple(file_shape)}")
        self.shape = tuple(int(s) for s in file_shape)
        self.pacer = Pacer(rate_hz)
        self.name = f"file://{self.path}"
        self._iterator = framefile.iter_frame_file(self.path, self.pacer.batch_size(int(batch_frames)),
                                                   shape=self.shape, reorder=reorder, allow_partial=allow_partial)

    def _batches(self):
        done = 0
        for batch in self._iterator:
            if self._closed:
                return
            done += len(batch)
            self.stats.bytes += batch.frames.nbytes
            self.stats.messages += 1
            self._idle()
            self.pacer.wait(done)
            yield batch

    def _close(self):
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
