"""Compton kinematics, PHYSICS.md eqs. (1)-(3): energies, momentum transfer and p_z.

Every formula here is written once as a plain function of scalars or arrays taking
cos(theta) (``register_jitable``: numba compiles the same text where a kernel calls it);
numpy code calls it on arrays and the kernels on scalars, also through the compiled
``*_scalar`` twins, so the two paths cannot drift apart.

Conventions: energies in keV, momenta p_z in atomic units, angles in radians.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

#: Electron rest energy m c^2 in keV (CODATA 2018).
MC2_KEV = 510.99895
#: Atomic unit of momentum per m c (1 / fine-structure constant).
MC_AU = 137.035999


@register_jitable
def _momentum_transfer_formula(e2_kev, e1_kev, cos_t):
    # q c of eq. (3)
    return np.sqrt(e1_kev * e1_kev + e2_kev * e2_kev - 2.0 * e1_kev * e2_kev * cos_t)


momentum_transfer_scalar = njit(cache=True, nogil=True)(_momentum_transfer_formula)


@register_jitable
def _pz_formula(e2_kev, e1_kev, cos_t):
    # eq. (2)
    qc = _momentum_transfer_formula(e2_kev, e1_kev, cos_t)
    return MC_AU * (e2_kev - e1_kev + e1_kev * e2_kev * (1.0 - cos_t) / MC2_KEV) / qc


#: Scalar, numba-compiled :func:`pz_from_energy` taking cos(theta), for use inside kernels.
pz_scalar = njit(cache=True, nogil=True)(_pz_formula)


@register_jitable
def _energy_from_pz_formula(pz_au, e1_kev, cos_t):
    # Exact inverse of eq. (2), for numpy arrays and (compiled below) scalars in kernels.
    p = pz_au / MC_AU
    a = 1.0 + (e1_kev / MC2_KEV) * (1.0 - cos_t)
    p2 = p * p
    disc = (a - p2 * cos_t) ** 2 - (a * a - p2) * (1.0 - p2)
    return e1_kev * (a - p2 * cos_t + np.sign(p) * np.sqrt(np.maximum(disc, 0.0))) / (a * a - p2)


#: Scalar, numba-compiled :func:`energy_from_pz` taking cos(theta), for use inside kernels.
energy_from_pz_scalar = njit(cache=True, nogil=True)(_energy_from_pz_formula)


@register_jitable
def _impulse_factor_formula(e2_kev, e1_kev, cos_t):
    # (E1 / E2)(q c / mc^2): counts per keV times this are proportional to J (eq. 3).
    return (e1_kev / e2_kev) * _momentum_transfer_formula(e2_kev, e1_kev, cos_t) / MC2_KEV


impulse_factor_scalar = njit(cache=True, nogil=True)(_impulse_factor_formula)


@register_jitable
def _dpz_de_formula(e2_kev, e1_kev, cos_t):
    # d p_z / d E2 of eq. (2) in a.u. per keV (quotient rule on numerator / q c)
    a = 1.0 + e1_kev * (1.0 - cos_t) / MC2_KEV
    qc = _momentum_transfer_formula(e2_kev, e1_kev, cos_t)
    num = e2_kev - e1_kev + e1_kev * e2_kev * (1.0 - cos_t) / MC2_KEV
    return MC_AU * (a * qc - num * (e2_kev - e1_kev * cos_t) / qc) / (qc * qc)


def compton_energy(e1_kev, theta_rad):
    """Energy of a photon Compton-scattered by a free electron at rest, eq. (1).

    Parameters
    ----------
    e1_kev : float or ndarray
        Incident photon energy in keV.
    theta_rad : float or ndarray
        Scattering angle in radians (scalar or per pixel).

    Returns
    -------
    ndarray or float
        E_C = E1 / (1 + (E1 / mc^2)(1 - cos theta)) in keV. 115 keV at 90 deg -> 93.8738 keV.
    """
    e1 = np.asarray(e1_kev, dtype=np.float64)
    return e1 / (1.0 + (e1 / MC2_KEV) * (1.0 - np.cos(theta_rad)))


def pz_from_energy(e2_kev, e1_kev, theta_rad):
    """Electron momentum projection p_z (atomic units) of a scattered photon energy, eq. (2).

    p_z / (m c) = (E2 - E1 + (E1 E2 / mc^2)(1 - cos theta)) / sqrt(E1^2 + E2^2 - 2 E1 E2 cos theta),
    positive for E2 above the Compton energy. Broadcasts over all arguments.
    """
    return _pz_formula(np.asarray(e2_kev, dtype=np.float64), np.asarray(e1_kev, dtype=np.float64),
                       np.cos(theta_rad))


def energy_from_pz(pz_au, e1_kev, theta_rad):
    """Scattered energy E2 (keV) for a momentum projection p_z (a.u.): exact inverse of eq. (2).

    Squaring eq. (2) with A = 1 + (E1/mc^2)(1 - cos theta) and p = p_z/(m c) gives the quadratic
    (A^2 - p^2) E2^2 - 2 E1 (A - p^2 cos theta) E2 + E1^2 (1 - p^2) = 0, whose root with
    sign(A E2 - E1) = sign(p) is returned.
    """
    return _energy_from_pz_formula(np.asarray(pz_au, dtype=np.float64), np.asarray(e1_kev, dtype=np.float64),
                                   np.cos(theta_rad))


def momentum_transfer_kev(e2_kev, e1_kev, theta_rad):
    """q c = sqrt(E1^2 + E2^2 - 2 E1 E2 cos theta) in keV, eq. (3)."""
    return _momentum_transfer_formula(np.asarray(e2_kev, dtype=np.float64), np.asarray(e1_kev, dtype=np.float64),
                                      np.cos(theta_rad))


def impulse_factor(e2_kev, e1_kev, theta_rad):
    """(E1 / E2)(q c / mc^2) of eq. (3): J(p_z) is proportional to N(E2) times this factor."""
    return _impulse_factor_formula(np.asarray(e2_kev, dtype=np.float64), np.asarray(e1_kev, dtype=np.float64),
                                   np.cos(theta_rad))


def theta_from_peak_energy(ec_kev, e1_kev):
    """Scattering angle (rad) from a fitted Compton peak centre: cos theta = 1 - mc^2 (1/E_C - 1/E1)."""
    cos_t = 1.0 - MC2_KEV * (1.0 / np.asarray(ec_kev, dtype=np.float64) - 1.0 / np.asarray(e1_kev, dtype=np.float64))
    return np.arccos(np.clip(cos_t, -1.0, 1.0))


def pz_per_kev(e2_kev, e1_kev, theta_rad):
    """d p_z / d E2 of eq. (2) in a.u. per keV (about 1.14 near 93.9 keV at 90 degrees)."""
    return _dpz_de_formula(np.asarray(e2_kev, dtype=np.float64), np.asarray(e1_kev, dtype=np.float64),
                           np.cos(theta_rad))


def resolution_in_pz(resolution_fwhm_kev, e1_kev, theta_rad):
    """Energy resolution (FWHM, keV) expressed in p_z (a.u.) at the Compton peak: FWHM dp_z/dE2 at E_C."""
    return float(resolution_fwhm_kev * pz_per_kev(compton_energy(e1_kev, theta_rad), e1_kev, theta_rad))
