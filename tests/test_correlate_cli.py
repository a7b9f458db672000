"""`hexspec correlate` from files: a segmented volume and three Compton measurements."""

import csv

import numpy as np
import pytest

pytest.importorskip("SimpleITK")

import hexspec as hx
from hexspec.cli import main
from hexspec.io import hdf5
from hexspec.tomo.io import write_volume

N, SUB, DEPTH = 24, 4, 9


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("corr_in")
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:N, 0:N] / N
    smooth = 0.1 + 0.25 * (0.5 + 0.5 * np.sin(5 * xx + 2 * yy) * np.cos(4 * yy))
    n_pore = np.round(smooth * SUB ** 2).astype(int)                # pore voxels under each Compton pixel
    field = n_pore / SUB ** 2                                       # its porosity (sample frame)
    columns = np.zeros((N * SUB, N * SUB), bool)
    for (r, c), m in np.ndenumerate(n_pore):
        cell = np.zeros(SUB * SUB, bool)
        cell[rng.permutation(SUB * SUB)[:m]] = True
        columns[r * SUB:(r + 1) * SUB, c * SUB:(c + 1) * SUB] = cell.reshape(SUB, SUB)
    labels = np.where(np.broadcast_to(columns, (DEPTH,) + columns.shape), 1, 2).astype(np.uint8)
    write_volume(d / "seg.h5", labels, 0.2667 / SUB, process_name="segmentation", process={"test": 1})
    shape = (32, 32)
    por_img = np.full(shape, np.nan)
    por_img[4:28, 4:28] = field[::-1, ::-1]                        # the pinhole turns the image
    inside = np.isfinite(por_img)
    bins = hx.EnergyBins(0.0, 200.0, 0.25)
    paths, xs, ys = [], [], []
    for k in range(3):
        counts = np.zeros(shape + (bins.n,), np.uint32)
        peak = np.searchsorted(bins.edges, 94.0) - 1
        counts[..., peak] = rng.poisson(np.where(inside, 2000 * (1 - np.nan_to_num(por_img)), 5))
        path = d / f"s{k + 1}.h5"
        hdf5.write_cube(path, hx.SpectralCube(counts, bins.edges, unit="keV"))
        s = np.where(inside, 1.0 + 0.01 * rng.standard_normal(shape), np.nan)
        hdf5.write_results(path, "s_parameter", {"s": s, "s_err": np.full(shape, 0.01)})
        li = np.where(inside, 0.8 - 0.5 * np.nan_to_num(por_img) + 0.02 * rng.standard_normal(shape), np.nan)
        hdf5.write_results(path, "lithium", {"li": li, "li_err": np.full(shape, 0.02)})
        paths.append(str(path))
        xs.append(por_img[inside])
        ys.append(li[inside])
    # the line fitted to the true porosity of every pixel: what the XCT route must reproduce
    truth_slope = np.polyfit(np.concatenate(xs), np.concatenate(ys), 1)[0]
    return d, paths, truth_slope


@pytest.mark.slow
def test_correlate_writes_tables_figures_and_page_and_finds_the_slope(inputs, tmp_path, capsys):
    d, paths, truth_slope = inputs
    out = tmp_path / "corr"
    assert main(["correlate", "--xct", str(d / "seg.h5"), "--compton", *paths, "--regions", "3",
                 "--transform", "translation", "-o", str(out)]) == 0
    for name in ("correlation.h5", "regions.csv", "overlay.png", "scatter.png", "report.html"):
        assert (out / name).stat().st_size > 200
    rows = list(csv.DictReader(open(out / "regions.csv")))
    assert [int(r["region"]) for r in rows] == [1, 2, 3]
    arrays, attrs = hdf5.read_results(out / "correlation.h5", "correlation")
    assert arrays["porosity"].shape == (3, 32, 32)
    import json
    fit = json.loads(attrs["fit"])
    # 1-x = 0.8 - 0.5 porosity per pixel, with 0.02 noise: the XCT-derived porosity gives the
    # slope of the true porosity, and both agree with -0.5 within the fit's error
    assert fit["slope"] == pytest.approx(truth_slope, abs=0.2 * fit["slope_err"])
    assert abs(fit["slope"] + 0.5) < 4 * fit["slope_err"]
    assert "pixel fit" in capsys.readouterr().out


def test_correlate_refuses_to_overwrite_without_force(inputs, tmp_path, capsys):
    d, paths, truth_slope = inputs
    out = tmp_path / "corr"
    out.mkdir()
    (out / "report.html").write_text("keep me")
    assert main(["correlate", "--xct", str(d / "seg.h5"), "--compton", paths[0], "-o", str(out)]) != 0
    assert "report.html: already exists; give --force" in capsys.readouterr().err
    assert (out / "report.html").read_text() == "keep me"


def test_wrong_number_of_compton_files_is_one_clear_error(inputs, tmp_path, capsys):
    d, paths, truth_slope = inputs
    assert main(["correlate", "--xct", str(d / "seg.h5"), "--compton", *paths[:2], "-o", str(tmp_path / "c")]) != 0
    assert "expected one file or 3" in capsys.readouterr().err
