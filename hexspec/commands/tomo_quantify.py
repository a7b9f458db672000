"""`hexspec tomo quantify`: Table-1-style figures per depth region of a segmented electrode."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.outputs import add_force_option, check_output

AXES = {"z": 0, "y": 1, "x": 2}
#: slices of a region that the electrode fills less than this are left out of the diffusion solves
SOLVE_FILL = 0.9

COLUMNS = [  # (key, header, unit)
    ("region", "region", ""),
    ("start_voxel", "start", "voxel"),
    ("stop_voxel", "stop", "voxel"),
    ("porosity_vol_percent", "porosity", "vol%"),
    ("binder_vol_percent", "binder", "vol%"),
    ("active_vol_percent", "active", "vol%"),
    ("tau_through", "tau through", ""),
    ("tau_in_plane", "tau in-plane", ""),
    ("d_eff_through", "D_eff through", "D units"),
    ("d_eff_in_plane", "D_eff in-plane", "D units"),
    ("ssa_per_um", "SSA", "um^2/um^3"),
    ("non_percolating_percent", "isolated pores", "% of pores"),
]


def register(sub) -> None:
    p = sub.add_parser("quantify", help="porosity, tortuosity, effective diffusivity and surface area per depth region",
                       description="Cut the electrode of a segmentation (from `hexspec tomo segment`) into N equal "
                                   "regions along its thickness and give each region's porosity (pore volume / "
                                   "electrode volume), tortuosity factor through the thickness and in-plane (mean of "
                                   "the two lateral axes; TauFactor's definitions: steady diffusion in the pores, "
                                   "Dirichlet faces, no-flux walls, tau = eps D / D_eff), effective diffusivity "
                                   "D_eff = D eps / tau for the bulk D given, and the pore/solid specific surface "
                                   "area (area per region volume; method stated). Writes PREFIX.csv, PREFIX.h5 "
                                   "(NeXus-flavoured), PREFIX_porosity_maps.png (lateral porosity of each region) "
                                   "and PREFIX_regions.png.")
    p.add_argument("segmentation", help="segmentation file (hexspec HDF5 from `hexspec tomo segment`)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR_OR_PREFIX",
                   help="output prefix, or a directory (ending in / or existing) for quantify.* inside it")
    p.add_argument("--regions", type=int, default=3, help="number of equal depth regions (default 3)")
    p.add_argument("--axis", choices=tuple(AXES), default="z", help="thickness axis of the volume (default z)")
    p.add_argument("--d-bulk", type=float, default=1.0, help="bulk diffusivity D (any unit; D_eff has the same; default 1)")
    p.add_argument("--ssa-method", choices=("marching_cubes", "faces"), default="marching_cubes",
                   help="surface area by smoothed marching cubes or voxel-face counting (~1.5x higher) (default marching_cubes)")
    p.add_argument("--no-tortuosity", action="store_false", dest="tortuosity", help="skip the diffusion solves")
    p.add_argument("--impedance", action="store_true",
                   help="also simulate each region's diffusion impedance through the thickness (PREFIX_nyquist.png)")
    add_force_option(p)
    p.set_defaults(func=run)


def output_paths(output) -> dict:
    text = str(output)
    path = Path(text)
    prefix = path / "quantify" if (text.endswith(("/", "\\")) or path.is_dir()) else path
    names = {"csv": ".csv", "h5": ".h5", "maps_png": "_porosity_maps.png", "regions_png": "_regions.png",
             "nyquist_png": "_nyquist.png"}
    return {k: prefix.parent / (prefix.name + v) for k, v in names.items()}


def quantify_regions(labels, voxel_size_mm, n_regions, axis, d_bulk, ssa_method, do_tortuosity=True,
                     do_impedance=False):
    """Rows of the region table, the RegionPorosity, and impedance spectra (if asked)."""
    from ..tomo.quantify import phase_volume_fractions, porosity_by_region, surface_area, tortuosity
    electrode = labels > 0
    pores = labels == 1
    reg = porosity_by_region(pores, electrode, n_regions, axis)
    other = [a for a in range(3) if a != axis]
    rows, spectra = [], []
    for i, (start, stop) in enumerate(reg.bounds):
        sl = [slice(None)] * 3
        sl[axis] = slice(int(start), int(stop))
        el = electrode[tuple(sl)]
        # crop to the electrode's lateral bounding box: the solves see electrode, not the air around it
        for a in other:
            present = np.flatnonzero(el.any(axis=tuple(b for b in range(3) if b != a)))
            sl[a] = slice(int(present[0]), int(present[-1]) + 1)
        sub_pores = pores[tuple(sl)]
        eps = float(reg.porosity[i])
        # the diffusion solves need faces inside the electrode: drop end slices that the
        # electrode fills less than SOLVE_FILL of (the rough surface, whose open pores
        # belong to the outside), else no pore path would reach the Dirichlet faces
        fill = electrode[tuple(sl)].mean(axis=tuple(other))
        dense = np.flatnonzero(fill >= SOLVE_FILL)
        solve_sl = [slice(None)] * 3
        if dense.size:
            solve_sl[axis] = slice(int(dense[0]), int(dense[-1]) + 1)
        solve_pores = sub_pores[tuple(solve_sl)]
        sa = surface_area(sub_pores, spacing=voxel_size_mm, method=ssa_method)
        row = {"region": i + 1, "start_voxel": int(start), "stop_voxel": int(stop),
               "porosity_vol_percent": 100 * eps, "ssa_per_um": sa.specific_surface_area / 1000.0}
        if labels.max() == 3:      # pore / binder / active segmentation: their fractions too
            fr = phase_volume_fractions(labels[tuple(sl)], {"binder": 2, "active": 3})
            row.update({f"{k}_vol_percent": 100 * v for k, v in fr.items()})
        if do_tortuosity:
            through = tortuosity(solve_pores, axis=axis, d_bulk=d_bulk)
            lateral = [tortuosity(solve_pores, axis=a, d_bulk=d_bulk) for a in other]
            row["solve_slices"] = int(solve_pores.shape[axis])
            tau_in = float(np.mean([r.tau for r in lateral]))
            row.update({"tau_through": through.tau, "tau_in_plane": tau_in,
                        "tau_" + "zyx"[other[0]]: lateral[0].tau, "tau_" + "zyx"[other[1]]: lateral[1].tau,
                        "d_eff_through": d_bulk * eps / through.tau if np.isfinite(through.tau) else 0.0,
                        "d_eff_in_plane": d_bulk * eps / tau_in if np.isfinite(tau_in) else 0.0,
                        "non_percolating_percent": 100 * through.non_percolating_fraction})
        if do_impedance:
            from ..tomo.diffusion import impedance
            from ..tomo.diffusion import percolating_pores
            if percolating_pores(solve_pores, axis).any():
                spectra.append(impedance(solve_pores, axis=axis, d_bulk=d_bulk,
                                         voxel_size_mm=float(voxel_size_mm[axis]), n_frequencies=13))
            else:
                spectra.append(None)   # no pore path through the region: infinite impedance
        rows.append(row)
    return rows, reg, spectra


def format_table(rows, ssa_method, d_bulk) -> str:
    cols = [c for c in COLUMNS if c[0] in rows[0]]
    head = [(f"SSA {ssa_method}" if k == "ssa_per_um" else h) + (f" ({u})" if u else "") for k, h, u in cols]
    body = []
    for r in rows:
        body.append([f"{r[k]:.1f}" if k.endswith("_percent")
                     else f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k, _, _ in cols])
    width = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, width))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, width)) for b in body]
    lines.append(f"SSA: pore/solid interface area per region volume, method {ssa_method}; D_eff = D eps / tau "
                 f"with D = {d_bulk:g}")
    return "\n".join(lines)


def run(args) -> int:
    from ..tomo.io import read_volume

    if args.regions < 1:
        raise ConfigError(f"--regions: expected a whole number >= 1, found {args.regions}")
    if args.d_bulk <= 0:
        raise ConfigError(f"--d-bulk: expected a positive diffusivity, found {args.d_bulk}")
    paths = output_paths(args.output)
    wanted = [k for k in paths if k != "nyquist_png" or args.impedance]
    for k in wanted:
        check_output(paths[k], [args.segmentation], args.force)
    vol = read_volume(args.segmentation)
    labels = vol.data
    if labels.dtype.kind not in "iu" or labels.max(initial=0) > 3:
        raise ConfigError(f"{args.segmentation}: expected phase labels 0-3 (uint8, from `hexspec tomo segment`), "
                          f"found dtype {labels.dtype} with values up to {labels.max(initial=0)}")
    if not (labels == 1).any():
        raise ConfigError(f"{args.segmentation}: no pore voxel (label 1) in the segmentation")
    axis = AXES[args.axis]
    rows, reg, spectra = quantify_regions(labels, vol.voxel_size_mm, args.regions, axis, args.d_bulk,
                                          args.ssa_method, args.tortuosity, args.impedance)
    paths["csv"].parent.mkdir(parents=True, exist_ok=True)
    print(f"{args.segmentation}: {args.regions} regions along {args.axis}, voxel "
          f"{vol.voxel_size_mm[axis] * 1000:g} um")
    print(format_table(rows, args.ssa_method, args.d_bulk))
    _write_csv(paths["csv"], rows, args)
    _write_h5(paths["h5"], rows, reg, spectra, vol, args)
    from ..plots import save_depth_regions_png, save_porosity_maps_png, save_region_nyquist_png

    save_porosity_maps_png(paths["maps_png"], reg, args.axis)
    save_depth_regions_png(paths["regions_png"], rows, args.ssa_method)
    if args.impedance:
        save_region_nyquist_png(paths["nyquist_png"], spectra)
    print("wrote " + ", ".join(str(paths[k]) for k in wanted))
    return 0


def _write_csv(path, rows, args):
    keys = list(rows[0])
    with open(path, "w", newline="") as f:
        f.write(f"# hexspec tomo quantify; ssa_method={args.ssa_method}; d_bulk={args.d_bulk:g}; axis={args.axis}; "
                f"ssa in um^2/um^3 (area per region volume); tau by TauFactor's definitions\n")
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _write_h5(path, rows, reg, spectra, vol, args):
    import h5py

    from .. import __version__
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "regions", "program": "hexspec",
                            "version": __version__, "created": datetime.now(timezone.utc).isoformat()})
        g = entry.create_group("regions")
        g.attrs.update({"NX_class": "NXdata", "signal": "porosity_vol_percent", "axes": ["region"],
                        "ssa_method": args.ssa_method, "d_bulk": args.d_bulk})
        for k in rows[0]:
            d = g.create_dataset(k, data=np.array([r[k] for r in rows]))
            unit = {"porosity_vol_percent": "vol%", "ssa_per_um": "um^2/um^3", "start_voxel": "voxel",
                    "stop_voxel": "voxel", "non_percolating_percent": "%"}.get(k)
            if unit:
                d.attrs["units"] = unit
        m = entry.create_group("porosity_maps")
        m.attrs.update({"NX_class": "NXdata", "signal": "data", "axes": ["region", ".", "."]})
        m.create_dataset("data", data=reg.maps, compression="gzip")
        m.create_dataset("region", data=np.arange(1, len(rows) + 1))
        m.create_dataset("bounds_voxel", data=reg.bounds)
        for i, s in enumerate(spectra):
            if s is None:
                continue
            z = entry.create_group(f"impedance_region_{i + 1}")
            z.attrs.update({"NX_class": "NXdata", "signal": "z_norm_real", "axes": ["omega_ratio"],
                            "omega_c_rad_s": s.omega_c_rad_s, "normalisation": "Z~ = Z A D / L"})
            z.create_dataset("omega_ratio", data=s.omega_ratio)
            z.create_dataset("frequency", data=s.frequencies_hz).attrs["units"] = "Hz"
            z.create_dataset("z_norm_real", data=s.z_norm.real)
            z.create_dataset("z_norm_imag", data=s.z_norm.imag)
        p = entry.create_group("quantify")
        p.attrs.update({"NX_class": "NXprocess", "program": "hexspec", "version": __version__,
                        "command": " ".join(sys.argv), "input": str(Path(args.segmentation).resolve()),
                        "regions": args.regions, "axis": args.axis, "d_bulk": args.d_bulk,
                        "ssa_method": args.ssa_method, "voxel_size_mm": list(vol.voxel_size_mm),
                        "input_process": json.dumps(vol.process, default=str)})
