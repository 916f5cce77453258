"""The package's layers: every import between faultinj's modules (at module level or inside a
function) goes down the declared order or stays in its layer, and no modules import each other in a
circle. Read from the sources with ast: no import is executed, no root needed.

    base → faults → kernel (kernel/: build, load, attach; inject/: the faults' state; trace) → api →
    lab (labs/: namespaces, bridges, OVS, traffic, captures; guest/; doctor) → scenario → cli (and
    the agent's server beside it)

An import inside a function is still a dependency: it only moves the failure from import time to
the first call."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "faultinj"

# lowest first; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("faultinj._version", "faultinj.errors", "faultinj.values", "faultinj.packets", "faultinj.pcap",
              "faultinj.layouts",
              "faultinj.stats", "faultinj.journal", "faultinj.verdict")),
    ("faults", ("faultinj.faults",)),
    ("kernel", ("faultinj.kernel", "faultinj.inject", "faultinj.trace", "faultinj.which")),
    ("api", ("faultinj.lifecycle", "faultinj.removal", "faultinj.faultstatus", "faultinj.api")),
    ("lab", ("faultinj.labs", "faultinj.doctor", "faultinj.guest")),
    ("scenario", ("faultinj.scenario", "faultinj.demo", "faultinj.verify", "faultinj.metrics")),
    # the package itself is the API's facade (its names are imported lazily, PEP 562)
    ("cli", ("faultinj.cli", "faultinj.pytest_plugin", "faultinj.guest.server", "faultinj")),
]


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """{module: {faultinj module it imports: line}} for every import statement in the module."""
    edges: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[:len(base) - node.level + (1 if is_package else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                while t and t not in mods:       # `import faultinj.labs as x` names a module
                    t = t.rpartition(".")[0]
                if t.startswith("faultinj") and t != name:
                    edges.setdefault(name, {}).setdefault(t, node.lineno)
    return edges


def layer(module: str) -> int:
    best, found = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            # the package itself names only itself: a new module at its top must be given a layer
            if (module == p or (p != "faultinj" and module.startswith(p + "."))) and len(p) > best:
                best, found = len(p), i
    assert found is not None, f"{module} is in no layer: add it to LAYERS"
    return found


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def upward(mods: dict[str, Path], edges: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for a, targets in sorted(edges.items()):
        for b, line in sorted(targets.items()):
            if layer(b) > layer(a):
                bad.append(f"{mods[a].relative_to(PACKAGE.parent)}:{line}: {a} ({LAYERS[layer(a)][0]}) imports "
                           f"{b} ({LAYERS[layer(b)][0]})")
    return bad


def test_every_module_is_in_a_layer():
    for m in modules():
        layer(m)


def test_no_import_cycles():
    found = cycles(imports(modules()))
    assert not found, "modules importing each other in a circle: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_upward_imports():
    mods = modules()
    bad = upward(mods, imports(mods))
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path):
    """The walker on a small package made to break both rules: removal importing the lab (as it did
    before labrecords), the lab importing removal back."""
    pkg = tmp_path / "faultinj"
    (pkg / "labs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "removal.py").write_text("def reap():\n    from . import labs\n    labs.reap_orphans()\n")
    (pkg / "labs" / "__init__.py").write_text("from .. import removal\n")
    mods = modules(pkg)
    edges = imports(mods)
    assert edges["faultinj.removal"] == {"faultinj.labs": 2}
    assert cycles(edges) == [["faultinj.labs", "faultinj.removal"]]
    assert any("faultinj.removal (api) imports faultinj.labs (lab)" in b
               for b in upward({k: PACKAGE / v.relative_to(pkg) for k, v in mods.items()}, edges))


# Where a faultinj import may sit inside a function: the lazy facades (PEP 562: a name is loaded when
# first used), the CLI (each command loads what it calls: `faultinj status` must not load the
# scenario package; bench section 12), and a record's spec parsed only when asked (status and clear
# never load the fault catalogue; tests/test_cli.py). Third-party imports inside functions (scapy,
# pyroute2, matplotlib, prometheus_client, virtme-ng) are not counted: they are optional or heavy.
# The libbpf binding is a lazy facade too: `status` and `clear` use its ffi part alone, and loading
# objects, ring buffers, BTF and test runs too cost them ~1.5 ms of a ~75 ms start (issue 22; bench 12).
LAZY_ALLOWED = {"faultinj/__init__.py": None, "faultinj/api.py": None, "faultinj/scenario/__init__.py": None,
                "faultinj/cli.py": None, "faultinj/inject/state.py": {"fault_spec"},
                "faultinj/kernel/libbpf/__init__.py": {"__getattr__"}}


def lazy_imports(package: Path = PACKAGE) -> list[str]:
    """faultinj imports made inside functions, outside LAZY_ALLOWED: 'path:line in function'."""
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = str(path.relative_to(package.parent))
        allowed = LAZY_ALLOWED.get(rel, set())
        if allowed is None:
            continue
        for f in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) or f.name in allowed:
                continue
            for n in ast.walk(f):
                if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("faultinj")) or \
                        isinstance(n, ast.Import) and any(a.name.startswith("faultinj") for a in n.names):
                    out.append(f"{rel}:{n.lineno} in {f.name}")
    return out


def test_faultinj_imports_are_at_the_top_of_modules():
    """An import inside a function hid the cycles this file now forbids; what is left is listed."""
    found = lazy_imports()
    assert not found, "faultinj imports inside functions (move them to the module's top):\n" + "\n".join(found)


def test_the_lazy_import_check_sees_one(tmp_path):
    pkg = tmp_path / "faultinj"
    pkg.mkdir()
    (pkg / "removal.py").write_text("import os\n\ndef reap():\n    import json\n    from . import state\n")
    (pkg / "state.py").write_text("def f():\n    import faultinj.removal\n")
    assert lazy_imports(pkg) == ["faultinj/removal.py:5 in reap", "faultinj/state.py:2 in f"]


def facade_clashes(package: Path = PACKAGE) -> list[str]:
    """Names of the package's facade (its __all__) that a module or subpackage also takes: once that
    module is imported, `faultinj.NAME` is the module, no longer the API's function."""
    tree = ast.parse((package / "__init__.py").read_text())
    names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)), [])
    return sorted(n for n in names if (package / f"{n}.py").exists() or (package / n / "__init__.py").exists())


def test_no_module_takes_a_name_of_the_package_facade(tmp_path):
    """faultinj.lab() is the API's lab; a package faultinj/lab/ replaced it by a module once imported
    (seen in CI: test_pytest_fixtures, "'module' object is not callable")."""
    assert facade_clashes() == []
    pkg = tmp_path / "faultinj"
    (pkg / "lab").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__all__ = ["apply", "lab"]\n')
    (pkg / "lab" / "__init__.py").write_text("")
    assert facade_clashes(pkg) == ["lab"]
