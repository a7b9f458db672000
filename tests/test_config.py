"""ProcessingConfig: validation and serialisation."""

import numpy as np
import pytest

import hexspec as hx


def test_json_round_trip_keeps_maps_and_bins():
    rng = np.random.default_rng(0)
    cfg = hx.ProcessingConfig(threshold=rng.uniform(50, 90, (4, 5)), gradients=0.025, intercepts=rng.normal(0, 1, (4, 5)),
                              next_frame=False, charge_sharing="csa", window=5, max_cluster_size=2,
                              bins=hx.EnergyBins(0, 150, 0.5))
    back = hx.ProcessingConfig.from_json(cfg.to_json())
    assert back == cfg
    np.testing.assert_array_equal(back.intercepts, cfg.intercepts)
    assert back.bins.n == 300


def test_defaults_are_uncalibrated_adu_bins_and_calibrated_kev_bins():
    assert hx.ProcessingConfig().resolved_bins() == hx.EnergyBins(0, 16384, 16)
    assert hx.ProcessingConfig(gradients=0.02).resolved_bins() == hx.EnergyBins(0, 200, 0.25)


@pytest.mark.parametrize("kw, message", [
    (dict(charge_sharing="cds"), "expected one of none, csd, csa, found 'cds'"),
    (dict(window=4), "expected an odd integer >= 3"),
    (dict(threshold=-1), "expected values >= 0 ADU"),
    (dict(max_cluster_size=0), "expected None or an integer >= 1"),
    (dict(gradients=np.ones(3)), r"found shape \(3,\)"),
    (dict(next_frame="yes"), "expected True or False"),
    (dict(gradients="m.txt"), "read it first"),
    (dict(bins={"start": 0, "stop": 10}), r"expected EnergyBins, \(start, stop, width\)"),
    (dict(bins="abc"), r"expected EnergyBins, \(start, stop, width\)"),
    (dict(bins=(0, 10, -1)), "width must be positive"),
])
def test_invalid_options_are_config_errors_that_name_what_was_found(kw, message):
    with pytest.raises(hx.ConfigError, match=message):
        hx.ProcessingConfig(**kw)


def test_unknown_option_in_a_file_is_named(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"threshold": 80, "treshold": 3}')
    with pytest.raises(hx.ConfigError, match="unknown option.*treshold"):
        hx.ProcessingConfig.from_file(p)


def test_toml_file_is_read(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('threshold = 80\ncharge_sharing = "csa"\nmax_cluster_size = 2\nbins = [0, 100, 0.5]\n')
    cfg = hx.ProcessingConfig.from_file(p)
    assert (cfg.threshold, cfg.charge_sharing, cfg.max_cluster_size, cfg.bins.n) == (80.0, "csa", 2, 200)


def test_a_config_file_sets_only_the_options_it_names(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('charge_sharing = "csa"\n')
    assert hx.ProcessingConfig.read_options(p) == {"charge_sharing": "csa"}
    p.write_text('window = 4\n')
    with pytest.raises(hx.ConfigError, match="expected an odd integer"):
        hx.ProcessingConfig.read_options(p)
