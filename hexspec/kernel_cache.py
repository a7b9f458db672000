"""Which numba kernels of hexspec are compiled and cached, and the one-line notice when they are not.

The kernels are compiled with ``cache=True``: the first run of a command compiles those it
uses (about a minute on a small machine) and later runs load them from ``__pycache__``.
The command line calls :func:`notice_if_cold` before every command; ``hexspec selftest``
compiles everything ahead. This module imports nothing of hexspec, so the command line can
use it without loading any command.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

#: a numba decorator and its options
# "@njit(...)" decorators and "name = njit(...)(formula)" compiled twins of plain formulas
_DECORATOR = re.compile(r"(?:@|=\s*)(?:numba\.)?(?:njit|jit)\(([^)]*)\)")

def kernel_modules() -> list:
    """Source files of hexspec (and its sub-packages) that hold cached numba kernels."""
    out = []
    for pkg in ("hexspec", "hexspec.calibration", "hexspec.sim", "hexspec.drivers"):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            for path in sorted(Path(root).rglob("*.py")):
                try:
                    text = path.read_text(encoding="utf-8")
                except OSError:
                    continue
                # functions inlined into their callers (inline="always") have no cache of their own
                if any("cache=True" in o and 'inline="always"' not in o for o in _DECORATOR.findall(text)):
                    out.append(path)
    return sorted(set(out))


def cold_modules(modules=None) -> list:
    """The kernel modules whose numba cache is missing or older than their source.

    numba writes ``__pycache__/<module>.<function>-<line>.pyXY.nbi`` index files next to
    the source and recompiles when the source is newer; a module with no such index, or
    only older ones, will compile on first use. (With NUMBA_CACHE_DIR set the cache is
    elsewhere and nothing is reported.)
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return []
    cold = []
    for src in (kernel_modules() if modules is None else modules):
        src = Path(src)
        idx = list((src.parent / "__pycache__").glob(f"{src.stem}.*.nbi"))
        if not idx or max(p.stat().st_mtime for p in idx) < src.stat().st_mtime:
            cold.append(src)
    return cold


def chain_kernel_modules() -> list:
    """Kernel modules of the processing chain every frame-processing command runs (events,
    spectra, fits, Compton): the ones whose first compile costs the minute. The viewer's,
    the simulator's and the tomography kernels compile in seconds when first used, and are
    left out so that the notice is not repeated by commands that never use them."""
    root = Path(__file__).resolve().parent
    return [m for m in kernel_modules() if m.parent in (root, root / "compton", root / "fit")]


def notice_if_cold(stream=None, modules=None) -> bool:
    """Say in one line (on stderr) that numba kernels are about to be compiled, if they are."""
    cold = cold_modules(chain_kernel_modules() if modules is None else modules)
    if not cold:
        return False
    names = ", ".join(p.stem for p in cold[:4]) + (", ..." if len(cold) > 4 else "")
    print(f"hexspec: compiling numba kernels ({names}) on this first run, which takes up to a minute; later runs "
          "start at once (`hexspec selftest` compiles them ahead)", file=stream or sys.stderr, flush=True)
    return True
