"""HexitecSimulator: raw frames with known truth from a photon source and the detector response."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..detector import HEXITEC, DetectorSpec
from ..errors import ConfigError
from ..frames import FrameBatch
from . import response
from .fastrandom import new_state
from .response import (FLAG_ESCAPED, FLAG_SHARED, FLAG_SPILLED, FWHM_PER_SIGMA, detect_block, gaussian_tail_probability,
                       read_first_frame, readout_table, sensor_tables)


@dataclass
class PhotonTruth:
    """Every photon absorbed in the sensor, as a struct of arrays (ordered by frame).

    Attributes
    ----------
    frame : int64            detector frame number
    row, col : uint16        pixel where the photon interacted
    x, y : float64           position inside that pixel, 0..1 along columns (x) and rows (y)
    depth_mm : float32       interaction depth below the entrance (cathode) face
    energy_kev : float64     photon energy
    shared : bool            charge of at least ``share_min_kev`` reached more than one pixel
    escaped : bool           a Cd/Te K fluorescence photon left the pixel (or the sensor)
    spilled : bool           part of the charge was read in the next frame
    """

    frame: np.ndarray
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray
    y: np.ndarray
    depth_mm: np.ndarray
    energy_kev: np.ndarray
    shared: np.ndarray
    escaped: np.ndarray
    spilled: np.ndarray

    def __len__(self):
        return self.frame.shape[0]

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SimTruth:
    """What the simulator knows about a frame batch.

    Attributes
    ----------
    gradients, intercepts : ndarray (rows, cols)
        True calibration: E [keV] = ADU * gradient + intercept.
    noise_fwhm_kev : ndarray (rows, cols)
        Per-pixel Gaussian noise FWHM in keV.
    dead, hot : ndarray (rows, cols) bool
        Dead pixels (always 0) and hot pixels (random large values).
    theta_rad, li_content, flux : ndarray (rows, cols) or None
        Scattering angle, Li content (1 - x) and relative flux maps of the source, when it has them.
    photons : PhotonTruth
        The absorbed photons.
    frame_numbers : ndarray (n,)
    cloud_fwhm_um : float
        Charge-cloud FWHM used.
    n_incident, n_transmitted, noise_only_hits, hot_hits, clipped : int
        Photons reaching the sensor, photons passing through it unabsorbed, pixels read non-zero
        from noise alone, hot-pixel readings and values clipped at the 14-bit limit.
    """

    gradients: np.ndarray
    intercepts: np.ndarray
    noise_fwhm_kev: np.ndarray
    dead: np.ndarray
    hot: np.ndarray
    theta_rad: object
    li_content: object
    flux: object
    photons: PhotonTruth
    frame_numbers: np.ndarray
    cloud_fwhm_um: float
    n_incident: int = 0
    n_transmitted: int = 0
    noise_only_hits: int = 0
    hot_hits: int = 0
    clipped: int = 0

    @property
    def shared_fraction(self) -> float:
        """Fraction of absorbed photons whose charge reached more than one pixel."""
        return float(np.mean(self.photons.shared)) if len(self.photons) else 0.0


#: Frames per block of random streams (see HexitecSimulator._simulate_block).
BLOCK_FRAMES = 1024


@dataclass
class _Block:
    """One simulated block of BLOCK_FRAMES frames: frames, absorbed photons and per-frame counters.

    Absorbed photons are ordered by ``frame`` (0 .. BLOCK_FRAMES - 1 within the block).
    ``first_pix/first_kev`` hold the unread charge of frame 0 until :meth:`_finish_block`
    reads it; ``carry_pix/carry_kev`` the charge the last frame spills into the next block.
    """

    index: int
    frames: np.ndarray
    counts: np.ndarray
    stats: np.ndarray
    frame: np.ndarray
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray
    y: np.ndarray
    depth_mm: np.ndarray
    energy_kev: np.ndarray
    flags: np.ndarray
    first_pix: np.ndarray
    first_kev: np.ndarray
    carry_pix: np.ndarray
    carry_kev: np.ndarray
    position: int = 0


#: Charge shares below this are not written (0.4 ADU at 0.027 keV/ADU, 3 % of the noise sigma).
MIN_DEPOSIT_KEV = 0.01


class HexitecSimulator:
    """Simulated HEXITEC: photons from a source, detector response, offset-corrected raw frames.

    Parameters
    ----------
    source : Am241Source, ComptonSource or any object with ``sample_pixels(pixel_index, rng)``
        Photon energies; an optional ``flux`` (rows, cols) map places the photons.
    detector : DetectorSpec
        Pixel grid, pitch and frame rate.
    photon_rate_hz : float
        Photons per second reaching the sensor (all pixels). The count per frame is Poisson
        with mean ``photon_rate_hz / detector.frame_rate_hz``.
    noise_fwhm_kev : float
        Mean per-pixel electronic noise FWHM in keV.
    seed : int
        Seeds everything: the same seed gives bit-identical frames and truth, however the
        run is split into ``frames(n)`` calls (random streams belong to fixed blocks of
        frames, not to calls).
    photons_per_frame : float, optional
        Overrides ``photon_rate_hz``: mean photons per frame.
    flux : ndarray (rows, cols), optional
        Relative illumination; default the source's ``flux``, else uniform.
    gradient_kev_per_adu, gradient_spread : float
        Mean gain and its relative per-pixel spread.
    intercept_kev, intercept_spread_kev : float
        Mean offset and its per-pixel spread.
    noise_spread : float
        Relative per-pixel spread of the noise FWHM.
    thickness_mm, bias_v, temperature_c : float
        Sensor thickness, bias magnitude and temperature (charge cloud size, absorption).
    escape : bool
        Simulate Cd/Te K fluorescence escape and reabsorption.
    next_frame_probability : float
        Probability that a photon's charge is split between its frame and the next.
    dead_pixels, hot_pixels : int
        Number of dead and hot pixels at random positions.
    hot_probability, hot_mean_adu, hot_sigma_adu : float
        How often a hot pixel fires per frame and the distribution of its values.
    share_min_kev : float
        A photon counts as shared in the truth when more than one pixel got at least this
        charge (default 5 keV, about the low-energy threshold of the reference experiment).
    cloud_fwhm_um : float, optional
        Charge-cloud FWHM at the anode in um; default from thickness, bias and temperature
        (:func:`hexspec.sim.cloud_fwhm_um`). 0 gives point charges (no sharing but at edges).
    first_frame : int
        Number of the first simulated frame.
    threads : int, optional
        Threads simulating blocks of frames at once (default: one per CPU). Frames and truth
        are bit-identical for a seed whatever the number of threads.
    detector_seed : int, optional
        Seeds the detector's own maps (gains, offsets, noise, dead and hot pixels) apart
        from the photon streams (default ``seed``): simulators with one ``detector_seed`` and
        different ``seed`` are one detector measuring independent exposures.
    """

    def __init__(self, source, detector: DetectorSpec = HEXITEC, photon_rate_hz=3.0e5, noise_fwhm_kev=0.8, seed=0, *,
                 photons_per_frame=None, flux=None,
                 gradient_kev_per_adu=0.027, gradient_spread=0.03, intercept_kev=4.5, intercept_spread_kev=0.8,
                 noise_spread=0.15, thickness_mm=2.0, bias_v=1200.0, temperature_c=18.0, escape=True,
                 next_frame_probability=0.01, dead_pixels=3, hot_pixels=2, hot_probability=0.2,
                 hot_mean_adu=400.0, hot_sigma_adu=80.0, share_min_kev=5.0, cloud_fwhm_um=None, first_frame=0, threads=None, detector_seed=None):
        self.source = source
        self.detector = detector
        shape = detector.shape
        src_shape = getattr(source, "shape", None)
        if src_shape is not None and tuple(src_shape) != shape:
            raise ConfigError(f"HexitecSimulator: source is for a {tuple(src_shape)} detector, detector is {shape}; "
                              "build the source for the same detector (ComptonSource(geometry=PinholeGeometry(detector=...)))")
        if photons_per_frame is None:
            if photon_rate_hz is None or photon_rate_hz < 0:
                raise ConfigError(f"HexitecSimulator.photon_rate_hz: expected a rate >= 0 photons/s, found {photon_rate_hz}")
            photons_per_frame = float(photon_rate_hz) / detector.frame_rate_hz
        if photons_per_frame < 0:
            raise ConfigError(f"HexitecSimulator.photons_per_frame: expected >= 0, found {photons_per_frame}")
        self.photons_per_frame = float(photons_per_frame)
        if noise_fwhm_kev < 0:
            raise ConfigError(f"HexitecSimulator.noise_fwhm_kev: expected >= 0 keV, found {noise_fwhm_kev}")
        if not 0 <= next_frame_probability <= 1:
            raise ConfigError(f"HexitecSimulator.next_frame_probability: expected a probability, found {next_frame_probability}")
        if gradient_kev_per_adu <= 0:
            raise ConfigError(f"HexitecSimulator.gradient_kev_per_adu: expected > 0, found {gradient_kev_per_adu}")
        npix = detector.n_pixels
        if dead_pixels + hot_pixels > npix:
            raise ConfigError(f"HexitecSimulator: {dead_pixels} dead + {hot_pixels} hot pixels exceed {npix} pixels")

        self.seed = int(seed)
        self.detector_seed = self.seed if detector_seed is None else int(detector_seed)
        map_rng = np.random.default_rng(np.random.SeedSequence(self.detector_seed, spawn_key=(0,)))
        self._block = None
        self._block_index = 0
        if threads is None:
            threads = os.cpu_count() or 1
        if int(threads) < 1:
            raise ConfigError(f"HexitecSimulator.threads: expected at least 1, found {threads}")
        self.threads = int(threads)

        self.gradients = gradient_kev_per_adu * (1.0 + gradient_spread * map_rng.standard_normal(shape))
        if np.any(self.gradients <= 0):
            raise ConfigError("HexitecSimulator.gradient_spread: too large, some gradients came out <= 0")
        self.intercepts = intercept_kev + intercept_spread_kev * map_rng.standard_normal(shape)
        self.noise_fwhm_kev = np.maximum(noise_fwhm_kev * (1.0 + noise_spread * map_rng.standard_normal(shape)),
                                         0.3 * noise_fwhm_kev)
        defect = map_rng.permutation(npix)[:dead_pixels + hot_pixels]
        self.dead = np.zeros(shape, bool)
        self.dead.flat[defect[:dead_pixels]] = True
        self.hot = np.zeros(shape, bool)
        self.hot.flat[defect[dead_pixels:]] = True

        flux = flux if flux is not None else getattr(source, "flux", None)
        if flux is not None:
            flux = np.asarray(flux, dtype=np.float64)
            if flux.shape != shape or np.any(flux < 0) or flux.sum() <= 0:
                raise ConfigError(f"HexitecSimulator.flux: expected non-negative {shape} map with a positive sum, "
                                  f"found shape {flux.shape}")
            self._flux_cdf = np.cumsum(flux.ravel())
        else:
            self._flux_cdf = None
        self.flux = flux

        if cloud_fwhm_um is None:
            cloud_fwhm_um = response.cloud_fwhm_um(thickness_mm, bias_v, temperature_c)
        if cloud_fwhm_um < 0:
            raise ConfigError(f"HexitecSimulator.cloud_fwhm_um: expected >= 0 um, found {cloud_fwhm_um}")
        self.cloud_fwhm_um = float(cloud_fwhm_um)
        self._sigma_px = self.cloud_fwhm_um / FWHM_PER_SIGMA / (detector.pitch_mm * 1e3)
        if self._sigma_px > 0.25:
            raise ConfigError(f"HexitecSimulator: charge cloud sigma {self._sigma_px:.2f} pixels is too wide for the "
                              "3x3 split (at most 0.25 pixel)")
        self.thickness_mm = float(thickness_mm)
        self.escape = bool(escape)
        self.next_frame_probability = float(next_frame_probability)
        self.share_min_kev = float(share_min_kev)
        self.hot_probability = float(hot_probability)
        self.hot_mean_adu = float(hot_mean_adu)
        self.hot_sigma_adu = float(hot_sigma_adu)
        self._tables = sensor_tables()
        self._attenuation_mm = 1.0 / self._tables.mu_per_mm
        self._line_attenuation_mm = 1.0 / self._tables.line_mu_per_mm

        # Sparse noise-only readings: a pixel with no charge reads > 0 ADU when its noise
        # exceeds intercept + half an ADU step.
        sigma_kev = (self.noise_fwhm_kev / FWHM_PER_SIGMA).ravel()
        with np.errstate(divide="ignore"):
            a = (self.intercepts.ravel() + 0.5 * self.gradients.ravel()) / np.where(sigma_kev > 0, sigma_kev, np.inf)
        p = np.where(sigma_kev > 0, gaussian_tail_probability(a), 0.0) * (~self.dead.ravel())
        self._noise_rate = float(p.sum())
        if self._noise_rate > 0.05 * npix:
            raise ConfigError(f"HexitecSimulator: {self._noise_rate:.0f} noise-only pixels per frame expected; the sparse "
                              "readout model needs intercepts well above the noise (raise intercept_kev)")
        self._noise_cdf = np.cumsum(p)
        self._noise_threshold_sigma = np.ascontiguousarray(a)
        self._live = np.ascontiguousarray((~self.dead).ravel().astype(np.uint8))
        # zero below: the charge under which a pixel reads 0 ADU whatever its noise (8 sigma margin)
        self._readout = readout_table(self.intercepts.ravel() + 0.5 * self.gradients.ravel() - 8.0 * sigma_kev,
                                      sigma_kev, self.intercepts.ravel(), 1.0 / self.gradients.ravel(), self._live)
        self._hot_index = np.flatnonzero(self.hot.ravel()).astype(np.int64)
        self._carry_pix = np.empty(0, np.int64)   # spill of the last simulated frame into the next block
        self._carry_kev = np.empty(0)
        self._next_frame = int(first_frame)

    @property
    def shape(self):
        return self.detector.shape

    @property
    def next_frame_number(self) -> int:
        """Number the next simulated frame will get."""
        return self._next_frame

    def _simulate_block(self, k, frames):
        """Simulate block ``k`` of BLOCK_FRAMES frames into ``frames`` (BLOCK_FRAMES, rows * cols), zeroed.

        Each block has its own random streams, derived from the seed and the block index,
        so frames depend only on the seed and their position in the run, never on how a
        caller splits the run into ``frames(n)`` calls or on how many threads run. Frame 0
        is left unread (see :func:`hexspec.sim.response.detect_block`); :meth:`_finish_block`
        reads it once the previous block's spill is known.
        """
        photon_rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, k, 0)))
        response_rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, k, 1)))
        rows, cols = self.shape
        npix = rows * cols
        counts = photon_rng.poisson(self.photons_per_frame, BLOCK_FRAMES)
        n_photons = int(counts.sum())
        if self._flux_cdf is None:
            pixel = photon_rng.integers(0, npix, size=n_photons)
        else:
            pixel = np.searchsorted(self._flux_cdf, photon_rng.random(n_photons) * self._flux_cdf[-1], side="right")
            pixel = np.minimum(pixel, npix - 1).astype(np.int64)
        energy_kev = np.ascontiguousarray(self.source.sample_pixels(pixel, photon_rng), dtype=np.float64)
        photon_frame = np.repeat(np.arange(BLOCK_FRAMES, dtype=np.int64), counts)
        index = np.empty(n_photons, np.int64)
        x_in = np.empty(n_photons)
        y_in = np.empty(n_photons)
        depth = np.empty(n_photons, np.float32)
        flags = np.empty(n_photons, np.uint8)
        carry_pix = np.empty(18 * int(counts.max()) + 64, np.int64)
        carry_kev = np.empty(carry_pix.size)
        first_pix = np.empty(min(18 * int(counts[0]) + 1, npix), np.int64)
        first_kev = np.empty(first_pix.size)
        stats = np.zeros((BLOCK_FRAMES, 4), np.int64)
        t = self._tables
        n_first, n_carry, n_abs = detect_block(
            photon_frame, pixel, energy_kev, BLOCK_FRAMES, rows, cols,
            self._sigma_px, self.thickness_mm, self.detector.pitch_mm, self.escape,
            t.e0_kev, t.step_kev, self._attenuation_mm, t.k_fluorescence[0], t.k_fluorescence[1], t.line_kev,
            t.line_cdf, self._line_attenuation_mm,
            self.next_frame_probability, self.share_min_kev, MIN_DEPOSIT_KEV,
            self._readout, self._live, self._noise_rate, self._noise_cdf, self._noise_threshold_sigma,
            self._hot_index, self.hot_probability, self.hot_mean_adu, self.hot_sigma_adu,
            response_rng, new_state(response_rng), frames, first_pix, first_kev, carry_pix, carry_kev,
            index, x_in, y_in, depth, flags, stats)
        index = index[:n_abs]
        pixel = pixel[index]
        row = pixel // cols
        return _Block(index=k, frames=frames, counts=counts, stats=stats, frame=photon_frame[index],
                      row=row.astype(np.uint16), col=(pixel - row * cols).astype(np.uint16), x=x_in[:n_abs], y=y_in[:n_abs], depth_mm=depth[:n_abs],
                      energy_kev=energy_kev[index], flags=flags[:n_abs], first_pix=first_pix[:n_first],
                      first_kev=first_kev[:n_first], carry_pix=carry_pix[:n_carry], carry_kev=carry_kev[:n_carry])

    def _finish_block(self, blk):
        """Read block ``blk``'s first frame with the spill of the block before it (blocks in order)."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, blk.index, 2)))
        read_first_frame(blk.first_pix, blk.first_kev, blk.first_pix.size, self._carry_pix, self._carry_kev,
                         self._carry_pix.size, self._readout, self._live, self._noise_rate, self._noise_cdf,
                         self._noise_threshold_sigma,
                         self._hot_index, self.hot_probability, self.hot_mean_adu, self.hot_sigma_adu,
                         rng, new_state(rng), blk.frames[0], blk.stats[0])
        self._carry_pix, self._carry_kev = blk.carry_pix, blk.carry_kev

    def _new_blocks(self, targets, pool):
        """Simulate the next ``len(targets)`` blocks into the zeroed frame arrays ``targets``, ``pool`` (or None) sharing them."""
        first = self._block_index
        self._block_index += len(targets)
        jobs = list(enumerate(targets, start=first))
        if pool is not None and len(jobs) > 1:
            # The kernels release the GIL (nogil), so blocks run truly in parallel; blocks
            # come back in order, and each one's first frame is read here while the pool
            # still simulates the later ones.
            done = pool.map(lambda job: self._simulate_block(*job), jobs)
        else:
            done = (self._simulate_block(*job) for job in jobs)
        blocks = []
        for blk in done:
            self._finish_block(blk)
            blocks.append(blk)
        return blocks

    def _photon_truth(self, pieces, first_number, pool):
        """The PhotonTruth of ``pieces`` [(block, first frame, end frame, output position)], in frame order.

        Each piece is copied into its place of the output arrays by its own task (rows and
        columns were split off the pixel index inside the block's task): numpy's copies
        release the GIL, so on several threads this part (about a tenth of a call's work on
        one thread) runs in parallel too.
        """
        spans = []
        total = 0
        for blk, lo, hi, at in pieces:
            if lo == 0 and hi == BLOCK_FRAMES:
                a, b = 0, blk.frame.size
            else:
                a, b = (int(v) for v in np.searchsorted(blk.frame, [lo, hi]))
            spans.append((blk, a, b, first_number + at - lo, total))
            total += b - a
        frame = np.empty(total, np.int64)
        row = np.empty(total, np.uint16)
        col = np.empty(total, np.uint16)
        x_in, y_in, energy_kev = np.empty(total), np.empty(total), np.empty(total)
        depth = np.empty(total, np.float32)
        shared, escaped, spilled = np.empty(total, bool), np.empty(total, bool), np.empty(total, bool)

        def fill(span):
            blk, a, b, shift, s = span
            e = s + b - a
            np.add(blk.frame[a:b], shift, out=frame[s:e])
            row[s:e] = blk.row[a:b]
            col[s:e] = blk.col[a:b]
            x_in[s:e] = blk.x[a:b]
            y_in[s:e] = blk.y[a:b]
            depth[s:e] = blk.depth_mm[a:b]
            energy_kev[s:e] = blk.energy_kev[a:b]
            flags = blk.flags[a:b]
            np.not_equal(flags & FLAG_SHARED, 0, out=shared[s:e])
            np.not_equal(flags & FLAG_ESCAPED, 0, out=escaped[s:e])
            np.not_equal(flags & FLAG_SPILLED, 0, out=spilled[s:e])

        if pool is not None and len(spans) > 1:
            list(pool.map(fill, spans))
        else:
            for span in spans:
                fill(span)
        return PhotonTruth(frame=frame, row=row, col=col, x=x_in, y=y_in, depth_mm=depth, energy_kev=energy_kev,
                           shared=shared, escaped=escaped, spilled=spilled)

    def frames(self, n):
        """Simulate the next ``n`` frames.

        Returns
        -------
        batch : FrameBatch
            (n, rows, cols) uint16 frames; numbering continues from the previous call.
        truth : SimTruth
        """
        n = int(n)
        if n < 0:
            raise ConfigError(f"HexitecSimulator.frames: expected n >= 0, found {n}")
        # one pool for the call: blocks, then the truth's pieces (a batch within one block runs alone)
        threads = min(self.threads, -(-n // BLOCK_FRAMES) + 1) if n > BLOCK_FRAMES else 1
        with ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext() as pool:
            return self._frames(n, pool)

    def _frames(self, n, pool):
        rows, cols = self.shape
        npix = rows * cols
        # np.zeros of a large array maps zero pages lazily: cheaper than zeroing frames here.
        frames = np.zeros((n, npix), np.uint16)
        pieces = []   # (block, first frame, end frame, position in the output)
        done = 0
        blk = self._block
        if blk is not None and blk.position < BLOCK_FRAMES and n > 0:
            m = min(n, BLOCK_FRAMES - blk.position)
            frames[:m] = blk.frames[blk.position:blk.position + m]
            pieces.append((blk, blk.position, blk.position + m, 0))
            blk.position += m
            done = m
        remaining = n - done
        if remaining > 0:
            n_full, tail = divmod(remaining, BLOCK_FRAMES)
            targets = [frames[done + j * BLOCK_FRAMES:done + (j + 1) * BLOCK_FRAMES] for j in range(n_full)]
            if tail:
                targets.append(np.zeros((BLOCK_FRAMES, npix), np.uint16))
            for j, blk in enumerate(self._new_blocks(targets, pool)):
                m = min(BLOCK_FRAMES, remaining - j * BLOCK_FRAMES)
                if j == n_full:
                    frames[done + j * BLOCK_FRAMES:] = blk.frames[:m]
                blk.position = m
                pieces.append((blk, 0, m, done + j * BLOCK_FRAMES))
                # Only a partly used block is kept (a full one is a view of the caller's frames).
                self._block = blk if m < BLOCK_FRAMES else None

        n_incident = 0
        stats = np.zeros(4, np.int64)
        for blk, lo, hi, _at in pieces:
            n_incident += int(blk.counts[lo:hi].sum())
            stats += blk.stats[lo:hi].sum(axis=0)
        photons = self._photon_truth(pieces, self._next_frame, pool)
        frame_numbers = np.arange(self._next_frame, self._next_frame + n, dtype=np.int64)
        self._next_frame += n
        truth = SimTruth(
            gradients=self.gradients, intercepts=self.intercepts, noise_fwhm_kev=self.noise_fwhm_kev,
            dead=self.dead, hot=self.hot,
            theta_rad=getattr(self.source, "theta_rad", None), li_content=getattr(self.source, "li_content", None),
            flux=self.flux, photons=photons, frame_numbers=frame_numbers, cloud_fwhm_um=self.cloud_fwhm_um,
            n_incident=n_incident, n_transmitted=int(stats[3]), noise_only_hits=int(stats[0]),
            hot_hits=int(stats[1]), clipped=int(stats[2]))
        batch = FrameBatch(frames.reshape(n, rows, cols), frame_numbers,
                           timestamps=frame_numbers / self.detector.frame_rate_hz)
        return batch, truth

    def batches(self, batch_size=1000, n_frames=None):
        """Yield FrameBatch of ``batch_size`` frames (truth dropped), forever or until ``n_frames``."""
        done = 0
        while n_frames is None or done < n_frames:
            k = batch_size if n_frames is None else min(batch_size, n_frames - done)
            batch, _ = self.frames(k)
            done += k
            yield batch

    def __repr__(self):
        return (f"HexitecSimulator({self.source!r}, shape={self.shape}, photons_per_frame={self.photons_per_frame:.3g}, "
                f"seed={self.seed})")
