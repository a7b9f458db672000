"""Save a correlation: HDF5 results, a CSV table, PNG figures and one HTML page showing them.

Files written into the output directory (refused when present unless ``force``):

    correlation.h5        /entry/results/correlation (maps, pixel fit) + correlation_regions (table)
    regions.csv           one row per depth region (and per state, when given)
    overlay.png           per region: Compton image, registered porosity, their overlay, Li map
    scatter.png           Li content (or S) against local porosity, pixel by pixel, fitted line and band
    report.html           the tables and both figures on one page (figures embedded)
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError

FILES = ("correlation.h5", "regions.csv", "overlay.png", "scatter.png", "report.html")


def check_outputs(out_dir, names=FILES, force=False):
    """Refuse to overwrite existing outputs (one line naming them) unless ``force``."""
    out = Path(out_dir)
    present = [n for n in names if (out / n).exists()]
    if present and not force:
        raise ConfigError(f"{out}: would overwrite {', '.join(present)}; pass --force to replace them")
    out.mkdir(parents=True, exist_ok=True)
    for n in present:
        (out / n).unlink()
    return out


def _fmt(v, digits=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def region_rows(corr):
    """The per-region table as a list of dicts (what regions.csv and the HTML page show)."""
    return [r.to_dict() for r in corr.regions]


def save_png_overlay(path, corr, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(corr.regions)
    fig, axes = plt.subplots(n, 4, figsize=(12, 3.0 * n), squeeze=False)
    for k, row in enumerate(corr.regions):
        comp, por, li = corr.compton_image[k], corr.porosity[k], corr.li[k]
        mask = corr.pixel_mask[k]
        panels = [(comp, "Compton image (counts)", "gray"),
                  (np.where(corr.electrode_fraction[k] > 0.5, por, np.nan), "XCT porosity, registered", "viridis")]
        for j, (img, name, cmap) in enumerate(panels):
            im = axes[k, j].imshow(img, cmap=cmap)
            fig.colorbar(im, ax=axes[k, j], fraction=0.046)
            axes[k, j].set_title(f"region {row.region}: {name}", fontsize=8)
        axes[k, 2].imshow(comp, cmap="gray")
        if np.isfinite(por).any() and mask.any():
            levels = np.nanpercentile(por[mask], [25, 50, 75])
            if np.ptp(levels) > 0:
                axes[k, 2].contour(np.where(mask, por, np.nan), levels=np.unique(levels), colors=["c", "y", "r"],
                                   linewidths=0.8)
        axes[k, 2].set_title("overlay: porosity quartiles on Compton", fontsize=8)
        quantity = "Li content 1-x" if corr.meta.get("fit_of") == "li" else "S"
        shown = li if corr.meta.get("fit_of") == "li" else corr.s[k]
        shown = np.where(mask, shown, np.nan)
        lim = np.nanpercentile(shown, [5, 95]) if np.isfinite(shown).any() else (0, 1)
        im = axes[k, 3].imshow(shown, cmap="plasma", vmin=lim[0], vmax=lim[1])
        fig.colorbar(im, ax=axes[k, 3], fraction=0.046)
        axes[k, 3].set_title(f"{quantity} (pixels used)", fontsize=8)
        for ax in axes[k]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_png_scatter(path, corr, title="", truth=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y, e, reg = corr.scatter()
    fit = corr.fit
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for k in np.unique(reg):
        m = reg == k
        ax.errorbar(x[m], y[m], yerr=e[m], fmt=".", ms=2, alpha=0.35, elinewidth=0.3, label=f"region {k} pixels")
    xs = np.linspace(np.nanmin(x), np.nanmax(x), 100)
    ax.plot(xs, fit(xs), "k-", lw=1.5,
            label=f"weighted fit: slope {fit.slope:.3f} +- {fit.slope_err:.3f}, chi2/dof {fit.chi2 / max(fit.dof, 1):.2f}")
    band = fit.band(xs)
    ax.fill_between(xs, fit(xs) - band, fit(xs) + band, color="0.6", alpha=0.5, label="1-sigma confidence band")
    if truth is not None:
        ax.plot(xs, truth(xs), "r--", lw=1, label="true relation")
    for row in corr.regions:
        v = row.li if corr.meta.get("fit_of") == "li" else row.s
        ve = row.li_err if corr.meta.get("fit_of") == "li" else row.s_err
        ax.errorbar([row.porosity], [v], yerr=[ve], xerr=[row.porosity_err if math.isfinite(row.porosity_err) else 0],
                    fmt="D", ms=7, mec="k", color="w", zorder=5)
    ax.set_xlabel("local porosity (XCT, per Compton pixel)")
    ax.set_ylabel("Li content 1 - x" if corr.meta.get("fit_of") == "li" else "S-parameter")
    ax.legend(fontsize=7)
    ax.set_title(title or "pixel-by-pixel correlation (diamonds: region means)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_csv(path, rows):
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in r.items()})


def write_hdf5(path, corr, extra_attrs=None):
    from ..io import hdf5
    x, y, e, reg = corr.scatter()
    hdf5.write_results(path, "correlation",
                       {"porosity": corr.porosity, "electrode_fraction": corr.electrode_fraction,
                        "compton_image": corr.compton_image, "s": corr.s, "li": corr.li, "li_err": corr.li_err,
                        "pixel_mask": corr.pixel_mask.astype(np.uint8), "scatter_porosity": x, "scatter_value": y,
                        "scatter_err": e, "scatter_region": reg.astype(np.int32)},
                       {"fit": json.dumps(corr.fit.to_dict()), "meta": json.dumps(corr.meta),
                        **(extra_attrs or {})})
    rows = region_rows(corr)
    arrays = {k: np.array([r[k] for r in rows], dtype=np.float64)
              for k in ("region", "porosity", "porosity_err", "tortuosity", "s", "s_err", "li", "li_err", "pixels")}
    hdf5.write_results(path, "correlation_regions", arrays, {"table": json.dumps(rows)})


def img_tag(path):
    """An <img> tag holding the PNG at ``path`` (base64), so that the page travels alone."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def html_table(rows, columns):
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append(f"<td>{html.escape(_fmt(v) if isinstance(v, float) else str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_html(path, title, sections):
    """One self-contained page: ``sections`` is a list of (heading, html fragment)."""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:3px 8px;text-align:right}th{background:#eee}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, fragment in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{fragment}")
    parts.append("</body></html>")
    Path(path).write_text("".join(parts))


def save_correlation(corr, out_dir, force=False, title="hexspec correlation", truth=None):
    """Write all of FILES for one correlation into ``out_dir``; returns the paths."""
    out = check_outputs(out_dir, FILES, force)
    write_hdf5(out / "correlation.h5", corr)
    rows = region_rows(corr)
    write_csv(out / "regions.csv", rows)
    save_png_overlay(out / "overlay.png", corr, title)
    save_png_scatter(out / "scatter.png", corr, truth=truth)
    fit = corr.fit
    fit_line = (f"<p>{html.escape(corr.meta.get('fit_of', 'li'))} = {fit.intercept:.4f} (+- {fit.intercept_err:.4f}) "
                f"+ {fit.slope:.4f} (+- {fit.slope_err:.4f}) x porosity; chi2 = {fit.chi2:.1f} for {fit.dof} "
                f"degrees of freedom, {fit.n} pixels</p>")
    columns = ["region", "depth_mm", "porosity", "porosity_err", "tortuosity", "s", "s_err", "li", "li_err", "pixels",
               "shift_px", "angle_deg", "registration_quality"]
    write_html(out / "report.html", title,
               [("Depth regions", html_table(rows, columns)), ("Pixel correlation", fit_line + img_tag(out / "scatter.png")),
                ("Maps and overlays", img_tag(out / "overlay.png"))])
    return {n: out / n for n in FILES}
