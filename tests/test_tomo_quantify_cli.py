"""`hexspec tomo segment` then `hexspec tomo quantify` on a phantom written as a real volume file."""

import csv

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi

from hexspec.cli import main
from hexspec.tomo.io import read_volume, write_volume

BOUNDS = [(6, 18), (18, 30), (30, 42)]
POROSITY = [0.45, 0.35, 0.25]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Slab electrode z 6-41 in air; three depth regions of known porosity; noise; 3.24 um voxels."""
    d = tmp_path_factory.mktemp("tomo_cli")
    rng = np.random.default_rng(1)
    shape = (48, 40, 40)
    z = np.indices(shape)[0]
    electrode = (z >= 6) & (z < 42)
    f = ndi.gaussian_filter(rng.standard_normal(shape), 2.0, mode="wrap")
    pores = np.zeros(shape, bool)
    for (lo, hi), q in zip(BOUNDS, POROSITY):
        pores[lo:hi] = f[lo:hi] < np.quantile(f[lo:hi], q)
    # the outer two slices carry the pores of the slice below them straight through: the
    # surface is then flat apart from pore mouths, which the opening keeps in the electrode
    pores[6:8] = pores[8]
    pores[40:42] = pores[39]
    vol = np.where(electrode, np.where(pores, 0.3, 1.0), 0.0) + rng.normal(0, 0.1, shape)
    path = d / "volume.h5"
    write_volume(path, vol.astype(np.float32), 0.00324, process_name="reconstruction",
                 process={"algorithm": "phantom"}, units="1/mm")
    truth = [pores[lo:hi].mean() for lo, hi in BOUNDS]
    return d, path, truth


@pytest.mark.slow
def test_segment_then_quantify_end_to_end(phantom, capsys):
    d, volume, truth = phantom
    seg = d / "seg.h5"
    assert main(["tomo", "segment", str(volume), "-o", str(seg), "--opening-radius", "11"]) == 0
    s = read_volume(seg)
    assert s.name == "segmentation" and s.data.dtype == np.uint8
    steps = [st["step"] for st in s.process["segment"]["steps"]]
    assert steps == ["median", "electrode_threshold", "opening", "largest_component", "pore_mouths",
                     "unsharp_mask", "phase_threshold"]
    assert s.voxel_size_mm == pytest.approx((0.00324,) * 3)

    out = d / "q"
    assert main(["tomo", "quantify", str(seg), "--regions", "3", "--axis", "z", "--d-bulk", "2.0",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "porosity (vol%)" in text and "tau through" in text and "SSA marching_cubes (um^2/um^3)" in text
    with open(d / "q.csv") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert [int(r["start_voxel"]) for r in rows] == [b[0] for b in BOUNDS]
    for r, t in zip(rows, truth):
        # below the phantom's by up to ~4 vol%: the median rounds pore corners, and wide pore
        # mouths on the surface are taken as outside by the opening (test_tomo_segment
        # shows +-2 vol% on a phantom with a closed surface)
        assert -5.0 < float(r["porosity_vol_percent"]) - 100 * t < 0.5
        tau = float(r["tau_through"])
        assert 1.0 < tau < 20
        assert float(r["d_eff_through"]) == pytest.approx(2.0 * float(r["porosity_vol_percent"]) / 100 / tau,
                                                          rel=1e-4)
        assert float(r["ssa_per_um"]) > 0
    # denser regions are more tortuous through the thickness
    assert float(rows[0]["tau_through"]) < float(rows[2]["tau_through"])
    with h5py.File(d / "q.h5") as f:
        assert f["entry"].attrs["default"] == "regions"
        assert f["entry/regions"].attrs["ssa_method"] == "marching_cubes"
        assert f["entry/porosity_maps/data"].shape == (3, 40, 40)
        assert f["entry/quantify"].attrs["NX_class"] == "NXprocess"
    for name in ("q_porosity_maps.png", "q_regions.png"):
        assert (d / name).read_bytes()[:4] == b"\x89PNG"


def test_existing_outputs_are_refused_with_one_line(phantom, capsys, tmp_path):
    d, volume, _ = phantom
    seg = tmp_path / "seg.h5"
    seg.write_bytes(b"keep me")
    assert main(["tomo", "segment", str(volume), "-o", str(seg)]) == 1
    err = capsys.readouterr().err.strip()
    assert "exists" in err and "--force" in err and len(err.splitlines()) == 1
    assert seg.read_bytes() == b"keep me"
    assert main(["tomo", "quantify", str(volume), "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert "expected phase labels" in err and len(err.splitlines()) == 1
