"""The live viewer window, offscreen: panels follow the data, ROI spectra, energy window, liveness.

Expected numbers come from the frames themselves with plain numpy (charge-sharing
handling and next-frame correction off: every value above the threshold is one
event of energy ADU * gradient + intercept).
"""

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"   # before any QApplication exists

import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

import hexspec as hx
from hexspec.viewer import LiveProcessor
from hexspec.viewer.window import ViewerWindow

SHAPE = (20, 28)
GRADIENT_KEV = 0.25     # keV per ADU: bin edges and energies are exact in binary
BINS = hx.EnergyBins(0, 200, 0.5)


def make_frames(n_frames=400, seed=3):
    """Sparse frames in two energy groups with a spatial split the tests can check.

    Columns < 14 see a line at 60 keV (240 ADU); columns >= 14 a line at 120 keV (480 ADU);
    every pixel also sees a flat 10-190 keV continuum.
    """
    rng = np.random.default_rng(seed)
    frames = np.zeros((n_frames, *SHAPE), np.uint16)
    hits = rng.random(frames.shape) < 0.04
    cols = np.broadcast_to(np.arange(SHAPE[1]), frames.shape)
    line_adu = np.where(cols < 14, 240, 480)
    in_line = rng.random(frames.shape) < 0.7
    adu = np.where(in_line, line_adu + rng.integers(-4, 5, frames.shape), rng.integers(40, 760, frames.shape))
    frames[hits] = adu[hits]
    return frames


def config(**kw):
    base = dict(threshold=20, next_frame=False, charge_sharing="none", gradients=GRADIENT_KEV, intercepts=0.0,
                bins=BINS)
    base.update(kw)
    return hx.ProcessingConfig(**base)


def numpy_cube(frames, threshold=20):
    cube = np.zeros((*SHAPE, BINS.n), np.int64)
    f = frames.astype(np.float64)
    for r in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            v = f[:, r, c]
            cube[r, c] = np.histogram(v[v > threshold] * GRADIENT_KEV, bins=BINS.edges)[0]
    return cube


def batches_of(frames, size=100):
    return [hx.FrameBatch(frames[i:i + size], np.arange(i, i + len(frames[i:i + size])))
            for i in range(0, len(frames), size)]


def gated_source(frames):
    """A source that yields the next of ``parts`` (the batches of ``frames``) each time
    the gate is released; returns (gate, source, parts)."""
    gate = threading.Semaphore(0)
    parts = batches_of(frames)

    def source():
        for b in parts:
            gate.acquire()
            yield b

    return gate, source, parts


@pytest.fixture
def frames():
    return make_frames()


def open_window(qtbot, source, cfg=None, **kw):
    proc = LiveProcessor(source, cfg or config())
    win = ViewerWindow(proc, source_label="test", **kw)
    qtbot.addWidget(win)
    win.show()
    return win


@pytest.fixture
def finished_window(qtbot, frames):
    """A window whose finite source has been fully processed and drawn."""
    win = open_window(qtbot, batches_of(frames))
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    return win


def test_panels_update_when_batches_arrive(qtbot, frames):
    gate, source, _ = gated_source(frames)
    win = open_window(qtbot, source())
    gate.release()
    qtbot.waitUntil(lambda: win.rate_labels["frames"].text() == "100", timeout=20000)
    first_total = int(win.last_image.sum())
    gate.release()
    qtbot.waitUntil(lambda: win.rate_labels["frames"].text() == "200", timeout=20000)
    cube = numpy_cube(frames[:200])
    assert first_total == numpy_cube(frames[:100]).sum()
    np.testing.assert_array_equal(win.last_image, cube.sum(axis=2))
    np.testing.assert_array_equal(win.last_summed_spectrum, cube.sum(axis=(0, 1)))
    assert win.rate_labels["events"].text() == f"{int(cube.sum()):,d}"


def test_rectangle_roi_spectrum_equals_the_cube_summed_over_the_roi(finished_window, frames):
    win = finished_window
    win.set_selection_mode("rectangle")
    win.rect_roi.setPos((3, 5))
    win.rect_roi.setSize((10, 7))       # columns 3..12, rows 5..11
    win.refresh()
    expected = numpy_cube(frames)[5:12, 3:13].sum(axis=(0, 1))
    np.testing.assert_array_equal(win.last_selection_spectrum, expected)


