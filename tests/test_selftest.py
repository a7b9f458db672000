"""`hexspec selftest` and the one-line notice before numba kernels compile on a cold cache."""

import io
import os
import subprocess
import sys
import time

import pytest

from hexspec.cli import main
from hexspec.kernel_cache import cold_modules, kernel_modules, notice_if_cold

KERNEL = '''
from numba import njit


@njit(cache=True, nogil=True)
def twice(x):
    return 2 * x
'''


def test_a_cold_cache_is_announced_in_one_line_and_a_warm_one_is_not(tmp_path):
    src = tmp_path / "kern.py"
    src.write_text(KERNEL)
    assert cold_modules([src]) == [src]
    out = io.StringIO()
    assert notice_if_cold(out, [src])
    assert len(out.getvalue().splitlines()) == 1 and "compiling numba kernels (kern)" in out.getvalue()
    # compile it for real, in another process, as a first run would
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    subprocess.run([sys.executable, "-c", "import kern; assert kern.twice(21) == 42"], check=True, env=env)
    assert cold_modules([src]) == []
    out = io.StringIO()
    assert not notice_if_cold(out, [src]) and out.getvalue() == ""
    # an edited source makes numba recompile: announced again
    later = time.time() + 5
    os.utime(src, (later, later))
    assert cold_modules([src]) == [src]


def test_kernel_modules_are_those_with_cached_kernels_of_their_own():
    names = {p.name for p in kernel_modules()}
    # hexspec/compton is a package: its kernels live in windows.py, profiles.py, binning.py, and its
    # compiled formulas (name = njit(...)(formula)) in kinematics.py; calibration.am241 is a package of
    # stages, with kernels in locate.py, linefit.py, lineshape.py and noise.py
    assert {"events.py", "spectra.py", "batched.py", "lm.py", "windows.py", "kinematics.py", "response.py",
            "locate.py", "linefit.py", "lineshape.py", "noise.py"} <= names
    assert "fastrandom.py" not in names      # only inline="always" helpers, compiled into their callers
    assert "selftest.py" not in names


@pytest.mark.slow
def test_selftest_checks_the_installation_and_the_chain_against_truth(capsys):
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    for label in ("imports", "HDF5 filters", "round trip"):
        assert f"ok    {label}:" in out
    assert "hexspec selftest: all checks passed" in out
    # the kernels of the chain it ran are compiled now
    cold = {p.name for p in cold_modules()}
    assert not cold & {"events.py", "spectra.py", "batched.py", "lm.py", "response.py", "locate.py", "linefit.py",
                       "lineshape.py", "noise.py", "windows.py"}
