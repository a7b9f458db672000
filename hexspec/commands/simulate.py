"""`hexspec simulate`: write simulated HEXITEC raw frames, with their ground truth, to a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.outputs import add_force_option, atomic_output
from .common import Progress, add_batch_option, add_compression_option, add_quiet_option

#: Truth photon fields stored in /entry/results/truth/photons (name, dtype).
_PHOTON_FIELDS = (("frame", np.int64), ("row", np.uint16), ("col", np.uint16), ("x", np.float64),
                  ("y", np.float64), ("depth_mm", np.float32), ("energy_kev", np.float64),
                  ("shared", np.bool_), ("escaped", np.bool_), ("spilled", np.bool_))


def add_simulation_options(parser) -> None:
    """Options describing the simulated source and detector (shared with serve-sim)."""
    g = parser.add_argument_group("simulation")
    g.add_argument("--source", choices=("am241", "compton"), default="am241",
                   help="photon source: Am-241 calibration source or Compton scattering from an NMC811 cathode (default am241)")
    g.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives identical frames (default 0)")
    g.add_argument("--photon-rate", type=float, metavar="HZ",
                   help="photons per second on the detector (default 3e5, about 33 per frame)")
    g.add_argument("--noise-fwhm", type=float, default=0.8, metavar="KEV", help="electronic noise FWHM in keV (default 0.8)")
    g.add_argument("--e1", type=float, default=115.0, metavar="KEV", help="compton: incident energy in keV (default 115)")
    g.add_argument("--li-content", type=float, default=0.5, metavar="X",
                   help="compton: Li content 1-x of Li(1-x)Ni0.8Mn0.1Co0.1O2 (default 0.5)")
    g.add_argument("--shape", nargs=2, type=int, metavar=("ROWS", "COLS"), help="detector shape (default 80 80)")


def simulator_from_args(args):
    """HexitecSimulator described by :func:`add_simulation_options`."""
    from .. import sim
    from ..compton import PinholeGeometry
    from ..detector import HEXITEC, DetectorSpec

    detector = HEXITEC
    if args.shape:
        detector = DetectorSpec(args.shape[0], args.shape[1], HEXITEC.pitch_mm, HEXITEC.frame_rate_hz)
    if args.source == "am241":
        source = sim.Am241Source()
    else:
        source = sim.ComptonSource(e1_kev=args.e1, li_content=args.li_content,
                                   geometry=PinholeGeometry(detector=detector))
    kw = {} if args.photon_rate is None else {"photon_rate_hz": args.photon_rate}
    return sim.HexitecSimulator(source, detector=detector, noise_fwhm_kev=args.noise_fwhm, seed=args.seed, **kw)


def source_url(args) -> str:
    """The sim:// URL of these options (hexspec.drivers.open_source reads it); the options a
    URL cannot carry (e1, Li content, noise) are stored with the truth."""
    url = f"sim://?source={args.source}&seed={args.seed}"
    if args.photon_rate is not None:
        url += f"&photon_rate={args.photon_rate:g}"
    if args.shape:
        url += f"&shape={args.shape[0]},{args.shape[1]}"
    return url


def register(sub) -> None:
    p = sub.add_parser(
        "simulate", help="write simulated raw frames (with their ground truth) to HDF5 or GigE .bin",
        description="Simulate a HEXITEC detector under an Am-241 source or in the XCS-I Compton set-up and "
                    "write the raw frames. An .h5 output holds the frames in the hexspec layout, the true "
                    "calibration in /entry/results/calibration (usable with --calibration) and the full truth "
                    "(maps and every absorbed photon) in /entry/results/truth. A .bin output holds headerless "
                    "uint16 frames; the true gradients and intercepts go to text maps beside it.")
    p.add_argument("-n", "--frames", type=int, required=True, metavar="N", help="number of frames to simulate")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="frames.h5 (hexspec HDF5) or frames.bin (GigE raw)")
    add_batch_option(p, dest="batch", help="frames simulated per batch")
    add_compression_option(p)
    add_force_option(p)
    add_simulation_options(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def _truth_maps(sim, truth):
    maps = {"gradients": truth.gradients, "intercepts": truth.intercepts, "noise_fwhm_kev": truth.noise_fwhm_kev,
            "dead": truth.dead, "hot": truth.hot}
    for name in ("theta_rad", "li_content", "flux"):
        v = getattr(truth, name)
        if v is not None:
            maps[name] = v
    return maps


def _write_h5(args, sim, path, prog):
    from ..io.hdf5 import HexspecWriter

    shape = sim.shape
    url = source_url(args)
    photons_written = incident = transmitted = 0
    with HexspecWriter(path, shape, config=None, source=url, frames=True, events=False, spectra=False,
                       detector=sim.detector, frame_compression=args.compression) as writer:
        truth_group = writer.f["entry/results"].create_group("truth")
        pg = truth_group.create_group("photons")
        pds = {name: pg.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(65536,),
                                       compression="gzip", compression_opts=1)
               for name, dt in _PHOTON_FIELDS}
        done = 0
        truth = None
        while done < args.frames:
            k = min(args.batch, args.frames - done)
            batch, truth = sim.frames(k)
            writer.write_frames(batch)
            n0 = pds["frame"].shape[0]
            m = len(truth.photons)
            for name, _ in _PHOTON_FIELDS:
                pds[name].resize(n0 + m, axis=0)
                pds[name][n0:] = getattr(truth.photons, name)
            photons_written += m
            incident += truth.n_incident
            transmitted += truth.n_transmitted
            done += k
            writer.set_acquisition(frames_received=done, first_frame=0, last_frame=done - 1)
            writer.flush()
            prog.update(frames=done, photons=photons_written)
        if truth is None:   # zero frames asked for: still record the maps
            _, truth = sim.frames(0)
        for name, arr in _truth_maps(sim, truth).items():
            truth_group[name] = arr
        truth_group["gradients"].attrs["units"] = "keV/ADU"
        truth_group["intercepts"].attrs["units"] = "keV"
        truth_group["noise_fwhm_kev"].attrs["units"] = "keV"
        if "theta_rad" in truth_group:
            truth_group["theta_rad"].attrs["units"] = "rad"
        attrs = {"source": args.source, "seed": args.seed, "photons_per_frame": sim.photons_per_frame,
                 "e1_kev": args.e1 if args.source == "compton" else float("nan"),
                 "li_content": args.li_content if args.source == "compton" else float("nan"),
                 "noise_fwhm_kev": args.noise_fwhm, "photon_rate_hz": sim.photons_per_frame * sim.detector.frame_rate_hz,
                 "cloud_fwhm_um": truth.cloud_fwhm_um, "photons_incident": incident,
                 "photons_transmitted": transmitted, "photons_absorbed": photons_written,
                 "description": "simulation ground truth: E [keV] = ADU * gradient + intercept"}
        for k, v in attrs.items():
            truth_group.attrs[k] = v
        writer.write_results("calibration", {"gradients": truth.gradients, "intercepts": truth.intercepts},
                             {"origin": "simulation truth", "seed": args.seed})
    return photons_written


def _write_bin(args, sim, path, prog):
    from ..io.calfiles import write_map

    photons = 0
    truth = None
    done = 0
    with open(path, "wb") as fh:
        while done < args.frames:
            k = min(args.batch, args.frames - done)
            batch, truth = sim.frames(k)
            batch.frames.astype("<u2", copy=False).tofile(fh)
            photons += len(truth.photons)
            done += k
            prog.update(frames=done, photons=photons)
    stem = Path(args.output).with_suffix("")
    write_map(f"{stem}_gradients.txt", sim.gradients)
    write_map(f"{stem}_intercepts.txt", sim.intercepts)
    return photons


def run(args) -> int:
    if args.frames < 0:
        raise ConfigError(f"--frames: expected a number of frames >= 0, found {args.frames}")
    if args.batch < 1:
        raise ConfigError(f"--batch-size: expected >= 1, found {args.batch}")
    path = Path(args.output)
    suffix = path.suffix.lower()
    if suffix not in (".h5", ".hdf5", ".nxs", ".bin"):
        raise ConfigError(f"-o {args.output}: expected a .h5 (hexspec HDF5) or .bin (GigE raw) file name")
    sim = simulator_from_args(args)
    prog = Progress("simulate", quiet=args.quiet, total=args.frames)
    writer = _write_bin if suffix == ".bin" else _write_h5
    with atomic_output(path, (), args.force) as tmp:
        photons = writer(args, sim, tmp, prog)
    prog.close(frames=args.frames, photons=photons)
    extra = "" if suffix != ".bin" else f" (true calibration: {path.with_suffix('')}_gradients.txt, _intercepts.txt)"
    print(f"{source_url(args)}: {args.frames} frames, {photons} photons absorbed -> {path}{extra}")
    return 0
