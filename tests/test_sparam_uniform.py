"""S and Li maps of a uniform simulated cathode are uniform within their errors, wherever the peak sits.

The spectra are the simulator's own photons (``hexspec.sim.ComptonSource``: free-atom
Compton profiles at each pixel's angle, W/Pb/Cd/Te lines, the elastic line and a flat
background), smeared by a 0.8 keV FWHM Gaussian resolution and binned per pixel; the
detector chain is left out to keep the tests fast. Truth: a uniform Li content means one
S everywhere, and the S of the same kind of photons without any background.
"""

import math

import numpy as np
import pytest

import hexspec as hx
from hexspec import compton
from hexspec.calibration.lithium import LithiumCalibrationMap
from hexspec.cli import main
from hexspec.detector import DetectorSpec
from hexspec.io import hdf5

EDGES = np.arange(0.0, 200.0001, 0.25)
DET = DetectorSpec(rows=40, cols=80)


def source_cube(li=0.5, n=300_000, seed=2, offset_mm=0.0, background=True, det=DET, fwhm_kev=0.8):
    geom = compton.PinholeGeometry(detector=det, center_offset_mm=(offset_mm, 0.0))
    src = hx.sim.ComptonSource(li_content=li, geometry=geom, background=background)
    rng = np.random.default_rng(seed)
    pix = rng.integers(0, det.rows * det.cols, n)
    e = src.sample_pixels(pix, rng) + rng.normal(0.0, fwhm_kev / (2 * math.sqrt(2 * math.log(2))), n)
    b = np.searchsorted(EDGES, e) - 1
    good = (b >= 0) & (b < EDGES.size - 1)
    nb = EDGES.size - 1
    counts = np.bincount(pix[good] * nb + b[good], minlength=det.rows * det.cols * nb)
    return hx.SpectralCube(counts.reshape(det.rows, det.cols, nb).astype(np.uint32), EDGES), geom.theta_map()


def chi2_per_dof(s, s_err):
    ok = np.isfinite(s)
    w = 1.0 / s_err[ok] ** 2
    mean = np.sum(w * s[ok]) / np.sum(w)
    return float(np.sum(((s[ok] - mean) / s_err[ok]) ** 2) / (ok.sum() - 1)), float(mean)


@pytest.mark.slow
@pytest.mark.parametrize("offset_mm", [0.0, -12.0])
def test_readme_walkthrough_gives_uniform_block_and_column_s(tmp_path, offset_mm):
    # -12 mm moves E_C by about -1.4 keV, across the 88.5-101 keV fit window of the walk-through
    cube, _ = source_cube(offset_mm=offset_mm)
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    assert main(["fit", str(tmp_path / "cube.h5"), "--window", "88.5", "101", "--method", "ml",
                 "-o", str(tmp_path / "fits.h5"), "-q"]) == 0
    common = ["--fits", str(tmp_path / "fits.h5"), "--center-offset-mm", str(offset_mm), "0", "-q"]
    assert main(["sparam", str(tmp_path / "cube.h5"), "--block", "8", "16", "-o", str(tmp_path / "b.h5")] + common) == 0
    assert main(["sparam", str(tmp_path / "cube.h5"), "--block", "40", "16", "-o", str(tmp_path / "c.h5")] + common) == 0
    blocks, attrs = hdf5.read_results(tmp_path / "b.h5", "s_parameter")
    columns, _ = hdf5.read_results(tmp_path / "c.h5", "s_parameter")
    assert attrs["background"].startswith("sideband")
    assert blocks["ok"].all() and columns["ok"].all()
    chi_b, mean_b = chi2_per_dof(blocks["s"], blocks["s_err"])
    chi_c, mean_c = chi2_per_dof(columns["s"], columns["s_err"])
    # 24 and 4 degrees of freedom: chi-square/dof above 2.0 and 3.3 has a probability of about 0.3 %
    assert chi_b < 2.0, (blocks["s"].mean(axis=0), chi_b)
    assert chi_c < 3.3, (columns["s"], chi_c)
    # and it is the S of the same kind of photons without any background
    clean, theta = source_cube(offset_mm=offset_mm, seed=9, background=False)
    s_true, e_true = compton.s_parameter_region(clean, 115.0, theta)
    e_mean = 1.0 / math.sqrt(np.sum(1.0 / columns["s_err"] ** 2))
    assert abs(mean_c - s_true) < 3 * math.hypot(e_mean, e_true), (mean_c, s_true)


def test_sideband_background_removes_the_background_and_nothing_else():
    det = DetectorSpec(rows=10, cols=80)
    with_bg, theta = source_cube(n=1_500_000, seed=3, det=det)
    without, _ = source_cube(n=1_500_000, seed=4, det=det, background=False)
    s_true, e_true = compton.s_parameter_region(without, 115.0, theta)
    s_side, e_side = compton.s_parameter_region(with_bg, 115.0, theta, background="sideband")
    s_raw, e_raw = compton.s_parameter_region(with_bg, 115.0, theta)
    peaks = hx.fit.fit_cube(with_bg, (88.5, 101), method="ml")
    s_fit, e_fit = compton.s_parameter_region(with_bg, 115.0, theta, background=peaks)
    # the background-free photons are the truth; the sideband estimate agrees within errors
    assert abs(s_side - s_true) < 3 * math.hypot(e_side, e_true), (s_side, s_true)
    # the flat background left in pulls S down (S_H collects four times its share of S_L)
    assert s_raw < s_true - 2 * math.hypot(e_raw, e_true)
    # the peak fit's straight line eats the core electrons' Compton wings: S far too high
    assert s_fit > s_true + 5 * math.hypot(e_fit, e_true)


