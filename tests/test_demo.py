"""`hexspec demo --quick`: the whole chain on a simulated cathode with a known Li gradient."""

import json

import numpy as np
import pytest

from hexspec.cli import main
from hexspec.io import hdf5


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "-o", str(out), "-q"]) == 0
    return out


@pytest.mark.slow
def test_demo_summary_has_one_record_per_state_and_region(demo_dir):
    records = json.loads((demo_dir / "summary.json").read_text())
    assert isinstance(records, list) and len(records) == 8
    assert {r["state"] for r in records} == {"charged", "discharged"}
    for r in records:
        assert {"state", "region", "s", "s_err", "li_true", "li", "li_err"} <= set(r)


@pytest.mark.slow
def test_demo_recovers_the_true_li_content_within_its_uncertainty(demo_dir):
    records = json.loads((demo_dir / "summary.json").read_text())
    pulls = np.array([(r["li"] - r["li_true"]) / r["li_err"] for r in records])
    assert np.all(np.abs(pulls) < 4)
    # the charged state holds less Li than the discharged one in every region
    li = {(r["state"], r["region"]): r["li"] for r in records}
    for region in {r["region"] for r in records}:
        assert li[("charged", region)] < li[("discharged", region)]


@pytest.mark.slow
def test_demo_writes_hdf5_results_and_pngs(demo_dir):
    arrays, _ = hdf5.read_results(demo_dir / "results.h5", "charged_lithium")
    assert arrays["li"].shape == (80, 80) and arrays["li_true"].shape == (80, 80)
    cube = hdf5.read_cube(demo_dir / "cube_charged.h5")
    assert cube.counts.shape[:2] == (80, 80) and cube.counts.sum() > 1_000_000
    for name in ("maps_charged.png", "maps_discharged.png", "profiles.png", "difference_profile.png", "calibration.png"):
        assert (demo_dir / name).stat().st_size > 1000
    assert json.loads((demo_dir / "lithium_calibration.json").read_text())["format"] == "hexspec.LithiumCalibration"
    regions = json.loads((demo_dir / "lithium_calibration_regions.json").read_text())
    assert len(regions) == 4 and all(len(c["reference_s"]) == 3 for c in regions.values())
