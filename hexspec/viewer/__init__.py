"""Live viewer for beamtime: count image, spectra, rates and quick analyses, fed by any source.

``hexspec view URL`` opens it; from Python::

    from hexspec.viewer import run_viewer
    run_viewer(hexspec.drivers.open_source("sim://?rate=9119"))

:class:`LiveProcessor` (frames -> events -> cube in a worker thread) needs no display;
:class:`ViewerWindow` and :func:`run_viewer` need the ``viewer`` extra (pyqtgraph and
PySide6) and import Qt on first use.
"""

from .processor import LiveProcessor
from .roi import polygon_mask, rect_mask


def __getattr__(name):
    # Qt loads only when a window is wanted, so the processing half works without it.
    if name == "ViewerWindow":
        from .window import ViewerWindow
        return ViewerWindow
    if name == "run_viewer":
        from .app import run_viewer
        return run_viewer
    raise AttributeError(f"module 'hexspec.viewer' has no attribute {name!r}")


__all__ = ["LiveProcessor", "ViewerWindow", "run_viewer", "rect_mask", "polygon_mask"]
