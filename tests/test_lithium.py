"""Li stoichiometry calibration 1 - x = a S + b (PHYSICS.md eq. 5)."""

import json
import math

import numpy as np
import pytest

import hexspec as hx
from hexspec.calibration.lithium import (LithiumCalibration, cathode_profile, element_profile, theoretical_calibration,
                                         theoretical_s)


def test_two_reference_points_give_the_line_through_both():
    cal = LithiumCalibration.fit([0.95, 1.00], [0.2, 0.9])
    assert cal.slope == pytest.approx(14.0)
    assert cal.intercept == pytest.approx(0.9 - 14.0)
    assert cal(0.975) == pytest.approx(0.55)


def test_two_points_with_s_errors_give_the_slope_error_worked_by_hand():
    # a = dy / dS; with errors only in S: sigma_a = |a| sqrt(s1^2 + s2^2) / |dS|
    cal = LithiumCalibration.fit([0.95, 1.00], [0.2, 0.9], s_err=[0.002, 0.003])
    assert math.sqrt(cal.covariance[0, 0]) == pytest.approx(14.0 * math.hypot(0.002, 0.003) / 0.05, rel=1e-9)


def test_slope_error_matches_the_scatter_of_repeated_calibrations():
    rng = np.random.default_rng(1)
    li = np.array([0.2, 0.4, 0.6, 0.9])
    s_true = 0.93 + 0.06 * li
    slopes, errors = [], []
    for _ in range(400):
        cal = LithiumCalibration.fit(s_true + rng.normal(0, 0.002, li.size), li, s_err=0.002)
        slopes.append(cal.slope)
        errors.append(math.sqrt(cal.covariance[0, 0]))
    assert np.std(slopes) == pytest.approx(np.median(errors), rel=0.15)
    assert np.median(slopes) == pytest.approx(1 / 0.06, rel=0.05)


def test_without_errors_the_covariance_comes_from_the_scatter():
    s = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([0.1, 0.2, 0.25, 0.45])
    cal = LithiumCalibration.fit(s, y)
    # ordinary least squares: var(a) = (RSS / (n - 2)) / sum (s - mean s)^2
    a, b = np.polyfit(s, y, 1)
    rss = np.sum((y - (a * s + b)) ** 2)
    assert cal.slope == pytest.approx(a)
    assert cal.covariance[0, 0] == pytest.approx(rss / 2 / np.sum((s - s.mean()) ** 2))


def test_apply_propagates_calibration_and_map_errors():
    cal = LithiumCalibration(slope=10.0, intercept=-9.0, covariance=np.array([[4.0, -3.9], [-3.9, 3.81]]),
                             s_range=(0.95, 1.0))
    m = cal.apply(np.array([[0.97, 1.02]]), np.array([[0.001, 0.002]]))
    # var = S^2 var_a + 2 S cov_ab + var_b + a^2 s_err^2, by hand for S = 0.97, s_err = 0.001
    var = 0.97 ** 2 * 4.0 + 2 * 0.97 * (-3.9) + 3.81 + 100 * 0.001 ** 2
    assert m.li[0, 0] == pytest.approx(0.7)
    assert m.li_err[0, 0] == pytest.approx(math.sqrt(var))
    assert m.extrapolated.tolist() == [[False, True]]


def test_apply_accepts_an_smap_and_marks_missing_values():
    cal = LithiumCalibration.fit([0.95, 1.00], [0.2, 0.9])
    smap = hx.compton.SMap(s=np.array([[0.97, np.nan]]), s_err=np.array([[0.001, np.nan]]), ok=np.array([[True, False]]),
                           s_low=None, s_high=None, counts_low=None, counts_high=None)
    m = cal.apply(smap)
    assert m.ok.tolist() == [[True, False]] and np.isnan(m.li[0, 1])


def test_calibration_survives_a_json_round_trip(tmp_path):
    cal = LithiumCalibration.fit([0.95, 0.97, 1.00], [0.2, 0.5, 0.9], s_err=[0.002, 0.002, 0.003])
    cal.save(tmp_path / "cal.json")
    again = LithiumCalibration.load(tmp_path / "cal.json")
    assert again.slope == cal.slope and again.intercept == cal.intercept
    assert np.array_equal(again.covariance, cal.covariance) and again.s_range == cal.s_range
    assert json.loads((tmp_path / "cal.json").read_text())["format"] == "hexspec.LithiumCalibration"


def test_loading_a_foreign_json_is_a_format_error(tmp_path):
    (tmp_path / "x.json").write_text('{"slope": 1}')
    with pytest.raises(hx.FormatError, match="hexspec.LithiumCalibration"):
        LithiumCalibration.load(tmp_path / "x.json")


def test_fit_needs_two_distinct_points():
    with pytest.raises(hx.CalibrationError, match="at least 2"):
        LithiumCalibration.fit([1.0], [0.5])
    with pytest.raises(hx.CalibrationError, match="all equal"):
        LithiumCalibration.fit([1.0, 1.0], [0.2, 0.8])


def test_free_atom_profiles_hold_their_electron_counts():
    p = np.linspace(-100, 100, 40001)
    # Li(0.5) Ni0.8 Mn0.1 Co0.1 O2: 0.5*3 + 0.8*28 + 0.1*25 + 0.1*27 + 2*8 = 45.1 electrons
    assert np.trapezoid(cathode_profile(0.5, p), p) == pytest.approx(45.1, rel=0.01)
    assert element_profile(3, 0.7) == pytest.approx(element_profile(3, -0.7))


def test_free_atom_theory_s_rises_by_about_six_percent_from_x_1_to_x_0():
    s = theoretical_s([0.0, 0.5, 1.0])
    assert 0.05 < s[2] / s[0] - 1 < 0.075                               # PHYSICS.md eq. (5): about 6 %
    assert s[1] == pytest.approx(0.5 * (s[0] + s[2]), rel=1e-3)          # close to linear


def test_resolution_lowers_theoretical_s():
    assert theoretical_s(0.5, resolution_fwhm_au=0.9)[0] < theoretical_s(0.5)[0]


def test_theoretical_calibration_inverts_the_theory_curve():
    cal = theoretical_calibration()
    assert cal(theoretical_s(0.3)[0]) == pytest.approx(0.3, abs=0.02)
