"""Forward model of the cathode spectrum (hexspec.compton_forward) against the simulator's photons."""

import math

import numpy as np
import pytest

import hexspec as hx
from hexspec import compton, compton_forward
from hexspec.detector import DetectorSpec
from test_sparam_uniform import EDGES, source_cube


def test_templates_match_the_simulators_compton_photons():
    # one pixel, its own angle: the sampler (inverse-CDF tables + rejection) and the template
    # (the eq. (3) density integrated over bins) are two routes to one spectrum
    det = DetectorSpec(rows=1, cols=1)
    geom = compton.PinholeGeometry(detector=det, center_offset_mm=(6.0, 4.0))
    src = hx.sim.ComptonSource(li_content=0.7, geometry=geom, background=False)
    rng = np.random.default_rng(5)
    n = 400_000
    e = src.sample_pixels(np.zeros(n, np.int64), rng) + rng.normal(0, 0.8 / compton_forward.FWHM_PER_SIGMA, n)
    sel = slice(int(80 / 0.25), int(112 / 0.25))
    counts = np.histogram(e, EDGES)[0][sel].astype(float)
    t_li, t_host = compton_forward.templates(EDGES, 115.0, geom.theta_map().ravel(), 0.8, bins=sel)
    model = 0.7 * t_li[0] + t_host[0]
    expected = model / model.sum() * counts.sum()               # the shape is what is compared
    chi2 = np.sum((counts - expected) ** 2 / expected) / counts.size
    assert chi2 < 1.4, chi2                                      # 127 dof: p about 1 %


def test_fit_of_a_noiseless_spectrum_returns_the_li_content_exactly():
    det = DetectorSpec(rows=2, cols=4)
    theta = compton.PinholeGeometry(detector=det).theta_map()
    t_li, t_host = compton_forward.templates(EDGES, 115.0, theta.ravel(), 0.8)
    expected = 5000.0 * (0.35 * t_li + t_host) / t_host.sum(axis=1, keepdims=True) + 0.25 * 3.0
    cube = hx.SpectralCube(expected.reshape(2, 4, -1), EDGES)
    res = compton_forward.fit_li_blocks(cube, 115.0, theta, block=(2, 2))
    assert res.ok.all() and np.allclose(res.li, 0.35, atol=1e-5)
    assert np.allclose(res.background_per_kev, 4 * 3.0, rtol=1e-4)          # four pixels per block
    assert np.all(res.li_err > 0)


@pytest.mark.parametrize("li", [0.2, 0.8])
def test_forward_fit_recovers_the_li_content_of_simulated_photons_within_its_error(li):
    cube, theta = source_cube(li=li, n=1_000_000, seed=int(li * 10) + 30, det=DetectorSpec(rows=20, cols=40))
    res = compton_forward.fit_li_blocks(cube, 115.0, theta, block=(20, 40))
    assert res.ok.all() and res.status[0, 0] == 0
    assert abs(res.li[0, 0] - li) < 3 * res.li_err[0, 0], (res.li, res.li_err)
    assert 0.02 < res.li_err[0, 0] < 0.1                         # 1e6 photons: about 0.05
    assert 0.8 < res.deviance_per_dof[0, 0] < 1.3


def test_blocks_without_counts_say_why():
    cube = hx.SpectralCube(np.zeros((2, 2, EDGES.size - 1), np.uint32), EDGES)
    res = compton_forward.fit_li_blocks(cube, 115.0, math.pi / 2)
    assert not res.ok.any() and np.all(res.status == 2)
    assert "too few counts" in compton_forward.FIT_STATUS[2]


def test_sparam_forward_model_writes_a_li_map_with_errors(tmp_path, capsys):
    from hexspec.cli import main
    from hexspec.io import hdf5

    det = DetectorSpec(rows=20, cols=40)
    cube, _ = source_cube(li=0.6, n=800_000, seed=41, det=det)
    hdf5.write_cube(tmp_path / "cube.h5", cube)
    assert main(["sparam", str(tmp_path / "cube.h5"), "--block", "20", "20", "--forward-model",
                 "-o", str(tmp_path / "s.h5")]) == 0
    res, attrs = hdf5.read_results(tmp_path / "s.h5", "lithium_forward")
    assert res["li"].shape == (1, 2) and res["ok"].all()
    assert np.all(np.abs(res["li"] - 0.6) < 3 * res["li_err"])
    assert "forward model: 1-x for 2 of 2 blocks" in capsys.readouterr().out


def test_block_fit_weights_pixels_by_flux_not_by_counts():
    # Noiseless spectra of pixels whose angles move the peak across the fit range, each with
    # its own flux: the counts per unit flux in the fit range differ between pixels (the share
    # of the profile inside the range and the cross-section factor change with the angle), so
    # the block model must weight each pixel's model by its flux. Counts-weighting gave 1-x
    # 0.556 here.
    det = DetectorSpec(rows=2, cols=8)
    theta = compton.PinholeGeometry(detector=det, center_offset_mm=(-30.0, 0.0), d2_mm=60.0).theta_map()
    t_li, t_host = compton_forward.templates(EDGES, 115.0, theta.ravel(), 0.8)
    flux = np.linspace(1.0, 4.0, theta.size)[::-1]
    expected = 2.0e5 * flux[:, None] * (0.6 * t_li + t_host) / t_host.sum(axis=1).mean() + 0.25 * 2.0
    cube = hx.SpectralCube(expected.reshape(2, 8, -1), EDGES)
    res = compton_forward.fit_li_blocks(cube, 115.0, theta, block=(2, 8))
    assert res.ok.all()
    assert res.li[0, 0] == pytest.approx(0.6, abs=1e-4)
    assert res.deviance_per_dof[0, 0] < 1e-6


def test_block_fit_of_simulated_photons_across_an_offset_detector_has_poisson_deviance():
    # the simulator's photons (its own sampler) over pixels whose Compton peak moves by about
    # 3 keV: one block; counts-weighting the pixels' models gave deviance/dof 5.0 here
    det = DetectorSpec(rows=20, cols=40)
    geom = compton.PinholeGeometry(detector=det, center_offset_mm=(-12.0, 0.0), d2_mm=80.0)
    src = hx.sim.ComptonSource(li_content=0.5, geometry=geom, background=False)
    rng = np.random.default_rng(11)
    n = 3_000_000
    pix = rng.integers(0, det.n_pixels, n)
    e = src.sample_pixels(pix, rng) + rng.normal(0.0, 0.8 / compton_forward.FWHM_PER_SIGMA, n)
    b = np.searchsorted(EDGES, e) - 1
    ok = (b >= 0) & (b < EDGES.size - 1)
    nb = EDGES.size - 1
    counts = np.bincount(pix[ok] * nb + b[ok], minlength=det.n_pixels * nb).reshape(20, 40, nb)
    res = compton_forward.fit_li_blocks(hx.SpectralCube(counts.astype(np.uint32), EDGES), 115.0, geom.theta_map(),
                                        block=(20, 40))
    assert res.ok.all()
    assert res.deviance_per_dof[0, 0] < 1.35, res.deviance_per_dof     # about 90 dof: 1.35 is 2.3 sigma
    assert abs(res.li[0, 0] - 0.5) < 3 * res.li_err[0, 0], (res.li, res.li_err)
