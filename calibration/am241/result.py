"""The result of an Am-241 calibration: EnergyCalibration and the reason bits of bad pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# ------------------------------------------------------------------ constants
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
ADC_MAX_ADU = 16383

# ------------------------------------------------------------------ reason bits
DEAD = 1
HOT = 2
NO_PHOTOPEAK = 4
LOW_COUNTS = 8
FIT_FAILED = 16
TOO_FEW_LINES = 32
FWHM_TOO_LARGE = 64
GRADIENT_OUTLIER = 128
LARGE_RESIDUAL = 256

#: reason bit -> name (stored with every calibration file)
REASONS = {
    DEAD: "dead",
    HOT: "hot",
    NO_PHOTOPEAK: "no_photopeak",
    LOW_COUNTS: "low_counts",
    FIT_FAILED: "fit_failed",
    TOO_FEW_LINES: "too_few_lines",
    FWHM_TOO_LARGE: "fwhm_too_large",
    GRADIENT_OUTLIER: "gradient_outlier",
    LARGE_RESIDUAL: "large_residual",
}


@dataclass
class EnergyCalibration:
    """Per-pixel energy calibration E = ADU * gradient + intercept (PHYSICS.md 5).

    All maps are (rows, cols). Pixels without a calibration (no photopeak, fewer than
    two lines) hold gradient 0 and intercept 0, the convention of existing HEXITEC
    tools for "not calibrated"; ``good`` and ``reasons`` say which pixels to trust.

    Attributes
    ----------
    gradients : ndarray float64
        keV per ADU.
    intercepts : ndarray float64
        keV.
    fwhm_kev : ndarray float64
        FWHM of the Gaussian core of the 59.54 keV photopeak in keV (NaN where not fitted).
    good : ndarray bool
        True where no reason bit is set.
    reasons : ndarray uint16
        OR of reason bits (see ``REASONS``); 0 for good pixels.
    threshold_adu : ndarray float64
        Suggested threshold in ADU: noise centre + ``threshold_sigmas`` noise sigma, from a
        Gaussian fit to the falling flank of the noise peak; where the spectra show no
        noise peak (readouts that clip it at 0 ADU), zero energy (-intercept/gradient)
        + ``threshold_sigmas`` photopeak sigma, at least 0 (NaN where neither exists).
    threshold_from_noise_peak : ndarray bool
        True where the threshold came from a measured noise peak.
    gradient_err, intercept_err, fwhm_err_kev : ndarray float64
        One-sigma uncertainties.
    quadratic : ndarray float64 or None
        keV per ADU^2 of the optional quadratic fit E = q ADU^2 + g' ADU + c' (the
        linear maps above stay the straight-line fit).
    line_energies_kev : ndarray (n_lines,)
    centroids_adu, centroid_err_adu : ndarray (rows, cols, n_lines)
        Fitted Gaussian centres (NaN where a line was not used).
    residuals_kev : ndarray (rows, cols, n_lines)
        Line energy minus the straight-line prediction at the fitted centroid.
    photopeak_counts : ndarray float64
        Fitted counts in the 59.54 keV photopeak (Gaussian core and tail).
    tail_fraction : ndarray float64
        Fraction of the photopeak counts in its low-energy tail.
    noise_sigma_adu : ndarray float64
        Noise sigma from the noise-peak flank (NaN where none).
    signal_counts : ndarray int64
        Counts above the noise region (used for dead and hot pixels).
    parameters : dict
        The options the calibration was computed with.
    tail_length_kev : ndarray float64, optional
        Decay length of the photopeak's low-energy tail in keV (NaN without a tail); with
        ``fwhm_kev`` and ``tail_fraction`` the line shape the Compton forward model uses
        (``hexspec.detector_response.DetectorResponse.from_calibration``).
    """

    gradients: np.ndarray
    intercepts: np.ndarray
    fwhm_kev: np.ndarray
    good: np.ndarray
    reasons: np.ndarray
    threshold_adu: np.ndarray
    gradient_err: np.ndarray
    intercept_err: np.ndarray
    fwhm_err_kev: np.ndarray
    line_energies_kev: np.ndarray
    centroids_adu: np.ndarray
    centroid_err_adu: np.ndarray
    residuals_kev: np.ndarray
    photopeak_counts: np.ndarray
    tail_fraction: np.ndarray
    noise_sigma_adu: np.ndarray
    signal_counts: np.ndarray
    threshold_from_noise_peak: np.ndarray | None = None
    quadratic: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)
    tail_length_kev: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.gradients.shape

    @property
    def n_good(self) -> int:
        return int(np.count_nonzero(self.good))

    def reason_counts(self) -> dict:
        """Number of pixels carrying each reason bit, by reason name."""
        return {name: int(np.count_nonzero(self.reasons & bit)) for bit, name in REASONS.items()}

    def thresholds(self, masked_adu: float = ADC_MAX_ADU) -> np.ndarray:
        """Threshold map in ADU for processing: the suggestion for good pixels, ``masked_adu`` elsewhere.

        A threshold at the top of the 14-bit range switches a pixel off, which is how
        existing HEXITEC threshold files mask bad pixels.
        """
        thr = np.where(self.good & np.isfinite(self.threshold_adu), self.threshold_adu, masked_adu)
        return np.ceil(thr)

    def summary(self) -> str:
        """One line: "FWHM at 59.54 keV: 0.79 +- 0.15 keV over 6391 good pixels"."""
        f = self.fwhm_kev[self.good]
        if f.size == 0:
            return f"FWHM at 59.54 keV: no good pixels out of {self.good.size}"
        return f"FWHM at 59.54 keV: {np.mean(f):.2f} +- {np.std(f):.2f} keV over {f.size} good pixels"

    def to_config(self, base=None, threshold: bool = False):
        """A ProcessingConfig using these maps (``base`` supplies the other options).

        With ``threshold=True`` the threshold map of :meth:`thresholds` is used as well.
        """
        from ...config import ProcessingConfig
        base = base or ProcessingConfig()
        changes = dict(gradients=self.gradients, intercepts=self.intercepts)
        if threshold:
            changes["threshold"] = self.thresholds()
        if base.bins is not None and not base.calibrated:
            changes["bins"] = None   # ADU bins make no sense once calibrated
        return base.replace(**changes)

    def arrays(self) -> dict:
        """Arrays for the hexspec HDF5 results group (FORMATS.md /entry/results/calibration)."""
        out = {
            "gradients": self.gradients, "intercepts": self.intercepts, "fwhm_kev": self.fwhm_kev,
            "good": self.good.astype(np.uint8), "reasons": self.reasons, "threshold_adu": self.threshold_adu,
            "thresholds": self.thresholds(),
            "gradient_err": self.gradient_err, "intercept_err": self.intercept_err, "fwhm_err_kev": self.fwhm_err_kev,
            "line_energies_kev": self.line_energies_kev, "centroids_adu": self.centroids_adu,
            "centroid_err_adu": self.centroid_err_adu, "residuals_kev": self.residuals_kev,
            "photopeak_counts": self.photopeak_counts, "tail_fraction": self.tail_fraction,
            "noise_sigma_adu": self.noise_sigma_adu, "signal_counts": self.signal_counts,
        }
        if self.threshold_from_noise_peak is not None:
            out["threshold_from_noise_peak"] = self.threshold_from_noise_peak.astype(np.uint8)
        if self.quadratic is not None:
            out["quadratic"] = self.quadratic
        if self.tail_length_kev is not None:
            out["tail_length_kev"] = self.tail_length_kev
        return out

    def attrs(self) -> dict:
        """Attributes for the results group: parameters, reason names, units, summary."""
        return {
            "method": "am241", "summary": self.summary(), "n_good": self.n_good,
            "reason_bits": {name: bit for bit, name in REASONS.items()},
            "units": {"gradients": "keV/ADU", "intercepts": "keV", "fwhm_kev": "keV", "threshold_adu": "ADU",
                      "thresholds": "ADU", "centroids_adu": "ADU", "residuals_kev": "keV", "quadratic": "keV/ADU^2",
                      "tail_length_kev": "keV"},
            "parameters": self.parameters,
        }

    def __repr__(self) -> str:
        return f"EnergyCalibration({self.shape[0]}x{self.shape[1]} pixels; {self.summary()})"
