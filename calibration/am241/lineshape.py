"""Line shapes of the Am-241 fits, integrated exactly over each bin (CDF differences).

The photopeak is a Gaussian plus a low-energy exponential tail convolved with the same
Gaussian (incomplete hole collection in CdTe/CdZnTe) on a linear background; the
weaker lines are Gaussians on a linear background.
"""

from __future__ import annotations

import math

from numba import njit

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


@njit(cache=True, nogil=True)
def _exp_erfc(a, z):
    """exp(a) * erfc(z) without overflow; for large z uses erfc(z) = exp(-z^2) erfcx(z)."""
    if z < 5.0:
        return math.exp(a) * math.erfc(z)
    iz2 = 1.0 / (z * z)
    erfcx = _INV_SQRT_PI / z * (1.0 - 0.5 * iz2 + 0.75 * iz2 * iz2 - 1.875 * iz2 * iz2 * iz2)
    return math.exp(a - z * z) * erfcx


@njit(cache=True, nogil=True)
def _shape_cdfs(x, mu, sigma, beta, want_tail):
    """CDFs at x of the unit-area Gaussian core and of its low-energy tail.

    The tail is X = mu + N(0, sigma) - Exp(beta) (an exponentially modified Gaussian
    mirrored to low energies). With y = mu - x, its CDF is
    Phi((x - mu)/sigma) + 1/2 exp(-y/beta + sigma^2/(2 beta^2)) erfc((sigma/beta - y/sigma)/sqrt 2).
    """
    u = (x - mu) / sigma
    g = 0.5 * math.erfc(-u / _SQRT2)
    if not want_tail:
        return g, 0.0
    y = mu - x
    a = -y / beta + 0.5 * (sigma / beta) ** 2
    z = (sigma / beta - y / sigma) / _SQRT2
    return g, g + 0.5 * _exp_erfc(a, z)


@njit(cache=True, nogil=True)
def _components(edges, mu, sigma, beta, want_tail, gcol, tcol):
    """Bin integrals of the unit-area Gaussian (gcol) and tail (tcol) over ``edges``."""
    g0, t0 = _shape_cdfs(edges[0], mu, sigma, beta, want_tail)
    for j in range(edges.shape[0] - 1):
        g1, t1 = _shape_cdfs(edges[j + 1], mu, sigma, beta, want_tail)
        gcol[j] = g1 - g0
        tcol[j] = t1 - t0
        g0, t0 = g1, t1


@njit(cache=True, nogil=True)
def _model(p, gcol, tcol, wcol, qcol, out):
    for j in range(out.shape[0]):
        out[j] = p[0] * gcol[j] + p[1] * tcol[j] + p[2] * wcol[j] + p[3] * qcol[j]


@njit(cache=True, nogil=True)
def _deviance(n, m):
    """Poisson deviance 2 sum(m - n + n ln(n/m))."""
    d = 0.0
    for j in range(n.shape[0]):
        mj = max(m[j], 1e-12)
        if n[j] > 0:
            d += mj - n[j] + n[j] * math.log(n[j] / mj)
        else:
            d += mj
    return 2.0 * d
