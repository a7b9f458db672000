"""What the detector and the event chain do to a monoenergetic photon, for the forward model.

A photon of energy E absorbed in a pixel is counted, with probability eff(E), as an event
of energy E - q + n: n the pixel's electronic noise, q the charge it does not collect.

- n: Gaussian, the electronic noise (the Am-241 photopeak FWHMs, ``EnergyCalibration.fwhm_kev``,
  less what charge sharing and the photopeak fit add to them) widened by each pixel's
  energy-scale error at the line's energy (``hexspec.detector_noise``), mixed over the good
  pixels (a block's spectrum mixes them); the noise is energy-independent, as in the
  lumped-noise model of PHYSICS.md section 5.
- q: what the 3 x 3 neighbours take of the charge cloud (Gaussian, FWHM from thickness,
  bias and temperature, PHYSICS.md section 5) while each of them stays under its
  threshold T = intercept + gradient (threshold_adu + 1/2) (calibration maps): otherwise
  charge-sharing discrimination rejects the event. Cd/Te K fluorescence adds a second
  cloud in the pixel, a rejection (it stops in a neighbour) or an escape peak
  (E - E_K). :meth:`DetectorResponse.sharing` integrates this by a seeded Monte Carlo
  over the absorption point and depth. The loss spectrum, in keV, hardly changes across
  a fit range (a share q below T comes from a strip along the edge whose width
  sigma_cloud [z(eps/E) - z(T/E)] changes by a few per cent between 60 and 110 keV), so it
  is computed once, at the range's centre.
- next-frame correction: the event chain drops a pixel's hit when the pixel was hit in the
  previous frame, and it does so before charge-sharing discrimination looks at the
  neighbours. A neighbour that takes more than T, or catches the K photon, is therefore
  invisible, and the event counted with its loss, when that neighbour was hit in the
  previous frame (probability ``previous_hit_probability``, the hits per pixel and
  frame, which the event extractor counts). At 1 % occupancy this is about 0.2 % of the
  counted events, spread over losses of T to E/2, where the other losses are zero: left
  out, it reads as host-like counts below the Compton peak and lowers 1 - x.
- eff(E): the sensor's absorption 1 - exp(-mu(E) L) (xraylib, Cd0.9Zn0.1Te at 5.78 g/cm3)
  times the fraction counted in the Monte Carlo; it falls by about 20 % from 88 to 112 keV,
  enough to bias 1 - x badly if left out.

Without a threshold (spectra without charge-sharing discrimination, as the Am-241 frame
histograms) the loss is the calibration's own tail: share ``tail_fraction``, an
exponential of length ``tail_length_kev``. After discrimination that tail is too long: it
includes the losses above the threshold that discrimination removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from .errors import CalibrationError, ConfigError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
SENSOR_MATERIAL = "Cd0.9Zn0.1Te"
SENSOR_DENSITY_G_CM3 = 5.78
_K_OVER_E_V_PER_K = 8.617333262e-5
_N_SAMPLES = 16
_N_PHOTONS = 400_000
_SHARING_CACHE = {}
_MAX_K_LINE_KEV = 32.0


def cloud_fwhm_um(thickness_mm=2.0, bias_v=1200.0, temperature_c=18.0):
    """Electron-cloud FWHM at the anode, um (PHYSICS.md section 5, Veale 2014); 2 mm, 1200 V, 18 C -> 32.2 um."""
    r0_um = 0.1477 * temperature_c + 14.66
    return r0_um + 1.15 * thickness_mm * 1e3 * math.sqrt(2.0 * _K_OVER_E_V_PER_K * (temperature_c + 273.15) / abs(bias_v))


@dataclass(frozen=True)
class DetectorResponse:
    """Line shape and relative efficiency of detector plus event chain (module docstring).

    Attributes
    ----------
    fwhm_kev : float
        Gaussian FWHM, keV.
    tail_fraction : float
        Share f of the counted events in the low-energy tail.
    tail_length_kev : float
        Decay length beta of the tail, keV.
    threshold_kev : float or None
        Charge a neighbour must receive to be seen (keV); None leaves charge-sharing
        discrimination out of the efficiency (spectra processed with ``charge_sharing="none"``).
    thickness_mm, pitch_mm, cloud_fwhm_um : float
        Sensor thickness, pixel pitch and electron-cloud FWHM (default from thickness,
        1200 V and 18 C).
    free_slope : bool
        Whether the forward fit frees a slope of ln eff(E) per keV (default False: the
        efficiency is computed; a free slope trades off against the Li share and raises
        the error of 1 - x by a few per cent).
    fwhm_samples_kev, threshold_samples_kev : tuple of float, optional
        Quantiles of the pixels' FWHMs and thresholds: a detector's (or block's) summed
        spectrum mixes pixels, and its line shape is their average (:meth:`line_cdf`).
    previous_hit_probability : float
        Probability that a pixel was hit in the frame before (hits per pixel per frame of
        the measurement, e.g. ``EventExtractor.stats`` hits / (frames x live pixels)); such
        a neighbour's hit is dropped by the next-frame correction before discrimination
        (module docstring). 0 for spectra processed without next-frame correction.
    spill_probability : float
        Share of the events whose charge the readout splits between their frame and the
        next ("next-frame" pulses): the next-frame correction drops the second part, so
        such an event reads a fraction of its energy, uniform in [0, 1) (the readout's own
        model; the simulator's ``next_frame_probability``). A property of the detector:
        the excess of next-frame removals over chance measures it only roughly (a remainder
        under the threshold is not seen), so it is given, not fitted (a free share trades
        off against the Li content).
    scale_variance_samples : tuple of (float, float, float), optional
        Per sample of ``fwhm_samples_kev``, the variance a + b E + c E^2 (keV^2) of the
        calibration's energy scale at energy E (hexspec.detector_noise): the pixels'
        calibration errors, which widen a block's line beyond the noise.
    """

    fwhm_kev: float = 0.8
    tail_fraction: float = 0.0
    tail_length_kev: float = 1.0
    threshold_kev: float | None = None
    thickness_mm: float = 2.0
    pitch_mm: float = 0.25
    cloud_fwhm_um: float | None = None
    free_slope: bool = False
    fwhm_samples_kev: tuple | None = None
    threshold_samples_kev: tuple | None = None
    previous_hit_probability: float = 0.0
    spill_probability: float = 0.0
    scale_variance_samples: tuple | None = None

    def __post_init__(self):
        checks = (("fwhm_kev", self.fwhm_kev > 0), ("tail_fraction", 0 <= self.tail_fraction < 1),
                  ("tail_length_kev", self.tail_length_kev > 0), ("thickness_mm", self.thickness_mm > 0),
                  ("pitch_mm", self.pitch_mm > 0),
                  ("threshold_kev", self.threshold_kev is None or self.threshold_kev > 0),
                  ("cloud_fwhm_um", self.cloud_fwhm_um is None or self.cloud_fwhm_um >= 0),
                  ("previous_hit_probability", 0 <= self.previous_hit_probability < 1),
                  ("spill_probability", 0 <= self.spill_probability < 1))
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"DetectorResponse.{name}: expected a physical value, found {getattr(self, name)!r}")

    @classmethod
    def from_calibration(cls, calibration, threshold_adu=0.0, mask=None, **kw):
        """The response an Am-241 calibration measures, as detector medians over its good pixels.

        The Gaussian is the electronic noise, the calibration's photopeak FWHMs divided by
        the ratio its photopeak fit has to the noise (charge-sharing broadening of the raw
        photopeak, low-count bias of the fit), widened by each pixel's energy-scale error
        at the line's energy (hexspec.detector_noise; without the calibration's centroids,
        as in files read with ``read_calibration`` alone, the noise only).

        Parameters
        ----------
        calibration : EnergyCalibration or dict
            From ``calibrate_am241``, or the maps of ``hexspec.io.hdf5.read_calibration``
            (gradients, intercepts, fwhm_kev, tail_fraction, tail_length_kev, good).
        threshold_adu : float or ndarray (rows, cols)
            The hit threshold the spectra were processed with (``ProcessingConfig.threshold``):
            a pixel reads charge q as round((q - intercept) / gradient) ADU and counts when
            that exceeds the threshold, so T = intercept + gradient (threshold_adu + 1/2).
        mask : ndarray (rows, cols) of bool, optional
            Pixels to take the medians over (default the calibration's good pixels).
        **kw
            Other DetectorResponse fields (thickness_mm, pitch_mm, cloud_fwhm_um, free_slope,
            previous_hit_probability).
        """
        get = (calibration.get if isinstance(calibration, dict) else lambda k: getattr(calibration, k, None))
        missing = [k for k in ("gradients", "intercepts", "fwhm_kev", "tail_fraction", "tail_length_kev")
                   if get(k) is None]
        if missing:
            raise CalibrationError(f"DetectorResponse.from_calibration: expected the Am-241 fit's maps, missing "
                                   f"{', '.join(missing)} (recalibrate with this version of `hexspec calibrate`)")
        g = np.asarray(get("gradients"), np.float64)
        good = np.asarray(get("good") if get("good") is not None else np.ones(g.shape), bool)
        use = good if mask is None else (good & np.asarray(mask, bool))
        thr_kev = np.asarray(get("intercepts"), np.float64) + g * (np.asarray(threshold_adu, np.float64) + 0.5)
        values = {}
        quantiles = (np.arange(_N_SAMPLES) + 0.5) / _N_SAMPLES
        for name, arr in (("fwhm_kev", get("fwhm_kev")), ("tail_fraction", get("tail_fraction")),
                          ("tail_length_kev", get("tail_length_kev")), ("threshold_kev", thr_kev)):
            a = np.broadcast_to(np.asarray(arr, np.float64), g.shape)[use]
            a = a[np.isfinite(a)]
            if a.size == 0:
                raise CalibrationError(f"DetectorResponse.from_calibration: no good pixel has a finite {name}")
            values[name] = float(np.median(a))
            if name in ("fwhm_kev", "threshold_kev"):
                # the tail share and length of one pixel are too noisy to average over; its FWHM and threshold are not
                values[name.replace("_kev", "_samples_kev")] = tuple(float(v) for v in np.quantile(a, quantiles))
        if kw.get("threshold_kev", values["threshold_kev"]) is None:
            # spectra without discrimination: the calibration's photopeak is their line shape as it stands
            return cls(**{**values, **kw})
        from .detector_noise import noise_and_scale_samples, scale_variance_coefficients
        fwhm = np.asarray(get("fwhm_kev"), np.float64)
        use = use & np.isfinite(fwhm) & (fwhm > 0) & (g > 0)
        counts = get("photopeak_counts")
        first = cls(**{**values, **kw})
        noise, variance, median, _ = noise_and_scale_samples(
            first, fwhm[use], scale_variance_coefficients(get, use), float(np.median(g[use])),
            None if counts is None else np.asarray(counts, np.float64)[use], _N_SAMPLES)
        values.update(fwhm_kev=median, fwhm_samples_kev=noise, scale_variance_samples=variance)
        return cls(**{**values, **kw})

    @property
    def sigma_kev(self) -> float:
        return self.fwhm_kev / FWHM_PER_SIGMA

    def efficiency(self, energy_kev):
        """Relative probability that a photon of ``energy_kev`` (ndarray, keV) reaching a pixel is counted."""
        import xraylib
        e = np.asarray(energy_kev, np.float64)
        flat = np.maximum(e.ravel(), 1.0)
        # one xraylib call per 0.05 keV step, interpolated: the grids here have thousands of points
        grid = np.arange(flat.min() - 0.05, flat.max() + 0.1, 0.05)
        mu = np.array([xraylib.CS_Total_CP(SENSOR_MATERIAL, float(x)) for x in grid]) * SENSOR_DENSITY_G_CM3
        absorbed = -np.expm1(-np.interp(flat, grid, mu) * self.thickness_mm * 0.1)
        eff = absorbed
        if self.threshold_kev is not None:
            # survival of charge-sharing discrimination on a 2 keV grid (smooth in E), interpolated
            coarse = np.arange(flat.min() - 2.0, flat.max() + 4.0, 2.0)
            kept = np.array([self.sharing(float(x), 0.05, _N_PHOTONS // 4)[2] for x in np.maximum(coarse, 1.0)])
            eff = eff * np.interp(flat, coarse, kept)
        return eff.reshape(e.shape)

    def _sigma_cloud_px(self):
        cloud = cloud_fwhm_um(self.thickness_mm) if self.cloud_fwhm_um is None else self.cloud_fwhm_um
        return cloud * 1e-3 / FWHM_PER_SIGMA / self.pitch_mm

    def sharing(self, energy_kev, step_kev=0.01, n_photons=_N_PHOTONS):
        """Charge sharing and K fluorescence of a photon absorbed at ``energy_kev``, by a seeded Monte Carlo.

        Each photon is absorbed at a point uniform across the pixel and at a depth drawn from
        the sensor's attenuation (xraylib). With the Cd, Te or Zn K-shell share of the
        attenuation times the fluorescence yield (``CS_FluorLine_Kissel`` over ``CS_Total``)
        it emits a K line isotropically, which travels an exponential path (attenuation at
        the line energy). One that stops in a neighbour (where it reads far above any
        threshold) gets the event rejected; one that stops in the same pixel leaves a second
        charge cloud there; one that leaves the sensor, or stops beyond the 3 x 3 window,
        leaves the pixel with E - E_K (the escape peaks, which are counted). Each cloud's
        charge splits over the 3 x 3 neighbourhood as erf products (PHYSICS.md section 5).
        The event survives discrimination when every neighbour reads nothing, probability prod_nb Phi((T - q_nb) / sigma) averaged over the pixels' thresholds T
        (``threshold_samples_kev``); it then reads E minus the neighbours' charge. Corners
        lose to two or three neighbours (losses to 2-3 T); the fluorescence cloud, of only
        23-31 keV, shares a larger part of its charge under the threshold.

        The random numbers are the same for every energy (a fixed seed), so the results
        are smooth in energy.

        Returns
        -------
        (loss_kev (n,), density (n,), kept)
            Loss grid (step ``step_kev``), the counted events' loss distribution per keV
            (integral ``kept``; escape peaks included), and ``kept``, the fraction of absorbed
            photons that are counted.
        """
        key = (self, round(float(energy_kev), 3), step_kev, int(n_photons))
        if key not in _SHARING_CACHE:
            if len(_SHARING_CACHE) > 256:
                _SHARING_CACHE.clear()
            _SHARING_CACHE[key] = self._sharing(energy_kev, step_kev, n_photons)
        return _SHARING_CACHE[key]

    def _sharing(self, energy_kev, step_kev, n_photons):
        """:meth:`sharing` without the cache."""
        import xraylib
        rng = np.random.default_rng(20240611)
        n = int(n_photons)
        u = rng.random((6, n))
        e = float(energy_kev)
        mm_per_px = self.pitch_mm
        mu = xraylib.CS_Total_CP(SENSOR_MATERIAL, e) * SENSOR_DENSITY_G_CM3 * 0.1          # per mm
        # depth from the entrance face, truncated at the thickness (photons that pass are not absorbed)
        depth = -np.log1p(-u[0] * -np.expm1(-mu * self.thickness_mm)) / mu
        x1, y1 = u[1], u[2]                                       # pixel units, pixel [0, 1)^2
        lines = []
        comp = xraylib.CompoundParser(SENSOR_MATERIAL)
        total = xraylib.CS_Total_CP(SENSOR_MATERIAL, e)
        for z_el, w in zip(comp["Elements"], comp["massFractions"]):
            for line in (xraylib.KA_LINE, xraylib.KB_LINE):
                try:
                    p_line = w * xraylib.CS_FluorLine_Kissel(z_el, line, e) / total
                except ValueError:                                # below the edge
                    continue
                if p_line > 0:
                    lines.append((xraylib.LineEnergy(z_el, line), p_line))
        e_line = np.zeros(n)
        cum = np.cumsum([p for _, p in lines]) if lines else np.zeros(0)
        which = np.searchsorted(cum, u[3])
        fluor = which < len(lines)
        e_line[fluor] = np.array([le for le, _ in lines])[which[fluor]]
        mu_line = np.zeros(n)
        for le, _ in lines:
            mu_line[e_line == le] = xraylib.CS_Total_CP(SENSOR_MATERIAL, le) * SENSOR_DENSITY_G_CM3 * 0.1
        cos_t = 2.0 * u[4] - 1.0
        phi = 2.0 * np.pi * u[5]
        r = -np.log(rng.random(n)) / np.where(mu_line > 0, mu_line, 1.0)
        sin_t = np.sqrt(1.0 - cos_t ** 2)
        x2 = x1 + r * sin_t * np.cos(phi) / mm_per_px
        y2 = y1 + r * sin_t * np.sin(phi) / mm_per_px
        z2 = depth + r * cos_t
        in_sensor = (z2 >= 0) & (z2 <= self.thickness_mm)
        # the K photon stops in the same pixel (a second cloud), in a neighbour (the event is
        # rejected), or leaves the sensor or the 3 x 3 window (the pixel reads E - E_K: escape)
        in_pixel = fluor & in_sensor & (x2 >= 0) & (x2 < 1) & (y2 >= 0) & (y2 < 1)
        in_window = in_sensor & (x2 >= -1) & (x2 < 2) & (y2 >= -1) & (y2 < 2)
        in_neighbour = fluor & in_window & ~in_pixel
        e1 = e - e_line                                           # charge of the first cloud
        sig_px = self._sigma_cloud_px()

        def shares(x):
            if sig_px <= 0:
                return np.stack([np.zeros_like(x), np.ones_like(x), np.zeros_like(x)])
            lo, hi = ndtr(-x / sig_px), ndtr(-(1.0 - x) / sig_px)
            return np.stack([lo, 1.0 - lo - hi, hi])              # (3, n): previous, own, next pixel

        fx1, fy1 = shares(x1), shares(y1)
        fx2, fy2 = shares(np.clip(x2, 0, 1)), shares(np.clip(y2, 0, 1))
        thr = np.asarray(self.threshold_samples_kev or (self.threshold_kev,), np.float64)
        s_n = self.sigma_kev
        # probability that a neighbour given charge q reads nothing, averaged over thresholds, as a table
        q_max = float(thr.max()) + 8.0 * s_n
        q_grid = np.linspace(0.0, q_max, 2001)
        p_grid = np.mean(ndtr((thr[None, :] - q_grid[:, None]) / s_n), axis=1)
        # a neighbour's hit does not reject the event when the next-frame correction drops it
        # first (that neighbour was hit in the previous frame): probability p_prev
        p_prev = float(self.previous_hit_probability)
        p_grid = p_grid + p_prev * (1.0 - p_grid)
        keep = np.where(in_neighbour, p_prev, 1.0)
        own = e1 * fx1[1] * fy1[1] + np.where(in_pixel, e_line * fx2[1] * fy2[1], 0.0)
        for a in range(3):
            for b in range(3):
                if a == 1 and b == 1:
                    continue
                q = e1 * fy1[a] * fx1[b] + np.where(in_pixel, e_line * fy2[a] * fx2[b], 0.0)
                keep *= np.interp(q, q_grid, p_grid, right=p_prev)
        loss = np.maximum(e - own, 0.0)
        reach = 3.0 * float(thr.max()) + float(e_line.max())
        if p_prev > 0:
            reach = e                                             # a dropped neighbour may hold most of the charge
        nbin = int(np.ceil(reach / step_kev)) + 2
        good = keep > 0
        # each loss shared between its two grid points (linear): flooring it to the point below
        # understated the mean loss by half a step for every event losing more than one step
        pos = np.minimum(loss[good] / step_kev, nbin - 1.0)
        low = np.minimum(pos.astype(np.int64), nbin - 2)
        frac = pos - low
        hist = (np.bincount(low, weights=keep[good] * (1.0 - frac), minlength=nbin)
                + np.bincount(low + 1, weights=keep[good] * frac, minlength=nbin)) / n
        return np.arange(nbin) * step_kev, hist / step_kev, float(keep.sum() / n)

    def line_cdf(self, energy_kev=100.0):
        """(offset_kev, cdf): the CDF of measured minus true energy on a 0.01 keV grid, unit total.

        The Gaussian is the average over the good pixels' FWHMs (``fwhm_samples_kev``: the
        sum of many pixels is a mixture, with wider wings than its median pixel). With a
        threshold, the loss to neighbours is that of :meth:`sharing` at ``energy_kev``
        (it hardly changes across a fit range); without one, the calibration's own tail
        (share ``tail_fraction``, length ``tail_length_kev``, untruncated: raw frames).
        """
        sig = self._sigmas_kev(energy_kev)
        step = 0.01
        below, above = self.reach_kev(energy_kev)
        d = np.arange(-below, above + step, step)
        gauss = np.mean(np.exp(-0.5 * (d[:, None] / sig[None, :]) ** 2) / sig[None, :], axis=1) / math.sqrt(2 * math.pi)
        if self.threshold_kev is not None:
            loss, dens_q, kept = self.sharing(energy_kev, step)
            w = dens_q * step / kept
        elif self.tail_fraction > 0:
            q = np.arange(0.0, below, step)
            w = self.tail_fraction * np.exp(-q / self.tail_length_kev) / self.tail_length_kev * step
            w[0] += 1.0 - self.tail_fraction
        else:
            w = np.ones(1)
        # a loss q moves the Gaussian down: dens(d_i) = sum_l w_l gauss(d_i + q_l), and d_i + q_l
        # is grid point i + l (one step for both grids)
        dens = np.convolve(gauss, w[::-1])[w.size - 1: w.size - 1 + d.size]
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * step)])
        return d, cdf

    def matrix(self, fine_kev, lo_kev, hi_kev, line_kev=None):
        """Counts in bins [lo, hi) per unit density at each true energy of a regular grid ``fine_kev``.

        Returns ndarray (nfine, nbins): the line shape (:meth:`line_cdf`) integrated over each
        bin, times the grid step (the efficiency is applied to the density, not here). The
        line shape is that at ``line_kev`` (default the bins' centre): a line far above the
        bins (the elastic line reaching a fit range by its escape peaks) needs its own.
        """
        step = float(fine_kev[1] - fine_kev[0])
        d, cdf = self.line_cdf(0.5 * float(lo_kev[0] + hi_kev[-1]) if line_kev is None else float(line_kev))
        up = np.interp(hi_kev[None, :] - fine_kev[:, None], d, cdf, left=0.0, right=cdf[-1])
        down = np.interp(lo_kev[None, :] - fine_kev[:, None], d, cdf, left=0.0, right=cdf[-1])
        return (up - down) * step

    def spill_matrix(self, lo_kev, hi_kev):
        """(nbins, nbins): counts per bin after next-frame spill, from the counts ``c`` per bin without it.

        An event of measured energy E' spills with probability ``spill_probability`` and then
        reads u E', u uniform in [0, 1): density p c(E') / E' per keV below E'. New counts are
        (1 - p) c_i + p w_i sum_{j > i} c_j / E_j + p (w_i / 2) c_i / E_i, with w the bin widths
        and E the bin centres (its own bin: half of it lies below the centre). The bins must
        reach above every energy that carries counts.
        """
        lo = np.asarray(lo_kev, np.float64)
        hi = np.asarray(hi_kev, np.float64)
        w, centre = hi - lo, 0.5 * (hi + lo)
        p = float(self.spill_probability)
        t = p * w[:, None] / centre[None, :] * np.triu(np.ones((lo.size, lo.size)), 1)
        t[np.diag_indices(lo.size)] = 1.0 - p + 0.5 * p * w / centre
        return t

    def _sigmas_kev(self, energy_kev):
        """Gaussian sigma of each sample at ``energy_kev``: noise and the energy-scale error there."""
        sig = np.asarray(self.fwhm_samples_kev or (self.fwhm_kev,), np.float64) / FWHM_PER_SIGMA
        if self.scale_variance_samples:
            e = float(energy_kev)
            var = np.asarray(self.scale_variance_samples, np.float64) @ np.array([1.0, e, e * e])
            sig = np.sqrt(sig ** 2 + np.maximum(var, 0.0))
        return sig

    def reach_kev(self, energy_kev=100.0):
        """(below, above): how far below and above a true energy (``energy_kev``) the line shape reaches, keV."""
        sig = float(self._sigmas_kev(energy_kev).max())
        if self.threshold_kev is not None and self.previous_hit_probability > 0:
            # a neighbour dropped by the next-frame correction may have taken most of the charge
            tail = float(energy_kev)
        elif self.tail_fraction <= 0:
            tail = 0.0
        elif self.threshold_kev is not None:
            # corners lose up to about 3 T; escape of a K photon (Te K-beta 31 keV) adds its energy
            tail = 3.0 * max(self.threshold_samples_kev or (self.threshold_kev,)) + 6.0 * sig + _MAX_K_LINE_KEV
        else:
            tail = 25.0 * self.tail_length_kev
        return 8.0 * sig + tail, 8.0 * sig


def previous_hit_probability(stats, live_pixels):
    """Probability that a pixel was hit in the frame before, from ``EventExtractor.stats``.

    Hits (before the next-frame correction) per live pixel and frame of the measurement:
    the ``previous_hit_probability`` of :class:`DetectorResponse`.

    Parameters
    ----------
    stats : dict
        ``EventExtractor.stats`` after the measurement (``hits`` and ``frames``).
    live_pixels : int
        Pixels that can record a hit (e.g. the calibration's good pixels).
    """
    frames = int(stats.get("frames", 0))
    hits = float(stats.get("hits", 0))
    if frames <= 0 or hits <= 0 or live_pixels <= 0:
        raise ConfigError(f"previous_hit_probability: expected extractor statistics with frames and hits and "
                          f"live pixels, found {stats!r} and {live_pixels} pixels")
    return hits / (frames * float(live_pixels))


def full_neighbourhood(good):
    """Pixels whose eight neighbours are all good and inside the detector, (rows, cols) bool.

    Only there does charge-sharing discrimination see every neighbour: a border pixel loses
    charge off the detector, and a pixel next to a switched-off one loses charge to it,
    without rejection, which gives a tail far longer than the threshold. The forward model
    is for these pixels.
    """
    from scipy.ndimage import binary_erosion
    good = np.asarray(good, bool)
    return binary_erosion(good, np.ones((3, 3), bool), border_value=0)
