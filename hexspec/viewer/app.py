"""Run the live viewer: on a screen, or headless to save a screenshot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import HexspecError


def _application(headless: bool):
    if headless:
        # Must be decided before the QApplication exists; an explicit choice by the user wins.
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from pyqtgraph.Qt import QtCore, QtGui, QtWidgets
    app = QtWidgets.QApplication.instance()
    if app is None:
        if headless:
            QtCore.qInstallMessageHandler(_quiet_offscreen_messages)
        app = QtWidgets.QApplication(["hexspec view"])
        _dark_theme(app, QtGui)
    return app


def _quiet_offscreen_messages(mode, context, message):
    # The offscreen platform warns on every window it cannot resize like a real screen;
    # that says nothing to the user of a headless run.
    if "propagateSizeHints" not in message:
        sys.stderr.write(f"{message}\n")


def _dark_theme(app, QtGui):
    # A dark control area matches pyqtgraph's black plots and is easier on the eyes in a
    # dimmed experimental hutch.
    app.setStyle("Fusion")
    p = QtGui.QPalette()
    C = QtGui.QColor
    roles = QtGui.QPalette.ColorRole
    for role, colour in ((roles.Window, C(37, 37, 40)), (roles.WindowText, C(220, 220, 220)),
                         (roles.Base, C(25, 25, 28)), (roles.AlternateBase, C(45, 45, 48)),
                         (roles.Text, C(220, 220, 220)), (roles.Button, C(50, 50, 55)),
                         (roles.ButtonText, C(220, 220, 220)), (roles.Highlight, C(60, 120, 200)),
                         (roles.HighlightedText, C(255, 255, 255)), (roles.ToolTipBase, C(50, 50, 55)),
                         (roles.ToolTipText, C(220, 220, 220))):
        p.setColor(role, colour)
    p.setColor(QtGui.QPalette.ColorGroup.Disabled, roles.ButtonText, C(120, 120, 120))
    app.setPalette(p)


def run_viewer(source, config=None, source_label: str = "", refresh_hz: float = 10.0, e1_kev: float = 115.0,
               screenshot=None, exit_after=None, window_kev=None, open_options=None) -> int:
    """Open the live viewer on ``source`` and run until the window closes.

    Parameters
    ----------
    source : str or iterable of FrameBatch
        A source URL, opened and processed in a child process (the display then never
        competes with a full-rate stream for the interpreter), or an opened source /
        any iterable of batches, processed in a thread of this process.
    config : ProcessingConfig, optional
    source_label : str
        Shown in the window title (the URL).
    refresh_hz : float
        Display refresh rate in Hz.
    e1_kev : float
        Incident energy (keV) for the Compton window and S-parameter map.
    screenshot : path, optional
        Render offscreen and save a PNG of the whole window when the run ends.
    exit_after : float, optional
        Close after this many seconds (with ``screenshot``: default 5 s).
    window_kev : (float, float) or "compton", optional
        Initial energy window of the count image.
    open_options : dict, optional
        With a URL: keyword arguments for ``hexspec.drivers.open_source``.

    Returns
    -------
    int
        0 on success.
    """
    from .processor import LiveProcessor
    headless = screenshot is not None
    if headless:
        screenshot = screenshot_path(screenshot)
    if headless and exit_after is None:
        exit_after = 5.0
    app = _application(headless)
    from pyqtgraph.Qt import QtCore
    from .window import ViewerWindow

    if isinstance(source, str):
        from .subprocess_worker import SubprocessProcessor
        processor = SubprocessProcessor(source, config, open_options=open_options)
    else:
        processor = LiveProcessor(source, config)
    window = ViewerWindow(processor, source_label=source_label, refresh_hz=refresh_hz, e1_kev=e1_kev)
    window.show()
    saved = {}

    def initial_window():
        if window_kev is None or not window.has_energy_axis:
            return
        if window_kev == "compton":
            window.set_compton_window()
        else:
            window.set_window(*window_kev)

    def finish():
        window.refresh()
        initial_window()
        window.refresh()
        app.processEvents()
        if screenshot is not None:
            try:
                saved["path"] = window.export_png("window", screenshot)
            except HexspecError as exc:
                saved["error"] = str(exc)
        window.close()
        app.quit()

    if window_kev is not None:
        # The window needs the energy axis, known once the first batch has arrived.
        poll = QtCore.QTimer(window)
        poll.setInterval(100)

        def try_initial():
            if window.has_energy_axis:
                initial_window()
                poll.stop()
        poll.timeout.connect(try_initial)
        poll.start()
    if exit_after is not None:
        QtCore.QTimer.singleShot(int(float(exit_after) * 1000), finish)
    app.exec()
    processor.stop(timeout=2.0)
    # Release the Qt objects while the interpreter is fully alive: left to the final
    # garbage collection, PySide6 can crash tearing down pyqtgraph items.
    window.deleteLater()
    app.processEvents()
    if "error" in saved:
        raise HexspecError(saved["error"])
    if processor.error:
        raise HexspecError(f"the source stopped: {processor.error}")
    return 0


def screenshot_path(path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
