"""Plot writers of the commands: one PNG per result, for a person to look at.

Every function writes one PNG with matplotlib's Agg backend (no display needed) and
creates the parent folder. The commands import them from here; their old homes in
hexspec.commands.* (fit.save_maps_png, process.save_overview_png, sparam.save_profile_png,
calibrate.write_report_png,
tomo_reconstruct.save_central_slices_png) still re-export them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_overview_png(path, cube, title=None):
    """Count image (all energies) beside the summed spectrum (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11.5, 4.2), gridspec_kw=dict(width_ratios=(1, 1.6), wspace=0.35))
    image = cube.image()
    # percentile limits, so that a few hot pixels do not wash out the image
    vmin, vmax = np.percentile(image, [0.5, 99.5]) if image.size else (0, 1)
    im = a0.imshow(image, cmap="viridis", interpolation="nearest", vmin=vmin, vmax=max(vmax, vmin + 1))
    fig.colorbar(im, ax=a0, label="counts")
    a0.set_xlabel("column")
    a0.set_ylabel("row")
    a0.set_title("count image, all energies", fontsize=10)
    spec = cube.spectrum()
    a1.step(cube.centers, np.maximum(spec, 0.5), where="mid", lw=0.8)
    a1.set_yscale("log")
    a1.set_ylim(0.5, None)
    a1.set_xlabel(f"energy ({cube.unit})")
    a1.set_ylabel("counts per bin")
    a1.set_title("summed spectrum", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_maps_png(path, maps: dict, mask=None, title=None, ncols=3, cmap="viridis", marks=None, marks_label=None):
    """Write a grid of (rows, cols) maps as one PNG; values outside ``mask`` are left blank.

    ``marks``: a boolean map (of any of the maps' shapes) whose True cells get an "x" on
    every map of that shape, e.g. Li values outside the calibrated range.

    Colour limits are the 1st-99th percentiles of the shown values so a few wild pixels
    do not wash out the image.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    # A fixed layout: tight_layout costs more than drawing the maps themselves.
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False,
                             gridspec_kw=dict(left=0.07, right=0.97, bottom=0.08, top=0.88 if title else 0.95,
                                              wspace=0.35, hspace=0.4))
    full_rows = max(np.shape(m)[0] for m in maps.values())
    full_cols = max(np.shape(m)[1] for m in maps.values())
    for ax, (name, arr) in zip(axes.flat, maps.items()):
        a = np.asarray(arr, dtype=np.float64)
        if mask is not None and "ok" not in name and a.shape == np.shape(mask):
            a = np.where(mask, a, np.nan)
        vals = a[np.isfinite(a)]
        vmin, vmax = (np.percentile(vals, [1, 99]) if vals.size else (0.0, 1.0))
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        # Block maps (coarser than the detector) are drawn over the same pixel coordinates.
        im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                       extent=(-0.5, full_cols - 0.5, full_rows - 0.5, -0.5))
        if marks is not None and np.shape(marks) == a.shape and np.any(marks):
            r, c = np.nonzero(marks)
            sy, sx = full_rows / a.shape[0], full_cols / a.shape[1]
            ax.plot((c + 0.5) * sx - 0.5, (r + 0.5) * sy - 0.5, "x", color="red", ms=7, mew=1.5,
                    label=marks_label)
            if marks_label:
                ax.legend(fontsize=6, loc="upper right")
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.85)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title + "  (x: column, y: row)", fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_profile_png(path, profiles: dict, title=None, windows=(1.0, 5.0), pz_max=8.0):
    """Plot Compton profiles J(p_z) with error bands; the S windows are shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, prof in profiles.items():
        x = np.repeat(prof.pz_edges, 2)[1:-1]
        y = np.repeat(prof.J, 2)
        e = np.repeat(prof.J_err, 2)
        ax.plot(x, y, label=name, lw=1.2)
        ax.fill_between(x, y - e, y + e, alpha=0.25, lw=0)
    low, high = windows
    ax.axvspan(-low, low, color="0.85", zorder=0, label=f"S_L |p_z|<{low:g}")
    ax.axvspan(-high, -low, color="0.93", zorder=0)
    ax.axvspan(low, high, color="0.93", zorder=0, label=f"S_H {low:g}<|p_z|<{high:g}")
    ax.set_xlim(-pz_max, pz_max)
    ax.set_xlabel("p_z (a.u.)")
    ax.set_ylabel("J(p_z) (per a.u., unit area)")
    ax.axhline(0, color="k", lw=0.5)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report_png(path, cube_adu, cal) -> None:
    """Maps and histograms of gradient, intercept and FWHM, the good-pixel map and the summed calibrated spectrum."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .calibration.am241 import calibrated_spectrum
    from .calibration.lines import AM241_CALIBRATION_LINES, AM241_ESCAPE_LINES

    good = cal.good
    fig = plt.figure(figsize=(16, 10), layout="constrained")
    grid = fig.add_gridspec(3, 4)
    panels = (("gradients", cal.gradients, "gradient (keV/ADU)"), ("intercepts", cal.intercepts, "intercept (keV)"),
              ("FWHM at 59.54 keV", cal.fwhm_kev, "FWHM (keV)"))
    for k, (title, arr, label) in enumerate(panels):
        shown = np.where(good, arr, np.nan)
        ax = fig.add_subplot(grid[0, k])
        vals = shown[np.isfinite(shown)]
        lo, hi = (np.percentile(vals, [1, 99]) if vals.size else (0, 1))
        im = ax.imshow(shown, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label=label, shrink=0.8)
        ax = fig.add_subplot(grid[1, k])
        if vals.size:
            ax.hist(vals, bins=60)
        ax.set_xlabel(label)
        ax.set_ylabel("pixels")
    ax = fig.add_subplot(grid[0, 3])
    ax.imshow(good, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"good pixels: {cal.n_good} of {good.size}")
    ax = fig.add_subplot(grid[1, 3])
    rc = {k: v for k, v in cal.reason_counts().items() if v}
    ax.barh(list(rc) or ["none"], list(rc.values()) or [0])
    ax.set_xlabel("pixels")
    ax.set_title("rejection reasons")
    ax = fig.add_subplot(grid[2, :])
    if cal.n_good:
        edges, counts = calibrated_spectrum(cube_adu, cal)
        ax.step(edges[:-1], counts, where="post", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(0.5, counts[counts > 0].min() if np.any(counts > 0) else 0.5))
    for line in AM241_CALIBRATION_LINES:
        ax.axvline(line.energy_kev, color="tab:red", lw=0.6, ls="--")
        ax.text(line.energy_kev, 1.0, f" {line.name}", rotation=90, va="top", fontsize=7,
                transform=ax.get_xaxis_transform())
    for line in AM241_ESCAPE_LINES:
        ax.axvline(line.energy_kev, color="tab:gray", lw=0.6, ls=":")
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("counts per 0.1 keV")
    ax.set_title(f"summed calibrated spectrum of the good pixels; {cal.summary()}")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_central_slices_png(volume_path, png_path, title=None):
    """PNG of a volume file's central z slice and, for more than one slice, the central y and x sections (8 slices or more).

    Sections are read from the file one plane at a time, so a volume larger than memory can be shown.
    """
    import h5py
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with h5py.File(volume_path, "r") as f:
        name = f["entry"].attrs["default"]
        d = f[f"entry/{name}/data"]
        nz, ny, nx = d.shape
        units = d.attrs.get("units", "")
        planes = [("z = %d (axial)" % (nz // 2), d[nz // 2])]
        if nz >= 8:   # sections of a few slices would be slivers
            planes += [("y = %d" % (ny // 2), d[:, ny // 2, :]), ("x = %d" % (nx // 2), d[:, :, nx // 2])]
    fig, axes = plt.subplots(1, len(planes), figsize=(max(6.0, 4.2 * len(planes)), 4.6), squeeze=False)
    for ax, (label, img) in zip(axes[0], planes):
        finite = img[np.isfinite(img)]
        lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0, 1)
        im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect="equal")
        ax.set_title(label)
        fig.colorbar(im, ax=ax, fraction=0.046, label=units)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def save_porosity_maps_png(path, reg, axis_name):
    """Porosity map (vol%) of each depth region beside each other, lateral axes in voxels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(reg.porosity)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.4), dpi=100, squeeze=False)
    lateral = [a for a in "zyx" if a != axis_name]
    for i, ax in enumerate(axes[0]):
        im = ax.imshow(100 * reg.maps[i], vmin=0, vmax=100, cmap="viridis")
        ax.set_title(f"region {i + 1}: {100 * reg.porosity[i]:.1f} vol%")
        ax.set_xlabel(f"{lateral[1]} (voxel)")
        if i == 0:
            ax.set_ylabel(f"{lateral[0]} (voxel)")
    fig.colorbar(im, ax=axes[0].tolist(), label="porosity (vol%)")
    fig.savefig(path)
    plt.close(fig)


