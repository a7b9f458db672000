import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Folder of real detector files (../shared/data next to the checkout)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the checkout as ../shared/data)")
    return SHARED_DATA


def shared_file(name):
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"real data file {p} is absent")
    return p


@pytest.fixture(scope="session")
def am241_calibrated(tmp_path_factory):
    """(simulated Am-241 frames, their `hexspec calibrate am241` output): 8 x 8 pixels, 3000 frames.

    Shared by the tests of output conventions and of the calibration mask, to simulate and
    calibrate once per session.
    """
    from hexspec.cli import main
    d = tmp_path_factory.mktemp("am241")
    sim, cal = d / "am241.h5", d / "calib.h5"
    assert main(["simulate", "--source", "am241", "--frames", "3000", "--shape", "8", "8", "--photon-rate", "9e4",
                 "-o", str(sim), "-q"]) == 0
    assert main(["calibrate", "am241", str(sim), "-o", str(cal), "--min-peak-counts", "20", "--no-png", "-q"]) == 0
    return sim, cal


#: the one informational line a real command line prints on a cold numba cache (hexspec
#: selftest's notice): not an error, so tests that count error lines leave it out
COMPILE_NOTICE = "hexspec: compiling numba kernels"


def error_lines(stderr: str) -> list:
    """The lines of a command's stderr other than the first-run compile notice."""
    return [line for line in stderr.strip().splitlines() if line and not line.startswith(COMPILE_NOTICE)]
