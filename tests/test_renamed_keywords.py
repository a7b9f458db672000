"""Distinct names for the distinct windows, and the former names still accepted (DESIGN.md)."""

import numpy as np
import pytest

import hexspec as hx
from hexspec import fit


def test_cluster_window_is_the_charge_sharing_neighbourhood_and_window_its_former_name():
    new = hx.ProcessingConfig(cluster_window=5)
    old = hx.ProcessingConfig(window=5)
    assert new == old and old.cluster_window == 5 and old.window == 5
    assert hx.ProcessingConfig().cluster_window == 3
    assert "cluster_window" in new.to_dict() and "window" not in new.to_dict()


def test_an_old_window_option_overrides_a_stored_cluster_window():
    stored = hx.ProcessingConfig(cluster_window=3).to_dict()
    assert hx.ProcessingConfig.from_dict({**stored, "window": 5}).cluster_window == 5
    assert hx.ProcessingConfig(cluster_window=3).replace(window=5).cluster_window == 5


def test_both_names_with_different_values_are_refused():
    with pytest.raises(hx.ConfigError, match="cluster_window"):
        hx.ProcessingConfig(window=5, cluster_window=3)


def test_an_option_file_with_the_old_window_key_reads_as_cluster_window(tmp_path):
    p = tmp_path / "opts.toml"
    p.write_text("window = 5\n")
    assert hx.ProcessingConfig.read_options(p) == {"cluster_window": 5}
    assert hx.ProcessingConfig.from_file(p).cluster_window == 5


def test_the_two_window_keywords_of_fit_peak_select_the_same_bins():
    # a Gaussian of 2 keV FWHM at 60 keV on a flat background of 5 counts per 0.25 keV bin
    x = np.arange(40.0, 80.0, 0.25) + 0.125
    counts = np.round(5 + 2000 * np.exp(-0.5 * ((x - 60.0) / (2.0 / 2.3548)) ** 2))
    a = fit.fit_peak(x, counts, energy_window_kev=(55.0, 65.0))
    b = fit.fit_peak(x, counts, window=(55.0, 65.0))
    assert a.npoints == b.npoints == 40 and a.center == b.center
    assert abs(a.center - 60.0) < 0.01
    with pytest.raises(hx.ConfigError, match="former name"):
        fit.fit_peak(x, counts, energy_window_kev=(55.0, 65.0), window=(50.0, 70.0))


def test_fit_cube_takes_the_window_under_either_name():
    x = np.arange(40.0, 80.0, 0.25)
    centers = x[:-1] + 0.125
    counts = np.round(5 + 2000 * np.exp(-0.5 * ((centers - 60.0) / (2.0 / 2.3548)) ** 2)).astype(np.uint32)
    cube = hx.SpectralCube(np.tile(counts, (1, 2, 1)), x)
    a = fit.fit_cube(cube, energy_window_kev=(55.0, 65.0))
    b = fit.fit_cube(cube, window=(55.0, 65.0))
    np.testing.assert_array_equal(a.center, b.center)
    np.testing.assert_allclose(a.center, 60.0, atol=0.01)
    with pytest.raises(hx.ConfigError, match="energy window"):
        fit.fit_cube(cube)
