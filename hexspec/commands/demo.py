"""`hexspec demo`: the whole correlative experiment on a virtual coin-cell cathode, every photon through frames.

The stages live in :mod:`hexspec.experiment` (read its docstring); this command runs them,
prints recovered against true values per state and depth region, and writes into -o DIR:

    results.h5     per-state correlation maps (porosity, S, 1-x, truth) and fits
    xct.h5         the reconstructed volume with the segmented pore and electrode masks
    summary.json   one record per state and region: state, region, porosity_true, porosity,
                   s, s_err, li_true, li, li_err (and tortuosity, registration, pixels)
    run.json       per measurement: frames simulated, photons simulated, events counted into
                   its cube (= the cube's total counts); stage times; settings
    report.html    the table and the figures on one page; overlay_<state>.png, scatter_<state>.png
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..io.outputs import add_force_option
from .common import add_quiet_option

OUTPUTS = ("results.h5", "xct.h5", "summary.json", "run.json", "report.html", "overlay_charged.png",
           "overlay_discharged.png", "scatter_charged.png", "scatter_discharged.png")


def register(sub) -> None:
    p = sub.add_parser("demo", help="simulate a correlative XCT + XCS-I study of a cathode and recover porosity and Li",
                       description="Simulate a coin-cell cathode (porosity falling from the separator to the current "
                       "collector), its XCT (projections -> reconstruction -> segmentation) and XCS-I of three depth "
                       "regions in a charged and a discharged state (every photon through frames -> events -> spectra), "
                       "calibrate S against references of known Li content, register and correlate, and print "
                       "recovered against true porosity, S and Li content.")
    p.add_argument("-o", "--output", default="hexspec-demo", help="output directory (default ./hexspec-demo)")
    p.add_argument("--quick", action="store_true", help="about 10x fewer photons (for tests; larger uncertainties)")
    p.add_argument("--seed", type=int, default=2024, help="random seed (default 2024)")
    add_force_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)


def _progress(quiet):
    """One redrawn line per measurement on a terminal (frames done / total); nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        return None
    last = {"t": 0.0}

    def show(label, done, total):
        now = time.perf_counter()
        if now - last["t"] > 0.25 or done == total:
            last["t"] = now
            sys.stderr.write(f"\r  {label}: {done:,}/{total:,} frames" + (" " * 10 if done < total else "\n"))
            sys.stderr.flush()
    return show


def print_table(records, say):
    say(f"  {'state':<11}{'region':>6} {'porosity true':>14} {'porosity':>16} {'S':>19} {'1-x true':>9} "
        f"{'1-x':>15} {'pull':>6}")
    for r in records:
        pull = (r["li"] - r["li_true"]) / r["li_err"]
        por_err = r["porosity_err"] if math.isfinite(r["porosity_err"]) else float("nan")
        say(f"  {r['state']:<11}{r['region']:>6} {r['porosity_true']:14.3f} {r['porosity']:8.3f} +- {por_err:.3f} "
            f"{r['s']:.5f} +- {r['s_err']:.5f} {r['li_true']:9.3f} {r['li']:7.3f} +- {r['li_err']:.3f} {pull:6.2f}")


def run(args) -> int:
    from .. import experiment
    from ..tomo import report

    out = Path(args.output)
    present = [n for n in OUTPUTS if (out / n).exists()]
    if present and not args.force:
        raise ConfigError(f"{out}: would overwrite {', '.join(present)} from an earlier run; pass --force or choose -o")
    out.mkdir(parents=True, exist_ok=True)
    for n in present:
        (out / n).unlink()
    say = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    t0 = time.perf_counter()
    say(f"hexspec demo{' --quick' if args.quick else ''}: virtual coin-cell cathode, XCT + XCS-I at "
        f"{experiment.E1_KEV:g} keV, every photon through frames -> events -> spectra (seed {args.seed})")
    result = experiment.run(out, quick=args.quick, seed=args.seed, say=say, progress=_progress(args.quiet))

    t = time.perf_counter()
    sections = []
    for state, corr in result.correlations.items():
        report.save_png_overlay(out / f"overlay_{state}.png", corr, title=f"{state} cathode")
        a, b = experiment.STATES[state]
        report.save_png_scatter(out / f"scatter_{state}.png", corr, truth=lambda p, a=a, b=b: a + b * p,
                                title=f"{state}: 1-x against local porosity, per 4 x 4-pixel block")
        f = corr.fit
        sections.append((f"{state}: pixel correlation",
                         f"<p>1-x = {f.intercept:.3f} (+- {f.intercept_err:.3f}) + {f.slope:.3f} (+- {f.slope_err:.3f})"
                         f" x porosity over {f.n} pixels (true: {a} {b:+} x porosity)</p>"
                         + report.img_tag(out / f"scatter_{state}.png")))
        sections.append((f"{state}: maps and overlays", report.img_tag(out / f"overlay_{state}.png")))
    columns = ["state", "region", "porosity_true", "porosity", "porosity_err", "tortuosity", "s", "s_err", "li_true",
               "li", "li_err", "pixels", "shift_px", "angle_deg"]
    report.write_html(out / "report.html", "hexspec demo: correlative XCT and XCS-I of a virtual cathode",
                      [("Recovered against true, per state and depth region", report.html_table(result.records, columns))]
                      + sections)
    (out / "summary.json").write_text(json.dumps(result.records, indent=2))
    stage = dict(result.stage_seconds, report=time.perf_counter() - t)
    stage["total"] = time.perf_counter() - t0
    run_info = {**result.info, "measurements": result.measurements,
                "stage_seconds": {k: round(v, 2) for k, v in stage.items()}}
    (out / "run.json").write_text(json.dumps(run_info, indent=2, default=float))

    say("")
    say("  recovered against true (1-x from the references' S over the same pixels):")
    print_table(result.records, say)
    say("")
    say("  stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage.items()))
    say(f"  wrote {out}/: results.h5, xct.h5, summary.json, run.json, report.html and PNGs")
    return 0
