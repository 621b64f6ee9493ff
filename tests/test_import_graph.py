"""The import graph of linflow and deepcheck: no cycle, and linflow never imports torch or deepcheck.

The graph is read from the source with ``ast``: every ``import`` / ``from ... import`` statement anywhere in a module
(top level, inside functions, under ``if TYPE_CHECKING``) and every ``importlib.import_module("...")`` with a
constant name is an edge, so a lazy in-function import that closes a circle counts as a circle. ``from pkg import
name`` is an edge to ``pkg.name`` when that is a module of the tree, else to ``pkg`` itself. Nothing is imported
to build the graph, so the test also holds where torch is absent.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("linflow", "deepcheck")


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the packages (``__init__`` names the package)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) import ``from <level dots><target> import ...``."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module name (absolute) that ``module`` imports, wherever the statement sits."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return found


def import_graph() -> dict[str, set[str]]:
    """Edges between the modules of the packages (imports of anything else are dropped)."""
    files = module_files()
    known = set(files)
    return {mod: {t for t in imports_of(mod, path, known) if t in known and t != mod} for mod, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed graph, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_cycle_finder_finds_cycles():
    """The checker itself can fail: a lazy import back (b -> a) closes a circle that it reports."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y2"}, "y2": {"y"}}) == ["y", "y2", "y"]


def test_imports_are_read_everywhere(tmp_path):
    """In-function, relative and ``from pkg import submodule`` imports are all edges."""
    src = "from . import b\nfrom .c import f\ndef g():\n    from ..top import h\n    import importlib\n" \
          "    importlib.import_module('pkg.d')\n"
    path = tmp_path / "a.py"
    path.write_text(src)
    known = {"pkg.sub.a", "pkg.sub.b", "pkg.sub.c", "pkg.top", "pkg.d", "pkg.sub"}
    assert imports_of("pkg.sub.a", path, known) >= {"pkg.sub.b", "pkg.sub.c", "pkg.top", "pkg.d", "importlib"}


def test_linflow_and_deepcheck_have_no_import_cycle():
    graph = import_graph()
    assert "linflow.perturb" in graph and "linflow.box" in graph  # the walk saw the modules
    assert "linflow.box" in graph["linflow.perturb"]  # ... and the edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_linflow_never_imports_torch_or_deepcheck():
    files = module_files()
    known = set(files)
    bad = {mod: sorted(t for t in imports_of(mod, path, known) if t.split(".")[0] in ("torch", "deepcheck"))
           for mod, path in files.items() if mod.split(".")[0] == "linflow"}
    assert not {m: b for m, b in bad.items() if b}
    # and at run time: importing linflow (and its training and verification) loads neither
    code = ("import sys, linflow, linflow.training, linflow.verification; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'deepcheck')]; "
            "assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