def save_depth_regions_png(path, rows, ssa_method):
    """Porosity per depth region, and the tortuosity factors (or the specific surface area) beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = [r["region"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    axes[0].bar(x, [r["porosity_vol_percent"] for r in rows])
    axes[0].set_xlabel("depth region")
    axes[0].set_ylabel("porosity (vol%)")
    if "tau_through" in rows[0]:
        axes[1].plot(x, [r["tau_through"] for r in rows], "o-", label="through thickness")
        axes[1].plot(x, [r["tau_in_plane"] for r in rows], "s-", label="in-plane")
        axes[1].set_ylabel("tortuosity factor")
        axes[1].legend()
    else:
        axes[1].plot(x, [r["ssa_per_um"] for r in rows], "o-")
        axes[1].set_ylabel(f"SSA (um^2/um^3, {ssa_method})")
    axes[1].set_xlabel("depth region")
    for ax in axes:
        ax.set_xticks(x)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_region_nyquist_png(path, spectra):
    """Normalised impedance spectra (Nyquist plot) of the depth regions, with the 45-degree line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    top = 0.0
    for i, s in enumerate(spectra):
        if s is None:
            continue
        ax.plot(s.z_norm.real, -s.z_norm.imag, "o-", ms=3, label=f"region {i + 1}")
        top = max(top, float(s.z_norm.real.max()))
    ax.plot([0, top], [0, top], "k--", lw=1, label="45 degrees")
    ax.set_xlabel("Re Z~ (Z A D / L)")
    ax.set_ylabel("-Im Z~")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
