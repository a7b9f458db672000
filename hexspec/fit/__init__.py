"""Compton peak fits: the "Lorentz-Gaussian" (pseudo-Voigt) model of PHYSICS.md section 4.

Two routes to the same least-squares answer:

- :func:`fit_peak` fits one spectrum with lmfit (a Model with bounded, named parameters;
  the lmfit result stays available as ``PeakFit.result``);
- :func:`fit_cube` fits every pixel of a SpectralCube at once with the bounded Poisson
  Levenberg-Marquardt of :mod:`hexspec.lm` (numba, analytic derivatives), started from
  robust moment estimates, and returns :class:`PeakMaps`.

One module per job, all names importable from ``hexspec.fit``:

- ``fit/model.py``: the peak shapes of eq. (4) and the robust start values;
- ``fit/results.py``: PeakFit, PeakMaps and the status codes (FIT_STATUS);
- ``fit/single.py``: one spectrum through lmfit (:func:`fit_peak`);
- ``fit/batched.py``: eq. (4) and its Jacobian as a model of :mod:`hexspec.lm`, the
  parallel loop over pixels;
- ``fit/cube.py``: the cube driver (:func:`fit_cube`: window, bounds, the tied Lorentz
  fraction, status and ok flags).

Model (PHYSICS.md eq. 4), as counts per keV at energy E:

    f(E) = A [eta L(E; c, w) + (1 - eta) G(E; c, w)] + b0 + b1 (E - c)

The counts expected in an energy bin are f(bin centre) * bin width, so ``area`` A is in
counts and ``b0`` in counts per keV. Fits minimise the Poisson-weighted chi-square
sum (y - m)^2 / max(y, 1) (Neyman weights; the floor of 1 keeps empty bins finite) or,
with ``method="ml"``, the Poisson deviance 2 sum (m - y + y ln(y / m)) (maximum
likelihood, for low counts). Weights are absolute, so parameter uncertainties come from
the unscaled covariance (lmfit ``scale_covar=False``); ``redchi`` reports fit quality.
"""

from __future__ import annotations

from .cube import SpectralCubeLike, fit_cube
from .model import (METHODS, MODELS, PARAM_NAMES, gaussian_shape, lorentzian_shape, pseudo_voigt, start_values, voigt,
                    voigt_fwhm)
from .results import ETA_FREE_MIN_COUNTS, FIT_STATUS, PeakFit, PeakMaps
from .single import fit_peak

__all__ = ["ETA_FREE_MIN_COUNTS", "FIT_STATUS", "METHODS", "MODELS", "PARAM_NAMES", "PeakFit", "PeakMaps",
           "SpectralCubeLike", "fit_cube", "fit_peak", "gaussian_shape", "lorentzian_shape", "pseudo_voigt",
           "start_values", "voigt", "voigt_fwhm"]
