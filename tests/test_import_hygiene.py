"""Import structure: no cycles among the modules, and reading files loads no numba kernel."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

import hexspec as hx

ROOT = Path(__file__).resolve().parents[1]
# the installed package layout (pyproject [tool.setuptools.package-dir])
PACKAGES = {"hexspec": ROOT / "hexspec", "hexspec.drivers": ROOT / "drivers",
            "hexspec.calibration": ROOT / "calibration", "hexspec.sim": ROOT / "sim"}


def _modules():
    """{module name: path} of every module of the installed package."""
    out = {}
    for pkg, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            name = ".".join((pkg,) + rel)
            if pkg == "hexspec" and rel and rel[0] in ("drivers", "calibration", "sim"):
                continue
            out[name] = path
    return out


def _imports(name, path, known):
    """{imported module: True if at module level, False if only inside a function} of ``name``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = {}

    def add(mod, top):
        if mod in known and mod != name and not name.startswith(mod + "."):
            # a submodule importing its own parent package is how Python resolves it, not a cycle
            found[mod] = found.get(mod, False) or top

    def visit(nodes, top):
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(a.name, top)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    mod = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    mod = node.module
                add(mod, top)
                for a in node.names:
                    add(f"{mod}.{a.name}", top)
            inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(ast.iter_child_nodes(node), inner)

    visit(tree.body, True)
    return found


# Imports deferred into a function on purpose, each of a light module back to one that
# needs it only for a convenience method; every other import, deferred or not, counts.
DEFERRED = {
    ("hexspec.cube", "hexspec.io.hdf5"): "SpectralCube.save / load are shortcuts to the file format",
    ("hexspec.cube", "hexspec.spectra"): "SpectralCube.from_events runs the histogram kernel",
    ("hexspec.compton", "hexspec.compton_forward"): "the sideband background uses the forward model's templates",
}


def _cycles(graph):
    """Every elementary cycle's smallest representative found by depth-first search."""
    cycles, state, stack = [], {}, []

    def dfs(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                dfs(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            dfs(v)
    return cycles


def _graph():
    mods = _modules()
    return mods, {m: _imports(m, p, mods) for m, p in mods.items()}


def test_no_module_imports_itself_back_through_others():
    mods, imports = _graph()
    for (src, dst), why in DEFERRED.items():
        if src in imports and dst in imports[src]:
            assert imports[src][dst] is False, f"{src} -> {dst} should be deferred into a function ({why})"
    # A front end may run another through the command line (``hexspec selftest`` calls
    # cli.main) with a deferred import: a loop among front ends loads nothing new.
    graph = {m: {d for d, top in deps.items()
                 if (m, d) not in DEFERRED and not (not top and _front_end(m) and _front_end(d))}
             for m, deps in imports.items()}
    # the edges the two former cycles ran through are still there, now one way only
    assert "hexspec.drivers.base" in graph["hexspec.drivers.zmq"]
    assert "hexspec.config" in graph["hexspec.io.hdf5"]
    assert _cycles(graph) == []


def test_the_driver_base_imports_no_transport_and_open_source_imports_from_both_places():
    from hexspec.drivers import open_source
    from hexspec.drivers.base import open_source as from_base
    assert from_base is open_source
    _, imports = _graph()
    assert not set(imports["hexspec.drivers.base"]) & {
        "hexspec.drivers.zmq", "hexspec.drivers.serial", "hexspec.drivers.files", "hexspec.drivers.replay"}


_READER = """
import sys
import hexspec as hx
path = sys.argv[1]
cube = hx.SpectralCube.load(path)
assert cube.counts.sum() == 6, cube.counts.sum()
cfg = hx.io.hdf5.read_config(path)
assert cfg.cluster_window == 5, cfg
ev = hx.io.hdf5.read_events(sys.argv[2])
assert len(ev) == 3
loaded = sorted(m for m in sys.modules if m in ("hexspec.events", "hexspec.spectra", "hexspec._simd", "numba"))
print(",".join(loaded))
"""


def test_reading_a_cube_and_events_loads_no_event_kernel_and_no_numba(tmp_path):
    counts = np.zeros((2, 3, 4), np.uint32)
    counts[0, 1, 2], counts[1, 2, 0] = 4, 2
    cfg = hx.ProcessingConfig(threshold=10, gradients=0.1, cluster_window=5)
    hx.io.hdf5.write_cube(tmp_path / "cube.h5", hx.SpectralCube(counts, np.arange(5.0)), config=cfg)
    with hx.io.hdf5.HexspecWriter(tmp_path / "events.h5", shape=(2, 3), config=cfg, spectra=False) as w:
        w.write_events(hx.EventList([0, 0, 1], [0, 1, 1], [2, 2, 0], [1.0, 2.0, 3.0]))
    out = subprocess.run([sys.executable, "-c", _READER, str(tmp_path / "cube.h5"), str(tmp_path / "events.h5")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


DATA = {"hexspec", "hexspec.errors", "hexspec.limits", "hexspec.detector", "hexspec.frames", "hexspec.bins", "hexspec.eventlist",
        "hexspec.cube", "hexspec.config"}
KERNELS = {"hexspec._simd", "hexspec.event_stages", "hexspec.events", "hexspec.spectra"}


def _front_end(name):
    return name.startswith("hexspec.commands") or name in ("hexspec.cli", "hexspec.viewer.window", "hexspec.viewer.app")


def test_each_layer_imports_only_its_own_layer_or_below():
    """The layers of docs/architecture.md: data and io below the kernels, front ends on top."""
    _, imports = _graph()
    for name, deps in imports.items():
        deps = {d for d in deps if (name, d) not in DEFERRED}
        if name in DATA or name.startswith("hexspec.io"):
            assert deps <= DATA | {d for d in deps if d.startswith("hexspec.io")}, name
        if name in KERNELS:
            assert deps <= DATA | KERNELS, name
        if not _front_end(name) and not name.startswith("hexspec.viewer"):
            assert not {d for d in deps if _front_end(d)}, name
