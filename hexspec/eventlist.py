"""EventList: photon events as a struct of arrays (numpy only, no kernels)."""

from __future__ import annotations

import numpy as np

from .errors import FormatError


class EventList:
    """Photon events as a struct of arrays.

    Attributes
    ----------
    frame : int64 (n,)      detector frame number
    row, col : uint16 (n,)  pixel (row 0 at the top)
    energy : float32 (n,)   keV (ADU when uncalibrated)
    size : uint8 (n,)       pixels merged into the event (1 unless charge-sharing addition)
    """

    __slots__ = ("frame", "row", "col", "energy", "size")

    def __init__(self, frame, row, col, energy, size=None):
        self.frame = np.ascontiguousarray(frame, dtype=np.int64).reshape(-1)
        self.row = np.ascontiguousarray(row, dtype=np.uint16).reshape(-1)
        self.col = np.ascontiguousarray(col, dtype=np.uint16).reshape(-1)
        self.energy = np.ascontiguousarray(energy, dtype=np.float32).reshape(-1)
        n = self.frame.shape[0]
        if size is None:
            self.size = np.ones(n, dtype=np.uint8)
        else:
            self.size = np.ascontiguousarray(size, dtype=np.uint8).reshape(-1)
        for name in ("row", "col", "energy", "size"):
            if getattr(self, name).shape[0] != n:
                raise FormatError(f"EventList: {name} has {getattr(self, name).shape[0]} entries, frame has {n}")

    @classmethod
    def empty(cls) -> "EventList":
        return cls(np.empty(0, np.int64), np.empty(0, np.uint16), np.empty(0, np.uint16), np.empty(0, np.float32))

    @classmethod
    def concatenate(cls, lists) -> "EventList":
        lists = list(lists)
        if not lists:
            return cls.empty()
        return cls(*(np.concatenate([getattr(e, n) for e in lists]) for n in cls.__slots__))

    def __len__(self) -> int:
        return self.frame.shape[0]

    def __getitem__(self, item) -> "EventList":
        return EventList(self.frame[item], self.row[item], self.col[item], self.energy[item], self.size[item])

    def __eq__(self, other) -> bool:
        if not isinstance(other, EventList):
            return NotImplemented
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in self.__slots__)

    def sorted(self) -> "EventList":
        """Events ordered by (frame, row, col): a canonical order for comparisons."""
        order = np.lexsort((self.col, self.row, self.frame))
        return self[order]

    def __repr__(self) -> str:
        return f"EventList({len(self)} events)"
