"""Sizes from files and options are checked before anything is allocated (issue 17, item 13)."""

import resource
import subprocess
import sys

import h5py
import numpy as np
import pytest

import hexspec as hx
from hexspec.cli import main
from hexspec.errors import ConfigError, FormatError
from hexspec.io import hdf5, odin


def test_bins_asking_for_petabytes_are_one_clear_line(tmp_path, capsys):
    rc = main(["record", "sim://?frames=5&shape=8,8", "-o", str(tmp_path / "r.h5"), "--bins", "0", "1e12", "1e-3", "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bins" in err and "HEXSPEC_MAX_BINS" in err and err.count("\n") == 1
    assert not (tmp_path / "r.h5").exists()


def test_a_detector_of_100000_x_100000_pixels_is_refused_before_the_maps_are_built():
    with pytest.raises(ConfigError, match="100000 x 100000"):
        hx.ProcessingConfig(threshold=10.0).pixel_maps((100_000, 100_000))


def test_a_small_file_declaring_a_terabyte_cube_is_refused_before_reading(tmp_path):
    path = tmp_path / "cube.h5"
    hdf5.write_cube(path, hx.SpectralCube(np.ones((16, 16, 10), np.uint32), np.linspace(0, 10, 11)))
    with h5py.File(path, "r+") as f:
        del f["entry/spectra/counts"]
        f["entry/spectra"].create_dataset("counts", shape=(16, 16, 10 ** 9), dtype=np.uint32, chunks=(1, 1, 1024))
    assert path.stat().st_size < 200_000
    with pytest.raises(FormatError, match="GiB"):
        hdf5.read_cube(path)


def test_odin_raw_frames_declared_huge_are_refused_whole_and_streamed_in_batches(tmp_path):
    path = tmp_path / "odin.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("raw_frames", shape=(10 ** 8, 80, 80), dtype=np.uint16, chunks=(1, 80, 80))
        ds[:3] = np.arange(3 * 6400, dtype=np.uint16).reshape(3, 80, 80)
    with pytest.raises(FormatError, match="iter_odin_frames"):
        odin.read_odin(path)
    first = next(odin.iter_odin_frames(path, batch_size=3))
    np.testing.assert_array_equal(first.frames.ravel(), np.arange(3 * 6400))


def test_reading_a_huge_odin_file_stays_within_a_memory_limit(tmp_path):
    # in a child limited to 2 GiB of address space: refused with one line, not killed
    path = tmp_path / "odin.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw_frames", shape=(10 ** 8, 80, 80), dtype=np.uint16, chunks=(1, 80, 80))
    code = ("import sys\nfrom hexspec.io import odin\nfrom hexspec.errors import FormatError\n"
            "try:\n    odin.read_odin(sys.argv[1])\nexcept FormatError as e:\n    print('refused', e)\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                       preexec_fn=limit)
    assert r.returncode == 0 and r.stdout.startswith("refused"), r.stderr[-500:]
