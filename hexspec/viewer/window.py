"""The live viewer window: count image, spectra, rates, controls and on-demand analyses.

Layout (for a beamline screen)::

    +---------------------------+--------------------------------------+
    | Counts | Analysis map     | spectrum: summed + selection, window |
    |  image + colour bar       |  (drag the shaded band)              |
    |  cursor pixel / ROI       +------------+-------------+-----------+
    |                           | rates      | processing  | analysis  |
    +---------------------------+------------+-------------+-----------+

Nothing here waits on the source: a :class:`~hexspec.viewer.processor.LiveProcessor`
fills the cube in its own thread and a QTimer redraws from it at a steady rate.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from ..errors import HexspecError
from . import analysis
from .processor import LiveProcessor
from .qtcompat import check_qt_binding
from .roi import polygon_mask, rect_mask

#: Panels that can be exported as PNG.
PANELS = ("window", "image", "spectrum", "rates", "analysis")
SELECTIONS = ("cursor pixel", "rectangle", "polygon")


#: Upper colour level of autoscale: this percentile of the pixel values, so that a few
#: hot pixels (every real detector has some) do not turn the rest of the image dark.
AUTOSCALE_PERCENTILE = 99.5


def robust_range(values) -> tuple[float, float]:
    """(minimum, AUTOSCALE_PERCENTILE-th percentile) of an image; the maximum if that percentile is not above the minimum."""
    low = float(np.min(values))
    high = float(np.percentile(values, AUTOSCALE_PERCENTILE))
    if high <= low:
        high = float(np.max(values))
    return low, high


def autoscale_levels(low: float, high: float, current):
    """Colour levels for autoscale: (low, high) with headroom, or None to keep ``current``.

    The upper level moves only when the image maximum passes it or falls below 60 % of
    it, and then to 1.25 x the maximum: the colour bar stays readable, and its axis is
    not redrawn on every refresh while counts accumulate.
    """
    if high <= low:
        high = low + 1.0
    lo, hi = (None, None) if current is None else (float(current[0]), float(current[1]))
    if lo == low and hi is not None and 0.6 * hi <= high <= hi:
        return None
    return low, low + 1.25 * (high - low)


def _format_elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


class ViewerWindow(QtWidgets.QMainWindow):
    """Live view of a frame source.

    Parameters
    ----------
    processor : LiveProcessor
        Started by the window if it is not running yet; stopped when the window closes.
    source_label : str
        Shown in the title and status bar (e.g. the source URL).
    refresh_hz : float
        Display refresh rate (default 10 Hz), independent of the input rate.
    e1_kev : float
        Incident energy for the Compton window and the S-parameter map.
    """

    def __init__(self, processor: LiveProcessor, source_label: str = "", refresh_hz: float = 10.0,
                 e1_kev: float = analysis.E1_KEV, parent=None):
        super().__init__(parent)
        self.processor = processor
        self.source_label = source_label
        self.e1_kev = float(e1_kev)
        self.setWindowTitle(f"hexspec view — {source_label}" if source_label else "hexspec view")
        self.resize(1600, 950)

        # Display state.
        self.window_range = None        # (emin, emax) of the count image; None = all energies
        self.hover_pixel = None         # (row, col) under the cursor
        self.refresh_count = 0          # timer ticks so far
        self.last_image = None          # what the count image shows (counts, before log scaling)
        self.last_selection_spectrum = None
        self.last_summed_spectrum = None
        self.analysis_message = ""
        self.lithium_calibration = None
        self._edges = None
        self._unit = None
        self._shape = None
        self._mask_cache = None
        self._drawn_key = None
        self._rate_history = collections.deque(maxlen=64)
        self._tick_times = collections.deque(maxlen=64)
        self._analysis_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hexspec-analysis")
        self._analysis_job = None
        self._chosen_calibration = None     # picked in the file dialog, used by Apply

        check_qt_binding()
        self._build_ui()
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.PreciseTimer)
        self.timer.setInterval(max(1, int(round(1000.0 / refresh_hz))))
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        if not processor.running and not processor.finished:
            processor.start()

    # ================================================================= layout
    def _build_ui(self):
        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        self.setCentralWidget(split)
        split.addWidget(self._build_image_panel())
        right = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        right.addWidget(self._build_spectrum_panel())
        bottom = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(bottom)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self._build_rates_panel())
        row.addWidget(self._build_controls_panel())
        row.addWidget(self._build_analysis_panel(), 1)
        right.addWidget(bottom)
        right.setSizes([560, 390])
        split.addWidget(right)
        split.setSizes([720, 880])
        self.status = self.statusBar()
        self.status.showMessage(f"source {self.source_label}" if self.source_label else "")

    def _build_image_panel(self):
        self.image_tabs = QtWidgets.QTabWidget()
        # Counts tab.
        panel = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(panel)
        bar = QtWidgets.QHBoxLayout()
        self.autoscale_box = QtWidgets.QCheckBox("autoscale")
        self.autoscale_box.setChecked(True)
        self.log_image_box = QtWidgets.QCheckBox("log colour")
        self.selection_combo = QtWidgets.QComboBox()
        self.selection_combo.addItems(SELECTIONS)
        self.selection_combo.setToolTip("spectrum of the pixel under the cursor, or of a rectangle / polygon region")
        self.pixel_label = QtWidgets.QLabel("pixel –")
        for w in (self.autoscale_box, self.log_image_box, QtWidgets.QLabel("spectrum of"), self.selection_combo):
            bar.addWidget(w)
        bar.addStretch(1)
        self.total_label = QtWidgets.QLabel("")
        bar.addWidget(self.total_label)
        bar.addSpacing(12)
        bar.addWidget(self.pixel_label)
        lay.addLayout(bar)
        self.image_widget = pg.GraphicsLayoutWidget()
        self.image_plot = self.image_widget.addPlot(title="counts, all energies")
        self.image_plot.setAspectLocked(True)
        self.image_plot.invertY(True)          # row 0 at the top, as on the detector
        self.image_plot.setLabel("bottom", "column")
        self.image_plot.setLabel("left", "row")
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_plot.addItem(self.image_item)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"),
                                        interactive=True, width=18)
        self.colorbar.setImageItem(self.image_item, insert_in=self.image_plot)
        self.colorbar.sigLevelsChangeFinished.connect(self._user_levels)
        # Fixed axis widths: tick labels that change width as counts grow would otherwise
        # re-lay out the whole plot, and repaint every axis, on each refresh.
        self.colorbar.getAxis("right").setWidth(62)
        self.colorbar.getAxis("right").enableAutoSIPrefix(False)
        self.image_plot.getAxis("left").setWidth(44)
        self.rect_roi = pg.RectROI([0, 0], [1, 1], pen=pg.mkPen("#ff5050", width=2), snapSize=1.0,
                                   translateSnap=True, scaleSnap=True)
        self.poly_roi = pg.PolyLineROI([[0, 0], [1, 0], [1, 1]], closed=True, pen=pg.mkPen("#50c8ff", width=2))
        for roi in (self.rect_roi, self.poly_roi):
            roi.setVisible(False)
            roi.setZValue(10)
            self.image_plot.addItem(roi)
            roi.sigRegionChanged.connect(self._selection_changed)
        self.selection_combo.currentIndexChanged.connect(self._selection_mode_changed)
        self.image_widget.scene().sigMouseMoved.connect(self._mouse_moved)
        lay.addWidget(self.image_widget, 1)
        self.image_tabs.addTab(panel, "Counts")
        self.image_panel = panel

        # Analysis-map tab (S-parameter or Li map).
        amap = QtWidgets.QWidget()
        alay = QtWidgets.QVBoxLayout(amap)
        self.map_widget = pg.GraphicsLayoutWidget()
        self.map_plot = self.map_widget.addPlot(title="no map yet: use the analysis buttons")
        self.map_plot.setAspectLocked(True)
        self.map_plot.invertY(True)
        self.map_item = pg.ImageItem(axisOrder="row-major")
        self.map_plot.addItem(self.map_item)
        self.map_bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("magma"), interactive=True, width=18)
        self.map_bar.setImageItem(self.map_item, insert_in=self.map_plot)
        self.map_bar.getAxis("right").enableAutoSIPrefix(False)
        alay.addWidget(self.map_widget)
        self.image_tabs.addTab(amap, "Analysis map")
        self.map_panel = amap
        return self.image_tabs

    def _build_spectrum_panel(self):
        panel = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(panel)
        bar = QtWidgets.QHBoxLayout()
        self.log_y_box = QtWidgets.QCheckBox("log y")
        self.log_y_box.setChecked(True)
        self.log_y_box.toggled.connect(self._log_y_toggled)
        self.all_energies_button = QtWidgets.QPushButton("All energies")
        self.all_energies_button.clicked.connect(self.set_full_window)
        self.compton_button = QtWidgets.QPushButton("Compton peak")
        self.compton_button.setToolTip("count image over the Compton peak window (needs an energy calibration)")
        self.compton_button.clicked.connect(self.set_compton_window)
        self.window_label = QtWidgets.QLabel("window: all energies")
        for w in (self.log_y_box, self.all_energies_button, self.compton_button):
            bar.addWidget(w)
        bar.addStretch(1)
        self.cursor_label = QtWidgets.QLabel("")
        bar.addWidget(self.cursor_label)
        bar.addSpacing(12)
        bar.addWidget(self.window_label)
        lay.addLayout(bar)
        self.spectrum_widget = pg.PlotWidget()
        plot = self.spectrum_plot = self.spectrum_widget.getPlotItem()
        # No grid: grid lines are drawn by the axes, so with a grid every curve update
        # repaints both axes, which doubles the cost of a refresh. The cursor readout
        # gives exact energies instead.
        plot.getAxis("left").setWidth(62)
        plot.setLabel("left", "counts per bin")
        plot.setLabel("bottom", "energy", units=None)
        self.legend = plot.addLegend(offset=(-10, 10))
        self.summed_curve = plot.plot([0, 1], [0], stepMode="center", pen=pg.mkPen("#c8c8c8", width=1),
                                      name="summed, all pixels")
        self.selection_curve = plot.plot([0, 1], [0], stepMode="center", pen=pg.mkPen("#ffb000", width=2),
                                         name="selection")
        self.fit_curve = plot.plot([], [], pen=pg.mkPen("#ff3030", width=2, style=QtCore.Qt.DashLine))
        plot.setLogMode(y=True)
        plot.enableAutoRange(x=False, y=False)
        self._y_log = None
        self.region = pg.LinearRegionItem(values=(0, 1), brush=pg.mkBrush(80, 160, 255, 50))
        self._region_brushes = (pg.mkBrush(80, 160, 255, 50), pg.mkBrush(0, 0, 0, 0))
        self.region.setZValue(-10)
        self.region.sigRegionChangeFinished.connect(self._region_dragged)
        plot.addItem(self.region)
        self.spectrum_widget.scene().sigMouseMoved.connect(self._spectrum_mouse_moved)
        lay.addWidget(self.spectrum_widget, 1)
        self.spectrum_panel = panel
        return panel

    def _build_rates_panel(self):
        box = QtWidgets.QGroupBox("Rates")
        form = QtWidgets.QFormLayout(box)
        self.rate_labels = {}
        for key, text in (("frames_per_s", "frames/s"), ("events_per_s", "events/s"), ("occupancy", "occupancy"),
                          ("dropped", "dropped frames"), ("corrupt", "corrupt messages"), ("elapsed", "elapsed"),
                          ("frames", "frames"), ("events", "events"), ("refresh_hz", "display refresh"),
                          ("state", "state")):
            label = QtWidgets.QLabel("–")
            label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
            form.addRow(text, label)
            self.rate_labels[key] = label
        self.rates_panel = box
        return box

    def _build_controls_panel(self):
        box = QtWidgets.QGroupBox("Acquisition and processing")
        lay = QtWidgets.QVBoxLayout(box)
        row = QtWidgets.QHBoxLayout()
        self.pause_button = QtWidgets.QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self.set_paused)
        self.reset_button = QtWidgets.QPushButton("Reset")
        self.reset_button.setToolTip("zero the accumulated cube and counters")
        self.reset_button.clicked.connect(self.reset)
        row.addWidget(self.pause_button)
        row.addWidget(self.reset_button)
        lay.addLayout(row)

        form = QtWidgets.QFormLayout()
        cfg = self.processor.config
        self.threshold_spin = QtWidgets.QDoubleSpinBox()
        self.threshold_spin.setRange(0, 65535)
        self.threshold_spin.setDecimals(0)
        self.threshold_spin.setSuffix(" ADU")
        if np.ndim(cfg.threshold) == 0:
            self.threshold_spin.setValue(float(cfg.threshold))
        else:
            self.threshold_spin.setSpecialValueText("per-pixel map")
            self.threshold_spin.setValue(0)
        self.sharing_combo = QtWidgets.QComboBox()
        self.sharing_combo.addItems(["none", "csd", "csa"])
        self.sharing_combo.setCurrentText(cfg.charge_sharing)
        self.next_frame_box = QtWidgets.QCheckBox("next-frame correction")
        self.next_frame_box.setChecked(cfg.next_frame)
        self.calibration_button = QtWidgets.QPushButton("calibration file…")
        self.calibration_button.setToolTip("hexspec HDF5 calibration (gradients, intercepts) or a JSON/TOML config")
        self.calibration_button.clicked.connect(self._choose_calibration)
        self.calibration_label = QtWidgets.QLabel("calibrated" if cfg.calibrated else "none (ADU)")
        form.addRow("threshold", self.threshold_spin)
        form.addRow("charge sharing", self.sharing_combo)
        form.addRow("", self.next_frame_box)
        form.addRow(self.calibration_button, self.calibration_label)
        lay.addLayout(form)
        self.apply_button = QtWidgets.QPushButton("Apply settings (restarts accumulation)")
        self.apply_button.clicked.connect(self._apply_clicked)
        lay.addWidget(self.apply_button)

        row = QtWidgets.QHBoxLayout()
        self.save_button = QtWidgets.QPushButton("Save cube…")
        self.save_button.clicked.connect(self._save_clicked)
        self.export_combo = QtWidgets.QComboBox()
        self.export_combo.addItems(PANELS)
        self.export_button = QtWidgets.QPushButton("Export PNG…")
        self.export_button.clicked.connect(self._export_clicked)
        row.addWidget(self.save_button)
        row.addWidget(self.export_combo)
        row.addWidget(self.export_button)
        lay.addLayout(row)
        lay.addStretch(1)
        self.controls_panel = box
        return box

    def _build_analysis_panel(self):
        box = QtWidgets.QGroupBox("Analysis (on demand)")
        lay = QtWidgets.QVBoxLayout(box)
        form = QtWidgets.QFormLayout()
        self.e1_spin = QtWidgets.QDoubleSpinBox()
        self.e1_spin.setRange(1.0, 1000.0)
        self.e1_spin.setDecimals(2)
        self.e1_spin.setSuffix(" keV")
        self.e1_spin.setValue(self.e1_kev)
        self.e1_spin.valueChanged.connect(lambda v: setattr(self, "e1_kev", float(v)))
        form.addRow("incident E1", self.e1_spin)
        lay.addLayout(form)
        self.fit_button = QtWidgets.QPushButton("Fit Compton peak (selection)")
        self.fit_button.clicked.connect(self.fit_peak)
        self.smap_button = QtWidgets.QPushButton("S-parameter map")
        self.smap_button.clicked.connect(self.compute_s_map)
        row = QtWidgets.QHBoxLayout()
        self.li_cal_button = QtWidgets.QPushButton("Li calibration…")
        self.li_cal_button.clicked.connect(self._choose_li_calibration)
        self.li_button = QtWidgets.QPushButton("Li map")
        self.li_button.clicked.connect(self.compute_li_map)
        row.addWidget(self.li_cal_button)
        row.addWidget(self.li_button)
        for w in (self.fit_button, self.smap_button):
            lay.addWidget(w)
        lay.addLayout(row)
        self.analysis_label = QtWidgets.QLabel("")
        self.analysis_label.setWordWrap(True)
        self.analysis_label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.analysis_label.setAlignment(QtCore.Qt.AlignTop | QtCore.Qt.AlignLeft)
        lay.addWidget(self.analysis_label, 1)
        self.analysis_panel = box
        self.last_s_map = None
        self.last_li_map = None
        self.last_fit = None
        return box

    # ================================================================= refresh
    def refresh(self):
        """Redraw from the processor's current cube (called by the timer)."""
        now = time.monotonic()
        self.refresh_count += 1
        self._tick_times.append(now)
        proc = self.processor
        counters = proc.counters()
        self._update_rates(counters, now)
        self._poll_analysis()
        if not proc.ready:
            return
        edges = proc.edges
        if self._edges is None or not np.array_equal(edges, self._edges) or proc.unit != self._unit:
            self._axes_changed(edges, proc.unit)
        if self._shape != proc.shape:
            self._shape_changed(proc.shape)
        key = (counters["frames"], counters["events"], self.window_range,
               self._selection_key(), self.log_image_box.isChecked(), self.log_y_box.isChecked())
        if key == self._drawn_key:
            return
        self._drawn_key = key
        counts, summed = proc.image_and_spectrum(*(self.window_range or (None, None)))
        if counts is None:
            return
        self._draw_image(counts)
        self._draw_spectra(summed)

    def _update_rates(self, c, now):
        hist = self._rate_history
        if hist and (c["frames"] < hist[-1][1] or c["elapsed_s"] < hist[-1][3]):
            hist.clear()     # reset: rates restart
        hist.append((now, c["frames"], c["events"], c["elapsed_s"]))
        # Rates over the last ~2 s of refreshes: steady to read, quick to follow changes.
        old = next((h for h in hist if now - h[0] <= 2.0), hist[0])
        dt = now - old[0]
        fps = (c["frames"] - old[1]) / dt if dt > 0 else 0.0
        eps = (c["events"] - old[2]) / dt if dt > 0 else 0.0
        ticks = [t for t in self._tick_times if now - t <= 2.0]
        refresh_hz = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0
        self.frames_per_s, self.events_per_s, self.refresh_hz = fps, eps, refresh_hz
        if c["error"]:
            state = f"source failed: {c['error']}"
        elif c["finished"]:
            state = "source ended"
        elif self.processor.paused:
            state = "paused"
        elif c["idle_s"] is None:
            state = "waiting for data"
        elif c["idle_s"] > 2.0:
            state = f"no data for {c['idle_s']:.0f} s"
        else:
            state = "running"
        text = {
            "frames_per_s": f"{fps:,.0f}", "events_per_s": f"{eps:,.0f}",
            "occupancy": f"{100.0 * c['occupancy']:.3f} %", "dropped": f"{c['dropped']:,d}",
            "corrupt": f"{c['corrupt']:,d}", "elapsed": _format_elapsed(c["elapsed_s"]),
            "frames": f"{c['frames']:,d}" + (f" (+{c['frames_skipped']:,d} skipped)" if c["frames_skipped"] else ""),
            "events": f"{c['events']:,d}", "refresh_hz": f"{refresh_hz:.1f} Hz", "state": state,
        }
        for key, value in text.items():
            label = self.rate_labels[key]
            if label.text() != value:      # an unchanged label need not be laid out and repainted
                label.setText(value)
        for key, alarm in (("dropped", c["dropped"]), ("corrupt", c["corrupt"]), ("state", c["error"])):
            style = "color: #e04040" if alarm else ""
            if self.rate_labels[key].styleSheet() != style:
                self.rate_labels[key].setStyleSheet(style)

    def _axes_changed(self, edges, unit):
        self._edges, self._unit = edges.copy(), unit
        self._centers = 0.5 * (edges[:-1] + edges[1:])
        self.spectrum_plot.setLabel("bottom", f"energy ({unit})")
        self.compton_button.setEnabled(unit == "keV")
        self.set_full_window()
        self.spectrum_plot.setXRange(edges[0], edges[-1], padding=0.01)

    def _shape_changed(self, shape):
        self._shape = shape
        rows, cols = shape
        self.rect_roi.setPos((cols // 4, rows // 4), update=False)
        self.rect_roi.setSize((max(1, cols // 2), max(1, rows // 2)))
        self.poly_roi.setPoints([[cols * 0.3, rows * 0.2], [cols * 0.8, rows * 0.35],
                                 [cols * 0.6, rows * 0.8], [cols * 0.2, rows * 0.65]], closed=True)
        self.image_plot.setRange(xRange=(0, cols), yRange=(0, rows), padding=0.02)
        self._mask_cache = None

    def _draw_image(self, counts):
        self.last_image = counts
        shown = np.log10(1.0 + counts) if self.log_image_box.isChecked() else counts.astype(np.float32)
        self.image_item.setImage(shown, autoLevels=False)
        if self.autoscale_box.isChecked():
            levels = autoscale_levels(*robust_range(shown), self.colorbar.levels())
            if levels is not None:
                self.colorbar.setLevels(levels)
        if self.window_range is None:
            title = "counts, all energies"
        else:
            title = f"counts, {self.window_range[0]:.1f}–{self.window_range[1]:.1f} {self._unit}"
        bar_label = "log10(1 + counts)" if self.log_image_box.isChecked() else "counts"
        # Titles and labels live inside the plot layout: setting them, even to the same
        # text, re-lays out and repaints every axis, which is most of a refresh offscreen.
        if (title, bar_label) != getattr(self, "_image_labels", None):
            self._image_labels = (title, bar_label)
            self.image_plot.setTitle(title)
            self.colorbar.axis.setLabel(bar_label)
        self.total_label.setText(f"total {int(counts.sum()):,d} counts")

    def _draw_spectra(self, summed):
        selection = self.selection_spectrum()
        self.last_summed_spectrum = summed
        self.last_selection_spectrum = selection
        log_y = self.log_y_box.isChecked()

        def y(values):
            # Empty bins cannot be drawn on a log axis; a floor below one count keeps the steps connected.
            v = values.astype(np.float64)
            return np.maximum(v, 0.5) if log_y else v

        self.summed_curve.setData(self._edges, y(summed), stepMode="center")
        shown = selection is not None
        if shown != self.selection_curve.isVisible():
            self.selection_curve.setVisible(shown)
            # The legend lists the selection only while there is one.
            if shown:
                self.legend.addItem(self.selection_curve, self.selection_mode())
            else:
                self.legend.removeItem(self.selection_curve)
        if selection is not None:
            self.selection_curve.setData(self._edges, y(selection), stepMode="center")
        self._autorange_y(float(summed.max()) if summed.size else 0.0, log_y)

    def _autorange_y(self, peak, log_y):
        # pyqtgraph's own auto-range moves the axis on every refresh while counts grow,
        # and repainting axes is the dearest part of a refresh; stepping the range with
        # headroom moves it about once per doubling of the counts.
        if log_y:
            top = math.log10(max(peak, 1.0))
            current = getattr(self, "_y_top", None)
            if current is None or top > current or top < current - 1.5 or self._y_log is not True:
                self._y_top, self._y_log = top + 0.5, True
                self.spectrum_plot.setYRange(math.log10(0.5), self._y_top, padding=0)
        else:
            current = getattr(self, "_y_top", None)
            if current is None or peak > current or peak < current / 2.5 or self._y_log is not False:
                self._y_top, self._y_log = max(peak, 1.0) * 1.25, False
                self.spectrum_plot.setYRange(0, self._y_top, padding=0)

    @property
    def has_energy_axis(self) -> bool:
        """True once the first data have set the energy bins (windows can be chosen)."""
        return self._edges is not None

    # ================================================================= selection (cursor pixel / ROI)
    def selection_mode(self) -> str:
        return self.selection_combo.currentText()

    def set_selection_mode(self, mode: str) -> None:
        """"cursor pixel", "rectangle" or "polygon"."""
        self.selection_combo.setCurrentText(mode)

    def _selection_mode_changed(self, _index):
        mode = self.selection_mode()
        self.rect_roi.setVisible(mode == "rectangle")
        self.poly_roi.setVisible(mode == "polygon")
        self._mask_cache = None
        self._drawn_key = None
        if self.selection_curve.isVisible():
            self.legend.removeItem(self.selection_curve)
            self.legend.addItem(self.selection_curve, mode)
        self._request_redraw()

    def _selection_changed(self, *_):
        self._mask_cache = None
        self._drawn_key = None

    def _selection_key(self):
        mode = self.selection_mode()
        if mode == "cursor pixel":
            return (mode, self.hover_pixel)
        return (mode, id(self._mask_cache), self._roi_state_key())

    def _roi_state_key(self):
        roi = self.rect_roi if self.selection_mode() == "rectangle" else self.poly_roi
        state = roi.getState()
        return repr((state["pos"], state["size"], state.get("points")))

    def polygon_vertices(self) -> np.ndarray:
        """Vertices (x, y) of the polygon ROI in image pixel units."""
        pts = [self.poly_roi.mapToParent(h.pos()) for h in self.poly_roi.getHandles()]
        return np.array([[p.x(), p.y()] for p in pts])

    def selection_mask(self):
        """(rows, cols) bool mask of the active ROI, or None in cursor-pixel mode."""
        if self._shape is None or self.selection_mode() == "cursor pixel":
            return None
        if self._mask_cache is None:
            if self.selection_mode() == "rectangle":
                pos, size = self.rect_roi.pos(), self.rect_roi.size()
                self._mask_cache = rect_mask(self._shape, pos.x(), pos.y(), size.x(), size.y())
            else:
                self._mask_cache = polygon_mask(self._shape, self.polygon_vertices())
        return self._mask_cache

    def selection_spectrum(self):
        """Counts per bin of the cursor pixel or of the ROI; None when nothing is selected."""
        if self.selection_mode() == "cursor pixel":
            if self.hover_pixel is None:
                return None
            return self.processor.pixel_spectrum(*self.hover_pixel)
        return self.processor.spectrum(self.selection_mask())

    def set_hover_pixel(self, row: int, col: int) -> None:
        """Select the pixel whose spectrum is shown in cursor-pixel mode."""
        self.hover_pixel = (int(row), int(col))
        value = ""
        if self.last_image is not None and self.last_image.shape == self._shape:
            value = f": {int(self.last_image[row, col]):,d} counts"
        self.pixel_label.setText(f"pixel (row {row}, col {col}){value}")

    def _mouse_moved(self, pos):
        if self._shape is None or not self.image_plot.vb.sceneBoundingRect().contains(pos):
            return
        p = self.image_plot.vb.mapSceneToView(pos)
        row, col = int(math.floor(p.y())), int(math.floor(p.x()))
        if 0 <= row < self._shape[0] and 0 <= col < self._shape[1] and (row, col) != self.hover_pixel:
            self.set_hover_pixel(row, col)

    def _spectrum_mouse_moved(self, pos):
        vb = self.spectrum_plot.vb
        if self._edges is None or not vb.sceneBoundingRect().contains(pos):
            return
        energy = vb.mapSceneToView(pos).x()
        k = int(np.searchsorted(self._edges, energy, side="right")) - 1
        if 0 <= k < len(self._edges) - 1 and self.last_summed_spectrum is not None:
            text = f"{energy:.2f} {self._unit}: summed {int(self.last_summed_spectrum[k]):,d}"
            if self.last_selection_spectrum is not None:
                text += f", selection {int(self.last_selection_spectrum[k]):,d}"
            self.cursor_label.setText(text)

    # ================================================================= energy window
    def set_window(self, emin: float, emax: float) -> None:
        """Show the count image over [emin, emax) (keV, or ADU uncalibrated)."""
        emin, emax = sorted((float(emin), float(emax)))
        self.window_range = (emin, emax)
        self.region.blockSignals(True)
        self.region.setRegion((emin, emax))
        self.region.blockSignals(False)
        self.region.setBrush(self._region_brushes[0])
        self.window_label.setText(f"window: {emin:.1f}–{emax:.1f} {self._unit or ''}")
        self._request_redraw()

    def set_full_window(self) -> None:
        """Show the count image over all energies."""
        self.window_range = None
        if self._edges is not None:
            self.region.blockSignals(True)
            self.region.setRegion((self._edges[0], self._edges[-1]))
            self.region.blockSignals(False)
        # All energies: only the two edges show (drag one in to choose a window), no tint.
        self.region.setBrush(self._region_brushes[1])
        self.window_label.setText("window: all energies")
        self._request_redraw()

    def set_compton_window(self) -> None:
        """One click to the Compton peak window around E_C(90 deg) of the incident energy."""
        if self._unit != "keV":
            self._say("The Compton window needs an energy calibration (energies are in ADU).")
            return
        try:
            self.set_window(*analysis.compton_window(self.e1_kev))
        except HexspecError as exc:
            self._say(str(exc))

    def _region_dragged(self):
        lo, hi = self.region.getRegion()
        if self._edges is not None and lo <= self._edges[0] and hi >= self._edges[-1]:
            self.set_full_window()
        else:
            self.set_window(lo, hi)

    def _log_y_toggled(self, on):
        self.spectrum_plot.setLogMode(y=bool(on))
        self._request_redraw()

    def _user_levels(self, *_):
        # Dragging the colour bar means the user wants fixed levels.
        self.autoscale_box.setChecked(False)

    def _request_redraw(self):
        self._drawn_key = None

    # ================================================================= controls
    def set_paused(self, paused: bool) -> None:
        self.processor.pause(bool(paused))
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(bool(paused))
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.blockSignals(False)

    def reset(self) -> None:
        """Zero the accumulated cube and counters."""
        self.processor.reset()
        self._rate_history.clear()
        self._request_redraw()
        self._say("accumulation reset")

    def apply_settings(self, threshold=None, charge_sharing=None, next_frame=None, calibration_path=None) -> None:
        """Restart processing with new settings; unspecified ones keep their values.

        ``calibration_path`` is a hexspec HDF5 calibration (gradients, intercepts) or a
        JSON/TOML processing-config file. Errors are shown, never raised: the live view stays up.
        """
        try:
            changes = {}
            if calibration_path is not None:
                changes.update(self._read_calibration(calibration_path))
            if threshold is not None:
                changes["threshold"] = float(threshold)
            if charge_sharing is not None:
                changes["charge_sharing"] = charge_sharing
            if next_frame is not None:
                changes["next_frame"] = bool(next_frame)
            config = self.processor.config.replace(**changes)
            if "gradients" in changes and self.processor.config.bins is not None and not changes.get("bins"):
                # ADU bins make no sense once energies are in keV: use the calibrated default.
                config = config.replace(bins=None)
            self.processor.set_config(config)
        except HexspecError as exc:
            self._say(f"settings not applied: {exc}", error=True)
            return
        self.calibration_label.setText("calibrated" if config.calibrated else "none (ADU)")
        self._rate_history.clear()
        self._request_redraw()
        self._say("settings applied; accumulation restarted")

    def _read_calibration(self, path):
        path = Path(path)
        if path.suffix.lower() in (".json", ".toml"):
            from ..config import ProcessingConfig
            cfg = ProcessingConfig.from_file(path)
            return {f: getattr(cfg, f) for f in cfg.to_dict()}
        try:
            from ..io.hdf5 import read_calibration
        except ImportError as exc:
            raise analysis.AnalysisUnavailable(f"reading HDF5 calibrations is not available ({exc})") from None
        cal = read_calibration(path)
        return {"gradients": cal["gradients"], "intercepts": cal["intercepts"]}

    def _apply_clicked(self):
        # A per-pixel threshold map shows as the spin box's special text at 0: keep the map.
        keeps_map = bool(self.threshold_spin.specialValueText()) and self.threshold_spin.value() == 0
        path, self._chosen_calibration = self._chosen_calibration, None
        self.apply_settings(threshold=None if keeps_map else self.threshold_spin.value(),
                            charge_sharing=self.sharing_combo.currentText(),
                            next_frame=self.next_frame_box.isChecked(),
                            calibration_path=path)

    def _choose_calibration(self):
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Energy calibration or processing config", "",
                                                        "Calibration (*.h5 *.hdf5 *.nxs *.json *.toml)")
        if path:
            self._chosen_calibration = path
            self.calibration_label.setText(f"{Path(path).name} (press Apply)")

    def save_cube(self, path) -> Path:
        """Write a copy of the current cube (with the processing config) to hexspec HDF5."""
        cube = self.processor.cube()
        if cube is None:
            raise analysis.AnalysisUnavailable("no data yet: nothing to save")
        try:
            from ..io.hdf5 import write_cube
        except ImportError as exc:
            raise analysis.AnalysisUnavailable(f"writing HDF5 is not available ({exc})") from None
        write_cube(path, cube, config=self.processor.config)
        self._say(f"cube saved to {path}")
        return Path(path)

    def _save_clicked(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save spectral cube", "cube.h5", "HDF5 (*.h5 *.hdf5)")
        if path:
            try:
                self.save_cube(path)
            except HexspecError as exc:
                self._say(f"not saved: {exc}", error=True)
            except OSError as exc:
                self._say(f"not saved: {path}: {exc}", error=True)

    def panel_widget(self, panel: str):
        """The widget of one panel: "window", "image", "spectrum", "rates" or "analysis"."""
        widgets = {"window": self, "image": self.image_panel, "spectrum": self.spectrum_panel,
                   "rates": self.rates_panel, "analysis": self.map_panel}
        if panel not in widgets:
            raise analysis.AnalysisUnavailable(f"unknown panel {panel!r}; expected one of {', '.join(PANELS)}")
        return widgets[panel]

    def export_png(self, panel: str, path) -> Path:
        """Save a picture of one panel (as drawn now) to a PNG file."""
        widget = self.panel_widget(panel)
        pixmap = widget.grab()
        if pixmap.isNull() or not pixmap.save(str(path), "PNG"):
            raise analysis.AnalysisUnavailable(f"could not write the {panel} panel to {path}")
        return Path(path)

    def _export_clicked(self):
        panel = self.export_combo.currentText()
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, f"Export {panel} as PNG", f"{panel}.png", "PNG (*.png)")
        if path:
            try:
                self.export_png(panel, path)
                self._say(f"{panel} saved to {path}")
            except HexspecError as exc:
                self._say(str(exc), error=True)

    # ================================================================= analyses
    def _analysis_window(self):
        if self.window_range is not None:
            return self.window_range
        return analysis.compton_window(self.e1_kev)

    def fit_peak(self) -> None:
        """Fit the Compton peak of the selection (or of the summed spectrum when nothing is selected)."""
        counts = self.selection_spectrum()
        what = self.selection_mode()
        if counts is None:
            counts, what = self.processor.spectrum(), "summed spectrum"
        if counts is None:
            self._say("no data yet", error=True)
            return
        centers = 0.5 * (self.processor.edges[:-1] + self.processor.edges[1:])
        unit = self.processor.unit
        try:
            window = self._analysis_window() if unit == "keV" else None
            self._start_analysis(f"peak fit ({what})", analysis.fit_compton_peak, centers, counts, window, unit)
        except HexspecError as exc:
            self._show_analysis(str(exc), error=True)

    def compute_s_map(self) -> None:
        """S-parameter map of a copy of the current cube (runs in the background)."""
        cube = self.processor.cube()
        if cube is None:
            self._show_analysis("no data yet", error=True)
            return
        self._start_analysis("S-parameter map", analysis.s_parameter_map, cube, self.e1_kev)

    def compute_li_map(self) -> None:
        """Li map (1 - x) from the last S-parameter map and the loaded Li calibration."""
        if self.last_s_map is None:
            self._show_analysis("compute the S-parameter map first", error=True)
            return
        self._start_analysis("Li map", analysis.lithium_map, self.last_s_map, self.lithium_calibration)

    def _choose_li_calibration(self):
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Li calibration", "", "Li calibration (*.json)")
        if path:
            self.load_lithium_calibration(path)

    def load_lithium_calibration(self, path) -> None:
        """Read a Li calibration (S -> 1 - x) saved by ``LithiumCalibration.save``."""
        try:
            self.lithium_calibration = analysis.load_lithium_calibration(path)
        except HexspecError as exc:
            self._show_analysis(str(exc), error=True)
            return
        self._show_analysis(f"Li calibration loaded from {Path(path).name}")

    def _start_analysis(self, name, func, *args):
        if self._analysis_job is not None and not self._analysis_job[1].done():
            self._show_analysis(f"{self._analysis_job[0]} still running", error=True)
            return
        self._show_analysis(f"{name}: running…")
        self._analysis_job = (name, self._analysis_pool.submit(func, *args))

    def wait_for_analysis(self, timeout: float = 60.0) -> None:
        """Block until the running analysis ends and show its result (for scripts and tests)."""
        if self._analysis_job is not None:
            concurrent.futures.wait([self._analysis_job[1]], timeout=timeout)
        self._poll_analysis()

    def _poll_analysis(self):
        if self._analysis_job is None or not self._analysis_job[1].done():
            return
        name, job = self._analysis_job
        self._analysis_job = None
        try:
            result = job.result()
        except HexspecError as exc:
            self._show_analysis(f"{name}: {exc}", error=True)
            return
        except Exception as exc:   # an analysis bug must not take the live view down
            self._show_analysis(f"{name} failed: {type(exc).__name__}: {exc}", error=True)
            return
        if name.startswith("peak fit"):
            if self.last_fit is None:
                self.legend.addItem(self.fit_curve, "peak fit")
            self.last_fit = result.fit
            self.fit_curve.setData(result.energy, np.maximum(result.model, 0.5) if self.log_y_box.isChecked()
                                   else result.model)
            self._show_analysis(f"{name}\n{analysis.describe_fit(result.fit)}")
        elif name == "S-parameter map":
            self.last_s_map = result
            s = np.asarray(result.s, dtype=np.float64)
            self._show_map(s, "S-parameter", f"S-parameter map (E1 = {self.e1_kev:g} keV)")
            n_ok = int(np.count_nonzero(result.ok))
            median = f"median S {np.nanmedian(s):.4f}" if n_ok else "no pixel has enough counts yet"
            self._show_analysis(f"{name}: {n_ok} of {s.size} pixels with enough counts; {median}")
        elif name == "Li map":
            self.last_li_map = result
            li = np.asarray(result.li, dtype=np.float64)
            self._show_map(li, "1 − x", "Li content 1 − x")
            n_ok = int(np.count_nonzero(result.ok))
            n_out = int(np.count_nonzero(result.extrapolated))
            median = f"median 1 − x = {np.nanmedian(li):.3f}" if n_ok else "no pixel has an S value"
            self._show_analysis(f"{name}: {median}; {n_out} pixels outside the calibrated S range")

    def _show_map(self, values, label, title):
        values = np.asarray(values, dtype=np.float64)
        self.map_item.setImage(values, autoLevels=False)
        finite = values[np.isfinite(values)]
        lo, hi = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99))) if finite.size else (0.0, 1.0)
        self.map_bar.setLevels((lo, hi if hi > lo else lo + 1e-9))
        self.map_bar.axis.setLabel(label)
        self.map_plot.setTitle(title)
        self.image_tabs.setCurrentWidget(self.map_panel)

    def _show_analysis(self, text, error=False):
        self.analysis_message = text
        self.analysis_label.setText(text)
        self.analysis_label.setStyleSheet("color: #e04040" if error else "")

    def _say(self, text, error=False):
        self.status.showMessage(text, 10000)
        if error:
            self._show_analysis(text, error=True)

    # ================================================================= shutdown
    def closeEvent(self, event):
        self.timer.stop()
        self.processor.stop(timeout=1.0)
        self._analysis_pool.shutdown(wait=False, cancel_futures=True)
        super().closeEvent(event)
