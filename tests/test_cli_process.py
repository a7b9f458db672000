"""`hexspec process` from the command line, run as a user would (a real subprocess)."""

import subprocess
import sys

import numpy as np
import pytest

import hexspec as hx
from hexspec.io import gige_bin, hdf5
from tests.conftest import shared_file


def hexspec(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "hexspec.cli", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"hexspec {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r


@pytest.fixture
def bin_file(tmp_path):
    rng = np.random.default_rng(0)
    fr = ((rng.random((200, 80, 80)) < 0.01) * rng.integers(100, 4000, (200, 80, 80))).astype(np.uint16)
    p = tmp_path / "frames.bin"
    gige_bin.write_gige_bin(p, fr)
    return p, fr


def test_process_bin_file_writes_the_events_and_cube_of_the_api(tmp_path, bin_file):
    path, fr = bin_file
    out = tmp_path / "out.h5"
    r = hexspec("process", path, "-o", out, "--threshold", 80, "--gradients", 0.025, "--intercepts", 0.5,
                "--charge-sharing", "csa", "--max-cluster-size", 2)
    assert "200 frames" in r.stdout
    cfg = hx.ProcessingConfig(threshold=80, gradients=0.025, intercepts=0.5, charge_sharing="csa", max_cluster_size=2)
    want = hx.extract_events(fr, cfg)
    assert hdf5.read_events(out) == want
    np.testing.assert_array_equal(hdf5.read_cube(out).counts, hx.SpectralCube.from_events(want, cfg.resolved_bins(), (80, 80)).counts)
    assert hdf5.read_config(out) == cfg
    assert hdf5.read_acquisition(out)["frames_received"] == 200
    assert (tmp_path / "out.png").stat().st_size > 10_000      # the overview picture


def test_config_file_is_read_and_command_line_overrides_it(tmp_path, bin_file):
    path, fr = bin_file
    conf = tmp_path / "c.toml"
    conf.write_text('threshold = 80\ncharge_sharing = "none"\nnext_frame = false\n')
    out = tmp_path / "o.h5"
    hexspec("process", path, "-o", out, "--config", conf, "--charge-sharing", "csd", "--events")
    cfg = hdf5.read_config(out)
    assert (cfg.threshold, cfg.charge_sharing, cfg.next_frame) == (80.0, "csd", False)


def test_per_pixel_map_files_are_accepted(tmp_path, bin_file):
    path, fr = bin_file
    g = np.full((80, 80), 0.025)
    g[:40] = 0.02
    np.savetxt(tmp_path / "g.txt", g)
    out = tmp_path / "o.h5"
    hexspec("process", path, "-o", out, "--gradients", tmp_path / "g.txt", "--threshold", 80, "--charge-sharing", "none")
    ev = hdf5.read_events(out)
    expected = fr[ev.frame, ev.row, ev.col] * np.where(ev.row < 40, 0.02, 0.025)
    np.testing.assert_allclose(ev.energy, expected, rtol=1e-6)


def test_reprocessing_an_event_file_rebins_the_same_events(tmp_path, bin_file):
    path, _ = bin_file
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    hexspec("process", path, "-o", first, "--threshold", 80, "--gradients", 0.025, "--events")
    hexspec("process", first, "-o", second, "--bins", 0, 120, 1, "--spectra")
    ev = hdf5.read_events(first)
    cube = hdf5.read_cube(second)
    np.testing.assert_array_equal(cube.counts, hx.SpectralCube.from_events(ev, hx.EnergyBins(0, 120, 1), (80, 80)).counts)
    assert cube.unit == "keV"      # the stored events were calibrated: their unit carries over


def test_calibration_options_on_an_event_file_are_refused(tmp_path, bin_file):
    path, _ = bin_file
    first = tmp_path / "a.h5"
    hexspec("process", path, "-o", first, "--threshold", 80, "--gradients", 0.025, "--events")
    r = hexspec("process", first, "-o", tmp_path / "b.h5", "--gradients", 0.03, check=False)
    assert r.returncode == 1 and "--gradients does not apply" in r.stderr


def test_processing_a_file_onto_itself_is_refused_and_the_input_survives(tmp_path, bin_file):
    path, _ = bin_file
    first = tmp_path / "a.h5"
    hexspec("process", path, "-o", first, "--threshold", 80, "--events")
    n = len(hdf5.read_events(first))
    r = hexspec("process", first, "-o", first, check=False)
    assert r.returncode == 1 and "would overwrite the input" in r.stderr
    assert len(hdf5.read_events(first)) == n > 0


def test_allow_partial_reports_the_ignored_tail(tmp_path, bin_file):
    path, _ = bin_file
    with open(path, "ab") as fh:
        fh.write(b"xyz")
    r = hexspec("process", path, "-o", tmp_path / "o.h5", "--allow-partial")
    assert "3 trailing bytes" in r.stderr and "200 frames" in r.stdout


def test_real_odin_file_is_processed_at_its_own_160x160_shape(tmp_path):
    out = tmp_path / "odin.h5"
    hexspec("process", shared_file("hexitec_2x2_raw_30frames.h5"), "-o", out, "--threshold", 200)
    assert hdf5.read_cube(out).counts.shape[:2] == (160, 160)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("partial", "is not a whole number of 80x80 uint16 frames"),
    ("badmap", "expected 6400 values for a 80 x 80 detector, found 10"),
    ("badmode", "invalid choice"),
    ("batch0", "expected a whole number >= 1, found 0"),
    ("shape0", "expected a whole number >= 1, found 0"),
    ("unwritable", "cannot create the output file"),
])
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(tmp_path, bin_file, case, message):
    path, _ = bin_file
    args = [path, "-o", tmp_path / "o.h5"]
    if case == "missing":
        args[0] = tmp_path / "nope.bin"
    elif case == "partial":
        with open(path, "ab") as fh:
            fh.write(b"xyz")
    elif case == "badmap":
        np.savetxt(tmp_path / "g.txt", np.ones(10))
        args += ["--gradients", tmp_path / "g.txt"]
    elif case == "batch0":
        args += ["--batch-size", "0"]
    elif case == "shape0":
        args += ["--shape", "0", "80"]
    elif case == "unwritable":
        (tmp_path / "afile").write_text("")
        args[2] = tmp_path / "afile" / "o.h5"     # a folder that is a file
    else:
        args += ["--charge-sharing", "bogus"]
    r = hexspec("process", *args, check=False)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