def test_polygon_roi_spectrum_equals_the_cube_summed_over_the_pixels_inside(finished_window, frames):
    win = finished_window
    win.set_selection_mode("polygon")
    # Triangle with corners off the pixel-centre lattice: centre (c+.5, r+.5) is inside
    # when c >= 2, r >= 1 and (c - 2) + (r - 1) + 1 < 10.2.
    win.poly_roi.setPos((0, 0))
    win.poly_roi.setPoints([[2, 1], [12.2, 1], [2, 11.2]], closed=True)
    win.refresh()
    r, c = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    inside = (c >= 2) & (r >= 1) & ((c - 2) + (r - 1) + 1 < 10.2)
    expected = numpy_cube(frames)[inside].sum(axis=0)
    np.testing.assert_array_equal(win.last_selection_spectrum, expected)


def test_cursor_pixel_spectrum_is_that_pixels_histogram(finished_window, frames):
    win = finished_window
    win.set_selection_mode("cursor pixel")
    win.set_hover_pixel(7, 19)
    win.refresh()
    np.testing.assert_array_equal(win.last_selection_spectrum, numpy_cube(frames)[7, 19])
    assert "row 7, col 19" in win.pixel_label.text()


def test_mouse_over_the_image_selects_the_pixel_under_the_cursor(finished_window):
    win = finished_window
    vb = win.image_plot.vb
    scene_pos = vb.mapViewToScene(pg_point(19.5, 7.5))   # x = column, y = row
    win._mouse_moved(scene_pos)
    assert win.hover_pixel == (7, 19)


def pg_point(x, y):
    from pyqtgraph.Qt import QtCore
    return QtCore.QPointF(x, y)


def test_energy_window_changes_the_image_to_the_counts_in_that_window(finished_window, frames):
    win = finished_window
    cube = numpy_cube(frames)
    full = win.last_image.copy()
    win.set_window(55, 65)
    win.refresh()
    centres = BINS.centers
    in_window = (centres >= 55) & (centres < 65)
    np.testing.assert_array_equal(win.last_image, cube[:, :, in_window].sum(axis=2))
    # The 60 keV line is only in columns < 14, so the image changed shape, not just scale.
    assert win.last_image[:, :14].sum() > 10 * win.last_image[:, 14:].sum()
    assert not np.array_equal(win.last_image, full)


def test_dragging_the_region_on_the_spectrum_sets_the_window(finished_window, frames):
    win = finished_window
    win.region.setRegion((115, 125))
    win.region.sigRegionChangeFinished.emit(win.region)
    win.refresh()
    assert win.window_range == (115, 125)
    centres = BINS.centers
    np.testing.assert_array_equal(win.last_image, numpy_cube(frames)[:, :, (centres >= 115) & (centres < 125)].sum(axis=2))


def test_compton_button_sets_the_window_around_the_compton_energy(finished_window):
    win = finished_window
    win.compton_button.click()
    # E_C = 115 / (1 + 115 / 510.99895) = 93.8738 keV at 90 degrees (PHYSICS.md eq. 1), +-4 keV.
    assert win.window_range == pytest.approx((89.8738, 97.8738), abs=1e-3)


def test_all_energies_button_restores_the_full_image(finished_window, frames):
    win = finished_window
    win.set_window(55, 65)
    win.all_energies_button.click()
    win.refresh()
    assert win.window_range is None
    np.testing.assert_array_equal(win.last_image, numpy_cube(frames).sum(axis=2))


def test_compton_window_is_refused_without_a_calibration(qtbot, frames):
    cfg = hx.ProcessingConfig(threshold=20, next_frame=False, charge_sharing="none")
    win = open_window(qtbot, batches_of(frames), cfg)
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    assert not win.compton_button.isEnabled()
    win.set_compton_window()
    assert win.window_range is None
    assert win.spectrum_plot.getAxis("bottom").labelText == "energy (ADU)"


def test_spectrum_axis_is_labelled_in_kev_when_calibrated(finished_window):
    assert finished_window.spectrum_plot.getAxis("bottom").labelText == "energy (keV)"


def test_log_colour_shows_log10_of_one_plus_counts(finished_window):
    win = finished_window
    win.log_image_box.setChecked(True)
    win.refresh()
    np.testing.assert_allclose(win.image_item.image, np.log10(1.0 + win.last_image), rtol=1e-6)


def test_autoscale_levels_span_the_image_from_its_minimum_to_its_995th_permille(finished_window):
    win = finished_window
    lo, hi = win.colorbar.levels()
    low, high = win.last_image.min(), np.percentile(win.last_image, 99.5)
    assert lo == low
    assert high <= hi <= low + 1.25 * (high - low) + 1e-9


