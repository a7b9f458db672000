"""What the README says about running its Python example from the folder holding the clone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PROBE = "import hexspec as hx; print(hx.sim.HexitecSimulator.__name__)"


@pytest.fixture
def parent_of_a_clone_named_hexspec(tmp_path):
    """A folder holding the clone under the name `git clone .../hexspec` gives it."""
    (tmp_path / "hexspec").symlink_to(REPO, target_is_directory=True)
    return tmp_path


def _run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_folder_holding_the_clone_shadows_the_package_as_the_readme_warns(parent_of_a_clone_named_hexspec):
    r = _run(["-c", PROBE], parent_of_a_clone_named_hexspec)
    assert r.returncode != 0 and "has no attribute 'sim'" in r.stderr
    assert "has no attribute 'sim'" in README


def test_python_dash_p_runs_the_example_from_the_folder_holding_the_clone(parent_of_a_clone_named_hexspec):
    assert "python -P" in README
    r = _run(["-P", "-c", PROBE], parent_of_a_clone_named_hexspec)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "HexitecSimulator"
