"""Live viewer for beamtime: count image, spectra, rates and quick analyses, fed by any source.

``hexspec view URL`` opens it; from Python::

    from hexspec.viewer import run_viewer

    if __name__ == "__main__":        # a URL is processed in a spawned child process
        run_viewer("sim://?source=compton&rate=9119", config)

    run_viewer(any_iterable_of_frame_batches, config)    # processed in a thread

:class:`LiveProcessor` (frames -> events -> cube in a worker thread, any iterable of
FrameBatch) and :class:`SubprocessProcessor` (the same from a source URL in a child
process, for full-rate streams) need no display; :class:`ViewerWindow` and
:func:`run_viewer` need the ``viewer`` extra (pyqtgraph and PySide6) and import Qt on
first use.
"""

from .processor import LiveProcessor
from .roi import polygon_mask, rect_mask
from .subprocess_worker import SubprocessProcessor


def __getattr__(name):
    # Qt loads only when a window is wanted, so the processing half works without it.
    if name == "ViewerWindow":
        from .window import ViewerWindow
        return ViewerWindow
    if name == "run_viewer":
        from .app import run_viewer
        return run_viewer
    raise AttributeError(f"module 'hexspec.viewer' has no attribute {name!r}")


__all__ = ["LiveProcessor", "SubprocessProcessor", "ViewerWindow", "run_viewer", "rect_mask", "polygon_mask"]
