"""`hexspec demo --quick`: the whole correlative chain on a virtual cathode, every photon through frames."""

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
def test_demo_summary_has_one_record_per_state_and_depth_region(demo_dir):
    records = json.loads((demo_dir / "summary.json").read_text())
    assert isinstance(records, list) and len(records) == 6
    assert {(r["state"], r["region"]) for r in records} == {(s, k) for s in ("charged", "discharged") for k in (1, 2, 3)}
    for r in records:
        assert {"state", "region", "porosity_true", "porosity", "s", "s_err", "li_true", "li", "li_err"} <= set(r)


@pytest.mark.slow
def test_demo_recovers_true_li_content_and_porosity_within_the_printed_uncertainties(demo_dir):
    records = json.loads((demo_dir / "summary.json").read_text())
    li_pulls = np.array([(r["li"] - r["li_true"]) / r["li_err"] for r in records])
    assert np.all(np.abs(li_pulls) < 3)
    for r in records:
        assert abs(r["porosity"] - r["porosity_true"]) < 0.03
        assert abs(r["porosity"] - r["porosity_true"]) < 3 * r["porosity_err"]
    # porosity falls from the separator (region 1) to the current collector (region 3)
    por = [r["porosity"] for r in records if r["state"] == "charged"]
    assert por[0] > por[1] > por[2]
    # the cathode sits turned by 1.5 degrees in front of the pinhole: registration finds it
    for r in records:
        assert r["angle_deg"] == pytest.approx(1.5, abs=0.3)
    # the charged cathode holds less Li than the discharged one
    li = {s: np.mean([r["li"] for r in records if r["state"] == s]) for s in ("charged", "discharged")}
    assert li["charged"] < li["discharged"] - 0.2


@pytest.mark.slow
def test_every_counted_event_comes_from_simulated_frames(demo_dir):
    run = json.loads((demo_dir / "run.json").read_text())
    measurements = run["measurements"]
    assert len(measurements) == 9            # three references, two states x three regions
    for name, m in measurements.items():
        arrays, _ = hdf5.read_results(demo_dir / "results.h5", "measurement_" + name.replace(" ", "_"))
        assert int(arrays["counts_per_pixel"].sum()) == m["events_counted"]
        # events cannot outnumber the photons absorbed in the simulated frames (charge-sharing
        # addition makes one event of a shared photon): nothing is added beside the frames
        assert 0.5 * m["photons_absorbed"] < m["events_counted"] <= m["photons_absorbed"] <= m["photons_simulated"]
        mean = m["frames_simulated"] * run["exposure"]["photons_per_frame"]
        assert abs(m["photons_simulated"] - mean) < 5 * np.sqrt(mean)


@pytest.mark.slow
def test_demo_writes_hdf5_report_and_refuses_to_overwrite_it(demo_dir, capsys):
    arrays, _ = hdf5.read_results(demo_dir / "results.h5", "charged_correlation")
    assert arrays["porosity"].shape == (3, 80, 80) and arrays["li"].shape == (3, 80, 80)
    page = (demo_dir / "report.html").read_text()
    assert page.count("<img") == 4 and "porosity_true" in page
    for name in ("overlay_charged.png", "scatter_discharged.png"):
        assert (demo_dir / name).stat().st_size > 1000
    assert main(["demo", "--quick", "-o", str(demo_dir), "-q"]) != 0
    err = capsys.readouterr().err
    assert "would overwrite" in err and "--force" in err and len(err.strip().splitlines()) == 1
