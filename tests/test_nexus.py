"""Every kind of output file opens in HDF5 1.10 tools and follows the NeXus conventions.

One small run of each writing command (simulate, record, calibrate, process, fit, sparam)
is checked with Debian's h5ls (HDF5 1.10), with h5py against the NeXus rules, and with
nexusformat (a second reader) for the default plot.
"""

import hashlib
import math
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from scipy.stats import norm

import hexspec as hx
from hexspec.cli import main
from hexspec.io import hdf5

KINDS = ("simulate", "record", "calibrate", "process", "fit", "sparam")
E1, MC2 = 115.0, 510.99895


def _compton_cube(shape=(4, 5), total=4e4, seed=3):
    """A Gaussian Compton profile at 90 degrees, as counts per 0.25 keV bin (peak near 93.9 keV)."""
    edges = np.arange(60.0, 130.0001, 0.25)
    e2 = 0.5 * (edges[1:] + edges[:-1])
    qc = np.sqrt(E1 ** 2 + e2 ** 2)
    pz = 137.035999 * (e2 - E1 + E1 * e2 / MC2) / qc
    lam = total * 0.25 * (e2 / E1) * (MC2 / qc) * norm.pdf(pz, scale=1.3) + 2.0
    counts = np.random.default_rng(seed).poisson(np.broadcast_to(lam, shape + lam.shape)).astype(np.uint32)
    counts[0, 0] = 0    # an empty pixel: fit status 2 (too few counts)
    return hx.SpectralCube(counts, edges)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, am241_calibrated):
    d = tmp_path_factory.mktemp("nexus")
    out = {k: d / f"{k}.h5" for k in KINDS}
    out["simulate"], out["calibrate"] = am241_calibrated
    assert main(["record", "sim://?frames=100&shape=8,8", "-o", str(out["record"]), "--raw", "--events",
                 "--spectra", "--threshold", "100", "-q"]) == 0
    assert main(["process", str(out["simulate"]), "--calibration", str(out["calibrate"]), "--frames", "1000",
                 "-o", str(out["process"]), "-q"]) == 0
    hdf5.write_cube(d / "cube.h5", _compton_cube())
    assert main(["fit", str(d / "cube.h5"), "--energy-window-kev", "86", "102", "-o", str(out["fit"]), "-q"]) == 0
    assert main(["sparam", str(d / "cube.h5"), "--theta", "90", "--no-background", "-o", str(out["sparam"]),
                 "-q"]) == 0
    return out


