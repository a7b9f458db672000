"""Forward model of the Compton spectrum of an NMC811 cathode, and fits of 1 - x to it.

The expected counts per energy bin of one pixel are (PHYSICS.md section 2, eqs. 2, 3, 5)

    mu_i = K [ (1-x) T_Li,i + T_host,i ] + B dE_i

with T the free-atom Hartree-Fock profile (Biggs et al. 1975, through xraylib) of Li and of
the host Ni0.8 Mn0.1 Co0.1 O2, taken through the impulse cross-section factor
(E2/E1)(mc^2/(q c)) at the pixel's own scattering angle, convolved with the detector's
Gaussian resolution and integrated over each bin; B is a flat background in counts per keV.
This is the model the simulator samples from (``hexspec.sim.ComptonSource``): exact for
its photons smeared by a Gaussian. Spectra from a detector through the event chain need
its response (``hexspec.detector_response``: the Am-241 calibration's resolution and
thresholds, charge-sharing losses and K escape under discrimination, what the next-frame
correction lets through or cuts (neighbours hit in the previous frame, spilled pulses),
energy-dependent efficiency), applied to the true-energy density before binning (``response=``); the
Gaussian alone gave 1 - x of about -2.7 with deviance/dof 50-240 on such spectra.

Two uses:

- :func:`templates` gives T_Li and T_host per pixel on a cube's bins; the S route's
  sideband background (``hexspec.compton``) takes the shape of the Compton tail beyond
  p_z = 7 a.u. from it (core electrons, for which the free-atom profiles are good);
- :func:`fit_li_blocks` fits (1-x) K, K and B per pixel or block by Poisson maximum
  likelihood. The model is linear in these three, so the fit is a short Newton iteration
  with an exact Fisher-information covariance; 1 - x = a / K with its propagated error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtr

from .compton.kinematics import impulse_factor, pz_from_energy
from .errors import ConfigError

#: Atoms per formula unit of the host besides Li (Ni0.8 Mn0.1 Co0.1 O2), by element symbol.
NMC811 = {"Ni": 0.8, "Mn": 0.1, "Co": 0.1, "O": 2.0}
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_PZ_STEP_AU = 0.005
_PZ_MAX_AU = 60.0
_FINE_STEP_KEV = 0.02
_THETA_QUANTUM_RAD = math.radians(0.01)      # 0.003 keV of E_C: far below the resolution


@lru_cache(maxsize=None)
def _profile_table(symbol):
    import xraylib
    z = xraylib.SymbolToAtomicNumber(symbol)
    pz = np.arange(0.0, _PZ_MAX_AU + _PZ_STEP_AU / 2, _PZ_STEP_AU)
    return pz, np.array([xraylib.ComptonProfile(z, float(p)) for p in pz])


def _component_profiles(composition):
    pz, j_li = _profile_table("Li")
    j_host = sum(n * _profile_table(s)[1] for s, n in composition.items())
    return pz, j_li, j_host


def _density_per_kev(e2_kev, e1_kev, theta_rad, pz_grid, j):
    """Counts per keV of E2 proportional to (E2/E1)(mc^2/(q c)) J(p_z(E2)), eq. (3); 0 beyond |p_z| = 60 a.u."""
    pz = np.abs(pz_from_energy(e2_kev, e1_kev, theta_rad))
    return np.interp(pz, pz_grid, j, right=0.0) / impulse_factor(e2_kev, e1_kev, theta_rad)


def templates(edges_kev, e1_kev, theta_rad, resolution_fwhm_kev=0.8, composition=None, bins=None):
    """Expected counts per bin of the Li and host parts of the Compton spectrum, per pixel.

    Parameters
    ----------
    edges_kev : ndarray (nbins + 1,)
        Energy bin edges, keV.
    e1_kev : float
        Incident energy, keV.
    theta_rad : float or ndarray (npix,)
        Scattering angle of each pixel, radians.
    resolution_fwhm_kev : float or ndarray (npix,)
        Gaussian detector resolution (FWHM, keV) at the Compton peak, e.g. the Am-241
        calibration's FWHM (the simulated electronic noise does not grow with energy).
    composition : dict, optional
        Host atoms per formula unit (default NMC811).
    bins : slice, optional
        Bins to compute (all by default).

    Returns
    -------
    t_li, t_host : ndarray (npix, nsel)
        Counts per bin per unit K: T_Li for one Li atom (3 electrons) and T_host for the
        host formula unit, both in the same (arbitrary, common) units.
    """
    composition = NMC811 if composition is None else composition
    edges = np.asarray(edges_kev, dtype=np.float64)
    sel = slice(None) if bins is None else bins
    idx = np.arange(edges.size - 1)[sel]
    a, b = edges[idx], edges[idx + 1]
    theta = np.atleast_1d(np.asarray(theta_rad, dtype=np.float64))
    res = np.broadcast_to(np.asarray(resolution_fwhm_kev, dtype=np.float64), theta.shape)
    if np.any(~np.isfinite(theta)) or np.any(~(res > 0)):
        raise ConfigError("compton_forward.templates: expected finite angles and a positive resolution")
    pz_grid, j_li, j_host = _component_profiles(composition)
    t_li = np.empty((theta.size, idx.size))
    t_host = np.empty((theta.size, idx.size))
    # Quantise the angle and resolution so that each distinct pair is computed once.
    key_t = np.round(theta / _THETA_QUANTUM_RAD).astype(np.int64)
    key_s = np.round(res / 0.005).astype(np.int64)
    for ks in np.unique(key_s):
        sigma = max(ks * 0.005, 0.005) / FWHM_PER_SIGMA
        fine = np.arange(a[0] - 7 * sigma, b[-1] + 7 * sigma + _FINE_STEP_KEV, _FINE_STEP_KEV)
        # response matrix: fine-grid energy -> measured bin (Gaussian resolution), times the step
        m = (ndtr((b[None, :] - fine[:, None]) / sigma) - ndtr((a[None, :] - fine[:, None]) / sigma)) * _FINE_STEP_KEV
        in_s = key_s == ks
        kt, inverse = np.unique(key_t[in_s], return_inverse=True)
        th = kt * _THETA_QUANTUM_RAD
        d_li = _density_per_kev(fine[None, :], e1_kev, th[:, None], pz_grid, j_li)
        d_host = _density_per_kev(fine[None, :], e1_kev, th[:, None], pz_grid, j_host)
        t_li[in_s] = (d_li @ m)[inverse]
        t_host[in_s] = (d_host @ m)[inverse]
    return t_li, t_host


# ---------------------------------------------------------------------------- fits

#: Status codes of :func:`fit_li_blocks` (``ForwardFit.status``).
FIT_STATUS = {0: "converged", 1: "iteration limit", 2: "too few counts in the fit range",
              3: "singular information matrix (the data cannot separate Li from host)"}


@dataclass
class ForwardFit:
    """Forward-model fit per pixel or block, each array of the map's shape.

    ``li`` is 1 - x with standard error ``li_err`` (from the Poisson Fisher information);
    ``scale`` is K, ``background_per_kev`` is B; ``status`` uses :data:`FIT_STATUS`;
    ``deviance_per_dof`` is the Poisson deviance over its degrees of freedom;
    ``slope_per_kev`` (fits with a detector response only) the fitted slope of ln eff(E).
    """

    li: np.ndarray
    li_err: np.ndarray
    scale: np.ndarray
    background_per_kev: np.ndarray
    background_err: np.ndarray
    deviance_per_dof: np.ndarray
    counts: np.ndarray
    status: np.ndarray
    ok: np.ndarray
    slope_per_kev: np.ndarray | None = None

    FIELDS = ("li", "li_err", "scale", "background_per_kev", "background_err", "deviance_per_dof", "counts",
              "status", "ok")

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.FIELDS}
        if self.slope_per_kev is not None:
            out["slope_per_kev"] = self.slope_per_kev
        return out


def _fit_linear_poisson(y, basis, max_iter=50):
    """Poisson ML of mu = basis @ p (basis (nbins, nparams)); returns p, covariance, deviance, status.

    Newton steps on the log-likelihood from the weighted least-squares start, halved while
    any expected count would turn non-positive; the covariance is the inverse Fisher
    information sum basis basis^T / mu at the optimum. Three linear parameters: written
    out here rather than through lmfit because blocks and pixels number in the thousands.
    """
    wls = basis / np.sqrt(np.maximum(y, 1.0))[:, None]
    try:
        p = np.linalg.lstsq(wls, y / np.sqrt(np.maximum(y, 1.0)), rcond=None)[0]
    except np.linalg.LinAlgError:
        return None, None, np.nan, 3
    mu_floor = 1e-9 * max(float(y.sum()), 1.0) / y.size
    status = 1
    for _ in range(max_iter):
        mu = np.maximum(basis @ p, mu_floor)
        grad = basis.T @ (y / mu - 1.0)
        info = basis.T @ (basis * (y / (mu * mu))[:, None])       # Hessian of -log L (Newton)
        try:
            step = np.linalg.solve(info + 1e-12 * np.eye(basis.shape[1]) * np.trace(info), grad)
        except np.linalg.LinAlgError:
            return None, None, np.nan, 3
        # step halving keeps every expected count positive where counts were seen
        t = 1.0
        while t > 1e-4 and np.any(basis @ (p + t * step) <= 0.0):
            t *= 0.5
        p = p + t * step
        if np.all(np.abs(t * step) <= 1e-8 * (np.abs(p) + 1e-6)):
            status = 0
            break
    mu = np.maximum(basis @ p, mu_floor)
    info_fisher = basis.T @ (basis / mu[:, None])
    try:
        cov = np.linalg.inv(info_fisher)
    except np.linalg.LinAlgError:
        return p, None, np.nan, 3
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = 2.0 * np.sum(mu - y + np.where(y > 0, y * np.log(y / mu), 0.0))
    return p, cov, float(dev), status


#: Fixed-point steps of the pixels' fluxes in a block fit (:func:`_flux_weights`); two or three suffice.
_FLUX_ITERATIONS = 8


def _flux_weights(n_pix, per_flux, params, previous):
    """Each pixel's share of a block's flux, from its counts and its own model, and whether it settled.

    The block's expected counts are sum_p phi_p mu_p with mu_p the pixel's model per unit
    flux (its own angle); the Poisson maximum-likelihood flux of a pixel given the shared
    parameters is phi_p = n_p / sum_i mu_p,i, its counts in the fit range over its model's
    counts there (``per_flux @ params``, ``per_flux`` (npix, nparams)). Weighting pixels by
    their counts alone is wrong by the pixel-to-pixel spread of sum_i mu_p,i: the share of
    the profile inside the range and the cross-section factor change with the angle, so
    counts-weighting over-weights the pixels with more counts per unit flux in the range
    and skews the block's line shape (on 2e7 simulated photons over a 40 x 80 detector it gave
    deviance/dof 3-11 instead of 1, and moved 1 - x by 0.03 through the detector chain).
    """
    if params is None or n_pix.size < 2:
        return previous, True
    model = per_flux @ np.asarray(params, np.float64)[: per_flux.shape[1]]
    if not np.all(model > 0):
        return previous, True
    w = n_pix / model
    w /= w.sum()
    done = bool(np.all(np.abs(w - previous) <= 1e-7 * np.maximum(previous, 1e-12) + 1e-12))
    return w, done


def fit_li_blocks(cube, e1_kev, theta, block=(1, 1), resolution_fwhm_kev=0.8, fit_range_kev=None,
                  composition=None, min_counts=200, mask=None, response=None) -> ForwardFit:
    """Fit 1 - x of every pixel or block directly to its spectrum with the forward model.

    Parameters
    ----------
    cube : SpectralCube
        Counts (rows, cols, nbins), keV.
    e1_kev : float
        Incident energy, keV.
    theta : float or ndarray (rows, cols)
        Scattering angle per pixel, radians.
    block : (int, int)
        Pixels per block (rows, cols); (1, 1) fits every pixel. A block's model is the sum of
        its pixels' models (each with its own angle), weighted by the pixels' fluxes (each
        pixel's counts in the fit range over its own model's counts there, iterated with the
        fit), with one 1 - x, one K and one B per block.
    resolution_fwhm_kev : float or ndarray (rows, cols)
        Detector resolution (FWHM, keV), e.g. ``EnergyCalibration.fwhm_kev`` of the Am-241 fit.
    fit_range_kev : (float, float), optional
        Energies fitted; default 88.5 keV (above the Pb K-beta and Te escape lines) to
        E1 - 3.5 keV (below the elastic line).
    min_counts : float
        Blocks with fewer counts in the fit range get status 2.
    mask : ndarray (rows, cols) of bool, optional
        Pixels to use (all with a finite angle by default).
    response : hexspec.detector_response.DetectorResponse, optional
        The detector's line shape and efficiency (e.g. ``DetectorResponse.from_calibration``
        of the Am-241 calibration). Needed for spectra that went through a detector and the
        event chain: the Gaussian alone (``response=None``, the resolution above) fits only
        smeared source photons. With it, ``resolution_fwhm_kev`` is not used; the model
        adds the elastic line at E1 (its counts a fourth linear parameter), B goes through
        the response too, and ``mask`` should keep the pixels with a full neighbourhood
        (``detector_response.full_neighbourhood``). When its ``free_slope`` is set the fit
        also frees the slope of ln eff(E) per keV about the fit range's centre
        (``ForwardFit.slope_per_kev``), whose uncertainty is carried into ``li_err``.

    Returns
    -------
    ForwardFit of shape (rows // block[0], cols // block[1]).
    """
    rows, cols = cube.shape
    br, bc = int(block[0]), int(block[1])
    if br < 1 or bc < 1 or rows // br == 0 or cols // bc == 0:
        raise ConfigError(f"fit_li_blocks: a {br}x{bc} block does not fit a {rows}x{cols} cube")
    lo, hi = fit_range_kev if fit_range_kev is not None else (88.5, e1_kev - 3.5)
    edges = cube.edges
    centres = 0.5 * (edges[1:] + edges[:-1])
    sel = np.flatnonzero((centres >= lo) & (centres <= hi))
    if sel.size < 10:
        raise ConfigError(f"fit_li_blocks: the fit range {lo}-{hi} keV holds {sel.size} bins, expected at least 10")
    bins = slice(sel[0], sel[-1] + 1)
    theta_map = np.broadcast_to(np.asarray(theta, dtype=np.float64), cube.shape)
    res_map = np.broadcast_to(np.asarray(resolution_fwhm_kev, dtype=np.float64), cube.shape)
    use = np.isfinite(theta_map) & np.isfinite(res_map) & (res_map > 0)
    if mask is not None:
        use &= np.asarray(mask, dtype=bool)
    nr, nc = rows // br, cols // bc
    y_all = cube.counts[: nr * br, : nc * bc, bins].astype(np.float64)
    use = use[: nr * br, : nc * bc]
    flat = np.flatnonzero(use.reshape(-1))
    t_li = np.zeros((nr * br * nc * bc, sel.size))
    t_host = np.zeros_like(t_li)
    th = theta_map[: nr * br, : nc * bc].reshape(-1)
    rs = res_map[: nr * br, : nc * bc].reshape(-1)
    if response is not None:
        return _fit_blocks_with_response(y_all, use, th, edges, bins, e1_kev, (br, bc), response, composition,
                                         min_counts)
    if flat.size:
        t_li[flat], t_host[flat] = templates(edges, e1_kev, th[flat], rs[flat], composition, bins)
    t_li = t_li.reshape(nr * br, nc * bc, -1)
    t_host = t_host.reshape(nr * br, nc * bc, -1)
    widths = np.diff(edges)[bins]
    shape = (nr, nc)
    out = {k: np.full(shape, np.nan) for k in ("li", "li_err", "scale", "background_per_kev", "background_err",
                                               "deviance_per_dof", "counts")}
    status = np.full(shape, 2, dtype=np.int64)
    for i in range(nr):
        for j in range(nc):
            sl = (slice(i * br, (i + 1) * br), slice(j * bc, (j + 1) * bc))
            u = use[sl]
            y_pix = y_all[sl][u]                            # (npix_used, nsel)
            n_pix = y_pix.sum(axis=1)
            total = float(n_pix.sum())
            out["counts"][i, j] = total
            if total < min_counts or not u.any():
                continue
            y = y_pix.sum(axis=0)
            tl_pix, th_pix = t_li[sl][u], t_host[sl][u]
            # per unit flux, each pixel's Li, host and background counts in the fit range
            per_flux = np.stack([tl_pix.sum(axis=1), th_pix.sum(axis=1), np.full(n_pix.size, widths.sum())], axis=1)
            w = n_pix / total
            for _ in range(_FLUX_ITERATIONS):
                basis = np.stack([w @ tl_pix, w @ th_pix, widths], axis=1)
                p, cov, dev, st = _fit_linear_poisson(y, basis)
                w, done = _flux_weights(n_pix, per_flux, p, w)
                if done:
                    break
            status[i, j] = st
            if cov is None or not p[1] > 0:
                status[i, j] = 3
                continue
            _store_block(out, i, j, p, cov, dev / max(sel.size - 3, 1))
    return _as_forward_fit(out, status)


def _store_block(out, i, j, p, cov, deviance_per_dof):
    """Write block (i, j)'s fit into ``out``: 1-x = a / k with its delta-method error from
    ``cov`` (parameters a, k, background first, any others after), scale, background."""
    a, k = p[0], p[1]
    g = np.zeros(cov.shape[0])
    g[0], g[1] = 1.0 / k, -a / (k * k)
    out["li"][i, j] = a / k
    out["li_err"][i, j] = math.sqrt(max(float(g @ cov @ g), 0.0))
    out["scale"][i, j] = k
    out["background_per_kev"][i, j] = p[2]
    out["background_err"][i, j] = math.sqrt(max(cov[2, 2], 0.0))
    out["deviance_per_dof"][i, j] = deviance_per_dof


def _as_forward_fit(out, status):
    """The ForwardFit of the per-block arrays ``out`` (slope_per_kev when it has one)."""
    ok = (status <= 1) & np.isfinite(out["li"])
    return ForwardFit(out["li"], out["li_err"], out["scale"], out["background_per_kev"], out["background_err"],
                      out["deviance_per_dof"], out["counts"], status, ok, out.get("slope_per_kev"))


def _fit_blocks_with_response(y_all, use, theta_flat, edges, bins, e1_kev, block, response, composition, min_counts):
    """fit_li_blocks with a DetectorResponse: line shape and efficiency applied to the true-energy density.

    Each block's model is built on a fine grid of true energy: the count-weighted sum of its
    pixels' eq. (3) densities of Li and host, times eff(E) exp(s (E - E0)), through the
    response matrix into the measured bins. For a given slope s the model is linear in
    (1-x) K, K, B and the elastic line's counts (:func:`_fit_linear_poisson`; B, flat in true
    energy up to E1, goes through the same efficiency and line shape, and so does the elastic
    line at E1, which reaches the fit range by its tail and escape peaks); s is found by minimising that profile
    deviance, and the covariance is the inverse Fisher information of all four parameters. With the
    response's ``spill_probability`` the model is built on bins up to E1 and spilled
    (:meth:`DetectorResponse.spill_matrix`) before it is cut to the fit range.
    """
    from scipy.optimize import minimize_scalar

    composition = NMC811 if composition is None else composition
    br, bc = block
    rows, cols = use.shape
    nr, nc = rows // br, cols // bc
    idx = np.arange(edges.size - 1)[bins]
    lo, hi = edges[idx], edges[idx + 1]
    below, above = response.reach_kev(e1_kev)
    # no photon above E1 but the elastic line (a basis of its own): the grid can stop there
    top = min(hi[-1] + below, e1_kev + _FINE_STEP_KEV)
    fine = np.arange(lo[0] - above, top + _FINE_STEP_KEV, _FINE_STEP_KEV)
    if response.spill_probability <= 0:
        m = response.matrix(fine, lo, hi)                               # (nfine, nbins)
    else:
        # spilled events of every energy up to the elastic line read a fraction of it: the model
        # needs the bins above the fit range too, then the spill, then the fit range again
        centres = 0.5 * (edges[1:] + edges[:-1])
        top = np.flatnonzero(centres <= e1_kev + above)
        ext = np.arange(idx[0], max(int(top[-1]) + 1, idx[-1] + 1))
        lo_x, hi_x = edges[ext], edges[ext + 1]
        spill = response.spill_matrix(lo_x, hi_x).T[:, : idx.size]
        m = response.matrix(fine, lo_x, hi_x, line_kev=0.5 * (lo[0] + hi[-1])) @ spill
    m_total = m.sum(axis=1)                  # counts in the fit range per unit density at each true energy
    eff = response.efficiency(fine)
    e0 = 0.5 * (lo[0] + hi[-1])
    x = fine - e0
    # the flat background is photons too, up to E1: counts per keV at the centre, through the same response
    flat_bg = np.where(fine <= e1_kev, eff, 0.0) / float(np.interp(e0, fine, eff))
    # the elastic line at E1 reaches the fit range through its charge-sharing tail and escape peaks
    # (with the line shape at E1: its escape peaks there are some 15 % weaker than at the range's centre)
    if response.spill_probability > 0:
        elastic = (response.matrix(np.array([e1_kev, e1_kev + _FINE_STEP_KEV]), lo_x, hi_x, line_kev=e1_kev)[0]
                   / _FINE_STEP_KEV) @ spill
    else:
        elastic = response.matrix(np.array([e1_kev, e1_kev + _FINE_STEP_KEV]), lo, hi, line_kev=e1_kev)[0] / _FINE_STEP_KEV
    pz_grid, j_li, j_host = _component_profiles(composition)
    flat_use = use.reshape(-1)
    key = np.zeros(flat_use.size, np.int64)
    key[flat_use] = np.round(theta_flat[flat_use] / _THETA_QUANTUM_RAD).astype(np.int64)
    kt, inverse = np.unique(key[flat_use], return_inverse=True)
    th = kt * _THETA_QUANTUM_RAD
    d_li = _density_per_kev(fine[None, :], e1_kev, th[:, None], pz_grid, j_li) * eff
    d_host = _density_per_kev(fine[None, :], e1_kev, th[:, None], pz_grid, j_host) * eff
    theta_index = np.full(flat_use.size, -1, np.int64)
    theta_index[flat_use] = inverse
    theta_index = theta_index.reshape(rows, cols)
    y_all = y_all.reshape(rows, cols, -1)
    nfit = 5 if response.free_slope else 4
    shape = (nr, nc)
    out = {k: np.full(shape, np.nan) for k in ("li", "li_err", "scale", "background_per_kev", "background_err",
                                               "deviance_per_dof", "counts", "slope_per_kev")}
    status = np.full(shape, 2, dtype=np.int64)
    for i in range(nr):
        for j in range(nc):
            sl = (slice(i * br, (i + 1) * br), slice(j * bc, (j + 1) * bc))
            u = use[sl]
            y_pix = y_all[sl][u]
            n_pix = y_pix.sum(axis=1)
            total = float(n_pix.sum())
            out["counts"][i, j] = total
            if total < min_counts or not u.any():
                continue
            y = y_pix.sum(axis=0)
            groups = theta_index[sl][u]
            angles, angle_of_pixel = np.unique(groups, return_inverse=True)
            w = n_pix / total
            for _ in range(_FLUX_ITERATIONS):
                # a pixel's density enters with its flux (counts over its own model's counts in the range)
                wt = np.bincount(groups, weights=w, minlength=th.size)
                dl, dh = wt @ d_li, wt @ d_host

                def basis(s, dl=dl, dh=dh):
                    tilt = np.exp(s * x)
                    return np.stack([(dl * tilt) @ m, (dh * tilt) @ m, (flat_bg * tilt) @ m, elastic], axis=1)

                s_hat = 0.0
                if response.free_slope:
                    def profile_deviance(s, basis=basis):
                        dev = _fit_linear_poisson(y, basis(s))[2]
                        return dev if np.isfinite(dev) else 1e300
                    opt = minimize_scalar(profile_deviance, bounds=(-0.1, 0.1), method="bounded",
                                          options={"xatol": 1e-6})
                    s_hat = float(opt.x)
                bas = basis(s_hat)
                p, cov, dev, st = _fit_linear_poisson(y, bas)
                tilt = np.exp(s_hat * x)
                # per unit flux, the counts in the fit range of each angle's Li and host parts, background, elastic line
                per_theta = np.stack([(d_li[angles] * tilt) @ m_total, (d_host[angles] * tilt) @ m_total], axis=1)
                per_flux = np.column_stack([per_theta[angle_of_pixel],
                                            np.broadcast_to([(flat_bg * tilt) @ m_total, elastic.sum()],
                                                            (groups.size, 2))])
                w, done = _flux_weights(n_pix, per_flux, p, w)
                if done:
                    break
            status[i, j] = st
            if cov is None or not p[1] > 0:
                status[i, j] = 3
                continue
            if response.free_slope:
                tilt = np.exp(s_hat * x)
                dmu_ds = ((p[0] * dl + p[1] * dh + p[2] * flat_bg) * tilt * x) @ m     # the line at E1 has no slope
                jac = np.column_stack([bas, dmu_ds])
                mu = np.maximum(bas @ p, 1e-12)
                try:
                    cov = np.linalg.inv(jac.T @ (jac / mu[:, None]))
                except np.linalg.LinAlgError:
                    status[i, j] = 3
                    continue
            _store_block(out, i, j, p, cov, dev / max(idx.size - nfit, 1))
            out["slope_per_kev"][i, j] = s_hat
    return _as_forward_fit(out, status)
