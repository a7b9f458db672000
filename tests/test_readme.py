"""The README's Python walk-through runs as printed."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs_and_finds_the_compton_peak_and_a_uniform_s_map():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    peaks, smap = namespace["peaks"], namespace["smap"]
    # eq. (1): 115 keV at 86-94 degrees scatters to 93.6-94.1 keV
    assert 93.0 < np.median(peaks.center[peaks.ok]) < 94.5
    # the simulated sample has one Li content everywhere: with theta per pixel, S is uniform
    assert smap.ok.all()
    s, err = smap.s.ravel(), smap.s_err.ravel()
    mean = np.average(s, weights=err ** -2)
    chi2 = np.sum(((s - mean) / err) ** 2)
    assert chi2 < s.size + 4 * np.sqrt(2 * s.size)