def test_autoscale_ignores_a_few_hot_pixels(qtbot, frames):
    hot = frames.copy()
    hot[:, 0, :2] = 300           # two pixels hit in every frame, ~100 x the others' counts
    win = open_window(qtbot, batches_of(hot))
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    _, hi = win.colorbar.levels()
    ordinary = np.sort(win.last_image.ravel())[:-2]
    assert hi <= 1.25 * ordinary.max()


def test_autoscale_follows_a_window_with_fewer_counts(finished_window):
    win = finished_window
    win.set_window(55, 65)
    win.refresh()
    lo, hi = win.colorbar.levels()
    assert lo == win.last_image.min()
    assert np.percentile(win.last_image, 99.5) <= hi <= 1.25 * np.percentile(win.last_image, 99.5)


def test_reset_clears_the_displayed_image_and_counters(finished_window):
    win = finished_window
    win.reset_button.click()
    win.refresh()
    assert win.last_image.sum() == 0
    assert win.rate_labels["frames"].text() == "0"


def test_pause_button_pauses_accumulation(finished_window):
    win = finished_window
    win.pause_button.click()
    assert win.processor.paused and win.pause_button.text() == "Resume"
    win.pause_button.click()
    assert not win.processor.paused


def test_new_threshold_from_the_settings_restarts_with_fewer_events(qtbot, frames):
    gate, source, parts = gated_source(frames)
    win = open_window(qtbot, source())
    gate.release()
    qtbot.waitUntil(lambda: win.processor.counters()["frames"] == 100, timeout=20000)
    win.apply_settings(threshold=300)      # keeps only the 120 keV line and the continuum above 75 keV
    for _ in parts[1:]:
        gate.release()
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    np.testing.assert_array_equal(win.last_image, numpy_cube(frames[100:], threshold=300).sum(axis=2))


def test_calibration_file_switches_the_spectra_to_kev(qtbot, frames, tmp_path):
    hdf5 = pytest.importorskip("hexspec.io.hdf5")
    gate, source, parts = gated_source(frames)
    uncalibrated = hx.ProcessingConfig(threshold=20, next_frame=False, charge_sharing="none")
    win = open_window(qtbot, source(), uncalibrated)
    gate.release()
    qtbot.waitUntil(lambda: win.processor.counters()["frames"] == 100, timeout=20000)
    win.refresh()
    assert win.processor.unit == "ADU"
    path = tmp_path / "calibration.h5"
    hdf5.write_results(path, "calibration", {"gradients": np.full(SHAPE, GRADIENT_KEV), "intercepts": np.zeros(SHAPE)})
    win.apply_settings(calibration_path=path)
    for _ in parts[1:]:
        gate.release()
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    assert win.spectrum_plot.getAxis("bottom").labelText == "energy (keV)"
    # Default calibrated bins: 0-200 keV in 0.25 keV (DESIGN.md); counts from frames 100 on.
    bins = hx.EnergyBins(0, 200, 0.25)
    np.testing.assert_array_equal(win.last_summed_spectrum, numpy_cube_of(frames[100:], bins).sum(axis=(0, 1)))


def test_bad_settings_are_reported_and_the_view_keeps_running(finished_window):
    win = finished_window
    win.apply_settings(calibration_path="/nonexistent/calibration.h5")
    assert "settings not applied" in win.analysis_message
    assert win.timer.isActive()


def test_display_keeps_refreshing_while_a_fast_source_floods_it(qtbot, frames):
    batch = batches_of(frames, size=400)[0]
    stop = threading.Event()

    def flood():
        n = 0
        while not stop.is_set():
            yield hx.FrameBatch(batch.frames, np.arange(n, n + 400))
            n += 400

    win = open_window(qtbot, flood())
    try:
        qtbot.waitUntil(lambda: win.processor.counters()["frames"] > 0, timeout=20000)
        ticks, frames_shown = win.refresh_count, win.processor.counters()["frames"]
        qtbot.waitUntil(lambda: win.refresh_count >= ticks + 10, timeout=20000)
        qtbot.waitUntil(lambda: win.processor.counters()["frames"] > frames_shown, timeout=20000)
        assert int(win.rate_labels["frames"].text().split()[0].replace(",", "")) > 0
    finally:
        stop.set()