def test_hdf5_1_10_h5ls_lists_every_output_kind_without_errors(outputs):
    h5ls = shutil.which("h5ls")
    if h5ls is None:
        pytest.skip("h5ls (Debian hdf5-tools, HDF5 1.10) is not installed; .ci/run installs it")
    for kind, path in outputs.items():
        r = subprocess.run([h5ls, "-r", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, (kind, r.stderr)
        assert "ERROR" not in r.stdout + r.stderr, (kind, [ln for ln in r.stdout.splitlines() if "ERROR" in ln])
        assert "/entry/instrument/detector" in r.stdout


#: datasets with a physical unit, by name, and the unit worked out from their meaning
PHYSICAL = {"energy": None, "energy_edges": None, "pitch_mm": "mm", "frame_rate_hz": "Hz", "center": "keV",
            "fwhm": "keV", "center_err": "keV", "b0": "counts/keV", "gradients": "keV/ADU", "intercepts": "keV",
            "fwhm_kev": "keV", "threshold": "ADU", "thresholds": "ADU", "data": "ADU", "theta_rad": "rad",
            "noise_fwhm_kev": "keV", "depth_mm": "mm", "energy_kev": "keV", "line_energies_kev": "keV"}


@pytest.mark.parametrize("kind", KINDS)
def test_nexus_classes_units_and_default_plot(outputs, kind):
    with h5py.File(outputs[kind], "r", locking=False) as f:
        assert f.attrs["NX_class"] == "NXroot"
        groups, missing_units = [], []

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                groups.append((name, obj.attrs.get("NX_class")))
            else:
                base = name.rsplit("/", 1)[-1]
                if base in PHYSICAL and "units" not in obj.attrs:
                    missing_units.append(name)
                elif PHYSICAL.get(base) and obj.attrs["units"] != PHYSICAL[base]:
                    missing_units.append(f"{name} in {obj.attrs['units']}, expected {PHYSICAL[base]}")
        f.visititems(visit)
        assert [g for g, c in groups if not c] == []
        assert missing_units == []
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/instrument"].attrs["NX_class"] == "NXinstrument"
        assert f["entry/instrument/detector"].attrs["NX_class"] == "NXdetector"
        assert any(c == "NXprocess" for _, c in groups)
        # the default chain: root -> entry -> ... -> NXdata with a signal and one axis name per dimension
        g = f
        for _ in range(5):
            if g.attrs.get("NX_class") == "NXdata":
                break
            g = g[g.attrs["default"]]
        assert g.attrs["NX_class"] == "NXdata"
        signal = g[g.attrs["signal"]]
        assert len(g.attrs["axes"]) == signal.ndim
        for ax in g.attrs["axes"]:
            assert ax == "." or ax in g
        if kind == "fit":
            assert g.attrs["signal"] == "center" and signal.attrs["units"] == "keV"
        if kind in ("fit", "sparam", "calibrate"):
            assert "units" not in f["entry/results"][g.name.rsplit("/", 1)[-1]].attrs   # no JSON units attribute


@pytest.mark.parametrize("kind", KINDS)
def test_nexusformat_finds_the_default_plot(outputs, kind):
    nexusformat = pytest.importorskip("nexusformat.nexus")
    root = nexusformat.nxload(str(outputs[kind]), "r")
    try:
        data = root.plottable_data
        assert data is not None and data.nxclass == "NXdata"
        assert data.nxsignal is not None and data.nxsignal.ndim >= 1
    finally:
        root.nxfile.close()


def test_status_codes_are_explained_in_the_file(outputs):
    with h5py.File(outputs["fit"], "r", locking=False) as f:
        st = f["entry/results/peak_fit/status"]
        assert st[0, 0] == 2                               # the empty pixel was not fitted
        assert "2 too few counts" in st.attrs["status_codes"]
        assert "0 converged" in st.attrs["status_codes"]
    with h5py.File(outputs["calibrate"], "r", locking=False) as f:
        g = f["entry/results/calibration"]
        codes = g["reasons"].attrs["status_codes"]
        assert "1 dead" in codes and "2 hot" in codes
        # a dead simulated pixel carries the dead bit, as the codes say
        assert np.all(g["reasons"][()][g["good"][()] == 1] == 0)


def test_provenance_names_command_line_libraries_inputs_and_times(outputs):
    cal = outputs["calibrate"]
    with h5py.File(outputs["process"], "r", locking=False) as f:
        procs = [g for g in f["entry"].values() if g.attrs.get("NX_class") == "NXprocess"]
        assert len(procs) == 1
        p = procs[0]
        line = p["command_line"][()].decode()
        assert line.startswith("hexspec process ") and "--calibration" in line and str(cal) in line
        libs = {k: p["libraries"][k][()].decode() for k in p["libraries"]}
        assert libs["numpy"] == np.__version__ and libs["h5py"] == h5py.__version__
        for name in ("numba", "scipy", "lmfit", "xraylib", "hdf5plugin"):
            assert libs[name]
        inputs = {p["inputs"][k]["role"][()].decode(): p["inputs"][k] for k in p["inputs"]}
        assert set(inputs) == {"input", "calibration"}
        c = inputs["calibration"]
        assert c["path"][()].decode() == str(cal.resolve())
        assert c["size_bytes"][()] == os.stat(cal).st_size
        assert c["sha256"][()].decode() == hashlib.sha256(cal.read_bytes()).hexdigest()
        assert c["hash_scope"][()].decode() == "whole file"
        start, end = p["start_time"][()].decode(), p["end_time"][()].decode()
        assert start <= end


def test_every_run_that_adds_results_adds_its_own_process_step(outputs, tmp_path):
    target = tmp_path / "both.h5"
    shutil.copy(outputs["fit"], target)
    cube = outputs["fit"].parent / "cube.h5"
    # results are added to an existing file only with --force
    assert main(["sparam", str(cube), "--theta", "90", "--no-background", "-o", str(target), "--force", "-q"]) == 0
    with h5py.File(target, "r", locking=False) as f:
        names = sorted(k for k, g in f["entry"].items() if g.attrs.get("NX_class") == "NXprocess")
        assert names == ["process_fit", "process_sparam"]
        assert math.isfinite(len(f["entry/results/s_parameter/s"][()]))
        assert f["entry"].attrs["default"] == "results"
        assert f["entry/results"].attrs["default"] == "profile"   # the last result written


def test_equations_cited_in_results_are_in_the_repository(outputs):
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "physics.md"
    text = doc.read_text()
    for kind, group in (("fit", "peak_fit"), ("sparam", "s_parameter")):
        with h5py.File(outputs[kind], "r", locking=False) as f:
            eq = f[f"entry/results/{group}"].attrs["equation"]
        m = re.match(r"docs/physics\.md eq\. \((\d+)\)", eq)
        assert m, eq
        assert f"**({m.group(1)}) " in text
    with h5py.File(outputs["fit"], "r", locking=False) as f:
        assert "Pseudo-Voigt" in text.split(f"**(8) ")[1].split("\n")[0]
