"""The shared bounded Poisson Levenberg-Marquardt (hexspec.lm) against closed forms and scipy.

The model is a straight line in counts per bin, m_i = a g_i + b h_i (+ a tied third
column), so that the Neyman chi-square minimum is weighted linear least squares (numpy
lstsq) and its covariance (J^T W J)^-1 is exact; the Poisson ML fit is checked against
scipy.optimize on the deviance.
"""

import numpy as np
import pytest
from numba import njit
from scipy.optimize import minimize

from hexspec import lm


@njit(cache=True, nogil=True)
def _model(p, data, slot, f):
    g, h, t = data
    for i in range(f.shape[0]):
        f[i] = p[0] * g[i] + p[1] * h[i] + p[2] * t[i]


@njit(cache=True, nogil=True)
def _jacobian(p, data, slot, free, tie_src, tie_ratio, f, jac):
    g, h, t = data
    for i in range(f.shape[0]):
        # p[2] tied to p[0] moves with it: the total derivative
        share = tie_ratio[2] if tie_src[2] == 0 else 0.0
        jac[0, i] = g[i] + share * t[i]
        jac[1, i] = h[i]
        jac[2, i] = t[i]


_lm = lm.make_lm(_model, _jacobian)


@njit(cache=True)
def _run(y, data, p, lo, hi, free, tie_src, tie_ratio, s, err):
    xscale = np.full(3, -1, np.int64)
    return _lm(y, data, p, lo, hi, free, tie_src, tie_ratio, xscale, np.zeros(3, np.bool_), np.full(3, -1, np.int64),
               200, s, err)


def _settings(ml):
    return lm.LMSettings(ml=ml, weight_floor=0.0, deviance_floor=0.0, lam0=1e-4, lam_down=0.1, lam_min=1e-12,
                         lam_up=10.0, lam_up_singular=10.0, lam_max=1e12, max_tries=1 << 30, damping_eps=1e-300,
                         ftol_abs=1e-14, ftol_rel=1e-12, xtol=1e-12, converge_needs_both=False, xtol_reject=1e-14,
                         final_jacobian=True)


X = np.linspace(0.0, 1.0, 40)
G, H, T = np.ones_like(X), X.copy(), np.exp(-X)
Y = np.random.default_rng(3).poisson(50.0 + 30.0 * X).astype(float)


def _fit(ml, lo=(-np.inf,) * 3, hi=(np.inf,) * 3, free=(True, True, False), tie=None, start=(40.0, 10.0, 0.0)):
    p = np.array(start, dtype=float)
    tie_src = np.full(3, -1, np.int64)
    tie_ratio = np.zeros(3)
    if tie is not None:
        tie_src[2], tie_ratio[2] = 0, tie
    err = np.empty(3)
    obj, status, n_err = _run(Y, (G, H, T), p, np.array(lo, float), np.array(hi, float), np.array(free), tie_src,
                              tie_ratio, _settings(ml), err)
    return p, err, obj, status, n_err


def _wls(columns):
    w = 1.0 / np.maximum(Y, 1.0)
    a = np.column_stack(columns)
    coef = np.linalg.lstsq(a * np.sqrt(w)[:, None], Y * np.sqrt(w), rcond=None)[0]
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    return coef, np.sqrt(np.diag(cov))


def test_least_squares_is_weighted_linear_least_squares_with_its_covariance():
    p, err, obj, status, n_err = _fit(ml=False)
    coef, se = _wls([G, H])
    assert status == lm.LM_CONVERGED and n_err == 2
    np.testing.assert_allclose(p[:2], coef, rtol=1e-8)
    np.testing.assert_allclose(err[:2], se, rtol=1e-8)
    assert np.isnan(err[2])                       # fixed: no error
    assert obj == pytest.approx(np.sum((Y - coef[0] * G - coef[1] * H) ** 2 / np.maximum(Y, 1.0)), rel=1e-10)


def test_poisson_ml_matches_scipy_on_the_deviance():
    p, err, obj, status, _ = _fit(ml=True)

    def deviance(q):
        m = q[0] * G + q[1] * H
        return 2.0 * np.sum(m - Y + Y * np.log(Y / m))

    ref = minimize(deviance, [40.0, 10.0], method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-12, maxiter=20000))
    assert status == lm.LM_CONVERGED
    np.testing.assert_allclose(p[:2], ref.x, rtol=1e-6)
    assert obj == pytest.approx(ref.fun, abs=1e-8)
    # Fisher information of the Poisson likelihood, sum J J^T / m, at the optimum
    m = p[0] * G + p[1] * H
    jac = np.column_stack([G, H])
    np.testing.assert_allclose(err[:2], np.sqrt(np.diag(np.linalg.inv(jac.T @ (jac / m[:, None])))), rtol=1e-8)


def test_a_bound_holds_its_parameter_and_the_rest_refit_without_it():
    free_b = _wls([G, H])[0][1]
    p, err, _, status, n_err = _fit(ml=False, hi=(np.inf, 0.5 * free_b, np.inf))
    assert status == lm.LM_CONVERGED
    assert p[1] == 0.5 * free_b                  # on its upper bound
    assert np.isnan(err[1]) and n_err == 1       # no error on a bound
    # a alone, with b at the bound: weighted least squares of Y - b H on G
    w = 1.0 / np.maximum(Y, 1.0)
    a = np.sum(w * G * (Y - p[1] * H)) / np.sum(w * G * G)
    assert p[0] == pytest.approx(a, rel=1e-8)
    assert err[0] == pytest.approx(1.0 / np.sqrt(np.sum(w * G * G)), rel=1e-8)


def test_a_tied_parameter_follows_its_source():
    ratio = 0.4
    p, err, _, status, _ = _fit(ml=False, tie=ratio)
    assert status == lm.LM_CONVERGED
    assert p[2] == pytest.approx(ratio * p[0], rel=1e-12)
    coef, se = _wls([G + ratio * T, H])       # the tie makes one column of the two
    np.testing.assert_allclose(p[:2], coef, rtol=1e-8)
    np.testing.assert_allclose(err[:2], se, rtol=1e-8)


def test_a_model_that_is_not_positive_at_the_start_is_reported_for_ml():
    p, err, obj, status, n_err = _fit(ml=True, start=(-10.0, 0.0, 0.0))
    assert status == lm.LM_NOT_FINITE and n_err == 0 and not np.isfinite(obj)
    assert np.all(np.isnan(err))