def test_display_keeps_refreshing_while_the_source_stalls(qtbot, frames):
    release = threading.Event()
    first = batches_of(frames)[0]

    def stalled():
        yield first
        release.wait(30)       # a detector that stopped sending

    win = open_window(qtbot, stalled())
    try:
        qtbot.waitUntil(lambda: win.rate_labels["frames"].text() == "100", timeout=20000)
        ticks = win.refresh_count
        qtbot.waitUntil(lambda: win.refresh_count >= ticks + 5, timeout=20000)
        assert not win.processor.finished
    finally:
        release.set()


def test_a_failing_source_is_shown_in_the_state_line(qtbot, frames):
    def broken():
        yield batches_of(frames)[0]
        raise hx.ProtocolError("connection lost")

    win = open_window(qtbot, broken())
    qtbot.waitUntil(lambda: "connection lost" in win.rate_labels["state"].text(), timeout=20000)


@pytest.mark.parametrize("panel", ["window", "image", "spectrum", "rates"])
def test_export_png_of_a_panel_is_a_picture_that_is_not_blank(finished_window, tmp_path, panel):
    from pyqtgraph.Qt import QtGui
    path = finished_window.export_png(panel, tmp_path / f"{panel}.png")
    img = QtGui.QImage(str(path))
    assert not img.isNull() and img.width() > 100 and img.height() > 100
    assert pixel_std(img) > 5.0


def pixel_std(img):
    """Standard deviation of the grey levels of a QImage (0 for a blank picture)."""
    from pyqtgraph.Qt import QtGui
    img = img.convertToFormat(QtGui.QImage.Format.Format_Grayscale8)
    w, h, stride = img.width(), img.height(), img.bytesPerLine()
    buf = np.frombuffer(img.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)[:, :w]
    return float(buf.std())


def test_save_cube_writes_the_accumulated_counts_to_hdf5(finished_window, frames, tmp_path):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("hexspec.io.hdf5")
    path = finished_window.save_cube(tmp_path / "cube.h5")
    with h5py.File(path, "r") as f:
        counts = f["entry/spectra/counts"][...]
    np.testing.assert_array_equal(counts, numpy_cube(frames))


# ----------------------------------------------------------------------------- analyses

def test_peak_fit_of_the_selection_finds_the_line_centre(qtbot):
    pytest.importorskip("hexspec.fit")
    # One Gaussian line at 93.5 keV, sigma 1.5 keV, on every pixel. Energies are whole
    # multiples of 0.25 keV and the bins are centred on them, so binning adds no shift.
    rng = np.random.default_rng(5)
    n = 300
    frames = np.zeros((n, *SHAPE), np.uint16)
    hits = rng.random(frames.shape) < 0.05
    frames[hits] = np.round(rng.normal(93.5, 1.5, hits.sum()) / GRADIENT_KEV).astype(np.uint16)
    win = open_window(qtbot, batches_of(frames), config(bins=hx.EnergyBins(-0.125, 199.875, 0.25)))
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    win.set_selection_mode("rectangle")
    win.rect_roi.setPos((0, 0))
    win.rect_roi.setSize((SHAPE[1], SHAPE[0]))
    win.set_window(87.5, 99.5)           # +-4 sigma, symmetric about the line
    win.fit_peak()
    win.wait_for_analysis()
    fit = win.last_fit
    # About 8,400 events: the centre's standard error is 1.5 / sqrt(8400) = 0.016 keV.
    assert fit.center == pytest.approx(93.5, abs=0.06)
    assert fit.fwhm == pytest.approx(2.3548 * 1.5, rel=0.05)
    assert "centre" in win.analysis_message


def test_peak_fit_without_calibration_explains_what_is_missing(qtbot, frames):
    cfg = hx.ProcessingConfig(threshold=20, next_frame=False, charge_sharing="none")
    win = open_window(qtbot, batches_of(frames), cfg)
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    win.fit_peak()
    win.wait_for_analysis()
    assert "calibration" in win.analysis_message


# ----------------------------------------------------------------------------- command line

def write_bin(path, frames):
    frames.astype("<u2").tofile(path)


@pytest.mark.slow
def test_headless_command_saves_a_screenshot_that_is_not_blank(tmp_path, frames):
    pytest.importorskip("hexspec.drivers.files")
    raw = tmp_path / "run.bin"
    write_bin(raw, frames)
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [sys.executable, "-m", "hexspec.cli", "view", f"file://{raw}?shape={SHAPE[0]},{SHAPE[1]}",
         "--screenshot", str(out), "--exit-after", "2", "--threshold", "20", "--gradients", str(GRADIENT_KEV),
         "--charge-sharing", "none", "--no-next-frame"],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    from pyqtgraph.Qt import QtGui
    img = QtGui.QImage(str(out))
    assert img.width() >= 800 and img.height() >= 500
    assert pixel_std(img) > 5.0


