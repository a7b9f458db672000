"""Refuse a Qt binding known to crash long-running windows.

PySide6 6.12.0 drops one reference to ``None`` (and ``True``/``False``) on every call of
a Qt method that returns void. From CPython 3.12 on these objects are immortal (PEP 683)
and the bug is harmless; before, a live viewer aborts with "Fatal Python error:
none_dealloc" after some minutes. The ``viewer`` extra excludes that release on older
Pythons; this check gives a clear message to whoever installed it by other means.
"""

from __future__ import annotations

import sys

from ..errors import ConfigError


def check_qt_binding() -> None:
    """Raise ConfigError for PySide6 6.12.x under CPython < 3.12."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    import PySide6
    version = tuple(int(p) for p in PySide6.__version__.split(".")[:2] if p.isdigit())
    if version == (6, 12):
        raise ConfigError(
            f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]} corrupts the reference count of None "
            "and crashes the viewer after a few minutes; install an earlier release: "
            "pip install 'PySide6-Essentials>=6.5,<6.12' (or use Python >= 3.12)")
