"""Work-around for a reference-count bug of PySide6 6.12 on CPython older than 3.12.

PySide6 6.12.0 drops one reference to ``None`` on every call of a Qt method that
returns void (``QLabel.setText``, ``QPainter.drawLine``, ``processEvents``...).
From CPython 3.12 on ``None`` is immortal (PEP 683) and this is harmless; before, its
reference count falls by a few hundred per redraw and a live viewer aborts with
"Fatal Python error: none_dealloc: deallocating None" after some minutes (tens of
thousands of calls). Measured here: -1 reference per ``QLabel.setText`` call.

The same happens to ``True`` and ``False``. The viewer calls :func:`keep_none_alive`
on every refresh: when one of their counts has fallen below a floor it adds the floor
back. Extra references to these singletons cost nothing (they are never freed in a
healthy interpreter).
"""

from __future__ import annotations

import ctypes
import sys

#: Far above the few hundred references a refresh can lose, far below overflow.
_FLOOR = 1 << 24

_NEEDED = sys.version_info < (3, 12)


def _refcount_cell(obj):
    # ob_refcnt is the first field of every object in a release build of CPython < 3.12;
    # a debug build with traced references (sys.getobjects exists) puts two pointers first.
    if not _NEEDED or hasattr(sys, "getobjects") or sys.implementation.name != "cpython":
        return None
    cell = ctypes.c_ssize_t.from_address(id(obj))
    # getrefcount counts its own argument: refuse to touch memory that is not the count.
    return cell if cell.value == sys.getrefcount(obj) - 1 else None


# True and False suffer the same way (methods returning bool), so all three are guarded.
_CELLS = [c for c in (_refcount_cell(None), _refcount_cell(True), _refcount_cell(False)) if c is not None]


def keep_none_alive() -> None:
    """Restore the reference counts of None, True and False if Qt calls have worn them down.

    A no-op on CPython >= 3.12, where these objects are immortal.
    """
    for cell in _CELLS:
        if cell.value < _FLOOR:
            cell.value += _FLOOR
