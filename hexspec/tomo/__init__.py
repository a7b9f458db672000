"""hexspec.tomo: the X-ray CT companion (extra ``tomo``).

Stage-named modules in the spirit of algotom, each a set of plain functions over numpy
arrays:

    io        read_dataexchange, TIFF stacks, NumPy files; volumes to hexspec HDF5
    prep      flat/dark normalisation, -log, zingers, stripes/rings, centre, 360->180, Paganin
    rec       filtered back projection (and astra's iterative methods where installed)
    segment   median, opening, thresholds, largest component, unsharp mask, phases
    quantify  volume fractions, porosity per depth region, surface area, REV (re-exports tortuosity)
    diffusion tortuosity (steady diffusion in the pores) and the reference study's impedance
    particles particle sizes and sphericity
    register  XCT projections onto the Compton map grid (SimpleITK, phase correlation)
    correlate per-region tables, overlays and scatter of Li content against porosity

Axes: volumes are (z, y, x) = (slices, rows, cols); projections (angles, rows, cols).
"""

from importlib import import_module as _import_module

#: public name -> submodule that defines it (loaded on first use, so that
#: ``import hexspec.tomo`` needs none of the optional libraries)
_NAMES = {
    "read_dataexchange": "io",
    "reconstruct": "rec",
    "tortuosity": "quantify",
    "specific_surface_area": "quantify",
    "impedance": "diffusion",
    "register": "register",
}
# a submodule must not share a public function's name: importing it would set the
# package attribute to the module (so tortuosity and impedance live in diffusion)
_SUBMODULES = {"io", "prep", "rec", "segment", "quantify", "diffusion", "particles", "register", "correlate"}

__all__ = sorted(set(_NAMES) | _SUBMODULES)


def __getattr__(name):
    if name in _NAMES:
        value = getattr(_import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = _import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'hexspec.tomo' has no attribute {name!r}")
    globals()[name] = value
    return value
