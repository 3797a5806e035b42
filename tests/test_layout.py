"""The house: cvflow's imports point down only (no circles, lazy imports included).

The graph is read from the sources with `ast`: every `import` and `from ... import` at
any depth (inside functions too), relative ones resolved, `from pkg import name` taken as
an import of `pkg.name` where that is a module, and any string constant that names a
cvflow submodule (the lazy table of `cvflow/__init__.py`, `importlib.import_module`
arguments). Importing `a.b.c` also runs `a` and `a.b`; those implicit parent imports are
not edges (a package's `__init__` is its front door, and every module passes it).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "cvflow"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _target(name: str, mods) -> str | None:
    """The module `name` refers to: itself, or its longest prefix that is a module."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, mods) -> set[str]:
    """cvflow modules that `module` imports anywhere in its code."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package holding `module`
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in mods else origin for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in mods:  # "cvflow" alone is also a prefix, a program name
            names = [node.value]
        for name in names:
            target = _target(name, mods) if name == "cvflow" or name.startswith("cvflow.") else None
            if target is not None and target != module:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _cycles(graph) -> list[list[str]]:
    """Cycles as paths a -> ... -> a: in each strongly connected component (Tarjan), the
    shortest through each of its modules, without repeats."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:
        for start in sorted(comp):
            path = _path_in(graph, comp, start)
            if not any(set(path) == set(c) for c in cycles):
                cycles.append(path)
    return cycles


def _path_in(graph, comp, start) -> list[str]:
    """A shortest cycle through `start` inside its strongly connected component (breadth first)."""
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def test_cycle_finder_reports_the_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert _cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}) == [["a", "b", "a"], ["c", "a", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_relative_and_string_imports(tmp_path):
    mods = {"cvflow": tmp_path / "__init__.py", "cvflow.x": tmp_path / "x" / "__init__.py",
            "cvflow.x.y": tmp_path / "x" / "y.py", "cvflow.z": tmp_path / "z.py"}
    for p in mods.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    mods["cvflow.x.y"].write_text("def f():\n    from . import __name__\n    from ..z import g\n")
    mods["cvflow.x"].write_text("from .y import f\nfrom cvflow.x import y\n")
    mods["cvflow"].write_text("LAZY = {'f': 'cvflow.x.y'}\n")
    mods["cvflow.z"].write_text("import cvflow.x.y.f\n")
    assert _imports("cvflow.x.y", mods["cvflow.x.y"], mods) == {"cvflow.x", "cvflow.z"}
    assert _imports("cvflow.x", mods["cvflow.x"], mods) == {"cvflow.x.y"}
    assert _imports("cvflow", mods["cvflow"], mods) == {"cvflow.x.y"}
    assert _imports("cvflow.z", mods["cvflow.z"], mods) == {"cvflow.x.y"}


def test_imports_have_no_cycles():
    graph = _graph()
    assert {"cvflow", "cvflow.api", "cvflow.cli", "cvflow.extraction"} <= set(graph)
    cycles = _cycles(graph)
    assert not cycles, "import cycles (lazy imports included):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_ops_import_nothing_above_them():
    above = ("cvflow.backends", "cvflow.models", "cvflow.api", "cvflow.cli", "cvflow.extraction")
    bad = {m: sorted(t for t in deps if t == "cvflow" or t.startswith(above))
           for m, deps in _graph().items() if m.startswith("cvflow.ops")}
    bad = {m: deps for m, deps in bad.items() if deps}
    assert not bad, f"ops import modules above them: {bad}"


def test_array_helpers_are_at_the_bottom():
    assert _graph()["cvflow.arrays"] == set()
