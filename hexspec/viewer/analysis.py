"""On-demand analyses behind the viewer's buttons: Compton window, peak fit, S and Li maps.

Thin adapters over hexspec.compton, hexspec.fit and hexspec.calibration: each turns
what the viewer holds (a spectrum, a cube copy, the processing config) into one
call, and raises :class:`AnalysisUnavailable` with a message a person can act on
when the analysis cannot run (module missing, no energy calibration, no counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import import_module

import numpy as np

from ..detector import DetectorSpec
from ..errors import HexspecError

#: Incident energy of the reference experiment (PHYSICS.md section 1), keV.
E1_KEV = 115.0
#: Half width of the Compton peak window around E_C, keV: wide enough for the peak
#: (a few keV FWHM from Doppler broadening) and its tails, narrow enough to leave
#: out the Pb K-beta line at 84.9 keV.
COMPTON_HALF_WIDTH_KEV = 4.0


class AnalysisUnavailable(HexspecError):
    """An on-demand analysis cannot run; the message says why and what to do."""


def _function(module: str, name: str):
    try:
        return getattr(import_module(f"hexspec.{module}"), name)
    except (ImportError, AttributeError) as exc:
        raise AnalysisUnavailable(f"hexspec.{module}.{name} is not available in this installation ({exc})") from None


def _require_kev(unit: str, what: str):
    if unit != "keV":
        raise AnalysisUnavailable(
            f"{what} needs energies in keV, found {unit}: load an energy calibration in the processing settings")


def compton_window(e1_kev: float = E1_KEV, theta_rad: float = math.pi / 2,
                   half_width_kev: float = COMPTON_HALF_WIDTH_KEV) -> tuple[float, float]:
    """Energy window (keV) centred on the Compton energy E_C(theta), PHYSICS.md eq. (1).

    115 keV at 90 degrees gives E_C = 93.87 keV and the window (89.87, 97.87) keV.
    """
    compton_energy = _function("compton", "compton_energy")
    ec_kev = float(compton_energy(e1_kev, theta_rad))
    return ec_kev - half_width_kev, ec_kev + half_width_kev


@dataclass
class PeakOverlay:
    """A fitted peak and the model curve to draw over the spectrum."""

    fit: object               # hexspec.fit.PeakFit
    energy: np.ndarray        # x of the model curve, keV
    model: np.ndarray         # counts per bin


def fit_compton_peak(centers_kev, counts, window_kev, unit: str = "keV") -> PeakOverlay:
    """Fit the pseudo-Voigt peak model (PHYSICS.md section 4) to one spectrum.

    Parameters
    ----------
    centers_kev : ndarray (nbins,)
        Bin centres in keV.
    counts : ndarray (nbins,)
        Counts per bin (a pixel, an ROI or the summed spectrum).
    window_kev : (float, float)
        Fit range in keV.
    unit : str
        Energy unit of the spectrum; anything but "keV" is refused.
    """
    _require_kev(unit, "The Compton peak fit")
    fit_peak = _function("fit", "fit_peak")
    lo, hi = float(window_kev[0]), float(window_kev[1])
    centers_kev = np.asarray(centers_kev, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    sel = (centers_kev >= lo) & (centers_kev < hi)
    if counts[sel].sum() <= 0:
        raise AnalysisUnavailable(f"no counts between {lo:.1f} and {hi:.1f} keV in the selected spectrum")
    fit = fit_peak(centers_kev, counts, window=(lo, hi))
    # The model is a density (counts per keV); times the bin width it overlays counts per bin.
    width_kev = float(np.median(np.diff(centers_kev)))
    x = np.linspace(lo, hi, 400)
    model = np.asarray(fit.curve(x), dtype=np.float64) * width_kev
    return PeakOverlay(fit=fit, energy=x, model=model)


def describe_fit(fit) -> str:
    """One line per fitted quantity, with uncertainties, for the analysis panel."""
    def val(name):
        v = getattr(fit, name, None)
        return float("nan") if v is None else float(v)

    lines = [f"centre {val('center'):.3f} ± {val('center_err'):.3f} keV",
             f"FWHM {val('fwhm'):.3f} ± {val('fwhm_err'):.3f} keV",
             f"area {val('area'):.4g} ± {val('area_err'):.2g} counts",
             f"eta {val('eta'):.2f}   red. chi² {val('redchi'):.2f}"]
    if not bool(getattr(fit, "ok", True)):
        lines.append("fit did NOT converge")
    return "\n".join(lines)


def theta_map_for(shape, pitch_mm: float = 0.25) -> np.ndarray:
    """Per-pixel scattering angle (rad) of the reference pinhole geometry for a detector of ``shape``."""
    PinholeGeometry = _function("compton", "PinholeGeometry")
    detector = DetectorSpec(rows=int(shape[0]), cols=int(shape[1]), pitch_mm=pitch_mm)
    return PinholeGeometry(detector=detector).theta_map()


def s_parameter_map(cube, e1_kev: float = E1_KEV, theta_rad=None):
    """S-parameter per pixel (PHYSICS.md eq. 4) of a cube copy; returns hexspec.compton.SMap.

    ``theta_rad`` defaults to the per-pixel angle of the reference pinhole geometry.
    """
    _require_kev(cube.unit, "The S-parameter map")
    smap = _function("compton", "s_parameter_map")
    if theta_rad is None:
        theta_rad = theta_map_for(cube.shape)
    return smap(cube, e1_kev, theta_rad)


def load_lithium_calibration(path):
    """Read a Li calibration (S -> 1 - x) written by ``LithiumCalibration.save``."""
    try:
        from ..calibration import LithiumCalibration
    except (ImportError, AttributeError) as exc:
        raise AnalysisUnavailable(f"Li calibrations are not available in this installation ({exc})") from None
    return LithiumCalibration.load(path)


def lithium_map(s_map, calibration):
    """Li content 1 - x per pixel from an S map through a Li calibration (PHYSICS.md eq. 5).

    Parameters
    ----------
    s_map : hexspec.compton.SMap
        S-parameter per pixel with its errors.
    calibration : hexspec.calibration.LithiumCalibration

    Returns
    -------
    hexspec.calibration.lithium.LithiumMap
        ``li``, ``li_err`` (propagated), ``extrapolated`` (S outside the reference range), ``ok``.
    """
    if calibration is None:
        raise AnalysisUnavailable("no Li calibration loaded: choose a Li calibration file first")
    return calibration.apply(s_map)
