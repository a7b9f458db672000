"""Results of the peak fits: one spectrum (PeakFit) and per-pixel maps (PeakMaps), with the status codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .model import pseudo_voigt, voigt

# status codes of the batched fitter
_CONVERGED, _MAX_ITER, _FEW_COUNTS, _BAD_START = 0, 1, 2, 3
_AT_BOUND, _NOT_SIGNIFICANT = 4, 5

#: ``PeakMaps.status``: why a pixel's fit is not ok (0 is the only ok status).
FIT_STATUS = {
    _CONVERGED: "converged",
    _MAX_ITER: "iteration limit reached",
    _FEW_COUNTS: "too few counts in the window (below min_counts)",
    _BAD_START: "no positive net peak above a straight line (no start values)",
    _AT_BOUND: "the centre or the FWHM ran onto a bound of the window",
    _NOT_SIGNIFICANT: "no significant peak (area below 3 standard errors, or its error undefined)",
}

#: Pixels with fewer counts in the window than this fit with the Lorentz fraction tied
#: to the summed spectrum's (``eta="auto"``): below it the data cannot fix eta, which
#: otherwise runs to 0 or 1 and drags the width and the background with it.
ETA_FREE_MIN_COUNTS = 5000


# --------------------------------------------------------------------------- results

@dataclass
class PeakFit:
    """Result of one peak fit (energies in keV, area in counts, b0 in counts/keV).

    ``eta`` is 0 for the Gaussian model, 1 for the Lorentzian and NaN for the Voigt
    (whose Lorentz and Gauss widths are in ``result.params``). An error is NaN when
    its parameter is fixed by the model or sits on a bound. ``result`` is the lmfit
    result (ModelResult, or MinimizerResult for ``method="ml"``).
    """

    center: float
    fwhm: float
    area: float
    eta: float
    b0: float
    b1: float
    center_err: float
    fwhm_err: float
    area_err: float
    eta_err: float
    b0_err: float
    b1_err: float
    redchi: float
    ok: bool
    model: str = "pseudo_voigt"
    method: str = "ls"
    window: tuple = (None, None)
    npoints: int = 0
    result: object = field(default=None, repr=False)

    def curve(self, energy_kev):
        """Fitted model in counts per keV at ``energy_kev``."""
        p = self.result.params
        if self.model == "voigt":
            return voigt(energy_kev, p["center"].value, p["sigma"].value, p["gamma"].value,
                         p["area"].value, p["b0"].value, p["b1"].value)
        return pseudo_voigt(energy_kev, self.center, self.fwhm, self.area, self.eta, self.b0, self.b1)

    def background(self, energy_kev):
        """Fitted linear background b0 + b1 (E - c) in counts per keV."""
        return self.b0 + self.b1 * (np.asarray(energy_kev, dtype=np.float64) - self.center)


@dataclass
class PeakMaps:
    """Per-pixel peak parameters from :func:`fit_cube`, each (rows, cols).

    Pixels with too few counts hold NaN; ``ok`` is False wherever a fit failed, did not
    converge, ran onto a bound of the centre or width, or found no significant peak
    (area below 3 standard errors). ``status`` says which (:data:`FIT_STATUS`): 0 converged
    and ok, 1 iteration limit, 2 too few counts, 3 no usable start, 4 centre or FWHM at a
    bound, 5 no significant peak. ``eta_tied`` is the summed spectrum's Lorentz fraction
    that pixels with few counts were fitted with (NaN if none was tied). Values are kept
    for every fitted pixel; filter with ``ok``.
    """

    center: np.ndarray
    fwhm: np.ndarray
    area: np.ndarray
    eta: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    center_err: np.ndarray
    fwhm_err: np.ndarray
    area_err: np.ndarray
    eta_err: np.ndarray
    b0_err: np.ndarray
    b1_err: np.ndarray
    redchi: np.ndarray
    ok: np.ndarray
    status: np.ndarray
    window: tuple = (None, None)
    method: str = "ls"
    eta_tied: float = float("nan")

    FIELDS = ("center", "fwhm", "area", "eta", "b0", "b1", "center_err", "fwhm_err", "area_err",
              "eta_err", "b0_err", "b1_err", "redchi", "ok", "status")

    @property
    def shape(self):
        return self.center.shape

    def to_dict(self) -> dict:
        """Arrays by name (for HDF5 results)."""
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_dict(cls, arrays: dict, attrs: dict | None = None) -> "PeakMaps":
        """PeakMaps from the arrays of :meth:`to_dict` (e.g. read back from /entry/results/peak_fit)."""
        missing = [k for k in cls.FIELDS if k not in arrays]
        if missing:
            raise ConfigError(f"PeakMaps: the fit results lack {', '.join(missing)}")
        attrs = attrs or {}
        fields = {k: np.asarray(arrays[k]) for k in cls.FIELDS}
        fields["ok"] = fields["ok"].astype(bool)
        window = tuple(attrs.get("window_kev", (None, None)))
        return cls(**fields, window=window, method=str(attrs.get("method", "ls")),
                   eta_tied=float(attrs.get("eta_tied", float("nan"))))

    def background_counts(self, edges_kev) -> np.ndarray:
        """Fitted linear background in counts per bin, shape (rows, cols, nbins); 0 where the fit is not ok."""
        edges = np.asarray(edges_kev, dtype=np.float64)
        centers = 0.5 * (edges[1:] + edges[:-1])
        widths = np.diff(edges)
        ok = self.ok[..., None]
        bg = (self.b0[..., None] + self.b1[..., None] * (centers - self.center[..., None])) * widths
        return np.where(ok, bg, 0.0)