def compton_frames(shape=(6, 8), n_frames=1000, seed=7):
    """A broad line at the Compton energy (93.87 keV, sigma 2 keV), some 800 counts per pixel."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n_frames, *shape), np.uint16)
    hits = rng.random(frames.shape) < 0.8
    frames[hits] = np.round(rng.normal(93.87, 2.0, hits.sum()) / GRADIENT_KEV).astype(np.uint16)
    return frames


def numpy_cube_of(frames, bins, threshold=20):
    rows, cols = frames.shape[1:]
    cube = np.zeros((rows, cols, bins.n), np.int64)
    for r in range(rows):
        for c in range(cols):
            v = frames[:, r, c].astype(np.float64)
            cube[r, c] = np.histogram(v[v > threshold] * GRADIENT_KEV, bins=bins.edges)[0]
    return cube


def test_s_parameter_button_maps_the_cube_with_the_per_pixel_pinhole_angle(qtbot):
    compton = pytest.importorskip("hexspec.compton")
    if not hasattr(compton, "s_parameter_map"):
        pytest.skip("hexspec.compton.s_parameter_map is not part of this build")
    frames = compton_frames()
    win = open_window(qtbot, [hx.FrameBatch(frames)], config())
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    win.smap_button.click()
    win.wait_for_analysis()
    # Independently: the cube from numpy, the angle map from the reference geometry.
    cube = hx.SpectralCube(numpy_cube_of(frames, BINS), BINS.edges)
    theta = compton.PinholeGeometry(detector=hx.DetectorSpec(rows=6, cols=8)).theta_map()
    expected = compton.s_parameter_map(cube, 115.0, theta)
    assert np.count_nonzero(expected.ok) == 48
    np.testing.assert_allclose(win.last_s_map.s, expected.s, rtol=1e-12)
    np.testing.assert_allclose(win.map_item.image, expected.s, rtol=1e-12)


def test_li_map_button_applies_the_loaded_calibration_line(qtbot, tmp_path):
    pytest.importorskip("hexspec.compton")
    lithium = pytest.importorskip("hexspec.calibration.lithium")
    frames = compton_frames()
    win = open_window(qtbot, [hx.FrameBatch(frames)], config())
    qtbot.waitUntil(lambda: win.processor.finished, timeout=20000)
    win.refresh()
    win.smap_button.click()
    win.wait_for_analysis()
    s = win.last_s_map.s
    # A line through (S = 0.5, 1-x = 0) and (S = 1.5, 1-x = 1): 1 - x = S - 0.5.
    lithium.LithiumCalibration.fit([0.5, 1.5], [0.0, 1.0]).save(tmp_path / "li.json")
    win.load_lithium_calibration(tmp_path / "li.json")
    win.li_button.click()
    win.wait_for_analysis()
    np.testing.assert_allclose(win.last_li_map.li, s - 0.5, rtol=1e-9, atol=1e-12)
    assert "Li map" in win.analysis_message


def test_li_map_without_a_calibration_says_what_is_missing(finished_window):
    win = finished_window
    win.last_s_map = object()
    win.li_button.click()
    win.wait_for_analysis()
    assert "Li calibration" in win.analysis_message


def test_cursor_over_the_spectrum_reads_out_energy_and_counts_of_that_bin(finished_window, frames):
    win = finished_window
    vb = win.spectrum_plot.vb
    y_mid = sum(vb.viewRange()[1]) / 2
    win._spectrum_mouse_moved(vb.mapViewToScene(pg_point(60.2, y_mid)))   # bin [60.0, 60.5)
    expected = int(numpy_cube(frames).sum(axis=(0, 1))[120])
    assert win.cursor_label.text() == f"60.20 keV: summed {expected:,d}"


def test_apply_button_takes_threshold_and_charge_sharing_from_the_controls(finished_window):
    win = finished_window
    win.threshold_spin.setValue(300)
    win.sharing_combo.setCurrentText("csa")
    win.next_frame_box.setChecked(True)
    win.apply_button.click()
    cfg = win.processor._pending_config or win.processor.config
    assert (cfg.threshold, cfg.charge_sharing, cfg.next_frame) == (300.0, "csa", True)
