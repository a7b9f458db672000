"""One bounded Poisson Levenberg-Marquardt for every per-spectrum fit of hexspec.

Both the batched Compton peak fits (:mod:`hexspec.fit`) and the Am-241 line fits
(:mod:`calibration.am241.linefit`) are this fitter with their own model and settings.
It is hand-written in numba because thousands of small fits (one per pixel) through
lmfit or scipy cost milliseconds each; this runs inside the callers' parallel pixel
loops, without the GIL.

The fitter minimises either the Neyman chi-square ``sum (y - m)^2 / max(y, 1)``
(``ml=False``) or the Poisson deviance ``2 sum (m - y + y ln(y / m))`` (``ml=True``,
Fisher scoring: weights 1/m), over parameters with box bounds ``lo <= p <= hi``, some
held fixed (``free``) and some tied linearly to another (``p[t] = ratio[t] p[src[t]]``,
e.g. a tail amplitude held at a share of the Gaussian's). A parameter resting on a bound
that the objective pushes further out is held for that iteration (active set); steps are
clipped to the bounds. Standard errors come from the unscaled inverse of J^T W J over the
free parameters off their bounds (the weights are absolute).

A model is two numba functions, compiled into a fitter by :func:`make_lm`:

``model(p, data, slot, f)``
    Expected counts per bin at parameters ``p`` into ``f``. ``data`` is the model's own
    tuple (bin positions, buffers); ``slot`` (0 or 1) names the buffer a model may keep
    intermediate values in, so that the Jacobian can reuse those of the accepted point.
``jacobian(p, data, slot, free, tie_src, tie_ratio, f, jac)``
    ``jac[q, :] = d f / d p_q`` for every ``free[q]`` (analytic or finite differences),
    the total derivative under the ties. ``f`` holds ``model(p)`` evaluated into ``slot``;
    the Jacobian may overwrite it with the same values (a fused analytic evaluation).

:class:`LMSettings` collects the choices in which the two fitters differ (damping
schedule, stopping rule, floors, which errors are reported).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

#: status of one fit
LM_CONVERGED, LM_MAX_ITER, LM_NOT_FINITE = 0, 1, 2

# Fast-math for the inner loops, keeping NaN/inf semantics (non-finite objectives must be seen).
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


class LMSettings(NamedTuple):
    """How a fit is damped, stopped and reported (one per model; passed into the kernels).

    Attributes
    ----------
    ml : bool
        Poisson deviance (True) or Neyman chi-square (False).
    weight_floor : float
        With ``ml``, the weights are 1 / max(m, weight_floor) (0: 1/m).
    deviance_floor : float
        With ``ml``, the model is floored at this value in the deviance; 0 makes a
        non-positive model an infinite objective instead.
    lam0, lam_down, lam_min, lam_up, lam_up_singular, lam_max : float
        Marquardt damping: its start; its factor and floor after an accepted step; its
        factor after a rejected step and after a singular system; the damping at which
        the search for a downhill step gives up.
    max_tries : int
        Trial steps per iteration before the search gives up.
    damping_eps : float
        Added to every damped diagonal element (keeps a zero column solvable).
    ftol_abs, ftol_rel : float
        An accepted step that lowers the objective by at most ftol_rel * objective +
        ftol_abs is small in the objective.
    xtol : float
        An accepted step is small in the parameters when max_q |dp_q| / scale_q < xtol
        (scales: ``xscale_ref``).
    converge_needs_both : bool
        Stop when the step is small in the objective AND the parameters (True) or in
        either one (False).
    xtol_reject : float
        A rejected step smaller than this (relative, every parameter on its own scale)
        ends the fit as converged (0: never).
    final_jacobian : bool
        Recompute the Jacobian at the final parameters for the errors (False: the one of
        the last iteration, as the Am-241 fits always did).
    """

    ml: bool
    weight_floor: float
    deviance_floor: float
    lam0: float
    lam_down: float
    lam_min: float
    lam_up: float
    lam_up_singular: float
    lam_max: float
    max_tries: int
    damping_eps: float
    ftol_abs: float
    ftol_rel: float
    xtol: float
    converge_needs_both: bool
    xtol_reject: float
    final_jacobian: bool


@njit(cache=True, nogil=True)
def apply_bounds_and_ties(p, lo, hi, tie_src, tie_ratio):
    """Clip ``p`` to [lo, hi] in place, then set every tied parameter from its source."""
    for q in range(p.shape[0]):
        if p[q] < lo[q]:
            p[q] = lo[q]
        elif p[q] > hi[q]:
            p[q] = hi[q]
    for q in range(p.shape[0]):
        if tie_src[q] >= 0:
            p[q] = tie_ratio[q] * p[tie_src[q]]


@njit(cache=True, nogil=True)
def apply_ties(p, tie_src, tie_ratio):
    """Set every tied parameter of ``p`` from its source (for finite-difference Jacobians)."""
    for q in range(p.shape[0]):
        if tie_src[q] >= 0:
            p[q] = tie_ratio[q] * p[tie_src[q]]


@njit(cache=True, nogil=True, fastmath=_FAST)
def objective(y, f, s):
    """The objective of settings ``s`` for counts ``y`` and model ``f`` (inf when not defined)."""
    total = 0.0
    if s.ml:
        floor = s.deviance_floor
        for i in range(y.shape[0]):
            m = f[i]
            if floor > 0.0:
                m = max(m, floor)
            elif m <= 0.0:
                return np.inf
            t = m - y[i]
            if y[i] > 0.0:
                t += y[i] * math.log(y[i] / m)
            total += t
        return 2.0 * total
    for i in range(y.shape[0]):
        r = y[i] - f[i]
        total += r * r / max(y[i], 1.0)
    return total


@njit(cache=True, nogil=True, fastmath=_FAST)
def normal_equations(y, f, jac, idx, k, s, h, g, w, wr):
    """H = J^T W J and g = J^T W (y - f) over the parameters idx[:k] (W: the settings' weights).

    ``w`` and ``wr`` (n,) are scratch for the weights and the weighted residuals; every
    element of H and g is then one dot product over the bins, which the compiler vectorises.
    """
    n = y.shape[0]
    for i in range(n):
        wt = 1.0 / max(f[i], s.weight_floor) if s.ml else 1.0 / max(y[i], 1.0)
        w[i] = wt
        wr[i] = wt * (y[i] - f[i])
    for a in range(k):
        ja = jac[idx[a]]
        acc = 0.0
        for i in range(n):
            acc += wr[i] * ja[i]
        g[a] = acc
        for b in range(a + 1):
            jb = jac[idx[b]]
            acc = 0.0
            for i in range(n):
                acc += w[i] * ja[i] * jb[i]
            h[a, b] = acc
            h[b, a] = acc


@njit(cache=True, nogil=True)
def cholesky_solve(a, b, x, lw, n):
    """Solve a[:n, :n] x = b[:n] for symmetric positive-definite a into x; False if a is not SPD."""
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= lw[j, k] * lw[j, k]
        if not s > 0.0:
            return False
        lw[j, j] = math.sqrt(s)
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= lw[i, k] * lw[j, k]
            lw[i, j] = s / lw[j, j]
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= lw[i, k] * x[k]
        x[i] = s / lw[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= lw[k, i] * x[k]
        x[i] = s / lw[i, i]
    return True


@njit(cache=True, nogil=True)
def _relative_change(trial, p, xscale_ref):
    """max_q |trial_q - p_q| / scale_q; scale |p_q| + 1e-8 (ref -1), p[ref] (ref >= 0), skipped (ref -2)."""
    rel = 0.0
    for q in range(p.shape[0]):
        ref = xscale_ref[q]
        if ref == -2:
            continue
        scale = abs(p[q]) + 1e-8 if ref == -1 else p[ref]
        rel = max(rel, abs(trial[q] - p[q]) / scale)
    return rel


@njit(cache=True, nogil=True)
def _own_scale_change(trial, p):
    rel = 0.0
    for q in range(p.shape[0]):
        rel = max(rel, abs(trial[q] - p[q]) / (abs(p[q]) + 1e-8))
    return rel


@njit(cache=True, nogil=True)
def standard_errors(y, f, jac, p, lo, hi, free, err_on_bound_ok, err_needs_off_lo, s, err):
    """Unscaled standard errors into ``err`` (NaN for parameters not reported); returns their number.

    Reported: the free parameters off their bounds (or on one where ``err_on_bound_ok``),
    except those whose ``err_needs_off_lo`` parameter rests on its lower bound (a tail
    length without a tail); the others count as fixed, since they would make the
    information matrix singular.
    """
    npar = p.shape[0]
    idx = np.empty(npar, np.int64)
    k = 0
    for q in range(npar):
        err[q] = np.nan
        if not free[q]:
            continue
        if not err_on_bound_ok[q] and (p[q] <= lo[q] or p[q] >= hi[q]):
            continue
        r = err_needs_off_lo[q]
        if r >= 0 and p[r] <= lo[r]:
            continue
        idx[k] = q
        k += 1
    h = np.empty((npar, npar))
    g = np.empty(npar)
    n = y.shape[0]
    normal_equations(y, f, jac, idx, k, s, h, g, np.empty(n), np.empty(n))
    lw = np.empty((npar, npar))
    unit = np.empty(npar)
    col = np.empty(npar)
    for a in range(k):
        for b in range(k):
            unit[b] = 0.0
        unit[a] = 1.0
        if cholesky_solve(h, unit, col, lw, k) and col[a] > 0.0:
            err[idx[a]] = math.sqrt(col[a])
    return k


def make_lm(model, jacobian):
    """A bounded Poisson Levenberg-Marquardt fitter for one model (see the module docstring).

    Returns a numba function ``lm(y, data, p, lo, hi, free, tie_src, tie_ratio, xscale_ref,
    err_on_bound_ok, err_needs_off_lo, max_iter, s, err) -> (objective, status, n_err)``:
    ``p`` (npar,) holds the start values and receives the fit, ``err`` the standard errors;
    ``status`` is LM_CONVERGED, LM_MAX_ITER or LM_NOT_FINITE (objective not finite at the
    start); ``n_err`` is the number of parameters with an error. Call it from numba code
    (a parallel pixel loop); each model gets its own compiled copy, the numba way of
    passing functions without losing the on-disk cache of the callers.
    """

    @njit(cache=True, nogil=True, fastmath=_FAST)
    def lm(y, data, p, lo, hi, free, tie_src, tie_ratio, xscale_ref, err_on_bound_ok, err_needs_off_lo, max_iter,
           s, err):
        n = y.shape[0]
        npar = p.shape[0]
        fbuf = np.empty((2, n))
        jac = np.empty((npar, n))
        idx = np.empty(npar, np.int64)
        k = 0
        for q in range(npar):
            if free[q]:
                idx[k] = q
                k += 1
        h = np.empty((npar, npar))
        g = np.empty(npar)
        a = np.empty((npar, npar))
        rhs = np.empty(npar)
        sub = np.empty(npar)
        lw = np.empty((npar, npar))
        act = np.empty(npar, np.int64)
        trial = np.empty(npar)
        w = np.empty(n)
        wr = np.empty(n)

        apply_bounds_and_ties(p, lo, hi, tie_src, tie_ratio)
        cur = 0
        model(p, data, cur, fbuf[cur])
        obj = objective(y, fbuf[cur], s)
        if not np.isfinite(obj):
            for q in range(npar):
                err[q] = np.nan
            return obj, LM_NOT_FINITE, 0
        lam = s.lam0
        status = LM_MAX_ITER
        for _it in range(max_iter):
            jacobian(p, data, cur, free, tie_src, tie_ratio, fbuf[cur], jac)
            normal_equations(y, fbuf[cur], jac, idx, k, s, h, g, w, wr)
            # Active set: a parameter resting on a bound that the objective pushes further
            # out is held for this iteration (projected steps along it only stall the fit).
            na = 0
            for u in range(k):
                q = idx[u]
                if (p[q] <= lo[q] and g[u] <= 0.0) or (p[q] >= hi[q] and g[u] >= 0.0):
                    continue
                act[na] = u
                na += 1
            nxt = 1 - cur
            accepted = False
            obj_new = obj
            tries = 0
            while tries < s.max_tries and lam < s.lam_max:
                tries += 1
                for u in range(na):
                    for v in range(na):
                        a[u, v] = h[act[u], act[v]]
                    a[u, u] = h[act[u], act[u]] * (1.0 + lam) + s.damping_eps
                    rhs[u] = g[act[u]]
                if not cholesky_solve(a, rhs, sub, lw, na):
                    lam *= s.lam_up_singular
                    continue
                for q in range(npar):
                    trial[q] = p[q]
                for u in range(na):
                    trial[idx[act[u]]] += sub[u]
                apply_bounds_and_ties(trial, lo, hi, tie_src, tie_ratio)
                model(trial, data, nxt, fbuf[nxt])
                obj_new = objective(y, fbuf[nxt], s)
                if obj_new <= obj:
                    accepted = True
                    break
                if _own_scale_change(trial, p) < s.xtol_reject:
                    break              # the step has shrunk to nothing: at the minimum
                lam *= s.lam_up
            if not accepted:
                status = LM_CONVERGED  # no direction lowers the objective: at the minimum
                break
            f_small = obj - obj_new <= s.ftol_rel * obj + s.ftol_abs
            x_small = _relative_change(trial, p, xscale_ref) < s.xtol
            for q in range(npar):
                p[q] = trial[q]
            cur = nxt
            obj = obj_new
            lam = max(lam * s.lam_down, s.lam_min)
            if (f_small and x_small) if s.converge_needs_both else (f_small or x_small):
                status = LM_CONVERGED
                break
        if s.final_jacobian:
            jacobian(p, data, cur, free, tie_src, tie_ratio, fbuf[cur], jac)
        n_err = standard_errors(y, fbuf[cur], jac, p, lo, hi, free, err_on_bound_ok, err_needs_off_lo, s, err)
        return obj, status, n_err

    return lm
