"""Import layering of the fixed-point side: Lava's rules, the backends, the netx I/O and the noise models
are in no import cycle (imports inside functions count too; importing ``a.b.c`` runs ``a/__init__`` and
``a/b/__init__``)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "neurodeploy"
# modules that must sit in no cycle (prefix match on the dotted name)
LAYERED = ("neurodeploy.lava_rules", "neurodeploy.backends", "neurodeploy.io.netx_", "neurodeploy.noise.vocabulary",
           "neurodeploy.noise.draws", "neurodeploy.noise.ir_transforms", "neurodeploy.noise.step",
           "neurodeploy.noise.torch_transforms", "neurodeploy.noise.hardware", "neurodeploy.noise.input_noise")


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    mods["neurodeploy.noise"] = ROOT / "noise" / "__init__.py"
    return mods


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = m.split(".")
                if node.level:
                    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                parts = t.split(".")
                for k in range(2, len(parts) + 1):
                    u = ".".join(parts[:k])
                    if u in mods and u != m and not m.startswith(u + ".") and u != "neurodeploy":
                        edges[m].add(u)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for v in edges:
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_fixed_point_side_is_in_no_import_cycle():
    cycles = _cycles(_edges(_modules()))
    caught = sorted(m for c in cycles for m in c if m.startswith(LAYERED))
    assert not caught, f"in an import cycle: {caught} (cycles: {[sorted(c) for c in cycles]})"


def test_lava_rules_imports_only_numpy():
    tree = ast.parse((ROOT / "lava_rules.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"numpy", "__future__", "typing"}, names


def test_the_package_has_no_import_cycle():
    """Issue 11: no module of the package is in an import cycle (imports inside functions count)."""
    cycles = _cycles(_edges(_modules()))
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def test_the_cycle_check_can_fail():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycles(edges) == [{"a", "b", "c"}]