def test_sideband_s_error_is_honest_over_blocks_of_one_sample():
    # a 16 x 16 grid of 5 x 5 blocks of a uniform sample: their scatter is their error
    det = DetectorSpec(rows=40, cols=80)
    cube, theta = source_cube(n=800_000, seed=5, det=det)
    smap = compton.s_parameter_blocks(cube, 115.0, theta, block=(5, 5), background="sideband")
    pull = (smap.s - np.nanmean(smap.s)) / smap.s_err
    assert smap.ok.all()
    assert 0.85 < np.std(pull) < 1.15                     # 128 blocks: 1 +- 0.06


@pytest.mark.slow
def test_flat_field_turns_a_later_uniform_cube_into_a_uniform_li_map(tmp_path, capsys):
    for name, li, seed in (("ref0.h5", 0.0, 11), ("ref1.h5", 1.0, 12), ("cube.h5", 0.5, 13)):
        hdf5.write_cube(tmp_path / name, source_cube(li=li, n=1_200_000, seed=seed)[0])
    block = ["--block", "20", "16"]
    assert main(["sparam", str(tmp_path / "cube.h5"), *block, "--reference", str(tmp_path / "ref0.h5"), "0",
                 "--reference", str(tmp_path / "ref1.h5"), "1", "--save-lithium-cal", str(tmp_path / "cal.json"),
                 "-o", str(tmp_path / "li.h5")]) == 0
    capsys.readouterr()
    assert main(["sparam", str(tmp_path / "cube.h5"), *block, "--lithium-cal", str(tmp_path / "cal.json"),
                 "-o", str(tmp_path / "li2.h5")]) == 0
    out = capsys.readouterr().out
    li, _ = hdf5.read_results(tmp_path / "li2.h5", "lithium")
    assert li["li"].shape == (2, 5) and li["ok"].all()
    chi, mean = chi2_per_dof(li["li"], li["li_err"])
    assert chi < 2.4                                        # 9 dof: p about 1 %
    assert abs(mean - 0.5) < 3 * np.sqrt(1 / np.sum(1 / li["li_err"] ** 2))
    assert "blocks" in out and "chi-square/dof" in out
    cal = LithiumCalibrationMap.from_dict(__import__("json").loads((tmp_path / "cal.json").read_text()))
    assert cal.shape == (2, 5) and cal.block == (20, 16)
    # the same flat field refuses S maps of another block size
    assert main(["sparam", str(tmp_path / "cube.h5"), "--block", "8", "16", "--lithium-cal", str(tmp_path / "cal.json"),
                 "-o", str(tmp_path / "li3.h5"), "-q"]) == 1
    assert "give --block 20 16" in capsys.readouterr().err


def test_out_of_range_cells_are_flagged_and_errors_follow_the_two_point_line():
    s = np.array([[0.9, 1.0], [1.1, 1.0]])
    cal = LithiumCalibrationMap.fit([s - 0.05, s + 0.05], [np.full((2, 2), 0.001)] * 2, [0.0, 1.0], block=(20, 40),
                                    slope="per-cell")
    lmap = cal.apply(s + np.array([[0.0, 0.08], [0.0, 0.0]]), np.full((2, 2), 0.001))
    assert lmap.extrapolated.tolist() == [[False, True], [False, False]]
    assert lmap.li[0, 0] == pytest.approx(0.5) and lmap.li[0, 1] == pytest.approx(1.3)
    # the error of a two-point line: li_err^2 = (slope s_err)^2 + calibration, by hand for S at the midpoint
    slope = 10.0
    expected = math.sqrt(slope ** 2 * 0.001 ** 2 + 2 * (0.5 * slope * 0.001) ** 2)
    assert lmap.li_err[0, 0] == pytest.approx(expected, rel=1e-6)


def test_sparam_without_any_result_exits_non_zero_and_writes_nothing(tmp_path, capsys):
    cube, _ = source_cube(n=30_000, seed=7)
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    rc = main(["sparam", str(tmp_path / "cube.h5"), "-o", str(tmp_path / "s.h5")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "S for 0 of 3200 pixels" in err and "counts per pixel" in err and "--block" in err
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "s.png").exists()


def test_source_without_background_emits_only_compton_photons():
    det = DetectorSpec(rows=4, cols=4)
    src = hx.sim.ComptonSource(geometry=compton.PinholeGeometry(detector=det), background=False)
    e = src.sample(200_000, np.random.default_rng(1))
    assert src.line_fraction == 0 and src.fractions["background"] == 0
    # the Compton photons of NMC811 at 86-94 degrees: none near the lines (W 59, Pb 75, Cd/Te 23-31 keV)
    # beyond the few far-tail core electrons, and none at the elastic energy
    assert np.mean(np.abs(e - 115.0) < 0.05) < 1e-4
    assert np.mean(e < 40.0) < 1e-3
    with_bg = hx.sim.ComptonSource(geometry=compton.PinholeGeometry(detector=det)).sample(200_000, np.random.default_rng(1))
    assert np.mean(np.abs(with_bg - 115.0) < 0.05) == pytest.approx(0.02, abs=0.002)    # elastic_fraction
